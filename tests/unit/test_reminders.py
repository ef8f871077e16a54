"""Reminders (issue 15): due times from status and the pool's policy, posted once per window,
driven by a fake clock (no sleeping)."""

from __future__ import annotations

from typing import Any

from respool.api import format_time
from respool.controller.events import InvolvedObject
from respool.controller.reminders import ENDING_SOON, STARTING_SOON, Reminders, offsets_of

T0 = 1_900_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str]] = []

    def post(self, obj: InvolvedObject, type_: str, reason: str, message: str) -> None:
        self.posted.append((obj.name, reason, message))


def pool(name: str = "p", **reminders: str) -> dict[str, Any]:
    policy = {"reminders": reminders} if reminders else {}
    return {"metadata": {"name": name}, "spec": {"policy": policy}}


def rsv(phase: str, start: float, end: float, name: str = "r", uid: str = "u1",
        pool_name: str = "p") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid},
            "spec": {"pool": pool_name},
            "status": {"phase": phase, "startTime": format_time(start),
                       "endTime": format_time(end)}}


def setup(**reminders: str) -> tuple[Reminders, Sink, FakeClock]:
    clock, sink = FakeClock(), Sink()
    reminders_ = Reminders(sink, clock=clock)
    reminders_.on_pool(None, pool(**reminders))
    return reminders_, sink, clock


def test_default_offsets_are_fifteen_minutes_and_zero_disables() -> None:
    assert offsets_of(pool()).starting_soon == 900
    assert offsets_of(None).ending_soon == 900
    off = offsets_of(pool(startingSoon="0s", endingSoon="2m"))
    assert (off.starting_soon, off.ending_soon) == (0, 120)


def test_starting_and_ending_soon_each_posted_once_at_their_offsets() -> None:
    reminders, sink, clock = setup(startingSoon="10m", endingSoon="5m")
    start, end = T0 + 3600, T0 + 7200
    reminders.on_reservation(None, rsv("Scheduled", start, end))
    assert reminders.fire_due() == start - 600
    assert sink.posted == []
    clock.now = start - 600
    reminders.fire_due()
    assert sink.posted == [("r", STARTING_SOON,
                            f"The reservation's window starts at {format_time(start)} "
                            "(in 10m00s)")]
    reminders.on_reservation("MODIFIED", rsv("Active", start, end))
    clock.now = end - 300
    reminders.fire_due()
    reminders.fire_due()
    reminders.on_reservation("MODIFIED", rsv("Active", start, end))  # re-listed, unchanged
    reminders.fire_due()
    assert [p[1] for p in sink.posted] == [STARTING_SOON, ENDING_SOON]
    assert format_time(end) in sink.posted[1][2]


def test_a_window_booked_inside_the_offset_is_reminded_at_once() -> None:
    reminders, sink, _ = setup()
    reminders.on_reservation(None, rsv("Scheduled", T0 + 60, T0 + 120))
    reminders.fire_due()
    assert [p[1] for p in sink.posted] == [STARTING_SOON, ENDING_SOON]
    assert "(in 1m00s)" in sink.posted[0][2] and "(in 2m00s)" in sink.posted[1][2]


def test_a_past_window_time_is_not_reminded() -> None:
    reminders, sink, _ = setup()
    reminders.on_reservation(None, rsv("Active", T0 - 60, T0 + 600))
    reminders.fire_due()
    assert [p[1] for p in sink.posted] == [ENDING_SOON]


def test_extended_window_gets_a_new_ending_soon() -> None:
    reminders, sink, clock = setup(endingSoon="5m", startingSoon="0s")
    reminders.on_reservation(None, rsv("Active", T0 - 60, T0 + 100))
    reminders.fire_due()
    reminders.on_reservation("MODIFIED", rsv("Active", T0 - 60, T0 + 3600))
    assert reminders.fire_due() == T0 + 3600 - 300
    clock.now = T0 + 3600 - 300
    reminders.fire_due()
    assert [p[1] for p in sink.posted] == [ENDING_SOON, ENDING_SOON]
    assert format_time(T0 + 3600) in sink.posted[1][2]


def test_moved_or_deleted_or_expired_reservation_drops_its_pending_reminder() -> None:
    reminders, sink, clock = setup()
    reminders.on_reservation(None, rsv("Scheduled", T0 + 3600, T0 + 7200, uid="a", name="a"))
    reminders.on_reservation(None, rsv("Scheduled", T0 + 3600, T0 + 7200, uid="b", name="b"))
    reminders.on_reservation(None, rsv("Scheduled", T0 + 3600, T0 + 7200, uid="c", name="c"))
    reminders.on_reservation("MODIFIED", rsv("Scheduled", T0 + 9000, T0 + 9900, uid="a",
                                             name="a"))
    reminders.on_reservation("DELETED", rsv("Scheduled", T0 + 3600, T0 + 7200, uid="b",
                                            name="b"))
    reminders.on_reservation("MODIFIED", rsv("Failed", T0 + 3600, T0 + 7200, uid="c", name="c"))
    clock.now = T0 + 3600
    reminders.fire_due()
    assert sink.posted == []
    clock.now = T0 + 9000 - 900
    reminders.fire_due()
    assert [(p[0], p[1]) for p in sink.posted] == [("a", STARTING_SOON)]


def test_pool_policy_change_reschedules_and_zero_turns_off() -> None:
    reminders, sink, clock = setup()
    reminders.on_reservation(None, rsv("Scheduled", T0 + 3600, T0 + 7200))
    reminders.on_pool("MODIFIED", pool(startingSoon="1h", endingSoon="0s"))
    reminders.fire_due()
    clock.now = T0 + 7200 - 900
    reminders.fire_due()
    assert [p[1] for p in sink.posted] == [STARTING_SOON]
    assert "(in 1h00m)" in sink.posted[0][2]
