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

import base64
import json
import os
import re
import secrets
import shlex
import signal
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .invariants import assert_no_conflicting_holds
from .test_client_ats import admin_cluster
from .test_examples_live import PROMISED, _documents, _renamed, _stalled_reason
from .test_rbac_least_privilege import (
    CHART,
    REFUSED_CALL,
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


def _rendered_pod(kube_env: dict[str, str], bin_dir: Path, release: str,
                  namespace: str, values: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the container, the Pod spec) of the Deployment that `helm template` renders."""
    rendered = subprocess.run(
        [str(bin_dir / "helm"), "template", release, str(CHART), "--namespace", namespace,
         *values], capture_output=True, text=True, env=kube_env, timeout=120, check=True).stdout
    (deployment,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return dict(container), dict(spec)


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


def _server_of(control_plane: Any) -> tuple[str, int, bytes]:
    """(host, port, CA certificate) of the test cluster's kubeconfig."""
    cluster = admin_cluster(control_plane)
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


# The kubelet's part: a private mount namespace whose root is the image, read-only, and the
# volumes (pairs of a host directory and its mount point inside the image), read-only too.
_RUN_AS_KUBELET = r"""
set -eu
root="$1" user="$2" count="$3"; shift 3
mount --make-rprivate /
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777,size=64m tmpfs "$root/tmp"
while [ "$count" -gt 0 ]; do
    mount --bind "$1" "$2"
    mount -o remount,bind,ro "$2"
    shift 2
    count=$((count - 1))
done
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


class ChartRelease:
    """A `helm install` of the chart, and its Deployment run from the image as a kubelet would."""

    def __init__(self, control_plane: Any, kube_env: dict[str, str], kubectl: Any,
                 rootfs: Path, image_config: dict[str, Any], work: Path) -> None:
        self.control_plane, self.kube_env, self.kubectl = control_plane, kube_env, kubectl
        self.rootfs, self.image_config, self.work = rootfs, image_config, work
        suffix = secrets.token_hex(3)
        self.namespace, self.release = f"respool-image-{suffix}", f"image-{suffix}"
        self.account = f"{self.release}-respool"
        self.liveness_port, self.metrics_port = _free_port(), _free_port()
        self.helm = str(control_plane.bin_dir / "helm")
        self.process: ImageProcess | None = None
        self.rollouts = 0

    def values(self, *extra: str) -> list[str]:
        return ["--set", f"liveness.port={self.liveness_port}", "--set", "metrics.enabled=true",
                "--set", f"metrics.port={self.metrics_port}", *extra]

    def helm_run(self, verb: str, values: list[str]) -> None:
        result = subprocess.run([self.helm, verb, self.release, str(CHART), "--namespace",
                                 self.namespace, *values], capture_output=True, text=True,
                                env=self.kube_env, timeout=180, check=False)
        assert result.returncode == 0, result.stderr

    def install(self, values: list[str]) -> None:
        self.kubectl("create", "namespace", self.namespace)
        self.helm_run("install", values)

    def start(self, values: list[str]) -> ImageProcess:
        """Start the Deployment's container from the image, as rendered with `values`."""
        assert self.process is None or self.process.process.poll() is not None
        self.rollouts += 1
        container, pod_spec = _rendered_pod(self.kube_env, self.control_plane.bin_dir,
                                            self.release, self.namespace, values)
        # The ServiceAccount volume: a fresh token for the chart's identity, CA, namespace.
        host, port, ca = _server_of(self.control_plane)
        token = self.kubectl("create", "token", self.account, "-n", self.namespace,
                             "--duration=2h").stdout.strip()
        secrets_dir = self.work / f"serviceaccount-{self.rollouts}"
        secrets_dir.mkdir()
        (secrets_dir / "token").write_text(token)
        (secrets_dir / "ca.crt").write_bytes(ca)
        (secrets_dir / "namespace").write_text(self.namespace)
        secrets_dir.chmod(0o755)
        for item in secrets_dir.iterdir():
            item.chmod(0o644)
        mountpoint = _inside(self.rootfs, SERVICE_ACCOUNT_DIR)
        mountpoint.mkdir(parents=True, exist_ok=True)
        mounts = [(secrets_dir, mountpoint), *self._secret_volumes(container, pod_spec)]
        # What runs: the image's ENTRYPOINT with the Deployment's args, as the image's USER, in
        # the image's WORKDIR, with the image's Env, the Deployment's env and the API address.
        config = self.image_config
        env = dict(item.split("=", 1) for item in config.get("Env") or [])
        pod = f"{self.release}-respool-{self.rollouts}"
        env.update(_resolve_env(container, pod, self.namespace))
        env.update({"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port)})
        self.user = config["User"]
        assert self.user and not self.user.startswith("0") and self.user != "root", self.user
        argv = [*config["Entrypoint"], *container["args"]]
        workdir = config.get("WorkingDir") or "/"
        command = ["unshare", "--mount", "--fork", "bash", "-c", _RUN_AS_KUBELET, "kubelet",
                   str(self.rootfs), self.user, str(len(mounts)),
                   *(str(path) for pair in mounts for path in pair),
                   "/usr/bin/env", "-i", "-C", workdir,
                   *(f"{k}={v}" for k, v in env.items()), *argv]
        process = ImageProcess(command, self.work / f"operator-{self.rollouts}.log")
        self.process = process

        def live() -> bool:
            assert process.process.poll() is None, (
                f"the image's process exited:\n{shlex.join(command)}\n{process.log()[-4000:]}")
            try:
                url = f"http://127.0.0.1:{self.liveness_port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as answer:
                    return answer.status == 200
            except OSError:
                return False

        wait_for("the image's liveness endpoint", live, timeout=120)
        return process

    def _secret_volumes(self, container: dict[str, Any],
                        pod_spec: dict[str, Any]) -> list[tuple[Path, Path]]:
        """The container's Secret volumes as the kubelet makes them: the Secret's keys as files
        (mode `defaultMode`, group `fsGroup`), to be mounted read-only at `mountPath`."""
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
        group = (pod_spec.get("securityContext") or {}).get("fsGroup")
        mounts = []
        for mount in container.get("volumeMounts") or []:
            secret = volumes[mount["name"]].get("secret")
            if secret is None:
                continue  # emptyDir /tmp: the tmpfs
            assert mount.get("readOnly") is True, mount
            found = json.loads(self.kubectl("get", "secret", secret["secretName"], "-n",
                                            self.namespace, "-o", "json").stdout)
            directory = self.work / f"secret-{mount['name']}-{self.rollouts}"
            directory.mkdir()
            directory.chmod(0o755)
            for key, value in found["data"].items():
                path = directory / key
                path.write_bytes(base64.b64decode(value))
                path.chmod(secret.get("defaultMode", 0o644))
                if group is not None:
                    os.chown(path, 0, int(group))
            inside = _inside(self.rootfs, mount["mountPath"])
            inside.mkdir(parents=True, exist_ok=True)
            mounts.append((directory, inside))
        return mounts

    def logs(self) -> str:
        return "".join(path.read_text(errors="replace")
                       for path in sorted(self.work.glob("operator-*.log")))

    def close(self) -> None:
        if self.process is not None:
            self.process.stop()
        subprocess.run([self.helm, "uninstall", self.release, "--namespace", self.namespace],
                       capture_output=True, text=True, env=self.kube_env, timeout=120,
                       check=False)
        self.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)


@pytest.fixture
def chart_release(image_rootfs: tuple[Path, dict[str, Any]], control_plane: Any,
                  kube_env: dict[str, str], kubectl: Any, request: pytest.FixtureRequest,
                  tmp_path: Path) -> Iterator[ChartRelease]:
    stop_shared_operator(request)
    rootfs, image_config = image_rootfs
    release = ChartRelease(control_plane, kube_env, kubectl, rootfs, image_config, tmp_path)
    try:
        yield release
    finally:
        release.close()


def _assert_clean(log: str) -> None:
    assert not REFUSED_CALL.search(log), log[-4000:]
    assert "Traceback" not in log, log[-4000:]


def test_the_image_runs_as_the_chart_deploys_it_and_reconciles_the_examples(
    chart_release: ChartRelease, kubectl: Any, rk: Any,
) -> None:
    # With the dashboard on: the image (no Kubernetes client) serves it too, under the chart's RBAC.
    dashboard_port = _free_port()
    values = chart_release.values("--set", "dashboard.enabled=true",
                                  "--set", f"dashboard.port={dashboard_port}")
    chart_release.install(values)
    operator = chart_release.start(values)
    pid = operator.operator_pid()
    status = Path(f"/proc/{pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uid_line.split()[1:]) == {chart_release.user.split(":")[0]}, uid_line
    root_mount = next(line.split() for line in
                      Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                      if line.split()[4] == "/")
    assert "ro" in root_mount[5].split(","), root_mount
    assert Path(f"/proc/{pid}/root/opt/respool/bin/respool").exists()

    documents = _renamed(_documents(), secrets.token_hex(3))
    reservations = {d["metadata"]["name"]: d for d in documents
                    if d["kind"] == "ResourceReservation"}
    pools = [d["metadata"]["name"] for d in documents if d["kind"] == "ResourcePool"]
    try:
        kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in documents))
        for name, (phases, reason) in PROMISED.items():
            reservation_namespace = reservations[name]["metadata"]["namespace"]
            obj = rk.wait_for(
                reservation_namespace, name,
                lambda o, phases=phases: (o.get("status") or {}).get("phase") in phases,
                timeout=60, what=f"one of {sorted(phases)}")
            assert _stalled_reason(obj["status"]) == reason, (name, obj["status"])

        def dashboard_shows_them() -> bool:
            url = f"http://127.0.0.1:{dashboard_port}/api/state"
            try:
                with urllib.request.urlopen(url, timeout=10) as answer:
                    state = json.loads(answer.read())
            except OSError:
                return False
            shown = {r["name"] for r in state["reservations"]} | {p["name"] for p in state["pools"]}
            return shown >= set(reservations) | set(pools)

        wait_for("the image's dashboard showing the examples", dashboard_shows_them, timeout=60)
        assert operator.process.poll() is None
        _assert_clean(chart_release.logs())
    finally:
        for name, document in reservations.items():
            kubectl("delete", "rsv", name, "-n", document["metadata"]["namespace"],
                    "--wait=false", check=False)
        for pool in pools:
            kubectl("delete", "rpool", pool, "--wait=false", check=False)


def test_the_image_serves_the_webhook_with_a_certificate_it_makes(
    chart_release: ChartRelease, kubectl: Any,
) -> None:
    """webhook.enabled=true, as the chart deploys it: the image makes the webhook's certificate
    itself (the openssl command, into the writable /tmp of a read-only root), registers the
    Service with the CA bundle and serves TLS that the bundle verifies for the Service's names.
    (The API server cannot reach a Service here - no cluster network - so that call is not
    made; tests/e2e/test_enforcement.py has the API server call the webhook.)"""
    port = _free_port()
    values = chart_release.values("--set", "webhook.enabled=true",
                                  "--set", f"webhook.port={port}")
    chart_release.install(values)
    service = f"{chart_release.account}-webhook"

    def registered() -> dict[str, Any] | None:
        found = kubectl("get", "mutatingwebhookconfiguration", "respool.io", "-o", "json",
                        check=False)
        if found.returncode != 0:
            return None
        for hook in json.loads(found.stdout).get("webhooks") or []:
            config = hook.get("clientConfig") or {}
            if config.get("caBundle") and (config.get("service") or {}).get("name") == service:
                return dict(config)
        return None

    try:
        operator = chart_release.start(values)
        config = wait_for("the image's webhook registered with the Service", registered,
                          timeout=120)
        assert config["service"]["namespace"] == chart_release.namespace
        context = ssl.create_default_context(
            cadata=base64.b64decode(config["caBundle"]).decode())
        for name in (f"{service}.{chart_release.namespace}.svc",
                     f"{service}.{chart_release.namespace}.svc.cluster.local"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    context.wrap_socket(raw, server_hostname=name) as tls:
                assert tls.version()
        assert operator.process.poll() is None
        assert "generated certificate" in chart_release.logs(), chart_release.logs()[-4000:]
        _assert_clean(chart_release.logs())
    finally:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            kubectl("delete", kind, "respool.io", "--ignore-not-found", check=False)


def test_the_image_serves_the_webhook_with_the_certificate_secret_it_is_given(
    chart_release: ChartRelease, kubectl: Any, tmp_path: Path,
) -> None:
    """webhook.certificateSecret (e.g. cert-manager's): the kubelet mounts the Secret, the image
    serves exactly that certificate and registers exactly its ca.crt as the CA bundle, with the
    chart's RBAC, which has no rule on Secrets."""
    from respool.controller.webhook_certs import make_certificates

    port = _free_port()
    values = chart_release.values("--set", "webhook.enabled=true",
                                  "--set", f"webhook.port={port}",
                                  "--set", "webhook.certificateSecret=webhook-tls")
    chart_release.install(values)
    service = f"{chart_release.account}-webhook"
    names = [f"{service}.{chart_release.namespace}.svc",
             f"{service}.{chart_release.namespace}.svc.cluster.local"]
    ca_pem, cert_pem, key_pem = make_certificates(names)
    for name, pem in (("ca.crt", ca_pem), ("tls.crt", cert_pem), ("tls.key", key_pem)):
        (tmp_path / name).write_bytes(pem)
    kubectl("create", "secret", "generic", "webhook-tls", "--type=kubernetes.io/tls",
            "-n", chart_release.namespace, f"--from-file={tmp_path / 'ca.crt'}",
            f"--from-file={tmp_path / 'tls.crt'}", f"--from-file={tmp_path / 'tls.key'}")

    def registered() -> dict[str, Any] | None:
        found = kubectl("get", "mutatingwebhookconfiguration", "respool.io", "-o", "json",
                        check=False)
        if found.returncode != 0:
            return None
        for hook in json.loads(found.stdout).get("webhooks") or []:
            config = hook.get("clientConfig") or {}
            if config.get("caBundle") and (config.get("service") or {}).get("name") == service:
                return dict(config)
        return None

    try:
        operator = chart_release.start(values)
        config = wait_for("the image's webhook registered with the Secret's CA", registered,
                          timeout=120)
        assert base64.b64decode(config["caBundle"]) == ca_pem
        context = ssl.create_default_context(cadata=ca_pem.decode())
        for name in names:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    context.wrap_socket(raw, server_hostname=name) as tls:
                served = tls.getpeercert(binary_form=True)
                assert served == ssl.PEM_cert_to_DER_cert(cert_pem.decode())
        assert operator.process.poll() is None
        log = chart_release.logs()
        assert "provided certificate in /etc/respool/webhook-tls" in log, log[-4000:]
        _assert_clean(log)
    finally:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            kubectl("delete", kind, "respool.io", "--ignore-not-found", check=False)


#: issue 17's target for the image: its uncompressed size, as `buildah images` (and `podman
#: images`) report it, in decimal megabytes.
IMAGE_SIZE_LIMIT = 150_000_000

_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def _image_size(image: str) -> tuple[int, str]:
    """(bytes, the figure `buildah images` shows) of a locally built image, counted as
    container storage counts it: the uncompressed archives of the image's layers plus the
    image's stored data items (its configuration, its manifest under two keys, signatures).
    The layers of a local build are stored uncompressed, so the manifest's layer sizes are
    those archives' sizes (files, their tar headers and padding, directories, links)."""
    inspected = json.loads(_buildah("inspect", "--type", "image", image))
    manifest = json.loads(inspected["Manifest"])
    assert all(layer["mediaType"].endswith(".tar") for layer in manifest["layers"]), manifest
    store = json.loads(_buildah("info"))["store"]
    records = json.loads((Path(store["GraphRoot"]) / f"{store['GraphDriverName']}-images"
                          / "images.json").read_text())
    (record,) = [r for r in records if r["id"] == inspected["FromImageID"]]
    size = (sum(layer["size"] for layer in manifest["layers"])
            + sum(record.get("big-data-sizes", {}).values()))
    (listed,) = json.loads(_buildah("images", "--json", image))
    return size, str(listed["size"])


def _formatted(size: int) -> str:
    """`size` as buildah prints it (three significant digits, decimal units)."""
    value, unit = float(size), "B"
    for bigger in ("KB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{value:.3g} {unit}"


def test_the_image_is_within_its_size_target_as_buildah_reports_it(built_image: str) -> None:
    size, shown = _image_size(built_image)
    # The byte count here is the figure buildah shows (so the limit holds for what users see).
    assert _formatted(size) == shown, (size, shown)
    number, unit = shown.split()
    assert float(number) * _UNITS[unit.upper()] <= IMAGE_SIZE_LIMIT, f"buildah images: {shown}"
    assert size <= IMAGE_SIZE_LIMIT, f"the image is {size:,} bytes ({shown})"


def test_the_image_holds_the_operator_only(
    image_rootfs: tuple[Path, dict[str, Any]],
) -> None:
    """No Kubernetes client in the image (the client extra; the operator never imports it), no
    cryptography (the webhook's certificate comes from the openssl command), and the client's
    commands there say what to install."""
    rootfs, config = image_rootfs
    (site_packages,) = (rootfs / "opt" / "respool" / "lib").glob("python3*/site-packages")
    assert (site_packages / "kopf").is_dir() and (site_packages / "respool").is_dir()
    assert not (site_packages / "kubernetes").exists()
    assert not (site_packages / "urllib3").exists()
    assert not (site_packages / "cryptography").exists()
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    user = config["User"]
    ran = subprocess.run(
        ["chroot", f"--userspec={user}", str(rootfs), "/usr/bin/env", "-i",
         *(f"{k}={v}" for k, v in env.items()), *config["Entrypoint"], "get", "pools"],
        capture_output=True, text=True, timeout=120, check=False)
    assert ran.returncode == 2, (ran.stdout, ran.stderr)
    assert "pip install 'respool[client]'" in ran.stderr, ran.stderr
    ran = subprocess.run(
        ["chroot", f"--userspec={user}", str(rootfs), "/usr/bin/env", "-i",
         *(f"{k}={v}" for k, v in env.items()), *config["Entrypoint"], "run", "--help"],
        capture_output=True, text=True, timeout=120, check=False)
    assert ran.returncode == 0, ran.stderr


def _pool(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "respool.io/v1alpha1", "kind": "ResourcePool",
        "metadata": {"name": name},
        "spec": {"resources": {"version": 1, "execution": {
            "R_lite": [{"rank": "0-3", "children": {"core": "0-7"}}],
            "nodelist": [f"{name}-n[0-3]"]}}},
    }


def _reservation(name: str, namespace: str, pool: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "respool.io/v1alpha1", "kind": "ResourceReservation",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"pool": pool, **spec}}


def test_helm_upgrade_with_live_reservations_loses_nothing_and_grants_nothing_twice(
    chart_release: ChartRelease, kubectl: Any, rk: Any, namespace: str,
) -> None:
    """helm install; live reservations; the new CRDs applied as docs/install.md says; helm
    upgrade to a changed chart; the Deployment rolled (old process SIGTERMed, the new one started
    with the upgraded args): every grant is kept with its ID and window, nothing is held twice,
    and decisions go on."""
    first = chart_release.values()
    chart_release.install(first)
    old = chart_release.start(first)
    pool = f"upgrade-{secrets.token_hex(3)}"
    kubectl("apply", "-f", "-", input=json.dumps(_pool(pool)))
    objects = [
        _reservation("holder-a", namespace, pool, mode="exclusive", duration="2h",
                     request={"nodes": 2, "slots": 1, "coresPerSlot": 8}),
        _reservation("holder-b", namespace, pool, mode="shared", duration="2h",
                     request={"slots": 1, "coresPerSlot": 2}),
        _reservation("later", namespace, pool, mode="exclusive", duration="1h",
                     startTime="2030-06-01T02:00:00Z",
                     request={"nodes": 4, "slots": 1, "coresPerSlot": 8}),
        _reservation("waiter", namespace, pool, mode="exclusive", duration="1h",
                     nextAvailable=False, maxRetry=50,
                     request={"nodes": 4, "slots": 1, "coresPerSlot": 8}),
    ]
    try:
        kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in objects))
        before = {
            "holder-a": rk.wait_phase(namespace, "holder-a", "Active", timeout=60)["status"],
            "holder-b": rk.wait_phase(namespace, "holder-b", "Active", timeout=60)["status"],
            "later": rk.wait_phase(namespace, "later", "Scheduled", timeout=60)["status"],
            "waiter": rk.wait_phase(namespace, "waiter", "Pending", timeout=60)["status"],
        }
        # The upgrade: CRDs first (Helm never upgrades crds/), then the chart with changed
        # values, then the rollout: the old Pod gets SIGTERM, the new one starts.
        kubectl("apply", "--server-side", "--force-conflicts", "-f",
                str(CHART / "crds"))
        changed = chart_release.values("--set", "operator.poolStatusInterval=2",
                                       "--set", "operator.logLevel=debug")
        chart_release.helm_run("upgrade", changed)
        old.stop()
        assert old.process.returncode == 0, old.log()[-3000:]
        chart_release.start(changed)
        # Decisions go on under the upgraded chart: a new reservation is granted.
        kubectl("apply", "-f", "-", input=json.dumps(_reservation(
            "after-upgrade", namespace, pool, mode="exclusive", duration="30m",
            request={"slots": 1, "coresPerSlot": 1})))
        rk.wait_phase(namespace, "after-upgrade", "Active", timeout=60)
        for name, status in before.items():
            now = rk.get(namespace, name)["status"]
            assert now["phase"] == status["phase"], (name, now)
            for key in ("reservationId", "preReservationId", "startTime", "endTime",
                        "allocated"):
                assert now.get(key) == status.get(key), (name, key, now.get(key), status.get(key))
        items = [rk.get(namespace, o["metadata"]["name"]) for o in objects]
        items.append(rk.get(namespace, "after-upgrade"))
        assert_no_conflicting_holds(items)
        _assert_clean(chart_release.logs())
    finally:
        for o in [*objects, {"metadata": {"name": "after-upgrade"}}]:
            kubectl("delete", "rsv", o["metadata"]["name"], "-n", namespace, "--wait=false",
                    check=False)
        kubectl("delete", "rpool", pool, "--wait=false", check=False)
