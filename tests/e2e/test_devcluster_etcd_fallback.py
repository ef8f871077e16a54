"""The Debian etcd-server fallback, end to end: etcd's Go build fails, Debian's etcd is fetched,
and a real control plane runs on it.

SLOW and NETWORKED (about 30-60 s): it downloads Debian's etcd-server package (8 MB) with
``apt-get download`` from the machine's Debian mirror, and may refresh private apt lists
(about 25 MB) when the system's lists do not know the package. It fails, never skips, when the
mirror is unreachable: the fallback is then broken on this machine, and that is what it tests.

kube-apiserver, kubectl and helm are the ones this machine already built (hard-linked into a
temporary cache as a set whose etcd is missing), so nothing is compiled; etcd's Go build is made
to fail for real, with an empty module cache and a module proxy nobody listens on.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from respool.devcluster import DEFAULT_VERSIONS, ensure_binaries, find_go
from respool.devcluster.build import BUILD_INFO, build_steps
from respool.devcluster.controlplane import pid_alive
from respool.devcluster.debian_etcd import fetch_debian_etcd, upstream_version

pytestmark = pytest.mark.e2e


def _respool(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "respool.cli.main", "dev", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        target.write_bytes(source.read_bytes())
        target.chmod(0o755)


def _seed_set_without_etcd(cache: Path) -> Path:
    """This machine's binaries, but etcd, as a Go-built set that lost its etcd."""
    built = ensure_binaries(progress=lambda _message: None)
    toolchain = find_go()
    entry = cache / "respool" / "bin" / DEFAULT_VERSIONS.cache_key(toolchain.version, toolchain.goarch)
    entry.mkdir(parents=True)
    steps = [step for step in build_steps(DEFAULT_VERSIONS) if step.name != "etcd"]
    for name in (binary for step in steps for binary in step.packages):
        _link_or_copy(built / name, entry / name)
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


CRD = textwrap.dedent(
    """\
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: gadgets.fallback.respool.test
    spec:
      group: fallback.respool.test
      names: {kind: Gadget, plural: gadgets, singular: gadget, listKind: GadgetList}
      scope: Namespaced
      versions:
      - name: v1
        served: true
        storage: true
        subresources: {status: {}}
        schema:
          openAPIV3Schema:
            type: object
            properties:
              spec: {type: object, properties: {size: {type: integer, minimum: 1}}}
              status: {type: object, properties: {phase: {type: string}}}
    """
)


def test_failed_etcd_build_falls_back_to_debian_and_a_control_plane_runs_on_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    seeded = _seed_set_without_etcd(cache)
    dead_proxy = f"http://127.0.0.1:{_closed_port()}"
    env = dict(os.environ)
    env.pop("RESPOOL_BIN_DIR", None)
    env.pop("RESPOOL_ETCD_SOURCE", None)  # the default, auto
    env.update(
        XDG_CACHE_HOME=str(cache),
        RESPOOL_DEV_HOME=str(tmp_path / "dev"),
        GOMODCACHE=str(tmp_path / "gomodcache"),
        GOFLAGS="-modcacherw",
        GOPROXY=dead_proxy,
    )

    build = _respool("build", env=env)
    assert build.returncode == 0, build.stderr
    fallback = re.search(
        r"building etcd from Go modules failed: could not download go\.etcd\.io/etcd/server/v3@"
        + re.escape(DEFAULT_VERSIONS.etcd)
        + r": the Go module proxy \(" + re.escape(dead_proxy) + r"\) is unreachable; "
        r"falling back to Debian's etcd-server (\S+)\n",
        build.stderr,
    )
    assert fallback, build.stderr
    package_version = fallback[1]
    debian_set = Path(build.stdout.strip())
    toolchain = find_go()
    assert debian_set.name == DEFAULT_VERSIONS.debian_etcd_cache_key(toolchain.version, toolchain.goarch)
    info = json.loads((debian_set / BUILD_INFO).read_text())
    assert info["etcd"]["source"] == "debian"
    assert info["etcd"]["package_version"] == package_version
    assert "unreachable" in info["etcd"]["fallback_reason"]
    assert info["reported"]["etcd"] == f"etcd Version: {info['etcd']['version']}"
    assert info["reported"]["kube-apiserver"] == f"Kubernetes {DEFAULT_VERSIONS.kubernetes}"
    # The damaged Go-built set is left as it was (no etcd appeared in it), nothing half-written.
    assert not (seeded / "etcd").exists()
    assert sorted(p.name for p in debian_set.parent.iterdir()) == sorted(
        [".build.lock", seeded.name, debian_set.name]
    )

    # `respool dev up` on this cache uses the Debian set, says so, and the plane is real.
    try:
        up = _respool("up", env=env)
        assert up.returncode == 0, up.stderr
        assert f"Debian's etcd-server {package_version}" in up.stderr
        status = _respool("status", "--json", env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert report["running"] is True
        assert report["bin_dir"] == str(debian_set)
        assert report["etcd"]["source"] == "debian"
        assert report["versions"]["etcd"] == f"v{info['etcd']['version']}"
        etcd_pid = report["processes"]["etcd"]["pid"]
        assert pid_alive(etcd_pid)
        assert Path(f"/proc/{etcd_pid}/exe").resolve() == (debian_set / "etcd").resolve()
        human = _respool("status", env=env)
        assert f"from Debian's etcd-server {package_version} (fallback:" in human.stdout

        kubectl_env = dict(env, KUBECONFIG=report["kubeconfig"])

        def kubectl(*args: str, stdin: str | None = None) -> str:
            done = subprocess.run(
                [str(debian_set / "kubectl"), *args],
                input=stdin,
                capture_output=True,
                text=True,
                env=kubectl_env,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
            return done.stdout

        kubectl("create", "namespace", "fallback")
        kubectl("-n", "fallback", "create", "configmap", "settings", "--from-literal=colour=blue")
        assert kubectl("-n", "fallback", "get", "configmap", "settings", "-o", "jsonpath={.data.colour}") == "blue"
        kubectl("apply", "-f", "-", stdin=CRD)
        kubectl("wait", "--for=condition=Established", "--timeout=90s", "crd/gadgets.fallback.respool.test")
        kubectl(
            "-n", "fallback", "apply", "-f", "-",
            stdin="apiVersion: fallback.respool.test/v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {size: 2}\n",
        )
        kubectl(
            "-n", "fallback", "patch", "gadget", "g1", "--subresource=status", "--type=merge",
            "-p", '{"status": {"phase": "Ready"}}',
        )
        gadget = json.loads(kubectl("-n", "fallback", "get", "gadget", "g1", "-o", "json"))
        assert gadget["status"] == {"phase": "Ready"}
        assert gadget["spec"] == {"size": 2}
        kubectl("-n", "fallback", "delete", "configmap", "settings")
        assert "settings" not in kubectl("-n", "fallback", "get", "configmaps", "-o", "name")
    finally:
        down = _respool("down", env=env)
        assert down.returncode == 0, down.stderr


def test_debian_etcd_is_fetched_with_private_package_lists_when_apt_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh container has empty apt lists and `apt-get update` on them needs root: respool
    then refreshes lists of its own in its cache. The system's lists are hidden here with an
    APT_CONFIG naming an empty lists directory (the machine's sources stay as they are).
    Networked: about 25 MB of package lists and the 8 MB package."""
    empty_lists = tmp_path / "empty-lists"
    (empty_lists / "partial").mkdir(parents=True)
    apt_config = tmp_path / "apt.conf"
    apt_config.write_text(f'Dir::State::Lists "{empty_lists}/";\n')
    monkeypatch.setenv("APT_CONFIG", str(apt_config))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hidden = subprocess.run(
        ["apt-cache", "policy", "etcd-server"], capture_output=True, text=True, timeout=120, check=False
    )
    assert "Candidate: 3" not in hidden.stdout  # the system's lists are really out of sight

    staging = tmp_path / "cache" / "respool" / "bin" / ".staging"
    staging.mkdir(parents=True)
    messages: list[str] = []
    fetched = fetch_debian_etcd(staging, messages.append)

    private_lists = tmp_path / "cache" / "respool" / "apt" / "lists"
    assert fetched.package_lists == str(private_lists)
    assert any("refreshing a private copy" in message for message in messages), messages
    assert fetched.binary == staging / "etcd"
    version = subprocess.run(
        [str(fetched.binary), "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert f"etcd Version: {fetched.etcd_version}" in version.stdout
    assert fetched.etcd_version == upstream_version(fetched.package_version)
    # Only the binary lands in the staging directory; the download and unpacked tree are gone.
    assert sorted(p.name for p in staging.parent.iterdir()) == [".staging"]
    assert sorted(p.name for p in staging.iterdir()) == ["etcd"]
