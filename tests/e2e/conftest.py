"""Operator fixtures for e2e tests: `respool run` as a real subprocess against the test cluster.

- ``crds`` (session): the CRDs of ``crds/`` (or of ``$RESPOOL_TEST_CRDS``) applied and
  Established.
- ``operator``: the shared operator of the session (started on first use, kept running);
  at the end of each test using it, its log must show no traceback.
- ``fresh_operator``: a dedicated operator for tests that kill and restart it (the shared one
  is stopped first: never two writers for one pool). ``.kill()`` sends SIGKILL,
  ``.restart()`` starts it again, ``.log_text()`` reads its log.
- ``rk``: a small helper over the kubernetes client for respool objects (create, get, patch,
  delete, wait_for, events).

Only one operator process runs at any time; ``OperatorProcess`` is general enough for other
areas' e2e tests (client, CLI, chart) to use.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION = "respool.io", "v1alpha1"
READY_MARKER = "respool controller started"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """`respool run` in a subprocess, logging to a file; start, kill -9, restart."""

    def __init__(self, env: dict[str, str], log_path: Path, extra_args: list[str] | None = None):
        self.env = dict(env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.log_path = log_path
        self.extra_args = list(extra_args or [])
        self.metrics_port = _free_port()
        self.liveness_port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "respool.cli.main", "run",
                "--metrics-port", str(self.metrics_port),
                "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
                "--pool-status-interval", "0.5", *self.extra_args]

    def start(self, timeout: float = 60.0) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        log.write(f"\n===== start #{self.starts + 1}: {' '.join(self.command)}\n".encode())
        log.flush()
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                        env=self.env, cwd=REPO)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the operator exited with {self.process.returncode}:\n"
                                     f"{self.log_text(offset)[-4000:]}")
            if READY_MARKER in self.log_text(offset) and self._alive():
                return
            time.sleep(0.1)
        # Not left behind: one that never got ready would retry its start-up for ever (two
        # were found still running 20 minutes after their test session had ended).
        self.process.kill()
        self.process.wait(timeout=30)
        raise AssertionError(f"the operator did not start in {timeout}s:\n"
                             f"{self.log_text(offset)[-4000:]}")

    def _alive(self) -> bool:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye - as a crash or an OOM kill."""
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> None:
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start(timeout)

    def log_text(self, offset: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as answer:
            return str(answer.read().decode())


class _OperatorSlot:
    """At most one operator process per session."""

    def __init__(self) -> None:
        self.current: OperatorProcess | None = None
        self.shared: OperatorProcess | None = None

    def stop_current(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None


@pytest.fixture(scope="session")
def _operator_slot() -> Iterator[_OperatorSlot]:
    slot = _OperatorSlot()
    try:
        yield slot
    finally:
        slot.stop_current()


@pytest.fixture(scope="session")
def crds(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> list[str]:
    """Apply the committed CRDs and wait until the API server serves them."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", os.environ.get("RESPOOL_TEST_CRDS", str(REPO / "crds")))
    names = [f"resourcepools.{GROUP}", f"resourcereservations.{GROUP}"]
    kubectl("wait", "--for=condition=Established", "--timeout=60s",
            *[f"crd/{name}" for name in names])
    return names


def _check_log(process: OperatorProcess, offset: int) -> None:
    text = process.log_text(offset)
    assert "Traceback" not in text, f"the operator logged a traceback:\n{text[-6000:]}"


@pytest.fixture
def operator(_operator_slot: _OperatorSlot, crds: list[str], kube_env: dict[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The shared operator, running; its log must stay free of tracebacks during the test."""
    slot = _operator_slot
    if slot.shared is None:
        log = tmp_path_factory.mktemp("operator") / "operator.log"
        slot.shared = OperatorProcess(kube_env, log)
    if slot.current is not slot.shared:
        slot.stop_current()
        slot.shared.start()
        slot.current = slot.shared
    elif not slot.shared.running():
        slot.shared.start()
    offset = slot.shared.log_size()
    yield slot.shared
    assert slot.shared.running(), "the shared operator died during the test:\n" + \
        slot.shared.log_text(offset)[-4000:]
    _check_log(slot.shared, offset)


@pytest.fixture
def fresh_operator(_operator_slot: _OperatorSlot, crds: list[str], kube_env: dict[str, str],
                   tmp_path: Path) -> Iterator[OperatorProcess]:
    """A dedicated operator this test may kill and restart (the shared one is stopped)."""
    _operator_slot.stop_current()
    process = OperatorProcess(kube_env, tmp_path / "operator.log")
    process.start()
    _operator_slot.current = process
    try:
        yield process
    finally:
        _check_log(process, 0)
        _operator_slot.stop_current()


class RespoolKube:
    """Thin helpers over the kubernetes client for pools, reservations, Nodes and Events."""

    def __init__(self, api_client: ApiClient) -> None:
        from kubernetes import client

        self.client = client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    # pools
    def create_pool(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResourcePool",
                "metadata": {"name": name}, "spec": spec}
        return dict(self.custom.create_cluster_custom_object(GROUP, VERSION, "resourcepools",
                                                             body))

    def pool(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_cluster_custom_object(GROUP, VERSION, "resourcepools", name))

    def patch_pool(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_cluster_custom_object(GROUP, VERSION, "resourcepools", name,
                                                {"spec": spec})

    def delete_pool(self, name: str) -> None:
        self.custom.delete_cluster_custom_object(GROUP, VERSION, "resourcepools", name)

    def pool_exists(self, name: str) -> bool:
        from kubernetes.client.rest import ApiException

        try:
            self.pool(name)
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            raise

    # reservations
    def create(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResourceReservation",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        return dict(self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "resourcereservations", body))

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "resourcereservations", name))

    def list(self, namespace: str) -> list[dict[str, Any]]:
        answer = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                           "resourcereservations")
        return list(answer.get("items") or [])

    def patch(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace,
                                                   "resourcereservations", name, {"spec": spec})

    def delete(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace,
                                                    "resourcereservations", name)

    def exists(self, namespace: str, name: str) -> bool:
        from kubernetes.client.rest import ApiException

        try:
            self.get(namespace, name)
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            raise

    def wait_for(self, namespace: str, name: str, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = 60.0, what: str = "condition") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.get(namespace, name)
            if predicate(last):
                return last
            time.sleep(0.1)
        raise AssertionError(f"{namespace}/{name}: {what} not reached in {timeout}s; status:\n"
                             f"{json.dumps(last.get('status'), indent=1)}")

    def wait_phase(self, namespace: str, name: str, phase: str,
                   timeout: float = 60.0) -> dict[str, Any]:
        return self.wait_for(namespace, name,
                             lambda o: (o.get("status") or {}).get("phase") == phase,
                             timeout, f"phase {phase}")

    def wait_pool(self, name: str, predicate: Callable[[dict[str, Any]], bool],
                  timeout: float = 60.0, what: str = "condition") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.pool(name)
            if predicate(last):
                return last
            time.sleep(0.1)
        raise AssertionError(f"pool {name}: {what} not reached in {timeout}s; status:\n"
                             f"{json.dumps(last.get('status'), indent=1)}")

    def events(self, namespace: str, name: str | None = None) -> list[Any]:
        items = self.core.list_namespaced_event(namespace).items
        return [e for e in items if name is None or e.involved_object.name == name]

    @staticmethod
    def phase(obj: dict[str, Any]) -> str | None:
        return phase_of(obj)

    @staticmethod
    def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
        return condition_of(obj, type_)

    # nodes
    def create_node(self, name: str, ready: bool = True, unschedulable: bool = False) -> None:
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                "spec": {"unschedulable": unschedulable}}
        self.core.create_node(body)
        self.set_node_ready(name, ready)

    def set_node_ready(self, name: str, ready: bool) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        condition = {"type": "Ready", "status": "True" if ready else "False",
                     "reason": "Test", "message": "set by the test",
                     "lastHeartbeatTime": now, "lastTransitionTime": now}
        self.core.patch_node_status(name, {"status": {"conditions": [condition]}})

    def cordon(self, name: str, cordoned: bool = True) -> None:
        self.core.patch_node(name, {"spec": {"unschedulable": cordoned}})

    def delete_node(self, name: str) -> None:
        self.core.delete_node(name)


@pytest.fixture(scope="session")
def rk(api_client: ApiClient) -> RespoolKube:
    return RespoolKube(api_client)


def phase_of(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def condition_of(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return dict(condition)
    return None


__all__ = ["OperatorProcess", "RespoolKube", "condition_of", "phase_of"]
