"""The dashboard without a cluster: the views sent to the browser, the store's fan-out to
browsers, and the shipped assets (offline: nothing loaded from elsewhere). The server against
the real API server and a real browser: tests/e2e/test_dashboard_browser.py."""

from __future__ import annotations

import asyncio
import json
import re
from importlib import resources
from pathlib import Path

from respool.dashboard.store import CLOSE, QUEUE_LIMIT, Store
from respool.dashboard.views import pool_view, reservation_view

ROOT = Path(__file__).resolve().parents[2]


def _reservation(name: str = "r1", phase: str | None = "Active", **status: object) -> dict[str, object]:
    body: dict[str, object] = {
        "metadata": {"name": name, "namespace": "team-a", "creationTimestamp": "2026-12-03T10:00:00Z",
                     "resourceVersion": "7"},
        "spec": {"pool": "rack-a", "mode": "shared", "duration": "1h"},
    }
    if phase is not None:
        body["status"] = {"phase": phase, **status}
    return body


def test_reservation_view_is_small_and_flat() -> None:
    view = reservation_view(_reservation(
        startTime="2026-12-03T10:00:00Z", endTime="2026-12-03T11:00:00Z",
        allocated={"ranks": "0-1", "nodelist": "n[0-1]", "summary": "x" * 1000},
        conditions=[{"type": "Ready", "status": "True"}],
    ))
    assert view == {
        "key": "team-a/r1", "namespace": "team-a", "name": "r1", "pool": "rack-a", "mode": "shared",
        "phase": "Active", "reason": "", "message": "", "start": 1796292000.0,
        "end": 1796295600.0, "ranks": "0-1", "nodes": "n[0-1]", "created": 1796292000.0,
        "deleting": False,
    }


def test_waiting_reservation_view_says_why_and_when_at_the_earliest() -> None:
    view = reservation_view(_reservation(
        phase="Pending", message="waiting for capacity",
        conditions=[{"type": "Reconciling", "status": "True", "reason": "WaitingForResources"}],
        nextAvailable={"available": False, "availStart": "2026-12-03T12:00:00Z"},
    ))
    assert view["reason"] == "WaitingForResources"
    assert view["message"] == "waiting for capacity"
    assert view["earliest"] == 1796299200.0
    assert view["start"] is None and view["ranks"] == ""


def test_new_reservation_without_status() -> None:
    view = reservation_view(_reservation(phase=None))
    assert view["phase"] == "" and view["start"] is None


def test_pool_view_names_ranks_by_host() -> None:
    pool = {
        "metadata": {"name": "rack-a"},
        "spec": {"resources": {"version": 1, "execution": {
            "R_lite": [{"rank": "0-3", "children": {"core": "0-15"}}],
            "nodelist": ["rack-a-n[0-3]"]}}, "down": "3", "expiration": "2027-01-01T00:00:00Z"},
        "status": {"capacity": {"node": {"total": 4, "free": 3}},
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Ready"}]},
    }
    view = pool_view(pool)
    assert view["ranks"] == [0, 1, 2, 3]
    assert view["rankNames"] == ["rack-a-n0", "rack-a-n1", "rack-a-n2", "rack-a-n3"]
    assert view["down"] == "3" and view["ready"] == "True"
    assert view["capacity"]["node"] == {"total": 4, "free": 3}
    assert view["expiration"] == 1798761600.0


def test_pool_view_of_a_pool_without_host_names_or_status() -> None:
    view = pool_view({"metadata": {"name": "p"}, "spec": {"resources": {"execution": {
        "R_lite": [{"rank": "0,2", "children": {"core": "0"}}]}}}})
    assert view["rankNames"] == ["rank0", "rank2"]
    assert view["ready"] == "Unknown" and view["capacity"] == {}


def test_pool_view_survives_a_malformed_rank() -> None:
    view = pool_view({"metadata": {"name": "p"}, "spec": {"resources": {"execution": {
        "R_lite": [{"rank": "x-y"}, {"rank": "4"}], "nodelist": ["a[0-9]"]}}}})
    assert view["ranks"] == [4] and view["rankNames"] == ["rank4"]


def _frames(queue: asyncio.Queue[str]) -> list[dict[str, object]]:
    out = []
    while not queue.empty():
        frame = queue.get_nowait()
        out.append({"close": True} if frame == CLOSE else json.loads(frame))
    return out


def test_store_sends_a_snapshot_then_only_real_changes() -> None:
    async def scenario() -> None:
        store = Store()
        first = reservation_view(_reservation())
        store.replace("reservation", {first["key"]: first}, "all namespaces")
        queue = store.subscribe()
        [snapshot] = _frames(queue)
        assert snapshot["type"] == "snapshot" and snapshot["reservations"] == [first]
        assert snapshot["health"]["reservation"] == {"synced": True, "error": "", "scope": "all namespaces"}
        store.apply("reservation", "MODIFIED", first["key"], dict(first))  # nothing shown changed
        assert _frames(queue) == []
        changed = dict(first, phase="Expired")
        store.apply("reservation", "MODIFIED", first["key"], changed)
        store.apply("reservation", "DELETED", first["key"], changed)
        store.apply("reservation", "DELETED", first["key"], changed)  # already gone: once
        assert _frames(queue) == [
            {"type": "changed", "kind": "reservation", "key": "team-a/r1", "view": changed},
            {"type": "deleted", "kind": "reservation", "key": "team-a/r1"},
        ]
        store.fail("pool", "resourcepools: forbidden")
        store.fail("pool", "resourcepools: forbidden")
        [status] = _frames(queue)
        assert status["type"] == "status" and status["pool"]["error"] == "resourcepools: forbidden"
        store.unsubscribe(queue)
        store.apply("reservation", "ADDED", first["key"], first)
        assert _frames(queue) == []

    asyncio.run(scenario())


def test_a_browser_too_far_behind_is_cut_off_not_buffered_without_bound() -> None:
    async def scenario() -> None:
        store = Store()
        slow = store.subscribe()
        for number in range(QUEUE_LIMIT + 5):
            view = reservation_view(_reservation(f"r{number}"))
            store.apply("reservation", "ADDED", view["key"], view)
        assert slow not in store.subscribers
        assert _frames(slow) == [{"close": True}]

    asyncio.run(scenario())


def test_assets_ship_in_the_package_and_load_nothing_from_elsewhere() -> None:
    static = resources.files("respool.dashboard") / "static"
    names = {entry.name for entry in static.iterdir()}
    assert {"index.html", "app.js", "app.css"} <= names
    for name in ("index.html", "app.js", "app.css"):
        text = (static / name).read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), name
        assert "@import" not in text and "url(http" not in text
    index = (static / "index.html").read_text()
    assert '<html lang="en">' in index
    assert "<script>" not in index and "style=" not in index  # the CSP allows no inline code
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"dashboard/static/*"' in pyproject


def test_pool_view_carries_the_maintenance_windows_for_the_timeline() -> None:
    view = pool_view({"metadata": {"name": "p"}, "spec": {"resources": {"execution": {
        "R_lite": [{"rank": "0-1", "children": {"core": "0"}}]}}},
        "status": {"maintenance": [
            {"name": "firmware", "ranks": "0-1", "start": "2030-01-10T02:00:00Z",
             "end": "2030-01-10T06:00:00Z", "mode": "Evict", "reason": "BIOS"},
            {"name": "broken", "start": "not a time"}]}})
    assert view["maintenance"] == [{"name": "firmware", "ranks": "0-1", "start": 1894240800.0,
                                    "end": 1894255200.0, "mode": "Evict", "reason": "BIOS"}]
