"""The API models: wire round-trips, defaults, and the cross-field rules (mirrored in CEL)."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from respool.api import (
    ClaimPolicy,
    Mode,
    Phase,
    ReservationRequest,
    ResourcePool,
    ResourcePoolSpec,
    ResourcePoolStatus,
    ResourceReservation,
    ResourceReservationSpec,
    ResourceReservationStatus,
    patterns,
)
from respool.api.models import (
    MAX_CONSTRAINT_HOSTS,
    MAX_CONSTRAINT_NODES,
    MAX_CONSTRAINT_TERMS,
    constraint_cost,
)
from respool.pool import Hostlist, hostlist_size

POOL_SPEC: dict[str, Any] = {
    "resources": {
        "version": 1,
        "execution": {
            "R_lite": [{"rank": "0-3", "children": {"core": "0-15", "gpu": "0-1"}}],
            "nodelist": ["node[0-3]"],
            "properties": {"a100": "0-1"},
        },
    },
    "down": "3",
    "trackNodes": False,
    "enforcement": "None",
    "namespaceSelector": {},
    "policy": {"defaultDuration": "1h", "maxDuration": "24h", "claimTimeout": "5m",
               "reminders": {"startingSoon": "15m", "endingSoon": "15m"}},
}

RESERVATION_SPEC: dict[str, Any] = {
    "pool": "rack-a",
    "mode": "exclusive",
    "request": {"nodes": 2, "slots": 2, "coresPerSlot": 4, "gpusPerSlot": 1, "exclusive": False},
    "constraints": {"properties": ["a100"]},
    "startTime": "2026-12-01T08:00:00Z",
    "endTime": "2026-12-01T10:00:00Z",
    "nextAvailable": True,
    "maxRetry": 5,
    "maxWait": "30m",
    "claimPolicy": "Auto",
    "claimed": False,
    "config": {},
    "preemptible": False,  # issue 14: defaulted like the fields above
    "onEnd": "Leave",  # issue 13: defaulted too
}


def test_design_examples_round_trip_unchanged() -> None:
    assert ResourcePoolSpec.model_validate(POOL_SPEC).to_wire() == POOL_SPEC
    assert ResourceReservationSpec.model_validate(RESERVATION_SPEC).to_wire() == RESERVATION_SPEC


def test_python_attributes_are_snake_case_and_enums_typed() -> None:
    spec = ResourceReservationSpec.model_validate(RESERVATION_SPEC)
    assert spec.request is not None and spec.request.cores_per_slot == 4
    assert spec.mode is Mode.EXCLUSIVE and spec.claim_policy is ClaimPolicy.AUTO
    assert spec.start_time == "2026-12-01T08:00:00Z"
    pool = ResourcePoolSpec.model_validate(POOL_SPEC)
    assert pool.resources.execution.r_lite[0].children.gpu == "0-1"
    assert pool.policy.claim_timeout == "5m"


def test_defaults_of_a_minimal_reservation() -> None:
    spec = ResourceReservationSpec.model_validate({"pool": "rack-a"})
    assert spec.mode is Mode.EXCLUSIVE
    assert spec.claim_policy is ClaimPolicy.AUTO
    assert spec.next_available is True
    assert spec.max_retry == 5
    assert spec.claimed is False
    assert spec.effective_request() == ReservationRequest(
        slots=1, cores_per_slot=1, gpus_per_slot=0, exclusive=False
    )
    request = ResourceReservationSpec.model_validate({"pool": "p", "request": {"nodes": 1}}).request
    assert request is not None
    assert (request.slots, request.cores_per_slot, request.gpus_per_slot, request.exclusive) == (
        1,
        1,
        0,
        False,
    )


def test_pool_policy_defaults() -> None:
    spec = ResourcePoolSpec.model_validate({"resources": POOL_SPEC["resources"]})
    assert spec.policy.default_duration == "1h"
    assert spec.policy.claim_timeout == "5m"
    # Protective defaults (issue 11, item 13): a day at most, an hour of unclaimed holds.
    assert spec.policy.max_duration == "24h"
    assert spec.policy.max_unclaimed_hold is None  # the operator's 1h
    assert spec.track_nodes is False


def test_whole_objects_from_kopf_style_mappings() -> None:
    body = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourceReservation",
        "metadata": {"name": "n", "namespace": "team-a", "generation": 3},
        "spec": RESERVATION_SPEC,
        "status": {"phase": "Active", "reservationId": "rack-a-7", "observedGeneration": 3},
    }
    reservation = ResourceReservation.model_validate(body)
    assert reservation.status is not None and reservation.status.phase is Phase.ACTIVE
    assert reservation.to_wire() == body
    pool = ResourcePool.model_validate(
        {
            "apiVersion": "respool.io/v1alpha1",
            "kind": "ResourcePool",
            "metadata": {},
            "spec": POOL_SPEC,
        }
    )
    assert pool.kind == "ResourcePool"


def test_partial_status_dumps_only_what_was_set() -> None:
    # A merge patch built from a partial status must not clear other fields.
    assert ResourceReservationStatus(phase=Phase.PENDING, retry_count=2).to_wire() == {
        "phase": "Pending",
        "retryCount": 2,
    }
    assert ResourcePoolStatus().to_wire() == {}


def test_status_round_trip_with_allocation() -> None:
    status = {
        "phase": "Active",
        "reservationId": "rack-a-1",
        "startTime": "2026-12-01T08:00:00Z",
        "endTime": "2026-12-01T10:00:00Z",
        "firstRequestTime": "2026-11-30T08:00:00Z",
        "retryCount": 0,
        "allocated": {
            "ranks": "0-1",
            "nodelist": "node[0-1]",
            "summary": "rank[0-1]/core[0-7],gpu0",
            "R": {
                "version": 1,
                "execution": {
                    "R_lite": [{"rank": "0-1", "children": {"core": "0-7", "gpu": "0"}}],
                    "starttime": 0.0,
                    "expiration": 0.0,
                    "nslots": 4,
                    "nodelist": ["node[0-1]"],
                    "properties": {"a100": "0-1"},
                },
            },
        },
        "nextAvailable": {
            "available": True,
            "availStart": "2026-12-01T08:00:00Z",
            "availEnd": "2026-12-01T10:00:00Z",
        },
        "config": {"image": "x"},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Granted",
                "message": "granted",
                "lastTransitionTime": "2026-12-01T08:00:00Z",
                "observedGeneration": 1,
            }
        ],
        "observedGeneration": 1,
        "message": "Active until 2026-12-01T10:00:00Z",
    }
    assert ResourceReservationStatus.model_validate(status).to_wire() == status
    pool_status = {
        "observedGeneration": 2,
        "allocationGeneration": 17,
        "down": "3",
        "allocated": "0-1",
        "summary": "rank[0-3]/core[0-15],gpu[0-1]",
        "capacity": {
            "core": {"total": 64, "allocated": 16, "down": 16, "free": 32},
            "gpu": {"total": 8, "allocated": 2, "down": 2, "free": 4},
            "node": {"total": 4, "allocated": 2, "down": 1, "free": 1},
        },
        "reservations": {"Active": 1, "Pending": 2},
        "message": "ok",
    }
    assert ResourcePoolStatus.model_validate(pool_status).to_wire() == pool_status


def _reject(model: type[Any], data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    assert fragment in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"duration": "1h"}, "give spec.endTime or spec.duration, not both"),
        ({"endTime": "2026-12-01T07:59:59Z"}, "spec.endTime must be after spec.startTime"),
        ({"endTime": "2026-12-01T08:00:00Z"}, "spec.endTime must be after spec.startTime"),
        (
            {"resources": [{"type": "slot", "count": 1, "with": [{"type": "core", "count": 1}]}]},
            "give spec.request or spec.resources, not both",
        ),
        ({"mode": "exclusively"}, "mode"),
        ({"claimPolicy": "auto"}, "claimPolicy"),
        ({"pool": "Rack_A"}, "pool"),
        ({"startTime": "2026-12-01 08:00"}, "startTime"),
        ({"startTime": "2026-12-01T08:00:00"}, "startTime"),
        ({"maxWait": "30 minutes"}, "maxWait"),
        ({"maxWait": "-5m"}, "maxWait"),
        ({"maxRetry": -1}, "maxRetry"),
        ({"request": {"slots": 0}}, "slots"),
        ({"request": {"gpusPerSlot": -1}}, "gpusPerSlot"),
        ({"constraints": {"properties": ["a|b"]}}, "properties"),
        ({"constraints": {"ranks": "3-1x"}}, "ranks"),
        ({"constraints": {"ranks": "3-1"}}, "range '3-1' is reversed"),
        ({"constraints": {"hostlist": ["n[3-1]"]}}, "range '3-1' is reversed"),
        ({"constraints": {"hostlist": ["n[0-9999999]"]}}, "more than 262144 host names"),
        ({"maxWait": "2562048h"}, "is not a duration"),
        ({"maxWait": "1h1h"}, "each at most once"),
        ({"startTime": "0000-12-01T08:00:00Z"}, "startTime"),
        ({"config": {"blob": "x" * 262_144}}, "spec.config is 262155 bytes of JSON; at most 262144"),
        ({"unknownField": 1}, "unknownField"),
    ],
)
def test_reservation_spec_rejections(change: dict[str, Any], fragment: str) -> None:
    _reject(ResourceReservationSpec, {**RESERVATION_SPEC, **change}, fragment)


def test_window_must_end_by_the_last_time_rfc3339_can_write() -> None:
    spec = {k: v for k, v in RESERVATION_SPEC.items() if k != "endTime"}
    _reject(
        ResourceReservationSpec,
        {**spec, "startTime": "9999-12-31T23:00:00Z", "duration": "1h0m1s"},
        "spec.startTime plus spec.duration must not end after 9999-12-31T23:59:59Z",
    )
    ResourceReservationSpec.model_validate(
        {**spec, "startTime": "9999-12-31T23:00:00Z", "duration": "59m59s"}
    )


def test_pool_nodelist_may_repeat_host_names_but_not_miscount_them() -> None:
    # Flux test instances run several ranks on one host: repeated names are fine.
    data = copy.deepcopy(POOL_SPEC)
    data["resources"]["execution"]["nodelist"] = ["n0", "n0", "n1", "n1"]
    ResourcePoolSpec.model_validate(data)
    del data["resources"]["execution"]["nodelist"]
    ResourcePoolSpec.model_validate(data)


@pytest.mark.parametrize(
    "text",
    ["0", "0s", "90s", "1h30m", "1.5h", ".5s", "250ms", "1h2m3s4ms5us6ns", "999999h",
     "999999.999999999h9999999.999999999m999999999.999999999s999999999999.999999999ms"
     "999999999999999.999999999us999999999999999999.999999999ns"],
)
def test_every_duration_the_schema_accepts_is_a_go_duration(text: str) -> None:
    # The schema's pattern bounds each unit so that even its largest value stays within Go's
    # time.Duration (about 292 years): the API server's CEL duration() never fails on one.
    import re

    from respool.api import PoolPolicy, parse_duration, patterns

    assert re.match(patterns.DURATION, text)
    assert parse_duration(text) < 292 * 365.25 * 86400
    if len(text) <= 64:  # the schema's maxLength
        PoolPolicy.model_validate({"claimTimeout": text})


def test_duration_must_be_positive() -> None:
    spec = {k: v for k, v in RESERVATION_SPEC.items() if k != "endTime"}
    _reject(
        ResourceReservationSpec,
        {**spec, "duration": "0s"},
        "spec.duration must be longer than zero",
    )
    assert ResourceReservationSpec.model_validate({**spec, "duration": "1h30m"}).duration == "1h30m"


def _slot(*children: dict[str, Any]) -> dict[str, Any]:
    return {"type": "slot", "count": 2, "label": "task", "with": list(children)}


@pytest.mark.parametrize(
    "resources",
    [
        [_slot({"type": "core", "count": 4})],
        [_slot({"type": "core", "count": 4}, {"type": "gpu", "count": 1})],
        [
            {
                "type": "node",
                "count": 2,
                "exclusive": True,
                "with": [_slot({"type": "core", "count": 1})],
            }
        ],
    ],
)
def test_jobspec_shapes_accepted(resources: list[dict[str, Any]]) -> None:
    spec = {k: v for k, v in RESERVATION_SPEC.items() if k != "request"}
    parsed = ResourceReservationSpec.model_validate({**spec, "resources": resources})
    assert parsed.to_wire()["resources"] == resources
    assert parsed.effective_request() is None


@pytest.mark.parametrize(
    ("resources", "fragment"),
    [
        ([{"type": "core", "count": 1}], "must be a node or a slot"),
        ([{"type": "node", "count": 1}], "a node vertex must contain exactly one slot vertex"),
        ([_slot({"type": "gpu", "count": 1})], "a slot vertex must contain one core vertex"),
        (
            [_slot({"type": "core", "count": 1}, {"type": "core", "count": 1})],
            "a slot vertex must contain one core vertex",
        ),
        (
            [_slot({"type": "core", "count": 1, "with": [{"type": "core", "count": 1}]})],
            "a slot vertex must contain one core vertex",
        ),
        ([_slot({"type": "core", "count": 1, "exclusive": True})], "only node and slot"),
        ([_slot({"type": "core", "count": 0})], "count"),
        ([_slot({"type": "socket", "count": 1})], "type"),
    ],
)
def test_jobspec_shapes_rejected(resources: list[dict[str, Any]], fragment: str) -> None:
    spec = {k: v for k, v in RESERVATION_SPEC.items() if k != "request"}
    _reject(ResourceReservationSpec, {**spec, "resources": resources}, fragment)


def test_constraint_nesting_is_bounded() -> None:
    too_deep = {"and": [{"or": [{"properties": ["a100"]}, {"not": [{"ranks": "0"}]}]}]}
    _reject(ResourceReservationSpec, {**RESERVATION_SPEC, "constraints": too_deep}, "nest")
    shallow = {
        "and": [{"properties": ["a100"]}, {"or": [{"ranks": "0"}, {"hostlist": ["n[1-2]"]}]}]
    }
    parsed = ResourceReservationSpec.model_validate({**RESERVATION_SPEC, "constraints": shallow})
    assert parsed.constraints is not None and parsed.constraints.to_rfc31() == shallow


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (("resources", "version"), 2, "version"),
        (("resources", "execution", "R_lite"), [], "R_lite"),
        (("resources", "execution", "R_lite", 0, "rank"), "01", "rank"),
        (("resources", "execution", "R_lite", 0, "children", "core"), "", "core"),
        (("resources", "execution", "nodelist"), ["node[0-3"], "nodelist"),
        (("resources", "execution", "properties"), {"a(b)": "0"}, "properties"),
        (("resources", "execution", "expiration"), 5.0, "expiration must be later"),
        (("down",), "3,a", "down"),
        (("expiration",), "tomorrow", "expiration"),
        (("expiration",), "1969-12-31T23:59:59Z", "must not be before 1970-01-01T00:00:00Z"),
        (("down",), "3-1", "range '3-1' is reversed"),
        (("resources", "execution", "nodelist"), ["node[0-1]"], "names 2 hosts for 4 ranks"),
        (("resources", "execution", "nodelist"), ["node[0-9]"], "names 10 hosts for 4 ranks"),
        (("resources", "execution", "nodelist"), ["n[3-1]"], "range '3-1' is reversed"),
        (("policy", "claimTimeout"), "99999999999h", "is not a duration"),
        (("policy", "defaultDuration"), "48h", "must not be longer than policy.maxDuration"),
        (("policy", "maxDuration"), "0s", "maxDuration must be longer than zero"),
        (("namespaceSelector",), {"matchExpressions": [{"key": "a", "operator": "In"}]}, "values"),
        (
            ("namespaceSelector",),
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            "takes no values",
        ),
    ],
)
def test_pool_spec_rejections(path: tuple[Any, ...], value: Any, fragment: str) -> None:
    data = copy.deepcopy(POOL_SPEC)
    if path == ("resources", "execution", "expiration"):
        data["resources"]["execution"]["starttime"] = 10.0
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    _reject(ResourcePoolSpec, data, fragment)


def test_enum_values_are_the_design_vocabulary() -> None:
    assert [p.value for p in Phase] == ["Pending", "Scheduled", "Active", "Expired", "Failed"]
    assert [m.value for m in Mode] == ["exclusive", "shared"]
    assert [c.value for c in ClaimPolicy] == ["Auto", "Manual"]


def test_models_accept_what_kopf_hands_over() -> None:
    import kopf

    body = kopf.Body(
        {
            "apiVersion": "respool.io/v1alpha1",
            "kind": "ResourceReservation",
            "metadata": {"name": "n", "namespace": "ns", "generation": 1},
            "spec": RESERVATION_SPEC,
            "status": {"phase": "Scheduled", "preReservationId": "rack-a-3"},
        }
    )
    spec = ResourceReservationSpec.model_validate(body.spec)
    status = ResourceReservationStatus.model_validate(body.status)
    assert spec.to_wire() == RESERVATION_SPEC
    assert status.phase is Phase.SCHEDULED and status.pre_reservation_id == "rack-a-3"
    assert ResourceReservation.model_validate(body).spec.pool == "rack-a"


# An explicit alphabet: ASCII the parsers care about plus a few non-ASCII, control and astral
# characters. st.text()'s default (all of Unicode) first builds Hypothesis' character map,
# which on a cold machine took over a second inside "input generation" and failed the health
# check now and then; this alphabet costs nothing to set up and keeps the interesting cases.
_FUZZ_ALPHABET = "azAZ09-_.:/[],*^+ \t\n\x00\x7fé日\u200b\U0001f600"
_FUZZ_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=_FUZZ_ALPHABET, max_size=30),
    st.sampled_from(
        [
            "1h",
            "0s",
            "-1h",
            "99999999999h",
            "2026-12-01T08:00:00Z",
            "9999-12-31T23:59:59-23:59",
            "0-3",
            "node[0-3]",
            "exclusive",
            "Manual",
            "rack-a",
            "[]",
            "1e9s",
        ]
    ),
)
_FUZZ_JSON = st.recursive(
    _FUZZ_VALUES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet=_FUZZ_ALPHABET, max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(
    st.dictionaries(
        st.sampled_from([*sorted(RESERVATION_SPEC), "resources", "duration", "bogus"]),
        _FUZZ_JSON,
        max_size=8,
    )
)
def test_fuzzed_reservation_specs_fail_only_with_validation_errors(data: dict[str, Any]) -> None:
    with contextlib.suppress(ValidationError):
        ResourceReservationSpec.model_validate({**RESERVATION_SPEC, **data})


@given(
    st.dictionaries(
        st.sampled_from([*sorted(POOL_SPEC), "expiration", "bogus"]), _FUZZ_JSON, max_size=6
    ),
    _FUZZ_JSON,
)
def test_fuzzed_pool_specs_fail_only_with_validation_errors(
    data: dict[str, Any], r_lite: Any
) -> None:
    spec = copy.deepcopy(POOL_SPEC)
    spec["resources"]["execution"]["R_lite"] = r_lite
    with contextlib.suppress(ValidationError):
        ResourcePoolSpec.model_validate({**spec, **data})


# ---------------------------------------------------------------------------------------------
# The cost budget of a reservation's constraints (issue 11): refused for what it would cost,
# before that cost is paid.

_CHILDREN = ("and", "or", "not")


def _tree(levels: int, width: int, leaf: dict[str, Any]) -> dict[str, Any]:
    """A constraint object with `width` children under each of and/or/not, `levels` deep."""
    node = dict(leaf)
    if levels > 1:
        for operator in _CHILDREN:
            node[operator] = [_tree(levels - 1, width, leaf) for _ in range(width)]
    return node


@pytest.mark.parametrize(
    ("constraints", "fragment"),
    [
        # The largest tree the schema's shape allows (601 objects).
        (_tree(3, 8, {}), "at most 32 constraint objects"),
        (_tree(2, 8, {"properties": ["a100"] * 11}), "at most 256 properties"),
        ({"hostlist": ["n[0-4096]"]}, "more than 4096 host names"),
        # The CPU bomb: 8 branches of 8 x 'n0[0-262143]' (16.7 million names).
        ({"or": [{"hostlist": ["n0[0-262143]"] * 8}] * 8}, "more than 4096 host names"),
        ({"hostlist": ["a[0-2047]", "b[0-2047]"], "or": [{"hostlist": ["c1"]}]},
         "more than 4096 host names"),
    ],
    ids=["objects", "terms", "hosts-one", "hosts-bomb", "hosts-summed"],
)
def test_constraints_past_the_cost_budget_are_refused(constraints: Any, fragment: str) -> None:
    _reject(ResourceReservationSpec, {**RESERVATION_SPEC, "constraints": constraints}, fragment)


def test_constraints_at_the_cost_budget_are_accepted() -> None:
    # 32 objects, 256 terms, 4096 host names: the most one reservation may ask to evaluate.
    at_budget = _tree(2, 8, {"properties": ["a100"] * 9})  # 25 objects, 225 terms
    at_budget["and"][0]["or"] = [{"ranks": "0"} for _ in range(7)]  # 32 objects, 232 terms
    at_budget["properties"] = ["a100"] * 17  # 240 terms
    at_budget["hostlist"] = [f"n[{i * 256}-{i * 256 + 255}]" for i in range(16)]  # 256 terms
    assert constraint_cost(at_budget) == (32, 256, 4096)
    ResourceReservationSpec.model_validate({**RESERVATION_SPEC, "constraints": at_budget})
    one_host_more = {**at_budget, "hostlist": [*at_budget["hostlist"][:-1], "n[3840-4096]"]}
    _reject(ResourceReservationSpec, {**RESERVATION_SPEC, "constraints": one_host_more},
            "more than 4096 host names")
    one_term_more = {**at_budget, "properties": [*at_budget["properties"], "a100"]}
    _reject(ResourceReservationSpec, {**RESERVATION_SPEC, "constraints": one_term_more},
            "at most 256 properties")


@given(st.from_regex(patterns.HOSTLIST, fullmatch=True))
def test_hostlist_size_counts_what_expanding_gives(text: str) -> None:
    try:
        expected: int | None = len(Hostlist(text))
    except ValueError:
        expected = None
    try:
        counted: int | None = hostlist_size(text)
    except ValueError:
        counted = None
    assert counted == expected


_hostile_leaf = st.fixed_dictionaries({}, optional={
    "properties": st.lists(st.sampled_from(["a100", "^a100", "x" * 128]), max_size=32),
    "hostlist": st.lists(st.sampled_from(["n0[0-262143]", "n[0-4095]", "n[0-9999999]", "h1"]),
                         max_size=32),
    "ranks": st.sampled_from(["0-9999999", "0", "3-1"]),
})
_hostile_constraints = st.recursive(
    _hostile_leaf,
    lambda inner: st.builds(
        lambda leaf, children: {**leaf, **children}, _hostile_leaf,
        st.dictionaries(st.sampled_from(_CHILDREN), st.lists(inner, max_size=8), max_size=3)),
    max_leaves=60,
)


@given(_hostile_constraints)
def test_costly_constraints_are_refused_cheaply_or_stay_within_the_budget(
        constraints: dict[str, Any]) -> None:
    # Whatever the tree, validating it never expands past the budget: accepted trees are
    # within it, refused ones name a bound (or what is malformed).
    try:
        ResourceReservationSpec.model_validate({**RESERVATION_SPEC, "constraints": constraints})
    except ValidationError as exc:
        assert str(exc)
        return
    objects, terms, hosts = constraint_cost(constraints)
    assert objects <= MAX_CONSTRAINT_NODES and terms <= MAX_CONSTRAINT_TERMS
    assert hosts <= MAX_CONSTRAINT_HOSTS
