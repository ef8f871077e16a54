"""Restore verifies what it restores (issue 11), on the real API server with `respool run`.

An administrator forges a reservation's status with `kubectl patch --subresource=status` while
the operator is down, claiming the cores an honest holder has (the honest holder's whole
booking, seal included, copied over). The restarted operator does not restore the forgery: it
plans it anew, with a BookingUnverified Warning Event and no retry counted, and the honest
holders keep exactly what they had. A status stripped of its seal is refused the same way.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

from e2e.invariants import assert_no_conflicting_holds

HOLDING = {"Active", "Scheduled"}


def _pool(rk: Any) -> str:
    name = f"seal-{secrets.token_hex(3)}"
    rk.create_pool(name, {"resources": {"version": 1, "execution": {
        "R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}],
        "nodelist": [f"{name}-n[0-1]"]}}})
    return name


def _settled(rk: Any, namespace: str, names: list[str], timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    objects: dict[str, Any] = {}
    while time.monotonic() < deadline:
        objects = {n: rk.get(namespace, n) for n in names}
        if all((o.get("status") or {}).get("phase") in HOLDING
               and o["status"].get("bookingSeal")
               and o["status"].get("observedGeneration") == o["metadata"]["generation"]
               for o in objects.values()):
            return objects
        time.sleep(0.2)
    raise AssertionError(f"not settled: {[(n, (o.get('status') or {}).get('phase')) for n, o in objects.items()]}")


def _held(obj: dict[str, Any]) -> tuple[Any, ...]:
    status = obj["status"]
    return (status["phase"], status.get("reservationId") or status.get("preReservationId"),
            status["allocated"]["ranks"], status["allocated"]["summary"], status["startTime"],
            status["endTime"], status["bookingSeal"])


def _forge(kubectl: Any, namespace: str, name: str, status: dict[str, Any]) -> None:
    kubectl("patch", "rsv", name, "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}))


def _warnings(rk: Any, namespace: str, name: str, reason: str) -> list[Any]:
    return [e for e in rk.events(namespace, name) if e.reason == reason and e.type == "Warning"]


def test_a_forged_status_is_replanned_and_honest_holders_keep_their_grants(
        fresh_operator: Any, rk: Any, namespace: str, kubectl: Any) -> None:
    pool = _pool(rk)  # 8 cores
    for name in ("honest-a", "honest-b", "forger", "stripped"):
        # a and b take all 8 cores now; the forger and the stripped one are booked after them.
        rk.create(namespace, name, {"pool": pool, "duration": "1h", "mode": "exclusive",
                                    "request": {"slots": 1, "coresPerSlot": 4}})
        if name == "honest-b":
            _settled(rk, namespace, ["honest-a", "honest-b"])
    before = _settled(rk, namespace, ["honest-a", "honest-b", "forger", "stripped"])
    assert before["honest-a"]["status"]["phase"] == "Active"
    assert before["forger"]["status"]["phase"] == "Scheduled"
    retries = before["forger"]["status"]["retryCount"]

    # The key is the operator's, in a Lease nobody holds.
    leases = json.loads(kubectl("get", "lease", "-A", "--field-selector",
                                "metadata.name=respool-booking-seal", "-o", "json").stdout)
    [lease] = leases["items"]
    key = lease["metadata"]["annotations"]["respool.io/booking-seal-key"]
    assert len(base64.b64decode(key)) == 32 and not lease["spec"].get("holderIdentity")

    fresh_operator.kill()
    # The admin copies honest-a's grant, seal included, into the forger's status: with nothing
    # checked, a restore would give honest-a's cores to both (or, listed first, to the forger).
    grant = before["honest-a"]["status"]
    _forge(kubectl, namespace, "forger", {
        "phase": "Active", "reservationId": f"{pool}-forged-1", "preReservationId": None,
        "preReservationExpires": None, "startTime": grant["startTime"],
        "endTime": grant["endTime"], "allocated": grant["allocated"],
        "bookingSeal": grant["bookingSeal"]})
    # And strips the seal of another (a status that claims a booking with no mark at all).
    _forge(kubectl, namespace, "stripped", {"bookingSeal": None})
    assert "bookingSeal" not in rk.get(namespace, "stripped")["status"]
    fresh_operator.start()

    after = _settled(rk, namespace, ["honest-a", "honest-b", "forger", "stripped"])
    for name in ("honest-a", "honest-b"):
        assert _held(after[name]) == _held(before[name]), f"{name} lost or changed its grant"
    forger = after["forger"]["status"]
    assert forger["phase"] == "Scheduled", forger  # planned anew: the pool is full until 1h
    assert "reservationId" not in forger  # the forged ID is dropped
    assert forger["startTime"] >= grant["endTime"]  # never on a's cores while a holds them
    assert forger["retryCount"] == retries, "the re-plan was counted against the user"
    assert_no_conflicting_holds(list(after.values()))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
            _warnings(rk, namespace, "forger", "BookingUnverified")
            and _warnings(rk, namespace, "stripped", "BookingUnverified")):
        time.sleep(0.3)
    [event] = _warnings(rk, namespace, "forger", "BookingUnverified")
    assert "does not match" in event.message and "not counted as a retry" in event.message
    [event] = _warnings(rk, namespace, "stripped", "BookingUnverified")
    assert "carries no bookingSeal" in event.message
    assert not _warnings(rk, namespace, "honest-a", "BookingUnverified")

    # What the operator wrote after the re-plan is its own again: a further restart restores
    # every booking as it stands.
    fresh_operator.kill()
    fresh_operator.start()
    again = _settled(rk, namespace, ["honest-a", "honest-b", "forger", "stripped"])
    for name in again:
        assert _held(again[name]) == _held(after[name]), f"{name} changed over a clean restart"
    assert len(_warnings(rk, namespace, "forger", "BookingUnverified")) == 1
