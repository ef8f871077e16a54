"""The two CustomResourceDefinitions, built from the pydantic models.

The models in ``respool.api.models`` are the single source of the schemas: ``generate()`` takes
their JSON schema (pydantic's) and turns it into a Kubernetes *structural* schema:

- ``$ref``s are inlined (CRD schemas cannot reference), ``Optional[X]`` becomes ``X`` (absent
  fields are simply left out on the wire; an explicit ``null`` is pruned by the API server),
  titles are dropped, ``additionalProperties: false`` is dropped (pruning does that job) and
  free-form objects become ``x-kubernetes-preserve-unknown-fields``;
- map key patterns (``propertyNames``, which structural schemas do not allow) become CEL rules;
- the two recursive types, RFC 31 constraints and jobspec vertices, are unrolled to a fixed
  depth; below it, a list that must stay empty says why in plain words;
- ``x-kubernetes-*`` keys that the models carry in ``json_schema_extra`` (CEL rules, list types)
  pass through unchanged.

``render()`` writes one CRD as YAML; ``respool crds`` writes the files in ``crds/``, and
``tests/unit/test_crds_drift.py`` fails when the committed files differ from ``generate()``.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from respool.api import patterns
from respool.api.models import (
    CONSTRAINT_MAX_DEPTH,
    GROUP,
    JOBSPEC_MAX_DEPTH,
    MAX_LEAD_TIME,
    VERSION,
    Phase,
    ResourcePoolSpec,
    ResourcePoolStatus,
    ResourceReservationScheduleSpec,
    ResourceReservationScheduleStatus,
    ResourceReservationSpec,
    ResourceReservationStatus,
)

CATEGORY = "respool"
POOL_CRD_NAME = f"resourcepools.{GROUP}"
RESERVATION_CRD_NAME = f"resourcereservations.{GROUP}"

Schema = dict[str, Any]

# Recursive models: (deepest level that exists, message for nesting below it). At the deepest
# level a model keeps its plain fields but loses its own CEL rules (they look one level down).
_RECURSION_LIMITS: dict[str, tuple[int, str]] = {
    "Constraint": (
        CONSTRAINT_MAX_DEPTH,
        f"constraints may nest and/or/not at most {CONSTRAINT_MAX_DEPTH - 1} levels deep",
    ),
    "JobspecVertex": (
        JOBSPEC_MAX_DEPTH + 1,
        "jobspec vertices nest at most three levels: node > slot > core/gpu",
    ),
}

_DROPPED_KEYS = {"title", "$defs", "examples"}
KEY_MESSAGE = "x-respool-key-message"
"""json_schema_extra key: the message of the CEL rule that checks a map's keys."""


def _cel_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Converter:
    """Turns one pydantic JSON schema (with ``$defs``) into a structural schema."""

    def __init__(self, source: Schema) -> None:
        self.defs: dict[str, Schema] = source.get("$defs", {})

    def convert(self, node: Schema, stack: tuple[str, ...] = ()) -> Schema:
        node = dict(node)
        for key in _DROPPED_KEYS:
            node.pop(key, None)
        if "default" in node and node["default"] is None:
            del node["default"]  # Optional[X] = None: absent on the wire, no schema default

        if "$ref" in node:
            name = node.pop("$ref").rsplit("/", 1)[-1]
            target = self.convert_def(name, stack)
            # Keys beside the $ref (a field's description, default) win over the model's;
            # CEL rules of both the field and the model apply.
            rules = target.get("x-kubernetes-validations", []) + node.pop(
                "x-kubernetes-validations", []
            )
            merged = {**target, **node}
            if rules:
                merged["x-kubernetes-validations"] = rules
            return merged

        if "anyOf" in node:
            members = [m for m in node.pop("anyOf") if m.get("type") != "null"]
            if len(members) != 1:
                raise ValueError(f"not structural: a union of several types: {members}")
            return self.convert({**members[0], **node}, stack)

        if "allOf" in node:
            members = node.pop("allOf")
            merged = {}
            for member in members:
                merged.update(self.convert(member, stack))
            merged.update(node)
            return merged

        if "const" in node:
            node["enum"] = [node.pop("const")]

        kind = node.get("type")
        if kind == "object" or "properties" in node:
            return self._object(node, stack)
        if kind == "array":
            items = node.get("items", {})
            ref = items.get("$ref", "").rsplit("/", 1)[-1]
            if ref in _RECURSION_LIMITS and stack.count(ref) >= _RECURSION_LIMITS[ref][0]:
                return self._cut_off(node, _RECURSION_LIMITS[ref][1])
            node["items"] = self.convert(items, stack)
            return node
        if kind is None:
            raise ValueError(f"not structural: a schema without a type: {node}")
        return node

    def convert_def(self, name: str, stack: tuple[str, ...]) -> Schema:
        converted = self.convert(self.defs[name], (*stack, name))
        limit = _RECURSION_LIMITS.get(name)
        if limit is not None and stack.count(name) + 1 >= limit[0]:
            # The deepest level: its own rules would look at levels that no longer exist.
            converted.pop("x-kubernetes-validations", None)
        return converted

    def _object(self, node: Schema, stack: tuple[str, ...]) -> Schema:
        node["type"] = "object"
        properties = node.get("properties")
        if properties:
            node["properties"] = {
                name: self.convert(schema, stack) for name, schema in properties.items()
            }
        extra = node.pop("additionalProperties", None)
        keyed = node.pop("patternProperties", None)
        names = dict(node.pop("propertyNames", None) or {})
        key_message = node.pop(KEY_MESSAGE, None)
        if keyed:
            if len(keyed) != 1:
                raise ValueError(f"not structural: several key patterns {list(keyed)}")
            ((names["pattern"], extra),) = keyed.items()
        if isinstance(extra, dict) and extra:
            node["additionalProperties"] = self.convert(extra, stack)
        elif not properties and (extra is True or extra == {} or extra is None):
            node["x-kubernetes-preserve-unknown-fields"] = True
        checks = []
        if "pattern" in names:
            checks.append(f"k.matches({_cel_literal(names['pattern'])})")
        if "minLength" in names:
            checks.append(f"size(k) >= {names['minLength']}")
        if "maxLength" in names:
            checks.append(f"size(k) <= {names['maxLength']}")
        if checks:
            message = key_message or (
                "every key must match " + names.get("pattern", "the allowed form")
            )
            rules = list(node.get("x-kubernetes-validations", []))
            rules.append({"rule": f"self.all(k, {' && '.join(checks)})", "message": message})
            node["x-kubernetes-validations"] = rules
        return node

    @staticmethod
    def _cut_off(node: Schema, message: str) -> Schema:
        return {
            key: value
            for key, value in {
                "type": "array",
                "description": node.get("description"),
                "maxItems": 1,
                # Kept (not pruned) so that strict clients get the message below rather than
                # "unknown field"; size(self) == 0 never looks inside.
                "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "x-kubernetes-validations": [{"rule": "size(self) == 0", "message": message}],
            }.items()
            if value is not None
        }


def model_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of one model, as a CRD embeds it."""
    source = model.model_json_schema(by_alias=True, mode="validation")
    return _Converter(source).convert(source, (model.__name__,))


def _root_schema(
    spec: type[BaseModel],
    status: type[BaseModel],
    description: str,
    rules: list[dict[str, str]],
) -> Schema:
    schema: Schema = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": model_schema(spec),
            "status": model_schema(status),
        },
    }
    if rules:
        schema["x-kubernetes-validations"] = rules
    return schema


def _name_rule(kind: str) -> dict[str, str]:
    return {
        "rule": f"self.metadata.name.matches({_cel_literal(patterns.DNS_LABEL)}) "
        "&& size(self.metadata.name) <= 63",
        "message": f"a {kind} name must be a DNS label (lower-case letters, digits and '-', at "
        "most 63 characters): reservations name their pool in spec.pool",
    }


def _immutable_while_active(field: str, required: bool) -> dict[str, str]:
    same = (
        f"self.spec.{field} == oldSelf.spec.{field}"
        if required
        else f"has(self.spec.{field}) == has(oldSelf.spec.{field}) && "
        f"(!has(self.spec.{field}) || self.spec.{field} == oldSelf.spec.{field})"
    )
    return {
        "rule": "!has(oldSelf.status) || !has(oldSelf.status.phase) || "
        f"oldSelf.status.phase != '{Phase.ACTIVE.value}' || ({same})",
        "message": f"spec.{field} cannot change while the reservation is Active; delete the "
        "reservation and create a new one instead",
        "fieldPath": f".spec.{field}",
        "reason": "FieldValueForbidden",
    }


def _ready_column() -> dict[str, Any]:
    return {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    }


def _age_column() -> dict[str, Any]:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def _crd(
    *,
    kind: str,
    plural: str,
    singular: str,
    short: str,
    scope: str,
    schema: Schema,
    columns: list[dict[str, Any]],
    selectable: list[str],
) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
        "additionalPrinterColumns": columns,
        "schema": {"openAPIV3Schema": schema},
    }
    if selectable:
        version["selectableFields"] = [{"jsonPath": path} for path in selectable]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "respool", "app.kubernetes.io/part-of": "respool"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": [short],
                "categories": [CATEGORY],
            },
            "scope": scope,
            "versions": [version],
        },
    }


def pool_crd() -> dict[str, Any]:
    """The ResourcePool CRD (cluster-scoped, short name ``rpool``)."""
    schema = _root_schema(
        ResourcePoolSpec,
        ResourcePoolStatus,
        "A ResourcePool is a set of ranks (nodes) with cores and GPUs, described in Flux's R "
        "version 1, that ResourceReservations draw from.",
        [_name_rule("ResourcePool")],
    )
    columns = [
        {"name": "Ranks", "type": "integer", "jsonPath": ".status.capacity.node.total"},
        {"name": "Down", "type": "string", "jsonPath": ".status.down"},
        {"name": "Allocated", "type": "string", "jsonPath": ".status.allocated"},
        {"name": "Free Cores", "type": "integer", "jsonPath": ".status.capacity.core.free"},
        {"name": "Free GPUs", "type": "integer", "jsonPath": ".status.capacity.gpu.free"},
        _ready_column(),
        _age_column(),
        {"name": "Summary", "type": "string", "jsonPath": ".status.summary", "priority": 1},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    ]
    return _crd(
        kind="ResourcePool",
        plural="resourcepools",
        singular="resourcepool",
        short="rpool",
        scope="Cluster",
        schema=schema,
        columns=columns,
        selectable=[],
    )


def reservation_crd() -> dict[str, Any]:
    """The ResourceReservation CRD (namespaced, short name ``rsv``)."""
    rules = [
        _immutable_while_active("pool", required=True),
        _immutable_while_active("mode", required=True),
        _immutable_while_active("request", required=False),
        _immutable_while_active("resources", required=False),
        _immutable_while_active("constraints", required=False),
    ]
    schema = _root_schema(
        ResourceReservationSpec,
        ResourceReservationStatus,
        "A ResourceReservation asks a ResourcePool for resources for a time window, exclusive "
        "or shared, now or at the next available time.",
        rules,
    )
    columns = [
        {"name": "Pool", "type": "string", "jsonPath": ".spec.pool"},
        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "ID", "type": "string", "jsonPath": ".status.reservationId"},
        {"name": "Start", "type": "string", "jsonPath": ".status.startTime"},
        {"name": "End", "type": "string", "jsonPath": ".status.endTime"},
        {"name": "Nodes", "type": "string", "jsonPath": ".status.allocated.nodelist"},
        _age_column(),
        {"name": "Pre-ID", "type": "string", "jsonPath": ".status.preReservationId", "priority": 1},
        {"name": "Retries", "type": "integer", "jsonPath": ".status.retryCount", "priority": 1},
        {"name": "Queue", "type": "integer", "jsonPath": ".status.queuePosition", "priority": 1},
        {"name": "Start-By", "type": "string", "jsonPath": ".status.startNoLaterThan",
         "priority": 1},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    ]
    return _crd(
        kind="ResourceReservation",
        plural="resourcereservations",
        singular="resourcereservation",
        short="rsv",
        scope="Namespaced",
        schema=schema,
        columns=columns,
        selectable=[".spec.pool", ".status.phase"],
    )


#: A schedule's reservations are named <schedule>-<yyyymmddhhmm> (UTC): 13 characters more.
MAX_SCHEDULE_NAME = 50
_CRON = (r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
         r"|[^ \t]+[ \t]+[^ \t]+[ \t]+[^ \t]+[ \t]+[^ \t]+[ \t]+[^ \t]+)$")


def schedule_crd() -> dict[str, Any]:
    """The ResourceReservationSchedule CRD (namespaced, short name ``rsvs``)."""
    rules = [
        {
            "rule": f"size(self.metadata.name) <= {MAX_SCHEDULE_NAME}",
            "message": f"a ResourceReservationSchedule name has at most {MAX_SCHEDULE_NAME} "
            "characters: its reservations are named <schedule>-<yyyymmddhhmm>",
        },
        {
            "rule": "!has(self.spec.template.startTime) && !has(self.spec.template.endTime) "
            "&& !has(self.spec.template.duration)",
            "message": "spec.template.startTime, endTime and duration are set by the schedule "
            "(spec.schedule, spec.duration); leave them out of the template",
            "fieldPath": ".spec.template",
            "reason": "FieldValueForbidden",
        },
        {
            "rule": f"self.spec.schedule.matches({_cel_literal(_CRON)})",
            "message": "spec.schedule must be five cron fields (minute hour day-of-month month "
            "day-of-week, e.g. '0 2 * * *') or @yearly, @monthly, @weekly, @daily or @hourly",
            "fieldPath": ".spec.schedule",
        },
        {
            "rule": f"!has(self.spec.leadTime) || duration(self.spec.leadTime) <= "
            f"duration('{MAX_LEAD_TIME}')",
            "message": f"spec.leadTime is at most {MAX_LEAD_TIME} (30 days)",
            "fieldPath": ".spec.leadTime",
        },
    ]
    schema = _root_schema(
        ResourceReservationScheduleSpec,
        ResourceReservationScheduleStatus,
        "A ResourceReservationSchedule books recurring windows, like a CronJob: for each time "
        "its cron schedule names it creates an ordinary ResourceReservation ahead of time.",
        rules,
    )
    columns = [
        {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
        {"name": "Time Zone", "type": "string", "jsonPath": ".spec.timeZone"},
        {"name": "Duration", "type": "string", "jsonPath": ".spec.duration"},
        {"name": "Pool", "type": "string", "jsonPath": ".spec.template.pool"},
        {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
        {"name": "Last", "type": "string", "jsonPath": ".status.lastScheduleTime"},
        _age_column(),
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    ]
    return _crd(
        kind="ResourceReservationSchedule",
        plural="resourcereservationschedules",
        singular="resourcereservationschedule",
        short="rsvs",
        scope="Namespaced",
        schema=schema,
        columns=columns,
        selectable=[],
    )


def _tidy(node: Any) -> Any:
    """A fresh tree (no shared sub-objects, so YAML has no anchors) with ``type`` and
    ``description`` first in every schema node, for readable YAML."""
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    first = [key for key in ("type", "description") if key in node]
    rest = [key for key in node if key not in first]
    return {key: _tidy(node[key]) for key in first + rest}


def generate() -> list[dict[str, Any]]:
    """Every CRD, ResourcePool first."""
    return [_tidy(pool_crd()), _tidy(reservation_crd()), _tidy(schedule_crd())]


HEADER = (
    "# Generated by `respool crds` from the pydantic models in respool.api; do not edit.\n"
    "# tests/unit/test_crds_drift.py fails when this file and the models disagree.\n"
)


def file_name(crd: dict[str, Any]) -> str:
    """``<plural>.<group>.yaml``, the name ``respool crds`` writes the CRD under."""
    return f"{crd['metadata']['name']}.yaml"


def render(crd: dict[str, Any]) -> str:
    """The CRD as the YAML text committed in ``crds/``."""
    body = yaml.safe_dump(_tidy(crd), sort_keys=False, width=100, allow_unicode=True)
    return HEADER + "---\n" + body


def rendered() -> dict[str, str]:
    """File name -> YAML text for every CRD."""
    return {file_name(crd): render(crd) for crd in generate()}
