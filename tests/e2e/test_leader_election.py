"""High availability: two `respool run --leader-elect` replicas against one real API server.

Only the holder of the Lease decides: the standby stays live (its liveness endpoint answers)
but makes no status write, posts no Event and never starts the controller. A leader killed with
SIGKILL in the middle of a burst is replaced once its lease expires, and the new leader
finishes the work with the invariants intact (no core granted twice, IDs unchanged, none
minted twice). A leader stopped with SIGTERM releases the Lease, so the standby takes over long
before the lease would expire. A leader whose Lease is taken from it exits at once.

Lease timings are short (flags) to keep the tests quick; every wait is generous.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import subprocess
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from tests.e2e.conftest import READY_MARKER, OperatorProcess

from e2e.invariants import assert_no_conflicting_holds

SETTLED = {"Active", "Scheduled"}
STANDBY_MARKER = "leader election: standing by"
# Quick but not twitchy: a busy 2-core machine must not make a healthy leader miss its deadline.
QUICK = ["--leader-elect-lease-duration=10s", "--leader-elect-renew-deadline=7s",
         "--leader-elect-retry-period=1s"]


class Candidate(OperatorProcess):
    """A `respool run --leader-elect` replica; `launch()` does not wait for it to lead."""

    def __init__(self, env: dict[str, str], log_path: Path, lease_namespace: str,
                 lease_name: str, timings: list[str]) -> None:
        self.log_may_show_errors = False  # set when a test breaks its connection on purpose
        super().__init__(env, log_path, ["--leader-elect",
                                         f"--leader-election-namespace={lease_namespace}",
                                         f"--leader-election-id={lease_name}", *timings])

    def launch(self) -> None:
        assert not self.running()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                        env=self.env)
        log.close()
        self.starts += 1

    def wait_log(self, marker: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.log_text():
                return
            if not self.running():
                raise AssertionError(f"the replica exited ({self.exit_code()}) before logging "
                                     f"{marker!r}:\n{self.log_text()[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(f"{marker!r} not logged in {timeout}s:\n{self.log_text()[-4000:]}")

    def liveness(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as answer:
            assert answer.status == 200
            return dict(json.loads(answer.read().decode() or "{}"))

    def metric(self, name: str) -> dict[str, float]:
        """Samples of one metric: label text -> value."""
        samples = {}
        for line in self.metrics().splitlines():
            match = re.match(rf"^{name}(\{{[^}}]*\}})?\s+(\S+)$", line)
            if match:
                samples[match[1] or ""] = float(match[2])
        return samples

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)


class Replicas:
    """Launches replicas that share one Lease (`lease`) in the test's namespace."""

    def __init__(self, env: dict[str, str], namespace: str, logs: Path) -> None:
        self.env, self.namespace, self.logs = env, namespace, logs
        self.lease = f"respool-ha-{secrets.token_hex(3)}"
        self.made: list[Candidate] = []

    def __call__(self, timings: list[str] = QUICK,
                 env: dict[str, str] | None = None) -> Candidate:
        replica = Candidate(env or self.env, self.logs / f"replica-{len(self.made)}.log",
                            self.namespace, self.lease, timings)
        self.made.append(replica)
        replica.launch()
        return replica


@pytest.fixture
def candidates(request: pytest.FixtureRequest, crds: list[str], kube_env: dict[str, str],
               namespace: str, tmp_path: Path) -> Iterator[Replicas]:
    """Replicas for this test, all stopped at the end (the session's shared operator is
    stopped first: these are the only writers)."""
    request.getfixturevalue("_operator_slot").stop_current()
    replicas = Replicas(kube_env, namespace, tmp_path)
    try:
        yield replicas
    finally:
        for replica in replicas.made:
            replica.stop()
        for replica in replicas.made:
            if not replica.log_may_show_errors:
                assert "Traceback" not in replica.log_text(), replica.log_text()[-6000:]


def _lease(rk: Any, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes import client

    lease = client.CoordinationV1Api(rk.core.api_client).read_namespaced_lease(name, namespace)
    return dict(rk.core.api_client.sanitize_for_serialization(lease))


def _wait(what: str, probe: Callable[[], Any], timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def _assert_standby_idle(standby: Candidate) -> None:
    """No decision, no write: the controller never started and nothing was counted."""
    text = standby.log_text()
    assert STANDBY_MARKER in text, text[-3000:]
    assert READY_MARKER not in text, "the standby started the controller:\n" + text[-3000:]
    assert standby.metric("respool_leader") == {"": 0.0}
    writes = standby.metric("respool_status_writes_total")
    events = standby.metric("respool_events_total")
    assert not any(writes.values()) and not any(events.values()), (writes, events)
    assert standby.liveness()["leader"] is False


def _pool(rk: Any, ranks: int, cores: int) -> str:
    name = f"ha-{secrets.token_hex(3)}"
    rk.create_pool(name, {"resources": {"version": 1, "execution": {
        "R_lite": [{"rank": f"0-{ranks - 1}", "children": {"core": f"0-{cores - 1}"}}],
        "nodelist": [f"ha{name[3:]}-[0-{ranks - 1}]"]}}})
    return name


def _settled(rk: Any, namespace: str, count: int, timeout: float = 120.0) -> list[dict[str, Any]]:
    def probe() -> list[dict[str, Any]] | None:
        items = rk.list(namespace)
        done = len(items) == count and all(
            (o.get("status") or {}).get("phase") in SETTLED
            and o["status"].get("observedGeneration") == o["metadata"]["generation"]
            for o in items)
        return items if done else None

    return list(_wait(f"{count} reservations Active or Scheduled", probe, timeout))


def _wait_pool_quiet(rk: Any, pool: str, quiet: float = 1.5) -> None:
    """Until the pool's object has not changed for `quiet` seconds: the leader has written
    its summary and has nothing left to do, so a stop below meets an idle controller."""
    last, since = None, time.monotonic()
    deadline = since + 60
    while time.monotonic() < deadline:
        version = rk.pool(pool)["metadata"]["resourceVersion"]
        if version != last:
            last, since = version, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)
    raise AssertionError(f"pool {pool} kept changing for 60s")


def _holds(items: list[dict[str, Any]]) -> dict[str, tuple[str, str, str]]:
    """name -> (ID, allocated summary, start) of every Active or Scheduled reservation."""
    out = {}
    for obj in items:
        status = obj.get("status") or {}
        if status.get("phase") in SETTLED:
            out[obj["metadata"]["name"]] = (
                status.get("reservationId") or status.get("preReservationId"),
                status["allocated"]["summary"], status.get("startTime"))
    return out



def test_standby_is_idle_and_takes_over_a_killed_leader_mid_burst(
        candidates: Replicas, rk: Any, namespace: str) -> None:
    leader = candidates()
    leader.wait_log(READY_MARKER)
    standby = candidates()
    standby.wait_log(STANDBY_MARKER)
    standby_identity = standby.liveness()["identity"]
    lease = _lease(rk, namespace, candidates.lease)  # type: ignore[attr-defined]
    assert lease["spec"]["holderIdentity"] not in ("", standby_identity)
    assert leader.metric("respool_leader") == {"": 1.0}

    pool = _pool(rk, ranks=4, cores=8)  # 32 cores
    names = [f"b{i:02d}" for i in range(48)]

    def create_all() -> None:
        for name in names:
            rk.create(namespace, name, {"pool": pool, "duration": "1h", "mode": "exclusive"})

    burst = threading.Thread(target=create_all, daemon=True)
    burst.start()
    _wait("a dozen decisions by the leader",
          lambda: len([o for o in rk.list(namespace) if (o.get("status") or {}).get("phase")])
          >= 12, timeout=60)
    _assert_standby_idle(standby)  # the leader is busy deciding; the standby does nothing
    leader.kill()
    killed = time.monotonic()
    burst.join(120)
    before = _holds(rk.list(namespace))
    assert before, "nothing was granted before the kill"

    standby.wait_log(READY_MARKER)  # the lease expired: the standby leads now
    print(f"kill -9 -> standby leads {time.monotonic() - killed:.1f}s (lease duration 10s)")
    items = _settled(rk, namespace, len(names))
    assert_no_conflicting_holds(items)
    after = _holds(items)
    for name, held in before.items():
        assert after[name] == held, f"{name}: held {held} before the takeover, {after[name]} after"
    phases: dict[str, int] = defaultdict(int)
    for obj in items:
        phases[obj["status"]["phase"]] += 1
    assert dict(phases) == {"Active": 32, "Scheduled": 16}, dict(phases)
    ids = [held[0] for held in after.values()]
    assert len(set(ids)) == len(ids), "an ID was minted twice"
    assert standby.metric("respool_leader") == {"": 1.0}
    lease = _lease(rk, namespace, candidates.lease)  # type: ignore[attr-defined]
    assert lease["spec"]["holderIdentity"] == standby_identity
    assert lease["spec"]["leaseTransitions"] >= 1


def test_sigterm_releases_the_lease_so_the_standby_takes_over_at_once(
        candidates: Replicas, rk: Any, namespace: str) -> None:
    # A lease that would take 10 minutes to expire: the standby can only lead this test
    # within its deadline because the leader released the Lease on SIGTERM.
    long_lease = ["--leader-elect-lease-duration=600s", "--leader-elect-renew-deadline=10s",
                  "--leader-elect-retry-period=1s"]
    leader = candidates(long_lease)
    leader.wait_log(READY_MARKER)
    standby = candidates(long_lease)
    standby.wait_log(STANDBY_MARKER)
    pool = _pool(rk, ranks=1, cores=4)
    rk.create(namespace, "first", {"pool": pool, "request": {"coresPerSlot": 2},
                                   "duration": "1h"})
    first = rk.wait_phase(namespace, "first", "Active", timeout=60)
    _assert_standby_idle(standby)
    _wait_pool_quiet(rk, pool)

    began = time.monotonic()
    leader.stop(timeout=60)
    exited = time.monotonic()
    assert leader.exit_code() == 0, leader.log_text()[-3000:]
    assert "leader election: released lease" in leader.log_text()
    standby.wait_log(READY_MARKER, timeout=180)  # far below the 600 s lease
    print(f"SIGTERM -> leader exited {exited - began:.1f}s -> standby leads "
          f"{time.monotonic() - began:.1f}s (lease duration 600s)")

    rk.create(namespace, "second", {"pool": pool, "request": {"coresPerSlot": 2},
                                    "duration": "1h"})
    second = rk.wait_phase(namespace, "second", "Active", timeout=60)
    again = rk.get(namespace, "first")
    assert again["status"]["reservationId"] == first["status"]["reservationId"]
    assert second["status"]["reservationId"] != first["status"]["reservationId"]
    assert_no_conflicting_holds([again, second])


def _usurp(rk: Any, namespace: str, name: str) -> str:
    """Make "intruder" the holder (for an hour) with an optimistic-concurrency update; return
    the identity it was taken from."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    leases = client.CoordinationV1Api(rk.core.api_client)
    deadline = time.monotonic() + 60
    while True:
        lease = leases.read_namespaced_lease(name, namespace)
        holder = lease.spec.holder_identity
        assert holder and holder != "intruder", lease.spec
        lease.spec.holder_identity = "intruder"
        lease.spec.lease_duration_seconds = 3600
        try:
            leases.replace_namespaced_lease(name, namespace, lease)
            return str(holder)
        except ApiException as error:
            # The leader renewed in between: read again.
            if error.status != 409 or time.monotonic() > deadline:
                raise


def test_a_leader_whose_lease_is_taken_exits_at_once(
        candidates: Replicas, rk: Any, namespace: str,
        kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    # Default timings: nothing here waits for an expiry, and a busy machine must not make the
    # leader miss a renewal by itself.
    leader = candidates([])
    leader.wait_log(READY_MARKER)
    standby = candidates([])
    standby.wait_log(STANDBY_MARKER)
    name = candidates.lease
    # Someone else takes the Lease (as after a long stall of the leader): the leader sees it at
    # its next renewal and must stop writing - it exits non-zero, without a graceful cleanup.
    # The take-over is an update conditional on the version read, while the leader holds it.
    leader_identity = _usurp(rk, namespace, name)
    assert leader_identity != standby.liveness()["identity"]
    assert leader.wait_exit(timeout=120) != 0
    assert "leader election: lost lease" in leader.log_text()
    assert "taken over by intruder" in leader.log_text()
    # The intruder's lease is valid for an hour: the standby keeps standing by.
    assert standby.running() and standby.metric("respool_leader") == {"": 0.0}
    _wait("the standby to see the intruder",
          lambda: standby.liveness().get("holder") == "intruder", timeout=60)
    assert READY_MARKER not in standby.log_text()
    identity = standby.liveness()["identity"]
    # The intruder vanishes (its Lease deleted): the standby creates a new one and leads.
    kubectl("delete", "lease", name, "-n", namespace)
    standby.wait_log(READY_MARKER)
    assert _lease(rk, namespace, name)["spec"]["holderIdentity"] == identity


class CuttableProxy:
    """A TCP relay to the API server that a test can cut, as a network partition would: every
    open connection is closed and new ones are refused."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.cut_off = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # the listener was closed: cut
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.cut_off:
                    client.close()
                    upstream.close()
                    return
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            self.cut_off = True
            self.listener.close()
            for end in self.sockets:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()


def _kubeconfig_through(proxy: CuttableProxy, kubeconfig: Path, path: Path) -> Path:
    config = yaml.safe_load(kubeconfig.read_text())
    context_name = config["current-context"]
    context = next(c for c in config["contexts"] if c["name"] == context_name)["context"]
    cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])["cluster"]
    host = urlsplit(cluster["server"]).hostname
    cluster["server"] = f"https://127.0.0.1:{proxy.port}"
    if host != "127.0.0.1":
        # The server's certificate names its own host, not the relay's loopback address
        # (only with RESPOOL_TEST_KUBECONFIG pointing elsewhere).
        for key in ("certificate-authority", "certificate-authority-data"):
            cluster.pop(key, None)
        cluster["insecure-skip-tls-verify"] = True
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _logged_at(text: str, marker: str) -> float:
    """The wall-clock time of the first log line holding `marker` (the 'full' log format)."""
    for line in text.splitlines():
        if marker in line:
            match = re.match(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]", line)
            assert match, line
            stamp = time.mktime(time.strptime(match[1], "%Y-%m-%d %H:%M:%S"))
            return stamp + int(match[2]) / 1000
    raise AssertionError(f"{marker!r} not in the log:\n{text[-3000:]}")


def test_a_leader_cut_off_from_the_api_server_exits_before_the_standby_leads(
        candidates: Replicas, rk: Any, namespace: str, control_plane: Any,
        kube_env: dict[str, str], tmp_path: Path) -> None:
    server = urlsplit(control_plane.server)
    proxy = CuttableProxy(server.hostname or "127.0.0.1", server.port or 443)
    through_proxy = {**kube_env, "KUBECONFIG": str(_kubeconfig_through(
        proxy, control_plane.kubeconfig, tmp_path / "proxied.kubeconfig"))}
    # A wide margin between the renew deadline (the leader stops) and the lease duration (the
    # standby may start), so that the order below does not depend on how busy the machine is.
    timings = ["--leader-elect-lease-duration=20s", "--leader-elect-renew-deadline=6s",
               "--leader-elect-retry-period=1s"]
    leader = candidates(timings, env=through_proxy)
    leader.log_may_show_errors = True  # its watches break when the relay is cut
    leader.wait_log(READY_MARKER)
    standby = candidates(timings)
    standby.wait_log(STANDBY_MARKER)
    pool = _pool(rk, ranks=1, cores=4)
    rk.create(namespace, "before", {"pool": pool, "request": {"coresPerSlot": 2},
                                    "duration": "1h"})
    before = rk.wait_phase(namespace, "before", "Active", timeout=60)

    proxy.cut()
    assert leader.wait_exit(timeout=120) != 0
    assert "not renewed within the renew deadline" in leader.log_text()
    standby.wait_log(READY_MARKER)
    lost = _logged_at(leader.log_text(), "leader election: lost lease")
    led = _logged_at(standby.log_text(), "acquired lease")
    assert lost < led, f"the standby led at {led}, before the leader stopped at {lost}"

    rk.create(namespace, "after", {"pool": pool, "request": {"coresPerSlot": 2},
                                   "duration": "1h"})
    after = rk.wait_phase(namespace, "after", "Active", timeout=60)
    assert rk.get(namespace, "before")["status"]["reservationId"] == \
        before["status"]["reservationId"]
    assert_no_conflicting_holds([rk.get(namespace, "before"), after])
