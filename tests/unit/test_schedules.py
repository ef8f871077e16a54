"""ResourceReservationSchedule planning (respool.controller.schedules): occurrences across
daylight-saving changes, Feb 29 and time zones, checked by property tests against a
brute-force reference that walks every minute; and what a pass creates, keeps and deletes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from respool.api import format_time, parse_time
from respool.controller.schedules import (
    SCHEDULE_LABEL,
    ScheduleError,
    occurrences,
    plan,
    reservation_name,
)

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata",
         "America/Santiago", "Pacific/Chatham"]


def _matches(field: str, value: int) -> bool:
    for part in field.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/")
            step = int(step_text)
        if part == "*":
            low, high = 0, 10**6
        elif "-" in part:
            low, high = (int(x) for x in part.split("-"))
        else:
            low = high = int(part)
        if low <= value <= high and (value - low) % step == 0:
            return True
    return False


def _wall_matches(fields: list[str], wall: datetime) -> bool:
    minute, hour, dom, month, dow = fields
    return (_matches(minute, wall.minute) and _matches(hour, wall.hour)
            and _matches(dom, wall.day) and _matches(month, wall.month)
            and _matches(dow, (wall.weekday() + 1) % 7))


def reference(schedule: str, zone_name: str, after: float, until: float) -> list[float]:
    """Every UTC minute, read on the zone's wall clock: a matching wall time occurs when the
    clock shows it (once: not again in a fall-back's repeated hour, unless the hour field is
    '*'); a matching wall time the clock skips (spring-forward) occurs at the first instant
    after the gap, unless the hour field is '*' (then it does not occur)."""
    fields = schedule.split()
    zone = ZoneInfo(zone_name)
    found: list[float] = []
    seen: set[datetime] = set()
    t = int(after) // 60 * 60 - 3 * 3600
    previous = datetime.fromtimestamp(t - 60, zone).replace(tzinfo=None)
    while t <= until:
        wall = datetime.fromtimestamp(t, zone).replace(tzinfo=None)
        hit = False
        # A gap: wall times the clock skipped happen at its first instant - except for a
        # schedule whose hour field is '*', which simply has no run in the skipped hour (its
        # next hour's run follows), as in Vixie cron.
        if wall - previous > timedelta(minutes=1) and fields[1] != "*":
            skipped = previous + timedelta(minutes=1)
            while skipped < wall:
                if _wall_matches(fields, skipped):
                    hit = True
                skipped += timedelta(minutes=1)
        if _wall_matches(fields, wall) and (wall not in seen or fields[1] == "*"):
            hit = True
        seen.add(wall)
        if hit and t >= after:
            found.append(float(t))
        previous = wall
        t += 60
    return found


# Near daylight-saving changes of the zones above (and Feb 29, 2028), plus anywhere.
ANCHORS = [datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 3, 29, tzinfo=UTC),
           datetime(2026, 10, 25, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC),
           datetime(2026, 4, 5, tzinfo=UTC), datetime(2026, 9, 6, tzinfo=UTC),
           datetime(2026, 9, 27, tzinfo=UTC), datetime(2028, 2, 28, tzinfo=UTC),
           datetime(2027, 6, 15, tzinfo=UTC)]

minutes = st.sampled_from(["0", "30", "*/15", "0,45", "59", "5-10"])
hours = st.sampled_from(["*", "2", "1-3", "0", "23", "*/6", "3"])
days = st.sampled_from(["*", "29", "1-7", "*", "*"])
months = st.sampled_from(["*", "*", "2", "3", "10-11"])
weekdays = st.sampled_from(["*", "*", "*", "0", "1-5"])


@settings(max_examples=80, deadline=None)
@given(minute=minutes, hour=hours, dom=days, month=months, dow=weekdays,
       zone=st.sampled_from(ZONES), anchor=st.sampled_from(ANCHORS),
       offset_hours=st.integers(-60, 24))
def test_occurrences_match_the_minute_by_minute_reference(
        minute: str, hour: str, dom: str, month: str, dow: str, zone: str,
        anchor: datetime, offset_hours: int) -> None:
    if dom != "*" and dow != "*":
        dow = "*"  # cron ORs day-of-month and day-of-week when both are set; not modelled here
    schedule = f"{minute} {hour} {dom} {month} {dow}"
    after = (anchor + timedelta(hours=offset_hours)).timestamp()
    until = after + 3 * 86400
    assert occurrences(schedule, zone, after, until, limit=10_000) == \
        reference(schedule, zone, after, until)


def test_a_night_skipped_by_spring_forward_starts_right_after_the_gap() -> None:
    after = datetime(2026, 3, 28, 12, tzinfo=UTC).timestamp()
    got = occurrences("30 2 * * *", "Europe/Berlin", after, after + 3 * 86400)
    local = [datetime.fromtimestamp(t, ZoneInfo("Europe/Berlin")).isoformat() for t in got]
    assert local == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00",
                     "2026-03-31T02:30:00+02:00"]


def test_a_night_repeated_by_fall_back_happens_once_but_hourly_runs_twice() -> None:
    after = datetime(2026, 10, 24, 12, tzinfo=UTC).timestamp()
    nightly = occurrences("30 2 * * *", "Europe/Berlin", after, after + 2 * 86400)
    assert [format_time(t) for t in nightly] == ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    hourly = occurrences("0 * * * *", "Europe/Berlin", datetime(2026, 10, 24, 23, tzinfo=UTC)
                         .timestamp(), datetime(2026, 10, 25, 2, tzinfo=UTC).timestamp())
    assert len(hourly) == 4  # 01:00, 02:00 (summer), 02:00 (winter), 03:00 local


def test_an_hourly_schedule_has_no_run_in_the_hour_spring_forward_skips() -> None:
    """Found by the property above (hypothesis): '30 * * * *' in Berlin on 2026-03-29. Like
    Vixie cron's wildcard-hour jobs, the skipped 02:30 is not moved to 03:00; 03:30 follows."""
    after = datetime(2026, 3, 29, 0, tzinfo=UTC).timestamp()  # 01:00 CET
    got = occurrences("30 * * * *", "Europe/Berlin", after, after + 3 * 3600)
    local = [datetime.fromtimestamp(t, ZoneInfo("Europe/Berlin")).isoformat() for t in got]
    assert local == ["2026-03-29T01:30:00+01:00", "2026-03-29T03:30:00+02:00",
                     "2026-03-29T04:30:00+02:00"]
    assert [float(t) for t in got] == reference("30 * * * *", "Europe/Berlin", after,
                                                after + 3 * 3600)


def test_feb_29_comes_every_four_years() -> None:
    after = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    got = occurrences("0 2 29 2 *", "UTC", after, after + 10 * 366 * 86400)
    assert [format_time(t)[:10] for t in got] == ["2028-02-29", "2032-02-29"]


def test_bad_schedules_and_zones_say_what_is_wrong() -> None:
    with pytest.raises(ScheduleError, match="not a cron schedule"):
        occurrences("every night", "UTC", 0, 86400)
    with pytest.raises(ScheduleError, match="not an IANA time zone"):
        occurrences("0 2 * * *", "Mars/Olympus", 0, 86400)


def schedule_object(**spec: Any) -> dict[str, Any]:
    full = {"schedule": "0 2 * * *", "timeZone": "UTC", "duration": "2h", "leadTime": "48h",
            "template": {"pool": "rack-a", "mode": "exclusive", "request": {"nodes": 2}}}
    full.update(spec)
    return {"metadata": {"name": "nightly", "namespace": "team-a", "uid": "u-1",
                         "generation": 1}, "spec": full}


NOW = parse_time("2026-12-03T12:00:00Z")


def child(start: str, phase: str | None = None, reason: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if reason:
        status["conditions"] = [{"type": "Stalled", "status": "True", "reason": reason}]
        status["message"] = "no room"
    return {"metadata": {"name": reservation_name("nightly", parse_time(start))},
            "spec": {"startTime": start}, "status": status}


def test_a_pass_creates_each_occurrence_within_lead_time_once_owned_and_labelled() -> None:
    result = plan(schedule_object(), [], NOW)
    assert [r["metadata"]["name"] for r in result.create] == [
        "nightly-202612040200", "nightly-202612050200"]
    body = result.create[0]
    assert body["spec"] == {"pool": "rack-a", "mode": "exclusive", "request": {"nodes": 2},
                            "startTime": "2026-12-04T02:00:00Z", "duration": "7200s"}
    assert body["metadata"]["labels"] == {SCHEDULE_LABEL: "nightly"}
    assert body["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert result.next_pass == parse_time("2026-12-06T02:00:00Z") - 48 * 3600
    existing = [child("2026-12-04T02:00:00Z", "Scheduled")]
    again = plan(schedule_object(), existing, NOW)
    assert [r["metadata"]["name"] for r in again.create] == ["nightly-202612050200"]
    assert again.status["upcoming"][0] == {"startTime": "2026-12-04T02:00:00Z",
                                           "reservation": "nightly-202612040200",
                                           "phase": "Scheduled"}


def test_suspended_creates_nothing_and_history_limits_delete_the_oldest() -> None:
    children = [child(f"2026-11-{d:02d}T02:00:00Z", "Expired") for d in range(20, 30)]
    children += [child("2026-11-30T02:00:00Z", "Failed", "Infeasible"),
                 child("2026-12-01T02:00:00Z", "Failed", "RetryExceeded")]
    result = plan(schedule_object(suspend=True, successfulHistoryLimit=2), children, NOW)
    assert result.create == []
    assert sorted(result.delete) == sorted(
        [f"nightly-202611{d:02d}0200" for d in range(20, 28)] + ["nightly-202611300200"])
    assert result.status["unbooked"] == [{
        "startTime": "2026-12-01T02:00:00Z", "reservation": "nightly-202612010200",
        "reason": "RetryExceeded", "message": "no room"}]
    assert result.status["lastScheduleTime"] == "2026-12-01T02:00:00Z"
    assert result.status["message"].startswith("suspended")


def test_an_unreadable_schedule_is_reported_in_status_not_raised() -> None:
    result = plan(schedule_object(timeZone="Nowhere/Else"), [], NOW)
    assert result.create == [] and result.delete == []
    assert result.status["conditions"][0]["reason"] == "InvalidSchedule"
    assert "Nowhere/Else" in result.status["message"]
