"""Time on the wire: RFC 3339 timestamps and Go-style durations, as Kubernetes speaks them.

The engine and the Python client count in epoch-second floats (as Flux and ATS do); the API
objects carry strings. These four helpers are the only conversion points, so that every layer
agrees on rounding:

- ``format_time`` keeps microseconds (and writes no fraction for whole seconds), so
  ``parse_time(format_time(t))`` is ``t`` rounded to the microsecond and
  ``format_time(parse_time(s)) == s`` for every string ``format_time`` wrote. A controller that
  persists a window and restores it after a restart therefore gets the same floats back if it
  rounds through ``parse_time(format_time(t))`` before using a time.
- ``format_duration`` writes the shortest Go duration (``1h30m``, ``90ms``, ``0s``);
  ``parse_duration`` accepts what Go's ``time.ParseDuration`` accepts for non-negative values
  (units ``h m s ms us ns``, fractions, several terms, and a bare ``0``).
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta

# Kept in step with the CRD patterns in respool.api.patterns (which use the same text).
_RFC3339 = re.compile(
    r"^(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<frac>[0-9]{1,9}))?(?P<zone>[Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_DURATION_TERM = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|ms|s|m|h)")
_UNIT_SECONDS = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "ns": 1e-9,
}
_MICROS_PER_SECOND = 1_000_000
MAX_DURATION_SECONDS = (2**63 - 1) / 1e9
"""Go's time.Duration limit; the API server's CEL duration() refuses longer ones too."""


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as ``90s``, ``1h30m`` or ``1.5h``.

    Raises ValueError (with the offending text) for anything else, including negative values.
    """
    if not isinstance(text, str):
        raise ValueError(f"duration must be a string like '1h30m', got {type(text).__name__}")
    return _parse_duration(text)


@functools.lru_cache(maxsize=1024)
def _parse_duration(text: str) -> float:
    s = text.strip()
    if s == "0":
        return 0.0
    if not s:
        raise ValueError("duration is empty; write it like '90s', '30m' or '1h30m'")
    if s.startswith(("-", "+")):
        raise ValueError(f"duration {text!r} must not be signed; durations here are >= 0")
    total = 0.0
    position = 0
    for match in _DURATION_TERM.finditer(s):
        if match.start() != position:
            break
        number, unit = match.groups()
        total += float(number) * _UNIT_SECONDS[unit]
        position = match.end()
    if position != len(s) or position == 0:
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit (h, m, s, ms, us, ns), "
            "several terms allowed, e.g. '90s', '30m', '1h30m', '1.5h'"
        )
    if total > MAX_DURATION_SECONDS:
        raise ValueError(
            f"duration {text!r} is longer than the longest Go duration (about 292 years)"
        )
    return total


def format_duration(seconds: float) -> str:
    """The shortest Go-style duration for ``seconds`` (>= 0): ``1h30m``, ``45s``, ``250ms``."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        raise ValueError(f"cannot format duration {seconds!r}: it must be a finite number >= 0")
    nanos = round(seconds * 1e9)
    if nanos == 0:
        return "0s"
    hours, nanos = divmod(nanos, 3600 * 10**9)
    minutes, nanos = divmod(nanos, 60 * 10**9)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if nanos:
        if not parts and nanos < 10**9:
            # Below one second, Go writes the largest sub-second unit that keeps an integer
            # or short fraction; we do the same for readability ("250ms", "1.5us").
            for unit, scale in (("ms", 10**6), ("us", 10**3), ("ns", 1)):
                if nanos >= scale:
                    parts.append(_trim(nanos, scale) + unit)
                    break
        else:
            parts.append(_trim(nanos, 10**9) + "s")
    return "".join(parts)


def _trim(value: int, scale: int) -> str:
    whole, fraction = divmod(value, scale)
    if not fraction:
        return str(whole)
    digits = len(str(scale)) - 1
    return f"{whole}.{fraction:0{digits}d}".rstrip("0")


def parse_time(text: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp (``2026-12-01T08:00:00Z``, offsets allowed).

    A time zone is required (RFC 3339 has no local times). Fractions are kept to the
    microsecond. Raises ValueError with the offending text.
    """
    if not isinstance(text, str):
        raise ValueError(
            f"time must be an RFC 3339 string like '2026-12-01T08:00:00Z', got {type(text).__name__}"
        )
    return _parse_time(text)


# The controller reads the same few timestamps of each status again and again (every decision
# and reminder pass); both conversions are pure, so recent answers are kept. (Exceptions are
# not cached: a bad text raises every time.)
@functools.lru_cache(maxsize=4096)
def _parse_time(text: str) -> float:
    match = _RFC3339.match(text.strip())
    if match is None:
        raise ValueError(
            f"invalid time {text!r}: use RFC 3339 with a time zone, e.g. '2026-12-01T08:00:00Z'"
        )
    zone = match["zone"].upper()
    try:
        moment = datetime.fromisoformat(f"{match['date']}T{match['time']}")
    except ValueError as exc:
        raise ValueError(f"invalid time {text!r}: {exc}") from None
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError(f"invalid time {text!r}: time zone offset {zone} is out of range")
        try:
            moment -= sign * timedelta(hours=hours, minutes=minutes)
        except OverflowError:
            raise ValueError(f"invalid time {text!r}: outside the years 1 to 9999") from None
    moment = moment.replace(tzinfo=UTC)
    whole = int(moment.timestamp())
    micros = 0
    if match["frac"]:
        micros = round(int(match["frac"].ljust(9, "0")) / 1000)
    return (whole * _MICROS_PER_SECOND + micros) / _MICROS_PER_SECOND


def parse_time_or_none(value: object) -> float | None:
    """Epoch seconds of a status timestamp, or None when it is absent or not a valid time.

    For reading status written by others (or an older operator): a missing or malformed time
    is "unknown", never an exception in the middle of a decision or a table.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def format_time(epoch: float) -> str:
    """RFC 3339 in UTC with a ``Z``; microseconds only when the time has a fraction."""
    return _format_time(epoch)


@functools.lru_cache(maxsize=4096)
def _format_time(epoch: float) -> str:
    if epoch != epoch or epoch in (float("inf"), float("-inf")):
        raise ValueError(f"cannot format time {epoch!r}: it must be a finite number")
    micros = round(epoch * _MICROS_PER_SECOND)
    whole, fraction = divmod(micros, _MICROS_PER_SECOND)
    try:
        moment = datetime.fromtimestamp(whole, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"cannot format time {epoch!r}: {exc}") from None
    # Not strftime("%Y"): it writes year 1 as "1", and RFC 3339 wants four digits.
    stamp = (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
             f"{moment.minute:02d}:{moment.second:02d}")
    if fraction:
        stamp += "." + f"{fraction:06d}".rstrip("0")
    return stamp + "Z"


def now_time() -> str:
    """The current time as ``format_time`` writes it."""
    return format_time(datetime.now(tz=UTC).timestamp())
