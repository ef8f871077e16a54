"""Per-namespace limits (issue 15, `spec.policy.limits`) on the real API server with
`respool run`: over a limit a reservation waits Pending (QuotaExceeded, OutsideAllowedHours)
and proceeds when it fits; alone over one it fails; the pool's status.usage, the metrics and
`respool describe pool` say what each namespace holds."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from respool.api import format_time, parse_time

R = {"version": 1, "execution": {"R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}],
                                 "nodelist": ["node[0-1]"]}}
ONE_NODE = {"nodes": 1, "exclusive": True}


@pytest.fixture
def limited_pool(rk: Any, operator: Any) -> Iterator[Any]:
    """Makes a pool with the given limits; deletes it (and what it names) afterwards."""
    made: list[str] = []

    def make(limits: list[dict[str, Any]]) -> str:
        name = f"limits-{secrets.token_hex(3)}"
        rk.create_pool(name, {"resources": R, "policy": {"limits": limits}})
        made.append(name)
        rk.wait_pool(name, lambda o: rk.condition(o, "Ready") is not None,
                     what="a Ready condition")
        return name

    yield make
    for name in made:
        with contextlib.suppress(Exception):
            rk.delete_pool(name)


def _reason(obj: dict[str, Any], type_: str) -> str | None:
    condition = next((c for c in (obj.get("status") or {}).get("conditions") or []
                      if c.get("type") == type_ and c.get("status") == "True"), None)
    return None if condition is None else condition.get("reason")


def _waiting_with(reason: str) -> Any:
    return lambda o: ((o.get("status") or {}).get("phase") == "Pending"
                      and _reason(o, "Reconciling") == reason)


def _wait_event(rk: Any, namespace: str, name: str, reason: str, type_: str) -> None:
    """Events are posted beside the status write: wait for it rather than read it at once."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(e.reason == reason and e.type == type_ for e in rk.events(namespace, name)):
            return
        time.sleep(0.2)
    raise AssertionError(f"no {type_} {reason} Event for {namespace}/{name}: "
                         f"{[(e.type, e.reason) for e in rk.events(namespace, name)]}")


def _cleanup(rk: Any, namespace: str, *names: str) -> None:
    for name in names:
        with contextlib.suppress(Exception):
            rk.delete(namespace, name)


def test_quota_exceeded_waits_and_proceeds_when_the_namespace_releases(
        rk: Any, operator: Any, limited_pool: Any, namespace: str,
        kube_env: dict[str, str]) -> None:
    pool = limited_pool([{"maxNodes": 1, "maxNodeHoursPerWeek": 100}])
    try:
        rk.create(namespace, "first", {"pool": pool, "request": ONE_NODE, "duration": "1h"})
        rk.wait_phase(namespace, "first", "Active")
        rk.create(namespace, "second", {"pool": pool, "request": ONE_NODE, "duration": "1h"})
        waiting = rk.wait_for(namespace, "second", _waiting_with("QuotaExceeded"),
                              what="Pending with QuotaExceeded")
        assert "policy.limits[0].maxNodes (1)" in waiting["status"]["message"]
        assert waiting["status"]["retryCount"] == 0
        _wait_event(rk, namespace, "second", "QuotaExceeded", "Normal")
        # What the namespace holds is in the pool's status, and `respool describe pool`.
        status = rk.wait_pool(pool, lambda o: any(
            u.get("namespace") == namespace and u.get("nodes") == 1
            for u in (o.get("status") or {}).get("usage") or []),
            what="status.usage of the namespace")["status"]
        (entry,) = [u for u in status["usage"] if u["namespace"] == namespace]
        assert entry["cores"] == 4 and entry["gpus"] == 0
        assert entry["nodeHoursBooked"] > 0.9
        described = subprocess.run(
            [sys.executable, "-m", "respool.cli.main", "describe", "pool", pool, "--utc"],
            env=kube_env, capture_output=True, text=True, check=True).stdout
        assert "[0] every namespace; maxNodes 1; maxNodeHoursPerWeek 100" in described
        row = next(line for line in described.splitlines() if line.startswith(namespace))
        assert row.split()[1:4] == ["1", "4", "0"]
        # ... and in the metrics (set with the pool's status).
        gauge = (f'respool_namespace_usage{{namespace="{namespace}",pool="{pool}",'
                 'resource="nodes"} 1.0')
        assert gauge in operator.metrics()
        # The first one's end is an hour away: only the release can wake the waiter now.
        rk.delete(namespace, "first")
        granted = rk.wait_phase(namespace, "second", "Active")
        assert granted["status"]["retryCount"] == 0
    finally:
        _cleanup(rk, namespace, "first", "second")


def test_alone_over_a_limit_fails_quota_exceeded(
        rk: Any, limited_pool: Any, namespace: str) -> None:
    pool = limited_pool([{"maxNodes": 1, "maxDuration": "2h"}])
    try:
        rk.create(namespace, "wide", {"pool": pool, "request": {"nodes": 2}, "duration": "1h"})
        rk.create(namespace, "long", {"pool": pool, "request": ONE_NODE, "duration": "3h"})
        for name, what in (("wide", "maxNodes (1)"), ("long", "maxDuration (2h)")):
            failed = rk.wait_phase(namespace, name, "Failed")
            assert _reason(failed, "Stalled") == "QuotaExceeded"
            assert what in failed["status"]["message"]
            _wait_event(rk, namespace, name, "QuotaExceeded", "Warning")
    finally:
        _cleanup(rk, namespace, "wide", "long")


def test_outside_allowed_hours_waits_and_is_granted_when_the_hours_open(
        rk: Any, limited_pool: Any, namespace: str) -> None:
    zone = ZoneInfo("Europe/Berlin")
    # The hours open at the next whole minute of Berlin's wall clock at least 15 s away.
    opens = datetime.fromtimestamp(time.time() + 15, zone).replace(second=0, microsecond=0)
    opens += timedelta(minutes=1)
    closes = opens + timedelta(minutes=30)
    pool = limited_pool([{"allowedHours": [{"from": opens.strftime("%H:%M"),
                                            "to": closes.strftime("%H:%M"),
                                            "timeZone": "Europe/Berlin"}]}])
    try:
        rk.create(namespace, "night", {"pool": pool, "request": ONE_NODE, "duration": "5m"})
        waiting = rk.wait_for(namespace, "night", _waiting_with("OutsideAllowedHours"),
                              what="Pending with OutsideAllowedHours")
        if time.time() >= opens.timestamp():
            pytest.fail("the machine was too slow to see the wait before the hours opened")
        assert f"from {format_time(opens.timestamp())}" in waiting["status"]["message"]
        granted = rk.wait_phase(namespace, "night", "Active", timeout=90)
        assert parse_time(granted["status"]["startTime"]) == opens.timestamp()
        assert granted["status"]["retryCount"] == 0
    finally:
        _cleanup(rk, namespace, "night")


def test_a_limit_selects_namespaces_by_label_and_follows_a_relabel(
        rk: Any, limited_pool: Any, namespace: str) -> None:
    # The pool itself admits every namespace: only the limit reads the namespace's labels.
    pool = limited_pool([{"namespaceSelector": {"matchLabels": {"tier": "student"}},
                          "maxNodes": 1}])
    try:
        rk.create(namespace, "one", {"pool": pool, "request": ONE_NODE, "duration": "1h"})
        rk.wait_phase(namespace, "one", "Active")
        rk.create(namespace, "two", {"pool": pool, "request": ONE_NODE, "duration": "1h"})
        rk.wait_phase(namespace, "two", "Active")  # not selected: no limit
        rk.delete(namespace, "two")
        rk.core.patch_namespace(namespace, {"metadata": {"labels": {"tier": "student"}}})
        rk.create(namespace, "three", {"pool": pool, "request": ONE_NODE, "duration": "1h"})
        waiting = rk.wait_for(namespace, "three", _waiting_with("QuotaExceeded"),
                              what="Pending with QuotaExceeded once the namespace is selected")
        assert "maxNodes (1)" in waiting["status"]["message"]
        # Relabelled out of the limit: judged again at once, and granted.
        rk.core.patch_namespace(namespace, {"metadata": {"labels": {"tier": "staff"}}})
        rk.wait_phase(namespace, "three", "Active")
    finally:
        _cleanup(rk, namespace, "one", "two", "three")
