"""Our finalizer on a pool's reservations, kept in its own task beside the decision loop.

A reservation carries our finalizer exactly while it holds resources (Active or Scheduled),
and loses it once, deleted, it has been released. The finalizer is not the commit point (the
status write is), so it is kept off the decision path: the actor says which reservations to
look at (`due`), and `FinalizerKeeper.run` compares, level-based, what is wanted now with what
each object has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from respool.controller.finalizers import FINALIZER, add_finalizer, remove_finalizer
from respool.controller.kubeapi import reservation_path
from respool.controller.lifecycle import HOLDING_PHASES, Reservation
from respool.controller.ports import PoolPort

logger = logging.getLogger(__name__)

#: Backoff of finalizer edits that failed (per pool, not per object: an outage fails them all).
FINALIZER_RETRY_FIRST = 2.0
FINALIZER_RETRY_MAX = 10.0


class FinalizerKeeper:
    """The finalizers of one pool's reservations. `records` is the actor's live map of them;
    `booked(uid)` says whether the planner still holds a booking for one (a deleted
    reservation keeps its finalizer until the decision loop has released it)."""

    def __init__(self, name: str, port: PoolPort, records: Mapping[str, Reservation],
                 booked: Callable[[str], bool]) -> None:
        self.name = name
        self.port = port
        self.records = records
        self.booked = booked
        self._dirty: set[str] = set()
        self._kick = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self.run(), name=f"respool-finalizers-{self.name}")

    def due(self, uid: str) -> None:
        """Look at this reservation's finalizer (soon, in the keeper's own task)."""
        self._dirty.add(uid)
        self._kick.set()

    async def run(self) -> None:
        """Level-based: each pass compares what is wanted now with what the object has; what
        could not be done (API server away, a conflict that outlasted the retries) is tried
        again after a backoff that grows while passes keep failing - one pause per pass,
        however many objects failed."""
        delay = FINALIZER_RETRY_FIRST
        failing_since: float | None = None
        while True:
            await self._kick.wait()
            self._kick.clear()
            batch, self._dirty = self._dirty, set()
            records = [self.records[uid] for uid in batch if uid in self.records]
            results = await asyncio.gather(*(self._sync(r) for r in records),
                                           return_exceptions=True)
            failed = [(record, result) for record, result in zip(records, results, strict=True)
                      if result is not True]
            if not failed:
                if failing_since is not None:
                    logger.info("pool %s: finalizer edits succeed again after %.1fs",
                                self.name, self.port.monotonic() - failing_since)
                failing_since, delay = None, FINALIZER_RETRY_FIRST
                continue
            record, result = failed[0]
            why = result if isinstance(result, BaseException) else "not done after retries"
            if failing_since is None:
                failing_since = self.port.monotonic()
                logger.warning("pool %s: finalizer of %s (and %d more): %s; retrying in %.0fs",
                               self.name, record.key, len(failed) - 1, why, delay)
            else:
                logger.debug("pool %s: %d finalizer edits failed again (%s)", self.name,
                             len(failed), why)
            await asyncio.sleep(delay)
            delay = min(delay * 2, FINALIZER_RETRY_MAX)
            for record, _result in failed:
                self.due(record.uid)

    async def _sync(self, record: Reservation) -> bool:
        # Finalizer edits of all pools share these slots, so that a burst of them never
        # crowds out the status writes that commit decisions.
        async with self.port.write_slots:
            return await self._sync_now(record)

    async def _sync_now(self, record: Reservation) -> bool:
        """True when the finalizer is as wanted (or the object is gone)."""
        wanted = record.phase in HOLDING_PHASES and not record.deleting
        if record.deleting and self.booked(record.uid):
            return True  # not released yet (the decision loop releases first, then asks again)
        path = reservation_path(record.namespace, record.name)
        if wanted and not record.has_finalizer:
            metadata = {"finalizers": record.finalizers,
                        "resourceVersion": record.resource_version}
            # (A stale resourceVersion only costs a re-read: the patch is conditional on it.)
            if not await add_finalizer(self.port.api, path, record.uid, metadata):
                return False  # gone (its DELETED event ends this), or conflicts outlasted
            record.has_finalizer = True
            if FINALIZER not in record.finalizers:
                record.finalizers = [*record.finalizers, FINALIZER]
        elif not wanted and (record.has_finalizer or record.deleting):
            # A deleted reservation is still here, so something holds it: remove ours even if
            # our record says it has none (remove_finalizer then reads the object first) - a
            # stale record must never leave it undeletable.
            if not await remove_finalizer(self.port.api, path, record.uid, record.finalizers):
                return False
            record.has_finalizer = False
            record.finalizers = [f for f in record.finalizers if f != FINALIZER]
        return True
