"""Life-cycle paths DESIGN.md §2 asks for that the first e2e suite did not cover, on the real
API server with `respool run`: ranks removed under a Scheduled window, a spec edited while the
operator is down, and a pool's expiration lowered below granted windows."""

from __future__ import annotations

import contextlib
import math
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from e2e.invariants import assert_no_conflicting_holds
from respool.api import format_time, parse_time


def R(ranks: str, hosts: str, cores: str = "0-3") -> dict[str, Any]:
    return {"version": 1, "execution": {
        "R_lite": [{"rank": ranks, "children": {"core": cores}}], "nodelist": [hosts]}}


def _now() -> float:
    return float(math.floor(time.time()))


@pytest.fixture
def make_pool(rk: Any) -> Iterator[Callable[[dict[str, Any]], str]]:
    """Create ResourcePools with unique names; delete them afterwards (finalizer permitting).
    Needs no operator itself: the test chooses the shared or a fresh one."""
    created: list[str] = []

    def make(spec: dict[str, Any]) -> str:
        name = f"gaps-{secrets.token_hex(3)}"
        rk.create_pool(name, spec)
        created.append(name)
        return name

    yield make
    for name in created:
        with contextlib.suppress(Exception):
            rk.delete_pool(name)


def _events(rk: Any, namespace: str, name: str, reason: str,
            timeout: float = 15.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in rk.events(namespace, name) if e.reason == reason]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {reason} event for {namespace}/{name}: "
                         f"{[(e.reason, e.message) for e in rk.events(namespace, name)]}")


def _settled(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return status.get("observedGeneration") == obj["metadata"]["generation"]



# --------------------------------------------------------------------------------------------


def test_removed_ranks_replan_scheduled_reservations(
        rk: Any, operator: Any, make_pool: Callable[[dict[str, Any]], str],
        namespace: str) -> None:
    pool = make_pool({"resources": R("0-1", "node[0-1]")})
    soon = _now() + 7200
    one_node = {"nodes": 1, "coresPerSlot": 4}
    rk.create(namespace, "future", {"pool": pool, "request": one_node,
                                    "startTime": format_time(soon), "duration": "1h"})
    rk.create(namespace, "whole", {"pool": pool, "request": {"nodes": 2, "coresPerSlot": 4},
                                   "startTime": format_time(soon + 3 * 3600),
                                   "duration": "1h", "nextAvailable": False})
    future = rk.wait_phase(namespace, "future", "Scheduled")
    rk.wait_phase(namespace, "whole", "Scheduled")
    held = future["status"]["allocated"]["ranks"]
    assert held in ("0", "1")
    kept = "1" if held == "0" else "0"
    # The rank under the window goes away: the pool now has only the other one.
    rk.patch_pool(pool, {"resources": R(kept, f"node{kept}")})

    future = rk.wait_for(
        namespace, "future",
        lambda o: (o["status"].get("allocated") or {}).get("ranks") == kept,
        what=f"window re-planned onto rank {kept}")
    status = future["status"]
    assert status["phase"] == "Scheduled"
    assert status["startTime"] == format_time(soon)  # the window asked for is still free
    assert parse_time(status["endTime"]) - parse_time(status["startTime"]) == 3600
    assert status["allocated"]["nodelist"] == f"node{kept}"
    assert status["preReservationId"]
    assert rk.condition(future, "Scheduled")["status"] == "True"  # type: ignore[index]
    replanned = _events(rk, namespace, "future", "Replanned")
    assert replanned[0].type == "Warning"

    # Two nodes can never fit a one-node pool: it fails with a clear reason, holding nothing.
    whole = rk.wait_phase(namespace, "whole", "Failed")
    assert rk.condition(whole, "Stalled")["reason"] == "Infeasible"  # type: ignore[index]
    assert "allocated" not in whole["status"]
    assert "preReservationId" not in whole["status"]
    rk.wait_for(namespace, "whole",
                lambda o: "respool.io/finalizer" not in (o["metadata"].get("finalizers") or []),
                what="finalizer removed from the failed reservation")
    # No reservation keeps a rank that no longer exists.
    for obj in rk.list(namespace):
        ranks = ((obj.get("status") or {}).get("allocated") or {}).get("ranks")
        assert ranks in (None, kept), f"{obj['metadata']['name']} holds ranks {ranks}"


def test_spec_edited_while_operator_down_is_replanned_on_restart(
        rk: Any, fresh_operator: Any, make_pool: Callable[[dict[str, Any]], str],
        namespace: str) -> None:
    pool = make_pool({"resources": R("0-1", "node[0-1]")})
    whole = {"nodes": 2, "coresPerSlot": 4}
    base = _now() + 7200
    rk.create(namespace, "edited", {"pool": pool, "request": whole,
                                    "startTime": format_time(base), "duration": "1h"})
    rk.create(namespace, "other", {"pool": pool, "request": whole,
                                   "startTime": format_time(base + 2 * 3600),
                                   "duration": "1h", "nextAvailable": False})
    edited = rk.wait_phase(namespace, "edited", "Scheduled")
    rk.wait_phase(namespace, "other", "Scheduled")
    old_id = edited["status"]["preReservationId"]
    assert edited["status"]["startTime"] == format_time(base)

    fresh_operator.stop()
    # Asked for later and longer - onto the window "other" holds, so it must move past it.
    rk.patch(namespace, "edited", {"startTime": format_time(base + 2 * 3600),
                                   "duration": "2h"})
    generation = rk.get(namespace, "edited")["metadata"]["generation"]
    assert generation > edited["metadata"]["generation"]
    fresh_operator.start()

    edited = rk.wait_for(namespace, "edited", _settled, timeout=30,
                         what="the edited spec observed after the restart")
    status = edited["status"]
    assert status["phase"] == "Scheduled", status
    start, end = parse_time(status["startTime"]), parse_time(status["endTime"])
    assert end - start == 7200  # the new length
    assert start == base + 3 * 3600  # the earliest fit after "other" (nextAvailable)
    assert status["preReservationId"] != old_id
    _events(rk, namespace, "edited", "Replanned")
    other = rk.get(namespace, "other")
    assert other["status"]["phase"] == "Scheduled"
    assert other["status"]["startTime"] == format_time(base + 2 * 3600)
    assert_no_conflicting_holds(rk.list(namespace))


def test_lowered_pool_expiration_cuts_active_and_fails_scheduled_past_it(
        rk: Any, operator: Any, make_pool: Callable[[dict[str, Any]], str],
        namespace: str) -> None:
    now = _now()
    pool = make_pool({"resources": R("0-1", "node[0-1]"),
                      "expiration": format_time(now + 4 * 3600)})
    one_node = {"nodes": 1, "coresPerSlot": 4}
    rk.create(namespace, "long", {"pool": pool, "request": one_node, "duration": "2h"})
    rk.create(namespace, "short", {"pool": pool, "request": one_node, "duration": "10m"})
    rk.create(namespace, "later", {"pool": pool, "request": one_node, "duration": "30m",
                                   "startTime": format_time(now + 2 * 3600),
                                   "nextAvailable": False})
    long = rk.wait_phase(namespace, "long", "Active")
    short = rk.wait_phase(namespace, "short", "Active")
    rk.wait_phase(namespace, "later", "Scheduled")
    long_id, long_end = long["status"]["reservationId"], long["status"]["endTime"]
    assert parse_time(long_end) > now + 3600

    expiration = now + 3600
    rk.patch_pool(pool, {"expiration": format_time(expiration)})

    long = rk.wait_for(namespace, "long",
                       lambda o: o["status"]["endTime"] == format_time(expiration),
                       what="the window cut to the pool's expiration")
    assert long["status"]["phase"] == "Active"
    assert long["status"]["reservationId"] == long_id  # the same grant, shorter
    shortened = rk.condition(long, "Shortened")
    assert shortened is not None and shortened["status"] == "True"
    assert shortened["reason"] == "PoolExpired"
    assert format_time(expiration) in shortened["message"]
    assert rk.condition(long, "Ready")["status"] == "True"  # type: ignore[index]
    warnings = _events(rk, namespace, "long", "PoolExpired")
    assert warnings[0].type == "Warning" and long_end in warnings[0].message

    later = rk.wait_phase(namespace, "later", "Failed")
    assert rk.condition(later, "Stalled")["reason"] == "PoolExpired"  # type: ignore[index]
    assert "allocated" not in later["status"]

    # A window that already ends before the expiration is left alone.
    short = rk.get(namespace, "short")
    assert short["status"]["phase"] == "Active"
    assert rk.condition(short, "Shortened") is None
    assert not [e for e in rk.events(namespace, "short") if e.reason == "PoolExpired"]
    # Nothing held ends past the expiration.
    for obj in rk.list(namespace):
        status = obj.get("status") or {}
        if status.get("phase") in ("Active", "Scheduled"):
            assert parse_time(status["endTime"]) <= expiration, obj["metadata"]["name"]


def test_expiration_lowered_while_operator_down_is_applied_on_restart(
        rk: Any, fresh_operator: Any, make_pool: Callable[[dict[str, Any]], str],
        namespace: str) -> None:
    now = _now()
    pool = make_pool({"resources": R("0-1", "node[0-1]")})
    one_node = {"nodes": 1, "coresPerSlot": 4}
    rk.create(namespace, "long", {"pool": pool, "request": one_node, "duration": "3h"})
    rk.create(namespace, "later", {"pool": pool, "request": one_node, "duration": "1h",
                                   "startTime": format_time(now + 2 * 3600)})
    long = rk.wait_phase(namespace, "long", "Active")
    rk.wait_phase(namespace, "later", "Scheduled")
    long_id = long["status"]["reservationId"]

    fresh_operator.stop()
    expiration = now + 3600
    rk.patch_pool(pool, {"expiration": format_time(expiration)})
    fresh_operator.start()

    # The grant restored from status is cut as soon as the new expiration is seen.
    long = rk.wait_for(namespace, "long",
                       lambda o: o["status"]["endTime"] == format_time(expiration),
                       timeout=30, what="the restored window cut to the pool's expiration")
    assert long["status"]["phase"] == "Active"
    assert long["status"]["reservationId"] == long_id
    assert rk.condition(long, "Shortened")["reason"] == "PoolExpired"  # type: ignore[index]
    later = rk.wait_phase(namespace, "later", "Failed", timeout=30)
    assert rk.condition(later, "Stalled")["reason"] == "PoolExpired"  # type: ignore[index]
    assert_no_conflicting_holds(rk.list(namespace))
    # Exactly one Granted Event for the restored grant: cutting it is not a new grant.
    assert sum(1 for e in rk.events(namespace, "long") if e.reason == "Granted") == 1
