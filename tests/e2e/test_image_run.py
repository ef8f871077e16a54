"""The built image, run the way a kubelet runs it, reconciles the examples under the chart's RBAC.

`scripts/image.sh` builds `localhost/respool:<version>` with buildah. No OCI runtime can start
containers on our machines, so this test does what a kubelet would make of the chart's
Deployment, by hand: the image's filesystem (buildah mount) becomes the root of a private mount
namespace, read-only, with a tmpfs on /tmp, /proc and /dev, and the ServiceAccount token, CA and
namespace mounted read-only at /var/run/secrets/kubernetes.io/serviceaccount/; the process is the
image's ENTRYPOINT as the image's USER, with the image's environment, and the args and env of the
Deployment that `helm template` renders (nothing copied by hand). It shares the host's network,
so KUBERNETES_SERVICE_HOST/PORT point at the private API server on loopback.

Needs root (mount namespaces, chroot) and buildah; scripts/image.sh installs buildah and
mmdebstrap with apt-get when they are missing. Anything missing makes the test fail, not skip.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .test_examples_live import PROMISED, _documents, _renamed, _stalled_reason
from .test_rbac_least_privilege import (
    CHART,
    PERMISSION_ERROR,
    _free_port,
    stop_shared_operator,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def _buildah(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"buildah {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


@pytest.fixture(scope="session")
def built_image() -> str:
    """Builds (or rebuilds from buildah's layer cache) the image of this checkout."""
    result = subprocess.run(["bash", str(ROOT / "scripts" / "image.sh")], capture_output=True,
                            text=True, timeout=1800, cwd=ROOT)
    assert result.returncode == 0, f"scripts/image.sh failed:\n{result.stderr[-6000:]}"
    tag = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"localhost/respool:\S+", tag), tag
    return tag


@pytest.fixture
def image_rootfs(built_image: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(root filesystem, OCI config) of a fresh working container of the image."""
    config = json.loads(_buildah("inspect", "--type", "image", built_image))["OCIv1"]["config"]
    container = _buildah("from", "--pull-never", built_image)
    try:
        rootfs = Path(_buildah("mount", container))
        yield rootfs, config
    finally:
        subprocess.run(["buildah", "umount", container], capture_output=True, timeout=60)
        subprocess.run(["buildah", "rm", container], capture_output=True, timeout=60)


def _rendered_container(kube_env: dict[str, str], bin_dir: Path, release: str,
                        namespace: str, values: list[str]) -> dict[str, Any]:
    rendered = subprocess.run(
        [str(bin_dir / "helm"), "template", release, str(CHART), "--namespace", namespace,
         *values], capture_output=True, text=True, env=kube_env, timeout=120, check=True).stdout
    (deployment,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _resolve_env(container: dict[str, Any], pod_name: str, namespace: str) -> dict[str, str]:
    """The container's env as the kubelet resolves it (fieldRefs to the Pod's metadata)."""
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            path = item["valueFrom"]["fieldRef"]["fieldPath"]
            assert path in fields, f"this test does not know how to resolve {item}"
            env[item["name"]] = fields[path]
    return env


def _server_of(kubeconfig: Path) -> tuple[str, int, bytes]:
    """(host, port, CA certificate) of the kubeconfig's current cluster."""
    import base64

    config = yaml.safe_load(kubeconfig.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c for c in config["clusters"]
                   if c["name"] == context["context"]["cluster"])["cluster"]
    match = re.fullmatch(r"https://([^:/]+):(\d+)/?", cluster["server"])
    assert match, cluster["server"]
    if "certificate-authority-data" in cluster:
        ca = base64.b64decode(cluster["certificate-authority-data"])
    else:
        ca = Path(cluster["certificate-authority"]).read_bytes()
    return match[1], int(match[2]), ca


def _inside(root: Path, path: str) -> Path:
    """`path` of the image resolved within `root` (symlinks too, as runc's securejoin does:
    Debian's /var/run is a symlink to /run, which on the host would mean the host's /run)."""
    resolved = root
    parts = [p for p in path.split("/") if p]
    hops = 0
    while parts:
        part = parts.pop(0)
        candidate = resolved / part
        if candidate.is_symlink():
            hops += 1
            assert hops < 40, f"symlink loop in {path}"
            target = os.readlink(candidate)
            parts = [p for p in target.split("/") if p] + parts
            if target.startswith("/"):
                resolved = root
            continue
        resolved = root if part == ".." and resolved == root else (
            resolved.parent if part == ".." else candidate)
    return resolved


# The kubelet's part: a private mount namespace whose root is the image, read-only.
_RUN_AS_KUBELET = r"""
set -eu
root="$1" secrets="$2" mountpoint="$3" user="$4"; shift 4
mount --make-rprivate /
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777,size=64m tmpfs "$root/tmp"
mount --bind "$secrets" "$mountpoint"
mount -o remount,bind,ro "$mountpoint"
exec chroot --userspec="$user" "$root" "$@"
"""


class ImageProcess:
    def __init__(self, command: list[str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def operator_pid(self) -> int:
        """The pid of the image's process (unshare's child after chroot's exec)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = children.read_text().split()
        assert pids, "unshare has no child"
        return int(pids[0])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def test_the_image_runs_as_the_chart_deploys_it_and_reconciles_the_examples(
    image_rootfs: tuple[Path, dict[str, Any]], control_plane: Any, kube_env: dict[str, str],
    kubectl: Any, rk: Any, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    rootfs, image_config = image_rootfs
    stop_shared_operator(request)
    suffix = secrets.token_hex(3)
    namespace, release = f"respool-image-{suffix}", f"image-{suffix}"
    liveness_port, metrics_port = _free_port(), _free_port()
    values = ["--set", f"liveness.port={liveness_port}", "--set", "metrics.enabled=true",
              "--set", f"metrics.port={metrics_port}"]
    helm = str(control_plane.bin_dir / "helm")
    kubectl("create", "namespace", namespace)
    install = subprocess.run([helm, "install", release, str(CHART), "--namespace", namespace,
                              *values], capture_output=True, text=True, env=kube_env,
                             timeout=180, check=False)
    assert install.returncode == 0, install.stderr
    container = _rendered_container(kube_env, control_plane.bin_dir, release, namespace, values)
    account = f"{release}-respool"

    # The ServiceAccount volume: a token for the chart's identity, the cluster CA, the namespace.
    host, port, ca = _server_of(control_plane.kubeconfig)
    token = kubectl("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
    secrets_dir = tmp_path / "serviceaccount"
    secrets_dir.mkdir()
    (secrets_dir / "token").write_text(token)
    (secrets_dir / "ca.crt").write_bytes(ca)
    (secrets_dir / "namespace").write_text(namespace)
    secrets_dir.chmod(0o755)
    for item in secrets_dir.iterdir():
        item.chmod(0o644)
    mountpoint = _inside(rootfs, SERVICE_ACCOUNT_DIR)
    mountpoint.mkdir(parents=True, exist_ok=True)

    # What runs: the image's ENTRYPOINT with the Deployment's args, as the image's USER, in the
    # image's WORKDIR, with the image's Env, the Deployment's env and the service's address.
    env = dict(item.split("=", 1) for item in image_config.get("Env") or [])
    env.update(_resolve_env(container, f"{release}-respool-0", namespace))
    env.update({"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port)})
    user = image_config["User"]
    assert user and not user.startswith("0") and user != "root", user
    argv = [*image_config["Entrypoint"], *container["args"]]
    workdir = image_config.get("WorkingDir") or "/"
    command = ["unshare", "--mount", "--fork", "bash", "-c", _RUN_AS_KUBELET, "kubelet",
               str(rootfs), str(secrets_dir), str(mountpoint), user,
               "/usr/bin/env", "-i", "-C", workdir, *(f"{k}={v}" for k, v in env.items()), *argv]
    log_path = tmp_path / "image-operator.log"
    operator = ImageProcess(command, log_path)
    suffix_examples = secrets.token_hex(3)
    documents = _renamed(_documents(), suffix_examples)
    reservations = {d["metadata"]["name"]: d for d in documents
                    if d["kind"] == "ResourceReservation"}
    pools = [d["metadata"]["name"] for d in documents if d["kind"] == "ResourcePool"]
    try:
        def live() -> bool:
            assert operator.process.poll() is None, (
                f"the image's process exited:\n{shlex.join(command)}\n{operator.log()[-4000:]}")
            try:
                url = f"http://127.0.0.1:{liveness_port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as answer:
                    return answer.status == 200
            except OSError:
                return False

        wait_for("the image's liveness endpoint", live, timeout=120)
        pid = operator.operator_pid()
        status = Path(f"/proc/{pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert set(uid_line.split()[1:]) == {user.split(":")[0]}, uid_line
        root_mount = next(line.split() for line in
                          Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                          if line.split()[4] == "/")
        assert "ro" in root_mount[5].split(","), root_mount
        assert Path(f"/proc/{pid}/root/opt/respool/bin/respool").exists()

        kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in documents))
        for name, (phases, reason) in PROMISED.items():
            reservation_namespace = reservations[name]["metadata"]["namespace"]
            obj = rk.wait_for(
                reservation_namespace, name,
                lambda o, phases=phases: (o.get("status") or {}).get("phase") in phases,
                timeout=60, what=f"one of {sorted(phases)}")
            assert _stalled_reason(obj["status"]) == reason, (name, obj["status"])
        assert operator.process.poll() is None
        log = operator.log()
        assert not PERMISSION_ERROR.search(log), log[-4000:]
        assert "Traceback" not in log, log[-4000:]
    finally:
        operator.stop()
        for name, document in reservations.items():
            kubectl("delete", "rsv", name, "-n", document["metadata"]["namespace"],
                    "--wait=false", check=False)
        for pool in pools:
            kubectl("delete", "rpool", pool, "--wait=false", check=False)
        subprocess.run([helm, "uninstall", release, "--namespace", namespace],
                       capture_output=True, text=True, env=kube_env, timeout=120, check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
