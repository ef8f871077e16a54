"""Priorities, preemption and maintenance in the reservation life cycle (issue 14), on the
real engine without Kubernetes: who is displaced, what each side's status and Events say,
the grace period of an Active preemptible holder, and maintenance windows that always win."""

from __future__ import annotations

from typing import Any

from respool.api import format_time
from respool.controller import priorities
from respool.controller.lifecycle import (
    Policy,
    PoolContext,
    Reservation,
    decide,
    maintenance_label,
)
from respool.pool import Block, IDset, Planner

T0 = 1_900_000_000.0
R = {
    "version": 1,
    "execution": {"R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}],
                  "nodelist": ["node[0-1]"]},
}
CLASSES = {"low": 10, "high": 1000, "top": 2000, "never": 5000}


def context(records: dict[str, Reservation], grace: float = 60.0,
            max_priority: list[dict[str, Any]] | None = None) -> PoolContext:
    classes = priorities.PriorityClasses()
    for name, value in CLASSES.items():
        classes.note({"metadata": {"name": name}, "value": value,
                      "preemptionPolicy": "Never" if name == "never" else None})

    def name_of(uid: str) -> str | None:
        record = records.get(uid)
        return record.key if record else None

    return PoolContext(
        name="rack", policy=Policy(preemption_grace=grace),
        priority_of=lambda name, _ns: priorities.resolve(name, classes, max_priority, {}),
        name_of=name_of)


_n = 0


def rsv(records: dict[str, Reservation], spec: dict[str, Any]) -> Reservation:
    global _n
    _n += 1
    full = {"pool": "rack", "request": {"nodes": 2, "exclusive": True}, "duration": "1h"}
    full.update(spec)
    record = Reservation(uid=f"0000000{_n}-aaaa-bbbb-cccc-dddddddddddd", namespace="team",
                         name=f"r{_n}", generation=1, spec=full, status={})
    records[record.uid] = record
    return record


def apply(r: Reservation, ctx: PoolContext, p: Planner, now: float) -> Any:
    outcome = decide(r, ctx, p, now)
    r.status = {k: v for k, v in outcome.status.items() if v is not None}
    return outcome


def condition(r: Reservation, type_: str) -> dict[str, Any] | None:
    return next((c for c in r.status.get("conditions", []) if c["type"] == type_), None)


def test_scheduled_lower_priority_window_is_taken_and_replanned_naming_the_displacer() -> None:
    records: dict[str, Reservation] = {}
    p, ctx = Planner(R), context(records)
    low = rsv(records, {"priorityClassName": "low", "startTime": format_time(T0 + 600)})
    apply(low, ctx, p, T0)
    assert low.status["phase"] == "Scheduled" and low.status["priority"] == 10
    high = rsv(records, {"priorityClassName": "high", "startTime": format_time(T0 + 600)})
    outcome = apply(high, ctx, p, T0)
    assert high.status["phase"] == "Scheduled"
    assert high.status["startTime"] == format_time(T0 + 600)
    assert outcome.displaced == [low.uid]
    assert any(e.reason == "Preempted" and low.key in e.message for e in outcome.events)
    # The displaced one is decided next: Replanned, naming who took its window.
    outcome = apply(low, ctx, p, T0)
    replanned = condition(low, "Replanned")
    assert replanned is not None and replanned["status"] == "True"
    assert replanned["reason"] == "Preempted" and high.key in replanned["message"]
    assert any(e.reason == "Replanned" and high.key in e.message for e in outcome.events)
    assert low.status["phase"] == "Scheduled"  # booked again, after the high one
    assert low.status["startTime"] == format_time(T0 + 600 + 3600)


def _displaced_then_restarted(keep_status: bool) -> tuple[Reservation, Reservation, Any]:
    """`low` is displaced by `high`; the operator restarts (a new planner from the statuses,
    as PoolModel builds it); then `low` is raised above `high` and asks for the same window."""
    from respool.controller.pool_model import PoolModel
    from respool.controller.ports import ClusterFacts

    records: dict[str, Reservation] = {}
    p, ctx = Planner(R), context(records)
    low = rsv(records, {"priorityClassName": "low", "startTime": format_time(T0 + 600),
                        "nextAvailable": False, "maxRetry": 50})
    apply(low, ctx, p, T0)
    high = rsv(records, {"priorityClassName": "high", "startTime": format_time(T0 + 600)})
    assert apply(high, ctx, p, T0).displaced == [low.uid]
    apply(low, ctx, p, T0)
    assert low.status["phase"] == "Pending"  # its window, and only that one, is taken
    assert low.status["displacedBy"] == [high.uid]
    if not keep_status:
        low.status = {k: v for k, v in low.status.items() if k != "displacedBy"}
    model = PoolModel("rack", ClusterFacts(api=None))  # type: ignore[arg-type]
    raw = {"metadata": {"name": "rack", "generation": 1, "uid": "p"}, "spec": {"resources": R}}
    model.apply(raw, records, finalizer_added=True, now=T0 + 60)
    assert model.planner is not None
    low.spec = {**low.spec, "priorityClassName": "top"}
    low.generation = 2
    return low, high, apply(low, ctx, model.planner, T0 + 60)


def test_no_cascade_across_a_restart_the_displacers_are_kept_in_status() -> None:
    low, _, outcome = _displaced_then_restarted(keep_status=True)
    assert outcome.displaced == []  # it never displaces its displacer, whatever priorities say
    assert low.status["phase"] != "Scheduled" or low.status["startTime"] != format_time(T0 + 600)
    # Without status.displacedBy the same restart forgets, and the cascade happens:
    _, high_again, outcome = _displaced_then_restarted(keep_status=False)
    assert outcome.displaced == [high_again.uid]


def test_who_displaced_whom_survives_a_new_topology() -> None:
    """An edit of the pool's R builds a new planner from the old one's bookings: the record of
    who displaced whom goes along (else a cascade becomes possible after any R edit)."""
    from respool.controller.pool_model import PoolModel
    from respool.controller.ports import ClusterFacts

    records: dict[str, Reservation] = {}
    model = PoolModel("rack", ClusterFacts(api=None))  # type: ignore[arg-type]
    raw = {"metadata": {"name": "rack", "generation": 1, "uid": "p"}, "spec": {"resources": R}}
    model.apply(raw, records, finalizer_added=True, now=T0)
    assert model.planner is not None
    model.planner.note_displaced("victim", ["displacer"])
    wider = {"version": 1, "execution": {"R_lite": [{"rank": "0-2", "children": {"core": "0-3"}}],
                                         "nodelist": ["node[0-2]"]}}
    model.apply({**raw, "metadata": {**raw["metadata"], "generation": 2},
                 "spec": {"resources": wider}}, records, finalizer_added=True, now=T0)
    assert model.planner.displaced_by("victim") == {"displacer"}


def test_equal_priority_and_preemption_policy_never_do_not_displace() -> None:
    records: dict[str, Reservation] = {}
    p, ctx = Planner(R), context(records)
    first = rsv(records, {"priorityClassName": "high", "startTime": format_time(T0 + 600)})
    apply(first, ctx, p, T0)
    same = rsv(records, {"priorityClassName": "high", "startTime": format_time(T0 + 600)})
    outcome = apply(same, ctx, p, T0)
    assert outcome.displaced == [] and same.status["startTime"] == format_time(T0 + 4200)
    p2, records2 = Planner(R), {}
    ctx2 = context(records2)
    low = rsv(records2, {"priorityClassName": "low", "startTime": format_time(T0 + 600)})
    apply(low, ctx2, p2, T0)
    never = rsv(records2, {"priorityClassName": "never", "startTime": format_time(T0 + 600)})
    outcome = apply(never, ctx2, p2, T0)
    assert outcome.displaced == [] and never.status["priority"] == 5000
    assert never.status["startTime"] == format_time(T0 + 4200)


def test_active_holders_are_displaced_only_if_preemptible_and_after_the_grace_period() -> None:
    records: dict[str, Reservation] = {}
    p, ctx = Planner(R), context(records, grace=60)
    stubborn = rsv(records, {"priorityClassName": "low"})
    apply(stubborn, ctx, p, T0)
    assert stubborn.status["phase"] == "Active"
    high = rsv(records, {"priorityClassName": "high", "nextAvailable": False})
    outcome = apply(high, ctx, p, T0 + 10)
    assert outcome.displaced == [] and high.status["phase"] == "Pending"
    # A preemptible one gives way, after the grace period.
    records2: dict[str, Reservation] = {}
    p2, ctx2 = Planner(R), context(records2, grace=60)
    soft = rsv(records2, {"priorityClassName": "low", "preemptible": True})
    apply(soft, ctx2, p2, T0)
    high2 = rsv(records2, {"priorityClassName": "high"})
    outcome = apply(high2, ctx2, p2, T0 + 10)
    assert outcome.displaced == [soft.uid]
    assert high2.status["phase"] == "Scheduled"
    assert high2.status["startTime"] == format_time(T0 + 70)
    outcome = apply(soft, ctx2, p2, T0 + 11)
    pending = condition(soft, "PreemptionPending")
    assert soft.status["phase"] == "Active" and pending is not None
    assert pending["status"] == "True" and high2.key in pending["message"]
    assert soft.status["endTime"] == format_time(T0 + 70)
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "PreemptionPending")]
    assert outcome.wake_at == T0 + 70
    apply(soft, ctx2, p2, T0 + 70)
    assert soft.status["phase"] == "Failed"
    stalled = condition(soft, "Stalled")
    assert stalled is not None and stalled["reason"] == "Preempted"
    apply(high2, ctx2, p2, T0 + 70)
    assert high2.status["phase"] == "Active"


def test_max_priority_caps_the_class_value() -> None:
    records: dict[str, Reservation] = {}
    p, ctx = Planner(R), context(records, max_priority=[{"value": 50}])
    r = rsv(records, {"priorityClassName": "high"})
    apply(r, ctx, p, T0)
    assert r.status["priority"] == 50


def test_unknown_priority_class_waits_for_it() -> None:
    records: dict[str, Reservation] = {}
    p, ctx = Planner(R), context(records)
    r = rsv(records, {"priorityClassName": "nope"})
    apply(r, ctx, p, T0)
    assert r.status["phase"] == "Pending" and "'nope' does not exist" in r.status["message"]


def test_maintenance_keeps_waiters_out_by_name() -> None:
    records: dict[str, Reservation] = {}
    p, ctx = Planner(R), context(records)
    fw = Block("firmware", T0, T0 + 4 * 3600, IDset("0-1"), "Drain", "BIOS")
    p.set_maintenance([fw])
    r = rsv(records, {"priorityClassName": "never", "nextAvailable": False})
    apply(r, ctx, p, T0)
    assert r.status["phase"] == "Pending"
    assert f"busy: maintenance {maintenance_label(fw)}" in r.status["message"]
    assert maintenance_label(fw) == "'firmware' 2030-03-17T17:46:40Z-21:46:40Z"
    assert maintenance_label(Block("fw", 0, 3600, IDset("0"))) == "'fw' 1970-01-01T00:00Z-01:00Z"
    later = rsv(records, {})
    apply(later, ctx, p, T0)
    assert later.status["phase"] == "Scheduled"
    assert later.status["startTime"] == format_time(T0 + 4 * 3600)
    assert "busy: maintenance 'firmware'" in later.status["message"]


def test_maintenance_replans_scheduled_and_ends_active_holders() -> None:
    records: dict[str, Reservation] = {}
    p, ctx = Planner(R), context(records)
    active = rsv(records, {"duration": "3h"})
    apply(active, ctx, p, T0)
    evicted = Planner(R)
    # Drain: the Active holder keeps its window until the maintenance starts, then ends.
    p.set_maintenance([Block("fw", T0 + 3600, T0 + 7200, IDset("0-1"), "Drain")])
    outcome = apply(active, ctx, p, T0 + 10)
    assert active.status["phase"] == "Active"
    assert active.status["endTime"] == format_time(T0 + 3 * 3600)
    assert [e.reason for e in outcome.events] == ["Maintenance"]
    assert outcome.wake_at == T0 + 3600
    apply(active, ctx, p, T0 + 3600)
    assert active.status["phase"] == "Expired" and "maintenance 'fw'" in active.status["message"]
    # Evict: cut back at once.
    records2: dict[str, Reservation] = {}
    ctx2 = context(records2)
    holder = rsv(records2, {"duration": "3h"})
    apply(holder, ctx2, evicted, T0)
    evicted.set_maintenance([Block("fw", T0 + 3600, T0 + 7200, IDset("0"), "Evict")])
    apply(holder, ctx2, evicted, T0 + 10)
    assert holder.status["phase"] == "Active"
    assert holder.status["endTime"] == format_time(T0 + 3600)
    shortened = condition(holder, "Shortened")
    assert shortened is not None and shortened["reason"] == "Maintenance"
    # A Scheduled window reaching into maintenance is planned anew, after it.
    records3: dict[str, Reservation] = {}
    p3, ctx3 = Planner(R), context(records3)
    scheduled = rsv(records3, {"startTime": format_time(T0 + 600)})
    apply(scheduled, ctx3, p3, T0)
    p3.set_maintenance([Block("fw", T0 + 1200, T0 + 1800, IDset("0-1"))])
    outcome = apply(scheduled, ctx3, p3, T0 + 1)
    assert any(e.reason == "Replanned" and "maintenance 'fw'" in e.message
               for e in outcome.events)
    assert scheduled.status["startTime"] == format_time(T0 + 1800)
