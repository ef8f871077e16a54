"""A pool as its actor decides on it: the spec turned into a `Planner` and a `PoolContext`.

`PoolModel.apply` takes the pool's latest body and returns what changed (`PoolChange`):
which reservations to decide again, whether capacity was freed, the Events to post and
whether the pool's status should be written. It does no I/O and calls nothing back; the
actor acts on the result. Its state is what the spec last said: the planner (topology,
down ranks, expiration, every booking), the policy, the namespaceSelector, tracked Nodes,
whether the pool is being deleted or guarded by our finalizer, and what is wrong with it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic

from respool.api import Reason, ResourcePoolSpec, parse_time
from respool.controller import lifecycle, metrics, priorities
from respool.controller.booking_seal import BookingSeal
from respool.controller.lifecycle import (
    ACTIVE,
    FINALIZER,
    HOLDING_PHASES,
    PoolContext,
    Reservation,
)
from respool.controller.limits import UsageLedger
from respool.controller.ports import ClusterFacts
from respool.controller.selectors import selector_matches
from respool.pool import Block, Booking, Hostlist, IDset, Planner

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolEvent:
    """An Event about the pool (type, reason, message) for the actor to post."""

    type: str
    reason: str
    message: str


@dataclass
class PoolChange:
    """What applying the pool's body changed, for the actor to act on."""

    #: Reservations to decide again, in the order they were found (the actor's dirty set).
    dirty: list[str] = field(default_factory=list)
    #: Something was freed (ranks back up, a rebuild): waiters are retried.
    capacity_changed: bool = False
    events: list[PoolEvent] = field(default_factory=list)
    #: The pool's status should be written: None (no), "now", or "debounced".
    write_status: str | None = None
    #: The pool is gone (its metrics go with it).
    forgotten: bool = False


class PoolModel:
    """The pool's spec as the planner and context decisions use (one per actor)."""

    def __init__(self, name: str, facts: ClusterFacts, seal: BookingSeal | None = None) -> None:
        self.name = name
        self.facts = facts
        #: Seals what is decided and checks what is restored (status.bookingSeal).
        self.seal = seal
        #: The pool object's metadata.uid (a seal is bound to it).
        self.uid = ""
        self.planner: Planner | None = None
        self.context = PoolContext(name=name, exists=False, ready=False)
        #: What is wrong with the spec ("" when nothing), said in the pool's status.
        self.problem = ""
        #: The pool has a deletionTimestamp: nothing new is booked on it.
        self.deleting = False
        #: Our finalizer is on the pool: only then is anything new booked on it. A pool
        #: without it can vanish at once when deleted, and a grant made meanwhile would stand
        #: on a pool that is gone (found by the simulation).
        self.guarded = False
        self.selector: dict[str, Any] | None = None
        #: policy.limits select namespaces by label: their labels are needed as for selector.
        self.limits_select = False
        #: Windows of the last week that ended (policy.limits count their node-hours).
        self.ledger = UsageLedger()
        self.track_nodes = False
        self._node_ranks: dict[str, int] = {}
        self._R_key: str | None = None
        self._generation_seen: Any = None
        self._max_priority: list[dict[str, Any]] | None = None
        self._records: Mapping[str, Reservation] = {}

    def forget_object(self) -> None:
        """The pool was deleted or re-created: what was learnt of the old object (its
        problem, the generation seen) says nothing about the new one."""
        self._generation_seen = None
        self.problem = ""

    @property
    def reads_labels(self) -> bool:
        """Do decisions on this pool read namespaces' labels (its namespaceSelector, or a
        limit's)? Then they are fetched before deciding, and a change of them re-decides."""
        return (self.selector is not None or self.limits_select
                or any(entry.get("namespaceSelector") for entry in self._max_priority or []))

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        return self.facts.namespace_labels.get(namespace, {})

    def priority_of(self, class_name: str | None, namespace: str) -> priorities.Resolved:
        return priorities.resolve(class_name, self.facts.priority_classes, self._max_priority,
                                  self.facts.namespace_labels.get(namespace, {}))

    def name_of(self, uid: str) -> str | None:
        record = self._records.get(uid)
        return None if record is None else record.key

    def _apply_maintenance(self, spec: ResourcePoolSpec, records: Mapping[str, Reservation],
                           change: PoolChange) -> None:
        """Make the spec's maintenance windows the planner's blocks; the holders they reach
        are decided again (re-planned or cut back), and each new window is announced."""
        assert self.planner is not None
        blocks = []
        for window in spec.maintenance or []:
            if window.hostlist is not None:
                hosts = Hostlist(window.hostlist)
                ranks = IDset([self._node_ranks[h] for h in hosts if h in self._node_ranks])
            elif window.ranks is not None:
                ranks = IDset(window.ranks)
            else:
                ranks = IDset(self.planner.pool.to_resource_set().ranks)
            start, end = window.window()
            blocks.append(Block(window.name, start, end, ranks, window.mode.value,
                                window.reason or ""))
        before = {block.name: block for block in self.planner.maintenance()}
        generation = self.planner.generation
        touched = self.planner.set_maintenance(blocks)
        if self.planner.generation == generation:
            return
        change.capacity_changed = True  # a window moved or went: waiters are retried
        change.dirty.extend(uid for uid in touched if uid in records)
        for block in blocks:
            if before.get(block.name) != block:
                why = f": {block.reason}" if block.reason else ""
                change.events.append(PoolEvent(
                    "Normal", Reason.MAINTENANCE.value,
                    f"maintenance {lifecycle.maintenance_label(block)} on ranks "
                    f"{block.ranks or 'none'} ({block.mode}){why}"))

    def namespace_allowed(self, namespace: str) -> bool:
        if self.selector is None:
            return True
        return selector_matches(self.selector, self.facts.namespace_labels.get(namespace, {}))

    def apply(self, raw: dict[str, Any] | None, records: Mapping[str, Reservation], *,
              finalizer_added: bool, now: float) -> PoolChange:
        """Bring the model up to the pool's body `raw` (None: deleted). `records` are the
        pool's reservations (restored into a first planner); `finalizer_added` says that our
        finalizer was put on the pool even if `raw` does not show it yet."""
        change = PoolChange()
        if raw is None:
            if self.context.exists:
                logger.info("pool %s deleted", self.name)
            self.context = PoolContext(name=self.name, exists=False, ready=False)
            self.planner = None
            self.guarded = False
            self._R_key = None
            change.dirty.extend(records.keys())
            change.forgotten = True
            return change
        metadata = raw.get("metadata") or {}
        self.uid = str(metadata.get("uid") or "")
        guarded = FINALIZER in (metadata.get("finalizers") or []) or finalizer_added
        if guarded != self.guarded:
            self.guarded = guarded
            change.dirty.extend(records.keys())
        deleting = bool(metadata.get("deletionTimestamp"))
        if deleting != self.deleting:
            self.deleting = deleting
            change.dirty.extend(records.keys())  # waiters stop being booked on it
        if self.context.deleting != deleting:
            # Also when the spec below cannot be used and the old planner stays: decisions
            # taken meanwhile must know (a grant decided on a deleting pool is rolled back at
            # its write, and decided again - for ever, if this still said otherwise).
            self.context = dataclasses.replace(self.context, deleting=deleting)
        generation = metadata.get("generation")
        spec_raw = raw.get("spec") or {}
        try:
            spec = ResourcePoolSpec.model_validate(spec_raw)
            policy = lifecycle.Policy.from_model(spec.policy)
            expiration = parse_time(spec.expiration) if spec.expiration else 0.0
        except (pydantic.ValidationError, ValueError) as exc:
            self._set_problem(f"invalid spec: {_short(exc)}", generation, records, change)
            return change
        R: dict[str, Any] = spec_raw.get("resources") or {}
        R_key = json.dumps(R, sort_keys=True)
        if R_key != self._R_key:
            try:
                planner = Planner(R)
            except (ValueError, TypeError, KeyError, OSError) as exc:
                self._set_problem(f"invalid resources: {_short(exc)}", generation, records,
                                  change)
                return change
            first_build = self.planner is None
            self._rebuild(planner, records, change)
            if first_build:
                # The ledger of policy.limits starts from the Expired reservations still
                # present (an operator restart forgot what it had recorded).
                for record in records.values():
                    use = lifecycle.ended_use(record, planner, now)
                    if use is not None:
                        self.ledger.record_use(record.uid, record.namespace, use)
            self._R_key = R_key
            self._node_ranks = node_ranks(R)
        assert self.planner is not None
        def namespace_of(uid: str) -> str | None:
            record = records.get(uid)
            return None if record is None else record.namespace

        self._max_priority = [entry.to_wire() for entry in spec.policy.max_priority or []]
        self._records = records
        self.context = PoolContext(
            name=self.name, exists=True, ready=True, policy=policy,
            namespace_allowed=self.namespace_allowed, deleting=deleting,
            namespace_labels=self.namespace_labels, namespace_of=namespace_of,
            ledger=self.ledger, uid=self.uid, seal=self.seal,
            priority_of=self.priority_of, name_of=self.name_of)
        self._apply_maintenance(spec, records, change)
        self.selector = spec_raw.get("namespaceSelector")
        self.limits_select = any(limit.selector for limit in policy.limits)
        self.problem = ""
        if self.planner.expiration != expiration:
            self.planner.set_expiration(expiration)
            change.dirty.extend(records.keys())
        self.track_nodes = spec.track_nodes
        self._apply_down(IDset(spec.down or ""), records, change)
        if generation != self._generation_seen:
            self._generation_seen = generation
            change.dirty.extend(records.keys())
            change.write_status = "now"
        else:
            change.write_status = "debounced"
        return change

    def _set_problem(self, problem: str, generation: Any, records: Mapping[str, Reservation],
                     change: PoolChange) -> None:
        if problem != self.problem:
            logger.warning("pool %s: %s", self.name, problem)
            change.events.append(PoolEvent("Warning", Reason.INVALID_RESOURCES.value, problem))
        self.problem = problem
        self._generation_seen = generation
        if self.planner is None:
            # Never usable yet: reservations wait. (A pool that was usable keeps its planner,
            # so what was granted stays granted while the admin fixes the spec.)
            self.context = PoolContext(name=self.name, exists=True, ready=False, problem=problem,
                                       deleting=self.deleting)
            change.dirty.extend(records.keys())
        change.write_status = "now"

    def _rebuild(self, planner: Planner, records: Mapping[str, Reservation],
                 change: PoolChange) -> None:
        """A new topology: re-register every booking; what no longer fits is lost.

        The first build (start-up, or the pool came back) restores the committed grants from
        status. A rebuild carries over what the old planner holds - committed grants *and*
        decisions whose status write is still in flight: re-registering only the committed
        ones would hand an in-flight grant's cores to the next waiter, and both would land
        Active (review C1)."""
        first_build = self.planner is None
        if self.planner is None:
            for record in records.values():
                # Who displaced whom (status.displacedBy), whatever phase it is in now: a
                # displaced reservation must never displace its displacer (no cascades).
                planner.note_displaced(record.uid, _displacers(record.status))
            holders = sorted(
                (r for r in records.values() if r.phase in HOLDING_PHASES and not r.deleting),
                key=lambda r: (0 if r.phase == ACTIVE else 1, r.status.get("startTime") or ""))
            for record in holders:
                # Only what the operator sealed (status.bookingSeal) is re-registered.
                error = lifecycle.restore(record, planner, self.seal, self.uid)
                metrics.RESTORED.labels("ok" if error is None else "failed").inc()
                if error is not None:
                    logger.warning("pool %s: %s %s could not be re-registered: %s", self.name,
                                   record.phase, record.key, error)
                    change.dirty.append(record.uid)
        else:
            for uid, displacers in self.planner.displacements().items():
                planner.note_displaced(uid, displacers)
            for booking in _active_first(self.planner.bookings(), records):
                try:
                    planner.restore(booking.id, booking.R.to_dict(), booking.start,
                                    booking.end, booking.mode, booking.priority,
                                    booking.preemptible)
                    metrics.RESTORED.labels("ok").inc()
                except (ValueError, KeyError, TypeError, OSError) as exc:
                    metrics.RESTORED.labels("failed").inc()
                    logger.warning("pool %s: booking of %s could not be re-registered: %s",
                                   self.name, booking.id, exc)
                    if booking.id in records:
                        change.dirty.append(booking.id)
        self.planner = planner
        if not first_build:
            change.capacity_changed = True
        change.dirty.extend(records.keys())

    def _apply_down(self, spec_down: IDset, records: Mapping[str, Reservation],
                    change: PoolChange) -> None:
        assert self.planner is not None
        wanted = spec_down
        if self.track_nodes:
            unhealthy = self.facts.unhealthy_nodes
            ranks = [rank for host, rank in self._node_ranks.items() if host in unhealthy]
            if ranks:
                wanted = wanted | IDset(ranks)
        current = self.planner.down()
        newly_down = wanted - current
        back_up = current - wanted
        if newly_down:
            touched = self.planner.mark_down(str(newly_down))
            change.dirty.extend(uid for uid in touched if uid in records)
            change.events.append(PoolEvent("Warning", "RanksDown", f"ranks {newly_down} are down"))
        if back_up:
            self.planner.mark_up(str(back_up))
            change.capacity_changed = True
            # Active holders are decided again: ResourcesDegraded is lifted.
            change.dirty.extend(r.uid for r in records.values() if r.phase == ACTIVE)
            change.events.append(PoolEvent("Normal", "RanksUp", f"ranks {back_up} are up"))


def _active_first(bookings: list[Booking], records: Mapping[str, Reservation]) -> list[Booking]:
    """Bookings to carry into a new planner, the ones granted (Active) before the held windows,
    then by start: when the new topology cannot hold them all, a grant in use wins."""
    def key(booking: Booking) -> tuple[int, float]:
        record = records.get(booking.id)
        return (0 if record is not None and record.phase == ACTIVE else 1, booking.start)
    return sorted(bookings, key=key)


def node_ranks(R: Mapping[str, Any]) -> dict[str, int]:
    """Host name -> rank: names of the concatenated nodelist map onto the sorted ranks."""
    nodelist = ((R or {}).get("execution") or {}).get("nodelist") or []
    if not nodelist:
        return {}
    hosts = Hostlist(",".join(nodelist))
    return {host: rank for host, rank in zip(hosts, lifecycle.ranks_of(R or {}), strict=False)}


def _short(exc: BaseException) -> str:
    if isinstance(exc, pydantic.ValidationError):
        parts = []
        for error in exc.errors()[:3]:
            location = ".".join(str(item) for item in error.get("loc", ()))
            parts.append(f"{location}: {error.get('msg')}" if location else str(error.get("msg")))
        return "; ".join(parts)
    return str(exc)[:500]


def _displacers(status: Mapping[str, Any]) -> list[str]:
    listed = status.get("displacedBy")
    return [uid for uid in listed if isinstance(uid, str)] if isinstance(listed, list) else []
