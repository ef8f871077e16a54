"""Dev-cluster logic that needs no running Kubernetes: module wiring, keys, errors, CLI states."""

from __future__ import annotations

import base64
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from respool.devcluster import (
    DEFAULT_VERSIONS,
    BuildError,
    ControlPlane,
    GoMissingError,
    PortInUseError,
    ProxyUnreachableError,
    Versions,
    ensure_binaries,
    find_go,
    shared,
)
from respool.devcluster.build import go_directive, godebug_lines, staging_replacements
from respool.devcluster.controlplane import check_port_free, pid_alive, sweep_stale_etcd_data
from respool.devcluster.keys import PUBLIC_EXPONENT, rsa_private_key_pem

KUBERNETES_MOD_EXCERPT = """\
module k8s.io/kubernetes

go 1.26.0

godebug default=go1.26

require (
\tgithub.com/spf13/cobra v1.10.0
\tk8s.io/api v0.0.0
\tk8s.io/apiserver v0.0.0 // indirect
\tk8s.io/cri-streaming v0.0.0
\tk8s.io/kube-openapi v0.0.0-20260101000000-0123456789ab
\tk8s.io/utils v0.0.0-20251201000000-abcdefabcdef
)

require k8s.io/kubectl v0.0.0

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
)
"""


# -- module wiring --------------------------------------------------------------------------


def test_staging_replacements_take_exact_v000_only() -> None:
    replacements = staging_replacements(KUBERNETES_MOD_EXCERPT, "v0.36.3")
    assert replacements == {
        "k8s.io/api": "v0.36.3",
        "k8s.io/apiserver": "v0.36.3",
        "k8s.io/cri-streaming": "v0.36.3",
        "k8s.io/kubectl": "v0.36.3",
    }


def test_godebug_lines_single_and_block_forms() -> None:
    assert godebug_lines(KUBERNETES_MOD_EXCERPT) == ["godebug default=go1.26"]
    block = "module x\n\ngodebug (\n\tdefault=go1.25\n\tpanicnil=1\n)\n\nrequire y v1.0.0\n"
    assert godebug_lines(block) == ["godebug (", "\tdefault=go1.25", "\tpanicnil=1", ")"]
    assert godebug_lines("module x\ngo 1.26\n") == []


def test_go_directive() -> None:
    assert go_directive(KUBERNETES_MOD_EXCERPT) == "1.26.0"


def test_versions_name_the_cache_entry() -> None:
    versions = Versions(kubernetes="v1.36.3", etcd="v3.6.16", helm="v3.21.4", kwok="v0.8.0")
    assert versions.staging_version == "v0.36.3"
    assert versions.kubernetes_minor == 36
    assert (
        versions.cache_key("go1.26.8", "amd64")
        == "k8s-v1.36.3_etcd-v3.6.16_helm-v3.21.4_kwok-v0.8.0_go1.26.8_amd64"
    )


# -- keys -----------------------------------------------------------------------------------


def _der_integers(der: bytes) -> list[int]:
    """The INTEGERs of a DER SEQUENCE of INTEGERs (enough to read a PKCS#1 key back)."""

    def length_at(offset: int) -> tuple[int, int]:
        first = der[offset]
        if first < 0x80:
            return first, offset + 1
        count = first & 0x7F
        return int.from_bytes(der[offset + 1 : offset + 1 + count], "big"), offset + 1 + count

    assert der[0] == 0x30
    total, offset = length_at(1)
    assert offset + total == len(der)
    values = []
    while offset < len(der):
        assert der[offset] == 0x02
        size, offset = length_at(offset + 1)
        values.append(int.from_bytes(der[offset : offset + size], "big", signed=True))
        offset += size
    return values


def test_rsa_key_is_a_consistent_pkcs1_key() -> None:
    pem = rsa_private_key_pem(2048).decode()
    lines = pem.strip().splitlines()
    assert lines[0] == "-----BEGIN RSA PRIVATE KEY-----"
    assert lines[-1] == "-----END RSA PRIVATE KEY-----"
    assert all(len(line) <= 64 for line in lines[1:-1])
    version, n, e, d, p, q, dp, dq, qinv = _der_integers(base64.b64decode("".join(lines[1:-1])))
    assert version == 0
    assert e == PUBLIC_EXPONENT
    assert n == p * q and n.bit_length() == 2048 and p != q
    assert (e * d) % math.lcm(p - 1, q - 1) == 1
    assert dp == d % (p - 1) and dq == d % (q - 1) and (qinv * q) % p == 1
    message = 0x5EC2E7
    assert pow(pow(message, d, n), e, n) == message


def test_rsa_keys_differ() -> None:
    assert rsa_private_key_pem(1024) != rsa_private_key_pem(1024)


def test_rsa_key_size_is_checked() -> None:
    with pytest.raises(ValueError, match="even number >= 1024"):
        rsa_private_key_pem(512)


# -- clear errors ---------------------------------------------------------------------------


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty respool cache, and no RESPOOL_BIN_DIR override."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RESPOOL_BIN_DIR", raising=False)
    return tmp_path / "cache" / "respool"


def test_go_missing_says_what_to_do(
    isolated_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(GoMissingError, match=r"Go is not installed or not on PATH.*go\.dev/dl"):
        find_go()
    with pytest.raises(GoMissingError):
        ensure_binaries()
    assert not (isolated_cache / "bin").exists() or not any(
        entry for entry in (isolated_cache / "bin").iterdir() if not entry.name.startswith(".build")
    )


def test_bin_dir_override_must_hold_every_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESPOOL_BIN_DIR", str(tmp_path))
    (tmp_path / "kubectl").write_text("#!/bin/sh\n")
    (tmp_path / "kubectl").chmod(0o755)
    with pytest.raises(BuildError, match="lacks executable kube-apiserver, etcd, helm"):
        ensure_binaries()


def _cache_entries(cache: Path) -> list[str]:
    bin_root = cache / "bin"
    if not bin_root.exists():
        return []
    return sorted(entry.name for entry in bin_root.iterdir() if entry.name != ".build.lock")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_proxy_is_reported_plainly_and_leaves_no_entry(
    isolated_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh module cache, so go has to ask the (dead) proxy.
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "gomodcache"))
    monkeypatch.setenv("GOPROXY", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("GOFLAGS", "-modcacherw")
    messages: list[str] = []
    with pytest.raises(ProxyUnreachableError, match=r"Go module proxy .*127\.0\.0\.1.* unreachable"):
        ensure_binaries(progress=messages.append)
    assert _cache_entries(isolated_cache) == []
    assert any("downloading k8s.io/kubernetes" in message for message in messages)


def test_failed_build_is_reported_and_leaves_no_entry(isolated_cache: Path) -> None:
    no_such_release = Versions(kubernetes="v1.36.999", etcd=DEFAULT_VERSIONS.etcd, helm=DEFAULT_VERSIONS.helm)
    with pytest.raises(BuildError, match=r"k8s\.io/kubernetes@v1\.36\.999") as failure:
        ensure_binaries(no_such_release, progress=lambda _message: None)
    assert not isinstance(failure.value, ProxyUnreachableError)
    assert _cache_entries(isolated_cache) == []


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_taken_port_is_reported_with_advice(listening_port: int) -> None:
    with pytest.raises(PortInUseError, match=rf"port {listening_port} on 127\.0\.0\.1 is already in use"):
        check_port_free(listening_port)


def test_control_plane_refuses_a_taken_port_before_starting_anything(
    tmp_path: Path, listening_port: int
) -> None:
    plane = ControlPlane(tmp_path / "plane", bin_dir=tmp_path / "no-binaries", api_port=listening_port)
    with pytest.raises(PortInUseError):
        plane.start()
    assert plane.state is None
    assert not (tmp_path / "plane" / "state.json").exists()


# -- process bookkeeping --------------------------------------------------------------------


def _with_command_line(process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """``process`` once /proc shows its command line.

    Right after exec, /proc/<pid>/cmdline can still read empty for a moment (seen in 12 of 30
    starts on a loaded machine); pid_alive then rightly refuses to recognise the process.
    """
    deadline = time.monotonic() + 30.0
    while not Path(f"/proc/{process.pid}/cmdline").read_bytes():
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"pid {process.pid}'s command line stayed empty for 30 s")
        time.sleep(0.01)
    return process


def test_pid_alive_checks_the_command_line_marker(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker-dir")
    sleeper = _with_command_line(
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    )
    try:
        assert pid_alive(sleeper.pid, marker)
        assert not pid_alive(sleeper.pid, str(tmp_path / "someone-else"))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not pid_alive(sleeper.pid, marker)
    assert not pid_alive(0)


def test_sweep_removes_only_dead_and_old_etcd_data(tmp_path: Path) -> None:
    old = time.time() - 3600
    dead = tmp_path / "respool-etcd-dead"
    dead.mkdir()
    (dead / "pid").write_text("999999999\n")
    os.utime(dead, (old, old))
    young = tmp_path / "respool-etcd-young"
    young.mkdir()
    (young / "pid").write_text("999999999\n")
    alive = tmp_path / "respool-etcd-alive"
    alive.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(alive)])
    (alive / "pid").write_text(f"{owner.pid}\n")
    os.utime(alive, (old, old))
    unrelated = tmp_path / "something-else"
    unrelated.mkdir()
    os.utime(unrelated, (old, old))
    try:
        removed = sweep_stale_etcd_data(tmp_path)
    finally:
        owner.kill()
        owner.wait()
    assert removed == [dead]
    assert not dead.exists() and young.exists() and alive.exists() and unrelated.exists()


# -- CLI states without a control plane -----------------------------------------------------


def _respool(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "respool.cli.main", "dev", *args],
        capture_output=True,
        text=True,
        env=env,
        # Generous: only a guard against a hang (importing the CLI is slow on a loaded machine).
        timeout=300,
        check=False,
    )


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["RESPOOL_DEV_HOME"] = str(tmp_path / "dev")
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env.pop("RESPOOL_BIN_DIR", None)
    return env


def test_cli_reports_a_stopped_plane(cli_env: dict[str, str]) -> None:
    status = _respool("status", env=cli_env)
    assert status.returncode == 3, status.stdout + status.stderr
    assert "stopped" in status.stdout
    kubeconfig = _respool("kubeconfig", env=cli_env)
    assert kubeconfig.returncode == 3
    assert kubeconfig.stdout == ""
    assert "respool dev up" in kubeconfig.stderr
    home = Path(cli_env["RESPOOL_DEV_HOME"])
    home.mkdir(parents=True)
    (home / "notes.txt").write_text("not respool's")
    (home / "logs").mkdir()
    (home / "logs" / "etcd.log").write_text("old log")
    down = _respool("down", env=cli_env)
    assert down.returncode == 0
    assert "no control plane was running" in down.stderr
    # `down` removes what a control plane writes, and nothing else.
    assert not (home / "logs").exists()
    assert (home / "notes.txt").read_text() == "not respool's"


def test_cli_bin_without_build_explains(cli_env: dict[str, str]) -> None:
    result = _respool("bin", "--no-build", env=cli_env)
    assert result.returncode == 1
    assert "respool dev build" in result.stderr
    assert result.stdout == ""


def test_cli_reports_a_taken_port_without_a_traceback(
    cli_env: dict[str, str], listening_port: int
) -> None:
    result = _respool("up", "--port", str(listening_port), env=cli_env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"port {listening_port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_version_stamps_follow_upstream_release_scripts(tmp_path: Path) -> None:
    from respool.devcluster.build import ModuleFacts, _helm_ldflags, _kubernetes_ldflags

    versions = Versions(kubernetes="v1.36.3", etcd="v3.6.16", helm="v3.21.4")
    k8s = _kubernetes_ldflags(
        ModuleFacts(mod_file=tmp_path / "unused", release_time="2026-07-22T18:07:38Z", commit=""),
        versions,
    )
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.36.3" in k8s
        assert f"-X {package}.gitMajor=1" in k8s
        assert f"-X {package}.gitMinor=36" in k8s
        assert f"-X {package}.gitTreeState=clean" in k8s
        assert f"-X {package}.buildDate=2026-07-22T18:07:38Z" in k8s
    assert not any("gitCommit" in flag for flag in k8s)  # unknown commits are not invented

    helm_mod = tmp_path / "helm.mod"
    helm_mod.write_text("module helm.sh/helm/v3\n\nrequire (\n\tk8s.io/client-go v0.36.2\n)\n")
    helm = _helm_ldflags(
        ModuleFacts(mod_file=helm_mod, release_time="2026-08-13T20:11:59Z", commit="813176c5"), versions
    )
    assert "-X helm.sh/helm/v3/internal/version.version=v3.21.4" in helm
    assert "-X helm.sh/helm/v3/internal/version.gitCommit=813176c5" in helm
    assert "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=36" in helm
    assert "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1" in helm


def test_a_builder_waits_for_another_and_reuses_its_entry(isolated_cache: Path) -> None:
    """Two test sessions starting on a fresh machine build once: the second waits, then reuses."""
    import fcntl
    import threading

    from respool.devcluster import BINARIES
    from respool.devcluster.build import BUILD_INFO, bin_root

    toolchain = find_go()
    entry = bin_root() / DEFAULT_VERSIONS.cache_key(toolchain.version, toolchain.goarch)
    lock_path = bin_root() / ".build.lock"
    lock_path.parent.mkdir(parents=True)
    holder = lock_path.open("a")
    fcntl.flock(holder, fcntl.LOCK_EX)  # "another process" is building

    def finish_the_other_build() -> None:
        time.sleep(1.0)
        staging = bin_root() / ".staging"
        staging.mkdir()
        for name in BINARIES:
            (staging / name).write_text("#!/bin/sh\n")
            (staging / name).chmod(0o755)
        (staging / BUILD_INFO).write_text("{}\n")
        staging.rename(entry)
        fcntl.flock(holder, fcntl.LOCK_UN)
        holder.close()

    other = threading.Thread(target=finish_the_other_build)
    other.start()
    messages: list[str] = []
    try:
        assert ensure_binaries(progress=messages.append) == entry
    finally:
        other.join()
    assert messages == ["another respool process is building the binaries; waiting for it to finish"]


def _sleeper(*marker: str) -> subprocess.Popen[bytes]:
    """A live process whose command line carries `marker` (as `respool run` would)."""
    return _with_command_line(
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *marker])
    )


def test_down_stops_the_operator_the_demo_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(shared.DEV_HOME_ENV, str(tmp_path / "dev"))
    (tmp_path / "dev").mkdir()
    operator = _sleeper("respool", "run")
    try:
        (tmp_path / "dev" / shared.OPERATOR_PID_FILE).write_text(f"{operator.pid}\n")
        messages: list[str] = []
        assert shared.down(progress=messages.append) is False  # no control plane recorded
        assert operator.wait(timeout=15) is not None
        assert any("stopping the operator" in message for message in messages)
        assert not (tmp_path / "dev" / shared.OPERATOR_PID_FILE).exists()
    finally:
        operator.kill()


def test_down_never_signals_a_recycled_pid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(shared.DEV_HOME_ENV, str(tmp_path / "dev"))
    (tmp_path / "dev").mkdir()
    bystander = _sleeper("something-else")
    try:
        (tmp_path / "dev" / shared.OPERATOR_PID_FILE).write_text(f"{bystander.pid}\n")
        shared.down(progress=lambda _message: None)
        assert bystander.poll() is None, "a process that is not `respool run` was signalled"
        assert not (tmp_path / "dev" / shared.OPERATOR_PID_FILE).exists()
    finally:
        bystander.kill()


def test_a_published_cache_entry_replaces_the_old_one_whole(tmp_path: Path) -> None:
    """build.publish_cache_entry (the control plane's and Flux's builds share it): the staged
    directory becomes the entry with its build record, and an entry already there is swapped
    out, not merged with."""
    from respool.devcluster.build import BUILD_INFO, publish_cache_entry, read_build_info

    destination = tmp_path / "entry"
    for generation in (1, 2):
        staging = tmp_path / f".staging-{generation}"
        staging.mkdir()
        (staging / f"binary-{generation}").write_text("x")
        publish_cache_entry(staging, destination, {"generation": generation},
                            started=time.monotonic(), results=[],
                            binaries=[f"binary-{generation}"])
        assert not staging.exists()
        assert sorted(p.name for p in destination.iterdir()) == sorted(
            [BUILD_INFO, f"binary-{generation}"])
        info = read_build_info(destination)
        assert info["generation"] == generation
        assert info["binary_bytes"] == {f"binary-{generation}": 1} and info["steps"] == []
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]  # the old entry is gone too
