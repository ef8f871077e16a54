"""Flux CD's source-controller and kustomize-controller, built from Go modules and cached.

The GitOps test (``tests/e2e/test_gitops_flux.py``) runs the real Flux controllers as processes
against the embedded cluster. No prebuilt binary can be downloaded on our machines, so they are
built like the control plane (:mod:`.build`): one throw-away wrapper module per controller, with
the controller's own ``replace`` lines copied in (Go ignores a dependency's), ``go build`` with
``CGO_ENABLED=0``, the result checked by running it, and the finished set moved into
``~/.cache/respool/bin/<key>`` in one atomic step under the same file lock. The set also holds
the controllers' CRDs, copied from each module's ``config/crd/bases``: the CRDs of exactly the
code that runs.

Not part of ``respool dev build``'s default set (few people need it, and it costs about as much
as Kubernetes' controllers): ``respool dev build --gitops`` builds it, ``scripts/test.sh`` does so
before the tests when it is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from respool.devcluster.build import (
    BUILD_INFO,
    Builder,
    BuildStep,
    GoToolchain,
    Progress,
    _exclusive_lock,
    bin_root,
    find_go,
    publish_cache_entry,
    read_build_info,
    stderr_progress,
)
from respool.devcluster.errors import BuildError, GoMissingError
from respool.devcluster.versions import DEFAULT_VERSIONS, host_goarch

SOURCE_CONTROLLER_MODULE = "github.com/fluxcd/source-controller"
KUSTOMIZE_CONTROLLER_MODULE = "github.com/fluxcd/kustomize-controller"
#: Flux 2.8's controllers: the newest whose go.mod asks for no Go newer than 1.26.
SOURCE_CONTROLLER_VERSION = "v1.9.6"
KUSTOMIZE_CONTROLLER_VERSION = "v1.9.6"
FLUX_BINARIES = ("source-controller", "kustomize-controller")
CRDS_DIR = "crds"

#: source-controller v1.9.6 requires github.com/fluxcd/pkg/artifact v0.18.3, a patch release the
#: module proxy our machines use does not serve (it has v0.18.0 of that minor). The wrapper pins
#: v0.18.0, the version source-controller v1.9.0 shipped with; the build and the GitOps test show
#: that it compiles and serves artifacts.
ARTIFACT_PIN = "github.com/fluxcd/pkg/artifact => github.com/fluxcd/pkg/artifact v0.18.0"


def flux_steps() -> list[BuildStep]:
    return [
        BuildStep(
            name="source-controller",
            module=SOURCE_CONTROLLER_MODULE,
            version=SOURCE_CONTROLLER_VERSION,
            # The module's root package is the controller's main.
            packages={"source-controller": SOURCE_CONTROLLER_MODULE},
            module_replaces=True,
            extra_replaces=(ARTIFACT_PIN,),
        ),
        BuildStep(
            name="kustomize-controller",
            module=KUSTOMIZE_CONTROLLER_MODULE,
            version=KUSTOMIZE_CONTROLLER_VERSION,
            packages={"kustomize-controller": KUSTOMIZE_CONTROLLER_MODULE},
            module_replaces=True,
        ),
    ]


def key_prefix() -> str:
    return (
        f"flux-source-controller-{SOURCE_CONTROLLER_VERSION}"
        f"_kustomize-controller-{KUSTOMIZE_CONTROLLER_VERSION}"
    )


def cache_key(go_version: str, goarch: str) -> str:
    """e.g. ``flux-source-controller-v1.9.6_kustomize-controller-v1.9.6_go1.26.8_amd64``."""
    return f"{key_prefix()}_{go_version}_{goarch}"


def is_complete(directory: Path) -> bool:
    """Whether ``directory`` holds both controllers, their CRDs and its build-info.json."""
    if not (directory / BUILD_INFO).is_file():
        return False
    if not any((directory / CRDS_DIR).glob("*.yaml")):
        return False
    return all(os.access(directory / name, os.X_OK) for name in FLUX_BINARIES)


def cached_flux_dir() -> Path | None:
    """A complete cache entry, without building: the installed Go's, else any for this CPU."""
    root = bin_root()
    if not root.is_dir():
        return None
    try:
        toolchain: GoToolchain | None = find_go()
    except GoMissingError:
        toolchain = None
    if toolchain is not None:
        exact = root / cache_key(toolchain.version, toolchain.goarch)
        if is_complete(exact):
            return exact
    suffix = f"_{host_goarch()}"
    candidates = sorted(
        entry
        for entry in root.iterdir()
        if entry.name.startswith(key_prefix() + "_") and entry.name.endswith(suffix) and is_complete(entry)
    )
    return candidates[-1] if candidates else None


def _module_dir(builder: Builder, module: str, version: str) -> Path:
    completed = subprocess.run(
        [builder.toolchain.executable, "mod", "download", "-json", f"{module}@{version}"],
        env=builder.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        info = json.loads(completed.stdout or "{}")
    except json.JSONDecodeError:
        info = {}
    if completed.returncode != 0 or not info.get("Dir"):
        raise BuildError(
            f"could not download {module}@{version}: {info.get('Error') or completed.stderr.strip()}"
        )
    return Path(info["Dir"])


def _copy_crds(builder: Builder, staging: Path) -> list[str]:
    """The controllers' CRDs, from their modules' ``config/crd/bases``, into ``staging/crds``."""
    target = staging / CRDS_DIR
    target.mkdir()
    copied: list[str] = []
    for step in flux_steps():
        bases = _module_dir(builder, step.module, step.version) / "config" / "crd" / "bases"
        found = sorted(bases.glob("*.yaml"))
        if not found:
            raise BuildError(f"{step.module}@{step.version} has no CRDs in config/crd/bases")
        for path in found:
            shutil.copyfile(path, target / path.name)
            copied.append(path.name)
    return copied


#: A flag each controller's --help must list: the binary is the controller asked for.
_HELP_MARKERS = {
    "source-controller": "--storage-adv-addr",
    "kustomize-controller": "--no-remote-bases",
}


def _verify(staging: Path) -> None:
    for name, marker in _HELP_MARKERS.items():
        try:
            completed = subprocess.run(
                [str(staging / name), "--help"], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise BuildError(f"the freshly built {name} does not run: {error}") from error
        text = completed.stdout + completed.stderr
        if marker not in text:
            raise BuildError(
                f"the freshly built {name} --help (exit {completed.returncode}) does not list "
                f"{marker}: {text[-2000:]}"
            )


def ensure_flux_binaries(*, progress: Progress = stderr_progress, rebuild: bool = False) -> Path:
    """The directory holding source-controller, kustomize-controller and ``crds/``; builds them
    (minutes when cold) if this Go has no cache entry yet. Without Go, any entry for this CPU."""
    try:
        toolchain = find_go()
    except GoMissingError:
        fallback = cached_flux_dir()
        if fallback is not None and not rebuild:
            return fallback
        raise
    destination = bin_root() / cache_key(toolchain.version, toolchain.goarch)
    if is_complete(destination) and not rebuild:
        return destination
    with _exclusive_lock(
        bin_root() / ".build.lock",
        progress,
        "another respool process is building binaries; waiting for it to finish",
    ):
        if is_complete(destination) and not rebuild:
            return destination
        progress(
            f"building Flux source-controller {SOURCE_CONTROLLER_VERSION} and kustomize-controller "
            f"{KUSTOMIZE_CONTROLLER_VERSION} with {toolchain.version} into {bin_root()}"
        )
        started = time.monotonic()
        builder = Builder(toolchain, DEFAULT_VERSIONS, progress)
        root = bin_root()
        root.mkdir(parents=True, exist_ok=True)
        builder.workspace.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=root))
        try:
            results = [builder._build_step(step, staging) for step in flux_steps()]
            crds = _copy_crds(builder, staging)
            _verify(staging)
            info: dict[str, Any] = {
                "versions": {
                    "source-controller": SOURCE_CONTROLLER_VERSION,
                    "kustomize-controller": KUSTOMIZE_CONTROLLER_VERSION,
                    "go": toolchain.version,
                    "goarch": toolchain.goarch,
                },
                "replaces": list(flux_steps()[0].extra_replaces),
                "crds": crds,
            }
            publish_cache_entry(staging, destination, info, started=started, results=results,
                                binaries=FLUX_BINARIES)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        progress(f"Flux controllers ready in {time.monotonic() - started:.0f}s: {destination}")
        return destination


def build_summary(directory: Path) -> list[str]:
    """One line per controller: built in how long, or where it came from."""
    info = read_build_info(directory)
    lines = []
    for step in info.get("steps", []):
        names = ", ".join(step.get("binaries", []))
        lines.append(
            f"{names}: built in {step.get('build_seconds')}s "
            f"(CPU {step.get('cpu_seconds')}s, peak RSS {step.get('max_rss_mib', 0):.0f} MiB)"
        )
    return lines
