"""Fair share: a pool's per-namespace limits (``spec.policy.limits``) as plain functions.

No kopf, no Kubernetes, no I/O, no clock: the life cycle (`lifecycle._Decider`) asks
`judge` whether the window the planner found for a reservation may be granted, given what
the other reservations of the same namespace hold, have booked and held in the last week.

Every limit whose ``namespaceSelector`` selects the reservation's namespace applies (absent:
every namespace); usage is always counted per namespace. The answer is one of:

* nothing: the window keeps every applicable limit;
* `Verdict(alone=True)`: the reservation alone exceeds a limit (more nodes, cores or GPUs
  than ``maxNodes``/``maxCores``/``maxGPUs``, more node-hours than ``maxNodeHoursPerWeek``,
  longer than ``maxDuration`` or than any stretch ``allowedHours`` allows): it can never be
  granted, and fails ``Failed/QuotaExceeded``;
* `Verdict(alone=False)`: over a limit now - it waits ``Pending`` with reason
  ``QuotaExceeded`` (the namespace holds or booked too much in that time, or the window
  starts more than ``maxAdvance`` ahead) or ``OutsideAllowedHours``, and is judged again when
  the namespace's usage drops (a release wakes every waiter of the pool) or at
  ``retry_at``, the first instant at which the passing of time alone may let it fit.

Times are epoch seconds. Windows are ``[start, end)``.
"""

from __future__ import annotations

import functools
import json
import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import accumulate
from typing import Any
from zoneinfo import ZoneInfo

from respool.api import NamespaceLimit, Reason, format_time, parse_duration
from respool.controller.selectors import selector_matches
from respool.pool import Booking

WEEK = 7 * 86400.0
DAY = 86400.0
#: An open-ended booking counts as held this far ahead (the policy bounds windows anyway).
OPEN_ENDED = 100 * 365 * DAY
#: How far ahead `next_allowed_start` looks for a stretch of allowed hours long enough:
#: the weekly pattern repeats (daylight-saving changes move it by an hour or so).
HOURS_HORIZON = 15 * DAY
#: Candidate instants tried when working out when a rolling week lets a window fit.
MAX_WEEK_CANDIDATES = 64
WEEKDAY_NUMBERS = {name: number for number, name in
                   enumerate(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))}


@dataclass(frozen=True)
class Use:
    """One window of a namespace: held, booked or (in the ledger) ended."""

    start: float
    end: float
    nodes: int
    cores: int
    gpus: int

    @property
    def node_seconds(self) -> float:
        return self.nodes * max(0.0, self.end - self.start)


def booking_use(booking: Booking) -> Use:
    end = booking.end if booking.end is not None else booking.start + OPEN_ENDED
    R = booking.R
    return Use(booking.start, end, R.count("node"), R.count("core"), R.count("gpu"))


@dataclass(frozen=True)
class Stretch:
    """One ``allowedHours`` entry: from `begin` to `finish` minutes past local midnight (a
    finish not after the begin is on the next day; 1440 is 24:00) on `days` (0 = Monday)."""

    days: frozenset[int]
    begin: int
    finish: int
    zone: ZoneInfo

    @property
    def text(self) -> str:
        days = ",".join(name for name, n in WEEKDAY_NUMBERS.items() if n in self.days)
        return (f"{_hhmm(self.begin)}-{_hhmm(self.finish)}"
                f"{' on ' + days if len(self.days) < 7 else ''} {self.zone.key}")


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


@dataclass(frozen=True)
class Limit:
    """One entry of ``policy.limits``, parsed (durations in seconds)."""

    index: int
    # The selector as given (compared through its JSON text: policies are compared to tell
    # whether a pool's policy changed).
    selector: Mapping[str, Any] | None = field(default=None, compare=False)
    selector_text: str = ""
    max_nodes: int | None = None
    max_cores: int | None = None
    max_gpus: int | None = None
    max_node_hours_per_week: float | None = None
    max_duration: float | None = None
    max_advance: float | None = None
    hours: tuple[Stretch, ...] = ()

    @classmethod
    def from_model(cls, model: NamespaceLimit, index: int) -> Limit:
        stretches = []
        for entry in model.allowed_hours or []:
            days = frozenset(WEEKDAY_NUMBERS[d] for d in entry.days) if entry.days else \
                frozenset(range(7))
            stretches.append(Stretch(days, _minutes(entry.from_), _minutes(entry.to),
                                     ZoneInfo(entry.time_zone)))
        selector = model.namespace_selector.to_wire() if model.namespace_selector else None
        return cls(
            index=index,
            selector=selector,
            selector_text=json.dumps(selector, sort_keys=True),
            max_nodes=model.max_nodes,
            max_cores=model.max_cores,
            max_gpus=model.max_gpus,
            max_node_hours_per_week=(None if model.max_node_hours_per_week is None
                                     else float(model.max_node_hours_per_week)),
            max_duration=parse_duration(model.max_duration) if model.max_duration else None,
            max_advance=(parse_duration(model.max_advance) if model.max_advance is not None
                         else None),
            hours=tuple(stretches),
        )

    @property
    def name(self) -> str:
        return f"policy.limits[{self.index}]"

    def applies_to(self, labels: Mapping[str, str]) -> bool:
        """Does this limit select a namespace with these labels? (NamespaceLabelsUnknown when
        it has a selector and the labels are not known.)"""
        return selector_matches(self.selector, labels)


def applicable(limits: Iterable[Limit], labels: Mapping[str, str]) -> tuple[Limit, ...]:
    return tuple(limit for limit in limits if limit.applies_to(labels))


@dataclass(frozen=True)
class Verdict:
    reason: str
    message: str
    alone: bool = False
    retry_at: float | None = None


# ---------------------------------------------------------------------------------------------
# Allowed hours (wall-clock time in a zone, daylight-saving changes included)


@functools.lru_cache(maxsize=65536)
def local_instant(zone: ZoneInfo, day: date, minute: int) -> float:
    """The first instant at which the wall clock in `zone` shows `minute` past midnight of
    `day` (1440: midnight at its end) or later: on a spring-forward night a time the clocks
    skip begins when the clocks jump past it; a time shown twice on a fall-back night is its
    first showing."""
    if minute >= 1440:
        day, minute = day + timedelta(days=1), minute - 1440
    naive = datetime(day.year, day.month, day.day, minute // 60, minute % 60)
    first = naive.replace(tzinfo=zone, fold=0).timestamp()
    second = naive.replace(tzinfo=zone, fold=1).timestamp()
    if datetime.fromtimestamp(first, zone).replace(tzinfo=None) == naive:
        return min(first, second)
    # In a gap: the clocks jump from before `naive` to after it between the two readings.
    low, high = int(min(first, second)), math.ceil(max(first, second))
    while low < high:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle + 1
    return float(low)


def allowed_intervals(stretches: Sequence[Stretch], begin: float,
                      end: float) -> list[tuple[float, float]]:
    """The allowed stretches that touch ``[begin, end]``, as merged epoch intervals (a stretch
    ending where another begins makes one interval)."""
    intervals: list[tuple[float, float]] = []
    for stretch in stretches:
        zone = stretch.zone
        first = datetime.fromtimestamp(begin, zone).date() - timedelta(days=1)
        last = datetime.fromtimestamp(end, zone).date() + timedelta(days=1)
        day = first
        while day <= last:
            if day.weekday() in stretch.days:
                finish = stretch.finish if stretch.finish > stretch.begin else \
                    stretch.finish + 1440
                a = local_instant(zone, day, stretch.begin)
                b = local_instant(zone, day, finish)
                if b > a and b >= begin and a <= end:
                    intervals.append((a, b))
            day += timedelta(days=1)
    intervals.sort()
    merged: list[tuple[float, float]] = []
    for a, b in intervals:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def within_hours(stretches: Sequence[Stretch], start: float, end: float) -> bool:
    """Does ``[start, end)`` lie within the allowed stretches (joined where they touch)?"""
    return any(a <= start and end <= b for a, b in allowed_intervals(stretches, start, end))


def next_allowed_start(stretches: Sequence[Stretch], after: float, length: float,
                       horizon: float = HOURS_HORIZON) -> float | None:
    """The earliest start >= `after` (whole seconds) of a window of `length` seconds that lies
    within the allowed stretches, looking `horizon` ahead; None if there is none."""
    for a, b in allowed_intervals(stretches, after, after + horizon):
        start = float(math.ceil(max(a, after)))
        if start + length <= b:
            return start
    return None


def _hours_cover_everything(stretches: Sequence[Stretch], at: float) -> bool:
    merged = allowed_intervals(stretches, at, at + 9 * DAY)
    return any(a <= at and at + 9 * DAY <= b for a, b in merged)


def _hours_can_ever_hold(stretches: Sequence[Stretch], start: float, length: float) -> bool:
    if _hours_cover_everything(stretches, start):
        return True
    if length > 8 * DAY:
        # With a gap somewhere in the week, no stretch of allowed time is longer than a week
        # (plus a daylight-saving hour).
        return False
    return next_allowed_start(stretches, start, length) is not None


# ---------------------------------------------------------------------------------------------
# Usage over time


def peak(uses: Iterable[Use], start: float, end: float) -> tuple[int, int, int]:
    """The most nodes, cores and GPUs `uses` hold at one instant of ``[start, end)``."""
    changes: list[tuple[float, int, int, int]] = []
    for use in uses:
        if use.start < end and use.end > start:
            changes.append((max(use.start, start), use.nodes, use.cores, use.gpus))
            changes.append((use.end, -use.nodes, -use.cores, -use.gpus))
    changes.sort(key=lambda change: (change[0], change[1] > 0))  # ends before starts
    nodes = cores = gpus = 0
    best = (0, 0, 0)
    for _, dn, dc, dg in changes:
        nodes, cores, gpus = nodes + dn, cores + dc, gpus + dg
        best = (max(best[0], nodes), max(best[1], cores), max(best[2], gpus))
    return best


class _Cumulative:
    """F(x) = node-seconds the uses hold before x, in O(log n) per query."""

    def __init__(self, uses: Sequence[Use]) -> None:
        starts = sorted((u.start, float(u.nodes)) for u in uses)
        ends = sorted((u.end, float(u.nodes)) for u in uses)
        self.starts = [t for t, _ in starts]
        self.ends = [t for t, _ in ends]
        self.start_nodes = [0.0, *accumulate(n for _, n in starts)]
        self.start_weighted = [0.0, *accumulate(n * t for t, n in starts)]
        self.end_nodes = [0.0, *accumulate(n for _, n in ends)]
        self.end_weighted = [0.0, *accumulate(n * t for t, n in ends)]

    def __call__(self, x: float) -> float:
        i = bisect_left(self.starts, x)
        j = bisect_left(self.ends, x)
        opened = self.start_nodes[i] * x - self.start_weighted[i]
        closed = self.end_nodes[j] * x - self.end_weighted[j]
        return opened - closed


def busiest_week(uses: Sequence[Use], start: float, end: float) -> float:
    """The most node-seconds `uses` add up to in any 7 days that overlap ``[start, end)``."""
    relevant = [u for u in uses if u.end > start - WEEK and u.start < end + WEEK]
    if not relevant:
        return 0.0
    total = _Cumulative(relevant)
    low, high = start - WEEK, end
    candidates = {low, high}
    for use in relevant:
        for t in (use.start, use.end, use.start - WEEK, use.end - WEEK):
            if low <= t <= high:
                candidates.add(t)
    return max(total(t + WEEK) - total(t) for t in candidates)


# ---------------------------------------------------------------------------------------------
# The judgement


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _human(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{days}d" if days else "") + (f"{hours}h" if hours else "") + \
        (f"{minutes}m" if minutes else "")
    return text + (f"{secs}s" if secs or not text else "")


def _hours(node_seconds: float) -> str:
    return f"{node_seconds / 3600:.4g}"


def judge_alone(limits: Sequence[Limit], window: Use) -> Verdict | None:
    """Does the window alone exceed one of `limits` (so that it can never be granted)?"""
    length = window.end - window.start
    for limit in limits:
        counted = (("nodes", window.nodes, limit.max_nodes, "maxNodes"),
                   ("cores", window.cores, limit.max_cores, "maxCores"),
                   ("GPUs", window.gpus, limit.max_gpus, "maxGPUs"))
        for word, have, most, key in counted:
            if most is not None and have > most:
                return Verdict(Reason.QUOTA_EXCEEDED.value,
                               f"it alone holds {have} {word}, more than {limit.name}.{key} "
                               f"({most}) allows this namespace", alone=True)
        if limit.max_node_hours_per_week is not None and \
                window.node_seconds > limit.max_node_hours_per_week * 3600:
            return Verdict(Reason.QUOTA_EXCEEDED.value,
                           f"it alone takes {_hours(window.node_seconds)} node-hours, more "
                           f"than {limit.name}.maxNodeHoursPerWeek "
                           f"({limit.max_node_hours_per_week:g}) allows in a week", alone=True)
        if limit.max_duration is not None and length > limit.max_duration:
            return Verdict(Reason.QUOTA_EXCEEDED.value,
                           f"its window ({_human(length)}) is longer than {limit.name}."
                           f"maxDuration ({_human(limit.max_duration)})", alone=True)
        if limit.hours and not _hours_can_ever_hold(limit.hours, window.start, length):
            return Verdict(Reason.QUOTA_EXCEEDED.value,
                           f"its window ({_human(length)}) is longer than any stretch "
                           f"{limit.name}.allowedHours allows "
                           f"({'; '.join(s.text for s in limit.hours)})", alone=True)
    return None


def judge(limits: Sequence[Limit], window: Use,
          others: Sequence[Use] | Callable[[], Sequence[Use]], now: float) -> Verdict | None:
    """Judge a window against the limits that apply to its namespace; `others` are the
    namespace's other windows (held, booked, and ended within the last week), or what gives
    them (called only when a limit counts them)."""
    if not limits:
        return None
    alone = judge_alone(limits, window)
    if alone is not None:
        return alone
    start, end = window.start, window.end
    length = end - start
    for limit in limits:
        if limit.max_advance is not None and start - now > limit.max_advance:
            opens = start - limit.max_advance
            return Verdict(Reason.QUOTA_EXCEEDED.value,
                           f"the window would start at {format_time(start)}, more than "
                           f"{limit.name}.maxAdvance ({_human(limit.max_advance)}) ahead; "
                           f"waiting until {format_time(opens)}",
                           retry_at=float(math.ceil(opens)))
    for limit in limits:
        if limit.hours and not within_hours(limit.hours, start, end):
            hours_open = next_allowed_start(limit.hours, start, length)
            when = (f"; the hours allow such a window from {format_time(hours_open)}"
                    if hours_open is not None else "")
            return Verdict(Reason.OUTSIDE_ALLOWED_HOURS.value,
                           f"the window {format_time(start)} to {format_time(end)} is not "
                           f"within {limit.name}.allowedHours "
                           f"({'; '.join(s.text for s in limit.hours)}){when}",
                           retry_at=hours_open)
    counting = [limit for limit in limits
                if limit.max_nodes is not None or limit.max_cores is not None
                or limit.max_gpus is not None or limit.max_node_hours_per_week is not None]
    if not counting:
        return None
    if callable(others):
        others = others()
    overlapping = [u for u in others if u.start < end and u.end > start]
    held = peak(overlapping, start, end) if overlapping else (0, 0, 0)
    for limit in limits:
        counted = (("nodes", window.nodes, held[0], limit.max_nodes, "maxNodes"),
                   ("cores", window.cores, held[1], limit.max_cores, "maxCores"),
                   ("GPUs", window.gpus, held[2], limit.max_gpus, "maxGPUs"))
        for word, have, busy, most, key in counted:
            if most is not None and have + busy > most:
                ends = [u.end for u in overlapping if u.end > now]
                return Verdict(Reason.QUOTA_EXCEEDED.value,
                               f"the namespace holds or booked up to {busy} {word} in that "
                               f"window; with this one's {have} that is more than "
                               f"{limit.name}.{key} ({most}); waiting for its usage to drop",
                               retry_at=min(ends) if ends else None)
    weekly = [limit for limit in limits if limit.max_node_hours_per_week is not None]
    if weekly:
        uses = [*others, window]
        busiest = busiest_week(uses, start, end)
        for limit in weekly:
            assert limit.max_node_hours_per_week is not None
            ceiling = limit.max_node_hours_per_week * 3600
            if busiest > ceiling + 1e-6:
                retry = _week_frees_at(others, window, ceiling, now)
                when = f"; at this rate it fits from {format_time(retry)}" if retry else ""
                return Verdict(Reason.QUOTA_EXCEEDED.value,
                               f"with this window the namespace would use "
                               f"{_hours(busiest)} node-hours in 7 days, more than "
                               f"{limit.name}.maxNodeHoursPerWeek "
                               f"({limit.max_node_hours_per_week:g}){when}",
                               retry_at=retry)
    return None


def _week_frees_at(others: Sequence[Use], window: Use, most: float,
                   now: float) -> float | None:
    """The first later start at which the same window would keep `most` node-seconds in every
    rolling week, if nothing but time changed (None: not within the candidates tried)."""
    length = window.end - window.start
    after = max(window.start, now)
    points: set[float] = set()
    for use in others:
        for t in (use.start, use.end, use.start - WEEK, use.end - WEEK):
            for x in (t + WEEK, t - length):
                if x > after:
                    points.add(float(math.ceil(x)))
    previous = after

    def fits(x: float) -> bool:
        shifted = Use(x, x + length, window.nodes, window.cores, window.gpus)
        return busiest_week([*others, shifted], x, x + length) <= most + 1e-6

    for candidate in sorted(points)[:MAX_WEEK_CANDIDATES]:
        if fits(candidate):
            # Between the previous candidate and this one the usage changes linearly:
            # bisect for the first whole second that fits.
            low, high = previous, candidate
            while high - low > 1:
                middle = float(math.floor((low + high) / 2))
                if fits(middle):
                    high = middle
                else:
                    low = middle
            return high
        previous = candidate
    return None


# ---------------------------------------------------------------------------------------------
# What a namespace holds: from the planner's bookings and the ledger of ended windows


class UsageLedger:
    """Windows of the last 7 days that ended (expired, deleted, failed, cut short, lost to a
    missed claim), by reservation UID and start: they still count toward
    ``maxNodeHoursPerWeek`` after the planner let them go. An entry whose window is in the
    planner again (a failed status write rolled the release back) is not counted twice. Kept
    in memory by the pool's actor (an operator restart forgets it)."""

    def __init__(self) -> None:
        self._ended: dict[tuple[str, float], tuple[str, Use]] = {}
        # What each booking holds, counted once per Booking object (counting walks its
        # ranks; a pool's judgements would otherwise count every booking again and again).
        self._counted: dict[str, tuple[Booking, Use]] = {}

    def use_of(self, booking: Booking) -> Use:
        cached = self._counted.get(booking.id)
        if cached is not None and cached[0] is booking:
            return cached[1]
        use = booking_use(booking)
        self._counted[booking.id] = (booking, use)
        return use

    def forget_counts_but(self, bookings: Sequence[Booking]) -> None:
        """Drop the counts of bookings no longer in the planner (now and then)."""
        if len(self._counted) > 2 * len(bookings) + 64:
            ids = {booking.id for booking in bookings}
            self._counted = {key: value for key, value in self._counted.items()
                             if key in ids}

    def __len__(self) -> int:
        return len(self._ended)

    def record(self, uid: str, namespace: str, booking: Booking, now: float) -> None:
        """`booking` of reservation `uid` was let go at `now`: what of it had begun counts."""
        if booking.start >= now:
            return
        use = booking_use(booking)
        self.record_use(uid, namespace, Use(use.start, min(use.end, now), use.nodes, use.cores,
                                            use.gpus))

    def record_use(self, uid: str, namespace: str, use: Use) -> None:
        self._ended[(uid, use.start)] = (namespace, use)

    def prune(self, now: float) -> None:
        old = [key for key, (_, use) in self._ended.items() if use.end <= now - WEEK]
        for key in old:
            del self._ended[key]

    def items(self) -> list[tuple[str, str, Use]]:
        return [(uid, namespace, use) for (uid, _), (namespace, use) in self._ended.items()]


def namespace_uses(bookings: Sequence[Booking], namespace_of: Callable[[str], str | None],
                   ledger: UsageLedger | None, namespace: str, exclude: str,
                   now: float) -> list[Use]:
    """The windows of `namespace` but the one reservation `exclude` holds or booked: held and
    booked ones from the planner, ended ones (of the last week, `exclude`'s earlier windows
    among them) from the ledger."""
    count = booking_use if ledger is None else ledger.use_of
    mine = [booking for booking in bookings
            if namespace_of(booking.id) == namespace and booking.id != exclude]
    uses = [count(booking) for booking in mine]
    if ledger is not None:
        ledger.forget_counts_but(bookings)
        ended = [(uid, use) for uid, owner, use in ledger.items()
                 if owner == namespace and use.end > now - WEEK]
        if ended:
            held = {booking.id: booking.start for booking in mine}
            if exclude:
                held.update((b.id, b.start) for b in bookings if b.id == exclude)
            uses.extend(use for uid, use in ended if held.get(uid) != use.start)
    return uses


def usage_summary(bookings: Iterable[Booking], namespace_of: Callable[[str], str | None],
                  ledger: UsageLedger | None, now: float) -> list[dict[str, Any]]:
    """`status.usage` of a pool: per namespace, what it holds now and its node-hours of the
    last 7 days (held and ended) and from now on (held and booked)."""
    per: dict[str, list[Use]] = {}
    held: dict[str, float] = {}
    for booking in bookings:
        held[booking.id] = booking.start
        namespace = namespace_of(booking.id)
        if namespace is not None:
            per.setdefault(namespace, []).append(booking_use(booking))
    if ledger is not None:
        for uid, namespace, use in ledger.items():
            if held.get(uid) != use.start and use.end > now - WEEK:
                per.setdefault(namespace, []).append(use)
    entries = []
    for namespace in sorted(per):
        uses = per[namespace]
        nodes = cores = gpus = 0
        used = booked_ahead = 0.0
        for use in uses:
            if use.start <= now < use.end:
                nodes, cores, gpus = nodes + use.nodes, cores + use.cores, gpus + use.gpus
            used += use.nodes * max(0.0, min(use.end, now) - max(use.start, now - WEEK))
            booked_ahead += use.nodes * max(0.0, use.end - max(use.start, now))
        entries.append({"namespace": namespace, "nodes": nodes, "cores": cores, "gpus": gpus,
                        "nodeHoursUsed": round(used / 3600, 1),
                        "nodeHoursBooked": round(min(booked_ahead, OPEN_ENDED) / 3600, 1)})
    return entries
