"""Reading a respool object's conditions (shared by the client and the dashboard)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(item, dict) and item.get("type") == kind:
            return item
    return None


def reason_of(obj: Mapping[str, Any]) -> str | None:
    """The machine reason why a reservation is not (yet) granted, if the operator gave one."""
    for kind in ("Stalled", "Reconciling"):
        found = condition(obj, kind)
        if found is not None and found.get("status") == "True" and found.get("reason"):
            return str(found["reason"])
    return None
