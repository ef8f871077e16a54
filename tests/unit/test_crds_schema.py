"""Offline checks of the generated CRDs: structural schema rules, names, columns, CEL hygiene.

The API server is the final judge (tests/e2e/test_crds_*.py); these checks point at the exact
node when the generator produces something the API server would refuse.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from respool.api import ResourcePoolSpec, ResourceReservationSpec
from respool.api.crds import generate, pool_crd, reservation_crd

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_SCHEMA_KEYS = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "default",
    "pattern",
    "maxLength",
    "minLength",
    "maxItems",
    "minItems",
    "maxProperties",
    "minimum",
    "maximum",
    "format",
    "nullable",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
}


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("crd", generate(), ids=lambda c: c["metadata"]["name"])
def test_schema_is_structural(crd: dict[str, Any]) -> None:
    for path, node in _walk(_schema(crd)):
        unknown = set(node) - ALLOWED_SCHEMA_KEYS
        assert not unknown, f"{path}: keys a CRD schema does not allow: {unknown}"
        assert "type" in node, f"{path}: every node needs a type"
        assert not ("properties" in node and "additionalProperties" in node), path
        if node["type"] == "array":
            assert "maxItems" in node, f"{path}: unbounded list (CEL cost, hostile objects)"
        if node["type"] == "string" and path.startswith(".spec") and "enum" not in node:
            assert "maxLength" in node, f"{path}: unbounded string in spec"
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert node["type"] == "object" and "properties" not in node, path
        for rule in node.get("x-kubernetes-validations", []):
            assert set(rule) <= {"rule", "message", "fieldPath", "reason", "messageExpression"}
            assert rule["message"] and len(rule["message"]) > 20, f"{path}: unclear message {rule}"


def test_names_scope_short_names_category() -> None:
    pool, reservation = pool_crd(), reservation_crd()
    assert pool["spec"]["scope"] == "Cluster"
    assert reservation["spec"]["scope"] == "Namespaced"
    assert pool["spec"]["names"]["shortNames"] == ["rpool"]
    assert reservation["spec"]["names"]["shortNames"] == ["rsv"]
    for crd in (pool, reservation):
        assert crd["spec"]["group"] == "respool.io"
        assert crd["spec"]["names"]["categories"] == ["respool"]
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}


def _columns(crd: dict[str, Any]) -> list[str]:
    return [
        c["name"]
        for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]
        if not c.get("priority")
    ]


def test_printer_columns() -> None:
    assert _columns(pool_crd()) == [
        "Ranks",
        "Down",
        "Allocated",
        "Free Cores",
        "Free GPUs",
        "Ready",
        "Age",
    ]
    assert _columns(reservation_crd()) == [
        "Pool",
        "Mode",
        "Phase",
        "ID",
        "Start",
        "End",
        "Nodes",
        "Age",
    ]


def _resolve(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in re.sub(r"\[\?\(.*?\)\]", "", json_path).strip(".").split("."):
        if node is None:
            return None
        if node.get("type") == "array":
            node = node["items"]
        node = node.get("properties", {}).get(part)
    return node


@pytest.mark.parametrize("crd", generate(), ids=lambda c: c["metadata"]["name"])
def test_printer_columns_point_at_schema_fields_of_the_right_type(crd: dict[str, Any]) -> None:
    schema = _schema(crd)
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        if column["jsonPath"].startswith(".metadata"):
            continue
        field = _resolve(schema, column["jsonPath"])
        assert field is not None, (
            f"column {column['name']}: {column['jsonPath']} is not in the schema"
        )
        if column["type"] == "integer":
            assert field["type"] == "integer", column


def test_spec_and_status_carry_the_design_field_names() -> None:
    pool = _schema(pool_crd())["properties"]
    assert set(pool["spec"]["properties"]) == {
        "resources",
        "down",
        "trackNodes",
        "enforcement",  # wave 2 (DESIGN.md section 6)
        "expiration",
        "namespaceSelector",
        "policy",
        "maintenance",  # issue 14: maintenance windows
    }
    assert set(pool["spec"]["properties"]["maintenance"]["items"]["properties"]) == {
        "name",
        "ranks",
        "hostlist",
        "start",
        "duration",
        "end",
        "reason",
        "mode",
    }
    assert set(pool["spec"]["properties"]["policy"]["properties"]) == {
        "maxPriority",  # issue 14: priority caps per namespace
        "preemptionGracePeriod",  # issue 14
        "evictionGracePeriod",  # issue 13: spec.onEnd Evict (DESIGN does not name it)
        "defaultDuration",
        "maxDuration",
        "claimTimeout",
        "maxUnclaimedHold",  # issue 11: a Manual hold re-holds for nobody at most this long
        "reminders",  # issue 15: StartingSoon / EndingSoon Events
        "limits",  # issue 15: fair share per namespace
    }
    limits = pool["spec"]["properties"]["policy"]["properties"]["limits"]["items"]
    assert set(limits["properties"]) == {
        "namespaceSelector", "maxNodes", "maxCores", "maxGPUs", "maxNodeHoursPerWeek",
        "maxDuration", "maxAdvance", "allowedHours",
    }
    assert set(limits["properties"]["allowedHours"]["items"]["properties"]) == {
        "days", "from", "to", "timeZone",
    }
    assert set(pool["status"]["properties"]) == {
        "observedGeneration",
        "conditions",
        "allocationGeneration",
        "down",
        "allocated",
        "summary",
        "capacity",
        "reservations",
        "usage",  # issue 15: per namespace, what policy.limits count
        "maintenance",  # issue 14: the windows not yet ended
        "message",
    }
    assert set(pool["status"]["properties"]["capacity"]["properties"]) == {"core", "gpu", "node"}
    rsv = _schema(reservation_crd())["properties"]
    assert set(rsv["spec"]["properties"]) == {
        "pool",
        "mode",
        "request",
        "resources",
        "constraints",
        "startTime",
        "endTime",
        "duration",
        "nextAvailable",
        "maxRetry",
        "maxWait",
        "claimPolicy",
        "claimed",
        "config",
        "priorityClassName",  # issue 14
        "preemptible",
        "onEnd",  # issue 13 (DESIGN.md section 6)
        "idleTimeout",
    }
    assert set(rsv["spec"]["properties"]["request"]["properties"]) == {
        "nodes",
        "slots",
        "coresPerSlot",
        "gpusPerSlot",
        "exclusive",
    }
    assert set(rsv["status"]["properties"]) == {
        "phase",
        "preReservationId",
        "preReservationExpires",
        "reservationId",
        "startTime",
        "endTime",
        "firstRequestTime",
        "retryCount",
        "allocated",
        "nextAvailable",
        "config",
        "unclaimedSince",  # issue 11: when a Manual hold started going unclaimed
        "queuePosition",  # issue 16: where a waiting reservation stands
        "startNoLaterThan",
        "priority",  # issue 14: the priority it is decided with
        "consumers",  # issue 13 (DESIGN.md section 6)
        "displacedBy",  # issue 14: no cascades across a restart
        "bookingSeal",  # issue 11: only what the operator sealed is restored
        "conditions",
        "observedGeneration",
        "message",
    }
    assert set(rsv["status"]["properties"]["allocated"]["properties"]) == {
        "ranks",
        "nodelist",
        "summary",
        "R",
        "mode",  # what a restore needs (spec.mode may change while Scheduled)
    }
    assert set(rsv["status"]["properties"]["consumers"]["properties"]) == {
        "count",
        "running",
        "pods",
        "idleSince",
    }
    assert set(rsv["status"]["properties"]["nextAvailable"]["properties"]) == {
        "available",
        "availStart",
        "availEnd",
    }
    assert rsv["status"]["properties"]["phase"]["enum"] == [
        "Pending",
        "Scheduled",
        "Active",
        "Expired",
        "Failed",
    ]


def test_schema_defaults_match_the_models() -> None:
    spec = _schema(reservation_crd())["properties"]["spec"]["properties"]
    model = ResourceReservationSpec.model_validate({"pool": "p"})
    assert spec["mode"]["default"] == model.mode.value
    assert spec["claimPolicy"]["default"] == model.claim_policy.value
    assert spec["nextAvailable"]["default"] is model.next_available
    assert spec["maxRetry"]["default"] == model.max_retry
    request = spec["request"]["properties"]
    assert {k: request[k].get("default") for k in request} == {
        "nodes": None,
        "slots": 1,
        "coresPerSlot": 1,
        "gpusPerSlot": 0,
        "exclusive": False,
    }
    policy = _schema(pool_crd())["properties"]["spec"]["properties"]["policy"]
    # maxDuration defaults to a day (issue 11): no tenant books a pool for years by default.
    # Reminders default to 15 minutes before a window starts and ends (issue 15).
    assert policy["default"] == {"defaultDuration": "1h", "maxDuration": "24h",
                                 "claimTimeout": "5m",
                                 "reminders": {"startingSoon": "15m", "endingSoon": "15m"}}
    defaults = ResourcePoolSpec.model_validate(
        {
            "resources": {
                "version": 1,
                "execution": {"R_lite": [{"rank": "0", "children": {"core": "0"}}]},
            }
        }
    ).policy
    assert policy["properties"]["defaultDuration"]["default"] == defaults.default_duration
    assert policy["properties"]["claimTimeout"]["default"] == defaults.claim_timeout


def test_recursive_types_are_unrolled_and_bounded() -> None:
    spec = _schema(reservation_crd())["properties"]["spec"]["properties"]
    level = spec["constraints"]
    for _ in range(2):
        level = level["properties"]["and"]["items"]
        assert "ranks" in level["properties"]
    leaf_and = level["properties"]["and"]
    assert leaf_and["maxItems"] == 1
    assert leaf_and["items"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert "nest" in leaf_and["x-kubernetes-validations"][0]["message"]
    vertex = spec["resources"]["items"]
    for _ in range(3):
        assert vertex["x-kubernetes-validations"], "levels 1-3 carry the shape rules"
        vertex = vertex["properties"]["with"]["items"]
    assert "x-kubernetes-validations" not in vertex
    assert vertex["properties"]["with"]["items"]["x-kubernetes-preserve-unknown-fields"] is True


def test_immutability_rules_cover_the_design_fields() -> None:
    rules = _schema(reservation_crd())["x-kubernetes-validations"]
    assert [r["fieldPath"] for r in rules] == [
        ".spec.pool",
        ".spec.mode",
        ".spec.request",
        ".spec.resources",
        ".spec.constraints",
    ]
    for rule in rules:
        assert "oldSelf.status.phase != 'Active'" in rule["rule"]


def test_every_committed_example_validates_against_the_models() -> None:
    examples = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
    assert examples, "manifests/examples/ is empty"
    models = {"ResourcePool": ResourcePoolSpec, "ResourceReservation": ResourceReservationSpec}
    kinds: set[str] = set()
    for path in examples:
        for document in yaml.safe_load_all(path.read_text()):
            if not document or document.get("kind") not in models:
                continue
            kinds.add(document["kind"])
            assert document["apiVersion"] == "respool.io/v1alpha1", path
            models[document["kind"]].model_validate(document["spec"])
    assert kinds == set(models)


def test_generator_merges_field_and_model_rules_and_refuses_unions() -> None:
    from pydantic import BaseModel, ConfigDict, Field

    from respool.api.crds import model_schema

    class Inner(BaseModel):
        model_config = ConfigDict(
            json_schema_extra={"x-kubernetes-validations": [{"rule": "true", "message": "inner"}]}
        )
        a: int = 0

    class Outer(BaseModel):
        inner: Inner | None = Field(
            default=None,
            json_schema_extra={"x-kubernetes-validations": [{"rule": "true", "message": "field"}]},
        )
        free: dict[str, Any] | None = None

    schema = model_schema(Outer)
    inner = schema["properties"]["inner"]
    assert [r["message"] for r in inner["x-kubernetes-validations"]] == ["inner", "field"]
    assert "default" not in inner and "title" not in inner
    assert schema["properties"]["free"] == {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }

    class Union(BaseModel):
        either: int | str

    with pytest.raises(ValueError, match="not structural"):
        model_schema(Union)


def _schema_fields(
    node: dict[str, Any], path: tuple[str, ...] = (), shapes: tuple[frozenset[str], ...] = ()
) -> set[tuple[str, ...]]:
    """Every field path the schema declares ("[]" for an array's items). Free-form nodes end
    a path; so does a node of the same shape as one of its ancestors (the unrolled constraint
    tree repeats itself: its own fields count once, at the top)."""
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return set()
    if node.get("type") == "array" and "items" in node:
        return _schema_fields(node["items"], (*path, "[]"), shapes)
    properties = node.get("properties") or {}
    shape = frozenset(properties)
    if shape in shapes:
        return set()
    fields: set[tuple[str, ...]] = set()
    for name, child in properties.items():
        fields.add((*path, name))
        fields |= _schema_fields(child, (*path, name), (*shapes, shape))
    return fields


def _sample_fields(
    node: dict[str, Any],
    value: Any,
    path: tuple[str, ...] = (),
    shapes: tuple[frozenset[str], ...] = (),
) -> set[tuple[str, ...]]:
    """The schema's field paths that `value` sets (walked like `_schema_fields`)."""
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return set()
    if node.get("type") == "array" and "items" in node:
        found: set[tuple[str, ...]] = set()
        for item in value if isinstance(value, list) else []:
            found |= _sample_fields(node["items"], item, (*path, "[]"), shapes)
        return found
    properties = node.get("properties") or {}
    shape = frozenset(properties)
    if shape in shapes or not isinstance(value, dict):
        return set()
    found = set()
    for name, child in properties.items():
        if name in value:
            found.add((*path, name))
            found |= _sample_fields(child, value[name], (*path, name), (*shapes, shape))
    return found


def test_the_round_trip_samples_set_every_field_the_schemas_declare() -> None:
    """tests/e2e/test_crds_register.py's pruning round trip promises that the API server keeps
    every field: that holds only while its samples set every field. A field added to the models
    without a sample value (as spec.enforcement once was: the server's default then showed up
    in the round trip) fails here, offline, naming the field."""
    from tests.e2e import test_crds_register as samples

    cases = [
        (pool_crd(), "spec", [samples.FULL_POOL_SPEC]),
        (pool_crd(), "status", [samples.FULL_POOL_STATUS]),
        (
            reservation_crd(),
            "spec",
            [samples.FULL_RESERVATION_SPEC, samples.FULL_RESERVATION_SPEC_ALTERNATIVES],
        ),
        (reservation_crd(), "status", [samples.FULL_RESERVATION_STATUS]),
    ]
    for crd, part, values in cases:
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][part]
        declared = _schema_fields(schema)
        set_by_samples: set[tuple[str, ...]] = set()
        for value in values:
            set_by_samples |= _sample_fields(schema, value)
        missing = sorted(".".join(field) for field in declared - set_by_samples)
        assert not missing, f"{crd['spec']['names']['kind']}.{part}: no sample sets {missing}"
