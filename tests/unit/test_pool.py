"""ResourcePool: every method of the Flux seed, the selection policy, the error split, the
generation rules, and each deliberate deviation from upstream (docs/engine.md)."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from typing import Any

import pytest

import respool.pool as engine
from respool.pool import (
    IDset,
    InfeasibleRequest,
    InsufficientResources,
    ResourcePool,
    ResourceSet,
    jobspec_from_shorthand,
)


def make_R(
    ranks: str = "0-3", cores: str = "0-3", gpus: str | None = None, nodelist: str | None = "n[0-3]"
) -> dict[str, Any]:
    children = {"core": cores}
    if gpus:
        children["gpu"] = gpus
    execution: dict[str, Any] = {"R_lite": [{"rank": ranks, "children": children}]}
    if nodelist:
        execution["nodelist"] = [nodelist]
    return {"version": 1, "execution": execution}


FLUX_EXAMPLE = {
    "version": 1,
    "execution": {
        "R_lite": [
            {"rank": "0-1", "children": {"core": "0-7"}},
            {"rank": "2", "children": {"core": "0-7", "gpu": "0-1"}},
        ],
        "nodelist": ["cn[10-12]"],
        "properties": {"bigmem": "1", "+debugq": "0-2"},
        "starttime": 0,
        "expiration": 1760003600.0,
    },
    "scheduling": {"writer": "mysched"},
}


def cores(n: int = 1, **kwargs: Any) -> dict[str, Any]:
    return jobspec_from_shorthand(slots=n, **kwargs)


def nodes(n: int, **kwargs: Any) -> dict[str, Any]:
    return jobspec_from_shorthand(nodes=n, **kwargs)


def held(pool: ResourcePool) -> str:
    return pool.copy_allocated().dumps()


# -- construction and the public surface ------------------------------------------------


def test_public_names_and_exceptions() -> None:
    for name in (
        "IDset",
        "Hostlist",
        "ResourceSet",
        "ResourcePool",
        "InfeasibleRequest",
        "InsufficientResources",
        "ResourceRequest",
        "jobspec_from_shorthand",
        "Planner",
        "Booking",
    ):
        assert hasattr(engine, name), name
    assert issubclass(InfeasibleRequest, OSError)
    assert issubclass(InsufficientResources, OSError)
    assert ResourcePool.InfeasibleRequest is InfeasibleRequest
    assert ResourcePool.InsufficientResources is InsufficientResources
    for method in (
        "alloc",
        "check_feasibility",
        "copy",
        "copy_allocated",
        "copy_down",
        "dumps",
        "free",
        "job_end_times",
        "mark_down",
        "mark_up",
        "parse_resource_request",
        "register_alloc",
        "remove_ranks",
        "set_expiration",
        "set_starttime",
        "to_dict",
        "to_resource_set",
        "update_expiration",
    ):
        assert callable(getattr(ResourcePool, method)), method
    assert isinstance(ResourcePool.generation, property)
    assert isinstance(ResourcePool.expiration, property)


def test_constructor_forms() -> None:
    from_dict = ResourcePool(FLUX_EXAMPLE)
    from_json = ResourcePool(json.dumps(FLUX_EXAMPLE))
    assert from_dict.to_dict() == from_json.to_dict()
    assert from_dict.generation == 0
    assert held(from_dict) == ""
    assert ResourcePool(from_dict).to_dict() == from_dict.to_dict()
    assert ResourcePool(ResourceSet(FLUX_EXAMPLE)).to_dict() == from_dict.to_dict()
    assert ResourcePool().dumps() == ""


def test_dumps_and_to_dict() -> None:
    pool = ResourcePool(FLUX_EXAMPLE)
    assert pool.dumps() == "rank[0-1]/core[0-7] rank2/core[0-7],gpu[0-1]"
    assert str(pool) == pool.dumps()
    assert pool.to_dict()["execution"]["properties"] == {"+debugq": "0-2", "bigmem": "1"}
    assert pool.to_dict()["scheduling"] == {"writer": "mysched"}
    assert pool.ranks == IDset("0-2")
    assert list(pool.nodelist) == ["cn10", "cn11", "cn12"]
    assert (pool.count("node"), pool.count("core"), pool.count("gpu")) == (3, 24, 2)


# -- alloc: the result R and the selection policy ---------------------------------------


def test_alloc_result_is_an_allocation_R() -> None:
    pool = ResourcePool(FLUX_EXAMPLE)
    granted = pool.alloc(1, cores(2, constraints={"properties": ["bigmem"]}))
    assert granted.to_dict() == {
        "version": 1,
        "execution": {
            "R_lite": [{"rank": "1", "children": {"core": "0-1"}}],
            "starttime": 0.0,
            "expiration": 0.0,
            "nslots": 2,
            "nodelist": ["cn11"],
            "properties": {"bigmem": "1"},  # '+debugq' is instance-local: dropped
        },
        "scheduling": {"writer": "mysched"},
    }
    assert granted.generation == 0
    assert isinstance(granted, ResourcePool)


def test_alloc_result_synthesizes_nodelist() -> None:
    pool = ResourcePool(make_R(nodelist=None))
    granted = pool.alloc(1, cores())
    assert granted.to_dict()["execution"]["nodelist"] == ["rank0"]
    assert "nodelist" not in pool.to_dict()["execution"]


def test_worst_fit_ties_to_lowest_rank_and_lowest_ids() -> None:
    pool = ResourcePool(make_R())
    grants = [pool.alloc(i, cores()).dumps() for i in range(6)]
    # emptiest node first, ties to the lower rank, lowest free core on it
    assert grants == [
        "rank0/core0",
        "rank1/core0",
        "rank2/core0",
        "rank3/core0",
        "rank0/core1",
        "rank1/core1",
    ]


def test_worst_fit_orders_by_free_cores_then_gpus() -> None:
    R = {
        "version": 1,
        "execution": {
            "R_lite": [
                {"rank": "0", "children": {"core": "0-3"}},
                {"rank": "1", "children": {"core": "0-3", "gpu": "0"}},
                {"rank": "2", "children": {"core": "0-7"}},
            ]
        },
    }
    pool = ResourcePool(R)
    assert pool.alloc(1, cores()).dumps() == "rank2/core0"
    assert pool.alloc(2, cores(4)).dumps() == "rank2/core[1-4]"  # 7 free > 4
    # ranks 0, 1 and 2 now have 4, 4 (+1 GPU) and 3 free: the GPU breaks the tie (upstream)
    assert pool.alloc(3, cores()).dumps() == "rank1/core0"


def test_slot_mode_packs_the_emptiest_node_first() -> None:
    pool = ResourcePool(make_R())
    pool.alloc("a", nodes(1, slots=3))  # rank0: 3 used
    granted = pool.alloc("b", cores(6, cores_per_slot=1))
    # ranks 1-3 have 4 free each; rank1 takes 4 slots, rank2 the remaining 2
    assert granted.dumps() == "rank1/core[0-3] rank2/core[0-1]"
    assert granted.nslots == 6
    two_per_slot = pool.alloc("c", cores(2, cores_per_slot=2))
    assert two_per_slot.dumps() == "rank3/core[0-3]"  # a slot never spans nodes


def test_node_mode_takes_spn_times_slot_size() -> None:
    pool = ResourcePool(make_R(gpus="0-1"))
    granted = pool.alloc(1, nodes(2, slots=1, cores_per_slot=2, gpus_per_slot=1))
    assert granted.dumps() == "rank[0-1]/core[0-1],gpu0"
    assert granted.nslots == 2


def test_exclusive_node_takes_all_free_cores_and_gpus() -> None:
    pool = ResourcePool(make_R(gpus="0-1"))
    pool.alloc("busy", cores())  # rank0 partly used
    granted = pool.alloc("x", nodes(2, exclusive=True))
    assert granted.dumps() == "rank[1-2]/core[0-3],gpu[0-1]"
    with pytest.raises(InsufficientResources):
        pool.alloc("y", nodes(2, exclusive=True))  # only rank3 is idle


def test_exclusive_without_nodes_means_whole_nodes() -> None:
    pool = ResourcePool(make_R())
    granted = pool.alloc(1, cores(2, exclusive=True))
    assert granted.dumps() == "rank[0-1]/core[0-3]"


def test_ranges_take_the_most_available() -> None:
    pool = ResourcePool(make_R())
    pool.mark_down("3")
    js = nodes(1, exclusive=True)
    js["resources"][0]["count"] = "2+"
    assert pool.alloc(1, js).dumps() == "rank[0-2]/core[0-3]"
    pool.free(1)
    js["resources"][0]["count"] = "1-2"
    assert pool.alloc(2, js).dumps() == "rank[0-1]/core[0-3]"
    slot_range = cores()
    slot_range["resources"][0]["count"] = "2-100"
    assert pool.alloc(3, slot_range).dumps() == "rank2/core[0-3]"  # all that is free and up
    js["resources"][0]["count"] = "5+"
    with pytest.raises(InfeasibleRequest):
        pool.alloc(4, js)  # min 5 > 4 ranks


def test_discrete_counts_are_infeasible() -> None:
    pool = ResourcePool(make_R())
    js = cores()
    js["resources"][0]["count"] = "1,3"
    with pytest.raises(InfeasibleRequest, match="discrete"):
        pool.alloc(1, js)
    with pytest.raises(InfeasibleRequest, match="discrete"):
        pool.check_feasibility(pool.parse_resource_request(js))
    assert pool.generation == 0


# -- infeasible vs insufficient ----------------------------------------------------------


def test_error_split() -> None:
    pool = ResourcePool(make_R())
    with pytest.raises(InfeasibleRequest, match="unsatisfiable request"):
        pool.alloc(1, cores(17))
    with pytest.raises(InfeasibleRequest):
        pool.alloc(1, nodes(5))
    with pytest.raises(InfeasibleRequest):
        pool.alloc(1, cores(1, gpus_per_slot=1))
    with pytest.raises(InfeasibleRequest):
        pool.alloc(1, cores(1, constraints={"properties": ["nope"]}))
    pool.alloc(1, cores(16))
    with pytest.raises(InsufficientResources, match="insufficient resources"):
        pool.alloc(2, cores())
    pool.free(1)
    pool.mark_down("all")
    with pytest.raises(InsufficientResources):
        pool.alloc(2, cores())  # feasible, but nothing is up
    assert pool.check_feasibility(pool.parse_resource_request(cores(16))) is None


def test_check_feasibility_rules() -> None:
    pool = ResourcePool(make_R(gpus="0"))
    pool.alloc("all", cores(16))  # allocations are ignored by feasibility
    pool.mark_down("0-2")  # so is down state
    pool.check_feasibility(pool.parse_resource_request(cores(4, gpus_per_slot=1)))
    with pytest.raises(InfeasibleRequest):
        pool.check_feasibility(pool.parse_resource_request(cores(5, gpus_per_slot=1)))
    pool.check_feasibility(pool.parse_resource_request(nodes(4, slots=2, cores_per_slot=2)))
    with pytest.raises(InfeasibleRequest):
        pool.check_feasibility(pool.parse_resource_request(nodes(1, slots=3, cores_per_slot=2)))
    bad = dataclasses.replace(pool.parse_resource_request(cores()), constraint={"x": 1})
    with pytest.raises(ValueError, match="unknown operator"):
        pool.check_feasibility(bad)
    pool.remove_ranks("1-3")
    with pytest.raises(InfeasibleRequest):
        pool.check_feasibility(pool.parse_resource_request(nodes(2)))


def test_deviation_exclusive_node_needing_more_cores_than_a_node_is_infeasible() -> None:
    # upstream grants a whole 4-core node to a request for 8 cores on 1 exclusive node
    pool = ResourcePool(make_R())
    js = nodes(1, exclusive=True, slots=1, cores_per_slot=8)
    with pytest.raises(InfeasibleRequest, match="8 cores"):
        pool.alloc(1, js)
    with pytest.raises(InfeasibleRequest):
        pool.check_feasibility(pool.parse_resource_request(js))
    assert pool.alloc(2, nodes(1, exclusive=True, slots=2, cores_per_slot=2)).dumps() == (
        "rank0/core[0-3]"
    )


def test_deviation_exclusive_idle_test_includes_gpus() -> None:
    pool = ResourcePool(make_R(ranks="0", gpus="0", nodelist="n0"))
    R = {
        "version": 1,
        "execution": {"R_lite": [{"rank": "0", "children": {"core": "", "gpu": "0"}}]},
    }
    pool.register_alloc("gpu-only", R)
    with pytest.raises(InsufficientResources):
        pool.alloc("x", nodes(1, exclusive=True))


# -- constraints -------------------------------------------------------------------------

CONSTRAINT_R = {
    "version": 1,
    "execution": {
        "R_lite": [{"rank": "0-5", "children": {"core": "0"}}],
        "nodelist": ["n[0-5]"],
        "properties": {"red": "0-2", "big": "2-3", "+local": "5"},
    },
}


def matching(constraint: dict[str, Any]) -> str:
    pool = ResourcePool(CONSTRAINT_R)
    js = cores(1)
    js["resources"][0]["count"] = "1+"
    js["attributes"]["system"]["constraints"] = constraint
    try:
        return str(pool.alloc(1, js).ranks)
    except InfeasibleRequest:
        return ""


@pytest.mark.parametrize(
    ("constraint", "ranks"),
    [
        ({"properties": ["red"]}, "0-2"),
        ({"properties": ["red", "big"]}, "2"),
        ({"properties": ["^red"]}, "3-5"),
        ({"properties": ["+local"]}, "5"),  # '+' properties still match
        ({"properties": []}, "0-5"),
        ({"hostlist": ["n[1-2]", "n5"]}, "1-2,5"),
        ({"hostlist": "n4"}, "4"),
        ({"ranks": ["0,4"]}, "0,4"),
        ({"and": [{"properties": ["red"]}, {"ranks": ["1-5"]}]}, "1-2"),
        ({"or": [{"properties": ["big"]}, {"ranks": ["5"]}]}, "2-3,5"),
        ({"not": [{"properties": ["red"]}]}, "3-5"),
        ({"not": [{"properties": ["red"]}, {"properties": ["big"]}]}, "0-1,3-5"),
        # deviations from upstream, per RFC 31:
        ({"or": []}, "0-5"),  # upstream: matches nothing
        ({"not": []}, ""),  # upstream: ValueError
        ({"properties": ["red"], "ranks": ["1-5"]}, "1-2"),  # upstream: 'ranks' ignored
        ({"hostlist": ["n[0-3]"], "not": [{"ranks": ["0"]}]}, "1-3"),
        ({}, "0-5"),
    ],
)
def test_constraints(constraint: dict[str, Any], ranks: str) -> None:
    assert matching(constraint) == ranks


def test_bad_constraint_in_alloc_changes_nothing() -> None:
    pool = ResourcePool(CONSTRAINT_R)
    js = cores(1)
    js["attributes"]["system"]["constraints"] = {"or": {"properties": ["red"]}}
    with pytest.raises(ValueError, match="or must be a list"):
        pool.alloc(1, js)
    assert pool.generation == 0 and held(pool) == ""


# -- jobs: free, register_alloc, update_expiration, job_end_times -------------------------


def test_free_whole_job_and_twice() -> None:
    pool = ResourcePool(make_R())
    pool.alloc(1, cores(3))
    generation = pool.generation
    pool.free(1)
    assert held(pool) == "" and pool.generation == generation + 1
    pool.free(1)  # unknown job: harmless, no bump
    assert pool.generation == generation + 1
    assert pool.job_end_times() == []


def test_partial_then_final_free() -> None:
    pool = ResourcePool(make_R())
    granted = pool.alloc(7, nodes(3))
    assert granted.dumps() == "rank[0-2]/core0"
    part = {"version": 1, "execution": {"R_lite": [{"rank": "1", "children": {"core": "0"}}]}}
    pool.free(7, part)
    assert held(pool) == "rank[0,2]/core0"
    assert pool.job_end_times() == [(7, 0.0)]  # still tracked
    with pytest.raises(ValueError, match="not in job allocation"):
        pool.free(7, granted.to_dict(), final=True)  # rank1 is already gone
    only_rank0 = {"version": 1, "execution": {"R_lite": [{"rank": "0", "children": {"core": "0"}}]}}
    with pytest.raises(
        ValueError, match="final R mismatch: got 'rank0/core0', expected 'rank\\[0,2\\]/core0'"
    ):
        pool.free(7, only_rank0, final=True)
    rest = {"version": 1, "execution": {"R_lite": [{"rank": "0,2", "children": {"core": "0"}}]}}
    pool.free(7, rest, final=True)
    assert held(pool) == "" and pool.job_end_times() == []


def test_free_checks_change_nothing() -> None:
    pool = ResourcePool(make_R())
    pool.alloc(1, cores(1))  # rank0/core0
    pool.alloc(2, cores(1))  # rank1/core0
    generation = pool.generation
    other = {"version": 1, "execution": {"R_lite": [{"rank": "1", "children": {"core": "0"}}]}}
    with pytest.raises(ValueError, match="not in job allocation"):
        pool.free(1, other)
    wrong_core = {"version": 1, "execution": {"R_lite": [{"rank": "0", "children": {"core": "1"}}]}}
    with pytest.raises(ValueError, match="not in job allocation"):
        pool.free(1, wrong_core)
    with pytest.raises(ValueError):
        pool.free(1, "{not json")
    assert pool.generation == generation
    assert held(pool) == "rank[0-1]/core0"


def test_final_free_of_untracked_job_is_a_no_op() -> None:
    pool = ResourcePool(make_R())
    pool.alloc(1, cores(1))
    generation = pool.generation
    R = {"version": 1, "execution": {"R_lite": [{"rank": "0", "children": {"core": "0"}}]}}
    pool.free(99, R, final=True)
    assert pool.generation == generation and held(pool) == "rank0/core0"
    pool.free(99, R)  # partial free of an untracked job does release (upstream)
    assert held(pool) == "" and pool.generation == generation + 1


def test_deviation_alloc_under_a_busy_jobid_is_an_error() -> None:
    pool = ResourcePool(make_R())
    pool.alloc(1, cores(2))
    generation = pool.generation
    with pytest.raises(ValueError, match="still holds"):
        pool.alloc(1, cores(1))
    assert pool.generation == generation
    assert held(pool) == "rank0/core[0-1]"
    pool.free(1)
    assert pool.alloc(1, cores(1)).dumps() == "rank0/core0"


def test_register_alloc() -> None:
    pool = ResourcePool(make_R())
    pool.mark_down("2")
    R = {
        "version": 1,
        "execution": {
            "R_lite": [{"rank": "2", "children": {"core": "0-1"}}],
            "starttime": 10.0,
            "expiration": 20.0,
        },
    }
    generation = pool.generation
    pool.register_alloc(5, R)  # down ranks are fine
    assert pool.generation == generation + 1
    assert held(pool) == "rank2/core[0-1]"
    assert pool.job_end_times() == [(5, 20.0)]
    pool.register_alloc(6, ResourcePool(make_R(ranks="3", cores="0", nodelist="n3")))
    pool.free(5)
    assert held(pool) == "rank3/core0"


def test_register_alloc_refuses_bad_input_and_changes_nothing() -> None:
    pool = ResourcePool(make_R())
    pool.register_alloc(1, make_R(ranks="0", cores="0-1", nodelist=None))
    generation = pool.generation
    with pytest.raises(ValueError, match=r"not in resource pool: \[9\]"):
        pool.register_alloc(2, make_R(ranks="0,9", cores="0", nodelist=None))
    with pytest.raises(ValueError, match="not in rank 1"):
        pool.register_alloc(2, make_R(ranks="1", cores="7", nodelist=None))
    # deviation: upstream ORs overlapping allocations in silently
    with pytest.raises(ValueError, match=r"overlaps allocated resources: rank0/core1"):
        pool.register_alloc(2, make_R(ranks="0", cores="1-2", nodelist=None))
    with pytest.raises(ValueError, match="still holds"):
        pool.register_alloc(1, make_R(ranks="3", cores="0", nodelist=None))
    assert pool.generation == generation
    assert held(pool) == "rank0/core[0-1]"


def test_update_expiration_and_job_end_times() -> None:
    pool = ResourcePool(make_R())
    before = time.time()
    pool.alloc("a", cores(1, duration=100))
    pool.alloc("b", cores(1))
    pool.set_expiration(5000.0)
    pool.alloc("c", cores(1))
    ends = dict(pool.job_end_times())
    assert list(ends) == ["a", "b", "c"]  # tracking order
    assert before + 100 <= ends["a"] <= time.time() + 100
    assert ends["b"] == 0.0 and ends["c"] == 5000.0
    generation = pool.generation
    pool.update_expiration("b", 42.0)
    assert dict(pool.job_end_times())["b"] == 42.0 and pool.generation == generation + 1
    pool.update_expiration("zzz", 42.0)  # untracked: nothing, no bump
    assert pool.generation == generation + 1
    with pytest.raises(ValueError):
        pool.update_expiration("b", float("nan"))


# -- up/down, remove_ranks ---------------------------------------------------------------


def test_mark_down_and_up() -> None:
    pool = ResourcePool(make_R())
    pool.alloc(1, cores(1))
    pool.mark_down("0-1,99")  # unknown ranks are ignored
    assert pool.copy_down().dumps() == "rank[0-1]/core[0-3]"
    assert pool.alloc(2, cores(1)).dumps() == "rank2/core0"
    assert held(pool) == "rank[0,2]/core0"  # down ranks keep allocations
    pool.free(1)  # and can still be freed
    assert held(pool) == "rank2/core0"
    generation = pool.generation
    pool.mark_up("all")
    pool.mark_up("all")  # always bumps
    assert pool.generation == generation + 2
    assert pool.copy_down().dumps() == ""
    with pytest.raises(ValueError):
        pool.mark_down("x")
    assert pool.generation == generation + 2


def test_remove_ranks() -> None:
    pool = ResourcePool(FLUX_EXAMPLE)
    pool.alloc(1, nodes(3))
    pool.remove_ranks(IDset("1"))
    assert pool.dumps() == "rank0/core[0-7] rank2/core[0-7],gpu[0-1]"
    assert "properties" in pool.to_dict()["execution"]
    assert pool.to_dict()["execution"]["properties"] == {"+debugq": "0,2"}
    assert pool.to_dict()["execution"]["nodelist"] == ["cn[10,12]"]
    assert held(pool) == "rank[0,2]/core0"
    pool.free(1)  # the job still knows rank1: free skips it
    assert held(pool) == ""
    for form in ("2", 2, [2]):
        copy_ = pool.copy()
        copy_.remove_ranks(form)
        assert copy_.dumps() == "rank0/core[0-7]"
    with pytest.raises(InfeasibleRequest):
        pool.alloc(2, nodes(3))


# -- times, generation -------------------------------------------------------------------


def test_times_do_not_bump() -> None:
    pool = ResourcePool(make_R())
    pool.set_expiration(100.0)
    pool.expiration = 200.0
    pool.set_starttime(50.0)
    assert pool.generation == 0
    assert pool.to_dict()["execution"]["expiration"] == 200.0
    assert pool.to_dict()["execution"]["starttime"] == 50.0
    with pytest.raises(ValueError):
        pool.set_expiration(-1)
    with pytest.raises(ValueError):
        pool.expiration = "later"  # type: ignore[assignment]


def test_generation_rules() -> None:
    pool = ResourcePool(make_R())
    req = pool.parse_resource_request(cores(1))
    pool.check_feasibility(req)
    pool.dumps()
    pool.to_dict()
    pool.copy()
    pool.copy_allocated()
    pool.copy_down()
    pool.to_resource_set()
    assert pool.generation == 0
    pool.alloc(1, req)
    assert pool.generation == 1
    with pytest.raises(InfeasibleRequest):
        pool.alloc(2, cores(99))
    assert pool.generation == 1
    pool.mark_down("0")
    pool.mark_up("0")
    pool.remove_ranks("3")
    pool.free(1)
    assert pool.generation == 5


# -- copies and views --------------------------------------------------------------------


def test_copy_is_independent_and_keeps_generation() -> None:
    pool = ResourcePool(make_R())
    pool.log = object()
    pool.alloc(1, nodes(2))
    clone = pool.copy()
    assert clone.generation == pool.generation and clone.log is None
    clone.alloc(2, cores(1))
    clone.free(1)
    clone.mark_down("3")
    assert held(pool) == "rank[0-1]/core0"
    assert held(clone) == "rank2/core0"
    assert pool.copy_down().dumps() == ""
    pool.free(
        1, {"version": 1, "execution": {"R_lite": [{"rank": "0", "children": {"core": "0"}}]}}
    )
    assert held(pool) == "rank1/core0"
    assert clone.job_end_times() == [(2, 0.0)]


def test_views() -> None:
    pool = ResourcePool(FLUX_EXAMPLE)
    pool.alloc(1, cores(2, constraints={"ranks": ["2"]}))
    pool.mark_down("1")
    allocated = pool.copy_allocated()
    assert isinstance(allocated, ResourceSet)
    assert allocated.to_dict()["execution"] == {
        "R_lite": [{"rank": "2", "children": {"core": "0-1"}}],
        "starttime": 0.0,
        "expiration": 0.0,
        "properties": {"+debugq": "2"},
    }
    down = pool.copy_down().to_dict()["execution"]
    assert down == {
        "R_lite": [{"rank": "1", "children": {"core": "0-7"}}],
        "starttime": 0.0,
        "expiration": 0.0,
    }
    everything = pool.to_resource_set()
    assert everything.dumps() == pool.dumps()
    assert list(everything.nodelist) == ["cn10", "cn11", "cn12"]
    assert everything.properties["bigmem"] == IDset("1")


# -- a failed call changes nothing -------------------------------------------------------


def test_failed_calls_change_nothing() -> None:
    pool = ResourcePool(FLUX_EXAMPLE)
    pool.alloc(1, cores(3))
    before = (pool.generation, pool.to_dict(), held(pool), pool.job_end_times())
    bad_calls = [
        lambda: pool.alloc(2, {"resources": []}),
        lambda: pool.alloc(2, cores(999)),
        lambda: pool.alloc(2, "not a jobspec"),
        lambda: pool.alloc(2, nodes(1, exclusive=True, slots=1, cores_per_slot=64)),
        lambda: pool.register_alloc(3, {"version": 1}),
        lambda: pool.free(
            1, {"version": 1, "execution": {"R_lite": [{"rank": "0-2", "children": {"core": "0"}}]}}
        ),
        lambda: pool.mark_down("1-"),
        lambda: pool.mark_up(object()),
        lambda: pool.remove_ranks("a"),
        lambda: pool.parse_resource_request({"version": 1}),
        lambda: pool.update_expiration(1, -5),
    ]
    for call in bad_calls:
        with pytest.raises((ValueError, TypeError, OSError)):
            call()
        assert (pool.generation, pool.to_dict(), held(pool), pool.job_end_times()) == before


def test_alloc_does_not_mutate_the_jobspec() -> None:
    pool = ResourcePool(make_R())
    js = nodes(2, constraints={"properties": []})
    snapshot = copy.deepcopy(js)
    pool.alloc(1, js)
    assert js == snapshot
