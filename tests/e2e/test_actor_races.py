"""Interleavings that broke DESIGN §2's invariants (issue 10, defects 1-5), on the real server.

Where the interleaving needs a write held in flight, a pool actor runs in this process against
the real API server, with the status write of one reservation held back by a gate; elsewhere
the real operator runs as a subprocess and the test provokes the race from outside.

1. `test_r_edit_while_a_grant_write_is_in_flight`: an R edit rebuilt the planner from
   committed grants only; the in-flight grant's core went to the next waiter, both landed
   Active, then the first ended Failed/ResourcesLost.
2. `test_pool_finalizer_waits_for_a_grant_in_flight` and
   `test_nothing_new_is_granted_on_a_pool_being_deleted`: a pool with a deletionTimestamp kept
   granting, and its finalizer could go while a grant's write was in flight.
3. `test_restart_with_an_unusable_pool_spec_keeps_grants`: after a restart with a spec the API
   server admits but the operator cannot use, every Active holder ended ResourcesLost.
4. `test_restore_takes_the_mode_booked`: restore took `mode` from the (edited) spec; a shared
   neighbour lost its window.
5. `test_a_status_written_by_someone_else_is_overwritten`: a deposed leader's late status write
   (Active on cores the new leader gave to another) stood forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from e2e.invariants import assert_no_conflicting_holds
from e2e.test_apiserver_restart import make_pool, wait_until

pytestmark = pytest.mark.timeout(300)

GROUP, VERSION, PLURAL = "respool.io", "v1alpha1", "resourcereservations"


def _R(name: str, ranks: int, cores: int, hosts: str | None = None) -> dict[str, Any]:
    return {"version": 1, "execution": {
        "R_lite": [{"rank": f"0-{ranks - 1}" if ranks > 1 else "0",
                    "children": {"core": f"0-{cores - 1}"}}],
        "nodelist": [hosts or (f"{name}-n[0-{ranks - 1}]" if ranks > 1 else f"{name}-n0")]}}


@pytest.fixture
def pools(rk: Any, namespace: str) -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    for obj in rk.list(namespace):
        with contextlib.suppress(ApiException):
            rk.delete(namespace, obj["metadata"]["name"])
    for pool in created:
        with contextlib.suppress(ApiException):
            rk.delete_pool(pool)


def _login(control_plane: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    import kopf

    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None
    return info


def _gate_status_writes(api: Any, held: Callable[[str], bool]) -> asyncio.Event:
    """Hold every JSON patch whose path `held` selects until the returned event is set."""
    original = api.json_patch
    gate = asyncio.Event()

    async def gated(path: str, ops: list[Any]) -> dict[str, Any]:
        if held(path):
            await gate.wait()
        answer: dict[str, Any] = await original(path, ops)
        return answer

    api.json_patch = gated
    return gate


def _gate_answers(api: Any, held: Callable[[str], bool]) -> tuple[asyncio.Event, asyncio.Event]:
    """Send every JSON patch `held` selects, but hold its answer until the first returned
    event is set; the second is set once such a patch has been sent (it is in flight)."""
    original = api.json_patch
    gate, sent = asyncio.Event(), asyncio.Event()

    async def gated(path: str, ops: list[Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await original(path, ops)
        if held(path):
            sent.set()
            await gate.wait()
        return answer

    api.json_patch = gated
    return gate, sent


async def _guarded(actor: Any, pool: dict[str, Any]) -> None:
    """The actor knows the pool and has put its finalizer on it (nothing is booked before)."""
    actor.pool_event(pool)
    await actor._handle_pool_deletion()
    actor.restore()


async def _settle(actor: Any) -> None:
    """Run the actor's steps and writes until nothing is left to decide or write."""
    for _round in range(20):
        await actor.step()
        while actor._inflight:
            await asyncio.gather(*list(actor._inflight.values()))
        if actor._pool_status_task is not None:
            await actor._pool_status_task
        if not actor.dirty and not actor.gone and not actor.pool_dirty:
            return
    raise AssertionError("the actor did not settle")


def test_r_edit_while_a_grant_write_is_in_flight(
        rk: Any, namespace: str, control_plane: Any, _operator_slot: Any, crds: list[str],
        pools: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from respool.controller.controller import Controller
    from respool.controller.kubeapi import KubeApi

    _operator_slot.stop_current()  # this test's actor is the only writer
    pool = make_pool(rk, "race-r", ranks=1, cores=1)
    pools.append(pool)
    spec = {"pool": pool, "duration": "1h", "request": {"coresPerSlot": 1},
            "nextAvailable": False, "maxRetry": 100}
    rk.create(namespace, "first", spec)
    rk.create(namespace, "second", spec)
    info = _login(control_plane, monkeypatch)

    async def scenario() -> None:
        ctl = Controller(KubeApi(info))
        gate = _gate_status_writes(ctl.api, lambda path: path.endswith("/first/status"))
        try:
            actor = ctl._actor(pool)
            await _guarded(actor, rk.pool(pool))
            actor.reservation_event(rk.get(namespace, "first"), deleted=False)
            await actor.step()
            assert "first" in {r.name for r in actor.records.values()
                               if r.uid in actor._inflight}, "first's grant is not in flight"
            # R grows by a rank while first's grant is being written; second arrives.
            rk.patch_pool(pool, {"resources": _R(pool, ranks=2, cores=1)})
            actor.pool_event(rk.pool(pool))
            actor.reservation_event(rk.get(namespace, "second"), deleted=False)
            await actor.step()
            gate.set()
            await _settle(actor)
        finally:
            await ctl.stop()

    asyncio.run(scenario())
    items = rk.list(namespace)
    phases = {o["metadata"]["name"]: o["status"]["phase"] for o in items}
    assert phases == {"first": "Active", "second": "Active"}, phases
    assert_no_conflicting_holds(items)


def test_pool_finalizer_waits_for_a_grant_in_flight(
        rk: Any, namespace: str, control_plane: Any, _operator_slot: Any, crds: list[str],
        pools: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from respool.controller.controller import Controller
    from respool.controller.kubeapi import KubeApi

    _operator_slot.stop_current()
    pool = make_pool(rk, "race-del", ranks=1, cores=1)
    pools.append(pool)
    rk.create(namespace, "first", {"pool": pool, "duration": "1h",
                                   "request": {"coresPerSlot": 1}})
    info = _login(control_plane, monkeypatch)

    async def scenario() -> None:
        ctl = Controller(KubeApi(info))
        # The grant's write is sent, its answer held: in flight when the pool is deleted. (A
        # grant decided but not yet sent when the deletion is seen is withdrawn instead.)
        gate, sent = _gate_answers(ctl.api, lambda path: path.endswith("/first/status"))
        try:
            actor = ctl._actor(pool)
            await _guarded(actor, rk.pool(pool))
            actor.reservation_event(rk.get(namespace, "first"), deleted=False)
            await actor.step()
            await sent.wait()
            assert actor._inflight, "first's grant is not in flight"
            assert "respool.io/finalizer" in rk.pool(pool)["metadata"]["finalizers"]
            rk.delete_pool(pool)  # blocked by our finalizer: a deletionTimestamp only
            actor.pool_event(rk.pool(pool))
            await actor.step()
            assert actor._pool_status_task is not None
            await actor._pool_status_task
            assert rk.pool_exists(pool), "the pool went while a grant on it was in flight"
            gate.set()
            await _settle(actor)
            assert rk.pool_exists(pool), "the pool went while a reservation holds it"
        finally:
            await ctl.stop()

    asyncio.run(scenario())
    first = rk.get(namespace, "first")
    assert first["status"]["phase"] == "Active"
    assert rk.pool(pool)["metadata"].get("deletionTimestamp")


def test_a_pool_finalizer_retry_is_not_lost_behind_a_slow_status_write(
        rk: Any, namespace: str, control_plane: Any, _operator_slot: Any, crds: list[str],
        pools: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the simulation (seed 2757): adding our finalizer to a new pool failed (the
    API server answered 503, injected here) and was to be retried 2 s later; the pool's
    status write made in the same pass was answered later than that (held here). The retry
    found that pass still running and was dropped; nothing asked again once the write was
    answered, so the pool never got its finalizer and its waiter was never decided."""
    from respool.controller.actor import RETRY_AFTER_WRITE_FAILURE
    from respool.controller.controller import Controller
    from respool.controller.kubeapi import ApiError, KubeApi, pool_path

    _operator_slot.stop_current()
    pool = make_pool(rk, "race-guard", ranks=1, cores=1)
    pools.append(pool)
    rk.create(namespace, "waiter", {"pool": pool, "duration": "1h"})
    info = _login(control_plane, monkeypatch)

    async def scenario() -> None:
        ctl = Controller(KubeApi(info))
        original = ctl.api.json_patch
        refused, release = asyncio.Event(), asyncio.Event()

        async def faulty(path: str, ops: list[Any]) -> dict[str, Any]:
            if path == pool_path(pool) and not refused.is_set():
                refused.set()
                raise ApiError(503, "the server is currently unable to handle the request")
            answer: dict[str, Any] = await original(path, ops)
            if path == pool_path(pool, status=True):
                await release.wait()  # applied; its answer is late
            return answer

        ctl.api.json_patch = faulty  # type: ignore[method-assign]
        actor = ctl._actor(pool)
        try:
            actor.pool_event(rk.pool(pool))
            actor.restore()
            actor.reservation_event(rk.get(namespace, "waiter"), deleted=False)
            actor.start()
            await asyncio.wait_for(refused.wait(), 30)
            # The finalizer's retry comes due while the status write is still unanswered.
            await asyncio.sleep(RETRY_AFTER_WRITE_FAILURE + 1)
            assert actor._pool_status_task is not None, "the status write was answered"
            release.set()
            for _ in range(300):
                if (rk.get(namespace, "waiter").get("status") or {}).get("phase"):
                    break
                await asyncio.sleep(0.1)
        finally:
            await ctl.stop()

    asyncio.run(scenario())
    assert "respool.io/finalizer" in (rk.pool(pool)["metadata"].get("finalizers") or []), \
        "the pool never got its finalizer"
    assert rk.get(namespace, "waiter")["status"]["phase"] == "Active"


def test_a_late_status_answer_does_not_leave_a_deleted_reservation_undeletable(
        rk: Any, namespace: str, control_plane: Any, _operator_slot: Any, crds: list[str],
        pools: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the simulation (seeds 2165, 4650, 4988): our finalizer's first add failed
    (503, injected), a later status write was applied but answered late (held here), the
    finalizer keeper's retry added the finalizer meanwhile, and the reservation was deleted.
    The late answer, older than the finalizer, told the record there was none; the release
    then left our finalizer on the deleted reservation for good."""
    from respool.controller.controller import Controller
    from respool.controller.kubeapi import ApiError, KubeApi, reservation_path

    _operator_slot.stop_current()
    pool = make_pool(rk, "race-late", ranks=1, cores=1)
    pools.append(pool)
    rk.create(namespace, "a", {"pool": pool, "duration": "1h"})
    info = _login(control_plane, monkeypatch)

    async def scenario() -> None:
        ctl = Controller(KubeApi(info))
        original = ctl.api.json_patch
        refused, held, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
        status_writes = 0

        async def faulty(path: str, ops: list[Any]) -> dict[str, Any]:
            nonlocal status_writes
            if path == reservation_path(namespace, "a") and not refused.is_set():
                refused.set()
                raise ApiError(503, "the server is currently unable to handle the request")
            answer: dict[str, Any] = await original(path, ops)
            if path == reservation_path(namespace, "a", status=True):
                status_writes += 1
                if status_writes == 2:
                    held.set()
                    await release.wait()  # applied; its answer is late
            return answer

        ctl.api.json_patch = faulty  # type: ignore[method-assign]
        actor = ctl._actor(pool)

        async def until(check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
            for _ in range(300):
                current = rk.get(namespace, "a")
                if check(current):
                    return current
                await asyncio.sleep(0.1)
            raise AssertionError(f"reservation a never {what}: {rk.get(namespace, 'a')}")

        try:
            actor.pool_event(rk.pool(pool))
            actor.restore()
            actor.reservation_event(rk.get(namespace, "a"), deleted=False)
            actor.start()
            await until(lambda o: (o.get("status") or {}).get("phase") == "Active", "Active")
            await asyncio.wait_for(refused.wait(), 30)
            rk.patch(namespace, "a", {"config": {"x": 1}})
            actor.reservation_event(rk.get(namespace, "a"), deleted=False)
            await asyncio.wait_for(held.wait(), 30)
            finalized = await until(lambda o: "respool.io/finalizer" in (
                o["metadata"].get("finalizers") or []), "got our finalizer")
            actor.reservation_event(finalized, deleted=False)
            rk.delete(namespace, "a")  # held by our finalizer
            actor.reservation_event(rk.get(namespace, "a"), deleted=False)
            release.set()
            for _ in range(300):
                if not rk.exists(namespace, "a"):
                    break
                await asyncio.sleep(0.1)
        finally:
            await ctl.stop()

    asyncio.run(scenario())
    assert not rk.exists(namespace, "a"), \
        f"the deleted reservation kept our finalizer: {rk.get(namespace, 'a')['metadata']}"


def _pool_events(rk: Any, pool: str, reason: str) -> list[Any]:
    return [e for e in rk.events("default", pool) if e.reason == reason]


def test_nothing_new_is_granted_on_a_pool_being_deleted(
        rk: Any, operator: Any, namespace: str, pools: list[str]) -> None:
    pool = make_pool(rk, "deleting", ranks=1, cores=1)
    pools.append(pool)
    rk.create(namespace, "holder", {"pool": pool, "duration": "1h"})
    rk.wait_phase(namespace, "holder", "Active")
    rk.create(namespace, "waiter", {"pool": pool, "duration": "1h", "nextAvailable": False,
                                    "maxRetry": 100})
    rk.wait_phase(namespace, "waiter", "Pending")
    rk.delete_pool(pool)
    # The operator sees the deletion: the waiter is told nothing is booked on this pool.
    rk.wait_for(namespace, "waiter", lambda o: (rk.condition(o, "Stalled") or {}).get(
        "reason") == "PoolDeleting", what="Stalled/PoolDeleting")
    rk.delete(namespace, "holder")  # its core is free now, but the pool is going
    wait_until("the pool is deleted", lambda: "still there" if rk.pool_exists(pool) else None,
               60)
    waiter = rk.get(namespace, "waiter")
    assert waiter["status"]["phase"] == "Pending", waiter["status"]
    granted = [e for e in rk.events(namespace, "waiter") if e.reason == "Granted"]
    assert not granted, "the waiter was granted on a pool being deleted"
    # The pool came and went: the waiter waits for it to exist again.
    rk.wait_for(namespace, "waiter", lambda o: (rk.condition(o, "Stalled") or {}).get(
        "reason") == "PoolNotFound", what="Stalled/PoolNotFound")


def test_restart_with_an_unusable_pool_spec_keeps_grants(
        rk: Any, fresh_operator: Any, namespace: str, pools: list[str]) -> None:
    pool = make_pool(rk, "unusable", ranks=1, cores=2)
    pools.append(pool)
    rk.create(namespace, "holder", {"pool": pool, "duration": "1h",
                                    "request": {"coresPerSlot": 1}})
    granted = rk.wait_phase(namespace, "holder", "Active")["status"]
    fresh_operator.stop()
    # Admitted by the API server, refused by the operator: 3 host names for 1 rank.
    rk.patch_pool(pool, {"resources": _R(pool, ranks=1, cores=2, hosts=f"{pool}-n[0-2]")})
    fresh_operator.start()
    stalled = rk.wait_pool(pool, lambda o: (rk.condition(o, "Stalled") or {}).get(
        "status") == "True", what="Stalled")
    assert rk.condition(stalled, "Stalled")["reason"] == "InvalidResources"
    # A reservation created now is decided after the holder was: it waits.
    rk.create(namespace, "later", {"pool": pool, "duration": "1h",
                                   "request": {"coresPerSlot": 1}})
    rk.wait_for(namespace, "later", lambda o: "not usable" in (o.get("status") or {}).get(
        "message", ""), what="waiting for a usable pool")
    holder = rk.get(namespace, "holder")["status"]
    assert holder["phase"] == "Active", holder
    assert (holder["reservationId"], holder["allocated"]) == (
        granted["reservationId"], granted["allocated"])
    wait_until("a Warning Event on the pool", lambda: None if _pool_events(
        rk, pool, "InvalidResources") else "none yet", 30)
    # Fixed: decisions resume; the holder keeps its core, the later one gets the other.
    rk.patch_pool(pool, {"resources": _R(pool, ranks=1, cores=2)})
    rk.wait_phase(namespace, "later", "Active")
    items = rk.list(namespace)
    assert_no_conflicting_holds(items)
    holder = rk.get(namespace, "holder")["status"]
    assert holder["phase"] == "Active" and holder["allocated"] == granted["allocated"]


def test_restore_takes_the_mode_booked(
        rk: Any, fresh_operator: Any, namespace: str, pools: list[str]) -> None:
    pool = make_pool(rk, "modes", ranks=1, cores=2)
    pools.append(pool)
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 7200))
    spec = {"pool": pool, "duration": "1h", "startTime": start, "mode": "shared",
            "request": {"coresPerSlot": 2}}
    # Restored in listing (name) order: the edited one first.
    rk.create(namespace, "a-edited", spec)
    rk.create(namespace, "b-untouched", spec)
    rk.wait_phase(namespace, "a-edited", "Scheduled")
    before = rk.wait_phase(namespace, "b-untouched", "Scheduled")["status"]
    fresh_operator.stop()
    rk.patch(namespace, "a-edited", {"mode": "exclusive"})
    fresh_operator.start()
    rk.wait_for(namespace, "a-edited", lambda o: (o.get("status") or {}).get(
        "observedGeneration") == 2, what="decided on its new mode")
    after = rk.get(namespace, "b-untouched")["status"]
    assert after["phase"] == "Scheduled"
    assert (after["preReservationId"], after["startTime"], after["allocated"]) == (
        before["preReservationId"], before["startTime"], before["allocated"]), \
        "the untouched shared neighbour lost its window"
    assert after.get("retryCount") == before.get("retryCount")
    assert_no_conflicting_holds(rk.list(namespace))


def test_a_status_written_by_someone_else_is_overwritten(
        rk: Any, operator: Any, namespace: str, pools: list[str]) -> None:
    pool = make_pool(rk, "foreign", ranks=1, cores=1)
    pools.append(pool)
    rk.create(namespace, "holder", {"pool": pool, "duration": "1h"})
    holder = rk.wait_phase(namespace, "holder", "Active")["status"]
    rk.create(namespace, "waiter", {"pool": pool, "duration": "1h", "nextAvailable": False,
                                    "maxRetry": 100})
    waiter = rk.wait_phase(namespace, "waiter", "Pending")["status"]
    # What a deposed leader's last write looks like when it lands after the new leader listed:
    # Active on the core the new leader gave to the holder.
    late = {**holder, "reservationId": f"{holder['reservationId']}0",
            "observedGeneration": 1}
    rk.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "waiter", {"status": late})
    rk.wait_for(namespace, "waiter", lambda o: (o.get("status") or {}).get(
        "phase") == "Pending", what="the operator's own status written again")
    after = rk.get(namespace, "waiter")["status"]
    assert after.get("reservationId") is None and after["retryCount"] == waiter["retryCount"]
    assert_no_conflicting_holds(rk.list(namespace))


def test_max_wait_ends_a_wait_on_a_pool_never_usable(
        rk: Any, operator: Any, namespace: str, pools: list[str]) -> None:
    """Found by the simulation (seed 324): with no planner for a pool whose spec the operator
    cannot use, a Pending reservation past its maxWait was due again at once, for ever - the
    actor spun at one instant and the reservation stayed Pending. It fails, MaxWaitExceeded,
    as it does while its pool is missing."""
    pool = f"never-usable-{secrets.token_hex(3)}"
    # Admitted by the API server, refused by the operator: 3 host names for 1 rank.
    rk.create_pool(pool, {"resources": _R(pool, ranks=1, cores=1, hosts=f"{pool}-n[0-2]")})
    pools.append(pool)
    rk.create(namespace, "waiter", {"pool": pool, "duration": "1h", "maxWait": "2s"})
    rk.wait_for(namespace, "waiter", lambda o: "not usable" in (o.get("status") or {}).get(
        "message", "") or (o.get("status") or {}).get("phase") == "Failed",
                what="waiting for a usable pool")
    failed = rk.wait_phase(namespace, "waiter", "Failed")
    assert rk.condition(failed, "Stalled")["reason"] == "MaxWaitExceeded", failed["status"]
