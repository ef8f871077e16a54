"""Reliability: kube-apiserver restarts under a running operator (DESIGN.md §5).

During a burst of reservations over three pools - exclusive and shared, some fitting now, some
Scheduled for later, some Pending - the test's private kube-apiserver is stopped (SIGTERM, and
in a second case SIGKILL) and started again on the same port against the same etcd, while
`respool run` keeps running. Afterwards the operator must still be alive and have reconnected
by itself (its watches resumed or re-listed), every reservation must reach its proper phase,
invariants 1-3 must hold (no core held twice in overlapping time, nothing granted lost, IDs
unchanged), decisions made after the restart must be right, and the pools' status summaries
must agree with their reservations again.

The recovery times it prints (`-s`) are the figures of docs/operator.md, "Reliability".
"""

from __future__ import annotations

import contextlib
import itertools
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3
from kubernetes.client.rest import ApiException

from e2e.invariants import assert_no_conflicting_holds
from e2e.test_restart import _granted_counts, _ids
from respool.api import format_time
from respool.devcluster import ControlPlane
from respool.pool import IDset

pytestmark = pytest.mark.timeout(420)

HOLDING = ("Active", "Scheduled")
#: How long the operator may take to settle everything once the API server is back: generous,
#: because the machine running the suite is busy (2 cores shared with other work).
SETTLE_TIMEOUT = 120.0


def restartable_plane(control_plane: Any) -> ControlPlane:
    plane: ControlPlane | None = control_plane.plane
    if plane is None:
        pytest.skip("RESPOOL_TEST_KUBECONFIG names a cluster whose API server this test does "
                    "not own and cannot restart")
    return plane


def make_pool(rk: Any, prefix: str, ranks: int, cores: int) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    rk.create_pool(name, {"resources": {"version": 1, "execution": {
        "R_lite": [{"rank": f"0-{ranks - 1}", "children": {"core": f"0-{cores - 1}"}}],
        "nodelist": [f"{name}-n[0-{ranks - 1}]" if ranks > 1 else f"{name}-n0"]}}})
    return name


def _unavailable(error: BaseException) -> bool:
    """An answer that means "the API server is not there right now" (not a refusal)."""
    if isinstance(error, ApiException):
        return error.status in (0, 429, 500, 502, 503, 504)
    return isinstance(error, urllib3.exceptions.HTTPError | OSError)


def create_retrying(rk: Any, namespace: str, name: str, spec: dict[str, Any],
                    timeout: float = 180.0) -> None:
    """Create, riding out an API server that is down; an earlier attempt whose answer was lost
    may have created it already (409)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rk.create(namespace, name, spec)
            return
        except ApiException as error:
            if error.status == 409:
                return
            if not _unavailable(error) or time.monotonic() > deadline:
                raise
        except (urllib3.exceptions.HTTPError, OSError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def list_retrying(rk: Any, namespace: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return list(rk.list(namespace))
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            if not _unavailable(error) or time.monotonic() > deadline:
                raise
        time.sleep(0.2)



def wait_until(what: str, check: Callable[[], str | None], timeout: float) -> None:
    """Poll `check` (None: done; else what is still missing) until done or the deadline."""
    deadline = time.monotonic() + timeout
    missing: str | None = "never checked"
    while time.monotonic() < deadline:
        missing = check()
        if missing is None:
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached in {timeout:.0f}s: {missing}")


# -- the workload ------------------------------------------------------------------------------

#: Exclusive 1-core reservations on a 16-core pool: 16 go Active, the rest Scheduled in the next
#: hour (nextAvailable) or Pending (nextAvailable: false).
EXCLUSIVE_COUNT = 24
EXCLUSIVE_CORES = 16
#: Shared reservations of the whole 4-core rank all overlap each other (Active); exclusive ones
#: asked for a window after the shared hour are Scheduled. (Not "whatever fits next": reservations
#: created in the same second are decided in name order, so which kind came first would vary.)
SHARED_COUNT = 6
AFTER_SHARED_COUNT = 2


def workload(pool_x: str, pool_s: str) -> list[tuple[str, dict[str, Any]]]:
    exclusive = [(f"x{i:02d}", {"pool": pool_x, "mode": "exclusive", "duration": "1h",
                                "request": {"coresPerSlot": 1},
                                "nextAvailable": i % 4 != 3})
                 for i in range(EXCLUSIVE_COUNT)]
    shared = [(f"s{i}", {"pool": pool_s, "mode": "shared", "duration": "1h",
                         "request": {"coresPerSlot": 4}})
              for i in range(SHARED_COUNT)]
    later = format_time(time.time() + 3 * 3600)
    after = [(f"e{i}", {"pool": pool_s, "mode": "exclusive", "duration": "30m",
                        "startTime": later, "request": {"coresPerSlot": 1},
                        "nextAvailable": False})
             for i in range(AFTER_SHARED_COUNT)]
    # Interleaved, so that both pools are busy at every moment of the burst; within pool_s all
    # shared ones are created before the exclusive ones.
    mixed: list[tuple[str, dict[str, Any]]] = []
    for pair in itertools.zip_longest(exclusive, shared + after):
        mixed.extend(item for item in pair if item is not None)
    return mixed


def expected_phase(name: str, spec: dict[str, Any], active_exclusive: set[str]) -> str:
    if name.startswith("s"):
        return "Active"
    if name.startswith("e"):
        return "Scheduled"
    if name in active_exclusive:
        return "Active"
    return "Scheduled" if spec["nextAvailable"] else "Pending"


def settled(items: list[dict[str, Any]], specs: dict[str, dict[str, Any]]) -> str | None:
    by_name = {o["metadata"]["name"]: o for o in items}
    missing = sorted(set(specs) - set(by_name))
    if missing:
        return f"not created: {missing}"
    undecided = [n for n, o in by_name.items()
                 if not (o.get("status") or {}).get("phase")
                 or o["status"].get("observedGeneration") != o["metadata"]["generation"]]
    if undecided:
        return f"not decided: {sorted(undecided)}"
    active_exclusive = {n for n, o in by_name.items()
                        if n.startswith("x") and o["status"]["phase"] == "Active"}
    if len(active_exclusive) != EXCLUSIVE_CORES:
        return f"{len(active_exclusive)} exclusive reservations Active, not {EXCLUSIVE_CORES}"
    wrong = {n: o["status"]["phase"] for n, o in by_name.items()
             if o["status"]["phase"] != expected_phase(n, specs[n], active_exclusive)}
    if wrong:
        return f"wrong phases: {wrong}"
    return None


def pool_summary_agrees(rk: Any, pool: str, items: list[dict[str, Any]]) -> str | None:
    """Invariant 2, seen from the pool: its status counts what its reservations say."""
    phases = Counter(o["status"]["phase"] for o in items if o["spec"]["pool"] == pool
                     and (o.get("status") or {}).get("phase"))
    held = IDset()
    for obj in items:
        if obj["spec"]["pool"] == pool and obj["status"].get("phase") == "Active":
            for entry in obj["status"]["allocated"]["R"]["execution"]["R_lite"]:
                held = held | IDset(entry["rank"])
    status = rk.pool(pool).get("status") or {}
    counts = {k: v for k, v in (status.get("reservations") or {}).items() if v}
    if counts != dict(phases):
        return f"pool {pool}: reservations {counts}, objects say {dict(phases)}"
    if IDset(status.get("allocated") or "") != held:
        return f"pool {pool}: allocated {status.get('allocated')!r}, objects hold {held}"
    return None


# -- the test ----------------------------------------------------------------------------------


@pytest.fixture
def cleanup_pools(rk: Any, namespace: str) -> Iterator[list[str]]:
    """Pools to delete after the test, once the test's reservations are gone."""
    pools: list[str] = []
    yield pools
    for obj in list_retrying(rk, namespace):
        with contextlib.suppress(ApiException):
            rk.delete(namespace, obj["metadata"]["name"])
    # The operator releases them and drops its finalizers; then the pools may go.
    deadline = time.monotonic() + 60
    while list_retrying(rk, namespace) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pool in pools:
        with contextlib.suppress(ApiException):
            rk.delete_pool(pool)
    while any(rk.pool_exists(p) for p in pools) and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_apiserver_restart_mid_burst_keeps_invariants(
        kill: bool, control_plane: Any, fresh_operator: Any, rk: Any, namespace: str,
        cleanup_pools: list[str]) -> None:
    plane = restartable_plane(control_plane)
    pool_x = make_pool(rk, "rx", ranks=2, cores=8)
    pool_s = make_pool(rk, "rs", ranks=1, cores=4)
    pool_p = make_pool(rk, "rp", ranks=1, cores=1)
    cleanup_pools.extend([pool_x, pool_s, pool_p])
    items_in_order = workload(pool_x, pool_s)
    specs = dict(items_in_order)
    first_half = len(items_in_order) // 2
    restart_begun = threading.Event()
    failures: list[BaseException] = []

    def burst() -> None:
        try:
            for index, (name, spec) in enumerate(items_in_order):
                if index == first_half:
                    # The second half is created while the API server is down (retrying) and
                    # after it is back: decisions on both sides of the restart.
                    restart_begun.wait(120)
                create_retrying(rk, namespace, name, spec)
                time.sleep(0.05)  # a steady stream: decisions are in flight when it stops
        except BaseException as error:
            failures.append(error)

    creator = threading.Thread(target=burst, daemon=True)
    creator.start()

    # Stop it once decisions are being committed and more are in flight.
    def some_decided() -> str | None:
        decided = [o for o in rk.list(namespace) if (o.get("status") or {}).get("phase")]
        return None if len(decided) >= 4 else f"{len(decided)} decided"

    wait_until("a few decisions", some_decided, 60)
    seen_before = _ids(rk.list(namespace))
    liveness_while_down: list[bool] = []

    def while_down() -> None:
        restart_begun.set()
        time.sleep(1.0)  # let the operator notice: its watches break, its writes fail
        liveness_while_down.append(fresh_operator._alive())
        assert fresh_operator.running(), "the operator exited when the API server went away"

    began = time.monotonic()
    ready_at = plane.restart_apiserver(kill=kill, while_down=while_down)
    print(f"\napiserver {'SIGKILL' if kill else 'SIGTERM'}: down and back in "
          f"{ready_at - began:.1f}s")
    assert liveness_while_down == [True], "liveness failed while the API server was down"

    # A decision that needs the operator to act after the restart: a fresh reservation on an
    # empty pool is granted at once.
    create_retrying(rk, namespace, "probe", {"pool": pool_p, "duration": "1h"})
    wait_until("the probe Active",
               lambda: None if rk.phase(rk.get(namespace, "probe")) == "Active" else "not yet",
               SETTLE_TIMEOUT)
    first_decision = time.monotonic() - ready_at
    # And one that needs the operator's watch of deletions after the restart: a waiter that
    # only fits once the probe is released.
    create_retrying(rk, namespace, "waiter",
                    {"pool": pool_p, "duration": "1h", "nextAvailable": False})
    rk.wait_phase(namespace, "waiter", "Pending", timeout=SETTLE_TIMEOUT)
    rk.delete(namespace, "probe")
    rk.wait_phase(namespace, "waiter", "Active", timeout=SETTLE_TIMEOUT)
    wait_until("probe released and deleted",
               lambda: None if not rk.exists(namespace, "probe") else "still there",
               SETTLE_TIMEOUT)

    creator.join(180)
    assert not creator.is_alive(), "the burst did not finish"
    assert not failures, f"creating the burst failed: {failures!r}"
    burst_specs = dict(specs)
    wait_until("every reservation settled",
               lambda: settled([o for o in list_retrying(rk, namespace)
                                if o["metadata"]["name"] in burst_specs], burst_specs),
               SETTLE_TIMEOUT)
    all_settled = time.monotonic() - ready_at
    print(f"first decision after the restart: {first_decision:.2f}s; "
          f"all {len(specs)} reservations settled {all_settled:.2f}s after it")

    items = list_retrying(rk, namespace)
    assert_no_conflicting_holds(items)
    final = _ids(items)
    for name, held in seen_before.items():
        assert final.get(name) == held, f"{name}: held {held} before the restart, " \
                                        f"{final.get(name)} after"
    ids = [v[0] for v in final.values()]
    assert len(set(ids)) == len(ids), f"an ID was minted twice: {ids}"
    for pool in (pool_x, pool_s, pool_p):
        wait_until(f"pool {pool} summary",
                   lambda pool=pool: pool_summary_agrees(rk, pool, list_retrying(rk, namespace)),
                   SETTLE_TIMEOUT)
    pool_status = rk.pool(pool_x)["status"]
    assert pool_status["capacity"]["core"]["allocated"] == EXCLUSIVE_CORES
    assert rk.condition(rk.pool(pool_x), "Ready")["status"] == "True"
    assert fresh_operator.running()
    assert fresh_operator._alive()

    # kopf's watch of pools resumed too: a rank taken down now reaches the holders on it.
    rk.patch_pool(pool_x, {"down": "1"})
    on_rank_1 = [o["metadata"]["name"] for o in items if o["spec"]["pool"] == pool_x
                 and o["status"]["phase"] == "Active"
                 and IDset(o["status"]["allocated"]["ranks"]) == IDset("1")]
    assert on_rank_1, "no Active reservation on rank 1 to check"

    def degraded() -> str | None:
        for name in on_rank_1:
            condition = rk.condition(rk.get(namespace, name), "ResourcesDegraded")
            if not condition or condition["status"] != "True":
                return f"{name}: ResourcesDegraded is {condition}"
        return None

    wait_until("ResourcesDegraded on rank 1's holders", degraded, SETTLE_TIMEOUT)
    print(f"pool change after the restart seen {time.monotonic() - ready_at:.2f}s after it")
    log = fresh_operator.log_text()
    assert re.search(r"watch of \S+/resourcereservations (re-listed and )?following again",
                     log), "the reservation watch never said it was following again"
    respool_lines = [line for line in log.splitlines() if re.match(r"\[[^]]+\] respool", line)]
    errors = [line for line in respool_lines if "[ERROR" in line or "[CRITICAL" in line]
    assert not errors, "the outage was logged as errors:\n" + "\n".join(errors[:20])
    warnings = [line for line in respool_lines if "[WARNING" in line]
    # One per broken stream, per pool and per write caught in flight - not one per attempt.
    assert len(warnings) < 80, f"{len(warnings)} warnings:\n" + "\n".join(warnings[:40])
    counts = _granted_counts(rk, namespace)
    # Events are posted after the commit: the outage can lose one, never duplicate one.
    assert max(counts.values(), default=0) <= 1, f"granted more than once: {dict(counts)}"


def test_operator_started_while_apiserver_down_starts_when_it_returns(
        control_plane: Any, fresh_operator: Any, rk: Any, namespace: str,
        cleanup_pools: list[str]) -> None:
    """An operator (re)started during the outage - a Pod rescheduled in a control-plane
    upgrade - waits for the API server and starts within seconds of its return, with what
    was granted before intact (not at kopf's next start-up retry, a minute later)."""
    plane = restartable_plane(control_plane)
    pool = make_pool(rk, "rd", ranks=1, cores=2)
    cleanup_pools.append(pool)
    one_core = {"pool": pool, "duration": "1h", "request": {"coresPerSlot": 1},
                "nextAvailable": False}
    rk.create(namespace, "before", one_core)
    held = rk.wait_phase(namespace, "before", "Active")["status"]
    fresh_operator.kill()
    log_offset = fresh_operator.log_size()
    failures: list[BaseException] = []

    def start_operator() -> None:
        try:
            fresh_operator.start(timeout=SETTLE_TIMEOUT + 60)
        except BaseException as error:
            failures.append(error)

    starter = threading.Thread(target=start_operator, daemon=True)

    def while_down() -> None:
        starter.start()
        wait_until("the operator waiting for the API server",
                   lambda: None if "is unavailable" in fresh_operator.log_text(log_offset)
                   else "not logged yet", 60)

    ready_at = plane.restart_apiserver(kill=True, while_down=while_down)
    starter.join(SETTLE_TIMEOUT + 90)
    assert not starter.is_alive() and not failures, f"the operator did not start: {failures!r}"
    started = time.monotonic() - ready_at
    rk.create(namespace, "after", one_core)
    rk.wait_phase(namespace, "after", "Active", timeout=SETTLE_TIMEOUT)
    print(f"\noperator started during the outage: ready {started:.2f}s after the API server, "
          f"first decision {time.monotonic() - ready_at:.2f}s after it")
    before = rk.get(namespace, "before")["status"]
    assert before["reservationId"] == held["reservationId"]
    assert before["allocated"] == held["allocated"]
    assert_no_conflicting_holds(list_retrying(rk, namespace))
    rk.create(namespace, "third", one_core)
    third = rk.wait_for(namespace, "third", lambda o: bool((o.get("status") or {}).get("phase")),
                        timeout=SETTLE_TIMEOUT, what="a phase")
    assert rk.phase(third) == "Pending", "a third core was granted from a 2-core pool"


LONG_OUTAGE = 75.0
"""Seconds the API server stays away in the long-outage test: longer than kopf's default
request retries (1+1+2+3+5+8+13+21 = 54 s), after which kopf escalates the error."""


def test_a_long_outage_does_not_end_the_operator(
        control_plane: Any, fresh_operator: Any, rk: Any, namespace: str,
        cleanup_pools: list[str]) -> None:
    """A control-plane upgrade can keep the API server away for minutes. The operator waits it
    out, live and without crashing, and decides again once the server is back: a process
    that exits instead would sit in CrashLoopBackOff well after the server's return."""
    plane = restartable_plane(control_plane)
    pool = make_pool(rk, "lo", ranks=1, cores=2)
    cleanup_pools.append(pool)
    one_core = {"pool": pool, "duration": "1h", "request": {"coresPerSlot": 1},
                "nextAvailable": False}
    rk.create(namespace, "before", one_core)
    held = rk.wait_phase(namespace, "before", "Active")["status"]
    log_offset = fresh_operator.log_size()
    plane.restart_apiserver(kill=True, while_down=lambda: time.sleep(LONG_OUTAGE))
    assert fresh_operator.running(), "the operator exited during the outage:\n" + (
        fresh_operator.log_text(log_offset)[-6000:])
    outage_log = fresh_operator.log_text(log_offset)
    assert "Request attempt" in outage_log, "kopf's retries are not in the log: nothing was tested"
    retries_as_errors = [line for line in outage_log.splitlines()
                         if "ERROR" in line and "will retry" in line]
    assert not retries_as_errors, "a retried request is a warning, not an error:\n" + "\n".join(
        retries_as_errors[:5])
    rk.create(namespace, "after", one_core)
    rk.wait_phase(namespace, "after", "Active", timeout=SETTLE_TIMEOUT)
    # kopf's watches came back too: a pool edit is seen (a rank marked down shows in status).
    rk.patch_pool(pool, {"down": "0"})
    rk.wait_pool(pool, lambda o: (o.get("status") or {}).get("down") == "0",
                 timeout=SETTLE_TIMEOUT, what="the pool edit seen after the outage")
    assert rk.get(namespace, "before")["status"]["reservationId"] == held["reservationId"]
    assert fresh_operator.running(), fresh_operator.log_text(log_offset)[-6000:]
