"""The ATS state machine (`respool.client.ResourceReservation`) over a scripted ATS server.

These tests pin the handle's own logic — state transitions, retry counting, max_wait, the
fixed ATS defects — with an in-process server object. Everything that reaches Kubernetes is
covered end to end in tests/e2e/test_client_*.py.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest

from respool.client import (
    InvalidConfigRequest,
    MaxWaitExceeded,
    ResourceReservation,
    ResourceRetryExceeded,
    ResourceUnavailable,
)


class ScriptedServer:
    """An ATS server whose answers the test decides; it records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.unavailable = False
        self.start_delay = 0.0
        self.claim_deadline = 300.0
        self.late_claims = 0
        self.ignores_max_wait = True
        self.held: set[str] = set()
        self._next = 0

    def _new_id(self, prefix: str) -> str:
        self._next += 1
        return f"{prefix}-{self._next}"

    def get_future_reservation(
        self,
        name: str,
        start: float,
        duration: float,
        config: Mapping[str, Any] | None,
        next_available: bool,
        *,
        mode: str = "exclusive",
        max_wait: float | None = None,
    ) -> tuple[str, float, float]:
        self.calls.append(
            ("request", (name, start, duration, config, next_available), {"mode": mode, "max_wait": max_wait})
        )
        if self.unavailable or (self.start_delay and not next_available):
            raise ResourceUnavailable("busy", reason="WaitingForCapacity")
        if not self.ignores_max_wait and max_wait is not None and self.start_delay > max_wait:
            raise MaxWaitExceeded("too late", reason="MaxWaitExceeded")
        granted = start + self.start_delay
        pre_id = self._new_id("pre")
        self.held.add(pre_id)
        return pre_id, granted, granted + self.claim_deadline

    def claim_reservation(self, pre_id: str) -> dict[str, Any]:
        self.calls.append(("claim", (pre_id,), {}))
        if pre_id not in self.held:
            raise ResourceUnavailable("no such hold")
        self.held.discard(pre_id)
        if self.late_claims:
            self.late_claims -= 1
            new_id = self._new_id("pre")
            self.held.add(new_id)
            now = time.time()
            return {"pre_reservation_id": new_id, "new_avail": now + 60, "new_expire": now + 360}
        res_id = self._new_id("res")
        self.held.add(res_id)
        return {"reservation_ID": res_id, "expire_time": 4_000_000_000.0, "resource_config": {"nodes": "n[0-1]"}}

    def release_resource(self, res_id: str) -> bool:
        self.calls.append(("release", (res_id,), {}))
        if res_id in self.held:
            self.held.discard(res_id)
            return True
        return False

    def get_resource_availablity(
        self,
        name: str,
        start: float | None = None,
        end: float | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        mode: str = "exclusive",
    ) -> dict[str, Any]:
        self.calls.append(("avail", (name, start, end), {"config": config, "mode": mode}))
        assert start is not None and end is not None
        return {"available": not self.unavailable, "avail_start": start, "avail_end": end}

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]


@pytest.fixture
def server() -> ScriptedServer:
    return ScriptedServer()


def test_constructor_stores_arguments_and_makes_no_call(server: ScriptedServer) -> None:
    rr = ResourceReservation("rack-a", server, mode="shared", max_retry=2, max_wait=30.0)
    assert (rr.name, rr.reservation_mode, rr.max_retry, rr.max_wait_time) == ("rack-a", "shared", 2, 30.0)
    assert rr.retry_count == 0
    assert rr.first_request_time is None
    assert rr.pre_reservation_id is None and rr.reservation_id is None and rr.pre_res_expire is None
    assert rr.resource_config is None
    assert server.calls == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "exclusiv"},
        {"max_retry": -1},
        {"max_retry": None},
        {"max_retry": True},
        {"max_wait": -5},
        {"max_wait": float("nan")},
        {"max_wait": "10m"},
    ],
)
def test_constructor_rejects_bad_arguments(server: ScriptedServer, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidConfigRequest):
        ResourceReservation("rack-a", server, **kwargs)


def test_empty_name_is_rejected(server: ScriptedServer) -> None:
    with pytest.raises(InvalidConfigRequest, match="non-empty"):
        ResourceReservation("", server)


def test_request_sends_mode_duration_and_records_first_request_time(server: ScriptedServer) -> None:
    rr = ResourceReservation("rack-a", server, mode="shared")
    rr.resource_config = {"nodes": 2}
    before = time.time()
    assert rr.request_reservation(before + 10, before + 70, next_available=False) is True
    name, (pool, start, duration, config, next_available), kwargs = server.calls[0]
    assert (name, pool, start, duration, config, next_available) == (
        "request", "rack-a", before + 10, 60.0, {"nodes": 2}, False
    )
    assert kwargs == {"mode": "shared", "max_wait": None}
    assert rr.first_request_time is not None and before <= rr.first_request_time <= time.time()
    assert rr.pre_reservation_id == "pre-1"
    assert rr.start_time == before + 10 and rr.end_time == before + 70
    assert rr.pre_res_expire == before + 10 + server.claim_deadline
    first = rr.first_request_time
    rr.request_reservation()
    assert rr.first_request_time == first, "first_request_time is set once"


def test_default_window_is_now_plus_one_hour(server: ScriptedServer) -> None:
    rr = ResourceReservation("rack-a", server)
    before = time.time()
    assert rr.request_reservation()
    assert before <= rr.start_time <= time.time()
    assert rr.end_time - rr.start_time == pytest.approx(3600.0)


def test_end_moves_with_a_start_the_server_moved_later(server: ScriptedServer) -> None:
    server.start_delay = 900.0
    rr = ResourceReservation("rack-a", server)
    t0 = time.time() + 5
    assert rr.request_reservation(t0, t0 + 600)
    assert rr.start_time == pytest.approx(t0 + 900)
    assert rr.end_time == pytest.approx(t0 + 1500)


def test_busy_without_next_available_counts_a_retry_and_keeps_idle(server: ScriptedServer) -> None:
    server.start_delay = 900.0
    rr = ResourceReservation("rack-a", server, max_retry=1)
    assert rr.request_reservation(next_available=False) is False
    assert rr.retry_count == 1
    assert rr.pre_reservation_id is None and rr.reservation_id is None
    with pytest.raises(ResourceRetryExceeded):
        rr.request_reservation(next_available=False)
    assert rr.retry_count == 2


def test_retry_limit_zero_raises_on_first_failure(server: ScriptedServer) -> None:
    server.unavailable = True
    rr = ResourceReservation("rack-a", server, max_retry=0)
    with pytest.raises(ResourceRetryExceeded, match="max_retry=0"):
        rr.request_reservation()


def test_add_retry_count_raises_after_max_retry_and_keeps_raising(server: ScriptedServer) -> None:
    rr = ResourceReservation("rack-a", server, max_retry=2)
    rr.add_retry_count()
    rr.add_retry_count()
    for _ in range(2):
        with pytest.raises(ResourceRetryExceeded):
            rr.add_retry_count()
    assert rr.retry_count == 4


def test_re_request_releases_the_previous_hold_first(server: ScriptedServer) -> None:
    rr = ResourceReservation("rack-a", server)
    rr.request_reservation()
    rr.request_reservation()
    assert server.names() == ["request", "release", "request"]
    assert server.calls[1][1] == ("pre-1",)
    assert server.held == {"pre-2"}


def test_claim_success_does_not_raise_and_takes_server_config(server: ScriptedServer) -> None:
    rr = ResourceReservation("rack-a", server)
    rr.resource_config = {"nodes": 2}
    rr.request_reservation()
    assert rr.claim_reservation() is True
    assert rr.reservation_id == "res-2", "reservation_ID (capital) is accepted too"
    assert rr.pre_reservation_id is None and rr.pre_res_expire is None
    assert rr.end_time == 4_000_000_000.0
    assert rr.resource_config == {"nodes": "n[0-1]"}
    assert rr.claim_reservation() is True, "claiming twice is harmless"
    with pytest.raises(InvalidConfigRequest):
        rr.resource_config = {"nodes": 3}
    assert rr.release_reservation() is True
    assert rr.resource_config == {"nodes": 2}, "idle again: the requested config"
    rr.resource_config = {"nodes": 3}


def test_claim_without_a_hold_raises(server: ScriptedServer) -> None:
    rr = ResourceReservation("rack-a", server)
    with pytest.raises(ResourceUnavailable, match="nothing to claim"):
        rr.claim_reservation()
    assert server.calls == []


def test_late_claim_stores_new_hold_counts_retry_and_keeps_window_length(server: ScriptedServer) -> None:
    server.late_claims = 1
    rr = ResourceReservation("rack-a", server)
    rr.request_reservation()
    length = rr.end_time - rr.start_time
    assert rr.claim_reservation() is False
    assert rr.retry_count == 1
    assert rr.pre_reservation_id == "pre-2"
    assert rr.end_time - rr.start_time == pytest.approx(length)
    assert rr.claim_reservation() is True


def test_late_claim_past_retry_limit_releases_the_offered_hold(server: ScriptedServer) -> None:
    server.late_claims = 1
    rr = ResourceReservation("rack-a", server, max_retry=0)
    rr.request_reservation()
    with pytest.raises(ResourceRetryExceeded):
        rr.claim_reservation()
    assert server.held == set(), "the new hold is not leaked"
    assert rr.pre_reservation_id is None


def test_claim_of_a_vanished_hold_counts_and_raises(server: ScriptedServer) -> None:
    rr = ResourceReservation("rack-a", server)
    rr.request_reservation()
    server.held.clear()
    with pytest.raises(ResourceUnavailable):
        rr.claim_reservation()
    assert rr.retry_count == 1 and rr.pre_reservation_id is None


def test_release_with_nothing_held_makes_no_call(server: ScriptedServer) -> None:
    rr = ResourceReservation("rack-a", server)
    assert rr.release_reservation() is False
    assert server.calls == []


def test_release_clears_ids_and_claim_deadline(server: ScriptedServer) -> None:
    rr = ResourceReservation("rack-a", server)
    rr.request_reservation()
    assert rr.release_reservation() is True
    assert rr.pre_reservation_id is None and rr.pre_res_expire is None
    assert server.held == set()


def test_max_wait_rejects_a_window_past_the_deadline_and_releases_it(server: ScriptedServer) -> None:
    server.start_delay = 3600.0
    rr = ResourceReservation("rack-a", server, max_wait=60)
    with pytest.raises(MaxWaitExceeded):
        rr.request_reservation()
    assert server.held == set()
    assert rr.pre_reservation_id is None
    kwargs = server.calls[0][2]
    assert kwargs["max_wait"] == pytest.approx(60, abs=1), "the remaining budget is sent"


def test_max_wait_from_the_server_propagates_without_counting(server: ScriptedServer) -> None:
    server.start_delay = 3600.0
    server.ignores_max_wait = False
    rr = ResourceReservation("rack-a", server, max_wait=60)
    with pytest.raises(MaxWaitExceeded):
        rr.request_reservation()
    assert rr.retry_count == 0


def test_max_wait_budget_shrinks_and_expires(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    rr = ResourceReservation("rack-a", server, max_wait=100)
    assert rr.request_reservation()
    clock[0] += 40
    assert rr.request_reservation()
    assert server.calls[-1][2]["max_wait"] == pytest.approx(60)
    clock[0] += 61
    with pytest.raises(MaxWaitExceeded, match="has passed"):
        rr.request_reservation()


def test_window_within_max_wait_is_accepted(server: ScriptedServer) -> None:
    server.start_delay = 30.0
    rr = ResourceReservation("rack-a", server, max_wait=60)
    assert rr.request_reservation()


def test_bad_window_is_rejected_before_anything_is_released(server: ScriptedServer) -> None:
    rr = ResourceReservation("rack-a", server)
    rr.request_reservation()
    with pytest.raises(InvalidConfigRequest):
        rr.request_reservation(100.0, 50.0)
    with pytest.raises(InvalidConfigRequest):
        rr.request_reservation("soon")  # type: ignore[arg-type]
    assert rr.pre_reservation_id == "pre-1"


def test_lazy_start_and_end(server: ScriptedServer) -> None:
    rr = ResourceReservation("rack-a", server)
    before = time.time()
    start = rr.start_time
    assert before <= start <= time.time()
    assert rr.start_time == start, "fixed at first read"
    assert rr.end_time == start + 3600


def test_get_next_avail_time_passes_window_config_and_mode(server: ScriptedServer) -> None:
    rr = ResourceReservation("rack-a", server, mode="shared")
    rr.resource_config = {"nodes": 4}
    reply = rr.get_next_avail_time()
    assert reply == {"available": True, "avail_start": rr.start_time, "avail_end": rr.end_time}
    assert server.calls == [
        ("avail", ("rack-a", rr.start_time, rr.end_time), {"config": {"nodes": 4}, "mode": "shared"})
    ]


def test_context_manager_reserves_claims_returns_handle_and_releases(server: ScriptedServer) -> None:
    with ResourceReservation("rack-a", server) as rr:
        assert isinstance(rr, ResourceReservation)
        assert rr.reservation_id is not None
        held = rr.reservation_id
    assert rr.reservation_id is None
    assert server.calls[-1] == ("release", (held,), {})


def test_context_manager_failure_raises_and_leaves_nothing(server: ScriptedServer) -> None:
    server.late_claims = 1
    rr = ResourceReservation("rack-a", server)
    with pytest.raises(ResourceUnavailable, match="claimed"), rr:
        pass
    assert server.held == set()
    server.unavailable = True
    with pytest.raises(ResourceUnavailable, match="reserved"), rr:
        pass


def test_equality_and_hash_by_name(server: ScriptedServer) -> None:
    a = ResourceReservation("rack-a", server)
    b = ResourceReservation("rack-a", server, mode="shared")
    assert a == b and a == "rack-a" and a != "rack-b"
    assert a != 5
    assert len({a, b}) == 1


def test_mode_setter_validates(server: ScriptedServer) -> None:
    rr = ResourceReservation("rack-a", server)
    rr.reservation_mode = "shared"
    rr.request_reservation()
    assert server.calls[0][2]["mode"] == "shared"
    with pytest.raises(InvalidConfigRequest):
        rr.reservation_mode = "loose"


def test_dropping_a_held_handle_releases(server: ScriptedServer) -> None:
    rr = ResourceReservation("rack-a", server)
    rr.request_reservation()
    del rr
    assert server.held == set()
