"""Reliability: other writers change reservations while the operator decides (DESIGN.md §5).

Every status write is conditional: on the object's UID and on the generation of the spec the
decision was made for. A third party that edits the spec between a decision and its write makes
the write fail (HTTP 422, failed JSON-patch `test`); the operator then rolls the booking back
and decides again on the new spec. Label and annotation edits do not change the generation,
but they do race the operator's finalizer edits (conditional on the resourceVersion).

- `test_label_and_annotation_storm_*`: a third party patches labels and annotations of every
  reservation in a tight loop during a burst;
- `test_spec_edits_during_decisions_*`: a third party edits `spec.config` of every reservation
  in a tight loop during a burst (each edit bumps the generation);
- `test_conflicted_write_is_rolled_back_and_counted`: deterministic - a pool actor, run in this
  process against the real API server, decides on generation 1 while the object is already at
  generation 2; the write is refused, the booking rolled back (another reservation gets the
  core), the conflict counted in `respool_status_writes_total{result="conflict"}` and logged at
  debug only; deciding again commits on generation 2.

After each storm: nothing is held twice, every reservation has a phase for its current
generation, the pool's summary agrees with its reservations (invariant 2), holders carry the
finalizer, and the operator logged no error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from e2e.invariants import assert_no_conflicting_holds
from e2e.test_apiserver_restart import make_pool, pool_summary_agrees, wait_until

pytestmark = pytest.mark.timeout(300)

SETTLE_TIMEOUT = 120.0
FINALIZER = "respool.io/finalizer"
CUSTOM = ("respool.io", "v1alpha1", "resourcereservations")


def _storm(action: Callable[[int], None]) -> tuple[threading.Event, threading.Thread,
                                                    list[int]]:
    """Run `action(round)` in a loop on a thread until the returned event is set."""
    stop = threading.Event()
    rounds = [0]

    def loop() -> None:
        while not stop.is_set():
            rounds[0] += 1
            action(rounds[0])

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return stop, thread, rounds


def _patch_all(rk: Any, namespace: str, body: Callable[[int], dict[str, Any]],
               round_: int) -> int:
    """Merge-patch every reservation of the namespace; returns how many patches landed."""
    landed = 0
    for obj in rk.list(namespace):
        if obj["metadata"].get("deletionTimestamp"):
            continue
        with contextlib.suppress(ApiException):  # deleted meanwhile, or refused: next round
            rk.custom.patch_namespaced_custom_object(
                *CUSTOM[:2], namespace, CUSTOM[2], obj["metadata"]["name"], body(round_))
            landed += 1
    return landed


def _settled(items: list[dict[str, Any]], count: int) -> str | None:
    if len(items) != count:
        return f"{len(items)} of {count} reservations"
    undecided = [o["metadata"]["name"] for o in items
                 if not (o.get("status") or {}).get("phase")
                 or o["status"].get("observedGeneration") != o["metadata"]["generation"]]
    return f"not decided on their current generation: {sorted(undecided)}" if undecided \
        else None


def _holders_have_finalizer(items: list[dict[str, Any]]) -> str | None:
    wrong = [o["metadata"]["name"] for o in items
             if (o["status"]["phase"] in ("Active", "Scheduled"))
             != (FINALIZER in (o["metadata"].get("finalizers") or []))]
    return f"finalizer not exactly on the holders: {sorted(wrong)}" if wrong else None


def _respool_errors(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if re.search(r"respool\S* +\[(ERROR|CRITICAL)", line)]


def _metric(text: str, result: str) -> float:
    pattern = (r'^respool_status_writes_total\{kind="reservation",result="' + result
               + r'"\} ([0-9.e+]+)$')
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def pools(rk: Any, namespace: str) -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    for obj in rk.list(namespace):
        with contextlib.suppress(ApiException):
            rk.delete(namespace, obj["metadata"]["name"])
    deadline = time.monotonic() + 60
    while rk.list(namespace) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pool in created:
        with contextlib.suppress(ApiException):
            rk.delete_pool(pool)


def _burst_with_storm(rk: Any, operator: Any, namespace: str, pool: str,
                      storm_body: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
    """16 one-core reservations on an 8-core pool (8 Active, 8 Scheduled), half of them
    released mid-way (the waiting ones move in), all under a third party's patch storm."""
    log_offset = operator.log_size()
    stop, storm, rounds = _storm(lambda r: _patch_all(rk, namespace, storm_body, r))
    names = [f"c{i:02d}" for i in range(16)]
    for name in names:
        rk.create(namespace, name, {"pool": pool, "duration": "1h",
                                    "request": {"coresPerSlot": 1}, "nextAvailable": True})
    wait_until("the first grants", lambda: _settled(rk.list(namespace), 16), SETTLE_TIMEOUT)
    # Releases while the storm goes on: Scheduled ones move in (capacity-change decisions).
    for name in names[:4]:
        rk.delete(namespace, name)
    more = [f"d{i:02d}" for i in range(4)]
    for name in more:
        # Each spec edit of a Pending reservation is one more failed attempt (ATS semantics):
        # allow plenty, so that they stay Pending however many rounds the storm runs.
        rk.create(namespace, name, {"pool": pool, "duration": "1h", "maxRetry": 1000,
                                    "request": {"coresPerSlot": 1}, "nextAvailable": False})
    # A few full rounds after the last creation, so that every object was patched while the
    # operator was deciding it or its neighbours.
    target = rounds[0] + 3
    wait_until("the storm to patch a few rounds", lambda: None if rounds[0] >= target else
               f"{rounds[0]} rounds", SETTLE_TIMEOUT)
    stop.set()
    storm.join(60)
    assert not storm.is_alive()

    def settled_after() -> str | None:
        items = rk.list(namespace)
        return _settled(items, 16) or _holders_have_finalizer(items) or \
            pool_summary_agrees(rk, pool, items)

    wait_until("everything settled after the storm", settled_after, SETTLE_TIMEOUT)
    items = rk.list(namespace)
    assert_no_conflicting_holds(items)
    phases = sorted(o["status"]["phase"] for o in items)
    # 8 cores: 8 Active; 4 of the first 16 deleted; 4 Scheduled left; the 4 d's (nextAvailable:
    # false) Pending - no grant lost to a conflict, none granted twice.
    assert phases.count("Active") == 8, phases
    assert phases.count("Scheduled") + phases.count("Pending") == 8, phases
    pool_status = rk.pool(pool)["status"]
    assert pool_status["capacity"]["core"]["allocated"] == 8
    errors = _respool_errors(operator.log_text(log_offset))
    assert not errors, "conflicts were logged as errors:\n" + "\n".join(errors[:20])
    print(f"\nstorm: {rounds[0]} rounds; status writes: "
          f"conflict={_metric(operator.metrics(), 'conflict'):.0f} "
          f"error={_metric(operator.metrics(), 'error'):.0f}")
    return items


def test_label_and_annotation_storm_keeps_invariants(
        rk: Any, fresh_operator: Any, namespace: str, pools: list[str]) -> None:
    pool = make_pool(rk, "wl", ranks=2, cores=4)
    pools.append(pool)

    def body(round_: int) -> dict[str, Any]:
        return {"metadata": {"labels": {"example.com/touched": str(round_)},
                             "annotations": {"example.com/note": f"round {round_}"}}}

    items = _burst_with_storm(rk, fresh_operator, namespace, pool, body)
    assert all("example.com/touched" in (o["metadata"].get("labels") or {}) for o in items)


def test_spec_edits_during_decisions_keep_invariants(
        rk: Any, fresh_operator: Any, namespace: str, pools: list[str]) -> None:
    pool = make_pool(rk, "ws", ranks=2, cores=4)
    pools.append(pool)

    def body(round_: int) -> dict[str, Any]:
        return {"spec": {"config": {"edited": round_}}}

    items = _burst_with_storm(rk, fresh_operator, namespace, pool, body)
    assert all(o["metadata"]["generation"] > 1 for o in items), "the storm edited nothing"


def test_conflicted_write_is_rolled_back_and_counted(
        rk: Any, namespace: str, control_plane: Any, _operator_slot: Any,
        crds: list[str], pools: list[str], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf
    from prometheus_client import REGISTRY

    from respool.controller.actor import PoolActor
    from respool.controller.controller import Controller
    from respool.controller.kubeapi import KubeApi
    from respool.controller.lifecycle import Reservation

    _operator_slot.stop_current()  # this test's actor is the only writer
    pool = make_pool(rk, "wc", ranks=1, cores=1)
    pools.append(pool)
    spec = {"pool": pool, "duration": "1h", "nextAvailable": False}
    rk.create(namespace, "first", spec)
    stale = rk.get(namespace, "first")  # generation 1: what the actor decides on
    rk.patch(namespace, "first", {"config": {"edited": True}})  # now generation 2
    rk.create(namespace, "second", spec)
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None
    def conflicts() -> float:
        value = REGISTRY.get_sample_value("respool_status_writes_total",
                                          {"kind": "reservation", "result": "conflict"})
        return value or 0.0

    async def scenario() -> None:
        ctl = Controller(KubeApi(info))
        try:
            actor = PoolActor(pool, ctl.port)
            actor.pool_event(rk.pool(pool))
            await actor._handle_pool_deletion()  # our finalizer on the pool: it may book
            actor.restore()
            record = Reservation.from_object(stale)
            assert record is not None and record.generation == 1
            actor.records[record.uid] = record
            before = conflicts()
            with caplog.at_level(logging.DEBUG, logger="respool"):
                await actor._decide_all([record], float(int(time.time())), set())
                assert actor.planner is not None
                assert actor.planner.get(record.uid) is not None, "not granted on generation 1"
                await asyncio.gather(*actor._inflight.values())
            assert conflicts() == before + 1, "the conflict was not counted"
            noisy = [r for r in caplog.records
                     if r.name.startswith("respool") and r.levelno >= logging.WARNING]
            assert not noisy, [r.getMessage() for r in noisy]
            assert any("spec changed meanwhile" in r.getMessage() for r in caplog.records
                       if r.levelno == logging.DEBUG)
            # Rolled back: the booking is gone, nothing was written, the record has the new
            # spec and is due for a new decision.
            assert actor.planner.get(record.uid) is None
            assert not rk.get(namespace, "first").get("status")
            assert record.generation == 2 and record.uid in actor.dirty
            # The core it held is free: another reservation gets it.
            second = Reservation.from_object(rk.get(namespace, "second"))
            assert second is not None
            actor.records[second.uid] = second
            actor.dirty.discard(record.uid)
            await actor._decide_all([second], float(int(time.time())), set())
            await asyncio.gather(*actor._inflight.values())
            assert rk.phase(rk.get(namespace, "second")) == "Active"
            # Deciding the first again commits on the generation it has now.
            await actor._decide_all([record], float(int(time.time())), set())
            await asyncio.gather(*actor._inflight.values())
            first = rk.get(namespace, "first")
            assert first["status"]["phase"] == "Pending"
            assert first["status"]["observedGeneration"] == 2
        finally:
            await ctl.stop()

    asyncio.run(scenario())
