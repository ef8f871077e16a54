"""Where a waiting reservation stands (respool.controller.standing), on the real engine and
life cycle: queue order is the actor's decision order, and startNoLaterThan is what replaying
the actor's retries gives when nothing changes but time."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from respool.api import format_time, parse_time
from respool.controller import standing
from respool.controller.actor import PoolActor
from respool.controller.lifecycle import Policy, PoolContext, Reservation, decide
from respool.pool import Planner

T0 = 1_900_000_000.0
R = {"version": 1, "execution": {"R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}],
                                  "nodelist": ["node[0-1]"]}}
_counter = 0


def rsv(spec: dict[str, Any] | None = None, name: str | None = None,
        created: float = 0.0) -> Reservation:
    global _counter
    _counter += 1
    # nextAvailable false: a request that does not fit now waits Pending (with the default,
    # true, it is booked Scheduled for its earliest window instead).
    full: dict[str, Any] = {"pool": "rack", "request": {"nodes": 1, "exclusive": True},
                            "duration": "1h", "nextAvailable": False}
    full.update(spec or {})
    return Reservation(uid=f"{_counter:08d}-aaaa-bbbb-cccc-dddddddddddd", namespace="team",
                       name=name or f"r{_counter:03d}", generation=1, spec=full, status={},
                       created=created)


def decide_at(records: list[Reservation], planner: Planner, now: float,
              ctx: PoolContext | None = None) -> None:
    """Decide each in turn and commit its status, as the actor does."""
    for record in records:
        outcome = decide(record, ctx or PoolContext(name="rack"), planner, now)
        record.status = {k: v for k, v in outcome.status.items() if v is not None}


def test_waiters_are_queued_first_requested_first_and_projected_behind_the_holders() -> None:
    planner = Planner(R)
    holders = [rsv({"duration": "1h"}), rsv({"duration": "3h"})]
    decide_at(holders, planner, T0)
    assert [h.phase for h in holders] == ["Active", "Active"]
    first, second, third = rsv(), rsv({"duration": "2h"}), rsv()
    decide_at([first], planner, T0 + 10)
    decide_at([second], planner, T0 + 20)
    decide_at([third], planner, T0 + 30)
    assert [r.phase for r in (first, second, third)] == ["Pending"] * 3
    result = standing.standings([third, holders[0], second, first, holders[1]], planner,
                                Policy(), T0 + 40)
    assert {uid: s.position for uid, s in result.items()} == {
        first.uid: 1, second.uid: 2, third.uid: 3}
    # rank 0 frees at T0+1h: first takes it until +2h; then second, first in line, takes it
    # at +2h; third gets rank 1 when the 3h holder ends.
    assert result[first.uid].start_no_later_than == T0 + 3600
    assert result[second.uid].start_no_later_than == T0 + 2 * 3600
    assert result[third.uid].start_no_later_than == T0 + 3 * 3600


def test_the_projection_is_what_the_actor_then_does_when_nothing_else_changes() -> None:
    """Replay: let the holders end, decide the queue in order at each moment capacity frees,
    and compare each start with the projection made before."""
    rng = random.Random(7)
    outcomes: list[str] = []
    for _ in range(60):
        planner = Planner(R)
        holders = [rsv({"duration": f"{rng.randint(1, 4)}h"}) for _ in range(2)]
        decide_at(holders, planner, T0)
        waiters = []
        for i in range(rng.randint(1, 6)):
            spec: dict[str, Any] = {"duration": f"{rng.randint(1, 3)}h"}
            if rng.random() < 0.3:
                spec["request"] = {"nodes": 2, "exclusive": True}
            if rng.random() < 0.2:
                spec["maxWait"] = f"{rng.randint(1, 8)}h"
            if rng.random() < 0.2:
                spec["maxRetry"] = rng.randint(0, 3)
            waiters.append(rsv(spec))
            decide_at([waiters[-1]], planner, T0 + i + 1)
        now = T0 + 60
        projected = standing.standings(holders + waiters, planner, Policy(), now)
        queued = {w.uid for w in waiters if w.phase == "Pending"}
        everyone = holders + waiters
        started: dict[str, float] = {}
        moment = now
        for _ in range(50):
            pending = [w for w in waiters if w.phase == "Pending"]
            if not pending:
                break
            # The next moment capacity frees: the next end of anything held.
            ends = [b.end for b in planner.bookings() if b.end is not None and b.end > moment]
            if not ends:
                break
            moment = min(ends)
            active = [r for r in everyone if r.phase == "Active"]
            decide_at(active, planner, moment)  # windows ending now expire
            order = sorted((w for w in waiters if w.phase == "Pending"),
                           key=standing.decision_key)
            decide_at(order, planner, moment)
            for w in waiters:
                if w.phase == "Active" and w.uid not in started:
                    started[w.uid] = parse_time(w.status["startTime"])
        for w in waiters:
            if w.uid not in queued:
                continue  # failed at once (maxRetry 0), not waiting
            assert projected[w.uid].start_no_later_than == started.get(w.uid), w.name
            outcomes.append(w.phase if w.uid not in started else "started")
    # The replay covered waiters that started and waiters that failed (maxRetry, maxWait).
    assert {"started", "Failed"} <= set(outcomes), outcomes


def test_waiting_for_anything_but_capacity_is_not_in_the_queue() -> None:
    planner = Planner(R)
    hidden = rsv()
    ctx = PoolContext(name="rack", namespace_allowed=lambda _ns: False)
    decide_at([hidden], planner, T0, ctx)
    assert hidden.phase == "Pending"
    assert standing.standings([hidden], planner, Policy(), T0) == {}
    status = dict(hidden.status, queuePosition=3, startNoLaterThan=format_time(T0))
    standing.stamp(status, standing.Standing(1, T0))
    assert "queuePosition" not in status and "startNoLaterThan" not in status


def test_no_bound_past_max_wait_or_for_a_request_that_never_fits_in_time() -> None:
    planner = Planner(R)
    holders = [rsv({"duration": "5h"}), rsv({"duration": "5h"})]
    decide_at(holders, planner, T0)
    patient = rsv({"maxWait": "10h"})
    hasty = rsv({"maxWait": "1h", "nextAvailable": True})
    decide_at([patient, hasty], planner, T0 + 1)
    result = standing.standings([patient, hasty], planner, Policy(), T0 + 2)
    assert result[patient.uid] == standing.Standing(1, T0 + 5 * 3600)
    assert result[hasty.uid] == standing.Standing(2, None)


def test_deeper_than_the_projection_depth_gets_a_position_only() -> None:
    planner = Planner(R)
    decide_at([rsv({"duration": "5h"}), rsv({"duration": "5h"})], planner, T0)
    waiters = [rsv() for _ in range(5)]
    for i, w in enumerate(waiters):
        decide_at([w], planner, T0 + i + 1)
    result = standing.standings(waiters, planner, Policy(), T0 + 10, depth=2)
    assert [result[w.uid].position for w in waiters] == [1, 2, 3, 4, 5]
    assert [result[w.uid].start_no_later_than is None for w in waiters] == [
        False, False, True, True, True]


def test_the_scratch_projection_leaves_the_planner_as_it_was() -> None:
    planner = Planner(R)
    decide_at([rsv({"duration": "5h"}), rsv({"duration": "5h"})], planner, T0)
    waiter = rsv()
    decide_at([waiter], planner, T0 + 1)
    before = (planner.generation, [(b.id, b.start, b.end) for b in planner.bookings()])
    standing.standings([waiter], planner, Policy(), T0 + 2)
    assert (planner.generation, [(b.id, b.start, b.end) for b in planner.bookings()]) == before


def test_the_tracker_reports_stale_once_and_defers_a_recomputation() -> None:
    planner = Planner(R)
    decide_at([rsv({"duration": "5h"}), rsv({"duration": "5h"})], planner, T0)
    a, b = rsv(), rsv()
    decide_at([a], planner, T0 + 1)
    decide_at([b], planner, T0 + 2)
    records = {r.uid: r for r in (a, b)}
    tracker = standing.StandingTracker(interval=5)
    stale, due = tracker.refresh(records, planner, Policy(), T0 + 3)
    assert stale == {a.uid, b.uid} and due is None
    assert tracker.refresh(records, planner, Policy(), T0 + 3) == (set(), None)
    for record in (a, b):  # decided again: the stamp is what gets written
        status = record.status
        tracker.stamp(record.uid, status)
        record.status = status
    assert a.status["queuePosition"] == 1 and b.status["queuePosition"] == 2
    del records[a.uid]  # a was deleted: b moves up, but not before the interval has passed
    assert tracker.refresh(records, planner, Policy(), T0 + 4) == (set(), T0 + 8)
    assert tracker.refresh(records, planner, Policy(), T0 + 8) == ({b.uid}, None)
    assert tracker.current[b.uid].position == 1


def test_the_decision_key_is_the_actors_order() -> None:
    rng = random.Random(3)
    records = []
    for _ in range(40):
        r = rsv(name=f"n{rng.randint(0, 9)}", created=T0 + rng.randint(0, 5))
        status: dict[str, Any] = {"phase": rng.choice(["Pending", "Active", "Scheduled"])}
        if rng.random() < 0.7:
            status["firstRequestTime"] = format_time(T0 + rng.randint(0, 5))
        r.status = status
        r.deleting = rng.random() < 0.1
        records.append(r)
    actor = PoolActor.__new__(PoolActor)
    actor.records = {r.uid: r for r in records}
    assert actor._ordered(r.uid for r in records) == sorted(records, key=standing.decision_key)


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 2), st.integers(0, 3)),
                min_size=1, max_size=6))
def test_positions_are_one_to_n_and_bounds_never_precede_now(
        shapes: list[tuple[int, int, int]]) -> None:
    planner = Planner(R)
    decide_at([rsv({"duration": "2h"})], planner, T0)
    waiters = []
    for i, (hours, nodes, offset) in enumerate(shapes):
        w = rsv({"duration": f"{hours}h", "request": {"nodes": nodes, "exclusive": True}},
                created=T0 + offset)
        decide_at([w], planner, T0 + i)
        waiters.append(w)
    queued = [w for w in waiters if w.phase == "Pending"]
    result = standing.standings(waiters, planner, Policy(), T0 + 10)
    assert sorted(s.position for s in result.values()) == list(range(1, len(queued) + 1))
    for s in result.values():
        assert s.start_no_later_than is None or s.start_no_later_than >= T0 + 10
