"""Where etcd comes from (``RESPOOL_ETCD_SOURCE``), without a running Kubernetes.

The failure paths are real: a real ``go`` against a dead module proxy, a real ``PATH`` without
apt. Binaries placed in a cache here are never run (every case fails or is a lookup before a
binary would be executed); the working Debian fallback is proved against a real control plane
in ``tests/e2e/test_devcluster_etcd_fallback.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from respool.devcluster import (
    BINARIES,
    DEFAULT_VERSIONS,
    BuildError,
    DebianEtcdError,
    EtcdSourceError,
    ProxyUnreachableError,
    cached_bin_dir,
    ensure_binaries,
    etcd_origin,
    etcd_source,
    find_go,
)
from respool.devcluster.build import BUILD_INFO, GO_ETCD_MODULE, bin_root, build_steps
from respool.devcluster.debian_etcd import candidate_version, upstream_version

# The Go-built set's directory name, e.g.
# k8s-v1.36.3_etcd-v3.6.16_helm-v3.21.4_kwok-v0.8.0_go1.26.8_amd64.
GO_BUILT_KEY = (
    f"k8s-{DEFAULT_VERSIONS.kubernetes}_etcd-{DEFAULT_VERSIONS.etcd}_helm-{DEFAULT_VERSIONS.helm}"
    f"_kwok-{DEFAULT_VERSIONS.kwok}_go1.26.8_amd64"
)

APT_POLICY_OUTPUT = """\
etcd-server:
  Installed: (none)
  Candidate: 3.4.23-4+b4
  Version table:
     3.4.23-4+b4 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
"""


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty respool cache, no RESPOOL_BIN_DIR, and RESPOOL_ETCD_SOURCE unset (auto)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RESPOOL_BIN_DIR", raising=False)
    monkeypatch.delenv("RESPOOL_ETCD_SOURCE", raising=False)
    return tmp_path / "cache" / "respool"


# -- choosing the source ----------------------------------------------------------------------


def test_etcd_source_defaults_to_auto_and_accepts_each_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESPOOL_ETCD_SOURCE", raising=False)
    assert etcd_source() == "auto"
    for raw, expected in [("go", "go"), ("Debian", "debian"), (" auto ", "auto"), ("", "auto")]:
        monkeypatch.setenv("RESPOOL_ETCD_SOURCE", raw)
        assert etcd_source() == expected


def test_unknown_etcd_source_is_refused_with_the_choices(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESPOOL_ETCD_SOURCE", "apt")
    with pytest.raises(EtcdSourceError, match=r"RESPOOL_ETCD_SOURCE='apt' is not one of go, debian, auto"):
        ensure_binaries(progress=lambda _message: None)
    assert not bin_root().exists()


def test_cli_refuses_an_unknown_etcd_source_without_a_traceback(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), RESPOOL_ETCD_SOURCE="ubuntu")
    env.pop("RESPOOL_BIN_DIR", None)
    result = subprocess.run(
        [sys.executable, "-m", "respool.cli.main", "dev", "bin", "--no-build"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1
    assert "RESPOOL_ETCD_SOURCE='ubuntu' is not one of go, debian, auto" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_the_go_built_set_keeps_its_cache_name_and_debian_sets_get_their_own() -> None:
    # The Go-built set's name depends on the versions only, never on where etcd came from.
    assert DEFAULT_VERSIONS.cache_key("go1.26.8", "amd64") == GO_BUILT_KEY
    debian_key = DEFAULT_VERSIONS.debian_etcd_cache_key("go1.26.8", "amd64")
    assert debian_key == (
        f"k8s-{DEFAULT_VERSIONS.kubernetes}_etcd-debian_helm-{DEFAULT_VERSIONS.helm}"
        f"_kwok-{DEFAULT_VERSIONS.kwok}_go1.26.8_amd64"
    )
    assert not debian_key.startswith(DEFAULT_VERSIONS.key_prefix() + "_")


# -- apt output -------------------------------------------------------------------------------


def test_apt_candidate_and_upstream_version_are_read_exactly() -> None:
    assert candidate_version(APT_POLICY_OUTPUT) == "3.4.23-4+b4"
    assert candidate_version(APT_POLICY_OUTPUT.replace("3.4.23-4+b4\n  Version", "(none)\n  V")) is None
    assert candidate_version("N: Unable to locate package etcd-server\n") is None
    assert upstream_version("3.4.23-4+b4") == "3.4.23"
    assert upstream_version("1:3.5.16-2ubuntu1") == "3.5.16"
    assert upstream_version("3.4.30") == "3.4.30"


# -- which set is used ------------------------------------------------------------------------


def _cache_entry(name: str, etcd: dict[str, str] | None) -> Path:
    """A cache entry for lookups only: its binaries are never run by these tests."""
    entry = bin_root() / name
    entry.mkdir(parents=True)
    for binary in BINARIES:
        (entry / binary).write_text("#!/bin/sh\nexit 1\n")
        (entry / binary).chmod(0o755)
    info: dict[str, object] = {"versions": {"etcd": DEFAULT_VERSIONS.etcd}}
    if etcd is not None:
        info["etcd"] = etcd
    (entry / BUILD_INFO).write_text(json.dumps(info))
    return entry


def test_lookup_follows_the_etcd_source(isolated_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toolchain = find_go()
    debian = _cache_entry(
        DEFAULT_VERSIONS.debian_etcd_cache_key(toolchain.version, toolchain.goarch),
        {"source": "debian", "version": "3.4.23", "package_version": "3.4.23-4+b4", "fallback_reason": "x"},
    )
    monkeypatch.setenv("RESPOOL_ETCD_SOURCE", "go")
    assert cached_bin_dir() is None  # a Debian set never stands in for a Go-built one
    monkeypatch.setenv("RESPOOL_ETCD_SOURCE", "auto")
    assert cached_bin_dir() == debian
    messages: list[str] = []
    assert ensure_binaries(progress=messages.append) == debian
    # Never silently: the tests and `respool dev up` would run against an older etcd.
    assert messages == [
        "using etcd 3.4.23 from Debian's etcd-server 3.4.23-4+b4 (fallback: x); "
        "`RESPOOL_ETCD_SOURCE=go respool dev build` builds etcd from Go modules instead"
    ]
    go_built = _cache_entry(DEFAULT_VERSIONS.cache_key(toolchain.version, toolchain.goarch), None)
    assert cached_bin_dir() == go_built  # auto prefers the Go-built set once it exists
    assert ensure_binaries(progress=messages.append) == go_built
    monkeypatch.setenv("RESPOOL_ETCD_SOURCE", "debian")
    assert cached_bin_dir() == debian
    assert ensure_binaries(progress=lambda _message: None) == debian


def test_etcd_origin_describes_each_kind_of_set(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    # A set built before the fallback existed records only its versions: it was Go-built.
    (old / BUILD_INFO).write_text(json.dumps({"versions": {"etcd": "v3.6.16"}}))
    assert etcd_origin(old) == {
        "source": "go",
        "version": "v3.6.16",
        "description": f"etcd v3.6.16 built from {GO_ETCD_MODULE}@v3.6.16",
    }
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    (chosen / BUILD_INFO).write_text(
        json.dumps({"etcd": {"source": "debian", "version": "3.4.23", "package_version": "3.4.23-4+b4"}})
    )
    assert etcd_origin(chosen)["description"] == (
        "etcd 3.4.23 from Debian's etcd-server 3.4.23-4+b4 (RESPOOL_ETCD_SOURCE=debian)"
    )
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    assert etcd_origin(foreign)["source"] == "unknown"
    assert "not built by respool" in etcd_origin(foreign)["description"]


# -- failures leave nothing behind --------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _set_whose_etcd_is_missing() -> Path:
    """A Go-built entry that lost its etcd, holding (never-run) binaries of every other step
    that the next build reuses instead of compiling: the build gets to etcd at once."""
    toolchain = find_go()
    entry = bin_root() / DEFAULT_VERSIONS.cache_key(toolchain.version, toolchain.goarch)
    entry.mkdir(parents=True)
    steps = [step for step in build_steps(DEFAULT_VERSIONS) if step.name != "etcd"]
    for binary in (name for step in steps for name in step.packages):
        (entry / binary).write_text("#!/bin/sh\nexit 1\n")
        (entry / binary).chmod(0o755)
    timings = {"download_seconds": 0.0, "build_seconds": 0.0, "cpu_seconds": 0.0, "max_rss_mib": 0.0}
    info = {
        "versions": {"go": toolchain.version, "goarch": toolchain.goarch},
        "steps": [
            {**timings, "binaries": list(step.packages), "module": step.module, "version": step.version}
            for step in steps
        ],
    }
    (entry / BUILD_INFO).write_text(json.dumps(info))
    return entry


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (hidden ones included) with its size and inode."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_ino)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != ".build.lock"
    }


@pytest.fixture
def dead_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """go must ask the module proxy (empty module cache), and nothing listens there."""
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "gomodcache"))
    monkeypatch.setenv("GOFLAGS", "-modcacherw")
    proxy = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("GOPROXY", proxy)
    return proxy


def test_a_failed_etcd_build_with_go_chosen_leaves_no_binary_behind(
    isolated_cache: Path, dead_proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESPOOL_ETCD_SOURCE", "go")
    entry = _set_whose_etcd_is_missing()
    before = _snapshot(bin_root())
    messages: list[str] = []
    expected = re.escape(f"go.etcd.io/etcd/server/v3@{DEFAULT_VERSIONS.etcd}") + ".*unreachable"
    with pytest.raises(ProxyUnreachableError, match=expected):
        ensure_binaries(progress=messages.append)
    assert not any("falling back" in message for message in messages)  # go means go only
    assert any(message.startswith("reusing kube-apiserver, kubectl") for message in messages)
    # The damaged entry is exactly as it was; no staging directory, no etcd, no Debian set.
    assert _snapshot(bin_root()) == before
    assert sorted(path.name for path in bin_root().iterdir()) == [".build.lock", entry.name]


def test_when_go_and_debian_both_fail_the_error_names_both_and_nothing_is_cached(
    isolated_cache: Path, dead_proxy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PATH holding go and nothing else: no apt-get, no dpkg-deb.
    only_go = tmp_path / "only-go"
    only_go.mkdir()
    go = shutil.which("go")
    assert go is not None, "go must be on PATH for this test (it builds the dev cluster)"
    (only_go / "go").symlink_to(go)
    monkeypatch.setenv("PATH", str(only_go))
    entry = _set_whose_etcd_is_missing()
    before = _snapshot(bin_root())
    with pytest.raises(DebianEtcdError) as failure:
        ensure_binaries(progress=lambda _message: None)
    message = str(failure.value)
    assert message.startswith("building etcd from Go modules failed: could not download go.etcd.io")
    assert dead_proxy in message
    assert "Debian's etcd-server, is not available either: `apt-cache` is not on PATH" in message
    assert isinstance(failure.value, BuildError)
    assert _snapshot(bin_root()) == before
    assert sorted(path.name for path in bin_root().iterdir()) == [".build.lock", entry.name]
