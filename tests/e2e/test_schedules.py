"""ResourceReservationSchedule on the real API server with the live operator: admission (CEL),
reservations created ahead of time (owned, labelled, named by their occurrence) and booked like
any other, the schedule's status, no duplicates across an operator restart, suspend."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from respool.controller.schedules import SCHEDULE_LABEL, occurrences, reservation_name

pytestmark = pytest.mark.timeout(240)

Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def pool(kubectl: Kubectl, crds: list[str]) -> Iterator[str]:
    name = f"sched-{secrets.token_hex(3)}"
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "respool.io/v1alpha1", "kind": "ResourcePool", "metadata": {"name": name},
        "spec": {"resources": {"version": 1, "execution": {
            "R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}],
            "nodelist": ["sched[0-1]"]}}}}))
    yield name
    kubectl("delete", "rpool", name, "--wait=false", check=False)


def schedule(name: str, pool: str, **spec: Any) -> str:
    full: dict[str, Any] = {
        "schedule": "0 2 * * *", "timeZone": "Europe/Berlin", "duration": "2h",
        "leadTime": "72h",
        "template": {"pool": pool, "mode": "exclusive", "request": {"nodes": 1}}}
    full.update(spec)
    return json.dumps({"apiVersion": "respool.io/v1alpha1",
                       "kind": "ResourceReservationSchedule",
                       "metadata": {"name": name}, "spec": full})


def owned(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    out = kubectl("get", "rsv", "-n", namespace, "-l", f"{SCHEDULE_LABEL}={name}", "-o",
                  "json").stdout
    return list(json.loads(out)["items"])


def wait_for(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.5)


def test_admission_refuses_what_the_schedule_sets_and_bad_cron(
        kubectl: Kubectl, namespace: str, crds: list[str]) -> None:
    refused = kubectl("apply", "-n", namespace, "-f", "-", check=False, input=schedule(
        "bad", "p", template={"pool": "p", "startTime": "2030-01-01T00:00:00Z"}))
    assert refused.returncode != 0 and "set by the schedule" in refused.stderr
    refused = kubectl("apply", "-n", namespace, "-f", "-", check=False,
                      input=schedule("bad", "p", schedule="every night"))
    assert refused.returncode != 0 and "five cron fields" in refused.stderr
    refused = kubectl("apply", "-n", namespace, "-f", "-", check=False,
                      input=schedule("bad", "p", leadTime="1000h"))
    assert refused.returncode != 0 and "leadTime is at most" in refused.stderr
    assert kubectl("get", "rsvs", "-n", namespace, "-o", "name").stdout.strip() == ""


def test_a_schedule_books_its_occurrences_ahead_once_even_across_a_restart(
        kubectl: Kubectl, namespace: str, pool: str, fresh_operator: Any) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=schedule("nightly", pool))
    now = time.time()
    expected = [reservation_name("nightly", t)
                for t in occurrences("0 2 * * *", "Europe/Berlin", now + 60, now + 72 * 3600)]
    assert len(expected) >= 2
    wait_for(lambda: {r["metadata"]["name"] for r in owned(kubectl, namespace, "nightly")}
             >= set(expected))
    uid = json.loads(kubectl("get", "rsvs", "nightly", "-n", namespace, "-o", "json").stdout)[
        "metadata"]["uid"]
    for item in owned(kubectl, namespace, "nightly"):
        assert item["metadata"]["ownerReferences"][0]["uid"] == uid
        assert item["spec"]["pool"] == pool and item["spec"]["duration"] == "7200s"
    # Booked like any reservation: Scheduled for its window; the schedule's status says so.
    wait_for(lambda: all((r.get("status") or {}).get("phase") == "Scheduled"
                         for r in owned(kubectl, namespace, "nightly")))

    def status() -> dict[str, Any]:
        obj = json.loads(kubectl("get", "rsvs", "nightly", "-n", namespace, "-o",
                                 "json").stdout)
        return dict(obj.get("status") or {})

    wait_for(lambda: [u.get("phase") for u in status().get("upcoming") or []]
             == ["Scheduled"] * len(owned(kubectl, namespace, "nightly")))
    assert status()["lastScheduleTime"]
    before = sorted(r["metadata"]["uid"] for r in owned(kubectl, namespace, "nightly"))
    fresh_operator.restart()
    time.sleep(3)
    kubectl("annotate", "rsvs", "nightly", "-n", namespace, "poke=1")
    time.sleep(2)
    assert sorted(r["metadata"]["uid"] for r in owned(kubectl, namespace, "nightly")) == before


def test_suspended_creates_nothing_and_an_unbookable_occurrence_is_reported(
        kubectl: Kubectl, namespace: str, pool: str, operator: Any) -> None:
    kubectl("apply", "-n", namespace, "-f", "-",
            input=schedule("paused", pool, suspend=True))
    wait_for(lambda: "suspended" in (json.loads(kubectl(
        "get", "rsvs", "paused", "-n", namespace, "-o", "json").stdout).get("status") or {})
        .get("message", ""))
    assert owned(kubectl, namespace, "paused") == []
    # A template that can never fit: each occurrence's reservation fails; the schedule says
    # which and why.
    kubectl("apply", "-n", namespace, "-f", "-", input=schedule(
        "toobig", pool, template={"pool": pool, "request": {"nodes": 9}}))

    def unbooked() -> list[dict[str, Any]]:
        obj = json.loads(kubectl("get", "rsvs", "toobig", "-n", namespace, "-o", "json").stdout)
        return list((obj.get("status") or {}).get("unbooked") or [])

    wait_for(lambda: bool(unbooked()), timeout=90)
    assert unbooked()[0]["reason"] == "Infeasible"
