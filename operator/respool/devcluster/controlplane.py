"""A real local Kubernetes control plane: etcd + kube-apiserver on loopback, and optionally
the rest of a cluster (kube-controller-manager, kube-scheduler and kwok's simulated Nodes).

``ControlPlane(workdir)`` starts an independent control plane whose files live in ``workdir``
(kubeconfig, token file, service-account key, serving certificate, logs, ``state.json``) and
whose etcd data lives on tmpfs (``/dev/shm``) when there is one. What a bare control plane does
*not* do: there is no kube-controller-manager and no scheduler, so namespaces stay Terminating
after deletion, ownerReference garbage collection never runs, no default ServiceAccount appears
and no Pod runs. Tests must not wait on any of these.

``ControlPlane(workdir, whole_cluster=True)`` (what ``respool dev up`` runs, and the tests'
``cluster`` fixture) adds, once kube-apiserver is ready:

- kube-controller-manager with its default controllers (namespace deletion, garbage
  collection, service-account tokens, Deployments/ReplicaSets/Jobs, node lifecycle, ...);
- kube-scheduler, binding Pods to Nodes;
- kwok, which plays the kubelet of every Node annotated ``kwok.x-k8s.io/node: fake``: it keeps
  the Node Ready (a Lease in ``kube-node-lease``) and moves its Pods to Running without any
  container. :meth:`ControlPlane.ensure_fake_nodes` creates such Nodes.

Access: a bearer token for user ``admin`` in group ``system:masters`` (static token file),
authorization by RBAC, and service-account issuer/keys so that TokenRequest mints tokens that
RBAC then judges like any other identity.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from respool.devcluster.build import ensure_binaries, stderr_progress
from respool.devcluster.errors import DevClusterError, PortInUseError, StartError
from respool.devcluster.keys import bearer_token, rsa_private_key_pem
from respool.devcluster.kwok_stages import STAGES_YAML
from respool.devcluster.versions import DEFAULT_VERSIONS, Versions

STATE_FILE = "state.json"
ETCD_DATA_PREFIX = "respool-etcd-"
ADMIN_USER = "admin"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
#: Pod IPs kwok hands out (a /16: the scale benchmark runs 10,000 Pods; apart from the
#: service range above).
POD_CIDR = "10.244.0.0/16"
#: The address every simulated Node reports as its InternalIP.
FAKE_NODE_IP = "10.0.1.1"
#: kwok's convention: it plays the kubelet of exactly the Nodes carrying this annotation.
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
FAKE_NODE_ANNOTATION_VALUE = "fake"
#: The processes a whole cluster runs beyond etcd and kube-apiserver, in start order.
WORKLOAD_COMPONENTS = ("kube-controller-manager", "kube-scheduler", "kwok")
_ADDRESS_IN_USE = ("address already in use", "bind: address in use")
_PR_SET_PDEATHSIG = 1


#: etcd preallocates 64 MiB WAL segments; a small /dev/shm (64 MiB in default containers)
#: would fail it, so tmpfs is used only when it has room for a few.
_ETCD_MIN_FREE_BYTES = 512 * 2**20


def _default_etcd_root() -> Path | None:
    """tmpfs for etcd's data when writable and roomy (fast, nothing left on disk); else None."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        return None
    stats = os.statvfs(shm)
    return shm if stats.f_bavail * stats.f_frsize >= _ETCD_MIN_FREE_BYTES else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def check_port_free(port: int) -> None:
    """PortInUseError (with what to do) unless ``port`` on 127.0.0.1 can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {port} on 127.0.0.1 is already in use by another process "
                    f"(see `ss -ltnp 'sport = :{port}'`). Stop that process, choose another port, "
                    "or leave the port out to let respool pick a free one."
                ) from error
            raise


def pid_alive(pid: int, must_contain: str | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, if given, its command line contains a marker.

    The marker (a path unique to this control plane) guards against a recycled pid: we never
    signal a process that is not ours.
    """
    if pid <= 0:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if "\nState:\tZ" in status:
        return False
    return must_contain is None or must_contain in cmdline


def _message(body: Any) -> str:
    """The ``message`` of a Kubernetes Status body, else the body itself."""
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(body)[:500]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: the child gets SIGKILL when the process that started it dies.

    SIGKILL, not SIGTERM: kube-apiserver's graceful shutdown can wait indefinitely once etcd
    is gone, and neither process holds state worth flushing (etcd's data is thrown away; the
    next start sweeps its directory).
    """

    def apply() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return apply


def sweep_stale_etcd_data(root: Path) -> list[Path]:
    """Remove etcd data dirs under ``root`` left by control planes that were killed.

    A data dir belongs to a live control plane while the etcd pid recorded in it runs with that
    directory on its command line; young dirs are left alone (their owner may be starting).
    """
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    now = time.time()
    for entry in root.glob(f"{ETCD_DATA_PREFIX}*"):
        try:
            if now - entry.stat().st_mtime < 120:
                continue
            pid = int((entry / "pid").read_text().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if not pid_alive(pid, str(entry)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


@dataclass
class PlaneState:
    """What ``state.json`` records, so another process can find, check and stop the plane."""

    workdir: str
    bin_dir: str
    server: str
    api_port: int
    etcd_port: int
    etcd_peer_port: int
    etcd_data: str
    etcd_pid: int
    apiserver_pid: int
    started_at: float
    ready_seconds: float
    versions: dict[str, str]
    #: kube-controller-manager, kube-scheduler and kwok of a whole cluster:
    #: name -> {"pid": ..., "port": ...} (empty for a bare control plane).
    components: dict[str, dict[str, int]] = field(default_factory=dict)
    whole_cluster: bool = False


class ControlPlane:
    """etcd + kube-apiserver with their files in ``workdir`` (and, with ``whole_cluster``,
    kube-controller-manager, kube-scheduler and kwok).

    ``start()`` returns once ``/readyz`` answers; ``stop()`` ends both processes and removes
    the etcd data. ``die_with_parent=True`` (used by tests) makes both processes receive
    SIGKILL when the starting process dies, even by SIGKILL; without it they outlive the
    starter (``respool dev up``) and are found again through ``state.json``.
    """

    #: Every file and directory a control plane creates in its workdir.
    OWN_FILES = (
        STATE_FILE,
        STATE_FILE + ".tmp",
        "kubeconfig",
        "kubeconfig.tmp",
        "tokens.csv",
        "service-account.key",
        "certs",
        "logs",
        "kwok",
    )

    def __init__(
        self,
        workdir: Path | str,
        *,
        bin_dir: Path | str | None = None,
        versions: Versions = DEFAULT_VERSIONS,
        api_port: int | None = None,
        etcd_data_root: Path | str | None = None,
        die_with_parent: bool = False,
        start_timeout: float = 120.0,
        name: str = "respool",
        progress: Callable[[str], None] = stderr_progress,
        whole_cluster: bool = False,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self._bin_dir = Path(bin_dir) if bin_dir is not None else None
        self.versions = versions
        self.requested_api_port = api_port
        self.etcd_data_root = Path(etcd_data_root) if etcd_data_root else _default_etcd_root()
        self.die_with_parent = die_with_parent
        self.start_timeout = start_timeout
        self.name = name
        self.progress = progress
        self.whole_cluster = whole_cluster
        self.state: PlaneState | None = None
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    # -- files ------------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        # kube-apiserver writes its self-signed serving cert followed by its CA here.
        return self.workdir / "certs" / "apiserver.crt"

    @property
    def token_file(self) -> Path:
        return self.workdir / "tokens.csv"

    @property
    def sa_key_file(self) -> Path:
        return self.workdir / "service-account.key"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = ensure_binaries(self.versions, progress=self.progress)
        return self._bin_dir

    @property
    def server(self) -> str:
        if self.state is None:
            raise DevClusterError(f"the control plane in {self.workdir} is not started")
        return self.state.server

    @property
    def token(self) -> str:
        for line in self.token_file.read_text().splitlines():
            token, user, *_rest = line.split(",")
            if user == ADMIN_USER:
                return token
        raise DevClusterError(f"{self.token_file} has no token for {ADMIN_USER}")

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with KUBECONFIG and PATH set for it."""
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH", "")])
        return env

    def _prepare_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # kube-apiserver writes a fresh self-signed serving cert (valid one year) when none is
        # there; removing the old one on every start means a long-lived workdir never serves
        # an expired certificate.
        shutil.rmtree(self.workdir / "certs", ignore_errors=True)
        (self.workdir / "certs").mkdir()
        self.log_dir.mkdir(exist_ok=True)
        if not self.sa_key_file.exists():
            self._write_private(self.sa_key_file, rsa_private_key_pem())
        if not self.token_file.exists():
            self._write_private(
                self.token_file, f'{bearer_token()},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'.encode()
            )

    @staticmethod
    def _write_private(path: Path, content: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)

    def _write_kubeconfig(self, server: str) -> None:
        # JSON strings are valid YAML scalars: paths with spaces stay safe without a YAML library.
        def quote(value: str) -> str:
            return json.dumps(value)

        text = f"""apiVersion: v1
kind: Config
clusters:
- name: {quote(self.name)}
  cluster:
    server: {quote(server)}
    certificate-authority: {quote(str(self.ca_file))}
users:
- name: {quote(self.name + "-admin")}
  user:
    token: {quote(self.token)}
contexts:
- name: {quote(self.name)}
  context:
    cluster: {quote(self.name)}
    user: {quote(self.name + "-admin")}
    namespace: default
current-context: {quote(self.name)}
"""
        tmp = self.kubeconfig.with_suffix(".tmp")
        self._write_private(tmp, text.encode())
        tmp.replace(self.kubeconfig)

    # -- processes --------------------------------------------------------------------------

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            try:
                process = self._popen(args, log, env)
            except OSError as error:
                raise StartError(
                    f"could not start {name} ({args[0]}): {error}. If the binary is missing, "
                    "`respool dev build` builds it."
                ) from error
        self._processes[name] = process
        return process

    def _popen(self, args: list[str], log: Any, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
            # Own session: a Ctrl-C in the terminal reaches the starter, which stops the
            # plane in order, instead of killing etcd under a running apiserver.
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()) if self.die_with_parent else None,
        )

    def _etcd_args(self, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
        client = f"http://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        return [
            str(self.bin_dir / "etcd"),
            f"--name={self.name}",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}",
            # Test data on tmpfs: durability buys nothing, fsync costs a lot.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _apiserver_args(self, api_port: int, etcd_port: int) -> list[str]:
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--cert-dir={self.workdir / 'certs'}",
            f"--secure-port={api_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            # Nothing creates the `default` ServiceAccount without controller-manager; the
            # admission plugin would then refuse every Pod.
            "--disable-admission-plugins=ServiceAccount",
            "--authorization-mode=RBAC",
            f"--token-auth-file={self.token_file}",
            f"--service-account-issuer=https://127.0.0.1:{api_port}",
            f"--service-account-key-file={self.sa_key_file}",
            f"--service-account-signing-key-file={self.sa_key_file}",
            "--profiling=false",
        ]

    @property
    def kwok_dir(self) -> Path:
        return self.workdir / "kwok"

    def _component_args(self, name: str, port: int) -> list[str]:
        """Command line of a whole cluster's component ``name``, serving health on ``port``.

        Every component logs in with the admin kubeconfig (this is a private, loopback-only
        cluster) and serves ``/healthz`` on 127.0.0.1 only; their command lines all name that
        kubeconfig, which is how :func:`pid_alive` tells them from a recycled pid.
        """
        kubeconfig = str(self.kubeconfig)
        binary = str(self.bin_dir / name)
        serving = [
            f"--kubeconfig={kubeconfig}",
            # Delegated authentication and authorization as kubeadm sets them up; /healthz is
            # on the always-allowed paths, so the readiness probe needs no credentials.
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            # One instance per plane: nothing to elect, and no Lease to wait for on start.
            "--leader-elect=false",
            "--profiling=false",
        ]
        if name == "kube-controller-manager":
            return [
                binary,
                *serving,
                # The serviceaccount-token controller signs with the key kube-apiserver
                # verifies with; the CA goes into every namespace's kube-root-ca.crt.
                f"--service-account-private-key-file={self.sa_key_file}",
                f"--root-ca-file={self.ca_file}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            ]
        if name == "kube-scheduler":
            return [binary, *serving]
        if name == "kwok":
            return [
                binary,
                f"--kubeconfig={kubeconfig}",
                f"--config={self.kwok_dir / 'stages.yaml'}",
                # Only Nodes that ask for it: a real Node someone registers is left alone.
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}={FAKE_NODE_ANNOTATION_VALUE}",
                "--manage-nodes-with-label-selector=",
                "--manage-single-node=",
                f"--cidr={POD_CIDR}",
                f"--node-ip={FAKE_NODE_IP}",
                "--node-lease-duration-seconds=40",
                # Its /healthz answers once it has reached the API server and started.
                f"--server-address=127.0.0.1:{port}",
            ]
        raise DevClusterError(f"unknown component {name!r}; known: {', '.join(WORKLOAD_COMPONENTS)}")

    def _component_env(self, name: str) -> dict[str, str] | None:
        if name != "kwok":
            return None
        # kwok also reads ~/.kwok/kwok.yaml when it exists: a user's own kwok setup must not
        # change the dev cluster, so its work directory is the plane's.
        env = dict(os.environ)
        env["KWOK_WORKDIR"] = str(self.kwok_dir)
        return env

    def _stop_process(self, pid: int, marker: str, name: str, grace: float = 15.0) -> None:
        process = self._processes.pop(name, None)
        if process is not None and process.pid != pid:
            process = None  # not the process the state names: judge that one by its pid

        def running() -> bool:
            # Our own child: poll() is exact, even right after exec, when /proc/<pid>/cmdline
            # can still read empty and pid_alive() would wrongly say it is gone.
            if process is not None:
                return process.poll() is None
            return pid_alive(pid, marker)

        if not running():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not running():
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)

    # -- readiness --------------------------------------------------------------------------

    def _http_get(self, url: str, timeout: float = 5.0) -> tuple[int, str]:
        request = urllib.request.Request(url)
        context: ssl.SSLContext | None = None
        if url.startswith("https:"):
            context = ssl.create_default_context(cafile=str(self.ca_file))
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                return int(response.status), response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode(errors="replace")

    @staticmethod
    def _component_healthy(name: str, port: int, timeout: float = 5.0) -> bool:
        """Whether component ``name`` answers ``/healthz`` on ``port`` with 200."""
        if name == "kwok":
            url, context = f"http://127.0.0.1:{port}/healthz", None
        else:
            # Their serving certificate is self-signed in memory: nothing to verify it with,
            # and this only asks whether the process is up.
            url = f"https://127.0.0.1:{port}/healthz"
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
                return int(response.status) == 200
        except (OSError, ssl.SSLError):
            return False

    def _api(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
        """One JSON request to kube-apiserver as the admin; (status, decoded body)."""
        if self.state is None:
            raise DevClusterError(f"the control plane in {self.workdir} is not started")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.state.server}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                status, text = int(response.status), response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            status, text = int(error.code), error.read().decode(errors="replace")
        try:
            return status, json.loads(text) if text else None
        except json.JSONDecodeError:
            return status, text

    def readyz(self, timeout: float = 5.0) -> bool:
        """Whether kube-apiserver answers ``/readyz`` with 200 right now."""
        if self.state is None or not self.ca_file.exists():
            return False
        try:
            status, _body = self._http_get(f"{self.state.server}/readyz", timeout=timeout)
        except (OSError, ssl.SSLError):
            return False
        return status == 200

    def _wait(
        self,
        what: str,
        probe: Callable[[], bool],
        process_name: str,
        deadline: float,
    ) -> None:
        log_path = self.log_dir / f"{process_name}.log"
        process = self._processes[process_name]
        last_note = time.monotonic()
        while True:
            if process.poll() is not None:
                log = _tail(log_path)
                if any(marker in log for marker in _ADDRESS_IN_USE):
                    raise PortInUseError(
                        f"{process_name} could not bind one of its ports: another process took "
                        f"it. Retry (free ports are chosen anew), or choose another port. "
                        f"Last lines of {log_path}:\n{log}"
                    )
                raise StartError(
                    f"{process_name} exited with status {process.returncode} while starting. "
                    f"Last lines of {log_path}:\n{log}"
                )
            with contextlib.suppress(OSError, ssl.SSLError):
                if probe():
                    return
            now = time.monotonic()
            if now > deadline:
                raise StartError(
                    f"{what} not ready after {self.start_timeout:.0f}s. The machine may be "
                    "overloaded: retry, or allow more time (`respool dev up --timeout 300`). "
                    f"Last lines of {log_path}:\n"
                    f"{_tail(log_path)}"
                )
            if now - last_note > 15:
                self.progress(f"waiting for {what} ({now - deadline + self.start_timeout:.0f}s)")
                last_note = now
            time.sleep(0.2)

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        """Start etcd and kube-apiserver; return once ``/readyz`` is 200.

        Free ports are chosen at random; if another process grabs one between choosing and
        binding, the start is retried on new ports (a requested ``api_port`` is not changed).
        """
        if self.state is not None and self.is_running():
            return self
        if self.requested_api_port is not None:
            check_port_free(self.requested_api_port)
        bin_dir = self.bin_dir  # builds on first use, before any process starts
        self._prepare_files()
        attempts = 1 if self.requested_api_port is not None else 3
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(bin_dir)
                return self
            except PortInUseError:
                self.stop()
                if attempt == attempts:
                    raise
                self.progress("a port was taken while starting; retrying on other ports")
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _start_once(self, bin_dir: Path) -> None:
        started = time.monotonic()
        deadline = started + self.start_timeout
        data_root = self.etcd_data_root or self.workdir
        if self.etcd_data_root is not None:
            sweep_stale_etcd_data(self.etcd_data_root)
        data_home = Path(tempfile.mkdtemp(prefix=ETCD_DATA_PREFIX, dir=data_root))
        etcd_port, etcd_peer_port = free_port(), free_port()
        while etcd_peer_port == etcd_port:
            etcd_peer_port = free_port()
        api_port = self.requested_api_port or free_port()
        while api_port in (etcd_port, etcd_peer_port):
            api_port = free_port()
        server = f"https://127.0.0.1:{api_port}"
        self.state = PlaneState(
            workdir=str(self.workdir),
            bin_dir=str(bin_dir),
            server=server,
            api_port=api_port,
            etcd_port=etcd_port,
            etcd_peer_port=etcd_peer_port,
            etcd_data=str(data_home),
            etcd_pid=0,
            apiserver_pid=0,
            started_at=time.time(),
            ready_seconds=0.0,
            versions={
                "kubernetes": self.versions.kubernetes,
                "etcd": self.versions.etcd,
                "helm": self.versions.helm,
                **({"kwok": self.versions.kwok} if self.whole_cluster else {}),
            },
            whole_cluster=self.whole_cluster,
        )
        etcd = self._spawn("etcd", self._etcd_args(data_home / "data", etcd_port, etcd_peer_port))
        self.state.etcd_pid = etcd.pid
        (data_home / "pid").write_text(f"{etcd.pid}\n")
        self._save_state()
        self._wait(
            "etcd",
            lambda: self._http_get(f"http://127.0.0.1:{etcd_port}/health", 2.0)[0] == 200,
            "etcd",
            deadline,
        )
        apiserver = self._spawn("kube-apiserver", self._apiserver_args(api_port, etcd_port))
        self.state.apiserver_pid = apiserver.pid
        self._save_state()
        self._wait("kube-apiserver /readyz", self.readyz, "kube-apiserver", deadline)
        self._write_kubeconfig(server)
        if self.whole_cluster:
            self._start_components(deadline, taken={etcd_port, etcd_peer_port, api_port})
        self.state.ready_seconds = round(time.monotonic() - started, 2)
        self._save_state()

    def _start_components(
        self, deadline: float, taken: set[int], names: Sequence[str] = WORKLOAD_COMPONENTS
    ) -> None:
        """Start ``names`` (default: kube-controller-manager, kube-scheduler and kwok); return
        once each answers ``/healthz``. They are started together and then awaited: their
        start-ups overlap."""
        assert self.state is not None
        self.kwok_dir.mkdir(exist_ok=True)
        (self.kwok_dir / "stages.yaml").write_text(STAGES_YAML)
        for name in names:
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            process = self._spawn(name, self._component_args(name, port), self._component_env(name))
            self.state.components[name] = {"pid": process.pid, "port": port}
            self._save_state()
        for name in names:
            port = self.state.components[name]["port"]
            self._wait(f"{name} /healthz", self._health_probe(name, port), name, deadline)

    def _health_probe(self, name: str, port: int) -> Callable[[], bool]:
        return lambda: self._component_healthy(name, port)

    def start_missing_components(self) -> list[str]:
        """Start the components of a whole cluster that are not running (one that crashed,
        or all of them on a plane started bare), keeping etcd, kube-apiserver and every
        object. Returns the names started; the plane is a whole cluster afterwards."""
        state = self.state
        if state is None:
            raise DevClusterError(f"the control plane in {self.workdir} is not started")
        self.whole_cluster = state.whole_cluster = True
        alive = self.processes_alive()
        missing = [name for name in WORKLOAD_COMPONENTS if not alive[name]]
        if not missing:
            return []
        if not all(os.access(Path(state.bin_dir) / name, os.X_OK) for name in missing):
            # A plane started before these components existed runs from an older cache
            # entry: take them from the current set (same Kubernetes version).
            self._bin_dir = ensure_binaries(self.versions, progress=self.progress)
            state.bin_dir = str(self._bin_dir)
        for name in missing:
            state.components.pop(name, None)
        taken = {state.api_port, state.etcd_port, state.etcd_peer_port}
        taken |= {c["port"] for c in state.components.values()}
        self._start_components(time.monotonic() + self.start_timeout, taken, missing)
        return missing

    # -- simulated nodes ----------------------------------------------------------------------

    @staticmethod
    def fake_node_manifest(name: str, *, cpu: str = "32", memory: str = "256Gi", pods: str = "110") -> dict[str, Any]:
        """A Node that kwok keeps Ready (annotation ``kwok.x-k8s.io/node: fake``).

        No taint keeps Pods off it: every Node of the dev cluster is simulated, so any Pod the
        scheduler binds to one becomes Running without a container ever existing.
        """
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {
                    FAKE_NODE_ANNOTATION: FAKE_NODE_ANNOTATION_VALUE,
                    "node.alpha.kubernetes.io/ttl": "0",
                },
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            "status": {
                "allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
                "capacity": {"cpu": cpu, "memory": memory, "pods": pods},
            },
        }

    def ensure_fake_nodes(self, names: Sequence[str], *, wait: bool = True,
                          timeout: float | None = None) -> list[str]:
        """Create the simulated Nodes ``names`` that do not exist yet; with ``wait``, return
        once all of them are Ready. Returns the names that were created.

        A Node of that name that kwok does not manage (no annotation) is left as it is and
        named in the error: respool never takes over a Node it did not create.
        """
        if not self.whole_cluster:
            raise DevClusterError(
                "simulated Nodes need kwok, which only a whole cluster runs "
                "(ControlPlane(..., whole_cluster=True))"
            )
        created = []
        for name in names:
            status, body = self._api("POST", "/api/v1/nodes", self.fake_node_manifest(name))
            if status == 201:
                created.append(name)
                continue
            if status != 409:
                raise DevClusterError(f"creating Node {name} failed with HTTP {status}: {_message(body)}")
            status, existing = self._api("GET", f"/api/v1/nodes/{name}")
            annotations = (existing or {}).get("metadata", {}).get("annotations") or {}
            if annotations.get(FAKE_NODE_ANNOTATION) != FAKE_NODE_ANNOTATION_VALUE:
                raise DevClusterError(
                    f"a Node named {name} already exists and is not simulated (it lacks the "
                    f"annotation {FAKE_NODE_ANNOTATION}: {FAKE_NODE_ANNOTATION_VALUE}); "
                    "delete it or choose another name"
                )
        if wait and names:
            self.wait_nodes_ready(names, timeout=timeout)
        return created

    def nodes_ready(self, names: Sequence[str]) -> dict[str, bool]:
        """Whether each Node in ``names`` exists and reports Ready=True."""
        status, body = self._api("GET", "/api/v1/nodes")
        if status != 200:
            raise DevClusterError(f"listing Nodes failed with HTTP {status}: {_message(body)}")
        ready = {}
        for item in body.get("items", []):
            conditions = (item.get("status") or {}).get("conditions") or []
            ready[item["metadata"]["name"]] = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
            )
        return {name: ready.get(name, False) for name in names}

    def wait_nodes_ready(self, names: Sequence[str], *, timeout: float | None = None) -> None:
        started = last_note = time.monotonic()
        deadline = started + (timeout if timeout is not None else self.start_timeout)
        while True:
            waiting = [name for name, ready in self.nodes_ready(names).items() if not ready]
            if not waiting:
                return
            if time.monotonic() - last_note > 15:
                self.progress(
                    f"waiting for Nodes to become Ready: {len(names) - len(waiting)} of "
                    f"{len(names)} ({time.monotonic() - started:.0f}s)"
                )
                last_note = time.monotonic()
            dead = [name for name, alive in self.processes_alive().items() if not alive]
            if dead:
                raise StartError(
                    f"{', '.join(dead)} stopped while waiting for Nodes to become Ready; see "
                    f"{self.log_dir}/{dead[0]}.log"
                )
            if time.monotonic() > deadline:
                shown = ", ".join(waiting[:5]) + (f" and {len(waiting) - 5} more" if len(waiting) > 5 else "")
                raise StartError(
                    f"Nodes not Ready in time: {shown}. kwok makes them Ready; its log is "
                    f"{self.log_dir / 'kwok.log'}"
                )
            time.sleep(0.5)

    def restart_apiserver(self, *, kill: bool = False,
                          while_down: Callable[[], None] | None = None) -> float:
        """Stop kube-apiserver and start it again on the same port, against the same etcd.

        Certificates, tokens, the service-account key and etcd (with its data) are kept, so
        clients keep their kubeconfig and every object survives: what a control-plane upgrade
        or an apiserver crash looks like to an operator. ``kill=True`` sends SIGKILL (a crash:
        open watches and requests are cut without a goodbye) instead of SIGTERM (a graceful
        shutdown). ``while_down`` runs after the old process is gone and before the new one
        starts. Returns the monotonic time at which the new one answered ``/readyz``.
        """
        state = self.state
        if state is None:
            raise DevClusterError(f"the control plane in {self.workdir} is not started")
        marker = str(self.token_file)
        if kill:
            process = self._processes.pop("kube-apiserver", None)
            if pid_alive(state.apiserver_pid, marker):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(state.apiserver_pid, signal.SIGKILL)
            if process is not None:
                process.wait(timeout=30)
            deadline = time.monotonic() + 30
            while pid_alive(state.apiserver_pid, marker) and time.monotonic() < deadline:
                time.sleep(0.05)  # not our child (a plane found through state.json)
        else:
            self._stop_process(state.apiserver_pid, marker, "kube-apiserver")
        if pid_alive(state.apiserver_pid, marker):
            raise DevClusterError(f"kube-apiserver (pid {state.apiserver_pid}) did not stop")
        try:
            if while_down is not None:
                while_down()
        finally:
            # Back up even if `while_down` failed: a test that fails there must not leave the
            # cluster every later test uses without its API server.
            apiserver = self._spawn("kube-apiserver",
                                    self._apiserver_args(state.api_port, state.etcd_port))
            state.apiserver_pid = apiserver.pid
            self._save_state()
            self._wait("kube-apiserver /readyz", self.readyz, "kube-apiserver",
                       time.monotonic() + self.start_timeout)
        return time.monotonic()

    def _save_state(self) -> None:
        assert self.state is not None
        tmp = self.workdir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self.state), indent=2) + "\n")
        tmp.replace(self.workdir / STATE_FILE)

    @classmethod
    def load(cls, workdir: Path | str, **kwargs: Any) -> ControlPlane | None:
        """The control plane recorded in ``workdir/state.json`` (running or not), or None."""
        path = Path(workdir) / STATE_FILE
        try:
            raw = json.loads(path.read_text())
            state = PlaneState(**raw)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as error:
            raise DevClusterError(
                f"{path} is unreadable ({error}); stop any leftover etcd/kube-apiserver and "
                f"remove {workdir} to start over"
            ) from error
        kwargs["whole_cluster"] = state.whole_cluster
        plane = cls(workdir, bin_dir=state.bin_dir, **kwargs)
        plane.state = state
        return plane

    def expected_processes(self) -> tuple[str, ...]:
        whole = self.state.whole_cluster if self.state is not None else self.whole_cluster
        return ("etcd", "kube-apiserver", *(WORKLOAD_COMPONENTS if whole else ()))

    def processes_alive(self) -> dict[str, bool]:
        """Every process this plane should run -> whether it runs (in start order)."""
        if self.state is None:
            return dict.fromkeys(self.expected_processes(), False)
        alive = {
            "etcd": pid_alive(self.state.etcd_pid, self.state.etcd_data),
            "kube-apiserver": pid_alive(self.state.apiserver_pid, str(self.token_file)),
        }
        for name in self.expected_processes()[2:]:
            pid = self.state.components.get(name, {}).get("pid", 0)
            alive[name] = self._component_alive(name, pid)
        return alive

    def _component_alive(self, name: str, pid: int) -> bool:
        process = self._processes.get(name)
        if process is not None and process.pid == pid:
            return process.poll() is None  # our child: exact even right after exec
        return pid_alive(pid, str(self.kubeconfig))

    def is_core_ready(self, patience: float = 0.0) -> bool:
        """etcd and kube-apiserver alive and ``/readyz`` 200.

        ``patience``: while both processes live, keep asking ``/readyz`` for up to this many
        seconds (a busy machine can make a healthy apiserver answer slowly; a caller about to
        replace the plane must not mistake that for death).
        """
        deadline = time.monotonic() + patience

        def core_alive() -> bool:
            alive = self.processes_alive()
            return alive["etcd"] and alive["kube-apiserver"]

        while core_alive():
            if self.readyz():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(1.0)
        return False

    def is_running(self, patience: float = 0.0) -> bool:
        """Every process alive (components too, on a whole cluster) and ``/readyz`` 200."""
        return self.is_core_ready(patience) and all(self.processes_alive().values())

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd; remove the etcd data. Safe to call repeatedly."""
        state = self.state
        if state is None:
            for name in list(self._processes):
                process = self._processes.pop(name)
                if process.poll() is None:
                    process.kill()
                    process.wait()
            return
        # Clients first: kwok, the scheduler and controller-manager would only retry against
        # a vanishing API server.
        for name in reversed(WORKLOAD_COMPONENTS):
            pid = state.components.get(name, {}).get("pid", 0)
            if pid:
                self._stop_process(pid, str(self.kubeconfig), name)
        self._stop_process(state.apiserver_pid, str(self.token_file), "kube-apiserver")
        self._stop_process(state.etcd_pid, state.etcd_data, "etcd")
        shutil.rmtree(state.etcd_data, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / STATE_FILE).unlink()
        self.state = None

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
