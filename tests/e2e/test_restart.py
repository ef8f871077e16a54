"""Restart safety: SIGKILL the operator mid-burst, restart it, and check invariants 1-3."""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict
from typing import Any

from e2e.invariants import assert_no_conflicting_holds

SETTLED = {"Active", "Scheduled"}


def _pool(rk: Any, ranks: int = 4, cores: int = 8) -> str:
    name = f"restart-{secrets.token_hex(3)}"
    rk.create_pool(name, {"resources": {"version": 1, "execution": {
        "R_lite": [{"rank": f"0-{ranks - 1}", "children": {"core": f"0-{cores - 1}"}}],
        "nodelist": [f"host[0-{ranks - 1}]"]}}})
    return name


def _burst(rk: Any, namespace: str, pool: str, names: list[str],
           spec: dict[str, Any]) -> threading.Thread:
    def create_all() -> None:
        for name in names:
            rk.create(namespace, name, {"pool": pool, **spec})

    thread = threading.Thread(target=create_all, daemon=True)
    thread.start()
    return thread


def _wait_settled(rk: Any, namespace: str, count: int, timeout: float = 60) -> list[
        dict[str, Any]]:
    deadline = time.monotonic() + timeout
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        items = rk.list(namespace)
        if len(items) == count and all(
                (o.get("status") or {}).get("phase") in SETTLED
                and o["status"].get("observedGeneration") == o["metadata"]["generation"]
                for o in items):
            return items
        time.sleep(0.2)
    phases = defaultdict(int)
    for o in items:
        phases[(o.get("status") or {}).get("phase")] += 1
    raise AssertionError(f"not settled in {timeout}s: {dict(phases)} of {count}")



def _ids(items: list[dict[str, Any]]) -> dict[str, tuple[str | None, str | None, str | None]]:
    out = {}
    for obj in items:
        st = obj.get("status") or {}
        if st.get("phase") in SETTLED:
            out[obj["metadata"]["name"]] = (st.get("reservationId") or st.get("preReservationId"),
                                            st["allocated"]["summary"], st.get("startTime"))
    return out


def _granted_counts(rk: Any, namespace: str) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for event in rk.events(namespace):
        if event.reason == "Granted":
            counts[event.involved_object.name] += 1
    return counts


def test_sigkill_mid_burst_then_restart(fresh_operator: Any, rk: Any,
                                        namespace: str) -> None:
    pool = _pool(rk)  # 32 cores
    names = [f"b{i:02d}" for i in range(48)]
    thread = _burst(rk, namespace, pool, names, {"duration": "1h", "mode": "exclusive"})
    # Kill once some grants are committed and more are in flight.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        granted = [o for o in rk.list(namespace) if (o.get("status") or {}).get("phase")]
        if len(granted) >= 12:
            break
        time.sleep(0.05)
    fresh_operator.kill()
    thread.join(60)
    before = _ids(rk.list(namespace))
    assert before, "nothing was granted before the kill"
    fresh_operator.start()
    items = _wait_settled(rk, namespace, len(names))
    assert_no_conflicting_holds(items)
    after = _ids(items)
    for name, held in before.items():
        assert after[name] == held, f"{name}: held {held} before the restart, {after[name]} after"
    phases = defaultdict(int)
    for obj in items:
        phases[obj["status"]["phase"]] += 1
    assert phases["Active"] == 32, f"capacity lost or over-granted: {dict(phases)}"
    assert phases["Scheduled"] == 16
    all_ids = [v[0] for v in after.values()]
    assert len(set(all_ids)) == len(all_ids), "an ID was minted twice"
    time.sleep(2)
    counts = _granted_counts(rk, namespace)
    # Events are posted after the commit: a kill can lose one, never duplicate one.
    assert max(counts.values(), default=0) <= 1, f"granted more than once: {dict(counts)}"


def test_repeated_kills_keep_invariants(fresh_operator: Any, rk: Any,
                                        namespace: str) -> None:
    pool = _pool(rk, ranks=2, cores=8)  # 16 cores
    names = [f"k{i:02d}" for i in range(40)]
    thread = _burst(rk, namespace, pool, names,
                    {"duration": "1h", "request": {"coresPerSlot": 1}})
    for pause in (0.4, 0.7, 0.3):
        time.sleep(pause)
        fresh_operator.kill()
        fresh_operator.start()
    thread.join(60)
    items = _wait_settled(rk, namespace, len(names))
    assert_no_conflicting_holds(items)
    active = [o for o in items if o["status"]["phase"] == "Active"]
    assert len(active) == 16
    time.sleep(2)
    counts = _granted_counts(rk, namespace)
    assert max(counts.values(), default=0) <= 1, f"granted more than once: {dict(counts)}"


def test_deleted_while_down_is_released_on_restart(fresh_operator: Any,
                                                   rk: Any, namespace: str) -> None:
    pool = _pool(rk, ranks=1, cores=4)
    whole = {"request": {"nodes": 1, "coresPerSlot": 4}, "duration": "1h"}
    rk.create(namespace, "holder", {"pool": pool, **whole})
    rk.wait_phase(namespace, "holder", "Active")
    rk.wait_for(namespace, "holder",
                lambda o: "respool.io/finalizer" in (o["metadata"].get("finalizers") or []),
                what="finalizer")
    fresh_operator.kill()
    rk.delete(namespace, "holder")  # stays Terminating: our finalizer waits for the operator
    assert rk.exists(namespace, "holder")
    rk.create(namespace, "waiter", {"pool": pool, **whole, "nextAvailable": False})
    fresh_operator.start()
    rk.wait_phase(namespace, "waiter", "Active")
    deadline = time.monotonic() + 60
    while rk.exists(namespace, "holder") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not rk.exists(namespace, "holder")


def test_restarts_and_edits_do_not_use_up_max_retry(fresh_operator: Any,
                                                    rk: Any, namespace: str) -> None:
    """A waiting reservation is retried when capacity changes; asking it again after an
    operator restart or an edit that changes nothing it depends on is not a retry."""
    pool = _pool(rk, ranks=1, cores=4)
    whole = {"request": {"nodes": 1, "coresPerSlot": 4}, "duration": "1h"}
    rk.create(namespace, "holder", {"pool": pool, **whole})
    rk.wait_phase(namespace, "holder", "Active")
    rk.create(namespace, "waiter", {"pool": pool, **whole, "nextAvailable": False,
                                    "maxRetry": 1})
    waiting = rk.wait_phase(namespace, "waiter", "Pending")
    assert waiting["status"]["retryCount"] == 1
    for round_ in range(2):
        fresh_operator.kill()
        fresh_operator.start()
        # The pool's policy edited (its generation moves on; its capacity does not) and the
        # reservation's config edited (its generation moves on; its request does not).
        rk.patch_pool(pool, {"policy": {"claimTimeout": f"{5 + round_}m"}})
        rk.patch(namespace, "waiter", {"config": {"round": round_}})
        rk.wait_for(namespace, "waiter",
                    lambda o: o["status"].get("observedGeneration") == o["metadata"]["generation"],
                    what="the config edit observed")
    rk.wait_pool(pool, lambda o: (o.get("status") or {}).get("observedGeneration")
                 == o["metadata"]["generation"], what="the policy edit observed")
    still = rk.get(namespace, "waiter")["status"]
    assert still["phase"] == "Pending" and still["retryCount"] == 1, still
    rk.delete(namespace, "holder")
    rk.wait_phase(namespace, "waiter", "Active")
    # Never failed on the way (a config edit would have restarted a Failed one from scratch,
    # so the phase alone does not tell): its Events, posted right after each commit, do.
    reasons = [e.reason for e in rk.events(namespace, "waiter")]
    assert "RetryExceeded" not in reasons, reasons
