"""Priorities (issue 14): a reservation's priority from its PriorityClass and the pool's caps.

Pure: the PriorityClasses known (fed by the controller's listing and watch into
`PriorityClasses`), the pool's `policy.maxPriority` and the namespace's labels go in, a
`Resolved` priority comes out. The life cycle decides with it; what it says is written to
`status.priority` and, when a cap lowered it, to the message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from respool.controller.selectors import selector_matches

#: A PriorityClass's preemptionPolicy that forbids displacing others.
NEVER = "Never"


@dataclass(frozen=True)
class PriorityClass:
    name: str
    value: int
    global_default: bool = False
    preemption_policy: str = "PreemptLowerPriority"


@dataclass(frozen=True)
class Resolved:
    """The priority a reservation is decided with."""

    value: int = 0
    may_preempt: bool = True
    #: Why it is not what the class says (a cap), or why it waits (an unknown class); "" if
    #: nothing is worth saying.
    note: str = ""
    #: The class it names does not exist (yet): it waits for it.
    missing: bool = False


class PriorityClasses:
    """The cluster's PriorityClasses as the watch last reported them."""

    def __init__(self) -> None:
        self._classes: dict[str, PriorityClass] = {}

    def note(self, raw: Mapping[str, Any]) -> bool:
        """Record a PriorityClass object; True when that changed what is known."""
        name = (raw.get("metadata") or {}).get("name")
        if not name:
            return False
        try:
            value = int(raw.get("value") or 0)
        except (TypeError, ValueError):
            return False
        known = PriorityClass(name, value, bool(raw.get("globalDefault")),
                              str(raw.get("preemptionPolicy") or "PreemptLowerPriority"))
        if self._classes.get(name) == known:
            return False
        self._classes[name] = known
        return True

    def forget(self, name: str) -> bool:
        return self._classes.pop(name, None) is not None

    def get(self, name: str) -> PriorityClass | None:
        return self._classes.get(name)

    def global_default(self) -> PriorityClass | None:
        """The globalDefault class (the one with the highest value if several claim it, as
        the API server's admission picks)."""
        defaults = [c for c in self._classes.values() if c.global_default]
        return max(defaults, key=lambda c: (c.value, c.name)) if defaults else None


def cap_for(max_priority: Sequence[Mapping[str, Any]] | None,
            labels: Mapping[str, str]) -> int | None:
    """The highest priority a namespace with `labels` may use under `policy.maxPriority`:
    the highest value among the entries that select it, 0 when none does; None: no cap."""
    if not max_priority:
        return None
    values = [int(entry.get("value", 0)) for entry in max_priority
              if selector_matches(entry.get("namespaceSelector"), labels)]
    return max(values) if values else 0


def resolve(class_name: str | None, classes: PriorityClasses,
            max_priority: Sequence[Mapping[str, Any]] | None,
            labels: Mapping[str, str]) -> Resolved:
    """The priority of a reservation naming `class_name` (None: the globalDefault class, else
    0), capped by the pool's `policy.maxPriority` for its namespace's `labels`."""
    if class_name:
        found = classes.get(class_name)
        if found is None:
            return Resolved(0, False, f"PriorityClass {class_name!r} does not exist", True)
    else:
        found = classes.global_default()
    value = found.value if found is not None else 0
    may_preempt = found is None or found.preemption_policy != NEVER
    cap = cap_for(max_priority, labels)
    if cap is not None and value > cap:
        source = f"PriorityClass {found.name!r}" if found is not None else "the default"
        return Resolved(cap, may_preempt,
                        f"priority {value} of {source} lowered to {cap}, the most the pool's "
                        "policy.maxPriority lets this namespace use")
    return Resolved(value, may_preempt)
