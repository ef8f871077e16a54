"""What the mutating admission webhook does to a Pod that names a reservation.

A Pod labelled ``respool.io/reservation: <name>`` uses the ResourceReservation ``<name>`` of
its own namespace. At its creation the webhook (served by the operator through kopf, see
`respool.controller.webhook`):

- refuses it, saying which, when that reservation does not exist, exists only in another
  namespace, or is Failed or Expired;
- gives it, for an exclusive reservation, the toleration of the taint of enforcing pools
  (``respool.io/reserved``, ``operator: Exists``: the taint's value names whichever exclusive
  holder a Node carries, and the node affinity below confines the Pod to its own Nodes);
- when the reservation is Active: a required node affinity to the reservation's granted Nodes
  (``matchFields`` on ``metadata.name``, ANDed into every term the Pod already has);
- otherwise (Pending, Scheduled): the scheduling gate ``respool.io/reservation``. The operator
  (`respool.controller.pod_gates`) adds the node affinity and lifts the gate in one write when
  the reservation becomes Active: a Scheduled window can still be re-planned onto other Nodes
  before it opens, and a Pod's node affinity can only be narrowed, never replaced, later.

Everything here is pure (no I/O): `decide` is given the Pod and what is known of the
reservations; `ReservationIndex` is fed the operator's reservation listing and watch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from respool.controller.node_enforcement import RESERVED_TAINT_KEY, TAINT_EFFECT
from respool.pool import Hostlist

RESERVATION_LABEL = "respool.io/reservation"
SCHEDULING_GATE = "respool.io/reservation"
TOLERATION = {"key": RESERVED_TAINT_KEY, "operator": "Exists", "effect": TAINT_EFFECT}
ENDED_PHASES = ("Failed", "Expired")


@dataclass(frozen=True)
class ReservationFacts:
    """What admission needs to know of one reservation."""

    namespace: str
    name: str
    phase: str
    mode: str
    nodes: tuple[str, ...]
    reason: str
    end_time: str

    @classmethod
    def from_object(cls, raw: Mapping[str, Any]) -> ReservationFacts:
        metadata = raw.get("metadata") or {}
        spec = raw.get("spec") or {}
        status = raw.get("status") or {}
        allocated = status.get("allocated") or {}
        try:
            nodes = tuple(Hostlist(str(allocated.get("nodelist") or "")))
        except (ValueError, TypeError):
            nodes = ()
        reason = ""
        for condition in status.get("conditions") or []:
            if condition.get("type") in ("Stalled", "Ready") and condition.get("reason"):
                reason = str(condition["reason"])
                if condition.get("type") == "Stalled" and condition.get("status") == "True":
                    break
        return cls(namespace=str(metadata.get("namespace") or ""),
                   name=str(metadata.get("name") or ""),
                   phase=str(status.get("phase") or "Pending"),
                   mode=str(allocated.get("mode") or spec.get("mode") or "exclusive"),
                   nodes=nodes, reason=reason, end_time=str(status.get("endTime") or ""))


class ReservationIndex:
    """Reservations by namespace and name (and the namespaces each name is used in)."""

    def __init__(self) -> None:
        self._by_uid: dict[str, tuple[str, str]] = {}
        self._facts: dict[tuple[str, str], ReservationFacts] = {}
        self._namespaces: dict[str, set[str]] = {}

    def on_reservation(self, event_type: str | None, raw: Mapping[str, Any]) -> None:
        metadata = raw.get("metadata") or {}
        uid = str(metadata.get("uid") or "")
        if not uid:
            return
        if event_type == "DELETED":
            key = self._by_uid.pop(uid, None)
            if key is not None:
                self._facts.pop(key, None)
                names = self._namespaces.get(key[1])
                if names is not None:
                    names.discard(key[0])
                    if not names:
                        del self._namespaces[key[1]]
            return
        facts = ReservationFacts.from_object(raw)
        key = (facts.namespace, facts.name)
        self._by_uid[uid] = key
        self._facts[key] = facts
        self._namespaces.setdefault(facts.name, set()).add(facts.namespace)

    def get(self, namespace: str, name: str) -> ReservationFacts | None:
        return self._facts.get((namespace, name))

    def namespaces_of(self, name: str) -> list[str]:
        return sorted(self._namespaces.get(name, ()))

    def put(self, facts: ReservationFacts) -> None:
        """A reservation read from the API server (the watch had not told us yet)."""
        self._facts[(facts.namespace, facts.name)] = facts
        self._namespaces.setdefault(facts.name, set()).add(facts.namespace)

    def __len__(self) -> int:
        return len(self._facts)


class Refused(Exception):
    """The Pod may not be created; the message says why."""


def refusal(namespace: str, name: str, facts: ReservationFacts | None,
            elsewhere: list[str]) -> str | None:
    """Why a Pod of ``namespace`` may not use reservation ``name`` (None: it may)."""
    if facts is None:
        if elsewhere:
            return (f"ResourceReservation {name!r} is not in namespace {namespace!r} (it is in "
                    f"{', '.join(repr(n) for n in elsewhere)}): a Pod can only use a "
                    "reservation of its own namespace")
        return (f"ResourceReservation {name!r} does not exist in namespace {namespace!r} "
                f"(label {RESERVATION_LABEL} names the reservation the Pod uses)")
    if facts.phase == "Failed":
        why = f" ({facts.reason})" if facts.reason else ""
        return f"ResourceReservation {name!r} in namespace {namespace!r} is Failed{why}: no Pod can use it"
    if facts.phase == "Expired":
        when = f" at {facts.end_time}" if facts.end_time else ""
        return (f"ResourceReservation {name!r} in namespace {namespace!r} has Expired{when}: "
                "no Pod can use it")
    return None


def add_node_affinity(spec: dict[str, Any], nodes: tuple[str, ...]) -> None:
    """AND 'the Node is one of ``nodes``' into the Pod's required node affinity (in place)."""
    requirement = {"key": "metadata.name", "operator": "In", "values": list(nodes)}
    affinity = spec.setdefault("affinity", {}) or {}
    spec["affinity"] = affinity
    node_affinity = affinity.setdefault("nodeAffinity", {}) or {}
    affinity["nodeAffinity"] = node_affinity
    required = node_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {}) or {}
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = required
    terms = required.get("nodeSelectorTerms") or [{}]
    for term in terms:
        fields = term.setdefault("matchFields", [])
        if requirement not in fields:
            fields.append(requirement)
    required["nodeSelectorTerms"] = terms


def mutated_spec(spec: Mapping[str, Any], facts: ReservationFacts) -> dict[str, Any]:
    """The Pod spec after admission (see the module docstring)."""
    result = copy.deepcopy(dict(spec))
    if facts.mode == "exclusive":
        tolerations = result.setdefault("tolerations", [])
        if TOLERATION not in tolerations:
            tolerations.append(dict(TOLERATION))
    if facts.phase == "Active":
        if facts.nodes:
            add_node_affinity(result, facts.nodes)
    else:
        gates = result.setdefault("schedulingGates", [])
        if not any(gate.get("name") == SCHEDULING_GATE for gate in gates):
            gates.append({"name": SCHEDULING_GATE})
    return result
