"""status.bookingSeal (issue 11): a restore re-registers only what the operator sealed.

Pure life cycle on the real engine (respool.controller.lifecycle, booking_seal) and the key's
store (seal_key) against a small fake of the two Lease calls it makes; the real API server
path is tests/e2e/test_booking_seal.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from respool.controller.booking_seal import BookingSeal
from respool.controller.kubeapi import ApiError
from respool.controller.lifecycle import PoolContext, Reservation, decide, restore
from respool.controller.seal_key import KEY_ANNOTATION, SealKeyError, load_booking_seal
from respool.pool import Planner

T0 = 1_900_000_000.0
R = {"version": 1, "execution": {"R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}],
                                  "nodelist": ["node[0-1]"]}}
POOL_UID = "11111111-2222-3333-4444-555555555555"
KEY = bytes(range(32))


def seal(trust_unsealed: bool = False) -> BookingSeal:
    return BookingSeal(KEY, trust_unsealed=trust_unsealed)


def context(with_seal: BookingSeal | None = None) -> PoolContext:
    return PoolContext(name="rack", uid=POOL_UID, seal=with_seal or seal())


def rsv(n: int, status: dict[str, Any] | None = None, **spec: Any) -> Reservation:
    full = {"pool": "rack", "request": {"slots": 1, "coresPerSlot": 4}, "duration": "1h", **spec}
    return Reservation(uid=f"{n:08d}-aaaa-bbbb-cccc-dddddddddddd", namespace="team",
                       name=f"r{n}", generation=1, spec=full, status=status or {})


def commit(r: Reservation, ctx: PoolContext, p: Planner, now: float) -> Any:
    outcome = decide(r, ctx, p, now)
    r.status = {k: v for k, v in outcome.status.items() if v is not None}
    return outcome


def as_stored(status: dict[str, Any]) -> dict[str, Any]:
    """The status as the API server hands it back: a float without a fraction comes back an
    integer (Go decodes `1900000000.0` as a number and encodes it `1900000000`)."""
    text = json.dumps(status)

    def ints(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, dict):
            return {k: ints(v) for k, v in value.items()}
        if isinstance(value, list):
            return [ints(v) for v in value]
        return value

    stored: dict[str, Any] = ints(json.loads(text))
    return stored


def restarted(r: Reservation, status: dict[str, Any] | None = None) -> Reservation:
    """The record a restarted operator lists for `r` (status as stored)."""
    return Reservation(uid=r.uid, namespace=r.namespace, name=r.name, generation=r.generation,
                       spec=r.spec, status=as_stored(status if status is not None else r.status))


def holding_pair() -> tuple[Planner, PoolContext, Reservation, Reservation]:
    """Two Active holders of 4 cores each: the pool (8 cores) is full."""
    p, ctx = Planner(R), context()
    a, b = rsv(1), rsv(2)
    for r in (a, b):
        assert commit(r, ctx, p, T0).granted
        assert r.status["bookingSeal"].startswith("v1.")
    return p, ctx, a, b


def test_every_holding_status_is_sealed_and_restores_after_a_restart() -> None:
    p, ctx, a, b = holding_pair()
    later = rsv(3, startTime="2035-01-01T00:00:00Z", nextAvailable=True)
    commit(later, ctx, p, T0)
    assert later.status["phase"] == "Scheduled" and later.status["bookingSeal"]
    fresh = Planner(R)
    for r in (a, b, later):
        record = restarted(r)
        assert restore(record, fresh, seal(), POOL_UID) is None
        assert record.unverified is None
    assert fresh.get(a.uid) is not None and fresh.get(later.uid) is not None


def test_a_status_that_stops_holding_drops_its_seal() -> None:
    p, ctx, a, _ = holding_pair()
    commit(a, ctx, p, T0 + 3600)
    assert a.status["phase"] == "Expired" and "bookingSeal" not in a.status


def test_an_extended_grant_still_checks_out() -> None:
    """The R in status keeps the expiration it was granted with; the seal covers the window
    as start and end, so a grant whose end moved later restores."""
    p, ctx = Planner(R), context()
    a = rsv(1)
    commit(a, ctx, p, T0)
    a.spec = {**a.spec, "duration": "2h"}
    a.generation = 2
    commit(a, ctx, p, T0 + 10)
    assert a.status["endTime"] != a.status["startTime"]
    record = restarted(a)
    assert restore(record, Planner(R), seal(), POOL_UID) is None


@pytest.mark.parametrize("forge", [
    pytest.param(lambda s, other: {**other, "conditions": s.get("conditions")},
                 id="another holder's status copied"),
    pytest.param(lambda s, other: {**s, "endTime": "2031-01-01T00:00:00Z"}, id="end moved"),
    pytest.param(lambda s, other: {**s, "allocated": {**s["allocated"], "R": R}},
                 id="R widened to the whole pool"),
    pytest.param(lambda s, other: {**s, "allocated": {**s["allocated"], "mode": "shared"}},
                 id="mode changed"),
    pytest.param(lambda s, other: {**s, "reservationId": "rack-forged-1"}, id="ID changed"),
    pytest.param(lambda s, other: {k: v for k, v in s.items() if k != "bookingSeal"},
                 id="seal removed"),
    pytest.param(lambda s, other: {**s, "bookingSeal": "v1." + "A" * 43}, id="seal made up"),
])
def test_a_forged_booking_is_not_restored_and_honest_holders_keep_theirs(forge: Any) -> None:
    _, _, a, b = holding_pair()
    victim = restarted(a)
    forged = restarted(b, forge(b.status, a.status))
    fresh = Planner(R)
    # The forgery is listed first: with nothing checked it would take the victim's cores.
    error = restore(forged, fresh, seal(), POOL_UID)
    assert error is not None and forged.unverified and fresh.get(forged.uid) is None
    assert restore(victim, fresh, seal(), POOL_UID) is None
    assert fresh.get(victim.uid) is not None


def test_a_forged_grant_is_replanned_with_a_warning_and_costs_no_retry() -> None:
    p, ctx, a, b = holding_pair()
    # An admin copies a's grant into c's status: c claims a's cores, sealed for a.
    c = rsv(3, nextAvailable=True)
    commit(c, ctx, p, T0)
    assert c.status["phase"] == "Scheduled"
    retries = c.status["retryCount"]
    forged_status = {**a.status, "firstRequestTime": c.status["firstRequestTime"],
                     "retryCount": retries}
    fresh, ctx = Planner(R), context()
    records = [restarted(c, forged_status), restarted(a), restarted(b)]
    for record in records:
        restore(record, fresh, seal(), POOL_UID)
    forged, victim, _ = records
    assert fresh.get(victim.uid) is not None and fresh.get(forged.uid) is None
    outcome = commit(forged, ctx, fresh, T0 + 5)
    warnings = [e for e in outcome.events if e.reason == "BookingUnverified"]
    assert len(warnings) == 1 and warnings[0].type == "Warning"
    assert "does not match" in warnings[0].message and "not counted" in warnings[0].message
    # Planned anew: the pool is full until a and b end, so its window starts then.
    assert forged.status["phase"] == "Scheduled"
    assert forged.status["retryCount"] == retries
    assert forged.status.get("reservationId") != a.status["reservationId"]
    assert forged.unverified is None  # the committed status is the operator's own
    held = fresh.get(forged.uid)
    assert held is not None and held.start >= T0 + 3600  # never on a's cores while a holds
    assert forged.status["bookingSeal"]
    assert restore(restarted(forged), Planner(R), seal(), POOL_UID) is None


def test_a_forged_status_on_a_reservation_that_fits_is_granted_afresh() -> None:
    p, ctx = Planner(R), context()
    a = rsv(1)
    commit(a, ctx, p, T0)
    b = rsv(2, startTime="2035-01-01T00:00:00Z")
    commit(b, ctx, p, T0)
    forged = restarted(b, {**b.status, "phase": "Active", "reservationId": "rack-x-1",
                           "preReservationId": None})
    fresh = Planner(R)
    assert restore(forged, fresh, seal(), POOL_UID) is not None
    outcome = commit(forged, context(), fresh, T0 + 1)
    assert "BookingUnverified" in [e.reason for e in outcome.events]
    assert forged.status["phase"] == "Scheduled"  # its own window again, planned afresh
    assert forged.status["startTime"] == "2035-01-01T00:00:00Z"


def test_a_seal_is_bound_to_the_pool() -> None:
    """A spec.pool edited while the operator was away: the booking was made on another pool."""
    _, _, a, _ = holding_pair()
    assert restore(restarted(a), Planner(R), seal(), "another-pool-uid") is not None


def test_upgrade_an_unsealed_status_is_trusted_only_by_the_start_that_made_the_key() -> None:
    p, ctx = Planner(R), PoolContext(name="rack", uid=POOL_UID)  # an operator without seals
    a = rsv(1)
    commit(a, ctx, p, T0)
    assert "bookingSeal" not in a.status
    # The key exists already: an unsealed status is not restored.
    refused = restarted(a)
    assert restore(refused, Planner(R), seal(), POOL_UID) is not None
    # The start that made the key restores it as before, and its next decision seals it.
    fresh, first = Planner(R), seal(trust_unsealed=True)
    record = restarted(a)
    assert restore(record, fresh, first, POOL_UID) is None
    outcome = commit(record, context(first), fresh, T0 + 1)
    assert not outcome.events and record.status["bookingSeal"]
    # Every later start checks it.
    assert restore(restarted(record), Planner(R), seal(), POOL_UID) is None


def test_an_unchecked_status_collides_as_before_on_the_upgrade_start() -> None:
    """With a new key nothing can be checked: what collides is refused as it always was."""
    p, ctx = Planner(R), PoolContext(name="rack", uid=POOL_UID)
    a, b = rsv(1), rsv(2)
    commit(a, ctx, p, T0)
    commit(b, ctx, p, T0)
    fresh, first = Planner(R), seal(trust_unsealed=True)
    assert restore(restarted(a), fresh, first, POOL_UID) is None
    clash = restarted(b, {**b.status, "allocated": a.status["allocated"]})
    assert restore(clash, fresh, first, POOL_UID) is not None
    assert clash.unverified is None  # a conflict, not a seal: the existing path re-plans it


def test_no_planner_vouches_for_nothing() -> None:
    """A holding status decided while the pool is unusable is left as committed: never
    sealed by a process that has not restored it."""
    _, _, a, _ = holding_pair()
    unsealed = {k: v for k, v in a.status.items() if k != "bookingSeal"}
    record = restarted(a, unsealed)
    ctx = PoolContext(name="rack", uid=POOL_UID, ready=False, problem="broken", seal=seal())
    outcome = decide(record, ctx, None, T0 + 1)
    assert "bookingSeal" not in outcome.status or outcome.status["bookingSeal"] is None


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        BookingSeal(b"short")
    assert "key" not in repr(seal()).lower().replace("trust_unsealed", "")


# -- where the key lives ---------------------------------------------------------------------


class FakeLeases:
    """The two calls seal_key makes, on a dict of Leases (the real server: tests/e2e)."""

    def __init__(self, leases: dict[str, dict[str, Any]] | None = None,
                 race: dict[str, Any] | None = None) -> None:
        self.leases = dict(leases or {})
        self.race = race  # a Lease another replica creates just before our create
        self.created: list[str] = []

    async def get(self, path: str) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        if name not in self.leases:
            raise ApiError(404, "not found", "NotFound")
        return self.leases[name]

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        if self.race is not None:
            self.leases[name] = self.race
        if name in self.leases:
            raise ApiError(409, "already exists", "AlreadyExists")
        self.leases[name] = body
        self.created.append(name)
        return body


def lease(key: bytes) -> dict[str, Any]:
    return {"metadata": {"annotations": {KEY_ANNOTATION: base64.b64encode(key).decode()}}}


def test_the_first_start_makes_the_key_and_trusts_once() -> None:
    api = FakeLeases()
    first = asyncio.run(load_booking_seal(api, "ops"))
    assert api.created == ["respool-booking-seal"] and first.trust_unsealed
    again = asyncio.run(load_booking_seal(api, "ops"))
    assert not again.trust_unsealed
    sealed = first.seal("u", "p", "Active", "id", R, 1.0, 2.0, "exclusive")
    assert again.check(sealed, "u", "p", "Active", "id", R, 1.0, 2.0, "exclusive") is None


def test_a_key_another_replica_made_first_is_used_and_trusts_nothing() -> None:
    api = FakeLeases(race=lease(KEY))
    loaded = asyncio.run(load_booking_seal(api, "ops"))
    assert not loaded.trust_unsealed
    assert loaded.seal("u", "p", "Active", "i", R, 1, 2, "shared") == seal().seal(
        "u", "p", "Active", "i", R, 1, 2, "shared")


def test_an_unusable_key_stops_the_start_with_what_to_do() -> None:
    api = FakeLeases({"respool-booking-seal": lease(b"too short")})
    with pytest.raises(SealKeyError, match="Delete the Lease"):
        asyncio.run(load_booking_seal(api, "ops"))


def test_an_api_server_that_is_away_is_waited_for_and_a_lost_create_is_still_ours() -> None:
    """An operator started during a control-plane upgrade waits for the API server (it gave
    up at once, and the e2e restart test's operator never started). A create that landed
    but whose answer was lost is found on the next attempt and still known as our new key."""
    class Away(FakeLeases):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[str] = []

        async def get(self, path: str) -> dict[str, Any]:
            self.calls.append("get")
            if len(self.calls) <= 2:
                raise ApiError(0, "connection refused")
            return await super().get(path)

        async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
            self.calls.append("post")
            await super().post(path, body)
            raise ApiError(503, "the answer was lost")

    api = Away()
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    loaded = asyncio.run(load_booking_seal(api, "ops", sleep=sleep))
    assert api.calls == ["get", "get", "get", "post", "get"]
    assert len(pauses) == 3 and pauses[1] > pauses[0]
    assert loaded.trust_unsealed, "our own create, found after its answer was lost"


def test_a_refused_read_stops_the_start() -> None:
    class Forbidden(FakeLeases):
        async def get(self, path: str) -> dict[str, Any]:
            raise ApiError(403, "leases is forbidden", "Forbidden")

    with pytest.raises(SealKeyError, match="cannot read"):
        asyncio.run(load_booking_seal(Forbidden(), "ops"))
