"""ResourceReservationSchedule: which reservations a schedule should have now (pure: no kopf,
no Kubernetes, no I/O; `schedule_keeper` does the calls).

Occurrences come from croniter, read in the schedule's IANA time zone. Across daylight-saving
changes they follow Vixie cron, as people expect of "every night at 02:30":
- a time the spring-forward skips happens at the first instant after the gap (03:00), unless
  the hour field is `*` (an hourly schedule has no run in the skipped hour; the next follows);
- a time the fall-back repeats happens once (the first time), unless the hour field is `*`
  (a schedule that runs every hour runs in both of the repeated hours).

Each occurrence becomes an ordinary ResourceReservation named `<schedule>-<yyyymmddhhmm>` (its
start in UTC): deterministic, so a restart, a second replica or a repeated pass creates it once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from respool.api import format_time, parse_duration, parse_time_or_none

#: The label every reservation a schedule created carries (its value: the schedule's name).
SCHEDULE_LABEL = "respool.io/schedule"
#: The largest DST shift in any zone (Lord Howe is 30 min, most are 1 h): where to start
#: looking so that a repeated hour's first instance is seen.
_LOOK_BACK = timedelta(hours=3)
#: At most this many occurrences are planned in one pass (a '* * * * *' schedule over 30 days
#: of lead time would be 43,200 reservations).
MAX_PLANNED = 100


class ScheduleError(ValueError):
    """The schedule cannot be read; the message is for a person."""


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"spec.timeZone {name!r} is not an IANA time zone") from exc


def occurrences(schedule: str, time_zone: str, after: float, until: float,
                limit: int = MAX_PLANNED) -> list[float]:
    """Start times (epoch seconds) the schedule names in [after, until], ascending."""
    zone = _zone(time_zone)
    fields = schedule.split()
    hourly = schedule.strip().lower() == "@hourly" or (len(fields) == 5 and fields[1] == "*")
    begin = datetime.fromtimestamp(after, UTC).astimezone(zone) - _LOOK_BACK
    try:
        iterator = croniter(schedule, begin)
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise ScheduleError(f"spec.schedule {schedule!r} is not a cron schedule: {exc}") from exc
    found: list[float] = []
    seen_wall: set[datetime] = set()
    while len(found) < limit:
        try:
            moment: datetime = iterator.get_next(datetime)
        except CroniterBadDateError:
            break  # e.g. '0 0 30 2 *': never
        t = moment.timestamp()
        if t > until:
            break
        wall = moment.replace(tzinfo=None)
        if wall in seen_wall and not hourly:
            continue  # the fall-back's repeated hour: once only
        seen_wall.add(wall)
        if t >= after and (not found or t > found[-1]):
            found.append(t)
    return found


def reservation_name(schedule_name: str, start: float) -> str:
    return f"{schedule_name}-{datetime.fromtimestamp(start, UTC):%Y%m%d%H%M}"


@dataclass
class Plan:
    """What a pass should do, and the status to write."""

    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    next_pass: float | None = None  # when the next occurrence enters the lead time


def plan(schedule: Mapping[str, Any], children: list[Mapping[str, Any]], now: float) -> Plan:
    """The reservations to create and delete for `schedule` (the object) given the ones it owns
    (`children`), and its new status."""
    metadata = schedule.get("metadata") or {}
    spec = schedule.get("spec") or {}
    name = str(metadata.get("name") or "")
    result = Plan()
    generation = metadata.get("generation")
    try:
        duration = parse_duration(str(spec.get("duration") or ""))
        lead = parse_duration(str(spec.get("leadTime") or "24h"))
        upcoming = occurrences(str(spec.get("schedule") or ""), str(spec.get("timeZone") or "UTC"),
                               now, now + lead)
        following = occurrences(str(spec.get("schedule") or ""),
                                str(spec.get("timeZone") or "UTC"), now + lead + 1,
                                now + lead + 366 * 86400, limit=1)
    except (ScheduleError, ValueError) as exc:
        result.status = _status(schedule, [], [], f"cannot plan: {exc}", ok=False,
                                generation=generation, now=now)
        return result
    by_name = {str((c.get("metadata") or {}).get("name") or ""): c for c in children}
    if not spec.get("suspend"):
        for start in upcoming:
            child = reservation_name(name, start)
            if child not in by_name:
                result.create.append(_reservation(schedule, child, start, duration))
    result.delete = _beyond_history(spec, children)
    listed = []
    for start in upcoming:
        child = reservation_name(name, start)
        existing = by_name.get(child)
        phase = ((existing or {}).get("status") or {}).get("phase")
        if existing is None and spec.get("suspend"):
            continue
        listed.append({"startTime": format_time(start), "reservation": child, "phase": phase})
    unbooked = _unbooked(children, result.delete, now)
    message = ("suspended: no new reservations" if spec.get("suspend") else
               f"{len(upcoming)} occurrence(s) within leadTime" if upcoming else
               "no occurrence within leadTime")
    result.status = _status(schedule, listed, unbooked, message, ok=True, generation=generation,
                            now=now)
    last = max((parse_time_or_none(((c.get("spec") or {}).get("startTime"))) or 0.0
                for c in children), default=0.0)
    if result.create:
        last = max(last, max(parse_time_or_none(r["spec"]["startTime"]) or 0.0
                             for r in result.create))
    if last:
        result.status["lastScheduleTime"] = format_time(last)
    if following:
        result.next_pass = following[0] - lead
    return result


def _reservation(schedule: Mapping[str, Any], name: str, start: float,
                 duration: float) -> dict[str, Any]:
    metadata = schedule.get("metadata") or {}
    spec = dict((schedule.get("spec") or {}).get("template") or {})
    spec["startTime"] = format_time(start)
    spec["duration"] = f"{int(duration)}s" if duration == int(duration) else f"{duration}s"
    spec.pop("endTime", None)
    return {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourceReservation",
        "metadata": {
            "name": name,
            "namespace": metadata.get("namespace"),
            "labels": {SCHEDULE_LABEL: metadata.get("name")},
            "ownerReferences": [{
                "apiVersion": "respool.io/v1alpha1",
                "kind": "ResourceReservationSchedule",
                "name": metadata.get("name"),
                "uid": metadata.get("uid"),
                "controller": True,
            }],
        },
        "spec": spec,
    }


def _start(child: Mapping[str, Any]) -> float:
    return parse_time_or_none((child.get("spec") or {}).get("startTime")) or 0.0


def _beyond_history(spec: Mapping[str, Any], children: list[Mapping[str, Any]]) -> list[str]:
    doomed: list[str] = []
    for phase, key, default in (("Expired", "successfulHistoryLimit", 3),
                                ("Failed", "failedHistoryLimit", 1)):
        limit = int(spec.get(key, default))
        ended = sorted((c for c in children if (c.get("status") or {}).get("phase") == phase),
                       key=_start, reverse=True)
        doomed += [str((c.get("metadata") or {}).get("name")) for c in ended[limit:]]
    return doomed


def _unbooked(children: list[Mapping[str, Any]], deleted: list[str],
              now: float) -> list[dict[str, Any]]:
    """Occurrences whose reservation failed, or still waits after its start passed."""
    out = []
    for child in sorted(children, key=_start, reverse=True):
        name = str((child.get("metadata") or {}).get("name"))
        status = child.get("status") or {}
        phase = status.get("phase")
        late = phase == "Pending" and _start(child) <= now
        if name in deleted or not (phase == "Failed" or late):
            continue
        reason = next((c.get("reason") for c in status.get("conditions") or []
                       if c.get("type") == ("Stalled" if phase == "Failed" else "Reconciling")
                       and c.get("status") == "True"), None) or phase
        out.append({"startTime": format_time(_start(child)), "reservation": name,
                    "reason": reason, "message": str(status.get("message") or "")[:1024]})
    return out[:20]


def _status(schedule: Mapping[str, Any], upcoming: list[dict[str, Any]],
            unbooked: list[dict[str, Any]], message: str, ok: bool,
            generation: Any, now: float) -> dict[str, Any]:
    old = schedule.get("status") or {}
    ready = {"type": "Ready", "status": "True" if ok else "False",
             "reason": "Scheduled" if ok else "InvalidSchedule", "message": message,
             "observedGeneration": generation}
    previous = next((c for c in old.get("conditions") or [] if c.get("type") == "Ready"), None)
    if previous is not None and previous.get("status") == ready["status"]:
        ready["lastTransitionTime"] = previous.get("lastTransitionTime")
    else:
        ready["lastTransitionTime"] = format_time(now)
    return {"upcoming": upcoming[:20], "unbooked": unbooked, "conditions": [ready],
            "observedGeneration": generation, "message": message,
            "lastScheduleTime": old.get("lastScheduleTime")}
