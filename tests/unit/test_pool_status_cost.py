"""The pool's status summary costs O(holders) (issue 11, item 6).

`pool_status.summary` once folded `allocated | IDset(ranks)` over every Active holder, which
is quadratic in the holders on a fragmented pool (4,000 holders on 16,384 ranks: seconds of
event loop per build). It now takes one union (`IDset.union_of`). These properties check that
the one-pass union is exactly what the fold gave, for idsets and for whole summaries, and
that the summary does not fold `|` at all (counted, not timed).
"""

from __future__ import annotations

from functools import reduce

from hypothesis import given
from hypothesis import strategies as st

from respool.controller import pool_status
from respool.controller.lifecycle import Reservation
from respool.pool import IDset, Planner

IDS = st.integers(min_value=0, max_value=300)
IDSETS = st.lists(IDS, max_size=20).map(IDset)


def _folded(sets: list[IDset]) -> IDset:
    """The old way: one `|` per set."""
    return reduce(lambda a, b: a | b, sets, IDset())


@given(st.lists(IDSETS, max_size=30))
def test_union_of_equals_the_fold(sets: list[IDset]) -> None:
    union = IDset.union_of(sets)
    assert union == _folded(sets)
    assert union.intervals == _folded(sets).intervals
    assert len(union) == len(set().union(*(set(s) for s in sets)))
    # Texts are accepted as well (what the records hold).
    assert IDset.union_of(str(s) for s in sets) == union


PHASES = st.sampled_from(["Active", "Scheduled", "Pending", "Failed", "Expired", None])


def _old_allocated(records: list[Reservation]) -> str:
    allocated = IDset()
    for record in records:
        if record.phase == "Active" and record.allocated_ranks:
            allocated = allocated | IDset(record.allocated_ranks)
    return str(allocated)


@given(st.lists(st.tuples(PHASES, IDSETS), max_size=40))
def test_summary_allocated_equals_the_old_fold(holders: list[tuple[str | None, IDset]]) -> None:
    planner = Planner({"version": 1, "execution": {
        "R_lite": [{"rank": "0-300", "children": {"core": "0-3"}}]}})
    records = []
    for index, (phase, ranks) in enumerate(holders):
        status: dict[str, object] = {}
        if phase is not None:
            status["phase"] = phase
        if ranks:
            status["allocated"] = {"ranks": str(ranks)}
        records.append(Reservation(uid=f"u{index}", namespace="t", name=f"r{index}",
                                   generation=1, spec={}, status=status))
    raw = {"metadata": {"name": "p", "generation": 1}}
    status = pool_status.summary(raw, records, planner, problem="", deleting=False,
                                 conditions=[], now=1_900_000_000.0)
    assert status["allocated"] == _old_allocated(records)


def test_summary_takes_one_union_however_many_holders(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Counted, not timed: 2,000 fragmented Active holders, and `IDset.__or__` (the fold's
    O(holders) step) is never called."""
    planner = Planner({"version": 1, "execution": {
        "R_lite": [{"rank": "0-8191", "children": {"core": "0"}}]}})
    records = [Reservation(uid=f"u{i}", namespace="t", name=f"r{i}", generation=1, spec={},
                           status={"phase": "Active", "allocated": {"ranks": f"{4 * i}"}})
               for i in range(2000)]
    calls = []
    original = IDset.__or__

    def counting_or(self: IDset, other: IDset) -> IDset:
        calls.append(1)
        return original(self, other)

    monkeypatch.setattr(IDset, "__or__", counting_or)
    status = pool_status.summary({"metadata": {"generation": 1}}, records, planner, problem="",
                                 deleting=False, conditions=[], now=1_900_000_000.0)
    assert len(calls) == 0
    assert status["allocated"] == ",".join(str(4 * i) for i in range(2000))
