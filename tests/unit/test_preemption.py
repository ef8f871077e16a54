"""Priorities, preemption planning and maintenance blocks in the time planner (issue 14).

Properties: a plan never displaces a booking of equal or higher priority (nor a started one
that is not preemptible, nor its requester's displacer); the set it returns is irredundant
and, when it says ``exact``, as small as a brute-force search over every subset finds;
displacing it makes the request fit, and invariant 1 (no core or GPU held twice in
overlapping time by an exclusive booking and any other) holds after every step. Maintenance
blocks always win: nothing is granted, extended or preempted into one."""

from __future__ import annotations

import contextlib
from itertools import combinations
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from respool.pool import (
    Block,
    Booking,
    IDset,
    InfeasibleRequest,
    InsufficientResources,
    Planner,
    Preemption,
    jobspec_from_shorthand,
    queue_key,
)


def make_R(ranks: int = 4, cores: int = 4, gpus: int = 0) -> dict[str, Any]:
    children = {"core": f"0-{cores - 1}"}
    if gpus:
        children["gpu"] = f"0-{gpus - 1}"
    return {
        "version": 1,
        "execution": {
            "R_lite": [{"rank": f"0-{ranks - 1}", "children": children}],
            "nodelist": [f"n[0-{ranks - 1}]"],
        },
    }


NODE = jobspec_from_shorthand(nodes=1, exclusive=True)
TWO_NODES = jobspec_from_shorthand(nodes=2, exclusive=True)


def overlaps(a: Booking, b: Booking) -> bool:
    a_end = float("inf") if a.end is None else a.end
    b_end = float("inf") if b.end is None else b.end
    return a.start < b_end and b.start < a_end


def shares_an_id(a: Booking, b: Booking) -> bool:
    ra, rb = a.R.to_resource_set(), b.R.to_resource_set()
    return any(
        ra.cores(rank) & rb.cores(rank) or ra.gpus(rank) & rb.gpus(rank)
        for rank in ra.ranks & rb.ranks
    )


def assert_invariant_1(planner: Planner) -> None:
    bookings = planner.bookings()
    for i, a in enumerate(bookings):
        for b in bookings[i + 1 :]:
            if "exclusive" in (a.mode, b.mode) and overlaps(a, b):
                assert not shares_an_id(a, b), (a, b)


# -- priorities ------------------------------------------------------------------------


def test_bookings_carry_priority_and_preemptible_through_moves_and_extensions() -> None:
    planner = Planner(make_R())
    booking = planner.reserve("a", NODE, 100, 200, "exclusive", priority=7, preemptible=True)
    assert (booking.priority, booking.preemptible) == (7, True)
    planner.extend("a", 250)
    assert planner.get("a").priority == 7  # type: ignore[union-attr]
    planner.move_earlier("a", NODE, 150, 10, "exclusive", 99)
    moved = planner.get("a")
    assert moved is not None and (moved.start, moved.priority, moved.preemptible) == (10, 7, True)
    generation = planner.generation
    assert planner.set_priority("a", 3, False).priority == 3
    assert planner.generation == generation + 1
    planner.set_priority("a", 3, False)  # no change, no new generation
    assert planner.generation == generation + 1
    restored = Planner(make_R())
    restored.restore("a", moved.R.to_dict(), 10, 160, "exclusive", 5, True)
    assert restored.get("a").priority == 5  # type: ignore[union-attr]


def test_queue_key_orders_by_priority_then_request_time_then_name() -> None:
    waiting = [("old-low", 0, 10.0), ("new-high", 100, 50.0), ("old-high", 100, 20.0),
               ("b", 0, 10.0)]
    ordered = sorted(waiting, key=lambda w: queue_key(w[1], w[2], w[0]))
    assert [w[0] for w in ordered] == ["old-high", "new-high", "b", "old-low"]


# -- preemption ------------------------------------------------------------------------


def full_pool(priorities: list[int], start: float = 100, end: float = 200) -> Planner:
    planner = Planner(make_R(ranks=len(priorities)))
    for rank, priority in enumerate(priorities):
        planner.reserve(f"b{rank}", NODE, start, end, "exclusive", priority=priority)
    return planner


def test_fits_already_needs_no_victims() -> None:
    planner = full_pool([0, 0])
    assert planner.plan_preemption("x", NODE, 200, 300, "exclusive", 10, 0) == Preemption(())


def test_displaces_the_fewest_lowest_priority_bookings() -> None:
    planner = full_pool([5, 1, 3, 0])
    plan = planner.plan_preemption("x", TWO_NODES, 150, 250, "exclusive", 10, 0)
    assert plan == Preemption(("b1", "b3"), True)


def test_never_equal_or_higher_priority() -> None:
    planner = full_pool([5, 5, 6, 9])
    assert planner.plan_preemption("x", NODE, 150, 250, "exclusive", 5, 0) is None
    assert planner.plan_preemption("x", NODE, 150, 250, "exclusive", 6, 0) == Preemption(
        ("b0",), True
    )


def test_started_bookings_only_when_preemptible() -> None:
    planner = Planner(make_R(ranks=2))
    planner.reserve("running", NODE, 0, 200, "exclusive", priority=0)
    planner.reserve("running-preemptible", NODE, 0, 200, "exclusive", priority=0,
                    preemptible=True)
    plan = planner.plan_preemption("x", NODE, 50, 100, "exclusive", 10, now=50)
    assert plan == Preemption(("running-preemptible",), True)
    # Before they start, both are merely Scheduled and either may move.
    plan = planner.plan_preemption("x", TWO_NODES, 50, 100, "exclusive", 10, now=-1)
    assert plan == Preemption(("running", "running-preemptible"), True)


def test_maintenance_is_never_displaced() -> None:
    planner = Planner(make_R(ranks=1))
    planner.set_maintenance([Block("fw", 100, 200, IDset("0"))])
    assert planner.plan_preemption("x", NODE, 150, 250, "exclusive", 10**9, 0) is None


def test_preempt_releases_scheduled_cuts_started_and_forbids_cascades() -> None:
    planner = Planner(make_R(ranks=2))
    planner.reserve("active", NODE, 0, 500, "exclusive", priority=1, preemptible=True)
    planner.reserve("scheduled", NODE, 100, 500, "exclusive", priority=1)
    plan = planner.plan_preemption("high", TWO_NODES, 130, 300, "exclusive", 10, now=50)
    assert plan == Preemption(("active", "scheduled"), True)
    released = planner.preempt("high", plan.victims, at=130, now=50)
    assert released == ["scheduled"]
    active = planner.get("active")
    assert active is not None and (active.start, active.end) == (0, 130)
    planner.reserve("high", TWO_NODES, 130, 300, "exclusive", priority=10)
    assert_invariant_1(planner)
    assert planner.displaced_by("scheduled") == {"high"}
    # "high" drops to a priority below its victim's: the victim still never displaces it.
    planner.set_priority("high", 0, False)
    assert planner.plan_preemption("scheduled", TWO_NODES, 130, 300, "exclusive", 1, 50) is None
    assert planner.copy().displaced_by("scheduled") == {"high"}
    # An explicit protected set (what a restarted operator reads from status) is honoured too.
    fresh = full_pool([0])
    assert fresh.plan_preemption("x", NODE, 150, 160, "exclusive", 9, 0, protected={"b0"}) is None


def test_shared_request_only_displaces_exclusive_neighbours() -> None:
    planner = Planner(make_R(ranks=1, cores=2))
    planner.reserve("s", jobspec_from_shorthand(slots=1), 0, 100, "shared", priority=0)
    planner.reserve("e", jobspec_from_shorthand(slots=1), 0, 100, "exclusive", priority=0)
    two = jobspec_from_shorthand(slots=2)
    plan = planner.plan_preemption("x", two, 10, 20, "shared", 5, now=0 - 1)
    assert plan == Preemption(("e",), True)


def test_large_candidate_sets_fall_back_to_an_irredundant_set() -> None:
    planner = full_pool([0] * 40)
    plan = planner.plan_preemption("x", jobspec_from_shorthand(nodes=3, exclusive=True),
                                   150, 160, "exclusive", 1, 0, budget=10)
    assert plan is not None and len(plan.victims) == 3 and not plan.exact


# -- maintenance -----------------------------------------------------------------------


def test_nothing_is_granted_into_maintenance_and_earliest_skips_it() -> None:
    planner = Planner(make_R(ranks=2))
    fw = Block("firmware", 100, 200, IDset("0-1"), "Drain", "BIOS update")
    assert planner.set_maintenance([fw]) == []
    with pytest.raises(InsufficientResources):
        planner.reserve("a", NODE, 150, 160, "exclusive")
    with pytest.raises(InsufficientResources):
        planner.reserve("s", jobspec_from_shorthand(slots=1), 50, 101, "shared")
    assert planner.earliest(NODE, 60, 50, "exclusive") == 200
    assert planner.longest(NODE, 0, "exclusive") == 100
    assert planner.maintenance_in_way(NODE, 150, 160, "exclusive") == [fw]
    assert planner.maintenance_in_way(NODE, 250, 260, "exclusive") == []
    assert planner.bookings() == []  # blocks are not bookings
    assert planner.capacity(150)["node"]["allocated"] == 0
    assert planner.maintenance() == [fw]
    assert planner.copy().maintenance() == [fw]


def test_maintenance_on_some_ranks_leaves_the_others() -> None:
    planner = Planner(make_R(ranks=2))
    planner.set_maintenance([Block("fw", 100, 200, IDset("0"))])
    booking = planner.reserve("a", NODE, 150, 160, "exclusive")
    assert booking.R.dumps().startswith("rank1/")
    with pytest.raises(InsufficientResources):
        planner.reserve("b", NODE, 150, 160, "exclusive")
    # The second node is free of bookings but under maintenance: named as what is in the way.
    assert [b.name for b in planner.maintenance_in_way(NODE, 150, 160, "exclusive")] == ["fw"]


def test_set_maintenance_names_the_bookings_in_its_way_and_extend_stops_at_it() -> None:
    planner = Planner(make_R(ranks=2))
    planner.reserve("before", NODE, 0, 100, "exclusive")
    planner.reserve("across", NODE, 50, 150, "exclusive")
    assert planner.set_maintenance([Block("fw", 120, 200, IDset("0-1"))]) == ["across"]
    assert [b.name for b in planner.maintenance_over("across")] == ["fw"]
    assert planner.maintenance_over("before") == []
    with pytest.raises(InsufficientResources, match="maintenance 'fw'"):
        planner.extend("before", 130)
    planner.extend("across", 120)  # cutting back to its start is always allowed
    assert planner.set_maintenance([]) == []
    planner.extend("before", 130)


def test_maintenance_rejects_bad_blocks() -> None:
    planner = Planner(make_R())
    with pytest.raises(ValueError, match="named twice"):
        planner.set_maintenance([Block("a", 0, 1, IDset("0")), Block("a", 2, 3, IDset("1"))])
    with pytest.raises(ValueError, match="mode"):
        planner.set_maintenance([Block("a", 0, 1, IDset("0"), "Nap")])
    with pytest.raises(ValueError):
        planner.set_maintenance([Block("a", 5, 1, IDset("0"))])


# -- properties -------------------------------------------------------------------------

booking_specs = st.lists(
    st.tuples(
        st.integers(0, 3),  # slots (0: a whole node)
        st.integers(0, 60),  # start
        st.integers(1, 60),  # length
        st.sampled_from(["exclusive", "shared"]),
        st.integers(0, 4),  # priority
        st.booleans(),  # preemptible
    ),
    max_size=9,
)


def request_of(slots: int) -> dict[str, Any]:
    if slots == 0:
        return NODE
    return jobspec_from_shorthand(slots=slots)


def build(ranks: int, specs: list[tuple[int, int, int, str, int, bool]]) -> Planner:
    planner = Planner(make_R(ranks=ranks, cores=3))
    for n, (slots, start, length, mode, priority, preemptible) in enumerate(specs):
        with contextlib.suppress(InsufficientResources):
            planner.reserve(f"b{n}", request_of(slots), start, start + length, mode,
                            priority=priority, preemptible=preemptible)
    return planner


def displaceable(planner: Planner, priority: int, now: float, protected: set[str]) -> list[str]:
    return [b.id for b in planner.bookings()
            if b.priority < priority and b.id not in protected
            and (b.start > now or b.preemptible)]


def fits_without(planner: Planner, removed: tuple[str, ...], request: dict[str, Any],
                 start: float, end: float, mode: str) -> bool:
    trial = planner.copy()
    for booking_id in removed:
        trial.release(booking_id)
    return trial.fits(request, start, end, mode)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ranks=st.integers(1, 3),
    specs=booking_specs,
    slots=st.integers(0, 4),
    start=st.integers(0, 60),
    length=st.integers(1, 60),
    mode=st.sampled_from(["exclusive", "shared"]),
    priority=st.integers(0, 5),
    now=st.integers(-1, 60),
    protect=st.integers(0, 8),
)
def test_preemption_plan_is_allowed_minimal_and_keeps_invariant_1(
    ranks: int, specs: list[tuple[int, int, int, str, int, bool]], slots: int, start: int,
    length: int, mode: str, priority: int, now: int, protect: int,
) -> None:
    planner = build(ranks, specs)
    assert_invariant_1(planner)
    request = request_of(slots)
    end = start + length
    protected = {f"b{protect}"}
    before = [(b.id, b.start, b.end) for b in planner.bookings()]
    generation = planner.generation
    plan = planner.plan_preemption("x", request, start, end, mode, priority, now, protected)
    assert [(b.id, b.start, b.end) for b in planner.bookings()] == before  # a query
    assert planner.generation == generation
    allowed = displaceable(planner, priority, now, protected)
    # Brute force: the smallest subset of what may be displaced that lets the request fit.
    smallest: tuple[str, ...] | None = None
    for size in range(len(allowed) + 1):
        for combo in combinations(allowed, size):
            if fits_without(planner, combo, request, start, end, mode):
                smallest = combo
                break
        if smallest is not None:
            break
    if smallest is None:
        assert plan is None
        return
    assert plan is not None
    victims = plan.victims
    by_id = {b.id: b for b in planner.bookings()}
    for victim in victims:
        booking = by_id[victim]
        assert booking.priority < priority  # never equal or higher priority
        assert victim not in protected
        assert booking.start > now or booking.preemptible
    assert plan.exact
    assert len(victims) == len(smallest)
    for victim in victims:  # irredundant: none of them could stay
        rest = tuple(v for v in victims if v != victim)
        assert not fits_without(planner, rest, request, start, end, mode)
    # Carrying it out makes the request fit, and nothing is ever held twice.
    planner.preempt("x", victims, at=max(start, now), now=now)
    assert_invariant_1(planner)
    if max(start, now) == start:
        planner.reserve("x", request, start, end, mode, priority=priority)
        assert_invariant_1(planner)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(
    ranks=st.integers(1, 3),
    specs=booking_specs,
    blocks=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 60), st.integers(1, 40)),
                    max_size=3),
    probes=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 80), st.integers(1, 40),
                              st.sampled_from(["exclusive", "shared"])), max_size=8),
)
def test_nothing_new_is_ever_granted_into_maintenance(
    ranks: int, specs: list[tuple[int, int, int, str, int, bool]],
    blocks: list[tuple[int, int, int]], probes: list[tuple[int, int, int, str]],
) -> None:
    planner = build(ranks, specs)
    windows = [Block(f"m{n}", s, s + d, IDset(str(rank % ranks)))
               for n, (rank, s, d) in enumerate(blocks)]
    planner.set_maintenance(windows)
    existing = {b.id for b in planner.bookings()}
    for n, (slots, start, length, mode) in enumerate(probes):
        request = request_of(slots)
        try:
            booking = planner.reserve_earliest(f"p{n}", request, length, start, mode,
                                               deadline=start + 200)
        except InfeasibleRequest:
            continue  # more than the pool has: never fits
        if booking is None:
            continue
        ranks_held = set(booking.R.to_resource_set().ranks)
        for block in windows:
            assert not (block.overlaps(booking.start, booking.end)
                        and ranks_held & set(block.ranks)), (booking, block)
        assert_invariant_1(planner)
    assert existing <= {b.id for b in planner.bookings()}


def test_lowest_priority_follows_bookings() -> None:
    planner = Planner(make_R())
    assert planner.lowest_priority() is None
    planner.reserve("a", NODE, 0, 10, "exclusive", priority=5)
    planner.reserve("b", NODE, 0, 10, "exclusive", priority=-3)
    assert planner.lowest_priority() == -3
    planner.set_priority("b", 7, False)
    assert planner.lowest_priority() == 5
    assert planner.copy().lowest_priority() == 5
    planner.release("a")
    planner.extend("b", 20)
    assert planner.lowest_priority() == 7
    planner.release("b")
    assert planner.lowest_priority() is None
