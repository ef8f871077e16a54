"""Where each waiting reservation stands: `status.queuePosition` and `status.startNoLaterThan`.

A pure computation over a pool's records and planner (no kopf, no Kubernetes, no I/O), plus a
small tracker the pool actor keeps so that it rewrites only the statuses whose standing
changed, and not more often than `REFRESH_INTERVAL`.

The queue is the pool's Pending reservations that wait for capacity (reason
`WaitingForCapacity`), in the order the actor decides them when capacity frees: first
requested first (`decision_key`, the same key as `PoolActor._ordered`; a unit test keeps the
two equal). Reservations waiting for anything else (a pool that is missing, being deleted, or
does not admit their namespace) are not in it: a position would tell a namespace the pool
does not admit that the pool exists.

`startNoLaterThan` is the start the planner projects if nothing changes but time: every
window held now runs to its end, nothing new is booked, and at every moment capacity frees the
waiting reservations are tried in queue order, exactly as the actor tries them (a request
without `nextAvailable` gets the window starting then if it fits; one with `nextAvailable`
its earliest window before `maxWait`). Holders that end early usually bring it earlier; a new
reservation that fits before it can push it later (the pool grants whatever fits now, so
nothing is held for a waiter). It is absent where the planner cannot bound it: no such window
before `maxWait`, the pool's expiration or the last writable time, ranks it needs down, a spec
it cannot judge, or deeper in the queue than `PROJECTION_DEPTH`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from respool.api import ConditionType, Reason, format_time, parse_time_or_none
from respool.controller.lifecycle import (
    ACTIVE,
    PENDING,
    Policy,
    Reservation,
    SpecError,
    latest_start,
    max_wait_deadline,
    parse_spec,
    window_length,
)
from respool.pool import InfeasibleRequest, InsufficientResources, Planner

#: Status fields this module owns.
POSITION = "queuePosition"
START_NO_LATER_THAN = "startNoLaterThan"
#: Only the first this many in the queue get a projected start (each costs planner searches).
PROJECTION_DEPTH = 100
#: At most this many planner searches per projection; those not reached get no bound.
PROJECTION_BUDGET = 2000
#: The actor recomputes standings at most this often (seconds); a reservation it decides in
#: between keeps the standing last computed.
REFRESH_INTERVAL = 5.0
#: The actor's timer for a recomputation owed (a key of its wake-up table that is no UID).
WAKE_KEY = "respool.io/standing"


@dataclass(frozen=True)
class Standing:
    position: int  # 1 = next in line
    start_no_later_than: float | None

    def fields(self) -> dict[str, Any]:
        return {
            POSITION: self.position,
            START_NO_LATER_THAN: (None if self.start_no_later_than is None
                                  else format_time(self.start_no_later_than)),
        }


def decision_key(record: Reservation) -> tuple[int, int, float, str]:
    """The order the pool actor decides reservations in: deletions and Active ones first
    (they free capacity), then everything else by priority (issue 14), then in the order
    first requested."""
    group = 0 if record.deleting else 1 if record.phase == ACTIVE else 2
    first = parse_time_or_none(record.first_request)
    return (group, -record.priority if group == 2 else 0,
            record.created if first is None else first, record.name)


def waits_for_capacity(status: Mapping[str, Any]) -> bool:
    """Pending because the pool has no room for it yet (not for a missing pool or the like)."""
    if status.get("phase") != PENDING:
        return False
    for condition in status.get("conditions") or []:
        if condition.get("type") == ConditionType.RECONCILING.value:
            return bool(condition.get("status") == "True"
                        and condition.get("reason") == Reason.WAITING_FOR_CAPACITY.value)
    return False


#: In the committed status text of a Pending reservation that waits for capacity, and of no
#: other Pending one (its Ready, Reconciling and Scheduled conditions all carry its reason):
#: found without parsing the status, which the actor keeps as JSON text.
_WAITING_TEXT = f'"reason":"{Reason.WAITING_FOR_CAPACITY.value}"'


def queue(records: Iterable[Reservation]) -> list[Reservation]:
    """The pool's waiting reservations in decision order."""
    waiting = [r for r in records
               if r.phase == PENDING and not r.deleting and _WAITING_TEXT in r.status_text]
    return sorted(waiting, key=decision_key)


@dataclass
class _Waiter:
    record: Reservation
    request: Any
    anchor: float
    length: float
    mode: str
    next_available: bool
    deadline: float  # no window starts later (maxWait, the last writable time)
    max_wait: float | None  # from then on it is Failed (the life cycle's maxWait deadline)
    retries: int  # attempts counted so far (status.retryCount)
    max_retry: int
    seen: float | None  # the earliest fit its last attempt was answered
    earliest: float | None = None  # no window fits before this (it only ever grows)
    searched_at: int = -1  # placements made when `earliest` was computed


def standings(records: Iterable[Reservation], planner: Planner | None, policy: Policy,
              now: float, depth: int = PROJECTION_DEPTH,
              budget: int = PROJECTION_BUDGET) -> dict[str, Standing]:
    """uid -> Standing for every reservation in the pool's queue (see the module's doc)."""
    line = queue(records)
    projected = (_project(line[:depth], planner, policy, now, budget)
                 if planner is not None and line else {})
    return {record.uid: Standing(position, projected.get(record.uid))
            for position, record in enumerate(line, start=1)}


def _project(line: list[Reservation], planner: Planner, policy: Policy, now: float,
             budget: int) -> dict[str, float]:
    """Replay the actor's retries on a scratch planner. At each moment capacity frees enough
    for some waiter, every waiter is tried in queue order (as `PoolActor.step` retries them
    all): it books what the life cycle would book, or it fails again - and such an attempt
    counts against maxRetry when its answer (the earliest fit) changed, as
    `lifecycle._Decider._counts_as_retry` counts it."""
    now = float(int(now))
    scratch = planner.copy()
    waiters = [w for w in (_waiter(r, scratch, policy, now) for r in line) if w is not None]
    starts: dict[str, float] = {}
    searches = placements = 0
    for waiter in waiters:
        waiter.earliest, waiter.searched_at = _earliest(scratch, waiter, now), placements
        searches += 1
    while searches < budget:
        open_ = [w for w in waiters if w.record.uid not in starts and w.earliest is not None]
        if not open_:
            break
        moment = min(w.earliest for w in open_ if w.earliest is not None)
        for waiter in open_:
            if searches >= budget:
                break
            if waiter.max_wait is not None and moment >= waiter.max_wait:
                waiter.earliest = None  # Failed/MaxWaitExceeded: it never starts
                continue
            if waiter.earliest is not None and waiter.earliest <= moment:
                searches += 1
                start = _try(scratch, waiter, moment)
                if start is not None:
                    starts[waiter.record.uid] = start
                    placements += 1
                    continue
            if waiter.searched_at != placements:
                searches += 1
                waiter.earliest = _earliest(scratch, waiter, moment)
                waiter.searched_at = placements
            if waiter.earliest != waiter.seen:
                waiter.seen = waiter.earliest
                waiter.retries += 1
                if waiter.retries > waiter.max_retry:
                    waiter.earliest = None  # Failed/RetryExceeded: it never starts
    return starts


def _waiter(record: Reservation, planner: Planner, policy: Policy,
            now: float) -> _Waiter | None:
    try:
        spec = parse_spec(record.spec)
        first = parse_time_or_none(record.first_request)
        first = now if first is None else first
        anchor = spec.start if spec.start is not None else float(int(first))
        length = window_length(spec, anchor, policy, now)
        request = planner.parse(spec.jobspec)
        planner.check_feasibility(request)
    except (SpecError, InfeasibleRequest, ValueError, TypeError, KeyError):
        return None  # decided as Failed next time; no bound to give
    limit = latest_start(length)
    deadline = max_wait_deadline(spec, first)
    status = record.status
    if record.failed_attempt is not None:
        fits, earliest, _plan_key = record.failed_attempt
        seen = float(earliest) if fits else None
    else:
        seen = parse_time_or_none((status.get("nextAvailable") or {}).get("availStart"))
    return _Waiter(record, request, anchor, length, spec.mode, spec.next_available,
                   limit if deadline is None else min(deadline, limit), deadline,
                   int(status.get("retryCount") or 0), spec.max_retry, seen)


def _earliest(planner: Planner, waiter: _Waiter, after: float) -> float | None:
    return planner.earliest(waiter.request, waiter.length, max(waiter.anchor, after),
                            waiter.mode, deadline=waiter.deadline)


def _try(planner: Planner, waiter: _Waiter, moment: float) -> float | None:
    """What the actor's retry at `moment` books for this waiter (kept in the scratch planner),
    or None if it would stay Pending."""
    start = max(waiter.anchor, moment)
    if start > waiter.deadline or (waiter.max_wait is not None and moment >= waiter.max_wait):
        return None
    booking_id = f"standing/{waiter.record.uid}"
    try:
        if waiter.next_available:
            booking = planner.reserve_earliest(booking_id, waiter.request, waiter.length, start,
                                               waiter.mode, deadline=waiter.deadline)
        else:
            booking = planner.reserve(booking_id, waiter.request, start, start + waiter.length,
                                      waiter.mode)
    except (InsufficientResources, InfeasibleRequest, ValueError):
        return None
    return None if booking is None else booking.start


def committed(status: Mapping[str, Any]) -> dict[str, Any]:
    """The standing fields a status carries now."""
    return {POSITION: status.get(POSITION), START_NO_LATER_THAN: status.get(START_NO_LATER_THAN)}


def stamp(status: dict[str, Any], standing: Standing | None) -> None:
    """Put the standing on a status about to be committed, or take it off one that is not
    waiting for capacity. Without a standing (not computed yet) a waiter keeps what it had."""
    if not waits_for_capacity(status):
        status.pop(POSITION, None)
        status.pop(START_NO_LATER_THAN, None)
    elif standing is not None:
        status.update(standing.fields())


class StandingTracker:
    """The standings last computed for one pool."""

    def __init__(self, interval: float = REFRESH_INTERVAL) -> None:
        self.interval = interval
        self.current: dict[str, Standing] = {}
        self._computed_at: float | None = None
        self._inputs: tuple[Any, ...] | None = None

    def stamp(self, uid: str, status: dict[str, Any]) -> None:
        """Put this reservation's standing on the status about to be committed for it."""
        stamp(status, self.current.get(uid))

    def refresh(self, records: Mapping[str, Reservation], planner: Planner | None,
                policy: Policy, now: float) -> tuple[set[str], float | None]:
        """Recompute when the queue or the planner changed and `interval` has passed since
        the last computation. Returns the reservations whose committed standing differs from
        a new computation (each once: deciding one again stamps and writes it, and any later
        decision stamps it too), and, when a computation is owed but not yet allowed, when
        to call again."""
        line = tuple(r.uid for r in queue(records.values()))
        inputs = (line, None if planner is None else planner.generation, policy)
        if inputs == self._inputs:
            return set(), None
        if self._computed_at is not None and now < self._computed_at + self.interval:
            return set(), self._computed_at + self.interval
        self._inputs = inputs
        self._computed_at = now
        self.current = standings(records.values(), planner, policy, now) if line else {}
        stale = {uid for uid, standing in self.current.items()
                 if committed(records[uid].status) != standing.fields()}
        return stale, None
