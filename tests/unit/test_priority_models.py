"""The issue-14 fields of the API models: what pydantic (the operator's own check, and the
source of the CRD schemas) accepts and refuses."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from respool.api import (
    MaintenanceMode,
    MaintenanceWindow,
    ResourcePoolSpec,
    ResourceReservationSpec,
    parse_time,
)

R: dict[str, Any] = {
    "version": 1,
    "execution": {"R_lite": [{"rank": "0-3", "children": {"core": "0-3"}}],
                  "nodelist": ["n[0-3]"]},
}


def test_reservation_priority_fields_default_and_parse() -> None:
    spec = ResourceReservationSpec.model_validate({"pool": "p"})
    assert spec.priority_class_name is None and spec.preemptible is False
    spec = ResourceReservationSpec.model_validate(
        {"pool": "p", "priorityClassName": "release.blocking", "preemptible": True})
    assert spec.to_wire()["priorityClassName"] == "release.blocking"
    with pytest.raises(pydantic.ValidationError, match=r"priority_class_name|priorityClassName"):
        ResourceReservationSpec.model_validate({"pool": "p", "priorityClassName": "No_Caps"})


def test_maintenance_window_end_or_duration() -> None:
    window = MaintenanceWindow.model_validate(
        {"name": "firmware", "start": "2026-12-05T02:00:00Z", "duration": "4h"})
    assert window.mode is MaintenanceMode.DRAIN
    start = parse_time("2026-12-05T02:00:00Z")
    assert window.window() == (start, start + 4 * 3600)
    window = MaintenanceWindow.model_validate(
        {"name": "fw", "start": "2026-12-05T02:00:00Z", "end": "2026-12-05T06:00:00Z",
         "ranks": "0-1", "mode": "Evict", "reason": "BIOS"})
    assert window.window() == (start, start + 4 * 3600)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"ranks": "0", "hostlist": "n0", "duration": "1h"}, "not both"),
        ({"duration": "1h", "end": "2026-12-05T06:00:00Z"}, "exactly one"),
        ({}, "exactly one"),
        ({"end": "2026-12-05T01:00:00Z"}, "end must be after start"),
        ({"duration": "0s"}, "longer than zero"),
        ({"duration": "1h", "ranks": "3-1"}, "3-1"),
        ({"duration": "1h", "mode": "Reboot"}, "Drain"),
    ],
)
def test_maintenance_window_refusals(body: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        MaintenanceWindow.model_validate({"name": "fw", "start": "2026-12-05T02:00:00Z", **body})


def test_pool_policy_priority_fields() -> None:
    spec = ResourcePoolSpec.model_validate({
        "resources": R,
        "policy": {"maxPriority": [{"value": 10},
                                   {"namespaceSelector": {"matchLabels": {"t": "r"}},
                                    "value": 1000}],
                   "preemptionGracePeriod": "1m"},
        "maintenance": [{"name": "a", "start": "2026-12-05T02:00:00Z", "duration": "1h"}],
    })
    assert spec.policy.max_priority is not None and spec.policy.max_priority[1].value == 1000
    with pytest.raises(pydantic.ValidationError, match="duration"):
        ResourcePoolSpec.model_validate(
            {"resources": R, "policy": {"preemptionGracePeriod": "soon"}})


def test_maintenance_names_are_unique() -> None:
    window = {"name": "a", "start": "2026-12-05T02:00:00Z", "duration": "1h"}
    with pytest.raises(pydantic.ValidationError, match="named twice"):
        ResourcePoolSpec.model_validate({"resources": R, "maintenance": [window, window]})
