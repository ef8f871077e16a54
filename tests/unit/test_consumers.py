"""Consumer Pods (status.consumers) and spec.idleTimeout: the tracker and the life cycle's
decisions on a virtual clock, with the real engine and no Kubernetes (issue 13)."""

from __future__ import annotations

import asyncio
from typing import Any

from respool.api import format_time
from respool.api.models import MAX_CONSUMERS_LISTED
from respool.controller.consumers import (
    Coalescer,
    ConsumerTracker,
    ConsumerView,
    idle_deadline,
    status_field,
)
from respool.controller.lifecycle import PoolContext, Reservation, decide
from respool.pool import Planner

T0 = 1_900_000_000.0
R = {"version": 1, "execution": {"R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}],
                                 "nodelist": ["node[0-1]"]}}


def pod(name: str, reservation: str | None = "train", *, phase: str = "Pending",
        node: str = "", namespace: str = "team", deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace,
                                "labels": {"respool.io/reservation": reservation}
                                if reservation else {}}
    if deleting:
        metadata["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    return {"metadata": metadata, "spec": {"nodeName": node} if node else {},
            "status": {"phase": phase}}


def test_consumers_are_unfinished_labelled_pods_of_the_namespace() -> None:
    tracker = ConsumerTracker()
    assert tracker.view("team", "train") is None  # not listed yet: unknown, not zero
    tracker.on_pod(None, pod("a", phase="Running", node="n0"), T0)
    tracker.on_pod(None, pod("b"), T0)  # gated or not scheduled yet: a consumer too
    tracker.on_pod(None, pod("c", phase="Succeeded", node="n0"), T0)  # finished: not
    tracker.on_pod(None, pod("d", namespace="other"), T0)  # another namespace's "train"
    tracker.on_pod(None, pod("e", reservation=None), T0)  # unlabelled
    tracker.on_listing(None, {("team", "a"), ("team", "b"), ("other", "d")}, T0)
    tracker.mark_synced(T0)
    assert tracker.view("team", "train") == ConsumerView(2, 1, ("a", "b"), None)
    assert tracker.view("other", "train") == ConsumerView(1, 0, ("d",), None)
    assert [s.name for s in tracker.bound("team", "train")] == ["a"]
    # a relabelled Pod moves; a finished one goes; the last one going starts the idle clock
    assert tracker.on_pod("MODIFIED", pod("b", reservation="eval"), T0 + 5) == {
        ("team", "train"), ("team", "eval")}
    assert tracker.on_pod("MODIFIED", pod("a", phase="Failed", node="n0"), T0 + 7) == {
        ("team", "train")}
    assert tracker.view("team", "train") == ConsumerView(0, 0, (), T0 + 7)
    # a listing that no longer names a Pod (deleted while the watch was broken) drops it
    assert tracker.on_listing("team", set(), T0 + 9) == {("team", "eval")}
    assert tracker.view("team", "eval") == ConsumerView(0, 0, (), T0 + 9)
    assert tracker.view("other", "train") is not None and tracker.view(
        "other", "train").count == 1  # type: ignore[union-attr]


def test_the_status_lists_a_bounded_number_of_names_and_counts_all() -> None:
    tracker = ConsumerTracker()
    for index in range(MAX_CONSUMERS_LISTED + 30):
        tracker.on_pod(None, pod(f"w-{index:03d}", phase="Running", node="n0"), T0)
    tracker.mark_synced(T0)
    view = tracker.view("team", "train")
    assert view is not None
    field = status_field(view, None, active=True, idle_timeout=None, active_since=T0)
    assert field["count"] == MAX_CONSUMERS_LISTED + 30 and field["running"] == field["count"]
    assert field["pods"] == [f"w-{index:03d}" for index in range(MAX_CONSUMERS_LISTED)]


def test_no_consumer_is_absent_unless_an_idle_clock_runs() -> None:
    empty = ConsumerView(0, 0, (), T0 + 50)
    assert status_field(empty, {"count": 1}, active=True, idle_timeout=None,
                        active_since=T0) is None
    assert status_field(empty, None, active=False, idle_timeout=60.0, active_since=T0) is None
    assert status_field(empty, None, active=True, idle_timeout=60.0, active_since=T0) == {
        "count": 0, "idleSince": format_time(T0 + 50)}
    # unknown (Pods not listed yet): whatever was written stays
    assert status_field(None, {"count": 2}, active=True, idle_timeout=60.0,
                        active_since=T0) == {"count": 2}
    # the clock runs from the later of the window's start and the last consumer going
    assert idle_deadline(60.0, ConsumerView(0, 0, (), T0 - 500), T0) == T0 + 60
    assert idle_deadline(60.0, ConsumerView(1, 1, ("a",), None), T0) is None
    assert idle_deadline(None, empty, T0) is None
    assert idle_deadline(60.0, None, T0) is None


def _reservation(spec: dict[str, Any]) -> Reservation:
    full = {"pool": "rack", "request": {"slots": 1, "coresPerSlot": 4}, "duration": "1h", **spec}
    return Reservation(uid="00000001-aaaa-bbbb-cccc-dddddddddddd", namespace="team",
                       name="train", generation=1, spec=full, status={})


def _apply(record: Reservation, planner: Planner, now: float,
           consumers: ConsumerView | None) -> Any:
    outcome = decide(record, PoolContext(name="rack"), planner, now, consumers)
    record.status = {k: v for k, v in outcome.status.items() if v is not None}
    return outcome


def test_an_idle_hold_is_released_after_idle_timeout_with_reason_idle() -> None:
    planner = Planner(R)
    record = _reservation({"idleTimeout": "10m"})
    tracker = ConsumerTracker()
    tracker.mark_synced(T0 - 100)  # the operator had listed the Pods before the grant
    granted = _apply(record, planner, T0, tracker.view("team", "train"))
    assert record.status["phase"] == "Active"
    assert record.status["consumers"] == {"count": 0, "idleSince": format_time(T0)}
    assert granted.wake_at == T0 + 600  # the idle deadline, before the window's end
    # a consumer arrives: not idle, the clock stops; it finishes later: it starts again
    tracker.on_pod(None, pod("job-1", phase="Running", node="node0"), T0 + 300)
    busy = _apply(record, planner, T0 + 301, tracker.view("team", "train"))
    assert record.status["consumers"] == {"count": 1, "running": 1, "pods": ["job-1"]}
    assert busy.wake_at == T0 + 3600
    tracker.on_pod("DELETED", pod("job-1"), T0 + 900)
    quiet = _apply(record, planner, T0 + 901, tracker.view("team", "train"))
    assert record.status["phase"] == "Active"
    assert record.status["consumers"]["idleSince"] == format_time(T0 + 900)
    assert quiet.wake_at == T0 + 1500
    # not a second early
    _apply(record, planner, T0 + 1499, tracker.view("team", "train"))
    assert record.status["phase"] == "Active"
    released = _apply(record, planner, T0 + 1500, tracker.view("team", "train"))
    assert record.status["phase"] == "Expired"
    assert [(e.reason, e.type) for e in released.events] == [("Idle", "Normal")]
    ready = next(c for c in record.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Idle")
    assert record.status["endTime"] == format_time(T0 + 1500)
    assert planner.get(record.uid) is None  # resources returned to the pool


def test_a_restart_starts_the_idle_clock_again_and_unknown_consumers_never_release() -> None:
    planner = Planner(R)
    record = _reservation({"idleTimeout": "10m"})
    before = ConsumerTracker()
    before.mark_synced(T0)
    _apply(record, planner, T0, before.view("team", "train"))
    assert record.status["consumers"]["idleSince"] == format_time(T0)
    # The operator restarts at T0 + 590: until it has listed the Pods, nothing is judged
    # idle (even long past the old deadline) and status.consumers stays as written.
    after = ConsumerTracker()
    outcome = _apply(record, planner, T0 + 700, after.view("team", "train"))
    assert record.status["phase"] == "Active"
    assert record.status["consumers"]["idleSince"] == format_time(T0)
    assert outcome.wake_at == T0 + 3600
    after.mark_synced(T0 + 710)  # listed: the clock runs from then, not from T0
    outcome = _apply(record, planner, T0 + 711, after.view("team", "train"))
    assert record.status["phase"] == "Active"
    assert record.status["consumers"]["idleSince"] == format_time(T0 + 710)
    assert outcome.wake_at == T0 + 1310


def test_without_idle_timeout_a_hold_with_no_consumer_stays_and_writes_nothing_new() -> None:
    planner = Planner(R)
    record = _reservation({})
    tracker = ConsumerTracker()
    tracker.mark_synced(T0)
    _apply(record, planner, T0, tracker.view("team", "train"))
    assert "consumers" not in record.status
    text = record.status_text
    _apply(record, planner, T0 + 3599, tracker.view("team", "train"))
    assert record.status["phase"] == "Active" and record.status_text == text


def test_the_coalescer_hands_a_burst_over_once() -> None:
    flushed: list[set[str]] = []

    async def burst() -> None:
        coalescer = Coalescer(flushed.append, interval=0.01)
        for index in range(500):
            coalescer.add([f"uid-{index % 3}"])
        await asyncio.sleep(0.05)
        coalescer.add(["uid-9"])
        coalescer.cancel()
        await asyncio.sleep(0.02)

    asyncio.run(burst())
    assert flushed == [{"uid-0", "uid-1", "uid-2"}]


def test_describe_shows_the_consumers_and_on_end() -> None:
    import argparse

    from respool.cli.ops import _describe_reservation

    class Api:
        default_namespace = "team"

        def __init__(self, obj: dict[str, Any]) -> None:
            self.obj = obj

        def find_reservation(self, namespace: str, name: str) -> dict[str, Any]:
            return self.obj

    def described(spec: dict[str, Any], consumers: dict[str, Any]) -> str:
        obj = {"metadata": {"name": "train", "namespace": "team"},
               "spec": {"pool": "rack", **spec},
               "status": {"phase": "Active", "consumers": consumers}}
        args = argparse.Namespace(namespace="team", name="train", utc=True)
        return _describe_reservation(Api(obj), args)  # type: ignore[arg-type]

    names = [f"w{index:02d}" for index in range(20)]
    text = described({"onEnd": "Evict"}, {"count": 23, "running": 21, "pods": names})
    assert "Consumers:       23 Pods (21 running): w00, w01" in text and "and 3 more" in text
    assert "On end:          Evict" in text
    text = described({"idleTimeout": "10m"}, {"count": 0, "idleSince": "2030-01-01T00:00:00Z"})
    assert "Consumers:       none since 2030-01-01T00:00:00Z" in text and "(10m)" in text
    assert "On end" not in described({}, {})
