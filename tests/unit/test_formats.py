"""Formats: RFC 22 idsets, RFC 29 hostlists, R v1 (RFC 20), jobspec v1, RFC 31 constraints."""

from __future__ import annotations

import json
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from respool.pool import (
    Hostlist,
    IDset,
    ResourceCount,
    ResourcePool,
    ResourceSet,
    jobspec_from_shorthand,
    parse_jobspec,
)
from respool.pool.constraint import validate_constraint
from respool.pool.limits import MAX_CORE_ID, MAX_ID, MAX_RANKS

# -- IDset -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("", []),
        ("0", [0]),
        ("0-3,7", [0, 1, 2, 3, 7]),
        ("[0-3,7]", [0, 1, 2, 3, 7]),
        ("[]", []),
        ("7,0-3", [0, 1, 2, 3, 7]),
        ("1,2,3", [1, 2, 3]),
        ("10-12,11-13", [10, 11, 12, 13]),
    ],
)
def test_idset_parses(text: str, ids: list[int]) -> None:
    assert list(IDset(text)) == ids
    assert len(IDset(text)) == len(ids)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("3-1", "3-1"),
        ("-1", "-1"),
        ("a", "a"),
        ("01", "01"),
        ("0-03", "0-03"),
        ("1,,2", "''"),
        ("1, 2", "' 2'"),
        ("1-", "1-"),
        ("[1-2", "[1-2"),
        ("4294967295", "4294967295"),
        ("1.5", "1.5"),
    ],
)
def test_idset_rejects_and_names_the_bad_part(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        IDset(text)
    assert fragment in str(info.value)


def test_idset_encoding_matches_flux() -> None:
    assert str(IDset("0,1")) == "0-1"  # pairs as ranges, like the C encoder
    assert str(IDset([5, 3, 4, 9])) == "3-5,9"
    assert IDset("0-3,7").encode(brackets=True) == "[0-3,7]"
    assert IDset("4").encode(brackets=True) == "4"
    assert repr(IDset("1-2")) == "IDset('1-2')"


def test_idset_algebra_and_queries() -> None:
    a, b = IDset("0-9"), IDset("5-14")
    assert a | b == IDset("0-14")
    assert a & b == IDset("5-9")
    assert a - b == IDset("0-4")
    assert IDset("0-20") - IDset("3,5-6,20") == IDset("0-2,4,7-19")
    assert IDset("1-3").issubset(a)
    assert 7 in a and 10 not in a and "7" not in a
    assert a.first() == 0 and a.last() == 9
    assert IDset("0-2") == "0-2" and IDset("0-2") != "0-3"
    assert hash(IDset("0-2")) == hash(IDset([0, 1, 2]))
    assert IDset.from_mask(0b1011_0111) == IDset("0-2,4-5,7")
    assert IDset("0-2,4-5,7").to_mask(100) == 0b1011_0111
    with pytest.raises(ValueError):
        IDset().first()
    with pytest.raises(ValueError):
        IDset("200").to_mask(100)


def test_idset_huge_range_is_cheap() -> None:
    tracemalloc.start()
    ids = IDset(f"0-{MAX_ID}")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(ids) == MAX_ID + 1
    assert peak < 100_000


def test_idset_rejects_non_ints() -> None:
    with pytest.raises(TypeError):
        IDset([1, "2"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        IDset(True)
    with pytest.raises(ValueError, match="negative"):
        IDset([-1])


@given(st.sets(st.integers(min_value=0, max_value=300)))
def test_idset_round_trips(values: set[int]) -> None:
    ids = IDset(sorted(values))
    assert set(ids) == values
    assert IDset(str(ids)) == ids
    assert IDset(ids.encode(brackets=True)) == ids
    mask = sum(1 << v for v in values)
    assert IDset.from_mask(mask) == ids
    assert ids.to_mask(300) == mask


@given(
    st.sets(st.integers(min_value=0, max_value=80)), st.sets(st.integers(min_value=0, max_value=80))
)
def test_idset_algebra_matches_sets(a: set[int], b: set[int]) -> None:
    x, y = IDset(sorted(a)), IDset(sorted(b))
    assert set(x | y) == a | b
    assert set(x & y) == a & b
    assert set(x - y) == a - b


# -- Hostlist --------------------------------------------------------------------------


def test_hostlist_expands_and_compresses() -> None:
    hosts = Hostlist("node[0-3],login1")
    assert list(hosts) == ["node0", "node1", "node2", "node3", "login1"]
    assert str(hosts) == "node[0-3],login1"
    assert list(Hostlist("n[008-010]")) == ["n008", "n009", "n010"]
    assert str(Hostlist(["n008", "n009", "n010"])) == "n[008-010]"
    assert str(Hostlist(["n08", "n09", "n10"])) == "n[08-10]"
    assert str(Hostlist(["n8", "n9", "n10"])) == "n[8-10]"
    assert list(Hostlist("cn[1,3,5-6]x")) == ["cn1x", "cn3x", "cn5x", "cn6x"]
    assert str(Hostlist(["a1", "a3", "b", "a4"])) == "a[1,3],b,a4"  # order is kept
    assert list(Hostlist("a,a")) == ["a", "a"]  # duplicates are kept
    assert len(Hostlist("")) == 0
    assert Hostlist(["x[1-2]", "y"])[1] == "x2"
    assert list(Hostlist("x[1-4]")[1:3]) == ["x2", "x3"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("node[3-1]", "3-1"),
        ("node[a]", "'a'"),
        ("node[1-2", "unmatched"),
        ("node1]", "unmatched"),
        ("a,,b", "empty term"),
        ("n[]", "empty brackets"),
        ("n[1][2]", "more than one bracket"),
        ("n[[1]]", "nested"),
        ("bad host", "bad host name"),
        ("n[01-003]", "padding"),
    ],
)
def test_hostlist_rejects_and_names_the_bad_part(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        Hostlist(text)
    assert fragment in str(info.value)


def test_hostlist_refuses_huge_expansion_before_allocating() -> None:
    tracemalloc.start()
    with pytest.raises(ValueError, match="more than"):
        Hostlist("n[0-4294967295]")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "node", "x-"]), st.integers(0, 120), st.sampled_from([0, 3])
        ),
        max_size=30,
    )
)
def test_hostlist_round_trips(parts: list[tuple[str, int, int]]) -> None:
    names = [f"{prefix}{number:0{width}d}" for prefix, number, width in parts]
    hosts = Hostlist(names)
    assert list(hosts) == names
    assert list(Hostlist(str(hosts))) == names


# -- R v1 ------------------------------------------------------------------------------

EXAMPLE_R = {
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


def test_r_round_trips_with_flux_key_order() -> None:
    out = ResourcePool(EXAMPLE_R).to_dict()
    assert out == {
        "version": 1,
        "execution": {
            "R_lite": [
                {"rank": "0-1", "children": {"core": "0-7"}},
                {"rank": "2", "children": {"core": "0-7", "gpu": "0-1"}},
            ],
            "starttime": 0.0,
            "expiration": 1760003600.0,
            "nodelist": ["cn[10-12]"],
            "properties": {"+debugq": "0-2", "bigmem": "1"},
        },
        "scheduling": {"writer": "mysched"},
    }
    assert list(out["execution"]) == ["R_lite", "starttime", "expiration", "nodelist", "properties"]
    assert ResourcePool(json.dumps(out)).to_dict() == out


def test_r_groups_identical_ranks_by_lowest_rank() -> None:
    R = {
        "version": 1,
        "execution": {
            "R_lite": [
                {"rank": "1", "children": {"core": "0", "gpu": "0"}},
                {"rank": "0,2-3", "children": {"core": "0-1"}},
            ]
        },
    }
    pool = ResourcePool(R)
    assert pool.dumps() == "rank[0,2-3]/core[0-1] rank1/core0,gpu0"
    lite = pool.to_dict()["execution"]["R_lite"]
    assert [entry["rank"] for entry in lite] == ["0,2-3", "1"]
    assert "nodelist" not in pool.to_dict()["execution"]
    assert ResourcePool({"version": 1, "execution": {"R_lite": []}}).dumps() == ""


def test_r_names_ranks_beyond_the_nodelist() -> None:
    R = {
        "version": 1,
        "execution": {"R_lite": [{"rank": "0-2", "children": {"core": "0"}}], "nodelist": ["a"]},
    }
    assert list(ResourcePool(R).nodelist) == ["a", "rank1", "rank2"]


def _r_with(**execution: object) -> dict[str, object]:
    base: dict[str, object] = {"R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}]}
    base.update(execution)
    return {"version": 1, "execution": base}


@pytest.mark.parametrize(
    ("R", "fragment"),
    [
        ({"execution": {}}, "missing 'version'"),
        ({"version": 2, "execution": {}}, "unsupported version"),
        ({"version": 1}, "'execution'"),
        ({"version": 1, "execution": {"R_lite": {}}}, "R_lite must be a list"),
        (_r_with(R_lite=[{"rank": "3-1", "children": {"core": "0"}}]), "R_lite[0].rank"),
        (_r_with(R_lite=[{"rank": "0", "children": {"core": "01"}}]), "children.core"),
        (_r_with(R_lite=[{"rank": "0", "children": {"gpu": "0"}}]), "missing 'core'"),
        (_r_with(R_lite=[{"rank": "0", "children": {"core": "0", "gpu": "x"}}]), "children.gpu"),
        (
            _r_with(
                R_lite=[
                    {"rank": "0-1", "children": {"core": "0"}},
                    {"rank": "1", "children": {"core": "0"}},
                ]
            ),
            "more than once",
        ),
        (_r_with(nodelist=["n[0-2]"]), "names 3 hosts for 2 ranks"),
        (_r_with(nodelist=["n[1-"]), "nodelist"),
        (_r_with(nodelist=[1]), "nodelist"),
        (_r_with(properties={"a|b": "0"}), "invalid property name"),
        (_r_with(properties={"big": "5"}), "not in R_lite"),
        (_r_with(properties={"big": "-1"}), "properties['big']"),
        (_r_with(starttime=-1), "starttime"),
        (_r_with(starttime=10.0, expiration=5.0), "not after starttime"),
        (_r_with(expiration="soon"), "expiration"),
        (_r_with(nslots=-2), "nslots"),
        (_r_with(R_lite=[{"rank": f"0-{MAX_RANKS}", "children": {"core": "0"}}]), "ranks"),
        (
            _r_with(R_lite=[{"rank": "0", "children": {"core": f"0-{MAX_CORE_ID + 1}"}}]),
            "exceeds the maximum",
        ),
    ],
)
def test_bad_r_is_rejected_naming_the_part(R: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        ResourcePool(R)
    assert fragment in str(info.value)


def test_absurd_sizes_are_refused_before_allocating() -> None:
    tracemalloc.start()
    for R in (
        _r_with(R_lite=[{"rank": "0-4294967294", "children": {"core": "0"}}]),
        _r_with(R_lite=[{"rank": "0", "children": {"core": "0-999999"}}]),
        _r_with(R_lite=[{"rank": "0", "children": {"core": "0", "gpu": "1000000"}}]),
    ):
        with pytest.raises(ValueError, match=r"maximum|more than"):
            ResourcePool(R)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000


def test_bad_json_and_types() -> None:
    with pytest.raises(ValueError, match="invalid JSON"):
        ResourcePool("{nope")
    with pytest.raises(ValueError, match="expected a JSON object"):
        ResourcePool("[1]")
    with pytest.raises(TypeError):
        ResourcePool(42)
    with pytest.raises(ValueError, match="version"):
        ResourcePool(EXAMPLE_R, version=2)


def test_resource_set_views() -> None:
    rs = ResourceSet(EXAMPLE_R)
    assert rs.ranks == IDset("0-2")
    assert list(rs.nodelist) == ["cn10", "cn11", "cn12"]
    assert (rs.nnodes, rs.ncores, rs.ngpus) == (3, 24, 2)
    assert rs.count("core") == 24 and rs.count("node") == 3 and rs.count("gpu") == 2
    assert rs.cores(2) == IDset("0-7") and rs.gpus(2) == IDset("0-1")
    assert rs.properties["bigmem"] == IDset("1")
    assert rs.expiration == 1760003600.0
    assert str(rs) == "rank[0-1]/core[0-7] rank2/core[0-7],gpu[0-1]"
    assert ResourceSet(rs.encode()) == rs
    assert ResourceSet(ResourcePool(EXAMPLE_R)) == ResourceSet(ResourcePool(EXAMPLE_R).to_dict())
    with pytest.raises(ValueError):
        rs.count("disk")


# -- jobspec ---------------------------------------------------------------------------


def test_count_forms() -> None:
    assert ResourceCount.from_count_spec(3) == ResourceCount(3, 3)
    assert ResourceCount.from_count_spec("2-8") == ResourceCount(2, 8)
    assert ResourceCount.from_count_spec("2+") == ResourceCount(2, None)
    assert ResourceCount.from_count_spec("4") == ResourceCount(4, 4)
    stepped = ResourceCount.from_count_spec("2-8:2:*")
    assert (stepped.min, stepped.max, stepped.operand, stepped.operator) == (2, 8, 2, "*")
    assert stepped.is_discrete
    assert ResourceCount.from_count_spec("1,3,5").is_discrete
    assert not ResourceCount.from_count_spec("2-8").is_discrete
    assert ResourceCount.from_count_spec({"min": 2}) == ResourceCount(2, None)
    assert ResourceCount.from_count_spec({"min": 2, "max": 4, "operator": "+", "operand": 1}) == (
        ResourceCount(2, 4)
    )


@pytest.mark.parametrize(
    "spec",
    [
        0,
        -1,
        True,
        "0",
        "a",
        "8-2",
        {"max": 3},
        {"min": 3, "max": 1},
        {"min": 1, "operator": "/"},
        {"min": 1, "extra": 1},
        {"min": "1"},
        1.5,
        None,
        "2-8:0",
    ],
)
def test_bad_counts(spec: object) -> None:
    with pytest.raises(ValueError, match="count"):
        ResourceCount.from_count_spec(spec)


def test_parse_node_slot_core_gpu() -> None:
    js = {
        "version": 1,
        "resources": [
            {
                "type": "node",
                "count": 2,
                "with": [
                    {
                        "type": "slot",
                        "count": 2,
                        "label": "task",
                        "with": [{"type": "core", "count": 4}, {"type": "gpu", "count": 1}],
                    }
                ],
            }
        ],
        "tasks": [],
        "attributes": {"system": {"duration": 3600.0, "constraints": {"properties": ["bigmem"]}}},
    }
    req = parse_jobspec(js)
    assert req.node_count == ResourceCount(2, 2)
    assert req.slot_count == ResourceCount(2, 2)
    assert (req.slot_size, req.gpu_per_slot, req.duration) == (4, 1, 3600.0)
    assert req.constraint == {"properties": ["bigmem"]}
    assert not req.exclusive
    assert (req.nnodes, req.nnodes_max, req.nslots) == (2, 2, 4)


def test_parse_normalisation() -> None:
    slot_exclusive = jobspec_from_shorthand(slots=3, exclusive=True)
    req = parse_jobspec(slot_exclusive)
    assert req.exclusive and req.node_count == ResourceCount(3, 3)
    assert req.slot_count == ResourceCount(1, 1)
    req = parse_jobspec(jobspec_from_shorthand(slots=5))
    assert req.node_count is None and req.nnodes == 0 and req.nslots == 5
    js = jobspec_from_shorthand(nodes=1, constraints=None)
    js["attributes"]["system"]["constraints"] = {}
    assert parse_jobspec(js).constraint is None
    js["attributes"]["system"]["duration"] = 0
    assert parse_jobspec(js).duration == 0.0
    ranged = jobspec_from_shorthand(nodes=1)
    ranged["resources"][0]["count"] = "2+"
    req = parse_jobspec(ranged)
    assert (req.nnodes, req.nnodes_max) == (2, None)


def test_parse_scales_nodes_under_a_grouping_vertex() -> None:
    js = jobspec_from_shorthand(nodes=2)
    js["resources"] = [{"type": "rack", "count": 3, "with": js["resources"]}]
    req = parse_jobspec(js)
    assert req.node_count == ResourceCount(6, 6)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda js: js.update(resources=[]), "empty resources"),
        (lambda js: js.pop("attributes"), "Object item not found: system"),
        (lambda js: js["attributes"]["system"].pop("duration"), "Object item not found: duration"),
        (lambda js: js["attributes"]["system"].update(duration=-1), "duration"),
        (lambda js: js["attributes"]["system"].update(duration="1h"), "duration"),
        (lambda js: js.update(resources=[{"type": "core", "count": 1}]), "slot count"),
        (lambda js: js.update(resources=[{"type": "slot", "count": 1}]), "slot size"),
        (lambda js: js.update(resources=[{"type": "slot"}]), "missing 'count'"),
        (lambda js: js.update(resources=[{"count": 1}]), "type"),
        (lambda js: js.update(resources=[{"type": "slot", "count": 0}]), "count"),
        (lambda js: js.update(resources=[{"type": "slot", "count": 1, "with": {}}]), "list"),
        (
            lambda js: js.update(resources=[{"type": "node", "count": 1, "exclusive": "y"}]),
            "exclusive",
        ),
        (
            lambda js: js["attributes"]["system"].update(constraints={"bogus": 1}),
            "unknown operator",
        ),
        (lambda js: js["attributes"]["system"].update(constraints=[]), "constraints"),
    ],
)
def test_bad_jobspecs(mutate: object, fragment: str) -> None:
    js = jobspec_from_shorthand(nodes=1)
    mutate(js)  # type: ignore[operator]
    with pytest.raises(ValueError) as info:
        parse_jobspec(js)
    assert fragment in str(info.value)


def test_parse_depth_limit() -> None:
    vertex: dict[str, object] = {"type": "slot", "count": 1, "with": [{"type": "core", "count": 1}]}
    for _ in range(150):
        vertex = {"type": "group", "count": 1, "with": [vertex]}
    js = jobspec_from_shorthand()
    js["resources"] = [vertex]
    with pytest.raises(ValueError, match="depth"):
        parse_jobspec(js)
    with pytest.raises(ValueError, match="expected an object"):
        parse_jobspec([])


def test_shorthand_builds_flux_style_jobspecs() -> None:
    js = jobspec_from_shorthand(nodes=2, slots=3, cores_per_slot=4, gpus_per_slot=1, duration=60)
    node = js["resources"][0]
    assert node["type"] == "node" and node["count"] == 2 and "exclusive" not in node
    slot = node["with"][0]
    assert (slot["type"], slot["count"], slot["label"]) == ("slot", 3, "task")
    assert slot["with"] == [{"type": "core", "count": 4}, {"type": "gpu", "count": 1}]
    assert js["attributes"]["system"] == {"duration": 60.0}
    assert js["tasks"][0]["slot"] == "task"
    excl = jobspec_from_shorthand(nodes=1, exclusive=True, constraints={"properties": ["a"]})
    assert excl["resources"][0]["exclusive"] is True
    assert excl["attributes"]["system"]["constraints"] == {"properties": ["a"]}
    flat = jobspec_from_shorthand(slots=4)
    assert flat["resources"][0]["type"] == "slot"
    assert parse_jobspec(js).nslots == 6


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"nodes": 0}, "nodes"),
        ({"slots": 0}, "slots"),
        ({"cores_per_slot": 0}, "coresPerSlot"),
        ({"gpus_per_slot": -1}, "gpusPerSlot"),
        ({"slots": 1.5}, "slots"),
        ({"duration": -5}, "duration"),
        ({"duration": float("inf")}, "duration"),
        ({"exclusive": "yes"}, "exclusive"),
        ({"constraints": {"or": "x"}}, "or"),
    ],
)
def test_shorthand_rejects_bad_counts(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        jobspec_from_shorthand(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)


# -- constraints (validation; evaluation is tested on a pool in test_pool.py) ----------


@pytest.mark.parametrize(
    ("constraint", "fragment"),
    [
        ({"color": ["red"]}, "unknown operator 'color'"),
        ({"properties": "gpu"}, "properties must be a list"),
        ({"properties": [1]}, "not a string"),
        ({"properties": ["a|b"]}, "invalid property name"),
        ({"and": {"properties": []}}, "and must be a list"),
        ({"or": "x"}, "or must be a list"),
        ({"not": [1]}, "not[0]"),
        ({"hostlist": ["n[1-"]}, "hostlist"),
        ({"hostlist": [3]}, "not a string"),
        ({"ranks": ["3-1"]}, "ranks"),
        ({"and": [{"or": [{"bogus": 1}]}]}, "constraint.and[0].or[0]"),
        ([], "expected an object"),
    ],
)
def test_bad_constraints(constraint: object, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_constraint(constraint)
    assert fragment in str(info.value)


def test_constraint_depth_limit() -> None:
    constraint: dict[str, object] = {"properties": []}
    for _ in range(200):
        constraint = {"not": [constraint]}
    with pytest.raises(ValueError, match="deeper"):
        validate_constraint(constraint)
