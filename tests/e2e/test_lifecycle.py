"""Every life-cycle path of a ResourceReservation, on the real API server with `respool run`."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from respool.api import format_time, parse_time

Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]


def R(ranks: str = "0-1", cores: str = "0-3", gpus: str | None = None,
      hosts: str | None = None) -> dict[str, Any]:
    children: dict[str, str] = {"core": cores}
    if gpus:
        children["gpu"] = gpus
    execution: dict[str, Any] = {"R_lite": [{"rank": ranks, "children": children}]}
    if hosts:
        execution["nodelist"] = [hosts]
    return {"version": 1, "execution": execution}


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture
def pool(rk: Any, operator: Any) -> Callable[..., str]:
    """Create a ResourcePool with a unique name; removed (finalizer permitting) afterwards."""
    created: list[str] = []

    def make(spec: dict[str, Any] | None = None, **fields: Any) -> str:
        name = unique("pool")
        full = {"resources": R(hosts="node[0-1]")}
        full.update(spec or {})
        full.update(fields)
        rk.create_pool(name, full)
        rk.wait_pool(name, lambda o: rk.condition(o, "Ready") is not None, what="a Ready condition")
        created.append(name)
        return name

    yield make  # type: ignore[misc]
    for name in created:
        # Already gone, or blocked by reservations of the test's namespace: fine either way.
        with contextlib.suppress(Exception):
            rk.delete_pool(name)


def granted_events(rk: Any, namespace: str, name: str) -> int:
    return sum(1 for e in rk.events(namespace, name) if e.reason == "Granted")


def wait_events(rk: Any, namespace: str, name: str, reason: str,
                timeout: float = 10.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in rk.events(namespace, name) if e.reason == reason]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {reason} event for {namespace}/{name}: "
                         f"{[(e.reason, e.message) for e in rk.events(namespace, name)]}")


# --------------------------------------------------------------------------------------------


def test_fits_now_goes_active_with_everything_in_status(
        rk: Any, pool: Callable[..., str], namespace: str, kubectl: Kubectl) -> None:
    name = pool()
    rk.create(namespace, "now", {"pool": name, "request": {"slots": 2, "coresPerSlot": 2},
                                 "duration": "1h", "config": {"image": "x"}})
    done = kubectl("wait", "--for=condition=Ready", "-n", namespace, "rsv/now", "--timeout=20s")
    assert "condition met" in done.stdout
    obj = rk.get(namespace, "now")
    st = obj["status"]
    assert st["phase"] == "Active"
    assert st["observedGeneration"] == obj["metadata"]["generation"]
    assert st["reservationId"].startswith(f"{name}-") and "preReservationId" not in st
    start, end = parse_time(st["startTime"]), parse_time(st["endTime"])
    assert end - start == 3600
    assert st["allocated"]["summary"] and st["allocated"]["ranks"] and st["allocated"]["R"]
    assert st["allocated"]["nodelist"].startswith("node")
    assert st["config"] == {"image": "x"}
    assert st["firstRequestTime"] and st["retryCount"] == 0
    assert st["nextAvailable"]["available"] is True
    assert rk.condition(obj, "Stalled")["status"] == "False"  # type: ignore[index]
    assert rk.condition(obj, "Reconciling")["status"] == "False"  # type: ignore[index]
    obj = rk.wait_for(namespace, "now", lambda o: "respool.io/finalizer" in (
        o["metadata"].get("finalizers") or []), what="our finalizer")
    assert not any(k.startswith("kopf.zalando.org") for k in obj["metadata"].get("annotations")
                   or {}), "kopf must not write its progress/diff-base annotations"
    pool_obj = rk.wait_pool(name, lambda o: (o.get("status") or {}).get("reservations", {})
                            .get("Active") == 1, what="1 Active in the pool status")
    pst = pool_obj["status"]
    assert pst["capacity"]["core"] == {"total": 8, "allocated": 4, "down": 0, "free": 4}
    assert pst["allocated"] == st["allocated"]["ranks"]
    assert pst["observedGeneration"] == pool_obj["metadata"]["generation"]
    assert pst["summary"] == "rank[0-1]/core[0-3]"
    assert pst["allocationGeneration"] >= 1
    assert rk.condition(pool_obj, "Ready")["status"] == "True"  # type: ignore[index]
    assert "respool.io/finalizer" in pool_obj["metadata"]["finalizers"]
    wait_events(rk, namespace, "now", "Granted")
    assert granted_events(rk, namespace, "now") == 1


def test_release_on_delete_lets_a_pending_one_in(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    name = pool()
    whole = {"nodes": 2, "coresPerSlot": 4}
    rk.create(namespace, "holder", {"pool": name, "request": whole, "duration": "1h"})
    rk.wait_phase(namespace, "holder", "Active")
    rk.create(namespace, "waiter", {"pool": name, "request": whole, "duration": "1h",
                                    "nextAvailable": False})
    waiter = rk.wait_phase(namespace, "waiter", "Pending")
    st = waiter["status"]
    assert st["retryCount"] == 1
    assert rk.condition(waiter, "Reconciling")["reason"] == "WaitingForCapacity"  # type: ignore[index]
    assert st["nextAvailable"]["available"] is False
    assert st["nextAvailable"]["availStart"] == rk.get(namespace, "holder")["status"]["endTime"]
    rk.delete(namespace, "holder")
    deadline = time.monotonic() + 60
    while rk.exists(namespace, "holder") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not rk.exists(namespace, "holder"), "the finalizer was not released on delete"
    rk.wait_phase(namespace, "waiter", "Active")
    wait_events(rk, namespace, "holder", "Released")


def test_fits_later_is_scheduled_then_claimed_automatically(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    name = pool()
    whole = {"nodes": 2, "coresPerSlot": 4}
    # "first" must outlive the time it takes to see "second" Scheduled, even on a loaded machine.
    rk.create(namespace, "first", {"pool": name, "request": whole, "duration": "10s"})
    first = rk.wait_phase(namespace, "first", "Active")
    rk.create(namespace, "second", {"pool": name, "request": whole, "duration": "1h"})
    second = rk.wait_phase(namespace, "second", "Scheduled")
    st = second["status"]
    assert st["preReservationId"] and "reservationId" not in st
    assert st["startTime"] == first["status"]["endTime"]
    assert parse_time(st["preReservationExpires"]) == parse_time(st["startTime"]) + 300
    assert st["nextAvailable"]["available"] is False
    assert st["nextAvailable"]["availStart"] == st["startTime"]
    assert st["allocated"]["R"], "a Scheduled reservation holds concrete resources"
    assert rk.condition(second, "Scheduled")["status"] == "True"  # type: ignore[index]
    assert rk.condition(second, "Ready")["status"] == "False"  # type: ignore[index]
    pre_id = st["preReservationId"]
    active = rk.wait_phase(namespace, "second", "Active")
    assert active["status"]["reservationId"] != pre_id
    assert "preReservationId" not in active["status"]
    expired = rk.wait_phase(namespace, "first", "Expired")
    assert "allocated" not in expired["status"]
    assert rk.condition(expired, "Ready")["status"] == "False"  # type: ignore[index]
    wait_events(rk, namespace, "first", "Expired")
    wait_events(rk, namespace, "second", "Granted")  # Events are posted after the commit
    assert granted_events(rk, namespace, "second") == 1


def test_future_window_as_asked(rk: Any, pool: Callable[..., str],
                                namespace: str) -> None:
    name = pool()
    start = time.time() + 8  # far enough ahead to see it Scheduled first, even under load
    rk.create(namespace, "future", {"pool": name, "startTime": format_time(int(start)),
                                    "duration": "1h", "nextAvailable": False})
    obj = rk.wait_phase(namespace, "future", "Scheduled")
    assert obj["status"]["startTime"] == format_time(int(start))
    assert rk.condition(obj, "Reconciling")["reason"] == "WaitingForStart"  # type: ignore[index]
    obj = rk.wait_phase(namespace, "future", "Active")
    assert obj["status"]["startTime"] == format_time(int(start))


def test_manual_claim_waits_for_claimed_then_goes_active(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    name = pool()
    rk.create(namespace, "manual", {"pool": name, "claimPolicy": "Manual", "duration": "1h",
                                    "config": {"a": 1}})
    obj = rk.wait_phase(namespace, "manual", "Scheduled")
    assert rk.condition(obj, "Reconciling")["reason"] == "WaitingForClaim"  # type: ignore[index]
    assert "config" not in obj["status"]
    time.sleep(1.5)
    assert rk.phase(rk.get(namespace, "manual")) == "Scheduled", "Manual must wait for the claim"
    rk.patch(namespace, "manual", {"claimed": True})
    obj = rk.wait_phase(namespace, "manual", "Active")
    assert obj["status"]["config"] == {"a": 1}
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]


def test_manual_late_claim_is_replanned_and_counts_a_retry(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    name = pool(policy={"claimTimeout": "2s"})
    rk.create(namespace, "late", {"pool": name, "claimPolicy": "Manual", "duration": "1h",
                                  "maxRetry": 1})
    first = rk.wait_phase(namespace, "late", "Scheduled")["status"]["preReservationId"]
    obj = rk.wait_for(namespace, "late", lambda o: o["status"].get("retryCount") == 1,
                      what="retryCount 1")
    assert obj["status"]["phase"] == "Scheduled"
    assert obj["status"]["preReservationId"] != first
    wait_events(rk, namespace, "late", "ClaimExpired")
    obj = rk.wait_phase(namespace, "late", "Failed")
    assert rk.condition(obj, "Stalled")["reason"] == "RetryExceeded"  # type: ignore[index]


def test_expires_at_end_time_and_returns_resources(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    name = pool()
    rk.create(namespace, "short", {"pool": name, "request": {"nodes": 2, "coresPerSlot": 4},
                                   "duration": "5s"})
    obj = rk.wait_phase(namespace, "short", "Active")
    end = parse_time(obj["status"]["endTime"])
    rk.wait_phase(namespace, "short", "Expired")
    assert time.time() >= end
    # Nothing held any more: the finalizer goes (right after the commit, in the background).
    rk.wait_for(namespace, "short",
                lambda o: "respool.io/finalizer" not in (o["metadata"].get("finalizers") or []),
                what="finalizer removed")
    rk.wait_pool(name, lambda o: o["status"]["capacity"]["core"]["free"] == 8,
                 what="all cores free again")


def test_extension_when_the_planner_allows_else_a_condition(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    name = pool()
    node = {"nodes": 1, "coresPerSlot": 4}
    rk.create(namespace, "grow", {"pool": name, "request": node, "duration": "1h"})
    obj = rk.wait_phase(namespace, "grow", "Active")
    start = parse_time(obj["status"]["startTime"])
    rk.patch(namespace, "grow", {"duration": "2h"})
    obj = rk.wait_for(namespace, "grow",
                      lambda o: o["status"]["endTime"] == format_time(start + 7200),
                      what="endTime extended")
    assert rk.condition(obj, "Extended")["status"] == "True"  # type: ignore[index]
    # Both nodes booked from start+2h on: the first cannot grow past that.
    rk.create(namespace, "later", {"pool": name, "request": {"nodes": 2, "coresPerSlot": 4},
                                   "startTime": format_time(start + 7200), "duration": "1h",
                                   "nextAvailable": False})
    rk.wait_phase(namespace, "later", "Scheduled")
    rk.patch(namespace, "grow", {"duration": "3h"})
    obj = rk.wait_for(namespace, "grow",
                      lambda o: (rk.condition(o, "Extended") or {}).get("status") == "False",
                      what="Extended=False")
    assert obj["status"]["endTime"] == format_time(start + 7200)
    assert rk.condition(obj, "Extended")["reason"] == "ExtensionDenied"  # type: ignore[index]
    assert obj["status"]["phase"] == "Active"
    wait_events(rk, namespace, "grow", "ExtensionDenied")


def test_exclusive_versus_shared(rk: Any, pool: Callable[..., str],
                                 namespace: str) -> None:
    name = pool()
    everything = {"nodes": 2, "coresPerSlot": 4}
    for rsv in ("s1", "s2"):
        rk.create(namespace, rsv, {"pool": name, "mode": "shared", "request": everything,
                                   "duration": "1h"})
        rk.wait_phase(namespace, rsv, "Active")
    rk.create(namespace, "ex", {"pool": name, "mode": "exclusive", "request": everything,
                                "duration": "1h", "nextAvailable": False})
    obj = rk.wait_phase(namespace, "ex", "Pending")
    assert rk.condition(obj, "Reconciling")["reason"] == "WaitingForCapacity"  # type: ignore[index]


def test_retry_exceeded(rk: Any, pool: Callable[..., str], namespace: str) -> None:
    name = pool()
    everything = {"nodes": 2, "coresPerSlot": 4}
    rk.create(namespace, "big", {"pool": name, "request": everything, "duration": "1h"})
    rk.wait_phase(namespace, "big", "Active")
    rk.create(namespace, "loser", {"pool": name, "request": everything, "duration": "1h",
                                   "nextAvailable": False, "maxRetry": 0})
    obj = rk.wait_phase(namespace, "loser", "Failed")
    assert rk.condition(obj, "Stalled")["reason"] == "RetryExceeded"  # type: ignore[index]
    assert obj["status"]["retryCount"] == 1
    assert obj["status"]["message"]
    warnings = wait_events(rk, namespace, "loser", "RetryExceeded")
    assert warnings[0].type == "Warning"


def test_max_wait_exceeded(rk: Any, pool: Callable[..., str], namespace: str) -> None:
    name = pool()
    everything = {"nodes": 2, "coresPerSlot": 4}
    rk.create(namespace, "big", {"pool": name, "request": everything, "duration": "1h"})
    rk.wait_phase(namespace, "big", "Active")
    rk.create(namespace, "impatient", {"pool": name, "request": everything, "duration": "1h",
                                       "maxWait": "8s", "maxRetry": 50})
    obj = rk.wait_phase(namespace, "impatient", "Pending")
    obj = rk.wait_phase(namespace, "impatient", "Failed")
    assert rk.condition(obj, "Stalled")["reason"] == "MaxWaitExceeded"  # type: ignore[index]
    waited = parse_time(rk.condition(obj, "Stalled")["lastTransitionTime"]) - parse_time(  # type: ignore[index]
        obj["status"]["firstRequestTime"])
    # Enforced by the pool's clock at maxWait, not at some later unrelated event (the slack
    # is for a loaded machine).
    assert 8 <= waited <= 18, waited


def test_infeasible_fails(rk: Any, pool: Callable[..., str], namespace: str) -> None:
    name = pool()
    rk.create(namespace, "huge", {"pool": name, "request": {"slots": 1, "coresPerSlot": 64}})
    obj = rk.wait_phase(namespace, "huge", "Failed")
    stalled = rk.condition(obj, "Stalled")
    assert stalled is not None and stalled["status"] == "True"
    assert stalled["reason"] == "Infeasible"
    assert "never fit" in obj["status"]["message"]
    assert wait_events(rk, namespace, "huge", "Infeasible")[0].type == "Warning"


def test_unknown_pool_waits_then_proceeds_when_it_appears(
        rk: Any, operator: Any, namespace: str) -> None:
    name = unique("late-pool")
    rk.create(namespace, "early", {"pool": name, "duration": "1h"})
    obj = rk.wait_phase(namespace, "early", "Pending")
    assert rk.condition(obj, "Stalled")["reason"] == "PoolNotFound"  # type: ignore[index]
    rk.create_pool(name, {"resources": R()})
    try:
        rk.wait_phase(namespace, "early", "Active")
    finally:
        rk.delete(namespace, "early")
        rk.delete_pool(name)


def _as_a_tenant_sees_it(obj: dict[str, Any], pool_name: str) -> Any:
    status = obj["status"]
    conditions = sorted((c["type"], c["status"], c["reason"], c.get("message", "").replace(
        pool_name, "POOL")) for c in status["conditions"])
    return status["phase"], status["message"].replace(pool_name, "POOL"), conditions


def test_a_namespace_not_selected_learns_nothing_and_waits_until_relabelled(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    name = pool(namespaceSelector={"matchLabels": {"team": "gpu-lab"}})
    missing = unique("no-such-pool")
    rk.create(namespace, "outsider", {"pool": name})
    rk.create(namespace, "lost", {"pool": missing})
    outsider = rk.wait_phase(namespace, "outsider", "Pending")
    lost = rk.wait_phase(namespace, "lost", "Pending")
    # A pool that exists but does not admit the namespace answers exactly as a missing one:
    # the namespace cannot tell which pools exist.
    assert rk.condition(outsider, "Stalled")["reason"] == "PoolNotFound"  # type: ignore[index]
    assert _as_a_tenant_sees_it(outsider, name) == _as_a_tenant_sees_it(lost, missing)
    assert not outsider["status"].get("nextAvailable")
    outsider_events = sorted((e.type, e.reason, e.message.replace(name, "POOL"))
                             for e in rk.events(namespace, "outsider"))
    lost_events = sorted((e.type, e.reason, e.message.replace(missing, "POOL"))
                         for e in rk.events(namespace, "lost"))
    assert outsider_events == lost_events
    # Relabelled, the namespace is admitted: the waiting reservation proceeds by itself.
    rk.core.patch_namespace(namespace, {"metadata": {"labels": {"team": "gpu-lab"}}})
    rk.wait_phase(namespace, "outsider", "Active")
    rk.delete(namespace, "lost")
    rk.create(namespace, "insider", {"pool": name})
    rk.wait_phase(namespace, "insider", "Active")
    # A labelled namespace and its first reservation created at once: the operator must not
    # judge the reservation before it knows the namespace's labels.
    fresh = f"{namespace}-new"[:63]
    rk.core.create_namespace({"metadata": {"name": fresh, "labels": {"team": "gpu-lab"}}})
    try:
        rk.create(fresh, "first", {"pool": name})
        rk.wait_phase(fresh, "first", "Active")
    finally:
        rk.delete(fresh, "first")
        rk.core.delete_namespace(fresh)


def test_spec_down_degrades_active_and_replans_scheduled(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    name = pool()
    node = {"nodes": 1, "coresPerSlot": 4}
    rk.create(namespace, "active", {"pool": name, "request": node, "duration": "1h"})
    active = rk.wait_phase(namespace, "active", "Active")
    rank = active["status"]["allocated"]["ranks"]
    later = format_time(int(time.time()) + 3600)
    rk.create(namespace, "sched", {"pool": name, "request": {"nodes": 1, "coresPerSlot": 1},
                                   "startTime": later, "duration": "1h"})
    sched = rk.wait_phase(namespace, "sched", "Scheduled")
    held = sched["status"]["allocated"]["ranks"]
    rk.patch_pool(name, {"down": held})
    rk.wait_pool(name, lambda o: o["status"].get("down") == held, what=f"down {held}")
    sched = rk.wait_for(namespace, "sched",
                        lambda o: o["status"].get("allocated", {}).get("ranks") not in (held,),
                        what="re-planned onto the other rank")
    assert sched["status"]["phase"] == "Scheduled"
    rk.patch_pool(name, {"down": rank})
    obj = rk.wait_for(namespace, "active",
                      lambda o: (rk.condition(o, "ResourcesDegraded") or {}).get("status")
                      == "True", what="ResourcesDegraded")
    assert obj["status"]["phase"] == "Active"
    wait_events(rk, namespace, "active", "ResourcesDegraded")
    rk.patch_pool(name, {"down": None})
    rk.wait_for(namespace, "active",
                lambda o: (rk.condition(o, "ResourcesDegraded") or {}).get("status") == "False",
                what="ResourcesDegraded lifted")


def test_track_nodes_marks_not_ready_and_cordoned_nodes_down(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    hosts = [unique("n"), unique("n")]
    for host in hosts:
        rk.create_node(host, ready=True)
    try:
        name = pool(resources=R(hosts=",".join(hosts)), trackNodes=True)
        rk.wait_pool(name, lambda o: o["status"].get("down") == "", what="nothing down")
        rk.cordon(hosts[0])
        rk.wait_pool(name, lambda o: o["status"].get("down") == "0", what="rank 0 down")
        rk.set_node_ready(hosts[1], False)
        rk.wait_pool(name, lambda o: o["status"].get("down") == "0-1", what="ranks 0-1 down")
        obj = rk.pool(name)
        assert obj["status"]["capacity"]["node"]["down"] == 2
        rk.cordon(hosts[0], False)
        rk.set_node_ready(hosts[1], True)
        rk.wait_pool(name, lambda o: o["status"].get("down") == "", what="all up again")
    finally:
        for host in hosts:
            rk.delete_node(host)


def test_removed_ranks_end_active_holders_as_resources_lost(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    name = pool(resources=R(ranks="0-1", hosts="node[0-1]"))
    rk.create(namespace, "on1", {"pool": name, "request": {"nodes": 2, "coresPerSlot": 4},
                                 "duration": "1h"})
    rk.wait_phase(namespace, "on1", "Active")
    rk.patch_pool(name, {"resources": R(ranks="0", hosts="node0")})
    obj = rk.wait_phase(namespace, "on1", "Failed")
    assert rk.condition(obj, "Stalled")["reason"] == "ResourcesLost"  # type: ignore[index]


def test_pool_expiration_refuses_windows_past_it(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    name = pool(expiration=format_time(int(time.time()) + 1800))
    rk.create(namespace, "too-long", {"pool": name, "duration": "1h"})
    obj = rk.wait_phase(namespace, "too-long", "Failed")
    assert rk.condition(obj, "Stalled")["reason"] == "PoolExpired"  # type: ignore[index]
    rk.create(namespace, "fits", {"pool": name, "duration": "10m"})
    rk.wait_phase(namespace, "fits", "Active")


def test_pool_deletion_blocked_while_reservations_hold(
        rk: Any, operator: Any, namespace: str) -> None:
    name = unique("doomed")
    rk.create_pool(name, {"resources": R()})
    rk.create(namespace, "holder", {"pool": name, "duration": "1h"})
    rk.wait_phase(namespace, "holder", "Active")
    rk.wait_pool(name, lambda o: "respool.io/finalizer" in (o["metadata"].get("finalizers")
                                                            or []), what="pool finalizer")
    rk.delete_pool(name)
    obj = rk.wait_pool(name, lambda o: (rk.condition(o, "Stalled") or {}).get("reason")
                       == "InUse", what="InUse")
    assert "deletion blocked" in obj["status"]["message"]
    rk.delete(namespace, "holder")
    deadline = time.monotonic() + 60
    while rk.pool_exists(name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not rk.pool_exists(name)


def test_policy_max_and_default_duration(rk: Any, pool: Callable[..., str],
                                         namespace: str) -> None:
    name = pool(policy={"defaultDuration": "10m", "maxDuration": "1h"})
    rk.create(namespace, "default", {"pool": name})
    obj = rk.wait_phase(namespace, "default", "Active")
    st = obj["status"]
    assert parse_time(st["endTime"]) - parse_time(st["startTime"]) == 600
    rk.create(namespace, "greedy", {"pool": name, "duration": "2h"})
    obj = rk.wait_phase(namespace, "greedy", "Failed")
    assert rk.condition(obj, "Stalled")["reason"] == "InvalidSpec"  # type: ignore[index]
    assert "maxDuration" in obj["status"]["message"]


def test_invalid_pool_resources_stall_the_pool_not_the_operator(
        rk: Any, operator: Any, namespace: str) -> None:
    name = unique("broken")
    # Admission accepts this shape, but the ranks overlap (rank 1 twice): only the engine
    # can tell.
    bad = {"version": 1, "execution": {"R_lite": [
        {"rank": "0-1", "children": {"core": "0-1"}},
        {"rank": "1-2", "children": {"core": "0-1"}}]}}
    try:
        rk.create_pool(name, {"resources": bad})
    except Exception as error:  # refused at admission: fine, that is even better
        assert "rank" in str(error)
        return
    try:
        obj = rk.wait_pool(name, lambda o: (rk.condition(o, "Stalled") or {}).get("status")
                           == "True", what="Stalled")
        assert rk.condition(obj, "Ready")["status"] == "False"  # type: ignore[index]
        rk.create(namespace, "on-broken", {"pool": name})
        rsv = rk.wait_phase(namespace, "on-broken", "Pending")
        assert rk.condition(rsv, "Stalled")["status"] == "True"  # type: ignore[index]
    finally:
        rk.delete_pool(name)


def test_each_reservation_is_granted_exactly_once(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    name = pool(resources=R(ranks="0-3", cores="0-7", hosts="node[0-3]"))
    names = [f"r{i}" for i in range(24)]
    for rsv in names:
        rk.create(namespace, rsv, {"pool": name, "duration": "1h"})
    for rsv in names:
        rk.wait_phase(namespace, rsv, "Active")
    ids = [rk.get(namespace, rsv)["status"]["reservationId"] for rsv in names]
    assert len(set(ids)) == len(ids)
    deadline = time.monotonic() + 30  # Events are posted after the commits, in the background
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = dict.fromkeys(names, 0)
        for event in rk.events(namespace):
            if event.reason == "Granted" and event.involved_object.name in counts:
                counts[event.involved_object.name] += 1
        if min(counts.values()) >= 1:
            break
        time.sleep(0.5)
    time.sleep(2)  # let any duplicate show up
    counts = dict.fromkeys(names, 0)
    for event in rk.events(namespace):
        if event.reason == "Granted" and event.involved_object.name in counts:
            counts[event.involved_object.name] += 1
    assert set(counts.values()) == {1}, counts


def test_scheduled_moves_earlier_when_capacity_frees(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    name = pool()
    everything = {"nodes": 2, "coresPerSlot": 4}
    rk.create(namespace, "blocker", {"pool": name, "request": everything, "duration": "1h"})
    rk.wait_phase(namespace, "blocker", "Active")
    rk.create(namespace, "patient", {"pool": name, "request": everything, "duration": "10m"})
    held = rk.wait_phase(namespace, "patient", "Scheduled")
    assert parse_time(held["status"]["startTime"]) > time.time() + 3000
    rk.delete(namespace, "blocker")
    moved = rk.wait_phase(namespace, "patient", "Active")
    assert parse_time(moved["status"]["startTime"]) <= time.time()
    assert parse_time(moved["status"]["endTime"]) - parse_time(moved["status"]["startTime"]) \
        == 600
    wait_events(rk, namespace, "patient", "Moved")


def test_another_tenants_churn_burns_no_retries_of_a_waiter(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    # Issue 11, item 3: creating and deleting reservations nobody waiting could use (here far
    # in the future, from another namespace) once counted a retry for every waiter of the pool.
    name = pool()
    rk.create(namespace, "blocker", {"pool": name, "request": {"nodes": 2, "coresPerSlot": 4},
                                     "duration": "2h"})
    rk.wait_phase(namespace, "blocker", "Active")
    rk.create(namespace, "waiter", {"pool": name, "request": {"slots": 1, "coresPerSlot": 4},
                                    "duration": "1h", "nextAvailable": False, "maxRetry": 1})
    waiter = rk.wait_phase(namespace, "waiter", "Pending")
    assert waiter["status"]["retryCount"] == 1
    other = f"{namespace}-other"[:63]
    rk.core.create_namespace({"metadata": {"name": other}})
    try:
        far = format_time(int(time.time()) + 30 * 86400)
        for churn in range(4):
            rk.create(other, f"churn-{churn}", {"pool": name, "startTime": far,
                                                "duration": "1h"})
            rk.wait_phase(other, f"churn-{churn}", "Scheduled")
            rk.delete(other, f"churn-{churn}")
            rk.wait_for(namespace, "waiter", lambda _o, c=churn: not rk.exists(
                other, f"churn-{c}"), what="the churn's release")
        # The pool has decided since the last release: a reservation created after it is
        # judged (in order) after the waiter was asked again.
        rk.create(other, "probe", {"pool": name, "duration": "1h", "nextAvailable": False})
        rk.wait_phase(other, "probe", "Pending")
        waiter = rk.get(namespace, "waiter")
        assert waiter["status"]["phase"] == "Pending", waiter["status"]
        assert waiter["status"]["retryCount"] == 1
        # Capacity it can use (the blocker goes): granted, with no retry spent on the way.
        rk.delete(namespace, "blocker")
        rk.wait_phase(namespace, "waiter", "Active")
    finally:
        rk.core.delete_namespace(other)


def test_a_pool_policy_edit_changes_no_capacity_and_costs_no_retry(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    # Issue 11, item 4: a policy edit makes the pool decide all its reservations again; a
    # Scheduled one that cannot move earlier once released and re-booked its window, which
    # bumped the planner's generation (status.allocationGeneration) as if capacity had
    # changed, and so cost every waiter behind it a retry.
    name = pool()
    everything = {"nodes": 2, "coresPerSlot": 4}
    rk.create(namespace, "blocker", {"pool": name, "request": everything, "duration": "1h"})
    rk.wait_phase(namespace, "blocker", "Active")
    rk.create(namespace, "patient", {"pool": name, "request": everything, "duration": "10m"})
    rk.wait_phase(namespace, "patient", "Scheduled")
    rk.create(namespace, "waiter", {"pool": name, "request": {"slots": 1, "coresPerSlot": 4},
                                    "duration": "1h", "nextAvailable": False, "maxRetry": 1})
    assert rk.wait_phase(namespace, "waiter", "Pending")["status"]["retryCount"] == 1
    settled = rk.wait_pool(name, lambda o: (o.get("status") or {}).get("reservations", {}) == {
        "Pending": 1, "Scheduled": 1, "Active": 1, "Expired": 0, "Failed": 0},
        what="all three decided")
    before = settled["status"]["allocationGeneration"]
    for claim_timeout in ("7m", "8m"):
        rk.patch_pool(name, {"policy": {"claimTimeout": claim_timeout}})
        generation = rk.pool(name)["metadata"]["generation"]
        after = rk.wait_pool(name, lambda o, g=generation: (o.get("status") or {}).get(
            "observedGeneration") == g, what="the policy edit seen")
        # Written after the decisions the edit caused (in the same step of the pool).
        assert after["status"]["allocationGeneration"] == before, after["status"]
    # Every decision the edits caused has been taken: one created now is judged after them.
    rk.create(namespace, "probe", {"pool": name, "duration": "1h", "nextAvailable": False})
    rk.wait_phase(namespace, "probe", "Pending")
    waiter = rk.get(namespace, "waiter")["status"]
    assert waiter["phase"] == "Pending" and waiter["retryCount"] == 1, waiter
    assert rk.get(namespace, "patient")["status"]["phase"] == "Scheduled"


def test_a_window_lost_to_an_admin_edit_costs_the_user_no_retry(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    # Issue 11, item 14: the admin removes the rank a Scheduled window holds; it is planned
    # anew, and a failed attempt then is not counted against the user (maxRetry 0 would end
    # it RetryExceeded at once).
    name = pool(resources=R(hosts="node[0-1]"))
    rk.create(namespace, "blocker", {"pool": name, "request": {"nodes": 1, "coresPerSlot": 4},
                                     "duration": "3h"})
    held = rk.wait_phase(namespace, "blocker", "Active")["status"]["allocated"]["ranks"]
    later = format_time(int(time.time()) + 3600)
    rk.create(namespace, "later", {"pool": name, "request": {"nodes": 1, "coresPerSlot": 4},
                                   "startTime": later, "duration": "1h",
                                   "nextAvailable": False, "maxRetry": 0})
    scheduled = rk.wait_phase(namespace, "later", "Scheduled")["status"]
    assert scheduled["allocated"]["ranks"] != held
    # Only the blocker's rank stays in the pool.
    rk.patch_pool(name, {"resources": R(ranks=held, hosts=f"node{held}")})
    waiting = rk.wait_phase(namespace, "later", "Pending")["status"]
    assert waiting["retryCount"] == 0, waiting
    assert rk.get(namespace, "blocker")["status"]["phase"] == "Active"


def test_track_nodes_marks_a_deleted_node_down_until_it_is_back(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    # Issue 11, item 9: a deleted Node (the cloud node controller deletes dead ones) once
    # counted as healthy, so its rank was granted again.
    hosts = [unique("n"), unique("n")]
    for host in hosts:
        rk.create_node(host, ready=True)
    try:
        name = pool(resources=R(hosts=",".join(hosts)), trackNodes=True)
        rk.wait_pool(name, lambda o: o["status"].get("down") == "", what="nothing down")
        rk.delete_node(hosts[1])
        rk.wait_pool(name, lambda o: o["status"].get("down") == "1", what="rank 1 down")
        rk.create(namespace, "both", {"pool": name, "request": {"nodes": 2}, "duration": "1h",
                                      "nextAvailable": False})
        waiting = rk.wait_phase(namespace, "both", "Pending")
        assert not waiting["status"].get("allocated")
        rk.create(namespace, "one", {"pool": name, "request": {"nodes": 1}, "duration": "1h"})
        assert rk.wait_phase(namespace, "one", "Active")["status"]["allocated"]["ranks"] == "0"
        rk.create_node(hosts[1], ready=True)
        rk.wait_pool(name, lambda o: o["status"].get("down") == "", what="rank 1 up again")
    finally:
        for host in hosts:
            with contextlib.suppress(Exception):
                rk.delete_node(host)


def test_protective_defaults_a_day_at_most_and_no_endless_unclaimed_holds(
        rk: Any, pool: Callable[..., str], namespace: str) -> None:
    # Issue 11, item 13: without a policy a tenant could book a pool for 999999h, and a Manual
    # hold with maxRetry 1000 re-held windows for days without ever claiming one.
    default = pool()
    assert rk.pool(default)["spec"]["policy"]["maxDuration"] == "24h"  # the server's default
    rk.create(namespace, "greedy", {"pool": default, "duration": "25h"})
    greedy = rk.wait_phase(namespace, "greedy", "Failed")
    assert rk.condition(greedy, "Stalled")["reason"] == "InvalidSpec"  # type: ignore[index]
    assert "policy.maxDuration (24h)" in greedy["status"]["message"]
    longer = pool(policy={"maxDuration": "48h", "claimTimeout": "1s", "maxUnclaimedHold": "3s"})
    rk.create(namespace, "long", {"pool": longer, "duration": "25h"})
    rk.wait_phase(namespace, "long", "Active")
    rk.create(namespace, "never-claimed", {"pool": longer, "claimPolicy": "Manual",
                                           "duration": "1m", "maxRetry": 1000,
                                           "request": {"slots": 1}})
    failed = rk.wait_phase(namespace, "never-claimed", "Failed", timeout=90)
    assert rk.condition(failed, "Stalled")["reason"] == "ClaimExpired"  # type: ignore[index]
    assert "maxUnclaimedHold" in failed["status"]["message"]
    assert failed["status"]["retryCount"] < 1000
    assert not failed["status"].get("allocated")
