"""Consumer Pods of reservations: who uses a reservation, and when it has been idle since.

A consumer of reservation ``<namespace>/<name>`` is a Pod in that namespace labelled
``respool.io/reservation: <name>`` that has not finished (phase neither Succeeded nor
Failed): a gated or not yet scheduled Pod counts (it is waiting to use the reservation), and
so does one being deleted (it still runs until it is gone). The Pods come from the labelled
Pod watch that `pod_gates.GateLifter` keeps (the operator watches Pods only with the webhook
on), through `Controller`, into a `ConsumerTracker`; nothing here does I/O.

What the pool actor writes (`status.consumers`) is built by `status_field`, a pure function
of the tracker's `ConsumerView`, the reservation's phase and its spec; `idle_deadline` says
when an Active hold with ``spec.idleTimeout`` and no consumer is released (Expired, reason
``Idle``). Both are called from `lifecycle`, so the consumer count is part of the status the
actor builds and commits (a status written by anyone else is overwritten by the actor).

The idle clock (docs/api.md): it runs from the latest of the window's start (Active), the
instant the last consumer was seen to go, and the instant this operator process first listed
the Pods. So a restart starts the clock again - never an early release because Pods went
unseen while the operator was away - and until the first listing is complete nothing is
judged idle and ``status.consumers`` is left as it was (`ConsumerTracker.view` is None).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from respool.api import format_time
from respool.api.models import MAX_CONSUMERS_LISTED

#: The label that names a Pod's reservation (the webhook's, see admission.RESERVATION_LABEL).
RESERVATION_LABEL = "respool.io/reservation"
FINISHED = frozenset({"Succeeded", "Failed"})

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class PodState:
    """What is kept of one consumer Pod."""

    name: str
    running: bool
    node: str  # spec.nodeName ("" while not bound)
    deleting: bool


@dataclass(frozen=True)
class ConsumerView:
    """A reservation's consumers as the operator sees them now."""

    count: int
    running: int
    pods: tuple[str, ...]  # the first MAX_CONSUMERS_LISTED names, sorted
    #: With no consumer: since when (epoch seconds) none has been seen (see the module doc).
    empty_since: float | None


def pod_key(raw: Mapping[str, Any]) -> tuple[Key, Key] | None:
    """(the Pod's (namespace, name), its reservation's (namespace, name)), or None."""
    metadata = raw.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "")
    name = str(metadata.get("name") or "")
    reservation = str((metadata.get("labels") or {}).get(RESERVATION_LABEL) or "")
    if not name or not reservation:
        return None
    return (namespace, name), (namespace, reservation)


def pod_state(raw: Mapping[str, Any]) -> PodState | None:
    """The consumer state of a Pod, None when it is finished (not a consumer)."""
    phase = (raw.get("status") or {}).get("phase")
    if phase in FINISHED:
        return None
    metadata = raw.get("metadata") or {}
    return PodState(name=str(metadata.get("name") or ""), running=phase == "Running",
                    node=str((raw.get("spec") or {}).get("nodeName") or ""),
                    deleting=bool(metadata.get("deletionTimestamp")))


@dataclass
class ConsumerTracker:
    """The consumer Pods of every reservation, from the labelled Pod listing and watch."""

    #: reservation -> pod name -> state
    pods: dict[Key, dict[str, PodState]] = field(default_factory=dict)
    #: pod -> its reservation (a relabelled Pod moves)
    owner: dict[Key, Key] = field(default_factory=dict)
    #: reservation -> when its last consumer went (epoch seconds)
    emptied: dict[Key, float] = field(default_factory=dict)
    #: When every watched Pod collection had been listed once (None: not yet).
    synced_at: float | None = None

    def on_pod(self, event_type: str | None, raw: Mapping[str, Any], now: float) -> set[Key]:
        """Apply one Pod event; returns the reservations whose view changed."""
        keys = pod_key(raw)
        if keys is None:
            metadata = raw.get("metadata") or {}
            pod = (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
            return self._drop(pod, now)
        pod, reservation = keys
        state = None if event_type == "DELETED" else pod_state(raw)
        changed = set()
        previous = self.owner.get(pod)
        if previous is not None and (previous != reservation or state is None):
            changed |= self._drop(pod, now)
        if state is None:
            return changed
        current = self.pods.setdefault(reservation, {})
        if current.get(pod[1]) != state:
            current[pod[1]] = state
            self.owner[pod] = reservation
            self.emptied.pop(reservation, None)
            changed.add(reservation)
        return changed

    def on_listing(self, namespace: str | None, present: Iterable[Key], now: float) -> set[Key]:
        """A full listing (of one namespace, or of all when None) named these Pods: those it
        did not name are gone (deleted while the watch was broken)."""
        seen = set(present)
        changed: set[Key] = set()
        for pod in [p for p in self.owner if p not in seen
                    and (namespace is None or p[0] == namespace)]:
            changed |= self._drop(pod, now)
        return changed

    def _drop(self, pod: Key, now: float) -> set[Key]:
        reservation = self.owner.pop(pod, None)
        if reservation is None:
            return set()
        current = self.pods.get(reservation, {})
        current.pop(pod[1], None)
        if not current:
            self.pods.pop(reservation, None)
            self.emptied[reservation] = now
        return {reservation}

    def mark_synced(self, now: float) -> None:
        if self.synced_at is None:
            self.synced_at = now

    def forget(self, reservation: Key) -> None:
        """The reservation is gone: its idle record goes (its Pods stay tracked)."""
        self.emptied.pop(reservation, None)

    def view(self, namespace: str, name: str) -> ConsumerView | None:
        """The consumers of a reservation; None until the Pods were listed once."""
        if self.synced_at is None:
            return None
        key = (namespace, name)
        current = self.pods.get(key)
        if not current:
            return ConsumerView(0, 0, (), max(self.synced_at, self.emptied.get(key, 0.0)))
        names = tuple(sorted(current)[:MAX_CONSUMERS_LISTED])
        running = sum(1 for state in current.values() if state.running)
        return ConsumerView(len(current), running, names, None)

    def bound(self, namespace: str, name: str) -> list[PodState]:
        """The consumers bound to a Node and not being deleted (what an eviction takes)."""
        return sorted((state for state in (self.pods.get((namespace, name)) or {}).values()
                       if state.node and not state.deleting), key=lambda state: state.name)


def idle_since(view: ConsumerView, active_since: float) -> float | None:
    """Since when an Active reservation with no consumer has been idle (None: it has some)."""
    if view.count or view.empty_since is None:
        return None
    # Whole seconds, as every time the decisions write (status text stays stable).
    return float(math.floor(max(view.empty_since, active_since)))


def idle_deadline(idle_timeout: float | None, view: ConsumerView | None,
                  active_since: float) -> float | None:
    """When an Active reservation is released for idleness (None: not while this holds)."""
    if idle_timeout is None or view is None:
        return None
    since = idle_since(view, active_since)
    return None if since is None else since + idle_timeout


def status_field(view: ConsumerView | None, old: Any, *, active: bool,
                 idle_timeout: float | None, active_since: float | None) -> Any:
    """``status.consumers`` as it should be written: with consumers, their count, how many
    run and the first names; with none, ``{count: 0, idleSince}`` only for an Active hold with
    an idleTimeout (what the idle clock says), else absent - so reservations that have no
    Pods cost no write. Unknown consumers (`view` None): the old value stays."""
    if view is None:
        return old
    if view.count:
        return {"count": view.count, "running": view.running, "pods": list(view.pods)}
    if active and idle_timeout is not None and active_since is not None:
        since = idle_since(view, active_since)
        if since is not None:
            return {"count": 0, "idleSince": format_time(since)}
    return None


#: How often at most a pool's actor decides again the reservations whose consumers changed:
#: Pods starting in a burst cost one status write per reservation per interval, not one per
#: Pod (a decision due anyway carries the latest count with it).
REFRESH_INTERVAL = 1.0


class Coalescer:
    """Collects keys and hands them over together, at most once per `interval` (trailing:
    the first key waits `interval`, later ones ride along)."""

    def __init__(self, flush: Callable[[set[str]], None], interval: float = REFRESH_INTERVAL
                 ) -> None:
        self._flush = flush
        self.interval = interval
        self._due: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, keys: Iterable[str]) -> None:
        self._due.update(keys)
        if self._due and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._fire)

    def _fire(self) -> None:
        self._timer = None
        due, self._due = self._due, set()
        if due:
            self._flush(due)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()
