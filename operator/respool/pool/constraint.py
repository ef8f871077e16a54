"""RFC 31 constraints, evaluated to bitmasks over a pool's rank indices.

Semantics follow RFC 31 where Flux's Python pool deviates (documented in docs/engine.md):
``{"or": []}`` matches every rank, ``{"not": []}`` matches none, ``not`` negates the
conjunction of its operands, and a dict with several operators requires all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .hostlist import Hostlist, hostlist_size
from .idset import IDset
from .limits import MAX_DEPTH
from .rv1 import check_property_name

OPERATORS = ("properties", "hostlist", "ranks", "and", "or", "not")


class ConstraintContext(Protocol):
    """What a pool offers the evaluator: masks over its rank indices."""

    def _all_mask(self) -> int: ...
    def _property_mask(self, name: str) -> int: ...
    def _hostname_mask(self, hosts: Hostlist) -> int: ...
    def _ranks_mask(self, ranks: IDset) -> int: ...


def _string_list(value: object, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"constraint: {where} must be a list of strings")
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"constraint: {where}: {item!r} is not a string")
    return value


def validate_constraint(constraint: object, depth: int = 0, where: str = "constraint") -> None:
    """Raise ``ValueError`` naming the bad part of an RFC 31 constraint."""
    if depth > MAX_DEPTH:
        raise ValueError(f"constraint: nested deeper than {MAX_DEPTH}")
    if not isinstance(constraint, Mapping):
        raise ValueError(f"{where}: expected an object, got {constraint!r}")
    for key, value in constraint.items():
        here = f"{where}.{key}"
        if key not in OPERATORS:
            raise ValueError(f"{where}: unknown operator {key!r}")
        if key == "properties":
            if not isinstance(value, list):
                raise ValueError(f"{here} must be a list of property names")
            for prop in value:
                if not isinstance(prop, str):
                    raise ValueError(f"{here}: property {prop!r} is not a string")
                check_property_name(prop[1:] if prop.startswith("^") else prop, here)
        elif key == "hostlist":
            for text in _string_list(value, here):
                try:
                    hostlist_size(text)  # checked as Hostlist() checks it, not expanded
                except ValueError as err:
                    raise ValueError(f"{here}: {err}") from None
        elif key == "ranks":
            for text in _string_list(value, here):
                try:
                    IDset(text)
                except ValueError as err:
                    raise ValueError(f"{here}: {err}") from None
        else:
            if not isinstance(value, list):
                raise ValueError(f"{here} must be a list of constraints")
            for index, operand in enumerate(value):
                validate_constraint(operand, depth + 1, f"{here}[{index}]")


def evaluate_constraint(constraint: Mapping[str, Any], ctx: ConstraintContext) -> int:
    """The mask of rank indices matching an already validated constraint."""
    everything = ctx._all_mask()
    result = everything
    for key, value in constraint.items():
        if key == "properties":
            for prop in value:
                if prop.startswith("^"):
                    result &= everything & ~ctx._property_mask(prop[1:])
                else:
                    result &= ctx._property_mask(prop)
        elif key == "hostlist":
            hosts: list[str] = []
            for text in [value] if isinstance(value, str) else value:
                hosts.extend(Hostlist(text))
            result &= ctx._hostname_mask(Hostlist(hosts))
        elif key == "ranks":
            ranks = IDset()
            for text in [value] if isinstance(value, str) else value:
                ranks = ranks | IDset(text)
            result &= ctx._ranks_mask(ranks)
        elif key == "and":
            for operand in value:
                result &= evaluate_constraint(operand, ctx)
        elif key == "or":
            if value:
                any_mask = 0
                for operand in value:
                    any_mask |= evaluate_constraint(operand, ctx)
                result &= any_mask
        elif key == "not":
            conjunction = everything
            for operand in value:
                conjunction &= evaluate_constraint(operand, ctx)
            result &= everything & ~conjunction
        if not result:
            return 0
    return result
