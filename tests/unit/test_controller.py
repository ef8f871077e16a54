"""Controller helpers that need no cluster: selectors, host->rank mapping, commit bookkeeping."""

from __future__ import annotations

import pytest

from respool.controller.actor import _frees, _newer_version
from respool.controller.lifecycle import mint_id
from respool.controller.pool_model import node_ranks
from respool.controller.selectors import selector_matches
from respool.pool import Planner, jobspec_from_shorthand


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        (None, {}, True),
        ({}, {"a": "b"}, True),
        ({"matchLabels": {"team": "x"}}, {"team": "x"}, True),
        ({"matchLabels": {"team": "x"}}, {"team": "y"}, False),
        ({"matchLabels": {"team": "x"}}, {}, False),
        ({"matchExpressions": [{"key": "t", "operator": "In", "values": ["a", "b"]}]},
         {"t": "b"}, True),
        ({"matchExpressions": [{"key": "t", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        ({"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["a"]}]},
         {"t": "a"}, False),
        ({"matchExpressions": [{"key": "t", "operator": "Exists"}]}, {"t": ""}, True),
        ({"matchExpressions": [{"key": "t", "operator": "DoesNotExist"}]}, {"t": ""}, False),
        ({"matchExpressions": [{"key": "t", "operator": "Sometimes"}]}, {"t": ""}, False),
        ({"matchLabels": {"a": "1"},
          "matchExpressions": [{"key": "b", "operator": "Exists"}]}, {"a": "1"}, False),
    ],
)
def test_selector_matches(selector: dict | None, labels: dict, expected: bool) -> None:
    assert selector_matches(selector, labels) is expected


def test_node_names_map_onto_sorted_ranks() -> None:
    R = {"version": 1, "execution": {
        "R_lite": [{"rank": "4-5", "children": {"core": "0"}},
                   {"rank": "0-1", "children": {"core": "0"}}],
        "nodelist": ["a[0-1]", "b7,b9"]}}
    assert node_ranks(R) == {"a0": 0, "a1": 1, "b7": 4, "b9": 5}
    assert node_ranks({"version": 1, "execution": {"R_lite": []}}) == {}


def test_frees_tells_a_release_or_a_move_from_a_grant_or_an_extension() -> None:
    planner = Planner({"version": 1, "execution": {
        "R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}]}})
    request = planner.parse(jobspec_from_shorthand(cores_per_slot=2))
    booked = planner.reserve("a", request, 100, 200, "exclusive")
    assert not _frees(None, booked)  # a grant frees nothing
    assert _frees(booked, None)  # a release does
    planner.extend("a", 300)
    longer = planner.get("a")
    assert longer is not None and not _frees(booked, longer)
    planner.extend("a", 150)
    shorter = planner.get("a")
    assert shorter is not None and _frees(longer, shorter)
    planner.release("a")
    moved = planner.reserve("a", request, 120, 220, "exclusive")
    assert _frees(booked, moved)


def test_resource_versions_never_go_back() -> None:
    assert _newer_version(None, "5") == "5"
    assert _newer_version("7", "5") == "7"
    assert _newer_version("7", "9") == "9"
    assert _newer_version("7", None) == "7"


def test_ids_follow_the_resource_version_and_never_repeat() -> None:
    uid = "0123456789ab-cdef-0123-4567-89abcdef0123"
    first = mint_id("rack", uid, {}, resource_version="100")
    assert first == "rack-0123456789ab-100"
    # A later mint, after the write that committed `first` (resourceVersion > 100), even if
    # `first` was cleared from status meanwhile.
    assert mint_id("rack", uid, {}, resource_version="101") != first
    # An older resourceVersion can never produce an ID at or below one still in status.
    assert mint_id("rack", uid, {"reservationId": first}, resource_version="50") == \
        "rack-0123456789ab-101"


def test_pool_status_summary_counts_and_says_why_it_is_not_ready() -> None:
    from respool.controller import pool_status
    from respool.controller.lifecycle import Reservation
    from respool.pool import Planner

    raw = {"metadata": {"name": "rack", "generation": 3}}
    planner = Planner({"version": 1, "execution": {
        "R_lite": [{"rank": "0-1", "children": {"core": "0-1"}}], "nodelist": ["n[0-1]"]}})
    active = Reservation(uid="a", namespace="t", name="a", generation=1, spec={},
                         status={"phase": "Active", "allocated": {"ranks": "1"}})
    pending = Reservation(uid="p", namespace="t", name="p", generation=1, spec={},
                          status={"phase": "Pending"})
    ready = pool_status.summary(raw, [active, pending], planner, problem="", deleting=False,
                                conditions=[], now=1_900_000_000.0)
    assert ready["reservations"]["Active"] == 1 and ready["reservations"]["Pending"] == 1
    assert ready["allocated"] == "1" and ready["observedGeneration"] == 3
    assert {c["type"]: c["status"] for c in ready["conditions"]}["Ready"] == "True"
    blocked = pool_status.summary(raw, [active], planner, problem="", deleting=True,
                                  conditions=ready["conditions"], now=1_900_000_001.0)
    stalled = {c["type"]: c for c in blocked["conditions"]}["Stalled"]
    assert stalled["status"] == "True" and stalled["reason"] == "InUse"
    broken = pool_status.summary(raw, [active], None, problem="invalid resources: x",
                                 deleting=False, conditions=[], now=1_900_000_001.0)
    assert {c["type"]: c for c in broken["conditions"]}["Stalled"]["reason"] == \
        "InvalidResources"
    assert "capacity" not in broken and broken["message"] == "invalid resources: x"
    assert pool_status.without_times(ready)["conditions"][0].get("lastTransitionTime") is None


def test_loop_lag_is_how_late_a_sleeper_wakes() -> None:
    import asyncio
    import time

    from respool.controller import metrics

    def observed() -> tuple[float, float]:
        samples = metrics.LOOP_LAG_SECONDS.collect()[0].samples
        count = next(s.value for s in samples if s.name.endswith("_count"))
        total = next(s.value for s in samples if s.name.endswith("_sum"))
        return count, total

    async def scenario() -> None:
        sampler = asyncio.create_task(metrics.sample_loop_lag(period=0.01))
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # a piece of work that holds the loop
        await asyncio.sleep(0.05)
        sampler.cancel()

    count, total = observed()
    asyncio.run(scenario())
    new_count, new_total = observed()
    assert new_count > count
    assert new_total - total >= 0.25  # the 0.3 s hold shows up as lag
