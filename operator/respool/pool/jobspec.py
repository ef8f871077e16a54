"""Jobspec v1 resource requests (RFC 14/25) and the ``spec.request`` shorthand.

``parse_jobspec`` walks the resource tree the way Flux's ``Rv1Pool`` does and produces a
``ResourceRequest``. Counts may be ints, RFC 22 idset strings, RFC 45 range strings
(``"2-8"``, ``"2+"``, ``"2-8:2:*"``) or dicts ``{min, max, operator, operand}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .idset import IDset
from .limits import MAX_DEPTH

_RANGE = re.compile(
    r"(0|[1-9][0-9]*)(?:(\+)|-(0|[1-9][0-9]*))?(?::(0|[1-9][0-9]*)(?::([+*^]))?)?\Z"
)


@dataclass(frozen=True)
class ResourceCount:
    """A jobspec count: ``min``..``max`` (``max=None``: unbounded), stepped by operator/operand.

    ``values`` is set for an idset count with gaps (``"1,3,5"``).
    """

    min: int
    max: int | None
    operator: str = "+"
    operand: int = 1
    values: IDset | None = None

    @property
    def is_fixed(self) -> bool:
        return self.max == self.min

    @property
    def is_discrete(self) -> bool:
        """True when not every integer in [min, max] is a valid value."""
        if self.is_fixed:
            return False
        if self.values is not None:
            return True
        return not (self.operator == "+" and self.operand == 1)

    def scaled(self, factor: int) -> ResourceCount:
        if factor == 1:
            return self
        return ResourceCount(
            self.min * factor,
            None if self.max is None else self.max * factor,
            self.operator,
            self.operand,
            self.values,
        )

    def __str__(self) -> str:
        if self.is_fixed:
            return str(self.min)
        if self.values is not None:
            return str(self.values)
        text = f"{self.min}+" if self.max is None else f"{self.min}-{self.max}"
        if self.operator != "+" or self.operand != 1:
            text += f":{self.operand}:{self.operator}"
        return text

    @classmethod
    def from_count_spec(cls, spec: object, where: str = "count") -> ResourceCount:
        if isinstance(spec, bool):
            raise ValueError(f"{where}: invalid count {spec!r}")
        if isinstance(spec, int):
            if spec < 1:
                raise ValueError(f"{where}: count {spec} must be at least 1")
            return cls(spec, spec)
        if isinstance(spec, str):
            return cls._from_string(spec, where)
        if isinstance(spec, Mapping):
            return cls._from_dict(spec, where)
        raise ValueError(f"{where}: invalid count {spec!r}")

    @classmethod
    def _from_string(cls, text: str, where: str) -> ResourceCount:
        match = _RANGE.match(text)
        if match is not None:
            low = int(match.group(1))
            unbounded = match.group(2) is not None
            high: int | None = None if unbounded else int(match.group(3) or low)
            operand = int(match.group(4)) if match.group(4) is not None else 1
            operator = match.group(5) or "+"
            return cls._checked(low, high, operator, operand, where, text)
        try:
            ids = IDset(text)
        except ValueError:
            raise ValueError(f"{where}: invalid count {text!r}") from None
        if not ids:
            raise ValueError(f"{where}: invalid count {text!r}")
        if ids.first() < 1:
            raise ValueError(f"{where}: count {text!r} must be at least 1")
        if len(ids.intervals) == 1:
            return cls(ids.first(), ids.last())
        return cls(ids.first(), ids.last(), values=ids)

    @classmethod
    def _from_dict(cls, spec: Mapping[str, Any], where: str) -> ResourceCount:
        unknown = set(spec) - {"min", "max", "operator", "operand"}
        if unknown:
            raise ValueError(f"{where}: unknown count keys {sorted(unknown)}")
        if "min" not in spec:
            raise ValueError(f"{where}: count dict needs 'min'")
        low, high = spec["min"], spec.get("max")
        operator = spec.get("operator", "+")
        operand = spec.get("operand", 1)
        for name, value in (("min", low), ("max", high), ("operand", operand)):
            if value is None and name == "max":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where}: count {name} must be an integer, got {value!r}")
        if operator not in ("+", "*", "^"):
            raise ValueError(f"{where}: count operator must be '+', '*' or '^', got {operator!r}")
        return cls._checked(low, high, operator, operand, where, spec)

    @classmethod
    def _checked(
        cls, low: int, high: int | None, operator: str, operand: int, where: str, src: object
    ) -> ResourceCount:
        if low < 1:
            raise ValueError(f"{where}: count {src!r}: min must be at least 1")
        if high is not None and high < low:
            raise ValueError(f"{where}: count {src!r}: max is below min")
        if operator == "+" and operand < 1:
            raise ValueError(f"{where}: count {src!r}: operand must be at least 1 for '+'")
        if operator in ("*", "^") and operand < 2:
            raise ValueError(f"{where}: count {src!r}: operand must be at least 2 for {operator!r}")
        return cls(low, high, operator, operand)


@dataclass(frozen=True)
class ResourceRequest:
    """What ``ResourcePool.parse_resource_request`` returns (Flux ``Rv1Pool`` semantics).

    ``slot_count`` is per node when ``node_count`` is set, in total otherwise.
    """

    node_count: ResourceCount | None
    slot_count: ResourceCount
    slot_size: int
    gpu_per_slot: int
    duration: float
    constraint: dict[str, Any] | None
    exclusive: bool
    jobspec: dict[str, Any]

    @property
    def nnodes(self) -> int:
        return self.node_count.min if self.node_count is not None else 0

    @property
    def nnodes_max(self) -> int | None:
        return self.node_count.max if self.node_count is not None else None

    @property
    def nslots(self) -> int:
        if self.node_count is not None:
            return self.slot_count.min * self.nnodes
        return self.slot_count.min

    @property
    def is_discrete(self) -> bool:
        return self.slot_count.is_discrete or (
            self.node_count is not None and self.node_count.is_discrete
        )

    def __str__(self) -> str:
        slot = f"{self.slot_count}x(core={self.slot_size}"
        slot += f",gpu={self.gpu_per_slot})" if self.gpu_per_slot else ")"
        text = f"node={self.node_count}>{slot}" if self.node_count is not None else slot
        return text + (" exclusive" if self.exclusive else "")


class _Walk:
    def __init__(self) -> None:
        self.node_count: ResourceCount | None = None
        self.node_factor = 1
        self.slot_count: ResourceCount | None = None
        self.slot_size: int | None = None
        self.gpu_per_slot = 0
        self.exclusive = False

    def walk(self, vertices: object, factor: int, depth: int, where: str) -> None:
        if depth > MAX_DEPTH:
            raise ValueError(f"jobspec: resources nested deeper than {MAX_DEPTH} (depth)")
        if not isinstance(vertices, list):
            raise ValueError(f"jobspec: {where} must be a list of resource vertices")
        for index, vertex in enumerate(vertices):
            here = f"{where}[{index}]"
            if not isinstance(vertex, Mapping):
                raise ValueError(f"jobspec: {here} must be an object")
            kind = vertex.get("type")
            if not isinstance(kind, str) or not kind:
                raise ValueError(f"jobspec: {here}.type must be a non-empty string")
            if "count" not in vertex:
                raise ValueError(f"jobspec: {here} ({kind}): missing 'count'")
            count = ResourceCount.from_count_spec(vertex["count"], f"jobspec: {here}.count")
            exclusive = vertex.get("exclusive", False)
            if not isinstance(exclusive, bool):
                raise ValueError(f"jobspec: {here}.exclusive must be a boolean")
            child_factor = factor
            if kind == "node":
                self.node_count = count
                self.node_factor = factor
                if exclusive:
                    self.exclusive = True
            else:
                child_factor = factor * count.min
                if kind == "slot":
                    self.slot_count = count
                    if exclusive:
                        self.exclusive = True
                elif kind == "core":
                    self.slot_size = count.min
                elif kind == "gpu":
                    self.gpu_per_slot = count.min
            if "with" in vertex:
                self.walk(vertex["with"], child_factor, depth + 1, f"{here}.with")


def parse_jobspec(jobspec: object) -> ResourceRequest:
    if not isinstance(jobspec, Mapping):
        raise ValueError(f"jobspec: expected an object, got {type(jobspec).__name__}")
    resources = jobspec.get("resources")
    if not resources:
        raise ValueError("jobspec: empty resources")
    version = jobspec.get("version")
    attributes = jobspec.get("attributes")
    system = attributes.get("system") if isinstance(attributes, Mapping) else None
    if version == 1:
        if not isinstance(system, Mapping):
            raise ValueError("getting duration: Object item not found: system")
        if "duration" not in system:
            raise ValueError("getting duration: Object item not found: duration")
    duration_value = system.get("duration") if isinstance(system, Mapping) else None
    if duration_value is None:
        duration = 0.0
    else:
        if isinstance(duration_value, bool) or not isinstance(duration_value, int | float):
            raise ValueError(
                f"jobspec: attributes.system.duration must be a number, got {duration_value!r}"
            )
        duration = float(duration_value)
        if not math.isfinite(duration) or duration < 0:
            raise ValueError(
                f"jobspec: attributes.system.duration must be >= 0, got {duration_value!r}"
            )
    constraint = system.get("constraints") if isinstance(system, Mapping) else None
    if constraint is not None and not isinstance(constraint, Mapping):
        raise ValueError("jobspec: attributes.system.constraints must be an object")

    walk = _Walk()
    walk.walk(resources, 1, 1, "resources")
    if walk.slot_count is None:
        raise ValueError("Unable to determine slot count")
    if walk.slot_size is None:
        raise ValueError("Unable to determine slot size")
    node_count = walk.node_count
    slot_count = walk.slot_count
    if node_count is not None:
        node_count = node_count.scaled(walk.node_factor)
    elif walk.exclusive:
        node_count = slot_count
        slot_count = ResourceCount(1, 1)
    from .constraint import validate_constraint

    normalized = dict(constraint) if constraint else None
    if normalized is not None:
        validate_constraint(normalized)
    return ResourceRequest(
        node_count=node_count,
        slot_count=slot_count,
        slot_size=walk.slot_size,
        gpu_per_slot=walk.gpu_per_slot,
        duration=duration,
        constraint=normalized,
        exclusive=walk.exclusive,
        jobspec=dict(jobspec),
    )


def _positive(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def jobspec_from_shorthand(
    nodes: int | None = None,
    slots: int = 1,
    cores_per_slot: int = 1,
    gpus_per_slot: int = 0,
    exclusive: bool = False,
    duration: float = 0.0,
    constraints: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The jobspec v1 for the ``spec.request`` shorthand.

    Built the way ``flux run -N -n -c -g --exclusive`` builds one, except that ``slots``
    is per node when ``nodes`` is set.
    """
    if nodes is not None:
        _positive("nodes", nodes, 1)
    _positive("slots", slots, 1)
    _positive("coresPerSlot", cores_per_slot, 1)
    _positive("gpusPerSlot", gpus_per_slot, 0)
    if not isinstance(exclusive, bool):
        raise ValueError(f"exclusive must be a boolean, got {exclusive!r}")
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        raise ValueError(f"duration must be a number of seconds, got {duration!r}")
    if not math.isfinite(duration) or duration < 0:
        raise ValueError(f"duration must be a finite number >= 0, got {duration!r}")
    slot_children: list[dict[str, Any]] = [{"type": "core", "count": cores_per_slot}]
    if gpus_per_slot:
        slot_children.append({"type": "gpu", "count": gpus_per_slot})
    slot: dict[str, Any] = {"type": "slot", "count": slots, "label": "task", "with": slot_children}
    if nodes is not None:
        node: dict[str, Any] = {"type": "node", "count": nodes}
        if exclusive:
            node["exclusive"] = True
        node["with"] = [slot]
        resources = [node]
    else:
        if exclusive:
            slot["exclusive"] = True
        resources = [slot]
    system: dict[str, Any] = {"duration": float(duration)}
    if constraints:
        from .constraint import validate_constraint

        validate_constraint(constraints)
        system["constraints"] = dict(constraints)
    return {
        "version": 1,
        "resources": resources,
        "tasks": [{"command": ["respool"], "slot": "task", "count": {"per_slot": 1}}],
        "attributes": {"system": system},
    }
