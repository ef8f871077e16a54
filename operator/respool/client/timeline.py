"""A terminal timeline of a pool's bookings: one row per rank (ranks with identical rows are
grouped), one column per time slot over the next hours, one letter per reservation.

    RANKS        15:00     16:00     17:00     18:00
    node[0-1]    AAAAAAAAAAAAAAAAAAAA....bbbbbbbbbbbb
    node2        xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
    node3        ++++++++++..........................

Pure functions over plain values, so the rendering is tested without a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

SYMBOLS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
FREE = "."
DOWN = "x"
OVERLAP = "+"
MORE = "#"
MAINTENANCE = "!"


@dataclass(frozen=True)
class Booking:
    """One reservation's hold on some ranks over a window (``end`` None: open-ended)."""

    label: str
    ranks: frozenset[int]
    start: float
    end: float | None
    mode: str = "exclusive"
    phase: str = "Active"
    nodes: str = ""

    def covers(self, begin: float, finish: float) -> bool:
        """Does the booking overlap ``[begin, finish)``?"""
        return self.start < finish and (self.end is None or self.end > begin)


@dataclass(frozen=True)
class Maintenance:
    """A maintenance window of the pool (``spec.maintenance[]``): drawn over everything."""

    name: str
    ranks: frozenset[int]
    start: float
    end: float
    mode: str = "Drain"
    reason: str = ""

    def covers(self, begin: float, finish: float) -> bool:
        return self.start < finish and self.end > begin


def encode_ranks(ranks: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (RFC 22 form)."""
    parts: list[str] = []
    ordered = sorted(set(ranks))
    index = 0
    while index < len(ordered):
        low = high = ordered[index]
        while index + 1 < len(ordered) and ordered[index + 1] == high + 1:
            index += 1
            high = ordered[index]
        parts.append(str(low) if low == high else f"{low}-{high}")
        index += 1
    return ",".join(parts)


def clock(epoch: float, *, utc: bool = False) -> str:
    moment = time.gmtime(epoch) if utc else time.localtime(epoch)
    return time.strftime("%H:%M", moment)


def span_text(seconds: float) -> str:
    """A short human duration: ``45s``, ``12m``, ``2h05m``, ``3d4h``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def assign_symbols(bookings: Sequence[Booking]) -> dict[Booking, str]:
    """A letter per booking, in order of start time (``#`` once the letters run out)."""
    ordered = sorted(bookings, key=lambda b: (b.start, b.label))
    return {b: SYMBOLS[i] if i < len(SYMBOLS) else MORE for i, b in enumerate(ordered)}


def _axis(now: float, step: float, width: int, utc: bool) -> str:
    """Hour labels (``HH:MM``) starting at the column where that hour begins, thinned out so
    that neighbouring labels keep a space between them."""
    hour = 3600.0
    columns_per_hour = hour / step
    every = 1
    while columns_per_hour * every < 6:
        every *= 2
    line = [" "] * width
    tick = (now // (hour * every) + 1) * hour * every
    while tick < now + step * width:
        column = int((tick - now) / step)
        label = clock(tick, utc=utc)
        if column + len(label) <= width:
            line[column : column + len(label)] = label
        tick += hour * every
    return "".join(line).rstrip()


def _end(booking: Booking) -> float:
    return float("inf") if booking.end is None else booking.end


def _share(booking: Booking, begin: float, finish: float) -> float:
    """How much of ``[begin, finish)`` the booking covers."""
    return min(_end(booking), finish) - max(booking.start, begin)


def _concurrent(bookings: Sequence[Booking]) -> bool:
    """Do any two of these bookings hold at the same time? (If two overlap, so do two that
    are neighbours in start order, so checking neighbours is enough.)"""
    ordered = sorted(bookings, key=lambda b: b.start)
    return any(later.start < _end(earlier) for earlier, later in pairwise(ordered))


def render_timeline(
    ranks: Sequence[int],
    bookings: Sequence[Booking],
    *,
    now: float,
    hours: float = 8.0,
    width: int = 48,
    down: frozenset[int] = frozenset(),
    name_ranks: Callable[[Sequence[int]], str] = encode_ranks,
    utc: bool = False,
    maintenance: Sequence[Maintenance] = (),
) -> list[str]:
    """The timeline grid and its legend, as lines of text."""
    if hours <= 0 or width < 8:
        raise ValueError(f"timeline needs hours > 0 and width >= 8, got {hours} and {width}")
    step = hours * 3600.0 / width
    symbols = assign_symbols(bookings)
    by_rank: dict[int, list[Booking]] = {}
    for booking in bookings:
        for rank in booking.ranks:
            by_rank.setdefault(rank, []).append(booking)

    def row(rank: int) -> str:
        cells = []
        for slot in range(width):
            begin = now + slot * step
            finish = begin + step
            covering = [b for b in by_rank.get(rank, ()) if b.covers(begin, finish)]
            if any(rank in m.ranks and m.covers(begin, finish) for m in maintenance):
                cells.append(MAINTENANCE)  # maintenance always wins
            elif not covering:
                cells.append(DOWN if rank in down else FREE)
            elif _concurrent(covering):
                cells.append(OVERLAP)
            else:
                # One holder hands over to the next inside this slot: show who holds most of it.
                cells.append(symbols[max(covering, key=lambda b: _share(b, begin, finish))])
        return "".join(cells)

    groups: list[tuple[list[int], str]] = []
    for rank in sorted(ranks):
        cells = row(rank)
        if groups and groups[-1][1] == cells and groups[-1][0][-1] == rank - 1:
            groups[-1][0].append(rank)
        else:
            groups.append(([rank], cells))
    names = [name_ranks(members) for members, _ in groups]
    left = max([len("RANKS"), *map(len, names)]) + 2
    zone = "UTC" if utc else time.strftime("%Z", time.localtime(now))
    lines = [f"{'RANKS':<{left}}{_axis(now, step, width, utc)}"]
    lines.extend(f"{name:<{left}}{cells}" for name, (_, cells) in zip(names, groups, strict=True))
    lines.append(
        f"{'':<{left}}^ now {clock(now, utc=utc)} {zone}; one column = {span_text(step)}; "
        f"{FREE} free, {DOWN} down, {OVERLAP} shared by several"
        + (f", {MAINTENANCE} maintenance" if maintenance else "")
    )
    lines.extend(render_legend(bookings, symbols, now=now, utc=utc))
    for window in sorted(maintenance, key=lambda m: (m.start, m.name)):
        if window.end <= now or window.start >= now + hours * 3600.0:
            continue
        why = f": {window.reason}" if window.reason else ""
        lines.append(f"{MAINTENANCE}  maintenance {window.name!r} "
                     f"{clock(window.start, utc=utc)}-{clock(window.end, utc=utc)} "
                     f"({window.mode}), ranks {encode_ranks(sorted(window.ranks))}{why}")
    return lines


def render_legend(
    bookings: Sequence[Booking],
    symbols: Mapping[Booking, str],
    *,
    now: float,
    utc: bool = False,
) -> list[str]:
    """One line per booking: letter, who, mode, phase, window, nodes."""
    if not bookings:
        return ["", "No active or scheduled reservations."]
    rows: list[list[str]] = []
    for booking in sorted(bookings, key=lambda b: (b.start, b.label)):
        if booking.start > now:
            window = f"{clock(booking.start, utc=utc)}-" + (
                clock(booking.end, utc=utc) if booking.end is not None else "open"
            )
            when = f"starts in {span_text(booking.start - now)}"
        else:
            window = f"until {clock(booking.end, utc=utc)}" if booking.end is not None else "open-ended"
            when = f"ends in {span_text(booking.end - now)}" if booking.end is not None else ""
        rows.append([symbols[booking], booking.label, booking.mode, booking.phase, window, when, booking.nodes])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["", *("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)]
