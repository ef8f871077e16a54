"""Priorities, preemption and maintenance windows (issue 14) on the real API server with
`respool run`: PriorityClasses (scheduling.k8s.io/v1) give the priority, a higher one takes a
Scheduled window (the displaced one says Replanned, naming it) or, after the grace period,
an Active preemptible one (PreemptionPending, then Failed/Preempted); waiters are granted in
priority order; maintenance keeps everyone out and says so by name, and cuts back holders."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from respool.api import format_time, parse_time

PATIENCE = 60.0


@pytest.fixture
def classes(api_client: Any) -> Iterator[Callable[[int, str | None], str]]:
    """Makes PriorityClasses (cluster-scoped) with unique names; deletes them afterwards."""
    from kubernetes import client

    scheduling = client.SchedulingV1Api(api_client)
    made: list[str] = []

    def make(value: int, preemption_policy: str | None = None) -> str:
        name = f"prio-{secrets.token_hex(3)}"
        body: dict[str, Any] = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                "metadata": {"name": name}, "value": value}
        if preemption_policy:
            body["preemptionPolicy"] = preemption_policy
        scheduling.create_priority_class(body)
        made.append(name)
        return name

    yield make
    for name in made:
        with contextlib.suppress(Exception):
            scheduling.delete_priority_class(name)


@pytest.fixture
def make_pool(rk: Any) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def make(**extra: Any) -> str:
        name = f"pool-{secrets.token_hex(3)}"
        spec = {"resources": {"version": 1, "execution": {
            "R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}],
            "nodelist": ["node[0-1]"]}}}
        spec.update(extra)
        rk.create_pool(name, spec)
        rk.wait_pool(name, lambda o: rk.condition(o, "Ready") is not None, what="Ready")
        made.append(name)
        return name

    yield make
    for name in made:
        for item in rk.custom.list_cluster_custom_object("respool.io", "v1alpha1",
                                                          "resourcereservations")["items"]:
            if item["spec"].get("pool") == name:
                with contextlib.suppress(Exception):
                    rk.delete(item["metadata"]["namespace"], item["metadata"]["name"])
        with contextlib.suppress(Exception):
            rk.delete_pool(name)


WHOLE_POOL = {"nodes": 2, "exclusive": True}


def _events(rk: Any, namespace: str, name: str, reason: str) -> list[Any]:
    return [e for e in rk.events(namespace, name) if e.reason == reason]


def _wait_event(rk: Any, namespace: str, name: str, reason: str) -> Any:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        found = _events(rk, namespace, name, reason)
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {reason} Event for {namespace}/{name}: "
                         f"{[(e.reason, e.message) for e in rk.events(namespace, name)]}")


def _true(rk: Any, type_: str) -> Callable[[dict[str, Any]], bool]:
    return lambda o: (rk.condition(o, type_) or {}).get("status") == "True"


def test_a_higher_priority_takes_a_scheduled_window_and_the_displaced_one_says_by_whom(
        rk: Any, operator: Any, namespace: str, classes: Any, make_pool: Any) -> None:
    low, high = classes(10), classes(1000)
    pool = make_pool()
    start = format_time(int(time.time()) + 600)
    rk.create(namespace, "low", {"pool": pool, "request": WHOLE_POOL, "startTime": start,
                                 "duration": "1h", "priorityClassName": low})
    scheduled = rk.wait_phase(namespace, "low", "Scheduled")
    assert scheduled["status"]["priority"] == 10
    rk.create(namespace, "high", {"pool": pool, "request": WHOLE_POOL, "startTime": start,
                                  "duration": "1h", "priorityClassName": high})
    taken = rk.wait_for(namespace, "high", lambda o: rk.phase(o) == "Scheduled",
                        what="Scheduled")
    assert taken["status"]["startTime"] == start and taken["status"]["priority"] == 1000
    replanned = rk.wait_for(namespace, "low", _true(rk, "Replanned"), what="Replanned")
    condition = rk.condition(replanned, "Replanned")
    assert condition["reason"] == "Preempted" and f"{namespace}/high" in condition["message"]
    event = _wait_event(rk, namespace, "low", "Replanned")
    assert event.type == "Warning" and f"{namespace}/high" in event.message
    assert f"{namespace}/low" in _wait_event(rk, namespace, "high", "Preempted").message
    moved = rk.wait_for(namespace, "low", lambda o: rk.phase(o) == "Scheduled"
                        and o["status"]["startTime"] != start, what="a later window")
    assert parse_time(moved["status"]["startTime"]) == parse_time(start) + 3600


def test_no_cascade_across_an_operator_restart(
        rk: Any, operator: Any, namespace: str, classes: Any, make_pool: Any) -> None:
    """The displaced reservation's status.displacedBy says who displaced it; an operator
    restarted meanwhile reads it back, so raising the displaced one above its displacer does not
    let it take the window back (no cascades), although it is now the higher priority."""
    low, high, top = classes(10), classes(1000), classes(2000)
    pool = make_pool()
    start = format_time(int(time.time()) + 600)
    rk.create(namespace, "low", {"pool": pool, "request": WHOLE_POOL, "startTime": start,
                                 "duration": "1h", "priorityClassName": low,
                                 "nextAvailable": False, "maxRetry": 50})
    rk.wait_phase(namespace, "low", "Scheduled")
    rk.create(namespace, "high", {"pool": pool, "request": WHOLE_POOL, "startTime": start,
                                  "duration": "1h", "priorityClassName": high})
    high_uid = rk.wait_phase(namespace, "high", "Scheduled")["metadata"]["uid"]
    displaced = rk.wait_for(namespace, "low", lambda o: rk.phase(o) == "Pending"
                            and (o["status"].get("displacedBy") or []) == [high_uid],
                            what="Pending, displaced by high")
    assert rk.condition(displaced, "Replanned")["reason"] == "Preempted"
    operator.kill()
    rk.patch(namespace, "low", {"priorityClassName": top})
    operator.start()
    decided = rk.wait_for(namespace, "low", lambda o: o["status"].get("observedGeneration") == 2
                          and o["status"].get("priority") == 2000, what="decided at priority 2000")
    assert rk.phase(decided) == "Pending", decided["status"]
    kept = rk.get(namespace, "high")
    assert rk.phase(kept) == "Scheduled" and kept["status"]["startTime"] == start
    assert rk.condition(kept, "Replanned") is None
    assert not _events(rk, namespace, "low", "Preempted")


def test_equal_priority_and_preemption_policy_never_wait_their_turn(
        rk: Any, operator: Any, namespace: str, classes: Any, make_pool: Any) -> None:
    low, never = classes(10), classes(5000, "Never")
    pool = make_pool()
    start = format_time(int(time.time()) + 600)
    rk.create(namespace, "first", {"pool": pool, "request": WHOLE_POOL, "startTime": start,
                                   "duration": "1h", "priorityClassName": low})
    rk.wait_phase(namespace, "first", "Scheduled")
    rk.create(namespace, "same", {"pool": pool, "request": WHOLE_POOL, "startTime": start,
                                  "duration": "1h", "priorityClassName": low})
    rk.create(namespace, "polite", {"pool": pool, "request": WHOLE_POOL, "startTime": start,
                                    "duration": "1h", "priorityClassName": never})
    for name in ("same", "polite"):
        later = rk.wait_phase(namespace, name, "Scheduled")
        assert later["status"]["startTime"] != start
    first = rk.get(namespace, "first")
    assert first["status"]["startTime"] == start and rk.condition(first, "Replanned") is None


def test_an_active_preemptible_holder_is_warned_then_ends_preempted_after_the_grace_period(
        rk: Any, operator: Any, namespace: str, classes: Any, make_pool: Any) -> None:
    low, high = classes(10), classes(1000)
    pool = make_pool(policy={"preemptionGracePeriod": "3s"})
    rk.create(namespace, "stubborn", {"pool": pool, "request": {"nodes": 1, "exclusive": True},
                                      "duration": "1h", "priorityClassName": low})
    rk.create(namespace, "soft", {"pool": pool, "request": {"nodes": 1, "exclusive": True},
                                  "duration": "1h", "priorityClassName": low,
                                  "preemptible": True})
    rk.wait_phase(namespace, "stubborn", "Active")
    rk.wait_phase(namespace, "soft", "Active")
    rk.create(namespace, "urgent", {"pool": pool, "request": {"nodes": 1, "exclusive": True},
                                    "duration": "10m", "priorityClassName": high})
    pending = rk.wait_for(namespace, "soft", _true(rk, "PreemptionPending"),
                          what="PreemptionPending")
    assert f"{namespace}/urgent" in rk.condition(pending, "PreemptionPending")["message"]
    assert rk.phase(pending) == "Active"
    warning = _wait_event(rk, namespace, "soft", "PreemptionPending")
    assert warning.type == "Warning"
    failed = rk.wait_phase(namespace, "soft", "Failed")
    assert rk.condition(failed, "Stalled")["reason"] == "Preempted"
    rk.wait_phase(namespace, "urgent", "Active")
    stubborn = rk.get(namespace, "stubborn")
    assert rk.phase(stubborn) == "Active" and rk.condition(stubborn, "PreemptionPending") is None


def test_waiters_are_granted_in_priority_order_and_caps_apply(
        rk: Any, operator: Any, namespace: str, classes: Any, make_pool: Any) -> None:
    low, high = classes(10), classes(1000)
    pool = make_pool(policy={"maxPriority": [{"value": 500}]})
    rk.create(namespace, "holder", {"pool": pool, "request": WHOLE_POOL, "duration": "1h"})
    rk.wait_phase(namespace, "holder", "Active")
    for name, cls in (("older-low", low), ("newer-high", high)):
        rk.create(namespace, name, {"pool": pool, "request": WHOLE_POOL, "duration": "1h",
                                    "nextAvailable": False, "priorityClassName": cls,
                                    "maxRetry": 100})
        rk.wait_phase(namespace, name, "Pending")
    capped = rk.get(namespace, "newer-high")
    assert capped["status"]["priority"] == 500  # policy.maxPriority caps the class's 1000
    rk.delete(namespace, "holder")
    rk.wait_phase(namespace, "newer-high", "Active")
    assert rk.phase(rk.get(namespace, "older-low")) == "Pending"


def test_an_unknown_priority_class_waits_for_it(
        rk: Any, operator: Any, namespace: str, classes: Any, make_pool: Any, api_client: Any
) -> None:
    from kubernetes import client

    pool = make_pool()
    name = f"prio-{secrets.token_hex(3)}"
    rk.create(namespace, "early", {"pool": pool, "request": {"slots": 1},
                                   "priorityClassName": name})
    waiting = rk.wait_phase(namespace, "early", "Pending")
    assert f"PriorityClass {name!r} does not exist" in waiting["status"]["message"]
    client.SchedulingV1Api(api_client).create_priority_class(
        {"metadata": {"name": name}, "value": 7})
    try:
        active = rk.wait_phase(namespace, "early", "Active")
        assert active["status"]["priority"] == 7
    finally:
        with contextlib.suppress(Exception):
            client.SchedulingV1Api(api_client).delete_priority_class(name)


def test_maintenance_keeps_reservations_out_by_name_and_shows_in_the_pool(
        rk: Any, operator: Any, namespace: str, make_pool: Any, kube_env: dict[str, str]
) -> None:
    now = int(time.time())
    start, end = format_time(now - 60), format_time(now + 3600)
    pool = make_pool(maintenance=[{"name": "firmware", "start": start, "end": end,
                                   "reason": "BIOS update"}])
    rk.create(namespace, "blocked", {"pool": pool, "request": {"slots": 1},
                                     "nextAvailable": False, "maxRetry": 10})
    waiting = rk.wait_phase(namespace, "blocked", "Pending")
    assert "busy: maintenance 'firmware'" in waiting["status"]["message"]
    rk.create(namespace, "after", {"pool": pool, "request": {"slots": 1}, "duration": "10m"})
    booked = rk.wait_phase(namespace, "after", "Scheduled")
    assert parse_time(booked["status"]["startTime"]) == parse_time(end)
    status = rk.wait_pool(pool, lambda o: bool((o.get("status") or {}).get("maintenance")),
                          what="status.maintenance")["status"]
    assert status["maintenance"][0]["name"] == "firmware"
    assert status["maintenance"][0]["ranks"] == "0-1"
    assert status["maintenance"][0]["inProgress"] is True
    announced = [e for e in rk.core.list_event_for_all_namespaces(
        field_selector=f"involvedObject.name={pool}").items if e.reason == "Maintenance"]
    assert announced and "'firmware'" in announced[0].message
    described = subprocess.run(
        [sys.executable, "-m", "respool.cli.main", "describe", "pool", pool, "--utc",
         "--width", "40"], env=kube_env, capture_output=True, text=True, check=True).stdout
    assert "!  maintenance 'firmware'" in described and "BIOS update" in described


def test_evict_cuts_active_holders_back_and_drain_ends_them_at_the_start(
        rk: Any, operator: Any, namespace: str, make_pool: Any) -> None:
    pool = make_pool()
    rk.create(namespace, "evicted", {"pool": pool, "request": {"nodes": 1, "exclusive": True},
                                     "duration": "1h"})
    rk.create(namespace, "drained", {"pool": pool, "request": {"nodes": 1, "exclusive": True},
                                     "duration": "1h"})
    for name in ("evicted", "drained"):
        rk.wait_phase(namespace, name, "Active")
    ranks = {name: rk.get(namespace, name)["status"]["allocated"]["ranks"]
             for name in ("evicted", "drained")}
    soon = int(time.time()) + 8
    rk.patch_pool(pool, {"maintenance": [
        {"name": "psu", "ranks": ranks["evicted"], "start": format_time(soon),
         "duration": "1h", "mode": "Evict"},
        {"name": "fans", "ranks": ranks["drained"], "start": format_time(soon),
         "duration": "1h", "mode": "Drain"},
    ]})
    cut = rk.wait_for(namespace, "evicted", _true(rk, "Shortened"), what="Shortened")
    assert cut["status"]["endTime"] == format_time(int(soon))
    assert rk.condition(cut, "Shortened")["reason"] == "Maintenance"
    drained = rk.wait_for(namespace, "drained", _true(rk, "Shortened"), what="announced")
    assert parse_time(drained["status"]["endTime"]) > soon + 3000  # kept until it starts
    assert "'fans'" in _wait_event(rk, namespace, "drained", "Maintenance").message
    for name in ("evicted", "drained"):
        ended = rk.wait_phase(namespace, name, "Expired")
        assert "maintenance" in ended["status"]["message"] or name == "evicted"
