"""What a pool actor writes to its pool object: the debounced status summary and our finalizer.

Both are written beside the decision loop, never in it: while the API server is away a write
can take seconds to fail, and decisions must resume the moment it is back. `PoolKeeper` keeps
their state (when the status is due, what was last written, whether the finalizer is on) and
makes the writes; each call returns what the actor has to do next (`FinalizerStep`, or whether
to wake its loop) instead of calling back into it. What the status says is
`pool_status.summary`, a pure function.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from respool.api import Reason
from respool.controller import metrics, pool_status
from respool.controller.finalizers import add_finalizer, remove_finalizer
from respool.controller.kubeapi import ApiError, pool_path
from respool.controller.lifecycle import FINALIZER, Reservation
from respool.controller.limits import UsageLedger
from respool.controller.pool_model import PoolEvent
from respool.controller.ports import PoolPort
from respool.pool import Planner

#: How often the pool's status.usage is looked at again while anything counts in it.
USAGE_REFRESH = 60.0

logger = logging.getLogger(__name__)


@dataclass
class FinalizerStep:
    """What keeping the pool's finalizer asks of the actor."""

    #: Our finalizer is on the pool now: waiters may be booked (the pool model is re-applied).
    guarded: bool = False
    events: list[PoolEvent] = field(default_factory=list)
    #: Write the pool's status at once (it now says why deletion is blocked).
    write_status_now: bool = False


class PoolKeeper:
    """The pool object's status summary (debounced) and our finalizer on it."""

    def __init__(self, name: str, port: PoolPort, retry_after: float) -> None:
        self.name = name
        self.port = port
        self.retry_after = retry_after
        #: When the status should next be written (None: nothing to write).
        self.due: float | None = None
        self.written_at = 0.0
        #: We put our finalizer on this object (its watch event may not have said so yet).
        self.finalizer_added = False
        #: A finalizer edit failed: the next pass is due then, even if nothing else happens.
        self.finalizer_retry_at: float | None = None
        self._last: dict[str, Any] | None = None
        self._conditions: list[dict[str, Any]] = []
        self._blocked_reported = False
        self._failures = 0

    def forget_object(self) -> None:
        """Deleted, or a new object under the same name: what we wrote to (or learnt about)
        the old object says nothing about the new one - its finalizer and its status must be
        written afresh even if they would read the same."""
        self._last = None
        self.finalizer_added = False
        self._conditions = []
        self._blocked_reported = False

    # -- status --------------------------------------------------------------------------

    def schedule(self, immediately: bool = False) -> bool:
        """Ask for a status write, at most every `pool_status_interval` unless `immediately`.
        True when it is now due sooner than before: the actor's loop, perhaps asleep until a
        later deadline (or none), must wake."""
        interval = 0.0 if immediately else self.port.pool_status_interval
        due = max(self.port.clock(), self.written_at + interval)
        if self.due is None or due < self.due:
            self.due = due
            return True
        return False

    def schedule_at(self, when: float) -> None:
        """Ask for a status write at `when` at the latest."""
        if self.due is None or when < self.due:
            self.due = when

    def next_pass(self) -> float | None:
        """When the pool object next needs a pass (status due, a finalizer edit to retry)."""
        times = [t for t in (self.due, self.finalizer_retry_at) if t is not None]
        return min(times) if times else None

    def take_due(self) -> bool:
        """Is a status write due now? (It is then no longer pending.)"""
        if self.due is None or self.port.clock() < self.due:
            return False
        self.due = None
        return True

    async def write_status(self, raw: dict[str, Any], records: Iterable[Reservation],
                           planner: Planner | None, *, problem: str, deleting: bool,
                           ledger: UsageLedger | None = None) -> bool:
        """Write the summary unless it says what was last written. True when it failed and
        was scheduled again sooner than anything before (the actor's loop must wake)."""
        status = self.summary(raw, records, planner, problem=problem, deleting=deleting,
                              ledger=ledger)
        if status.get("usage"):
            # Node-hours used and booked change as time passes, without any event: look
            # again a minute on (written only if the figures, to 0.1 node-hours, changed).
            self.schedule_at(self.port.clock() + USAGE_REFRESH)
        comparable = pool_status.without_times(status)
        if self._last is not None and comparable == self._last:
            return False
        metadata = raw.get("metadata") or {}
        ops = [{"op": "test", "path": "/metadata/uid", "value": metadata.get("uid")},
               {"op": "add", "path": "/status", "value": status}]
        try:
            await self.port.api.json_patch(pool_path(self.name, status=True), ops)
        except ApiError as exc:
            metrics.STATUS_WRITES.labels(
                "pool", "unavailable" if exc.unavailable else "error").inc()
            if exc.not_found:
                return False
            # A summary: the next write carries everything, so retry with a growing pause and
            # say so once, not once per attempt, while the API server is away.
            self._failures += 1
            log = logger.warning if self._failures == 1 else logger.debug
            log("pool %s: status write failed: %s", self.name, exc)
            self.written_at = self.port.clock() + min(2.0 ** self._failures, 8.0)
            return self.schedule()
        metrics.STATUS_WRITES.labels("pool", "ok").inc()
        if self._failures:
            logger.info("pool %s: status written again after %d failed attempts", self.name,
                        self._failures)
            self._failures = 0
        self._last = comparable
        self.written_at = self.port.clock()
        self._conditions = status.get("conditions") or []
        return False

    def summary(self, raw: dict[str, Any], records: Iterable[Reservation],
                planner: Planner | None, *, problem: str, deleting: bool,
                ledger: UsageLedger | None = None) -> dict[str, Any]:
        status = pool_status.summary(
            raw, records, planner, problem=problem, deleting=deleting,
            conditions=self._conditions, now=self.port.clock(), ledger=ledger)
        metrics.set_usage(self.name, status.get("usage") or [])
        for phase, count in status["reservations"].items():
            metrics.RESERVATIONS.labels(self.name, phase).set(count)
        for resource, values in (status.get("capacity") or {}).items():
            for state, value in values.items():
                metrics.POOL_CAPACITY.labels(self.name, resource, state).set(value)
        return status

    # -- our finalizer -------------------------------------------------------------------

    async def keep_finalizer(self, raw: dict[str, Any] | None, *, deleting: bool,
                             holders: int) -> FinalizerStep:
        """Our finalizer on the pool, level-based: put on while it is not being deleted, taken
        off once nothing holds anything on it (`holders`: what is committed, booked, or being
        written). A failed edit is retried at `finalizer_retry_at` (by the next pass)."""
        self.finalizer_retry_at = None
        if raw is None:
            return FinalizerStep()
        if deleting:
            return await self._release(raw, holders)
        return await self._guard(raw)

    def _retry_later(self) -> None:
        self.finalizer_retry_at = self.port.clock() + self.retry_after

    async def _guard(self, raw: dict[str, Any]) -> FinalizerStep:
        """Put our finalizer on a pool not being deleted (nothing new is booked before)."""
        step = FinalizerStep()
        metadata = raw.get("metadata") or {}
        if FINALIZER in (metadata.get("finalizers") or []) or self.finalizer_added:
            return step
        try:
            self.finalizer_added = await add_finalizer(
                self.port.api, pool_path(self.name), metadata.get("uid") or "", metadata)
            step.guarded = self.finalizer_added
        except ApiError as exc:
            logger.warning("pool %s: could not add the finalizer: %s", self.name, exc)
            # Nothing new is booked until it is on: try again soon, even if nothing else wakes
            # the loop (found by the simulation: waiters stayed undecided).
            self._retry_later()
        return step

    async def _release(self, raw: dict[str, Any], holders: int) -> FinalizerStep:
        """A pool being deleted: remove our finalizer once nothing holds anything on it, else
        say it is blocked."""
        step = FinalizerStep()
        metadata = raw.get("metadata") or {}
        finalizers = list(metadata.get("finalizers") or [])
        if holders:
            if not self._blocked_reported:
                self._blocked_reported = True
                step.events.append(PoolEvent(
                    "Warning", Reason.IN_USE.value,
                    f"deletion blocked while {holders} reservations hold resources "
                    "(Active or Scheduled)"))
                step.write_status_now = True
            return step
        if FINALIZER not in finalizers:
            return step
        try:
            if await remove_finalizer(self.port.api, pool_path(self.name),
                                      metadata.get("uid") or "", finalizers):
                metadata["finalizers"] = [f for f in finalizers if f != FINALIZER]
            else:  # conflicts outlasted the retries
                self._retry_later()
        except ApiError as exc:
            logger.warning("pool %s: could not remove the finalizer: %s", self.name, exc)
            # Try again even if nothing else wakes the loop (found by the simulation: a
            # deleted pool that nothing held stayed, its finalizer never removed).
            self._retry_later()
        return step
