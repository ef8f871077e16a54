"""The reservation life cycle (respool.controller.lifecycle) on the real engine, no Kubernetes."""

from __future__ import annotations

from typing import Any

import pytest

from respool.api import format_time, parse_time
from respool.controller.lifecycle import (
    NAMESPACE_RETRY,
    Policy,
    PoolContext,
    Reservation,
    decide,
    mint_id,
    restore,
)
from respool.controller.selectors import NamespaceLabelsUnknown
from respool.pool import Planner, jobspec_from_shorthand

T0 = 1_900_000_000.0  # a fixed "now"
R = {
    "version": 1,
    "execution": {
        "R_lite": [{"rank": "0-1", "children": {"core": "0-3", "gpu": "0"}}],
        "nodelist": ["node[0-1]"],
    },
}


def planner() -> Planner:
    return Planner(R)


def pool(**kwargs: Any) -> PoolContext:
    return PoolContext(name="rack", **kwargs)


_counter = 0


def rsv(spec: dict[str, Any] | None = None, **status: Any) -> Reservation:
    global _counter
    _counter += 1
    full = {"pool": "rack", "request": {"slots": 1, "coresPerSlot": 4}, "duration": "1h"}
    full.update(spec or {})
    return Reservation(uid=f"0000000{_counter}-aaaa-bbbb-cccc-dddddddddddd", namespace="team",
                       name=f"r{_counter}", generation=1, spec=full, status=dict(status))


def apply(r: Reservation, ctx: PoolContext, p: Planner | None, now: float) -> Any:
    outcome = decide(r, ctx, p, now)
    r.status = {k: v for k, v in outcome.status.items() if v is not None}
    return outcome


def condition(r: Reservation, type_: str) -> dict[str, Any]:
    for c in r.status.get("conditions", []):
        if c["type"] == type_:
            return c
    raise AssertionError(f"no {type_} condition in {r.status}")


def reasons(outcome: Any) -> list[str]:
    return [e.reason for e in outcome.events]


def test_fits_now_is_active_with_allocation_and_ready() -> None:
    p, ctx, r = planner(), pool(), rsv()
    outcome = apply(r, ctx, p, T0)
    st = r.status
    assert st["phase"] == "Active"
    assert st["reservationId"].startswith("rack-") and st["reservationId"].endswith("-1")
    assert "preReservationId" not in st
    assert st["startTime"] == format_time(T0) and st["endTime"] == format_time(T0 + 3600)
    assert st["allocated"]["summary"] == "rank0/core[0-3]"
    assert st["allocated"]["ranks"] == "0" and st["allocated"]["nodelist"] == "node0"
    assert condition(r, "Ready")["status"] == "True"
    assert condition(r, "Stalled")["status"] == "False"
    assert condition(r, "Reconciling")["status"] == "False"
    assert st["observedGeneration"] == 1
    assert reasons(outcome) == ["Granted"] and outcome.granted
    assert outcome.wake_at == T0 + 3600
    assert p.get(r.uid) is not None
    # Deciding again changes nothing and grants nothing twice.
    again = apply(r, ctx, p, T0 + 1)
    assert again.events == [] and r.status["reservationId"] == st["reservationId"]
    assert len(p.bookings()) == 1


def test_expires_at_end_time_and_returns_resources() -> None:
    p, ctx, r = planner(), pool(), rsv()
    apply(r, ctx, p, T0)
    outcome = apply(r, ctx, p, T0 + 3600)
    assert r.status["phase"] == "Expired"
    assert "allocated" not in r.status
    assert condition(r, "Ready")["status"] == "False"
    assert reasons(outcome) == ["Expired"]
    assert p.bookings() == []


def test_exclusive_blocks_and_shared_overlaps() -> None:
    p, ctx = planner(), pool()
    whole = {"request": {"nodes": 2, "slots": 1, "coresPerSlot": 4}, "nextAvailable": False}
    a = rsv({**whole, "mode": "shared"})
    b = rsv({**whole, "mode": "shared"})
    c = rsv({**whole, "mode": "exclusive"})
    apply(a, ctx, p, T0)
    apply(b, ctx, p, T0)
    apply(c, ctx, p, T0)
    assert a.status["phase"] == "Active" and b.status["phase"] == "Active"
    assert c.status["phase"] == "Pending"
    assert condition(c, "Reconciling")["reason"] == "WaitingForCapacity"
    assert c.status["retryCount"] == 1
    assert c.status["nextAvailable"]["available"] is False
    assert c.status["nextAvailable"]["availStart"] == format_time(T0 + 3600)


def test_fits_later_is_scheduled_then_claimed_at_start() -> None:
    p, ctx = planner(), pool()
    blocker = rsv({"request": {"nodes": 2, "coresPerSlot": 4}})
    apply(blocker, ctx, p, T0)
    later = rsv({"request": {"nodes": 1, "coresPerSlot": 4}, "duration": "30m"})
    outcome = apply(later, ctx, p, T0 + 10)
    st = later.status
    assert st["phase"] == "Scheduled"
    assert st["preReservationId"].endswith("-1") and "reservationId" not in st
    assert st["startTime"] == format_time(T0 + 3600)
    assert st["endTime"] == format_time(T0 + 3600 + 1800)  # the length is kept when moved
    assert st["preReservationExpires"] == format_time(T0 + 3600 + 300)
    assert st["nextAvailable"] == {"available": False, "availStart": format_time(T0 + 3600),
                                   "availEnd": format_time(T0 + 5400)}
    assert condition(later, "Scheduled")["status"] == "True"
    assert condition(later, "Ready")["status"] == "False"
    assert condition(later, "Reconciling")["reason"] == "WaitingForStart"
    assert st["allocated"]["summary"]
    assert outcome.wake_at == T0 + 3600
    apply(blocker, ctx, p, T0 + 3600)
    outcome = apply(later, ctx, p, T0 + 3600)
    assert later.status["phase"] == "Active"
    assert later.status["reservationId"].endswith("-2")
    assert "preReservationId" not in later.status
    assert reasons(outcome) == ["Granted"]


def test_manual_claim_waits_even_when_window_starts_now() -> None:
    p, ctx = planner(), pool(policy=Policy(claim_timeout=60))
    r = rsv({"claimPolicy": "Manual", "config": {"k": "v"}})
    outcome = apply(r, ctx, p, T0)
    assert r.status["phase"] == "Scheduled"
    assert condition(r, "Reconciling")["reason"] == "WaitingForClaim"
    assert outcome.wake_at == T0 + 60
    r.spec = {**r.spec, "claimed": True}
    r.generation = 2
    outcome = apply(r, ctx, p, T0 + 5)
    assert r.status["phase"] == "Active"
    assert r.status["config"] == {"k": "v"}
    assert r.status["startTime"] == format_time(T0)


def test_manual_late_claim_replans_and_counts_a_retry() -> None:
    p, ctx = planner(), pool(policy=Policy(claim_timeout=60))
    r = rsv({"claimPolicy": "Manual"})
    apply(r, ctx, p, T0)
    first_id = r.status["preReservationId"]
    outcome = apply(r, ctx, p, T0 + 61)
    assert "ClaimExpired" in reasons(outcome)
    assert r.status["phase"] == "Scheduled"
    assert r.status["retryCount"] == 1
    assert r.status["preReservationId"] != first_id
    assert r.status["startTime"] == format_time(T0 + 61)


def test_manual_late_claims_end_in_retry_exceeded() -> None:
    p, ctx = planner(), pool(policy=Policy(claim_timeout=10))
    r = rsv({"claimPolicy": "Manual", "maxRetry": 1})
    apply(r, ctx, p, T0)
    apply(r, ctx, p, T0 + 11)
    assert r.status["phase"] == "Scheduled"
    apply(r, ctx, p, T0 + 22)
    assert r.status["phase"] == "Failed"
    assert condition(r, "Stalled")["reason"] == "RetryExceeded"
    assert p.bookings() == []


def test_a_manual_hold_stops_re_holding_after_max_unclaimed_hold() -> None:
    # Issue 11, item 13: with maxRetry 1000 a Manual hold never claimed kept re-holding for
    # days; policy.maxUnclaimedHold bounds it whatever maxRetry says.
    p = planner()
    ctx = pool(policy=Policy(claim_timeout=600, max_unclaimed_hold=1800))
    r = rsv({"claimPolicy": "Manual", "maxRetry": 1000})
    apply(r, ctx, p, T0)
    now = T0
    for missed in range(1, 3):  # 10 and 20 minutes of windows held for nobody
        now += 601
        apply(r, ctx, p, now)
        assert r.status["phase"] == "Scheduled", r.status["message"]
        assert r.status["unclaimedSince"] == format_time(T0)
        assert r.status["retryCount"] == missed
    now += 601  # past 30 minutes
    outcome = apply(r, ctx, p, now)
    assert r.status["phase"] == "Failed"
    assert condition(r, "Stalled")["reason"] == "ClaimExpired"
    assert "maxUnclaimedHold" in r.status["message"] and "unclaimedSince" not in r.status
    assert p.bookings() == [] and "ClaimExpired" in reasons(outcome)


def test_a_claim_clears_the_unclaimed_clock() -> None:
    p, ctx = planner(), pool(policy=Policy(claim_timeout=600, max_unclaimed_hold=1800))
    r = rsv({"claimPolicy": "Manual"})
    apply(r, ctx, p, T0)
    apply(r, ctx, p, T0 + 601)
    assert r.status["unclaimedSince"] == format_time(T0)
    r.spec = {**r.spec, "claimed": True}
    apply(r, ctx, p, T0 + 602)
    assert r.status["phase"] == "Active" and "unclaimedSince" not in r.status


def capacity_changes(p: Planner, blocker: Reservation) -> None:
    """Capacity the waiting reservation could use changes: the holder blocking it ends a
    minute earlier, so the earliest window that fits it moves."""
    booking = p.get(blocker.uid)
    assert booking is not None and booking.end is not None
    p.extend(blocker.uid, booking.end - 60)


def capacity_churns(p: Planner) -> None:
    """Capacity changes that no waiting reservation could use: the planner's generation moves
    on (a rank flaps; another tenant books and gives back a window far in the future)."""
    p.mark_down("1")
    p.mark_up("1")
    future = p.parse(jobspec_from_shorthand(slots=1))  # the smallest request, far ahead
    p.reserve("churn", future, T0 + 10 * 86400, T0 + 11 * 86400, "exclusive")
    p.release("churn")


def test_retry_exceeded_after_max_retry_failed_attempts() -> None:
    p, ctx = planner(), pool()
    blocker = rsv({"request": {"nodes": 2, "coresPerSlot": 4}})
    apply(blocker, ctx, p, T0)
    r = rsv({"nextAvailable": False, "maxRetry": 2})
    for attempt in (1, 2):
        apply(r, ctx, p, T0 + attempt)
        assert r.status["phase"] == "Pending" and r.status["retryCount"] == attempt
        capacity_changes(p, blocker)
    outcome = apply(r, ctx, p, T0 + 3)
    assert r.status["phase"] == "Failed"
    assert condition(r, "Stalled")["reason"] == "RetryExceeded"
    assert [e.type for e in outcome.events] == ["Warning"]


def test_only_an_attempt_that_could_have_another_answer_counts_a_retry() -> None:
    p, ctx = planner(), pool()
    blocker = rsv({"request": {"nodes": 2, "coresPerSlot": 4}})
    apply(blocker, ctx, p, T0)
    r = rsv({"nextAvailable": False, "maxRetry": 2})
    apply(r, ctx, p, T0)
    assert r.status["retryCount"] == 1  # the first attempt counts
    # Asked again with nothing changed (a pool policy or label edit, a config edit of the
    # reservation): the same answer, not a retry - else edits alone would reach maxRetry.
    for later in range(1, 6):
        apply(r, ctx, p, T0 + later)
        assert r.status["phase"] == "Pending" and r.status["retryCount"] == 1
    # Capacity it could not use changed (a rank flapped, another tenant booked and released a
    # window far ahead): the same answer again, not a retry.
    for later in range(6, 12):
        capacity_churns(p)
        apply(r, ctx, p, T0 + later)
        assert r.status["phase"] == "Pending" and r.status["retryCount"] == 1
    # After an operator restart the reservation is rebuilt from its status: not a retry either.
    restored = Reservation(uid=r.uid, namespace=r.namespace, name=r.name, generation=1,
                           spec=r.spec, status=r.status)
    apply(restored, ctx, p, T0 + 10)
    assert restored.status["phase"] == "Pending" and restored.status["retryCount"] == 1
    # What was asked changed (the window): a new attempt, counted.
    restored.spec = {**restored.spec, "duration": "2h"}
    apply(restored, ctx, p, T0 + 11)
    assert restored.status["retryCount"] == 2
    # Capacity it could use changed: counted, and past maxRetry it fails.
    capacity_changes(p, blocker)
    apply(restored, ctx, p, T0 + 12)
    assert restored.status["phase"] == "Failed"
    assert condition(restored, "Stalled")["reason"] == "RetryExceeded"


def test_max_wait_exceeded() -> None:
    p, ctx = planner(), pool()
    apply(rsv({"request": {"nodes": 2, "coresPerSlot": 4}}), ctx, p, T0)
    r = rsv({"maxWait": "10m", "maxRetry": 100})  # nextAvailable: true, but 1h away
    outcome = apply(r, ctx, p, T0)
    assert r.status["phase"] == "Pending"
    assert outcome.wake_at == T0 + 600
    apply(r, ctx, p, T0 + 600)
    assert r.status["phase"] == "Failed"
    assert condition(r, "Stalled")["reason"] == "MaxWaitExceeded"


def test_infeasible_fails() -> None:
    p, ctx, r = planner(), pool(), rsv({"request": {"slots": 1, "coresPerSlot": 64}})
    outcome = apply(r, ctx, p, T0)
    assert r.status["phase"] == "Failed"
    assert condition(r, "Stalled")["reason"] == "Infeasible"
    assert condition(r, "Stalled")["status"] == "True"
    assert r.status["message"]
    assert reasons(outcome) == ["Infeasible"]


def test_pool_not_found_waits_stalled_then_proceeds() -> None:
    r = rsv()
    apply(r, pool(exists=False, ready=False), None, T0)
    assert r.status["phase"] == "Pending"
    assert condition(r, "Stalled")["reason"] == "PoolNotFound"
    p = planner()
    apply(r, pool(), p, T0 + 5)
    assert r.status["phase"] == "Active"


def _seen_by_tenant(r: Reservation, outcome: Any) -> Any:
    status = {k: v for k, v in r.status.items() if k != "conditions"}
    conditions = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                  for c in r.status["conditions"]]
    events = [(e.type, e.reason, e.message) for e in outcome.events]
    return status, conditions, events, outcome.wake_at


@pytest.mark.parametrize("spec", [{}, {"maxWait": "10m"}, {"startTime": "2031-01-01T00:00:00Z"}])
def test_a_namespace_the_pool_does_not_admit_learns_nothing_about_it(
        spec: dict[str, Any]) -> None:
    # It gets exactly what a reservation naming a missing pool gets (a private repository
    # answers 404, not 403), and waits: the namespace may be relabelled.
    not_admitted, missing = rsv(spec), rsv(spec)
    missing.uid, missing.name = not_admitted.uid, not_admitted.name
    seen = _seen_by_tenant(not_admitted, apply(
        not_admitted, pool(namespace_allowed=lambda ns: ns == "other"), planner(), T0))
    assert seen == _seen_by_tenant(missing, apply(missing, pool(exists=False), None, T0))
    assert not_admitted.status["phase"] == "Pending"
    assert condition(not_admitted, "Stalled")["reason"] == "PoolNotFound"
    assert "does not admit" in not_admitted.status["message"]
    # Admitted later (relabelled): it proceeds.
    apply(not_admitted, pool(), planner(), T0 + 5)
    assert not_admitted.status["phase"] in ("Active", "Scheduled")


def test_max_wait_ends_a_namespace_that_is_not_admitted_like_a_missing_pool() -> None:
    r = rsv({"maxWait": "10m"})
    ctx = pool(namespace_allowed=lambda ns: False)
    assert apply(r, ctx, planner(), T0).wake_at == T0 + 600
    apply(r, ctx, planner(), T0 + 600)
    assert r.status["phase"] == "Failed"
    assert condition(r, "Stalled")["reason"] == "MaxWaitExceeded"


def test_a_costly_spec_is_not_parsed_for_a_namespace_the_pool_does_not_admit() -> None:
    # The cheap checks come first: a spec that would fail parsing (here: over the constraint
    # budget) gets the not-admitted answer, never the parse.
    hostile = {"constraints": {"and": [{"hostlist": ["n0[0-262143]"] * 8}] * 8}}
    r = rsv(hostile)
    apply(r, pool(namespace_allowed=lambda ns: False), planner(), T0)
    assert condition(r, "Stalled")["reason"] == "PoolNotFound"
    # Admitted, it fails at once as InvalidSpec, naming the budget.
    apply(r, pool(), planner(), T0 + 1)
    assert r.status["phase"] == "Failed"
    assert condition(r, "Stalled")["reason"] == "InvalidSpec"
    assert "4096 host names" in r.status["message"]


def _labels_unknown(_namespace: str) -> bool:
    raise NamespaceLabelsUnknown


def test_unknown_namespace_labels_wait_and_retry_never_admit() -> None:
    r = rsv()
    outcome = apply(r, pool(namespace_allowed=_labels_unknown), planner(), T0)
    assert r.status["phase"] == "Pending"
    assert condition(r, "Stalled")["reason"] == "PoolNotFound"
    assert outcome.wake_at == T0 + NAMESPACE_RETRY
    # The labels arrive and admit it.
    apply(r, pool(), planner(), T0 + 1)
    assert r.status["phase"] == "Active"


def test_unknown_namespace_labels_keep_a_scheduled_window_and_decide_nothing() -> None:
    p, ctx = planner(), pool()
    r = rsv({"startTime": format_time(T0 + 7200)})
    apply(r, ctx, p, T0)
    assert r.status["phase"] == "Scheduled"
    held = r.status_text
    r.generation = 2  # an edit not yet judged: it must still be seen as one afterwards
    outcome = decide(r, pool(namespace_allowed=_labels_unknown), p, T0 + 1)
    assert outcome.status == r.status and r.status_text == held
    assert outcome.events == [] and outcome.wake_at == T0 + 1 + NAMESPACE_RETRY
    assert p.get(r.uid) is not None


def test_a_scheduled_window_lost_to_an_admin_action_costs_no_retry() -> None:
    # The admin removed the ranks of the window held (the new planner has no booking for it):
    # it is planned anew without counting against the user.
    p, ctx = planner(), pool()
    r = rsv({"startTime": format_time(T0 + 7200), "maxRetry": 0})
    apply(r, ctx, p, T0)
    assert r.status["phase"] == "Scheduled" and r.status["retryCount"] == 0
    rebuilt = planner()
    rebuilt.mark_down("0-1")  # nothing fits any more: the new attempt fails
    apply(r, ctx, rebuilt, T0 + 1)
    assert r.status["phase"] == "Pending" and r.status["retryCount"] == 0


@pytest.mark.parametrize(
    "spec",
    [
        {"mode": "sometimes"},
        {"request": {"slots": 0}},
        {"duration": "forever"},
        {"request": {"slots": 1}, "resources": [{"type": "core", "count": 1}]},
    ],
)
def test_bad_input_fails_with_invalid_spec(spec: dict[str, Any]) -> None:
    r = rsv(spec)
    outcome = apply(r, pool(), planner(), T0)
    assert r.status["phase"] == "Failed"
    assert condition(r, "Stalled")["reason"] == "InvalidSpec"
    assert r.status["message"].startswith("invalid spec")
    assert [e.type for e in outcome.events] == ["Warning"]


def test_policy_max_duration() -> None:
    r = rsv({"duration": "3h"})
    apply(r, pool(policy=Policy(max_duration=7200)), planner(), T0)
    assert r.status["phase"] == "Failed"
    assert "maxDuration" in r.status["message"]


def test_default_duration_from_policy() -> None:
    r = rsv()
    spec = r.spec
    del spec["duration"]
    r.spec = spec
    apply(r, pool(policy=Policy(default_duration=600)), planner(), T0)
    assert r.status["endTime"] == format_time(T0 + 600)


def test_pool_expiration_refuses_windows_past_it() -> None:
    p = planner()
    p.set_expiration(T0 + 1800)
    r = rsv()
    apply(r, pool(), p, T0)
    assert r.status["phase"] == "Failed"
    assert condition(r, "Stalled")["reason"] == "PoolExpired"


def test_extension_allowed_and_denied() -> None:
    p, ctx = planner(), pool()
    r = rsv({"request": {"nodes": 1, "coresPerSlot": 4}})
    apply(r, ctx, p, T0)
    r.spec = {**r.spec, "duration": "2h"}
    r.generation = 2
    outcome = apply(r, ctx, p, T0 + 10)
    assert r.status["endTime"] == format_time(T0 + 7200)
    assert condition(r, "Extended")["status"] == "True"
    assert "Extended" in reasons(outcome)
    # Someone books the other node from 2h on; the first one cannot grow into its own node's
    # later window only if that node is taken: book both nodes from 2h.
    later = rsv({"request": {"nodes": 2, "coresPerSlot": 4}, "startTime": format_time(T0 + 7200)})
    apply(later, ctx, p, T0 + 20)
    assert later.status["phase"] == "Scheduled"
    r.spec = {**r.spec, "duration": "3h"}
    r.generation = 3
    outcome = apply(r, ctx, p, T0 + 30)
    assert r.status["phase"] == "Active"
    assert r.status["endTime"] == format_time(T0 + 7200)
    assert condition(r, "Extended")["status"] == "False"
    assert condition(r, "Extended")["reason"] == "ExtensionDenied"


def test_scheduled_moves_earlier_when_capacity_frees() -> None:
    p, ctx = planner(), pool()
    blocker = rsv({"request": {"nodes": 2, "coresPerSlot": 4}})
    apply(blocker, ctx, p, T0)
    waiting = rsv({"request": {"nodes": 1, "coresPerSlot": 4}})
    apply(waiting, ctx, p, T0)
    assert waiting.status["phase"] == "Scheduled"
    p.release(blocker.uid)  # as a deletion would
    outcome = apply(waiting, ctx, p, T0 + 100)
    assert "Moved" in reasons(outcome)
    assert waiting.status["phase"] == "Active"
    assert waiting.status["startTime"] == format_time(T0 + 100)


def test_down_rank_degrades_active_and_replans_scheduled() -> None:
    p, ctx = planner(), pool()
    active = rsv({"request": {"nodes": 1, "coresPerSlot": 4}})
    apply(active, ctx, p, T0)
    rank = active.status["allocated"]["ranks"]
    p.mark_down(rank)
    outcome = apply(active, ctx, p, T0 + 1)
    assert condition(active, "ResourcesDegraded")["status"] == "True"
    assert condition(active, "ResourcesDegraded")["message"] == (
        f"rank {rank} of this reservation is down"
    )
    assert "ResourcesDegraded" in reasons(outcome)
    assert active.status["phase"] == "Active"
    p.mark_up(rank)
    apply(active, ctx, p, T0 + 2)
    assert condition(active, "ResourcesDegraded")["status"] == "False"

    future = rsv({"request": {"nodes": 1, "coresPerSlot": 4},
                  "startTime": format_time(T0 + 7200)})
    apply(future, ctx, p, T0)
    held = future.status["allocated"]["ranks"]
    p.mark_down(held)
    apply(future, ctx, p, T0 + 3)
    assert future.status["phase"] == "Scheduled"
    assert future.status["allocated"]["ranks"] != held


def test_removed_ranks_lose_active_holders() -> None:
    p, ctx = planner(), pool()
    r = rsv()
    apply(r, ctx, p, T0)
    smaller = Planner({"version": 1, "execution": {
        "R_lite": [{"rank": "5", "children": {"core": "0-3"}}], "nodelist": ["node5"]}})
    assert restore(r, smaller) is not None  # not part of the pool any more
    apply(r, ctx, smaller, T0 + 1)
    assert r.status["phase"] == "Failed"
    assert condition(r, "Stalled")["reason"] == "ResourcesLost"


def test_restore_round_trip_keeps_the_exact_grant() -> None:
    p, ctx = planner(), pool()
    a, b = rsv(), rsv({"startTime": format_time(T0 + 7200), "request": {"nodes": 2,
                                                                          "coresPerSlot": 4}})
    apply(a, ctx, p, T0 + 0.6)
    apply(b, ctx, p, T0 + 0.6)
    fresh = planner()
    assert restore(a, fresh) is None and restore(b, fresh) is None
    for r in (a, b):
        original, restored = p.get(r.uid), fresh.get(r.uid)
        assert original is not None and restored is not None
        assert (restored.start, restored.end, restored.mode) == (
            original.start, original.end, original.mode)
        assert restored.R.dumps() == original.R.dumps()
        assert parse_time(r.status["startTime"]) == restored.start


def test_ids_are_unique_and_never_reused() -> None:
    uid = "12345678-9abc-def0-1234-56789abcdef0"
    first = mint_id("rack", uid, {})
    second = mint_id("rack", uid, {"preReservationId": first})
    third = mint_id("rack", uid, {"reservationId": second})
    assert len({first, second, third}) == 3
    assert mint_id("rack", "ffffffff-9abc-def0-1234-56789abcdef0", {}) != first


def test_failed_reservation_starts_over_when_its_spec_changes() -> None:
    p, ctx = planner(), pool()
    r = rsv({"request": {"slots": 1, "coresPerSlot": 64}})
    apply(r, ctx, p, T0)
    assert r.status["phase"] == "Failed"
    apply(r, ctx, p, T0 + 1)  # same generation: stays Failed, no new events
    assert r.status["phase"] == "Failed"
    r.spec = {**r.spec, "request": {"slots": 1, "coresPerSlot": 2}}
    r.generation = 2
    apply(r, ctx, p, T0 + 2)
    assert r.status["phase"] == "Active"


def _after_restart(r: Reservation, p: Planner) -> Reservation:
    """The record a restarted operator builds: committed status, no memory of the planning."""
    again = Reservation(uid=r.uid, namespace=r.namespace, name=r.name, generation=r.generation,
                        spec=r.spec, status=r.status)
    assert restore(again, p) is None
    return again


def test_removed_ranks_replan_scheduled_holders_onto_remaining_ranks() -> None:
    p, ctx = planner(), pool()
    future = rsv({"startTime": format_time(T0 + 7200),
                  "request": {"nodes": 1, "coresPerSlot": 4}})
    apply(future, ctx, p, T0)
    assert future.status["phase"] == "Scheduled"
    held = future.status["allocated"]["ranks"]
    kept = "1" if held == "0" else "0"
    smaller = Planner({"version": 1, "execution": {
        "R_lite": [{"rank": kept, "children": {"core": "0-3", "gpu": "0"}}],
        "nodelist": [f"node{kept}"]}})
    assert restore(future, smaller) is not None  # its ranks are not part of the pool any more
    outcome = apply(future, ctx, smaller, T0 + 1)
    assert future.status["phase"] == "Scheduled"
    assert future.status["allocated"]["ranks"] == kept
    assert future.status["startTime"] == format_time(T0 + 7200)
    assert "Replanned" in reasons(outcome)
    booking = smaller.get(future.uid)
    assert booking is not None and booking.R.dumps() == future.status["allocated"]["summary"]


def test_removed_ranks_leave_scheduled_pending_when_nothing_fits() -> None:
    p, ctx = planner(), pool()
    future = rsv({"startTime": format_time(T0 + 7200), "nextAvailable": False,
                  "request": {"nodes": 2, "coresPerSlot": 4}})
    apply(future, ctx, p, T0)
    assert future.status["phase"] == "Scheduled"
    smaller = Planner({"version": 1, "execution": {
        "R_lite": [{"rank": "0", "children": {"core": "0-3", "gpu": "0"}}],
        "nodelist": ["node0"]}})
    assert restore(future, smaller) is not None
    apply(future, ctx, smaller, T0 + 1)
    # Two nodes can never fit a one-node pool: a clear terminal reason, nothing held.
    assert future.status["phase"] == "Failed"
    assert condition(future, "Stalled")["reason"] == "Infeasible"
    assert "allocated" not in future.status and smaller.bookings() == []


def test_scheduled_spec_edited_while_down_is_replanned_after_restart() -> None:
    p, ctx = planner(), pool()
    future = rsv({"startTime": format_time(T0 + 7200)})
    apply(future, ctx, p, T0)
    assert future.status["phase"] == "Scheduled"
    # The operator stops; someone moves the window and makes it longer; it starts again.
    future.spec = {**future.spec, "startTime": format_time(T0 + 3 * 3600), "duration": "2h"}
    future.generation = 2
    fresh = planner()
    record = _after_restart(future, fresh)
    outcome = apply(record, ctx, fresh, T0 + 10)
    st = record.status
    assert st["phase"] == "Scheduled" and st["observedGeneration"] == 2
    assert st["startTime"] == format_time(T0 + 3 * 3600)
    assert st["endTime"] == format_time(T0 + 5 * 3600)
    booking = fresh.get(record.uid)
    assert booking is not None and (booking.start, booking.end) == (T0 + 3 * 3600,
                                                                     T0 + 5 * 3600)
    assert "Replanned" in reasons(outcome)
    assert len(fresh.bookings()) == 1


def test_scheduled_unchanged_spec_is_trusted_after_restart() -> None:
    p, ctx = planner(), pool()
    future = rsv({"startTime": format_time(T0 + 7200)})
    apply(future, ctx, p, T0)
    pre_id = future.status["preReservationId"]
    fresh = planner()
    record = _after_restart(future, fresh)
    outcome = apply(record, ctx, fresh, T0 + 10)
    assert outcome.events == [] and record.status["preReservationId"] == pre_id


def test_lowered_pool_expiration_cuts_active_windows_and_replans_scheduled() -> None:
    p, ctx = planner(), pool()
    active = rsv({"duration": "2h"})
    future = rsv({"startTime": format_time(T0 + 7200), "request": {"nodes": 2,
                                                                   "coresPerSlot": 4}})
    apply(active, ctx, p, T0)
    apply(future, ctx, p, T0)
    assert active.status["phase"] == "Active" and future.status["phase"] == "Scheduled"
    p.set_expiration(T0 + 3600)
    outcome = apply(active, ctx, p, T0 + 5)
    st = active.status
    assert st["phase"] == "Active" and st["endTime"] == format_time(T0 + 3600)
    assert condition(active, "Shortened")["reason"] == "PoolExpired"
    assert condition(active, "Ready")["status"] == "True"
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "PoolExpired")]
    assert outcome.wake_at == T0 + 3600
    booking = p.get(active.uid)
    assert booking is not None and booking.end == T0 + 3600
    # Deciding again changes nothing (no second Event).
    assert apply(active, ctx, p, T0 + 6).events == []
    outcome = apply(future, ctx, p, T0 + 5)
    assert future.status["phase"] == "Failed"
    assert condition(future, "Stalled")["reason"] == "PoolExpired"
    assert p.get(future.uid) is None
    apply(active, ctx, p, T0 + 3600)
    assert active.status["phase"] == "Expired"


def test_pool_expiration_already_passed_expires_active_now() -> None:
    p, ctx = planner(), pool()
    active = rsv({"duration": "2h"})
    apply(active, ctx, p, T0)
    p.set_expiration(T0 + 60)
    outcome = apply(active, ctx, p, T0 + 120)
    assert active.status["phase"] == "Expired"
    assert active.status["endTime"] == format_time(T0 + 60)
    assert reasons(outcome) == ["PoolExpired", "Expired"]
    assert p.bookings() == []


def test_lowered_expiration_fails_a_scheduled_window_asked_for_past_it() -> None:
    p, ctx = planner(), pool()
    blocker = rsv({"request": {"nodes": 2, "coresPerSlot": 4}, "duration": "1h"})
    apply(blocker, ctx, p, T0)
    # The window asked for (5h from now) now ends after the pool does.
    later = rsv({"startTime": format_time(T0 + 5 * 3600), "duration": "1h"})
    apply(later, ctx, p, T0)
    assert later.status["startTime"] == format_time(T0 + 5 * 3600)
    p.set_expiration(T0 + 4 * 3600)
    apply(later, ctx, p, T0 + 1)
    assert later.status["phase"] == "Failed"
    assert condition(later, "Stalled")["reason"] == "PoolExpired"


def test_restore_takes_the_mode_booked_not_the_edited_spec() -> None:
    """A shared hold whose spec.mode was edited to exclusive while the operator was away is
    restored shared: its overlapping shared neighbour keeps its window (review C9)."""
    p, ctx = planner(), pool()
    spec = {"mode": "shared", "startTime": format_time(T0 + 7200),
            "request": {"nodes": 2, "coresPerSlot": 4}}
    x, y = rsv(spec), rsv(spec)
    apply(x, ctx, p, T0)
    apply(y, ctx, p, T0)
    assert x.status["allocated"]["mode"] == "shared"
    assert x.status["allocated"]["summary"] == y.status["allocated"]["summary"]
    x.spec = {**x.spec, "mode": "exclusive"}
    x.generation = 2
    fresh = planner()
    assert restore(x, fresh) is None
    assert restore(y, fresh) is None, "the untouched neighbour lost its window"
    booking = fresh.get(x.uid)
    assert booking is not None and booking.mode == "shared"


def test_holders_keep_their_grant_while_the_pool_is_unusable_without_a_planner() -> None:
    """After a restart with a pool spec the operator cannot use there is no planner: Active
    and Scheduled holders keep what was committed, untouched (review C3)."""
    p, ctx = planner(), pool()
    active, held = rsv(), rsv({"startTime": format_time(T0 + 7200)})
    apply(active, ctx, p, T0)
    apply(held, ctx, p, T0)
    broken = pool(ready=False, problem="invalid resources: 3 hosts for 2 ranks")
    for r in (active, held):
        before = r.status
        outcome = decide(r, broken, None, T0 + 5)
        assert outcome.status == before and not outcome.events
    waiting = rsv()
    apply(waiting, broken, None, T0 + 5)
    assert waiting.status["phase"] == "Pending"


def test_nothing_new_is_booked_on_a_pool_being_deleted() -> None:
    p = planner()
    deleting = pool(deleting=True)
    r = rsv()
    outcome = apply(r, deleting, p, T0)
    assert r.status["phase"] == "Pending" and p.get(r.uid) is None
    assert condition(r, "Stalled")["reason"] == "PoolDeleting"
    assert "PoolDeleting" in reasons(outcome)
    # What already holds stays: an Active holder is not touched by the deletion.
    holder = rsv()
    apply(holder, pool(), p, T0)
    apply(holder, deleting, p, T0 + 1)
    assert holder.status["phase"] == "Active" and p.get(holder.uid) is not None


def test_a_scheduled_window_that_cannot_move_earlier_changes_nothing_in_the_planner() -> None:
    # Issue 11, item 4: every decision of a Scheduled reservation whose asked-for start has
    # passed tries to move it earlier; one that could not move released and re-booked the
    # window, bumping the planner's generation (so a pool policy edit looked like capacity
    # changing). Now the planner is untouched.
    p, ctx = planner(), pool()
    blocker = rsv({"request": {"nodes": 2, "coresPerSlot": 4}})
    apply(blocker, ctx, p, T0)
    later = rsv({"request": {"nodes": 1, "coresPerSlot": 4}, "duration": "30m"})
    apply(later, ctx, p, T0 + 10)
    assert later.status["phase"] == "Scheduled"
    generation, booking = p.generation, p.get(later.uid)
    outcome = apply(later, ctx, p, T0 + 20)
    assert later.status["phase"] == "Scheduled"
    assert p.generation == generation and p.get(later.uid) is booking
    assert "Moved" not in reasons(outcome)


def test_max_wait_ends_a_reservation_whose_pool_is_unusable() -> None:
    """Seed 324 of the simulation: a restarted operator has no planner for a pool whose spec it
    cannot use. A Pending reservation with maxWait was told to wake at its maxWait deadline
    even once that had passed - due again at once, decided again at the same instant, for
    ever (a busy loop). Past maxWait it fails, as it does while its pool is missing."""
    r = rsv({"maxWait": "10m"})
    broken = pool(ready=False, problem="invalid spec: 5 hosts for 2 ranks")
    outcome = apply(r, broken, None, T0)
    assert r.status["phase"] == "Pending" and outcome.wake_at == T0 + 600
    outcome = apply(r, broken, None, T0 + 600)
    assert r.status["phase"] == "Failed"
    assert condition(r, "Stalled")["reason"] == "MaxWaitExceeded"
    assert outcome.wake_at is None


_CONTEXTS = {
    "usable": lambda: (pool(), planner()),
    "missing": lambda: (pool(exists=False, ready=False), None),
    "unusable, no planner": lambda: (pool(ready=False, problem="bad R"), None),
    "deleting": lambda: (pool(deleting=True), planner()),
    "namespace not admitted": lambda: (pool(namespace_allowed=lambda ns: False), planner()),
}


@pytest.mark.parametrize("context", sorted(_CONTEXTS))
@pytest.mark.parametrize("spec", [
    {}, {"maxWait": "10m"}, {"maxWait": "10m", "nextAvailable": False},
    {"startTime": format_time(T0 + 300)}, {"startTime": format_time(T0 + 300), "maxWait": "1m"},
    {"claimPolicy": "Manual"}, {"duration": "30s"},
])
def test_a_decision_never_asks_to_wake_at_or_before_now(context: str,
                                                        spec: dict[str, Any]) -> None:
    """The actor decides a reservation again when its wake time has come: a wake time not
    later than the decision's own instant makes it due again at once, a busy loop (seed 324).
    Decided again at every deadline it names, for a simulated hour, it never asks for one."""
    ctx, p = _CONTEXTS[context]()
    if p is not None:  # a blocker, so that waiting and later windows happen too
        apply(rsv({"request": {"nodes": 2, "coresPerSlot": 4}, "duration": "20m"}), pool(),
              p, T0)
    r, now = rsv(spec), T0
    for _ in range(20):
        outcome = apply(r, ctx, p, now)
        assert outcome.wake_at is None or outcome.wake_at > now, (now, r.status)
        if outcome.wake_at is None or outcome.wake_at > T0 + 3600:
            break
        now = outcome.wake_at
