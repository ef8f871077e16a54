"""The user's one shared cluster behind ``respool dev up|down|status``: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok (simulated Nodes).

It lives in ``${XDG_CACHE_HOME:-~/.cache}/respool/dev/`` (``$RESPOOL_DEV_HOME`` overrides, which
the tests use to exercise the command without touching the user's plane). Its processes outlive
the command that started them; ``state.json`` there is how later commands find them. A file
lock makes concurrent ``up``/``down`` calls take turns instead of starting two planes.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from respool.devcluster.build import stderr_progress
from respool.devcluster.controlplane import ETCD_DATA_PREFIX, ControlPlane, pid_alive
from respool.devcluster.versions import cache_home

DEV_HOME_ENV = "RESPOOL_DEV_HOME"
# Where scripts/demo.sh records the operator it started, so that `respool dev down` stops it too.
OPERATOR_PID_FILE = "operator.pid"
OPERATOR_STOP_SECONDS = 10.0
#: Context and cluster name in the shared plane's kubeconfig.
CONTEXT_NAME = "respool-dev"


def dev_home() -> Path:
    override = os.environ.get(DEV_HOME_ENV)
    return Path(override) if override else cache_home() / "dev"


@contextmanager
def _locked(progress: Callable[[str], None]) -> Iterator[Path]:
    home = dev_home()
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("another `respool dev` command is running; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield home
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


#: Names of the Nodes ``respool dev up --nodes N`` creates: node-0 ... node-<N-1>.
NUMBERED_NODE_PREFIX = "node-"


@dataclass
class UpResult:
    plane: ControlPlane
    reused: bool
    seconds: float
    #: Components started again on a running plane (crashed ones, or all on a bare plane).
    restarted: list[str] = field(default_factory=list)
    #: Simulated Nodes created by this call (existing ones are not listed).
    nodes_created: list[str] = field(default_factory=list)


def numbered_nodes(count: int) -> list[str]:
    return [f"{NUMBERED_NODE_PREFIX}{index}" for index in range(count)]


def up(
    *,
    api_port: int | None = None,
    start_timeout: float = 120.0,
    nodes: Sequence[str] = (),
    progress: Callable[[str], None] = stderr_progress,
) -> UpResult:
    """Start the shared cluster, or reuse it when it is already running and ready, then make
    sure the simulated Nodes ``nodes`` exist and are Ready.

    On a running plane whose kube-apiserver answers but a component (kube-controller-manager,
    kube-scheduler, kwok) is down, only that component is started again: objects survive.
    """
    started = time.monotonic()
    with _locked(progress) as home:
        plane = ControlPlane.load(home, name=CONTEXT_NAME, progress=progress, start_timeout=start_timeout)
        reused, restarted = False, []
        if plane is not None:
            alive = plane.processes_alive()
            core_ready = alive["etcd"] and alive["kube-apiserver"] and plane.is_core_ready(patience=30.0)
            if core_ready:
                restarted = plane.start_missing_components()
                if restarted:
                    progress(f"started {', '.join(restarted)} again (was not running)")
                reused = True
                if api_port is not None and plane.state and plane.state.api_port != api_port:
                    progress(
                        f"already running on port {plane.state.api_port}, not {api_port}; "
                        "run `respool dev down` first to move it"
                    )
            else:
                progress("found a stopped or unhealthy control plane; cleaning it up and starting anew")
                plane.stop()
                plane = None
        if plane is None:
            plane = ControlPlane(
                home,
                api_port=api_port,
                start_timeout=start_timeout,
                name=CONTEXT_NAME,
                progress=progress,
                whole_cluster=True,
            )
            plane.start()
        created = plane.ensure_fake_nodes(list(nodes)) if nodes else []
        return UpResult(
            plane,
            reused=reused,
            seconds=time.monotonic() - started,
            restarted=restarted,
            nodes_created=created,
        )


def stop_recorded_operator(home: Path, progress: Callable[[str], None]) -> bool:
    """Stop the operator `scripts/demo.sh` started against this plane, if it still runs.

    The demo records its pid in OPERATOR_PID_FILE. The pid is signalled only when its command
    line is really `respool run` (a recycled pid must never be killed), and the file is removed.
    """
    pid_file = home / OPERATOR_PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid_file.unlink(missing_ok=True)
        return False
    stopped = False
    if pid_alive(pid, must_contain="respool run"):
        progress(f"stopping the operator (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + OPERATOR_STOP_SECONDS
        while pid_alive(pid, must_contain="respool run") and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid, must_contain="respool run"):
            os.kill(pid, signal.SIGKILL)
        stopped = True
    pid_file.unlink(missing_ok=True)
    return stopped


def down(progress: Callable[[str], None] = stderr_progress) -> bool:
    """Stop the shared control plane (and the demo's operator) and remove their files.

    Returns False if there was no control plane.
    """
    with _locked(progress) as home:
        # The operator first: with the API server gone it would only retry until killed.
        stop_recorded_operator(home, progress)
        plane = ControlPlane.load(home, name=CONTEXT_NAME, progress=progress)
        found = plane is not None
        if plane is not None:
            plane.stop()
        # Only what a control plane writes: RESPOOL_DEV_HOME may point at a directory that
        # holds other things too.
        leftovers = [home / name for name in ControlPlane.OWN_FILES]
        leftovers += home.glob(f"{ETCD_DATA_PREFIX}*")  # etcd data when there is no tmpfs
        for entry in leftovers:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        return found


def current(progress: Callable[[str], None] = stderr_progress) -> ControlPlane | None:
    """The shared control plane as recorded on disk (running or not), or None."""
    return ControlPlane.load(dev_home(), name=CONTEXT_NAME, progress=progress)
