"""Measure truly cold builds of the control-plane binaries with respool's own builder.

    .venv/bin/python scripts/measure_cold_build.py [kubernetes] [etcd] [helm]   (default: etcd helm)

Each step runs with an EMPTY Go build cache and an EMPTY module cache (so downloads count too),
in a scratch directory that is removed afterwards; the real cache is not touched. Prints one
JSON object per step (wall/CPU seconds, peak RSS of the go process tree, module-cache and
build-cache disk use, binary size).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from respool.devcluster.build import Builder, build_steps, find_go
from respool.devcluster.versions import DEFAULT_VERSIONS


def _du_mib(path: Path) -> float:
    completed = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=False)
    return round(int(completed.stdout.split()[0]) / 1024, 1) if completed.returncode == 0 else 0.0


def main(argv: list[str]) -> int:
    wanted = argv or ["etcd", "helm"]
    steps = {step.name: step for step in build_steps(DEFAULT_VERSIONS)}
    unknown = [name for name in wanted if name not in steps]
    if unknown:
        print(f"unknown step(s) {unknown}; choose from {sorted(steps)}", file=sys.stderr)
        return 2
    toolchain = find_go()
    for name in wanted:
        scratch = Path(tempfile.mkdtemp(prefix=f"respool-cold-{name}-"))
        try:
            os.environ["XDG_CACHE_HOME"] = str(scratch / "xdg")
            os.environ["GOCACHE"] = str(scratch / "gocache")
            os.environ["GOMODCACHE"] = str(scratch / "gomodcache")
            builder = Builder(toolchain, DEFAULT_VERSIONS)
            out = scratch / "out"
            out.mkdir()
            builder.workspace.mkdir(parents=True)
            result = builder._build_step(steps[name], out)
            report = dict(result.__dict__)
            report["go"] = toolchain.version
            report["module_cache_mib"] = _du_mib(scratch / "gomodcache")
            report["build_cache_mib"] = _du_mib(scratch / "gocache")
            report["binary_mib"] = {
                binary: round((out / binary).stat().st_size / 2**20, 1) for binary in result.binaries
            }
            print(json.dumps(report), flush=True)
        finally:
            # The module cache is read-only by design; make it writable to remove it.
            subprocess.run(["chmod", "-R", "u+w", str(scratch)], check=False)
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
