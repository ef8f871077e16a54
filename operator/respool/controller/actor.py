"""One actor per ResourcePool: the only writer of decisions for that pool.

Watch handlers never decide anything; they hand the latest object to the actor of its pool
and return. The actor runs one asyncio task that, in a loop:

1. applies pool changes (R, down ranks, tracked Nodes, expiration, policy) to its `Planner`;
2. releases what deleted reservations held;
3. decides every reservation that changed, is due (its start, end, claim deadline or maxWait),
   or - after capacity freed - is waiting (Pending FIFO, Scheduled moving earlier);
4. commits each decision by writing the reservation's status (the commit point). Decisions are
   batched and written concurrently, except that a decision which frees capacity is committed
   before any later decision can use that capacity, so a failed write can always be rolled
   back exactly (release what was booked, restore what was held);
5. wakes at the next deadline of any of its reservations - one clock per pool.

What it needs from the world comes through one injected `ports.PoolPort` (API, Events, cluster
facts, write slots, the clock). The parts with state of their own are collaborators that
return results rather than call back: `pool_model.PoolModel` (the spec turned into the
planner and the decisions' `PoolContext`), `pool_keeper.PoolKeeper` (the pool object's
debounced status and our finalizer on it, written beside the loop) and
`finalizer_keeper.FinalizerKeeper` (the reservations' finalizers, in their own task).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from respool.api import parse_time
from respool.controller import lifecycle, metrics, standing
from respool.controller.consumers import Coalescer
from respool.controller.events import InvolvedObject
from respool.controller.finalizer_keeper import FinalizerKeeper
from respool.controller.kubeapi import ApiError, pool_path, reservation_path
from respool.controller.lifecycle import (
    ACTIVE,
    FINALIZER,
    HOLDING_PHASES,
    PENDING,
    SCHEDULED,
    Outcome,
    PoolContext,
    Reservation,
    canonical,
)
from respool.controller.pool_keeper import PoolKeeper
from respool.controller.pool_model import PoolModel
from respool.controller.ports import PoolPort
from respool.controller.turns import Turn
from respool.pool import Booking, Planner

logger = logging.getLogger(__name__)

RETRY_AFTER_WRITE_FAILURE = 2.0
#: Backoff while a status write's outcome is unknown (the API server unreachable or failing):
#: the booking stays held and the same write is repeated, from the first to the last delay.
UNKNOWN_OUTCOME_RETRY_FIRST = 0.5
UNKNOWN_OUTCOME_RETRY_MAX = 4.0


@dataclass
class _Pending:
    """A decision taken but not yet committed."""

    rsv: Reservation
    before: Booking | None
    after: Booking | None
    outcome: Outcome
    planned_key_before: str | None
    failed_attempt_before: tuple[int, int, str] | None
    generation: int  # of the spec decided on: the write commits only if it is still current
    answer_version: str | None = None  # resourceVersion the committed write answered with
    unanswered: bool = False  # an attempt's answer was lost: it may have been applied


class PoolActor:
    def __init__(self, name: str, port: PoolPort) -> None:
        self.name = name
        self.port = port
        self.clock = port.clock
        self.records: dict[str, Reservation] = {}
        self.wake_at: dict[str, float] = {}
        self.dirty: set[str] = set()
        self.gone: dict[str, Reservation] = {}
        self.pool_raw: dict[str, Any] | None = None
        self.pool_dirty = True
        self.capacity_changed = False
        # The pool's spec as decisions use it (planner, context, what is wrong with it).
        self.model = PoolModel(name, port.facts, port.seal)
        # The reservations' finalizers, kept in their own task.
        self.finalizer_keeper = FinalizerKeeper(name, port, self.records, self._booked)
        # The pool object's status and finalizer, written beside the decision loop, never in
        # it: while the API server is away a write can take seconds to fail, and decisions
        # must resume the moment it is back.
        self.pool_keeper = PoolKeeper(name, port, RETRY_AFTER_WRITE_FAILURE)
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.standing = standing.StandingTracker()
        # Status writes in flight (one per reservation at most) and reservations to decide
        # again once theirs lands.
        self._inflight: dict[str, asyncio.Task[None]] = {}
        # Every status write being made (in flight or awaited in the loop), by reservation.
        self._writing: dict[str, _Pending] = {}
        self._seen_while_writing: dict[str, dict[str, Any]] = {}
        # Hash of each committed status as the API server answered it (it may normalise it).
        self._echo: dict[str, int] = {}
        self._after_commit: set[str] = set()
        self._pool_status_task: asyncio.Task[None] | None = None
        self._pool_events = 0
        self._pool_lookup_after = 0.0
        self._confirm_gone = False  # missing from kopf's first listing: ask the server
        # Reservations whose consumer Pods changed, decided again together (consumers.py).
        self.consumer_refresh = Coalescer(self._consumers_due)

    @property
    def planner(self) -> Planner | None:
        """The pool's planner (None while it has no usable spec, or no pool)."""
        return self.model.planner

    @property
    def context(self) -> PoolContext:
        return self.model.context

    def _booked(self, uid: str) -> bool:
        return self.model.planner is not None and self.model.planner.get(uid) is not None

    # -- inputs (called from watch handlers; never block) ------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"respool-pool-{self.name}")
        self.finalizer_keeper.start()

    async def stop(self) -> None:
        self.consumer_refresh.cancel()
        tasks = [self._task, self.finalizer_keeper.task, self._pool_status_task,
                 *self._inflight.values()]
        self._task = self.finalizer_keeper.task = self._pool_status_task = None
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def kick(self) -> None:
        self._kick.set()

    def unused(self) -> bool:
        """Nothing refers to this pool and nothing of it is in progress: no pool object, no
        planner, no reservation, no status write in flight. The controller may then drop
        the actor (issue 11, item 5); an event naming the pool later makes a new one."""
        return (self.pool_raw is None and self.planner is None and not self.records
                and not self._inflight and not self._writing)

    def pool_event(self, raw: dict[str, Any] | None) -> None:
        """The pool's latest body, or None when it was deleted."""
        self._pool_events += 1
        previous, self.pool_raw = self.pool_raw, raw
        if raw is None or _uid(previous) != _uid(raw):
            # Deleted, or a new object under the same name: what we wrote to (or learnt about)
            # the old object says nothing about the new one - its finalizer and its status
            # must be written afresh even if they would read the same.
            self.pool_keeper.forget_object()
            self.model.forget_object()
        if previous is not None and raw is not None and _pool_identity(previous) == \
                _pool_identity(raw):
            return  # only its status changed (our own write, most likely): nothing to do
        self.pool_dirty = True
        self.kick()

    def namespace_changed(self, namespace: str) -> None:
        """The namespace's labels were learnt or changed: with a namespaceSelector, its
        reservations that do not hold a grant are judged again."""
        if not self.model.reads_labels:
            return
        waiting = [uid for uid, record in self.records.items()
                   if record.namespace == namespace and record.phase != ACTIVE]
        if waiting:
            self.dirty.update(waiting)
            self.kick()

    def consumers_changed(self, uids: Iterable[str]) -> None:
        """Their consumer Pods changed: decided again (status.consumers, idleTimeout) soon,
        coalesced - a burst of Pods costs one write per reservation (consumers.Coalescer)."""
        self.consumer_refresh.add(uid for uid in uids if uid in self.records)

    def consumers_synced(self) -> None:
        """The Pods were listed for the first time: what status.consumers says and the idle
        clocks of Active holds with an idleTimeout are judged now (consumers.py)."""
        self.consumer_refresh.add(
            uid for uid, record in self.records.items()
            if '"consumers"' in record.status_text
            or (record.phase == ACTIVE and "idleTimeout" in record.spec))

    def _consumers_due(self, uids: set[str]) -> None:
        self.dirty |= uids & self.records.keys()
        self.kick()

    def nodes_changed(self) -> None:
        if self.model.track_nodes:
            self.pool_dirty = True
            self.kick()

    def reservation_event(self, raw: dict[str, Any], deleted: bool) -> None:
        metadata = raw.get("metadata") or {}
        uid = metadata.get("uid")
        if not uid:
            return
        if deleted:
            self.forget(uid)
            return
        generation = int(metadata.get("generation") or 0)
        deleting = bool(metadata.get("deletionTimestamp"))
        record = self.records.get(uid)
        if record is None:
            created = Reservation.from_object(raw)
            assert created is not None  # it has a UID
            self.records[uid] = created
            self.dirty.add(uid)
            self.kick()
            return
        # The actor is the only writer of status: our record of it is the truth while we run.
        # Events bring spec changes, deletion and finalizers - and, rarely, a status someone
        # else wrote (a deposed leader's write landing late, review S1), which is overwritten.
        changed = self._foreign_status(record, raw)
        _note_finalizers(record, metadata)
        if generation > record.generation:
            record.generation = generation
            record.spec = dict(raw.get("spec") or {})
            changed = True
        if deleting and not record.deleting:
            record.deleting = True
            changed = True
        if changed:
            self.dirty.add(uid)
            self.kick()
        elif record.phase in HOLDING_PHASES and not record.has_finalizer and not deleting:
            self._finalizers_due(uid)  # someone removed it: put it back

    def _foreign_status(self, record: Reservation, raw: dict[str, Any]) -> bool:
        """Does the object's status (newer than anything we know of it) differ from what we
        committed, while we are writing nothing to it? Then another writer put it there - the
        old leader's last write, landing after we listed - and it must not stand: etcd would
        say Active on cores our planner may have given to someone else. The record is marked
        so that its next decision is written even if it equals what we committed."""
        if record.uid in self._writing:
            # Ours may be what it shows; judge the latest body once the write is answered.
            self._seen_while_writing[record.uid] = raw
            return False
        if not _is_newer(record.resource_version, (raw.get("metadata") or {}).get(
                "resourceVersion")):
            return False
        return self._overwrite_foreign(record, raw)

    def _overwrite_foreign(self, record: Reservation, raw: dict[str, Any]) -> bool:
        text = canonical(raw.get("status") or {})
        if text == record.status_text or hash(text) == self._echo.get(record.uid):
            return False  # ours (as written, or as the API server stored it)
        if not record.foreign_status:
            logger.warning("reservation %s: its status was written by someone else (phase %s, "
                           "ours %s); writing ours again", record.key,
                           (raw.get("status") or {}).get("phase"), record.phase)
        record.foreign_status = True
        return True

    def adopt(self, record: Reservation) -> None:
        """A record found by the start-up listing (restored before any decision)."""
        self.records[record.uid] = record
        if record.phase in HOLDING_PHASES and not record.has_finalizer and not record.deleting:
            self._finalizers_due(record.uid)
        if (record.status.get("observedGeneration") != record.generation
                or not record.status.get("phase") or record.deleting):
            self.dirty.add(record.uid)

    def forget(self, uid: str) -> None:
        self._echo.pop(uid, None)
        record = self.records.pop(uid, None)
        self.dirty.discard(uid)
        self.wake_at.pop(uid, None)
        if record is not None:
            self.gone[uid] = record
            self.kick()

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            timeout = self._sleep_for()
            if timeout is None or timeout > 0:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
                # cancellation that arrives as the kick fires, and stop() then waits forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._kick.wait()
            self._kick.clear()
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Never let one bad object or a bug stop the pool; back off and go on.
                logger.exception("pool %s: reconciliation step failed; retrying in 2s", self.name)
                await asyncio.sleep(2.0)
                self.kick()

    def _sleep_for(self) -> float | None:
        if self.dirty or self.gone or self.pool_dirty:
            return 0.0
        candidates = list(self.wake_at.values())
        pool_pass = self.pool_keeper.next_pass()
        if pool_pass is not None and self._pool_status_task is None:
            candidates.append(pool_pass)
        if not candidates:
            return None
        # A deadline is due in the step of the whole second it falls in (decisions take the
        # time floored): waking before that second would find nothing due and, never awaiting,
        # spin the event loop until it comes (review C4).
        return max(0.0, math.ceil(min(candidates)) - self.clock())

    async def _look_up_pool(self) -> None:
        """A reservation names a pool we have not heard of: the pool's watch event may simply
        be later than the reservation's (two streams). Ask once before saying PoolNotFound."""
        self._pool_lookup_after = self.port.monotonic() + 5.0
        events_before = self._pool_events
        try:
            raw = await self.port.api.get(pool_path(self.name))
        except ApiError as exc:
            if not exc.not_found:
                logger.warning("pool %s: cannot read it: %s", self.name, exc)
            return
        if self._pool_events == events_before and self.pool_raw is None:
            self.pool_event(raw)

    def suspect_deleted(self) -> None:
        """The pool was missing from kopf's first listing of pools: deleted before it, or
        created after it (kopf's ADDED event is then still on its way). Ask the API server
        before forgetting it: forgetting a live pool would fail its Active holders."""
        self._confirm_gone = True
        self.kick()

    async def _forget_pool_if_gone(self) -> None:
        self._confirm_gone = False
        events_before = self._pool_events
        try:
            await self.port.api.get(pool_path(self.name))
        except ApiError as exc:
            if not exc.not_found:
                logger.warning("pool %s: cannot read it: %s", self.name, exc)
                # Ask again later: no event will ever say a pool deleted before kopf listed
                # is gone (found by the simulation: its reservations were never decided).
                self._confirm_gone = True
                asyncio.get_running_loop().call_later(RETRY_AFTER_WRITE_FAILURE, self.kick)
            elif self._pool_events == events_before:
                self.pool_event(None)

    async def step(self) -> None:
        metrics.POOL_STEPS.inc()
        now = float(math.floor(self.clock()))
        if self._confirm_gone:
            await self._forget_pool_if_gone()
        if (self.pool_raw is None and self.dirty and self.name
                and self.port.monotonic() >= self._pool_lookup_after):
            await self._look_up_pool()
        if self.pool_dirty:
            self.pool_dirty = False
            self._apply_pool(now)
        if self.gone:
            gone, self.gone = self.gone, {}
            self._schedule_pool_status()  # its counts no longer include them
            for record in gone.values():
                released = lifecycle.release(record, self.planner, self.model.ledger, now)
                if released is not None:
                    self.capacity_changed = True
                    self._post_rsv(record, "Normal", "Released",
                                   f"deleted: released {released.R.dumps()} on pool "
                                   f"{self.name!r}")
        due = {uid for uid, t in self.wake_at.items() if t <= now}
        work = (self.dirty | due) & self.records.keys()
        self.dirty.clear()
        for uid in due:
            self.wake_at.pop(uid, None)
        done: set[str] = set()
        if work:
            logger.debug("pool %s: deciding %d (%d due)", self.name, len(work), len(due))
        await self._decide_all(self._ordered(work), now, done)
        rounds = 0
        while self.capacity_changed and rounds < 3:
            self.capacity_changed = False
            rounds += 1
            waiting = [r for r in self.records.values()
                       if r.uid not in done and r.phase in (PENDING, SCHEDULED, None)
                       and not r.deleting]
            logger.debug("pool %s: capacity changed; retrying %d", self.name, len(waiting))
            await self._decide_all(self._ordered(uid for uid in (r.uid for r in waiting)),
                                   float(math.floor(self.clock())), done)
        if self.capacity_changed:
            self.kick()  # more freed during the last round: another pass soon
        # Waiters whose queuePosition/startNoLaterThan changed are decided again (which writes
        # it); recomputed at most every few seconds, on a timer keyed apart from the UIDs.
        stale, refresh_at = self.standing.refresh(self.records, self.planner,
                                                  self.context.policy, now)
        self.dirty |= stale
        if refresh_at is not None:
            self.wake_at[standing.WAKE_KEY] = refresh_at
        if self._pool_status_task is None:
            self._pool_status_task = asyncio.create_task(
                self._maybe_write_pool_status(), name=f"respool-pool-status-{self.name}")
            self._pool_status_task.add_done_callback(self._pool_status_written)

    def _pool_status_written(self, task: asyncio.Task[None]) -> None:
        self._pool_status_task = None
        if not task.cancelled() and task.exception() is not None:
            logger.error("pool %s: writing its status failed", self.name,
                         exc_info=task.exception())
        due = self.pool_keeper.next_pass()
        if due is not None:
            # The loop did not count it while this one ran: a status write due, or a finalizer
            # edit to retry (a retry that came due while a slow status write was still being
            # answered was lost, and the pool never got its finalizer: simulation seed 2757).
            # Kick it when it is due, not now: kicking at once made a busy loop of step ->
            # status task -> kick until the due time came (found by the simulation, where
            # time never moved on).
            delay = due - self.clock()
            if delay <= 0:
                self.kick()
            else:
                asyncio.get_running_loop().call_later(delay, self.kick)

    def _ordered(self, uids: Iterable[str]) -> list[Reservation]:
        """Deletions and Active ones first (they free capacity), then everything waiting in
        the order it was first requested (FIFO: a Scheduled one moving earlier does not jump
        ahead of an older Pending one)."""
        records = [self.records[uid] for uid in uids if uid in self.records]

        def key(record: Reservation) -> tuple[int, int, float, str]:
            group = 0 if record.deleting else 1 if record.phase == ACTIVE else 2
            first = _time_or(record.first_request, record.created)
            # Waiting ones by priority, then first requested (issue 14).
            return group, -record.priority if group == 2 else 0, first, record.name

        return sorted(records, key=key)

    async def _decide_all(self, records: list[Reservation], now: float, done: set[str]) -> None:
        turn = Turn(self.port.monotonic)
        for record in records:
            if await turn.next_item() and self.records.get(record.uid) is not record:
                continue  # forgotten while the loop ran something else
            if self.pool_dirty:
                # The pool changed while this batch was being decided (an await let its
                # event in): decide the rest on the pool as it is now, never book on a pool
                # already known to be deleting (found by the simulation, seed 300).
                self.pool_dirty = False
                self._apply_pool(now)
            done.add(record.uid)
            if record.uid in self._inflight:
                # Its last decision is not committed yet: decide again once it is.
                self._after_commit.add(record.uid)
                continue
            if record.deleting:
                await self._delete(record)
                continue
            if (not self.model.guarded and self.planner is not None
                    and record.phase not in HOLDING_PHASES):
                continue  # decided once our finalizer is on the pool (it marks all dirty)
            if (self.model.reads_labels and record.phase != ACTIVE
                    and record.namespace not in self.port.facts.namespace_labels):
                await self.port.facts.ensure_namespace(record.namespace)
            planner = self.planner
            before = planner.get(record.uid) if planner is not None else None
            planned_before = record.planned_key
            failed_attempt_before = record.failed_attempt
            generation = record.generation
            started = time.perf_counter()
            try:
                with turn.work():
                    outcome = lifecycle.decide(record, self.context, planner, now,
                                               self.port.consumers(record.namespace,
                                                                   record.name))
            except Exception:
                logger.exception("pool %s: deciding %s failed", self.name, record.key)
                self.wake_at[record.uid] = now + 30
                continue
            finally:
                metrics.DECISION_SECONDS.observe(time.perf_counter() - started)
            self.standing.stamp(record.uid, outcome.status)
            if outcome.displaced:
                # Bookings it displaced (issue 14) are decided next: they say so.
                self.dirty.update(outcome.displaced)
                self.kick()
            after = planner.get(record.uid) if planner is not None else None
            if outcome.wake_at is not None:
                self.wake_at[record.uid] = outcome.wake_at
            else:
                self.wake_at.pop(record.uid, None)
            if (canonical(outcome.status) == record.status_text and not outcome.events
                    and not record.foreign_status):
                continue  # nothing to commit
            pending = _Pending(record, before, after, outcome, planned_before,
                               failed_attempt_before, generation)
            if _frees(before, after):
                # Commit before any later decision may be given what this one freed, so that
                # a failed write can restore exactly what was held.
                self.capacity_changed = True
                await self._commit(pending)
            else:
                # Grants, claims, extensions: a failed write only ever releases, which is
                # safe whatever was decided meanwhile - so the write runs in the background
                # and the next decisions need not wait for it.
                self._inflight[record.uid] = asyncio.create_task(self._commit(pending))

    async def _delete(self, record: Reservation) -> None:
        """Release what a deleted reservation holds (its finalizer goes next)."""
        released = lifecycle.release(record, self.planner, self.model.ledger,
                                     float(math.floor(self.clock())))
        if released is not None:
            self.capacity_changed = True
            self._post_rsv(record, "Normal", "Released",
                           f"deleted: released {released.R.dumps()} on pool {self.name!r}")
        self.wake_at.pop(record.uid, None)
        self._finalizers_due(record.uid)

    # -- commit ------------------------------------------------------------------------------

    async def _commit(self, pending: _Pending) -> None:
        uid = pending.rsv.uid
        self._writing[uid] = pending
        try:
            if self._books_on_a_deleting_pool(pending):
                # Decided before the pool's deletion was known, not yet sent: a new booking
                # would keep the pool alive (found by the simulation, seeds 300 and 978).
                # Withdrawn and decided again; one already sent blocks the pool's finalizer
                # until it is answered.
                self._rollback(pending)
                self._after_commit.add(uid)
                return
            answer = await self._write_until_answered(pending)
        except asyncio.CancelledError:
            raise
        except ApiError as error:
            current: dict[str, Any] | str | None
            if pending.unanswered:
                current = await self._read_back_until_answered(pending.rsv)
            else:
                current = await self._read_back(pending.rsv) if error.conflict else None
            if isinstance(current, dict) and pending.unanswered and _landed(pending, current):
                # An earlier attempt whose answer was lost did land; this repeat was refused
                # only because of it, or because the spec changed since (found by the
                # simulation, seeds 112 and 432: the grant was rolled back - its cores free
                # for anyone - and granted again under a new ID). Committed; a new spec is
                # decided next.
                self._committed(pending, current)
                self._finalizers_due(uid)
                if self.records.get(uid) is pending.rsv:
                    self.reservation_event(current, deleted=False)
                self._after_commit.add(uid)
                return
            if error.not_found or current == "gone":
                self._write_failed(pending, error, gone=True)
            elif isinstance(current, dict) and self._changed_meanwhile(pending, current):
                self._write_conflicted(pending, current)
            else:
                # A 409/422 we could not explain by reading the object back is retried soon;
                # one explained by nothing (the object unchanged) is a refusal of what we wrote.
                self._write_failed(pending, error, gone=False,
                                   refused=not error.conflict or current is not None)
            self._rollback(pending)
        except Exception as error:
            self._write_failed(pending, error, gone=False)
            self._rollback(pending)
        else:
            self._committed(pending, answer)
            self._finalizers_due(uid)
        finally:
            self._inflight.pop(uid, None)
            self._writing.pop(uid, None)
            seen = self._seen_while_writing.pop(uid, None)
            if seen is not None and self.records.get(uid) is pending.rsv:
                # Seen while writing: foreign if later than our write's answer (or than
                # anything, when the write did not land) and not what we committed.
                seen_version = (seen.get("metadata") or {}).get("resourceVersion")
                if (pending.answer_version is None
                        or _is_newer(pending.answer_version, seen_version)) and \
                        self._overwrite_foreign(pending.rsv, seen):
                    self._after_commit.add(uid)
            if uid in self._after_commit:
                self._after_commit.discard(uid)
                self.dirty.add(uid)
                self.kick()

    def _books_on_a_deleting_pool(self, pending: _Pending) -> bool:
        """Is this a new booking (nothing held before it) while the pool, as last seen, is
        being deleted?"""
        if pending.before is not None or pending.after is None:
            return False
        metadata = (self.pool_raw or {}).get("metadata") or {}
        return bool(metadata.get("deletionTimestamp"))

    async def _write_until_answered(self, pending: _Pending) -> dict[str, Any]:
        """Write the status; while the API server cannot say whether the write was applied
        (unreachable, restarting, 5xx), keep the booking and repeat the same write.

        Rolling back on such an error would be wrong: a write that did land (the answer was
        lost when the server went away) would leave a grant in status that the engine no
        longer holds, free to be granted again. The write is idempotent (the same status
        value, the same preconditions), so repeating it until a definite answer is safe:
        success commits, 404 / a failed precondition rolls back.
"""
        delay = UNKNOWN_OUTCOME_RETRY_FIRST
        began: float | None = None
        while True:
            try:
                answer = await self._write(pending)
            except ApiError as error:
                if not error.unavailable:
                    raise
                metrics.STATUS_WRITES.labels("reservation", "unavailable").inc()
                pending.unanswered = True
                if began is None:
                    began = self.port.monotonic()
                    logger.warning("status write for %s: the API server is unavailable (%s); "
                                   "holding its booking and retrying", pending.rsv.key, error)
                else:
                    logger.debug("status write for %s still unanswered: %s", pending.rsv.key,
                                 error)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, UNKNOWN_OUTCOME_RETRY_MAX)
                if self._books_on_a_deleting_pool(pending):
                    # A new hold is not sent again once the pool is seen being deleted: if
                    # the first attempt did not land, it is rolled back (found by the
                    # simulation, seed 76 after issue 16).
                    current = await self._read_back_until_answered(pending.rsv)
                    if isinstance(current, dict) and _landed(pending, current):
                        return current
                    raise ApiError(409, "the pool is being deleted; a new hold is not sent "
                                   "again", "Conflict") from error
                continue
            if began is not None:
                logger.info("status write for %s landed after %.1fs of API server outage",
                            pending.rsv.key, self.port.monotonic() - began)
            return answer

    async def _write(self, pending: _Pending) -> dict[str, Any]:
        record = pending.rsv
        # The decision is committed only on the object it was made for (same UID) and only if
        # its spec has not changed since (same generation): a decision about a spec that is no
        # longer there is rolled back and taken again on the new one.
        ops = [{"op": "test", "path": "/metadata/uid", "value": record.uid},
               {"op": "test", "path": "/metadata/generation", "value": pending.generation},
               {"op": "add", "path": "/status", "value": _clean(pending.outcome.status)}]
        path = reservation_path(record.namespace, record.name, status=True)
        answer = await self.port.api.json_patch(path, ops)
        return answer

    def _committed(self, pending: _Pending, answer: dict[str, Any]) -> None:
        record, outcome = pending.rsv, pending.outcome
        record.status = outcome.status
        record.foreign_status = False
        metadata = answer.get("metadata") or {}
        version = metadata.get("resourceVersion")
        pending.answer_version = version if isinstance(version, str) else None
        self._echo[record.uid] = hash(canonical(answer.get("status") or {}))
        _note_finalizers(record, metadata)
        metrics.STATUS_WRITES.labels("reservation", "ok").inc()
        for event in outcome.events:
            self._post_rsv(record, event.type, event.reason, event.message)
        if outcome.granted:
            metrics.GRANT_SECONDS.observe(max(0.0, self.clock() - record.created))
        status = outcome.status
        logger.info("reservation %s on pool %s: %s", record.key, self.name, record.phase,
                    extra={"reservation": record.key, "pool": self.name, "phase": record.phase,
                           "id": status.get("reservationId") or status.get("preReservationId")})
        self._schedule_pool_status()

    async def _read_back_until_answered(self, record: Reservation) -> dict[str, Any] | str:
        """`_read_back` repeated while the object cannot be read: after a lost answer, only
        the object tells whether that write landed, and a guess either way is wrong."""
        delay = UNKNOWN_OUTCOME_RETRY_FIRST
        while True:
            current = await self._read_back(record)
            if current is not None:
                return current
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, UNKNOWN_OUTCOME_RETRY_MAX)

    async def _read_back(self, record: Reservation) -> dict[str, Any] | str | None:
        """After a refused write: the object as it is now, "gone" if it was deleted (or
        deleted and re-created), None if it cannot be read."""
        try:
            current = await self.port.api.get(reservation_path(record.namespace, record.name))
        except ApiError as exc:
            return "gone" if exc.not_found else None
        if (current.get("metadata") or {}).get("uid") != record.uid:
            return "gone"
        return current

    @staticmethod
    def _changed_meanwhile(pending: _Pending, current: dict[str, Any]) -> bool:
        metadata = current.get("metadata") or {}
        return int(metadata.get("generation") or 0) != pending.generation

    def _write_conflicted(self, pending: _Pending, current: dict[str, Any]) -> None:
        """Someone changed the spec between the decision and its write: not an error, the
        ordinary race of a level-based controller. The write did not land; roll back (the
        caller does) and decide again on the spec that is there now."""
        record = pending.rsv
        metrics.STATUS_WRITES.labels("reservation", "conflict").inc()
        logger.debug("status write for %s: the spec changed meanwhile (generation %s -> %s); "
                     "deciding again", record.key, pending.generation,
                     (current.get("metadata") or {}).get("generation"))
        if self.records.get(record.uid) is record:
            self.reservation_event(current, deleted=False)  # takes the new spec now
            self.dirty.add(record.uid)
            self.kick()

    def _write_failed(self, pending: _Pending, error: BaseException, gone: bool,
                      refused: bool = True) -> None:
        record = pending.rsv
        metrics.STATUS_WRITES.labels("reservation", "error").inc()
        if gone:
            logger.info("reservation %s vanished before its status was written", record.key)
            if self.records.get(record.uid) is record:
                self.records.pop(record.uid, None)
                self.wake_at.pop(record.uid, None)
        elif isinstance(error, ApiError) and refused and (error.status in (400, 403, 422)
                                                          or error.too_large):
            # The API server refused what we wrote (a schema or RBAC problem on our side):
            # say so loudly and try again later, never in a hot loop.
            logger.error("status write for %s refused: %s; retrying in 30s", record.key, error)
            self.wake_at[record.uid] = self.clock() + 30
        else:
            logger.warning("status write for %s failed (%s); will retry", record.key, error)
            self.wake_at[record.uid] = self.clock() + RETRY_AFTER_WRITE_FAILURE
        # The loop may be asleep with no deadline at all (no planner: the rollback kicks
        # nothing): it must learn of this one (found by the simulation, seed 312: a refused
        # write on a missing pool was never retried, the reservation never got a phase).
        self.kick()

    def _rollback(self, pending: _Pending) -> None:
        planner, record = self.planner, pending.rsv
        record.planned_key = pending.planned_key_before
        record.failed_attempt = pending.failed_attempt_before
        if planner is None:
            return
        if planner.get(record.uid) is not None:
            planner.release(record.uid)
        before = pending.before
        if before is not None and record.uid in self.records:
            try:
                planner.restore(record.uid, before.R.to_dict(), before.start, before.end,
                                before.mode, before.priority, before.preemptible)
            except ValueError as exc:
                logger.error("pool %s: could not restore the booking of %s after a failed "
                             "write: %s", self.name, record.key, exc)
        self.capacity_changed = True
        self.kick()

    # -- finalizers (off the decision path: they are not the commit point) ---------------

    def _finalizers_due(self, uid: str) -> None:
        self.finalizer_keeper.due(uid)

    def _post_rsv(self, record: Reservation, type_: str, reason: str, message: str) -> None:
        self.port.events.post(
            InvolvedObject("ResourceReservation", record.name, record.uid, record.namespace),
            type_, reason, message)

    def _post_pool(self, type_: str, reason: str, message: str) -> None:
        raw = self.pool_raw or {}
        uid = (raw.get("metadata") or {}).get("uid") or ""
        self.port.events.post(InvolvedObject("ResourcePool", self.name, uid), type_, reason,
                             message)

    # -- the pool itself ---------------------------------------------------------------------

    def restore(self) -> None:
        """Apply the pool as listed at start-up, re-registering every committed grant before
        any decision is taken."""
        self.pool_dirty = False
        self._apply_pool(float(math.floor(self.clock())))

    def _apply_pool(self, now: float) -> None:
        change = self.model.apply(self.pool_raw, self.records,
                                  finalizer_added=self.pool_keeper.finalizer_added, now=now)
        self.dirty.update(change.dirty)
        if change.capacity_changed:
            self.capacity_changed = True
        for event in change.events:
            self._post_pool(event.type, event.reason, event.message)
        if change.write_status is not None:
            self._schedule_pool_status(immediately=change.write_status == "now")
        if change.forgotten:
            metrics.forget_pool(self.name)

    # -- the pool object: its status (debounced) and our finalizer -----------------------------

    def _schedule_pool_status(self, immediately: bool = False) -> None:
        if self.pool_keeper.schedule(immediately):
            self.kick()  # the loop may be asleep until a later deadline (or none)

    async def _maybe_write_pool_status(self) -> None:
        await self._handle_pool_deletion()
        if not self.pool_keeper.take_due():
            return
        raw = self.pool_raw
        if raw is None:
            return
        if await self.pool_keeper.write_status(raw, self.records.values(), self.planner,
                                               problem=self.model.problem,
                                               deleting=self.model.deleting,
                                               ledger=self.model.ledger):
            self.kick()

    async def _handle_pool_deletion(self) -> None:
        raw, deleting = self.pool_raw, self.model.deleting
        holders = self._holders() if raw is not None and deleting else 0
        step = await self.pool_keeper.keep_finalizer(raw, deleting=deleting, holders=holders)
        if step.guarded:
            self.pool_dirty = True  # guarded now: waiters may be booked
            self.kick()
        for event in step.events:
            self._post_pool(event.type, event.reason, event.message)
        if step.write_status_now:
            self._schedule_pool_status(immediately=True)

    def _holders(self) -> int:
        """What keeps the pool's finalizer on: what is committed, and what is decided but not
        yet written - a grant whose write is in flight lands after the check, so it must block
        the finalizer too (review C2)."""
        holders = sum(1 for r in self.records.values()
                      if not r.deleting and (r.phase in HOLDING_PHASES
                                             or r.uid in self._inflight
                                             or r.uid in self._writing))
        if self.planner is not None:
            holders = max(holders, len(self.planner.bookings()))
        return holders


def _uid(raw: dict[str, Any] | None) -> Any:
    return None if raw is None else (raw.get("metadata") or {}).get("uid")


def _pool_identity(raw: dict[str, Any]) -> tuple[Any, ...]:
    """What of a pool's body matters to its actor (not its status)."""
    metadata = raw.get("metadata") or {}
    return (metadata.get("uid"), metadata.get("generation"), metadata.get("deletionTimestamp"),
            tuple(metadata.get("finalizers") or ()))


def _landed(pending: _Pending, current: dict[str, Any]) -> bool:
    """Does the object carry exactly the status this decision wrote? (Its status says the
    generation decided on; the object's own may have moved on since - a spec edit after the
    write landed does not undo it.)"""
    return canonical(current.get("status") or {}) == canonical(_clean(pending.outcome.status))


def _frees(before: Booking | None, after: Booking | None) -> bool:
    """Did this decision give anything back (so that a later one could use it)?"""
    if before is None:
        return False
    if after is None:
        return True
    if after is before:
        return False
    if after.mode != before.mode:
        # Exclusive to shared frees the cores for shared neighbours (found by the simulation,
        # seed 405: a shared neighbour booked on them landed before the mode change's own
        # write, and etcd showed an exclusive and a shared hold on one core).
        return True
    same_resources = after.R is before.R or after.R.dumps() == before.R.dumps()
    if not same_resources or after.start != before.start:
        return True
    return (after.end or math.inf) < (before.end or math.inf)


def _note_finalizers(record: Reservation, metadata: Mapping[str, Any]) -> None:
    """Take the finalizers (and resourceVersion) of a body we were given - a watch event or
    the answer to our status write - unless it is older than what we already know: a status
    write's answer that arrives after the watch showed our finalizer added would otherwise
    say it has none, and once the reservation is deleted nobody would remove it (found by the
    simulation, seed 2165)."""
    version = metadata.get("resourceVersion")
    if _is_newer(version if isinstance(version, str) else None, record.resource_version):
        return  # we know a later version of it
    record.finalizers = list(metadata.get("finalizers") or [])
    record.has_finalizer = FINALIZER in record.finalizers
    record.resource_version = _newer_version(record.resource_version, version)


def _is_newer(known: str | None, seen: Any) -> bool:
    """Is resourceVersion `seen` later than `known` (both etcd revisions)?"""
    return (isinstance(seen, str) and seen.isdigit() and isinstance(known, str)
            and known.isdigit() and int(seen) > int(known))


def _newer_version(known: str | None, seen: Any) -> str | None:
    """The later of two resourceVersions (a stale watch event must not move it back)."""
    if not isinstance(seen, str) or not seen:
        return known
    if known and known.isdigit() and seen.isdigit() and int(seen) < int(known):
        return known
    return seen


def _clean(value: Any) -> Any:
    """Drop None values (a JSON `add /status` replaces status whole, so absent = cleared)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _time_or(value: Any, default: float) -> float:
    if isinstance(value, str) and value:
        try:
            return parse_time(value)
        except ValueError:
            pass
    return default
