"""What a pool has free, computed from the pool and its reservations' statuses: nothing is
created, held or changed (KISS ATS: `get_next_avail_time()` "does not reserve or claim the
resource").

The operator's planner is rebuilt here the way a restarted operator rebuilds it: the pool's R,
its down ranks (`status.down`: `spec.down` plus Nodes tracked as down) and expiration, and the
committed grants of its Active and Scheduled reservations (`status.allocated.R`,
`startTime`, `endTime`). The answers are those the operator would give for the same request
at the same moment, up to what changed since the objects were read.

Reading needs `get` on the pool and `list` on reservations in every namespace (the pool's
bookings come from all of them): an administrator's or a cluster-wide viewer's rights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from respool.api import parse_duration, parse_time_or_none
from respool.controller import lifecycle
from respool.pool import IDset, Planner

HOLDING = frozenset({"Active", "Scheduled"})


@dataclass(frozen=True)
class Availability:
    """The planner's answers for one request (times in epoch seconds)."""

    pool: str
    start: float  # the start asked for
    duration: float  # the length asked for
    available: bool  # is [start, start + duration) free for it
    earliest_start: float | None  # the earliest start >= start with a free window
    earliest_end: float | None
    longest_now: float | None  # longest window from `start` (None: open-ended), 0 if none
    max_duration: float | None  # the pool's policy.maxDuration
    free: list[tuple[float, dict[str, dict[str, int]]]]  # capacity at each step from start


def planner_for(pool: Mapping[str, Any], reservations: Iterable[Mapping[str, Any]]) -> Planner:
    """The pool's planner as the operator holds it, rebuilt from the objects (read-only)."""
    name = (pool.get("metadata") or {}).get("name") or ""
    spec = pool.get("spec") or {}
    planner = Planner(dict(spec.get("resources") or {}))
    expiration = parse_time_or_none(spec.get("expiration"))
    if expiration:
        planner.set_expiration(expiration)
    down = IDset(str(spec.get("down") or "")) | IDset(
        str((pool.get("status") or {}).get("down") or ""))
    if down:
        planner.mark_down(str(down))
    holders = []
    for obj in reservations:
        metadata = obj.get("metadata") or {}
        status = obj.get("status") or {}
        if (obj.get("spec") or {}).get("pool") != name or status.get("phase") not in HOLDING:
            continue
        if metadata.get("deletionTimestamp"):
            continue
        holders.append(lifecycle.Reservation(
            uid=str(metadata.get("uid") or metadata.get("name") or ""),
            namespace=str(metadata.get("namespace") or ""), name=str(metadata.get("name") or ""),
            generation=int(metadata.get("generation") or 0), spec=obj.get("spec") or {},
            status=status))
    # The operator's order: Active ones first, then by start.
    holders.sort(key=lambda r: (0 if r.phase == "Active" else 1,
                                str(r.status.get("startTime") or "")))
    for holder in holders:
        lifecycle.restore(holder, planner)  # one that no longer fits holds nothing here either
    return planner


def query(pool: Mapping[str, Any], reservations: Iterable[Mapping[str, Any]],
          spec: Mapping[str, Any], start: float, duration: float,
          horizon: float | None = None) -> Availability:
    """Answer for the reservation `spec` (the request fields of a ResourceReservation spec:
    request/resources/constraints/mode) asked at `start` for `duration` seconds: is that
    window free, the earliest window of that length, the longest window from `start`, and
    what is free over time until `horizon` (default: start + duration).

    ValueError (with the operator's message) when the request is invalid or can never fit."""
    name = str((pool.get("metadata") or {}).get("name") or "")
    parsed = lifecycle.parse_spec({**spec, "pool": name})
    planner = planner_for(pool, reservations)
    request = planner.parse(parsed.jobspec)
    planner.check_feasibility(request)
    begin = float(math.floor(start))
    length = float(max(1, math.ceil(duration)))
    policy = (pool.get("spec") or {}).get("policy") or {}
    max_duration = parse_duration(policy["maxDuration"]) if policy.get("maxDuration") else None
    available = planner.fits(request, begin, begin + length, parsed.mode)
    earliest = planner.earliest(request, length, begin, parsed.mode,
                                deadline=lifecycle.LAST_EPOCH - length)
    longest = planner.longest(request, begin, parsed.mode)
    if max_duration is not None and (longest is None or longest > max_duration):
        longest = max_duration
    until = begin + length if horizon is None else max(horizon, begin + 1)
    return Availability(
        pool=name, start=begin, duration=length, available=available,
        earliest_start=earliest, earliest_end=None if earliest is None else earliest + length,
        longest_now=longest, max_duration=max_duration,
        free=planner.free_over_time(begin, until))
