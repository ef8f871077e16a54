"""Reminders (issue 15) on the real API server with `respool run`: Events StartingSoon and
EndingSoon at the offsets of the pool's `spec.policy.reminders`, once per window."""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any

from respool.api import format_time, parse_time

PATIENCE = 60.0


def _pool(rk: Any, reminders: dict[str, str]) -> str:
    name = f"pool-{secrets.token_hex(3)}"
    rk.create_pool(name, {
        "resources": {"version": 1, "execution": {
            "R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}],
            "nodelist": ["node[0-1]"]}},
        "policy": {"reminders": reminders},
    })
    rk.wait_pool(name, lambda o: rk.condition(o, "Ready") is not None, what="a Ready condition")
    return name


def _reminders(rk: Any, namespace: str, name: str) -> list[Any]:
    return [e for e in rk.events(namespace, name) if e.reason in ("StartingSoon", "EndingSoon")]


def _wait_reminder(rk: Any, namespace: str, name: str, reason: str) -> Any:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        found = [e for e in _reminders(rk, namespace, name) if e.reason == reason]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {reason} Event for {namespace}/{name}: "
                         f"{[(e.reason, e.message) for e in rk.events(namespace, name)]}")


def test_starting_and_ending_soon_name_the_window_times_once_each(
        rk: Any, operator: Any, namespace: str) -> None:
    # StartingSoon is due at once (the window starts within the hour); EndingSoon is due 4s
    # before the end, so the operator's timer has to fire it while the reservation is Active.
    pool = _pool(rk, {"startingSoon": "1h", "endingSoon": "4s"})
    try:
        rk.create(namespace, "soon", {"pool": pool, "request": {"slots": 1},
                                      # Far enough ahead to be booked (Scheduled)
                                      # before it starts, even on a loaded machine.
                                      "startTime": format_time(time.time() + 12),
                                      "duration": "10s"})
        scheduled = rk.wait_for(namespace, "soon", lambda o: bool(
            (o.get("status") or {}).get("endTime")), what="a window in status")
        start = parse_time(scheduled["status"]["startTime"])
        end = parse_time(scheduled["status"]["endTime"])
        starting = _wait_reminder(rk, namespace, "soon", "StartingSoon")
        assert starting.type == "Normal"
        assert starting.involved_object.kind == "ResourceReservation"
        assert f"The reservation's window starts at {format_time(start)}" in starting.message
        ending = _wait_reminder(rk, namespace, "soon", "EndingSoon")
        assert f"The reservation's window ends at {format_time(end)}" in ending.message
        rk.wait_phase(namespace, "soon", "Expired")
        # Each once, although the reservation changed phase (Scheduled, Active, Expired).
        assert sorted(e.reason for e in _reminders(rk, namespace, "soon")) == [
            "EndingSoon", "StartingSoon"]
    finally:
        with contextlib.suppress(Exception):
            rk.delete(namespace, "soon")
        with contextlib.suppress(Exception):
            rk.delete_pool(pool)


def test_zero_offsets_turn_reminders_off(rk: Any, operator: Any, namespace: str) -> None:
    pool = _pool(rk, {"startingSoon": "0s", "endingSoon": "0s"})
    try:
        rk.create(namespace, "quiet", {"pool": pool, "request": {"slots": 1},
                                       "startTime": format_time(time.time() + 2),
                                       "duration": "3s"})
        rk.wait_phase(namespace, "quiet", "Expired")  # both window times have passed
        assert _reminders(rk, namespace, "quiet") == []
    finally:
        with contextlib.suppress(Exception):
            rk.delete(namespace, "quiet")
        with contextlib.suppress(Exception):
            rk.delete_pool(pool)
