"""Building ResourceReservation manifests from ATS configs and native arguments."""

from __future__ import annotations

import pytest

from respool.api import ResourceReservation as ReservationModel
from respool.api import parse_time
from respool.client import InvalidConfigRequest, Reservation
from respool.client.objects import reservation_body, spec_from_config

NOW = 1_795_000_000.0


def test_default_config_asks_for_one_whole_node() -> None:
    assert spec_from_config(None) == {"request": {"nodes": 1, "exclusive": True}}
    assert spec_from_config({"config": {"a": 1}}) == {
        "request": {"nodes": 1, "exclusive": True},
        "config": {"a": 1},
    }


def test_shorthand_keys_in_both_spellings_become_the_request() -> None:
    spec = spec_from_config({"nodes": 2, "cores_per_slot": 4, "gpusPerSlot": 1, "exclusive": True})
    assert spec == {"request": {"nodes": 2, "coresPerSlot": 4, "gpusPerSlot": 1, "exclusive": True}}


def test_whole_fields_pass_through() -> None:
    config = {
        "resources": [
            {"type": "slot", "count": 1, "label": "task", "with": [{"type": "core", "count": 2}]}
        ],
        "constraints": {"properties": ["a100"]},
        "config": {"firmware": "v2"},
    }
    assert spec_from_config(config) == config


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"node": 2}, "unknown resource_config keys \\['node'\\]"),
        ({"nodes": 2, "request": {"nodes": 1}}, "mixes"),
        ("nodes=2", "must be a mapping"),
    ],
)
def test_bad_configs_are_rejected_clearly(config: object, message: str) -> None:
    with pytest.raises(InvalidConfigRequest, match=message):
        spec_from_config(config)  # type: ignore[arg-type]


def test_body_for_now_sends_a_duration_and_validates_against_the_api_model() -> None:
    body = reservation_body(
        "rack-a", duration=5400, start=NOW + 0.5, now=NOW, claim_policy="Manual", max_wait=90
    )
    assert body["metadata"] == {"generateName": "rack-a-"}
    assert body["spec"] == {
        "pool": "rack-a",
        "mode": "exclusive",
        "request": {"nodes": 1, "exclusive": True},
        "duration": "1h30m",
        "nextAvailable": True,
        "maxWait": "1m30s",
        "claimPolicy": "Manual",
    }
    ReservationModel.model_validate(body)


def test_body_for_a_future_window_sends_start_and_end() -> None:
    body = reservation_body(
        "rack-a",
        duration=600,
        start=NOW + 3600,
        now=NOW,
        mode="shared",
        next_available=False,
        name="x",
    )
    spec = body["spec"]
    assert body["metadata"] == {"name": "x"}
    assert parse_time(spec["startTime"]) == NOW + 3600
    assert parse_time(spec["endTime"]) == NOW + 4200
    assert spec["mode"] == "shared" and spec["nextAvailable"] is False and "duration" not in spec
    ReservationModel.model_validate(body)


@pytest.mark.parametrize(
    "kwargs",
    [{"duration": 0}, {"duration": 60, "mode": "loose"}, {"duration": 60, "claim_policy": "Later"}],
)
def test_body_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidConfigRequest):
        reservation_body("rack-a", **kwargs)  # type: ignore[arg-type]


def test_reservation_view_reads_status() -> None:
    obj = {
        "metadata": {"name": "r1", "namespace": "team-a"},
        "spec": {"pool": "rack-a", "mode": "shared"},
        "status": {
            "phase": "Active",
            "reservationId": "rack-a-7",
            "startTime": "2026-11-18T11:06:40Z",
            "endTime": "2026-11-18T12:06:40Z",
            "allocated": {"ranks": "0-1", "nodelist": "node[0-1]"},
            "retryCount": 2,
            "conditions": [{"type": "Reconciling", "status": "False", "reason": "Granted"}],
        },
    }
    view = Reservation.from_object(obj)
    assert (view.namespace, view.name, view.pool, view.mode, view.phase) == (
        "team-a",
        "r1",
        "rack-a",
        "shared",
        "Active",
    )
    assert view.reservation_id == "rack-a-7" and view.pre_reservation_id is None
    assert view.start == NOW and view.end == NOW + 3600
    assert view.nodes == ["node0", "node1"]
    assert view.retry_count == 2 and view.active
    assert view.reason is None, "a False condition carries no reason for waiting"
    assert view.describe_state() == "Active"
