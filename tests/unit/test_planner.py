"""The time planner: windows, modes, earliest-window search, extension, restore, and the
invariant that no exclusive booking ever overlaps anything on the same core or GPU."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from respool.pool import (
    Booking,
    IDset,
    InfeasibleRequest,
    InsufficientResources,
    Planner,
    ResourcePool,
    ResourceSet,
    jobspec_from_shorthand,
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
            "properties": {"red": "0-1" if ranks > 1 else "0"},
        },
    }


NODE = jobspec_from_shorthand(nodes=1, exclusive=True)
TWO_NODES = jobspec_from_shorthand(nodes=2, exclusive=True)
ALL_NODES = jobspec_from_shorthand(nodes=4, exclusive=True)
ONE_CORE = jobspec_from_shorthand(slots=1)


def snapshot(planner: Planner) -> tuple[Any, ...]:
    return (
        planner.generation,
        [(b.id, b.start, b.end, b.mode, b.R.dumps()) for b in planner.bookings()],
        str(planner.down()),
    )


# -- reserve / fits ----------------------------------------------------------------------


def test_reserve_grants_like_the_pool_and_stamps_the_window() -> None:
    planner = Planner(make_R())
    booking = planner.reserve("a", TWO_NODES, 100.0, 200.0, "exclusive")
    assert isinstance(booking, Booking)
    assert (booking.id, booking.start, booking.end, booking.mode) == (
        "a",
        100.0,
        200.0,
        "exclusive",
    )
    assert booking.R.dumps() == "rank[0-1]/core[0-3]"
    execution = booking.R.to_dict()["execution"]
    assert execution["starttime"] == 100.0 and execution["expiration"] == 200.0
    assert execution["nodelist"] == ["n[0-1]"] and execution["nslots"] == 2
    assert execution["properties"] == {"red": "0-1"}
    assert planner.get("a") == booking
    assert planner.bookings() == [booking]


def test_exclusive_blocks_everything_shared_overlaps_shared() -> None:
    planner = Planner(make_R(ranks=1))
    planner.reserve("s1", ONE_CORE, 0, 100, "shared")
    planner.reserve("s2", ONE_CORE, 0, 100, "shared")
    assert planner.get("s1").R.dumps() == planner.get("s2").R.dumps() == "rank0/core0"  # type: ignore[union-attr]
    assert not planner.fits(NODE, 50, 150, "exclusive")
    assert planner.fits(jobspec_from_shorthand(slots=3), 50, 150, "exclusive")  # cores 1-3 are free
    assert planner.fits(NODE, 100, 150, "exclusive")  # half-open windows: [0,100) ends at 100
    planner.reserve("x", jobspec_from_shorthand(slots=3), 50, 150, "exclusive")
    assert not planner.fits(jobspec_from_shorthand(slots=2), 60, 70, "shared")
    assert planner.fits(ONE_CORE, 60, 70, "shared")  # core0, shared with s1 and s2


def test_windows_respect_down_ranks_and_expiration() -> None:
    planner = Planner(make_R())
    planner.mark_down("0-2")
    assert planner.fits(NODE, 0, 10, "exclusive")
    assert not planner.fits(TWO_NODES, 0, 10, "exclusive")
    with pytest.raises(InsufficientResources):
        planner.reserve("a", TWO_NODES, 0, 10, "exclusive")  # feasible, just down
    planner.mark_up("all")
    planner.set_expiration(1000.0)
    assert planner.expiration == 1000.0
    assert planner.fits(NODE, 0, 1000, "exclusive")
    assert not planner.fits(NODE, 0, 1001, "exclusive")
    assert not planner.fits(NODE, 0, None, "exclusive")  # open-ended passes the expiration
    with pytest.raises(InsufficientResources, match="expiration"):
        planner.reserve("a", NODE, 500, 1500, "exclusive")


def test_reserve_errors_change_nothing() -> None:
    planner = Planner(make_R())
    planner.reserve("a", ALL_NODES, 0, 100, "exclusive")
    before = snapshot(planner)
    with pytest.raises(InfeasibleRequest):
        planner.reserve("b", jobspec_from_shorthand(nodes=5), 200, 300, "exclusive")
    with pytest.raises(InsufficientResources):
        planner.reserve("b", NODE, 50, 60, "exclusive")
    with pytest.raises(ValueError, match="already exists"):
        planner.reserve("a", NODE, 200, 300, "exclusive")
    with pytest.raises(ValueError, match="not after"):
        planner.reserve("b", NODE, 300, 300, "exclusive")
    with pytest.raises(ValueError, match="mode"):
        planner.reserve("b", NODE, 200, 300, "greedy")
    with pytest.raises(ValueError, match="booking id"):
        planner.reserve("", NODE, 200, 300, "exclusive")
    with pytest.raises(ValueError, match="start"):
        planner.reserve("b", NODE, float("nan"), 300, "exclusive")
    with pytest.raises(ValueError):
        planner.reserve("b", {"resources": []}, 200, 300, "exclusive")
    with pytest.raises(ValueError, match="unknown operator"):
        planner.reserve(
            "b", jobspec_from_shorthand(slots=1, constraints={"x": []}), 200, 300, "shared"
        )
    assert snapshot(planner) == before


def test_constraints_apply_in_windows() -> None:
    planner = Planner(make_R())
    red = jobspec_from_shorthand(nodes=2, exclusive=True, constraints={"properties": ["red"]})
    assert planner.reserve("a", red, 0, 10, "exclusive").R.dumps() == "rank[0-1]/core[0-3]"
    assert not planner.fits(red, 5, 15, "exclusive")
    not_red = jobspec_from_shorthand(nodes=2, exclusive=True, constraints={"properties": ["^red"]})
    assert planner.reserve("b", not_red, 5, 15, "exclusive").R.dumps() == "rank[2-3]/core[0-3]"


# -- earliest ----------------------------------------------------------------------------


def test_earliest_uses_booking_ends() -> None:
    planner = Planner(make_R())
    planner.reserve("a", TWO_NODES, 0, 100, "exclusive")
    planner.reserve("b", TWO_NODES, 50, 150, "exclusive")
    assert planner.earliest(TWO_NODES, 10, 0, "exclusive") == 0.0  # ranks 2-3 until 50
    assert planner.earliest(TWO_NODES, 60, 0, "exclusive") == 100.0  # the first end
    assert planner.earliest(TWO_NODES, 10, 60, "exclusive") == 100.0
    assert planner.earliest(NODE, 10, 60, "exclusive") == 100.0
    assert planner.earliest(ALL_NODES, 10, 0, "exclusive") == 150.0
    assert planner.earliest(ALL_NODES, 10, 0, "exclusive", deadline=149.0) is None
    assert planner.earliest(ALL_NODES, 10, 0, "exclusive", deadline=150.0) == 150.0
    assert planner.earliest(TWO_NODES, 10, 200, "exclusive") == 200.0  # `after` itself
    assert planner.earliest(TWO_NODES, None, 0, "exclusive") == 100.0  # open-ended
    assert planner.earliest(ALL_NODES, None, 0, "exclusive") == 150.0


def test_earliest_with_nothing_possible() -> None:
    planner = Planner(make_R())
    assert planner.earliest(jobspec_from_shorthand(nodes=5), 10, 0, "exclusive") is None
    planner.mark_down("all")
    assert planner.earliest(NODE, 10, 0, "exclusive") is None
    planner.mark_up("all")
    planner.set_expiration(100.0)
    assert planner.earliest(NODE, 200, 0, "exclusive") is None
    planner.reserve("a", ALL_NODES, 0, 95, "exclusive")
    assert planner.earliest(NODE, 10, 0, "exclusive") is None  # 95 + 10 > 100
    assert planner.earliest(NODE, 5, 0, "exclusive") == 95.0
    discrete = jobspec_from_shorthand(slots=1)
    discrete["resources"][0]["count"] = "1,3"
    assert planner.earliest(discrete, 1, 0, "exclusive") is None
    with pytest.raises(ValueError, match="duration"):
        planner.earliest(NODE, 0, 0, "exclusive")
    with pytest.raises(ValueError, match="after"):
        planner.earliest(NODE, 1, -1, "exclusive")


def test_reserve_earliest() -> None:
    planner = Planner(make_R())
    planner.reserve("a", ALL_NODES, 0, 100, "exclusive")
    booking = planner.reserve_earliest("b", NODE, 50, 10, "exclusive")
    assert booking is not None and (booking.start, booking.end) == (100.0, 150.0)
    assert planner.reserve_earliest("c", ALL_NODES, 50, 10, "exclusive", deadline=120) is None
    assert planner.get("c") is None
    with pytest.raises(InfeasibleRequest):
        planner.reserve_earliest("c", jobspec_from_shorthand(nodes=9), 50, 10, "exclusive")
    with pytest.raises(ValueError, match="already exists"):
        planner.reserve_earliest("b", NODE, 50, 10, "exclusive")


# -- extend / release --------------------------------------------------------------------


def test_extend() -> None:
    planner = Planner(make_R())
    planner.reserve("a", TWO_NODES, 0, 100, "exclusive")
    planner.reserve("b", TWO_NODES, 0, 50, "exclusive")
    planner.reserve("c", TWO_NODES, 120, 200, "exclusive")  # lands on a's nodes (0-1)
    assert planner.get("c").R.dumps() == "rank[0-1]/core[0-3]"  # type: ignore[union-attr]
    planner.extend("a", 120)
    assert planner.get("a").end == 120.0  # type: ignore[union-attr]
    assert planner.get("a").R.to_dict()["execution"]["expiration"] == 120.0  # type: ignore[union-attr]
    generation = planner.generation
    with pytest.raises(InsufficientResources, match="conflicts with booking\\(s\\) c"):
        planner.extend("a", 121)
    with pytest.raises(InsufficientResources):
        planner.extend("a", None)
    assert planner.generation == generation and planner.get("a").end == 120.0  # type: ignore[union-attr]
    planner.extend("b", 500)  # nothing else on ranks 2-3
    planner.extend("b", 10)  # shortening is always allowed
    with pytest.raises(ValueError, match="not after"):
        planner.extend("b", 0)
    with pytest.raises(ValueError, match="unknown booking"):
        planner.extend("zz", 10)
    planner.set_expiration(1000)
    with pytest.raises(InsufficientResources, match="expiration"):
        planner.extend("b", 2000)


def test_shared_extension_may_overlap_shared_only() -> None:
    planner = Planner(make_R(ranks=1))
    planner.reserve("s1", ONE_CORE, 0, 10, "shared")
    planner.reserve("s2", ONE_CORE, 10, 20, "shared")
    planner.extend("s1", 20)  # overlapping another shared booking is fine
    planner.reserve("x", ONE_CORE, 30, 40, "exclusive")  # core0 again, after s1/s2
    assert planner.get("x").R.dumps() == "rank0/core0"  # type: ignore[union-attr]
    with pytest.raises(InsufficientResources, match="x"):
        planner.extend("s1", 35)


def test_release() -> None:
    planner = Planner(make_R())
    booking = planner.reserve("a", ALL_NODES, 0, 100, "exclusive")
    generation = planner.generation
    assert planner.release("a") == booking
    assert planner.generation == generation + 1
    assert planner.release("a") is None
    assert planner.generation == generation + 1
    assert planner.fits(ALL_NODES, 0, 100, "exclusive")


# -- restore and determinism -------------------------------------------------------------


def test_restore_rebuilds_the_same_planner() -> None:
    rng = random.Random(11)
    original = Planner(make_R(ranks=8, cores=4, gpus=2))
    requests = [NODE, ONE_CORE, jobspec_from_shorthand(slots=3, gpus_per_slot=1), TWO_NODES]
    for i in range(40):
        start = rng.randrange(0, 500)
        with contextlib.suppress(InsufficientResources):
            original.reserve(
                f"b{i}",
                rng.choice(requests),
                start,
                start + rng.randrange(1, 100),
                rng.choice(["exclusive", "shared"]),
            )
    bookings = original.bookings()
    rng.shuffle(bookings)
    rebuilt = Planner(make_R(ranks=8, cores=4, gpus=2))
    for b in bookings:
        rebuilt.restore(b.id, b.R.to_dict(), b.start, b.end, b.mode)
    assert [(b.id, b.R.dumps()) for b in rebuilt.bookings()] == [
        (b.id, b.R.dumps()) for b in original.bookings()
    ]
    for request in requests:
        for mode in ("exclusive", "shared"):
            assert rebuilt.earliest(request, 50, 0, mode) == original.earliest(request, 50, 0, mode)
    a = original.reserve_earliest("next", TWO_NODES, 30, 0, "exclusive")
    b = rebuilt.reserve_earliest("next", TWO_NODES, 30, 0, "exclusive")
    assert a is not None and b is not None
    assert (a.start, a.R.dumps()) == (b.start, b.R.dumps())


def test_restore_refuses_conflicts_and_unknown_resources() -> None:
    planner = Planner(make_R())
    planner.mark_down("3")
    first = planner.reserve("a", NODE, 0, 100, "exclusive")
    before = snapshot(planner)
    with pytest.raises(ValueError, match="conflicts with booking\\(s\\) a"):
        planner.restore("b", first.R.to_dict(), 50, 60, "shared")
    with pytest.raises(ValueError, match="not in resource pool"):
        planner.restore("b", make_R(ranks=9), 200, 300, "exclusive")
    with pytest.raises(ValueError, match="not in rank"):
        planner.restore("b", make_R(ranks=1, cores=9), 200, 300, "exclusive")
    with pytest.raises(ValueError, match="already exists"):
        planner.restore("a", first.R.to_dict(), 200, 300, "exclusive")
    with pytest.raises(ValueError):
        planner.restore("b", "{", 200, 300, "exclusive")
    assert snapshot(planner) == before
    down_rank = {
        "version": 1,
        "execution": {"R_lite": [{"rank": "3", "children": {"core": "0-3"}}]},
    }
    planner.restore("c", down_rank, 0, None, "exclusive")  # down ranks are fine
    planner.restore("d", first.R, 100, 200, "shared")  # a ResourcePool works too
    planner.restore("e", first.R.to_dict(), 100, 200, "shared")  # shared with shared


def test_planner_from_a_pool_keeps_down_state() -> None:
    pool = ResourcePool(make_R())
    pool.mark_down("1")
    planner = Planner(pool)
    assert planner.down() == IDset("1")
    assert planner.pool is not pool


# -- rank state --------------------------------------------------------------------------


def test_mark_down_reports_affected_bookings() -> None:
    planner = Planner(make_R())
    planner.reserve("a", NODE, 0, 10, "exclusive")  # rank0
    planner.reserve("b", jobspec_from_shorthand(nodes=2), 0, 10, "shared")  # ranks 0-1? worst fit
    planner.reserve("c", NODE, 20, 30, "exclusive")
    generation = planner.generation
    affected = planner.mark_down("1")
    holders = [b.id for b in planner.bookings() if 1 in b.R.ranks]
    assert affected == holders
    assert planner.generation == generation + 1
    planner.mark_up("1")
    assert planner.down() == IDset()


def test_remove_ranks_releases_bookings_on_them() -> None:
    planner = Planner(make_R())
    planner.reserve("a", NODE, 0, 10, "exclusive")  # rank0
    planner.reserve("b", ALL_NODES, 20, 30, "exclusive")
    planner.reserve("c", jobspec_from_shorthand(nodes=1), 0, 10, "exclusive")  # rank1
    released = planner.remove_ranks("0")
    assert sorted(b.id for b in released) == ["a", "b"]
    assert [b.id for b in planner.bookings()] == ["c"]
    assert planner.pool.ranks == IDset("1-3")
    assert not planner.fits(ALL_NODES, 100, 200, "exclusive")


# -- time views --------------------------------------------------------------------------


def test_allocated_capacity_next_event() -> None:
    planner = Planner(make_R(gpus=1))
    planner.reserve("a", NODE, 10, 20, "exclusive")
    planner.reserve("b", jobspec_from_shorthand(slots=2), 15, None, "shared")
    planner.mark_down("3")
    at = planner.allocated_at(16)
    assert isinstance(at, ResourceSet)
    assert at.dumps() == "rank0/core[0-3],gpu0 rank1/core[0-1]"
    assert list(at.nodelist) == ["n0", "n1"]
    assert planner.allocated_at(20).dumps() == "rank1/core[0-1]"
    assert planner.allocated_at(9).dumps() == ""
    assert planner.capacity(16) == {
        "core": {"total": 16, "allocated": 6, "down": 4, "free": 6},
        "gpu": {"total": 4, "allocated": 1, "down": 1, "free": 2},
        "node": {"total": 4, "allocated": 2, "down": 1, "free": 1},
    }
    assert planner.next_event(0) == 10.0
    assert planner.next_event(10) == 15.0
    assert planner.next_event(15) == 20.0
    assert planner.next_event(20) is None


def test_generation_bumps_on_mutation_only() -> None:
    planner = Planner(make_R())
    planner.fits(NODE, 0, 10, "exclusive")
    planner.earliest(NODE, 10, 0, "exclusive")
    planner.capacity(0)
    planner.allocated_at(0)
    planner.check_feasibility(planner.parse(NODE))
    assert planner.generation == 0
    planner.reserve("a", NODE, 0, 10, "exclusive")
    planner.extend("a", 20)
    planner.release("a")
    planner.mark_down("0")
    planner.mark_up("0")
    planner.set_expiration(0)
    assert planner.generation == 6


# -- properties --------------------------------------------------------------------------

REQUESTS = [
    jobspec_from_shorthand(nodes=1, exclusive=True),
    jobspec_from_shorthand(nodes=2, exclusive=True),
    jobspec_from_shorthand(slots=1),
    jobspec_from_shorthand(slots=3, cores_per_slot=2),
    jobspec_from_shorthand(nodes=2, slots=1, cores_per_slot=2, gpus_per_slot=1),
    jobspec_from_shorthand(slots=2, gpus_per_slot=1),
]

operations = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "earliest", "extend", "release", "restore", "down", "up"]),
        st.integers(0, len(REQUESTS) - 1),
        st.integers(0, 40),  # start
        st.integers(1, 20),  # length
        st.sampled_from(["exclusive", "shared"]),
        st.booleans(),  # open-ended
        st.integers(0, 5),  # rank / booking pick
    ),
    max_size=40,
)


def overlaps(a: Booking, b: Booking) -> bool:
    a_end = float("inf") if a.end is None else a.end
    b_end = float("inf") if b.end is None else b.end
    return a.start < b_end and b.start < a_end


def shares_an_id(a: Booking, b: Booking) -> bool:
    ra, rb = a.R.to_resource_set(), b.R.to_resource_set()
    for rank in ra.ranks & rb.ranks:
        if ra.cores(rank) & rb.cores(rank) or ra.gpus(rank) & rb.gpus(rank):
            return True
    return False


def reference_grant(
    planner: Planner, request: dict[str, Any], start: float, end: float | None, mode: str
) -> str | None:
    """What a plain ResourcePool grants with the blocking bookings registered on it."""
    pool = ResourcePool(planner.pool.to_dict())
    down = planner.down()
    if down:
        pool.mark_down(down)
    union: dict[int, tuple[set[int], set[int]]] = {}
    probe = Booking("probe", start, end, mode, pool)
    for other in planner.bookings():
        if not overlaps(probe, other) or (mode == "shared" and other.mode == "shared"):
            continue
        rs = other.R.to_resource_set()
        for rank in rs.ranks:
            c, g = union.setdefault(rank, (set(), set()))
            c |= set(rs.cores(rank))
            g |= set(rs.gpus(rank))
    for rank, (c, g) in union.items():
        children = {"core": str(IDset(sorted(c)))}
        if g:
            children["gpu"] = str(IDset(sorted(g)))
        pool.register_alloc(
            ("blocked", rank),
            {"version": 1, "execution": {"R_lite": [{"rank": str(rank), "children": children}]}},
        )
    try:
        return pool.alloc("probe", request).dumps()
    except (InsufficientResources, InfeasibleRequest):
        return None


MIXED_R = {
    "version": 1,
    "execution": {
        "R_lite": [
            {"rank": "0", "children": {"core": "0-3", "gpu": "0-1"}},
            {"rank": "1", "children": {"core": "0-7"}},
            {"rank": "2", "children": {"core": "0-5", "gpu": "0"}},
            {"rank": "3", "children": {"core": "0-3", "gpu": "0-1"}},
        ]
    },
}


def brute_capacity(planner: Planner, t: float) -> dict[str, dict[str, int]]:
    """capacity(t) computed the slow way, rank by rank, from the bookings."""
    topology = planner.pool.to_resource_set()
    down = set(planner.down())
    held: dict[int, tuple[set[int], set[int]]] = {}
    for booking in planner.bookings():
        if booking.covers(t):
            rs = booking.R.to_resource_set()
            for rank in rs.ranks:
                cores, gpus = held.setdefault(rank, (set(), set()))
                cores |= set(rs.cores(rank))
                gpus |= set(rs.gpus(rank))
    result = {
        k: {"total": 0, "allocated": 0, "down": 0, "free": 0} for k in ("core", "gpu", "node")
    }
    for rank in topology.ranks:
        cores, gpus = held.get(rank, (set(), set()))
        per_kind = {
            "core": (len(topology.cores(rank)), len(cores)),
            "gpu": (len(topology.gpus(rank)), len(gpus)),
            "node": (1, 1 if cores or gpus else 0),
        }
        for kind, (total, used) in per_kind.items():
            entry = result[kind]
            entry["total"] += total
            entry["allocated"] += used
            if rank in down:
                entry["down"] += total
            else:
                entry["free"] += total - used
    return result


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([make_R(ranks=4, cores=4, gpus=2), MIXED_R]), operations)
def test_random_bookings_never_overlap_an_exclusive_booking(
    R: dict[str, Any], ops: list[tuple[Any, ...]]
) -> None:
    planner = Planner(R)
    shadow = Planner(R)  # rebuilt through restore
    last_generation = 0
    for n, (op, req_index, start, length, mode, open_ended, pick) in enumerate(ops):
        request = REQUESTS[req_index]
        end = None if open_ended else float(start + length)
        existing = planner.bookings()
        if op == "reserve":
            expected = reference_grant(planner, request, start, end, mode)
            assert planner.fits(request, start, end, mode) == (expected is not None)
            try:
                booking = planner.reserve(f"b{n}", request, start, end, mode)
                assert booking.R.dumps() == expected
            except InsufficientResources:
                assert expected is None
        elif op == "earliest":
            found = planner.earliest(request, length, start, mode)
            # conservative backfill, the slow way: try `after` and every end after it
            ends = sorted({b.end for b in existing if b.end is not None and b.end > start})
            expected = next(
                (t for t in [float(start), *ends] if planner.fits(request, t, t + length, mode)),
                None,
            )
            assert found == expected
            if found is not None:
                planner.reserve(f"b{n}", request, found, found + length, mode)
        elif op == "extend" and existing:
            target = existing[pick % len(existing)]
            with contextlib.suppress(InsufficientResources):
                planner.extend(
                    target.id, end if end is None or end > target.start else target.start + length
                )
        elif op == "release" and existing:
            planner.release(existing[pick % len(existing)].id)
        elif op == "restore":
            # restoring another planner's grants must refuse exactly the conflicting ones
            candidate = Planner(R)
            try:
                grant = candidate.reserve("tmp", request, start, end, mode)
            except InsufficientResources:
                continue
            probe = Booking(f"r{n}", float(start), end, mode, grant.R)
            conflict = any(
                overlaps(probe, b) and shares_an_id(probe, b) and "exclusive" in (mode, b.mode)
                for b in existing
            )
            try:
                planner.restore(f"r{n}", grant.R.to_dict(), start, end, mode)
                assert not conflict
            except ValueError:
                assert conflict
        elif op == "down":
            planner.mark_down(str(pick % 4))
        elif op == "up":
            planner.mark_up(str(pick % 4))
        assert planner.generation >= last_generation
        last_generation = planner.generation
        bookings = planner.bookings()
        for i, a in enumerate(bookings):
            for b in bookings[i + 1 :]:
                if "exclusive" in (a.mode, b.mode) and overlaps(a, b):
                    assert not shares_an_id(a, b), (a, b)
    for t in (0.0, 5.0, 17.5, 40.0):
        assert planner.capacity(t) == brute_capacity(planner, t)
    # the surviving bookings restore cleanly into a fresh planner, in any order
    for b in reversed(planner.bookings()):
        shadow.restore(b.id, b.R.to_dict(), b.start, b.end, b.mode)
    assert [x.id for x in shadow.bookings()] == [x.id for x in planner.bookings()]


def test_move_earlier_that_finds_nothing_changes_nothing() -> None:
    # Issue 11, item 4: a "move earlier" that could not move once released and re-booked the
    # window, bumping the generation as if capacity had changed.
    planner = Planner(make_R())
    planner.reserve("blocker", ALL_NODES, 0, 100, "exclusive")
    held = planner.reserve_earliest("later", TWO_NODES, 50, 0, "exclusive")
    assert held is not None and held.start == 100
    before = snapshot(planner)
    assert planner.move_earlier("later", TWO_NODES, 50, 10, "exclusive", deadline=99) is None
    assert snapshot(planner) == before
    assert planner.get("later") is held
    # Once the blocker ends earlier, the same call moves it, and that does change things.
    planner.extend("blocker", 20)
    moved = planner.move_earlier("later", TWO_NODES, 50, 10, "exclusive", deadline=99)
    assert moved is not None and (moved.start, moved.end) == (20, 70)
    assert planner.generation > before[0]
    assert planner.get("later") is moved


def test_move_earlier_does_not_count_its_own_hold() -> None:
    planner = Planner(make_R())
    planner.reserve("blocker", TWO_NODES, 0, 100, "exclusive")
    held = planner.reserve("later", TWO_NODES, 100, 150, "exclusive")
    # From 40 the window [40, 90) would overlap its own hold [100, 150)? No: it overlaps the
    # blocker. From 0 on the two free ranks it fits (its own ranks are not in the way).
    free_now = planner.move_earlier("later", TWO_NODES, 50, 0, "exclusive", deadline=99)
    assert free_now is not None and free_now.start == 0
    assert held.R.dumps() != "" and planner.get("later") is free_now
    with pytest.raises(ValueError):
        planner.move_earlier("nobody", TWO_NODES, 50, 0, "exclusive", deadline=99)
