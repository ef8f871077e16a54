"""Reminders: the Events ``StartingSoon`` and ``EndingSoon`` on a ResourceReservation shortly
before its window opens or closes (issue 15), so a holder's tooling - or
``kubectl get events -w`` - knows in time.

The offsets are the pool's ``spec.policy.reminders`` (``startingSoon``, ``endingSoon``; default
15m each; ``0s`` turns one off). A reservation ``Scheduled`` whose ``status.startTime`` lies
ahead gets ``StartingSoon`` at ``startTime - startingSoon``; one ``Scheduled`` or ``Active``
whose ``status.endTime`` lies ahead gets ``EndingSoon`` at ``endTime - endingSoon``. A due time
already past (the reservation was booked less than the offset ahead) posts at once, as long as
the window time itself is still ahead.

Level-based: `Reminders` is fed the listed and watched pools and reservations by the
`Controller` (like `NodeEnforcer`) and computes the due reminders from the objects as the API
server has them, never from the actors' memory. One timer heap holds every due time; entries
superseded by a later event are skipped when they surface.

Each reminder is posted once per window: it is keyed by the reservation, its reason and the
window time it names, so a window moved or extended gets a new reminder and an unchanged one
none. Only the leader runs a `Controller` (standbys are idle), so only the leader posts.
After an operator restart the set of posted reminders is empty: a reminder whose due time had
passed before the restart but whose window time has not is posted once more (a bounded repeat:
at most one per restart, only for a window within its reminder offset at that moment).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from respool.api import format_time
from respool.api.timefmt import parse_duration, parse_time_or_none
from respool.controller.events import InvolvedObject
from respool.controller.ports import EventSink

logger = logging.getLogger(__name__)

STARTING_SOON = "StartingSoon"
ENDING_SOON = "EndingSoon"
DEFAULT_OFFSET = 15 * 60.0
#: The timer task wakes at least this often (a clock jump never delays a reminder longer).
MAX_SLEEP = 60.0


@dataclass(frozen=True)
class Offsets:
    """Seconds before the window's start / end; 0 disables that reminder."""

    starting_soon: float = DEFAULT_OFFSET
    ending_soon: float = DEFAULT_OFFSET


def offsets_of(pool: Mapping[str, Any] | None) -> Offsets:
    """A pool's reminder offsets (the defaults for an unknown pool or an unreadable value)."""
    policy = ((pool or {}).get("spec") or {}).get("policy") or {}
    reminders = policy.get("reminders") or {}

    def read(key: str) -> float:
        value = reminders.get(key)
        if value is None:
            return DEFAULT_OFFSET
        try:
            return max(0.0, parse_duration(str(value)))
        except ValueError:
            return DEFAULT_OFFSET  # admission rejects it; never crash on it here

    return Offsets(read("startingSoon"), read("endingSoon"))


@dataclass(frozen=True)
class Window:
    """What the reminders of one reservation depend on."""

    obj: InvolvedObject
    pool: str
    phase: str
    start: float | None
    end: float | None


def window_of(raw: Mapping[str, Any]) -> Window | None:
    metadata = raw.get("metadata") or {}
    uid, name = metadata.get("uid"), metadata.get("name")
    if not uid or not name:
        return None
    status = raw.get("status") or {}
    return Window(
        obj=InvolvedObject("ResourceReservation", str(name), str(uid),
                           str(metadata.get("namespace") or "") or None),
        pool=str((raw.get("spec") or {}).get("pool") or ""),
        phase=str(status.get("phase") or ""),
        start=parse_time_or_none(status.get("startTime")),
        end=parse_time_or_none(status.get("endTime")),
    )


def due_reminders(window: Window, offsets: Offsets) -> list[tuple[float, str, float]]:
    """(due time, reason, window time) of every reminder this reservation should get."""
    due: list[tuple[float, str, float]] = []
    if (window.phase == "Scheduled" and window.start is not None
            and offsets.starting_soon > 0):
        due.append((window.start - offsets.starting_soon, STARTING_SOON, window.start))
    if (window.phase in ("Scheduled", "Active") and window.end is not None
            and offsets.ending_soon > 0):
        due.append((window.end - offsets.ending_soon, ENDING_SOON, window.end))
    return due


def message_of(reason: str, at: float, now: float) -> str:
    left = max(0, round(at - now))
    minutes, seconds = divmod(left, 60)
    hours, minutes = divmod(minutes, 60)
    span = (f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes
            else f"{seconds}s")
    what = "starts" if reason == STARTING_SOON else "ends"
    return f"The reservation's window {what} at {format_time(at)} (in {span})"


class Reminders:
    def __init__(self, events: EventSink, *, clock: Callable[[], float] = time.time) -> None:
        self._events = events
        self._clock = clock
        self._pools: dict[str, Offsets] = {}
        self._windows: dict[str, Window] = {}  # uid -> its reservation as last seen
        self._posted: dict[str, set[tuple[str, float]]] = {}  # uid -> (reason, window time)
        # (due, uid, reason, window time): entries no longer wanted are skipped when popped.
        self._heap: list[tuple[float, str, str, float]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- feeding -----------------------------------------------------------------------------

    def on_pool(self, event_type: str | None, raw: Mapping[str, Any]) -> None:
        name = str((raw.get("metadata") or {}).get("name") or "")
        if not name:
            return
        offsets = Offsets() if event_type == "DELETED" else offsets_of(raw)
        if self._pools.get(name, Offsets()) == offsets and name in self._pools:
            return
        self._pools[name] = offsets
        for uid, window in self._windows.items():
            if window.pool == name:
                self._schedule(uid, window)

    def on_reservation(self, event_type: str | None, raw: Mapping[str, Any]) -> None:
        window = window_of(raw)
        if window is None:
            return
        uid = window.obj.uid
        if event_type == "DELETED":
            self._windows.pop(uid, None)
            self._posted.pop(uid, None)
            return
        if self._windows.get(uid) == window:
            return
        self._windows[uid] = window
        self._schedule(uid, window)

    def _schedule(self, uid: str, window: Window) -> None:
        earliest = None
        for due, reason, at in due_reminders(window, self._pools.get(window.pool, Offsets())):
            if (reason, at) in self._posted.get(uid, ()):
                continue
            heapq.heappush(self._heap, (due, uid, reason, at))
            earliest = due if earliest is None else min(earliest, due)
        if earliest is not None and earliest <= self._heap[0][0]:
            self._wake.set()

    # -- firing ------------------------------------------------------------------------------

    def fire_due(self) -> float | None:
        """Post every reminder due by now; return when the next one is due (None: none)."""
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            _, uid, reason, at = heapq.heappop(self._heap)
            window = self._windows.get(uid)
            if window is None or (reason, at) in self._posted.get(uid, ()):
                continue
            wanted = due_reminders(window, self._pools.get(window.pool, Offsets()))
            if not any(r == reason and a == at for _, r, a in wanted):
                continue  # superseded: moved, ended, or turned off since it was queued
            self._posted.setdefault(uid, set()).add((reason, at))
            if at <= now:
                continue  # the window already opened/closed: too late to remind
            self._events.post(window.obj, "Normal", reason, message_of(reason, at, now))
        return self._heap[0][0] if self._heap else None

    def pending(self) -> int:
        return len(self._heap)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="respool-reminders")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                following = self.fire_due()
            except Exception:  # never let one bad object stop the reminders
                logger.exception("reminders: unexpected error")
                following = None
            delay = MAX_SLEEP if following is None else min(
                MAX_SLEEP, max(0.0, following - self._clock()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
