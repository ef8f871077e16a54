"""uv.lock is the single source of the Python closure: the venv, the image and CI follow it.

- the lock agrees with pyproject.toml (`uv lock --check`), and the check does fail on a
  pyproject.toml edited without refreshing the lock;
- the venv the tests run in holds exactly the lock's closure for respool with its client, test
  and dev extras (versions included), nothing more;
- the Dockerfile's install, run here against a scratch venv, yields exactly the lock's runtime
  closure (no extras: the operator's, without the Kubernetes client), nothing more;
- uv itself is one version everywhere: the lock, scripts/setup.sh and the Dockerfile.

Needs the venv made by scripts/setup.sh (it holds uv); uv's cache from that set-up serves the
scratch install offline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

from packaging.markers import Marker

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "uv.lock"
UV = Path(sys.executable).parent / "uv"
# What `python -m venv` puts in every venv before anything is installed; uv leaves them alone.
VENV_SEEDS = {"pip", "setuptools"}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, Any]:
    with LOCK.open("rb") as handle:
        return tomllib.load(handle)


def _locked_closure(extras: set[str]) -> dict[str, str]:
    """Name -> locked version of everything respool (with `extras`) needs on this interpreter
    and platform, respool itself excluded: the lock's graph walked with markers evaluated."""
    packages = {_normalize(p["name"]): p for p in _lock()["package"]}
    closure: dict[str, str] = {}

    def applies(dependency: dict[str, Any]) -> bool:
        marker = dependency.get("marker")
        return marker is None or Marker(marker).evaluate({"extra": ""})

    def visit(name: str, wanted_extras: set[str]) -> None:
        package = packages[name]
        first_visit = name not in closure
        closure[name] = package["version"]
        edges = list(package.get("dependencies", [])) if first_visit else []
        for extra in wanted_extras:
            edges += package.get("optional-dependencies", {}).get(extra, [])
        for dependency in edges:
            if applies(dependency):
                visit(_normalize(dependency["name"]), set(dependency.get("extra", [])))

    root = packages["respool"]
    for dependency in root.get("dependencies", []):
        if applies(dependency):
            visit(_normalize(dependency["name"]), set(dependency.get("extra", [])))
    for extra in extras:
        for dependency in root.get("optional-dependencies", {})[extra]:
            if applies(dependency):
                visit(_normalize(dependency["name"]), set(dependency.get("extra", [])))
    return closure


def _installed(site_packages: Path) -> dict[str, str]:
    return {
        _normalize(dist.metadata["Name"]): dist.version
        for dist in distributions(path=[str(site_packages)])
    }


def _site_packages(prefix: Path) -> Path:
    (found,) = prefix.glob("lib/python3*/site-packages")
    return found


def test_the_runtime_closure_is_locked_and_sane() -> None:
    runtime = _locked_closure(set())
    assert {"kopf", "aiohttp", "pydantic", "pyyaml", "prometheus-client"} <= set(runtime)
    assert not {"pytest", "mypy", "ruff", "uv", "hypothesis"} & set(runtime)
    # The operator's closure leaves the client's heavy dependency to the client extra.
    assert not {"kubernetes", "urllib3"} & set(runtime)
    assert {"kubernetes", "urllib3"} <= set(_locked_closure({"client"}))
    full = _locked_closure({"client", "test", "dev"})
    assert set(runtime) < set(full)
    assert all(full[name] == version for name, version in runtime.items())


def test_lock_agrees_with_pyproject() -> None:
    result = subprocess.run([str(UV), "lock", "--check", "--offline"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        "uv.lock does not match pyproject.toml; refresh it with `.venv/bin/uv lock`:\n"
        + result.stderr)


def test_lock_check_fails_on_a_pyproject_edited_without_the_lock(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text()
    edited = text.replace('"pyyaml>=6",', '"pyyaml>=6",\n  "sortedcontainers>=2",', 1)
    assert edited != text
    pyproject.write_text(edited)
    # Not --offline: a changed requirement makes uv resolve again, which reads metadata (of
    # every platform's packages) that a fresh set-up's cache need not hold. The set-up itself
    # needs the package index, so the test may too.
    result = subprocess.run([str(UV), "lock", "--check"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "needs to be updated" in result.stderr, result.stderr


def test_the_venv_holds_exactly_the_locked_closure() -> None:
    """The venv of scripts/setup.sh: the lock with the client, test and dev extras, versions
    included."""
    installed = _installed(_site_packages(Path(sys.prefix)))
    expected = _locked_closure({"client", "test", "dev"})
    assert installed.pop("respool") == _lock_version("respool")
    for seed in VENV_SEEDS:
        installed.pop(seed, None)
    assert installed == expected


def _lock_version(name: str) -> str:
    (package,) = [p for p in _lock()["package"] if _normalize(p["name"]) == name]
    return str(package["version"])


def _dockerfile_sync_commands() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    return [m.strip() for m in re.findall(r"(?:RUN|&&)\s+(uv sync[^\n\\&]*)", text)]


def test_dockerfile_installs_from_the_lock_only() -> None:
    text = (ROOT / "Dockerfile").read_text()
    commands = _dockerfile_sync_commands()
    assert commands, "the Dockerfile installs with `uv sync`"
    for command in commands:
        assert "--locked" in command, command
        assert not re.search(r"--(all-)?extras?\b|--group|--all-groups|--dev\b", command), command
    assert "COPY pyproject.toml uv.lock" in text
    # pip installs uv (pinned) and nothing else: every other package comes from the lock.
    assert re.findall(r"pip install ([^\n]+)", text) == ['"uv==${UV_VERSION}"']
    assert "!uv.lock" in (ROOT / ".dockerignore").read_text().split()


def test_the_dockerfile_install_yields_exactly_the_locked_runtime_closure(tmp_path: Path) -> None:
    """The Dockerfile's dependency step, run into a scratch venv (from uv's cache, filled
    by the set-up): exactly the runtime closure of the lock, nothing else."""
    (first, *_rest) = _dockerfile_sync_commands()
    arguments = first.split()[2:]
    assert "--no-install-project" in arguments
    target = tmp_path / "image-venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(target), "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([str(UV), "venv", "--quiet", "--python", sys.executable, str(target)],
                   check=True, env=env, timeout=120)
    result = subprocess.run([str(UV), "sync", *arguments, "--quiet"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert _installed(_site_packages(target)) == _locked_closure(set())


def test_uv_is_one_version_everywhere() -> None:
    locked = _lock_version("uv")
    setup = re.search(r'^UV_VERSION="([^"]+)"$', (ROOT / "scripts" / "setup.sh").read_text(), re.M)
    docker = re.search(r"^ARG UV_VERSION=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    pyproject = re.search(r'"uv==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert setup and docker and pyproject
    assert {setup[1], docker[1], pyproject[1]} == {locked}
