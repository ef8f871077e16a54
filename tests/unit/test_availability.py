"""Availability without side effects (issue 11): the planner's read-only queries, and the
answers rebuilt from a pool and its reservations' statuses."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from respool.api import format_time
from respool.client.availability import planner_for, query
from respool.controller.lifecycle import PoolContext, Reservation, decide
from respool.pool import Planner, jobspec_from_shorthand

T0 = 1_900_000_000.0
R = {"version": 1, "execution": {"R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}],
                                 "nodelist": ["node[0-1]"]}}


def one_node() -> Any:
    return jobspec_from_shorthand(nodes=1, slots=1, cores_per_slot=4)


def test_longest_window_from_a_start() -> None:
    planner = Planner(R)
    request = planner.parse(jobspec_from_shorthand(nodes=2, cores_per_slot=4))
    assert planner.longest(request, T0, "exclusive") is None  # nothing in the way
    planner.reserve("later", planner.parse(one_node()), T0 + 600, T0 + 1200, "exclusive")
    assert planner.longest(request, T0, "exclusive") == 600
    assert planner.longest(request, T0 + 600, "exclusive") == 0
    assert planner.longest(request, T0 + 1200, "exclusive") is None
    small = planner.parse(one_node())
    assert planner.longest(small, T0, "exclusive") is None  # the other node stays free
    planner.set_expiration(T0 + 3600)
    assert planner.longest(small, T0, "exclusive") == 3600
    assert planner.longest(small, T0 + 3600, "exclusive") == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(1, 10), st.integers(1, 2)),
                max_size=6),
       st.integers(0, 25))
def test_longest_agrees_with_fits(bookings: list[tuple[int, int, int]], start: int) -> None:
    planner = Planner(R)
    for index, (begin, length, nodes) in enumerate(bookings):
        request = planner.parse(jobspec_from_shorthand(nodes=nodes, cores_per_slot=4))
        if planner.fits(request, begin, begin + length, "exclusive"):
            planner.reserve(f"b{index}", request, begin, begin + length, "exclusive")
    request = planner.parse(one_node())
    longest = planner.longest(request, start, "exclusive")
    if longest is None:
        assert planner.fits(request, start, start + 1000, "exclusive")
    elif longest == 0:
        assert not planner.fits(request, start, start + 1, "exclusive")
    else:
        assert planner.fits(request, start, start + longest, "exclusive")
        assert not planner.fits(request, start, start + longest + 1, "exclusive")


def test_free_over_time_steps_at_bookings() -> None:
    planner = Planner(R)
    planner.reserve("a", planner.parse(one_node()), T0 + 10, T0 + 20, "exclusive")
    steps = planner.free_over_time(T0, T0 + 30)
    assert [(t - T0, capacity["node"]["free"]) for t, capacity in steps] == [
        (0, 2), (10, 1), (20, 2)]
    assert planner.bookings()[0].id == "a"  # a query books nothing


def _objects(now: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A pool and reservations as the API server holds them, decided by the real lifecycle."""
    planner, ctx = Planner(R), PoolContext(name="rack")
    objects = []
    for index, spec in enumerate([
        {"request": {"nodes": 1, "coresPerSlot": 4}, "duration": "1h"},
        {"request": {"nodes": 1, "coresPerSlot": 4}, "startTime": format_time(now + 1800),
         "duration": "1h"},
        {"request": {"nodes": 2, "coresPerSlot": 4}, "duration": "1h"},  # books after both
    ]):
        full = {"pool": "rack", **spec}
        rsv = Reservation(uid=f"uid-{index}", namespace="team", name=f"r{index}", generation=1,
                          spec=full, status={})
        outcome = decide(rsv, ctx, planner, now)
        objects.append({"metadata": {"uid": rsv.uid, "name": rsv.name, "namespace": "team",
                                     "generation": 1}, "spec": full, "status": outcome.status})
    pool = {"metadata": {"name": "rack"}, "spec": {"resources": R}, "status": {"down": ""}}
    return pool, objects


def test_rebuilt_planner_holds_what_the_statuses_say() -> None:
    pool, objects = _objects(T0)
    assert [o["status"]["phase"] for o in objects] == ["Active", "Scheduled", "Scheduled"]
    planner = planner_for(pool, objects)
    assert sorted(b.id for b in planner.bookings()) == ["uid-0", "uid-1", "uid-2"]
    other_pool = [{**o, "spec": {**o["spec"], "pool": "elsewhere"}} for o in objects]
    assert planner_for(pool, other_pool).bookings() == []


def test_query_answers_like_the_operator_and_creates_nothing() -> None:
    pool, objects = _objects(T0)
    whole = {"request": {"nodes": 2, "coresPerSlot": 4}}
    found = query(pool, objects, whole, T0, 3600)
    assert not found.available
    # r2 (the same request) was booked once r0 and r1 end; the next such window follows it.
    assert objects[2]["status"]["startTime"] == format_time(T0 + 5400)
    assert found.earliest_start == T0 + 9000 and found.earliest_end == T0 + 12600
    assert found.longest_now == 0
    one = query(pool, objects, {"request": {"nodes": 1, "coresPerSlot": 4}}, T0, 600)
    assert one.available and one.longest_now == 1800  # until r1's window starts
    assert one.free[0][1]["node"]["free"] == 1


def test_query_refuses_what_the_operator_refuses() -> None:
    pool, objects = _objects(T0)
    with pytest.raises(ValueError, match=r"request\.slots"):
        query(pool, objects, {"request": {"slots": 0}}, T0, 60)
    with pytest.raises(OSError, match=r"node"):
        query(pool, objects, {"request": {"nodes": 3}}, T0, 60)
