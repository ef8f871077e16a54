"""Fair share (policy.limits): the pure judgement (respool.controller.limits) and the life
cycle that applies it, on the real engine, no Kubernetes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from respool.api import NamespaceLimit, PoolPolicy, format_time, parse_time
from respool.controller import limits as fair_share
from respool.controller.lifecycle import (
    NAMESPACE_RETRY,
    Policy,
    PoolContext,
    Reservation,
    decide,
    release,
)
from respool.controller.limits import (
    WEEK,
    Limit,
    Stretch,
    UsageLedger,
    Use,
    busiest_week,
    judge,
    judge_alone,
    local_instant,
    next_allowed_start,
    peak,
    within_hours,
)
from respool.controller.selectors import UNKNOWN_LABELS
from respool.pool import Planner

BERLIN = ZoneInfo("Europe/Berlin")
H = 3600.0
T0 = parse_time("2026-12-07T12:00:00Z")  # a Monday, 13:00 in Berlin


def limit(**fields: Any) -> Limit:
    return Limit.from_model(NamespaceLimit.model_validate(fields), 0)


def use(start: float, end: float, nodes: int = 1, cores: int = 1, gpus: int = 0) -> Use:
    return Use(start, end, nodes, cores, gpus)


# -- wall-clock time -----------------------------------------------------------------------------


def test_a_time_the_clocks_skip_begins_when_they_jump_past_it() -> None:
    # 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST (01:00 UTC).
    assert local_instant(BERLIN, date(2026, 3, 29), 150) == parse_time("2026-03-29T01:00:00Z")
    assert local_instant(BERLIN, date(2026, 3, 29), 180) == parse_time("2026-03-29T01:00:00Z")
    assert local_instant(BERLIN, date(2026, 3, 29), 60) == parse_time("2026-03-29T00:00:00Z")


def test_a_time_shown_twice_is_its_first_showing() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET; 02:30 is shown at 00:30 and 01:30 UTC.
    assert local_instant(BERLIN, date(2026, 10, 25), 150) == parse_time("2026-10-25T00:30:00Z")
    assert local_instant(BERLIN, date(2026, 10, 25), 1440) == parse_time("2026-10-25T23:00:00Z")


def night(**fields: Any) -> tuple[Stretch, ...]:
    return limit(allowedHours=[{"from": "22:00", "to": "06:00", "timeZone": "Europe/Berlin",
                                **fields}]).hours


def test_a_night_stretch_is_an_hour_shorter_when_the_clocks_spring_forward() -> None:
    hours = night()
    start = parse_time("2026-03-28T21:00:00Z")  # Saturday 22:00 CET
    assert within_hours(hours, start, start + 7 * H)  # to 06:00 CEST
    assert not within_hours(hours, start, start + 8 * H)
    autumn = parse_time("2026-10-24T20:00:00Z")  # Saturday 22:00 CEST
    assert within_hours(hours, autumn, autumn + 9 * H)  # to 06:00 CET
    assert not within_hours(hours, autumn, autumn + 9 * H + 1)


def test_back_to_back_stretches_join_and_days_name_where_a_stretch_begins() -> None:
    weekend = limit(allowedHours=[
        {"days": ["Fri"], "from": "18:00", "to": "24:00"},
        {"days": ["Sat", "Sun"], "from": "00:00", "to": "24:00"},
        {"days": ["Mon"], "from": "00:00", "to": "08:00"},
    ]).hours
    friday = parse_time("2026-12-11T18:00:00Z")
    assert within_hours(weekend, friday, friday + (6 + 48 + 8) * H)
    assert not within_hours(weekend, friday - 1, friday + H)
    # Thursday's night is not allowed; the next window of 2h from Thursday noon is Friday 18:00.
    assert next_allowed_start(weekend, parse_time("2026-12-10T12:00:00Z"), 2 * H) == friday
    wrapping = limit(allowedHours=[{"days": ["Mon"], "from": "20:00", "to": "08:00"}]).hours
    monday_night = parse_time("2026-12-07T20:00:00Z")
    assert within_hours(wrapping, monday_night, monday_night + 12 * H)  # into Tuesday
    assert not within_hours(wrapping, monday_night + 24 * H, monday_night + 25 * H)


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Pacific/Chatham",
         "Asia/Kolkata"]


def _allowed_by_wall_clock(stretches: tuple[Stretch, ...], t: float) -> bool:
    """The reference: is the wall clock at instant t inside a stretch (read minute by minute
    off the clock, as a person would)?"""
    for stretch in stretches:
        local = datetime.fromtimestamp(t, stretch.zone)
        minute = local.hour * 60 + local.minute
        weekday = local.weekday()
        yesterday = (weekday - 1) % 7
        if stretch.finish > stretch.begin:
            if weekday in stretch.days and stretch.begin <= minute < stretch.finish:
                return True
        elif ((weekday in stretch.days and minute >= stretch.begin)
              or (yesterday in stretch.days and minute < stretch.finish)):
            return True
    return False


def _ambiguous(zone: ZoneInfo, t: float) -> bool:
    local = datetime.fromtimestamp(t, zone).replace(tzinfo=None)
    return (local.replace(tzinfo=zone, fold=0).utcoffset()
            != local.replace(tzinfo=zone, fold=1).utcoffset())


minutes_of_day = st.integers(0, 1439)


@settings(max_examples=60, deadline=None)
@given(zone=st.sampled_from(ZONES), begin=minutes_of_day, finish=st.integers(1, 1440),
       days=st.sets(st.integers(0, 6), min_size=1),
       start_minutes=st.integers(0, 400 * 24 * 60), length=st.integers(1, 14 * 60))
def test_within_hours_agrees_with_reading_the_wall_clock_minute_by_minute(
        zone: str, begin: int, finish: int, days: set[int], start_minutes: int,
        length: int) -> None:
    if begin == finish:
        return
    stretch = Stretch(frozenset(days), begin, finish, ZoneInfo(zone))
    start = parse_time("2026-01-01T00:00:00Z") + start_minutes * 60.0
    instants = [start + 60.0 * m for m in range(length)]
    if any(_ambiguous(stretch.zone, t) for t in instants):
        return  # a 'to' inside a repeated hour ends at its first showing (documented)
    expected = all(_allowed_by_wall_clock((stretch,), t) for t in instants)
    assert within_hours((stretch,), start, start + 60.0 * length) == expected


# -- usage over time ---------------------------------------------------------------------------


def test_peak_counts_what_is_held_at_the_same_instant() -> None:
    uses = [use(0, 10, 1, 4), use(5, 15, 2, 2), use(10, 20, 3, 1)]
    assert peak(uses, 0, 20) == (5, 6, 0)  # 5..10: 1+2 nodes; 10..15: 2+3 (ends before starts)
    assert peak(uses, 0, 5) == (1, 4, 0)
    assert peak(uses, 15, 30) == (3, 1, 0)


def _week_by_brute_force(uses: list[Use], start: float, end: float) -> float:
    best = 0.0
    t = start - WEEK
    while t <= end:
        total = sum(u.nodes * max(0.0, min(u.end, t + WEEK) - max(u.start, t)) for u in uses)
        best = max(best, total)
        t += H
    return best


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(1, 60), st.integers(1, 4)),
                max_size=8),
       st.integers(0, 400), st.integers(1, 48))
def test_busiest_week_is_the_most_any_seven_days_hold(
        windows: list[tuple[int, int, int]], start: int, length: int) -> None:
    uses = [use(a * H, (a + n) * H, nodes) for a, n, nodes in windows]
    exact = busiest_week(uses, start * H, (start + length) * H)
    assert exact == pytest.approx(_week_by_brute_force(uses, start * H, (start + length) * H))


# -- the judgement -----------------------------------------------------------------------------


def test_alone_over_a_limit() -> None:
    window = use(T0, T0 + 2 * H, nodes=3, cores=12, gpus=1)
    assert judge_alone([limit(maxNodes=2)], window) is not None
    assert judge_alone([limit(maxCores=11)], window) is not None
    assert judge_alone([limit(maxGPUs=0)], window) is not None
    assert judge_alone([limit(maxNodeHoursPerWeek=5)], window) is not None
    assert judge_alone([limit(maxDuration="1h")], window) is not None
    short_night = [limit(allowedHours=[{"from": "22:00", "to": "23:00"}])]
    assert judge_alone(short_night, window) is not None
    fits = [limit(maxNodes=3, maxCores=12, maxGPUs=1, maxNodeHoursPerWeek=6, maxDuration="2h",
                  allowedHours=[{"from": "22:00", "to": "24:00"}])]
    assert judge_alone(fits, window) is None
    verdict = judge(fits, window, [], T0)
    assert verdict is not None and verdict.reason == "OutsideAllowedHours"
    assert verdict.retry_at == parse_time("2026-12-07T22:00:00Z")
    assert not verdict.alone


def test_max_advance_waits_until_the_window_is_close_enough() -> None:
    window = use(T0 + 10 * H, T0 + 11 * H)
    verdict = judge([limit(maxAdvance="8h")], window, [], T0)
    assert verdict is not None and verdict.reason == "QuotaExceeded" and not verdict.alone
    assert verdict.retry_at == T0 + 2 * H
    assert judge([limit(maxAdvance="8h")], window, [], T0 + 2 * H) is None


def test_held_at_once_counts_the_namespaces_overlapping_windows() -> None:
    rule = [limit(maxNodes=2)]
    window = use(T0, T0 + H)
    verdict = judge(rule, window, [use(T0 - H, T0 + 30 * 60, nodes=2)], T0)
    assert verdict is not None and verdict.retry_at == T0 + 30 * 60
    assert judge(rule, window, [use(T0 - H, T0, nodes=2)], T0) is None  # ended at the start
    assert judge(rule, window, [use(T0 + H, T0 + 2 * H, nodes=2)], T0) is None


def test_node_hours_count_a_rolling_week_of_ended_held_and_booked_windows() -> None:
    rule = [limit(maxNodeHoursPerWeek=10)]
    ended = use(T0 - 6 * 24 * H, T0 - 6 * 24 * H + 8 * H)  # 8 node-hours six days ago
    window = use(T0, T0 + 4 * H)
    verdict = judge(rule, window, [ended], T0)
    assert verdict is not None and verdict.retry_at is not None
    # It fits once enough of the ended window has left the week before the new one ends.
    assert judge(rule, use(verdict.retry_at, verdict.retry_at + 4 * H), [ended],
                 verdict.retry_at) is None
    assert judge(rule, use(verdict.retry_at - 1, verdict.retry_at + 4 * H - 1), [ended],
                 verdict.retry_at - 1) is not None
    # A booked window a week later does not share a rolling week with the ended one.
    assert judge(rule, window, [use(T0 + 8 * 24 * H, T0 + 8 * 24 * H + 6 * H)], T0) is None


def test_the_ledger_keeps_what_was_held_for_a_week() -> None:
    planner = Planner(R)
    ledger = UsageLedger()
    request = planner.parse(_jobspec(nodes=1))
    booking = planner.reserve("u1", request, T0, T0 + 4 * H, "exclusive")
    ledger.record("u1", "team", booking, T0 + H)  # deleted an hour in
    ledger.record("u2", "team", booking, T0 - 1)  # let go before it began: nothing held
    assert [(uid, ns, u.end - u.start) for uid, ns, u in ledger.items()] == [("u1", "team", H)]
    ledger.prune(T0 + WEEK + 2 * H)
    assert len(ledger) == 0


def test_an_ended_window_counts_unless_the_planner_holds_it_again() -> None:
    planner = Planner(R)
    ledger = UsageLedger()
    request = planner.parse(_jobspec(nodes=1))
    first = planner.reserve("u1", request, T0, T0 + 2 * H, "exclusive")
    planner.release("u1")
    ledger.record("u1", "team", first, T0 + 2 * H)
    owner = {"u1": "team"}.get
    # Its own earlier window counts when u1 books anew (a missed claim re-planned it) ...
    planner.reserve("u1", request, T0 + 5 * H, T0 + 6 * H, "exclusive")
    uses = fair_share.namespace_uses(planner.bookings(), owner, ledger, "team", "u1", T0 + 3 * H)
    assert [(u.start, u.end) for u in uses] == [(T0, T0 + 2 * H)]
    # ... but not twice when the very window is back in the planner (a rolled-back release).
    planner.release("u1")
    planner.restore("u1", first.R, first.start, first.end, "exclusive")
    assert fair_share.namespace_uses(planner.bookings(), owner, ledger, "team", "other",
                                     T0 + 3 * H) == [fair_share.booking_use(first)]


# -- the life cycle ----------------------------------------------------------------------------

R = {
    "version": 1,
    "execution": {
        "R_lite": [{"rank": "0-3", "children": {"core": "0-3", "gpu": "0"}}],
        "nodelist": ["node[0-3]"],
    },
}


def _jobspec(nodes: int) -> dict[str, Any]:
    from respool.pool import jobspec_from_shorthand

    return jobspec_from_shorthand(nodes=nodes, slots=1, cores_per_slot=1, gpus_per_slot=0,
                                  exclusive=True, constraints=None)


class Pool:
    """A pool context as the actor builds it: limits from the policy model, a ledger, the
    namespaces of the reservations."""

    def __init__(self, limits: list[dict[str, Any]], labels: dict[str, dict[str, str]] | None
                 = None) -> None:
        self.planner = Planner(R)
        self.records: dict[str, Reservation] = {}
        self.labels = labels or {}
        self.ledger = UsageLedger()
        policy = Policy.from_model(PoolPolicy.model_validate({"limits": limits,
                                                              "maxDuration": "200h"}))
        self.context = PoolContext(
            name="rack", policy=policy, ledger=self.ledger,
            namespace_labels=self._labels,
            namespace_of=lambda uid: (self.records[uid].namespace if uid in self.records
                                      else None))
        self.count = 0

    def _labels(self, namespace: str) -> Mapping[str, str]:
        # As the operator's record of namespaces answers: unknown labels are not "no labels".
        return self.labels.get(namespace, UNKNOWN_LABELS)

    def add(self, namespace: str = "team", **spec: Any) -> Reservation:
        self.count += 1
        full = {"pool": "rack", "request": {"nodes": 1, "exclusive": True}, "duration": "1h"}
        full.update(spec)
        record = Reservation(uid=f"{self.count:08d}-aaaa-bbbb-cccc-dddddddddddd",
                             namespace=namespace, name=f"r{self.count}", generation=1,
                             spec=full, status={})
        self.records[record.uid] = record
        return record

    def decide(self, record: Reservation, now: float) -> Any:
        outcome = decide(record, self.context, self.planner, now)
        record.status = {k: v for k, v in outcome.status.items() if v is not None}
        return outcome

    def delete(self, record: Reservation, now: float) -> None:
        release(record, self.planner, self.ledger, now)
        del self.records[record.uid]


def stalled_or_waiting(record: Reservation) -> tuple[str | None, str | None]:
    for condition in record.status.get("conditions", []):
        if condition["type"] in ("Reconciling", "Stalled") and condition["status"] == "True":
            return record.phase, condition["reason"]
    return record.phase, None


def test_over_max_nodes_waits_quota_exceeded_and_proceeds_when_usage_drops() -> None:
    pool = Pool([{"maxNodes": 2}])
    holders = [pool.add(duration="2h") for _ in range(2)]
    for holder in holders:
        pool.decide(holder, T0)
        assert holder.phase == "Active"
    waiter = pool.add()
    outcome = pool.decide(waiter, T0)
    assert stalled_or_waiting(waiter) == ("Pending", "QuotaExceeded")
    assert "maxNodes (2)" in waiter.status["message"]
    assert outcome.wake_at == T0 + 2 * H  # the holders' end, besides any release
    assert [e.reason for e in outcome.events] == ["QuotaExceeded"]
    # Another namespace is not held back by this one's usage.
    other = pool.add(namespace="other")
    pool.decide(other, T0)
    assert other.phase == "Active"
    # Asked again and again while the namespace is full: no retry counted, no new Event.
    for _ in range(8):
        again = pool.decide(waiter, T0 + 60)
        assert again.events == []
    assert waiter.status["retryCount"] == 0
    pool.delete(holders[0], T0 + 120)
    pool.decide(waiter, T0 + 120)
    assert waiter.phase == "Active"


def test_alone_over_a_limit_fails_quota_exceeded() -> None:
    pool = Pool([{"maxNodes": 2, "maxDuration": "2h"}])
    big = pool.add(request={"nodes": 3, "exclusive": True})
    pool.decide(big, T0)
    assert stalled_or_waiting(big) == ("Failed", "QuotaExceeded")
    long = pool.add(duration="3h")
    pool.decide(long, T0)
    assert stalled_or_waiting(long) == ("Failed", "QuotaExceeded")
    assert "maxDuration (2h)" in long.status["message"]
    # Whole nodes hold every core: judged on what the grant would hold.
    cores = Pool([{"maxCores": 3}])
    whole = cores.add(request={"nodes": 1, "exclusive": True})
    cores.decide(whole, T0)
    assert stalled_or_waiting(whole) == ("Failed", "QuotaExceeded")
    assert "4 cores" in whole.status["message"]


def test_the_pool_max_duration_still_applies_beside_a_limit() -> None:
    pool = Pool([{"maxDuration": "300h"}])
    long = pool.add(duration="250h")  # over policy.maxDuration (200h), within the limit
    pool.decide(long, T0)
    assert stalled_or_waiting(long) == ("Failed", "InvalidSpec")


def test_outside_allowed_hours_waits_and_is_woken_when_they_open() -> None:
    pool = Pool([{"allowedHours": [{"from": "20:00", "to": "06:00",
                                    "timeZone": "Europe/Berlin"}]}])
    record = pool.add(duration="2h")
    outcome = pool.decide(record, T0)  # 13:00 in Berlin
    assert stalled_or_waiting(record) == ("Pending", "OutsideAllowedHours")
    opens = parse_time("2026-12-07T19:00:00Z")  # 20:00 CET
    assert outcome.wake_at == opens
    pool.decide(record, opens)
    assert record.phase == "Active"
    assert record.status["startTime"] == format_time(opens)
    # A window asked for inside the hours is booked ahead at once.
    ahead = pool.add(startTime="2026-12-08T20:00:00Z", duration="1h")
    pool.decide(ahead, T0)
    assert ahead.phase == "Scheduled"


def test_max_advance_waits_then_books() -> None:
    pool = Pool([{"maxAdvance": "24h"}])
    record = pool.add(startTime=format_time(T0 + 30 * H))
    outcome = pool.decide(record, T0)
    assert stalled_or_waiting(record) == ("Pending", "QuotaExceeded")
    assert outcome.wake_at == T0 + 6 * H
    pool.decide(record, T0 + 6 * H)
    assert record.phase == "Scheduled"


def test_max_wait_still_ends_a_reservation_waiting_for_quota() -> None:
    pool = Pool([{"maxNodes": 1}])
    holder = pool.add(duration="5h")
    pool.decide(holder, T0)
    waiter = pool.add(maxWait="1h")
    outcome = pool.decide(waiter, T0)
    assert outcome.wake_at == T0 + H
    pool.decide(waiter, T0 + H)
    assert stalled_or_waiting(waiter) == ("Failed", "MaxWaitExceeded")


def test_a_limit_selects_namespaces_by_label_and_counts_each_apart() -> None:
    pool = Pool([{"namespaceSelector": {"matchLabels": {"tier": "student"}}, "maxNodes": 1}],
                labels={"a": {"tier": "student"}, "b": {"tier": "student"}, "c": {}})
    for namespace in ("a", "b", "c"):
        record = pool.add(namespace=namespace)
        pool.decide(record, T0)
        assert record.phase == "Active", namespace  # one node each
    second = pool.add(namespace="a")
    pool.decide(second, T0)
    assert stalled_or_waiting(second) == ("Pending", "QuotaExceeded")


def test_unknown_labels_decide_nothing_until_known() -> None:
    pool = Pool([{"namespaceSelector": {"matchLabels": {"tier": "student"}}, "maxNodes": 1}])
    record = pool.add(namespace="new")
    outcome = pool.decide(record, T0)
    assert record.phase is None and outcome.wake_at == T0 + NAMESPACE_RETRY
    pool.labels["new"] = {"tier": "student"}
    pool.decide(record, T0 + 1)
    assert record.phase == "Active"


def test_an_extension_over_a_limit_is_denied_and_the_grant_kept() -> None:
    pool = Pool([{"maxNodeHoursPerWeek": 3}])
    record = pool.add(duration="2h")
    pool.decide(record, T0)
    record.spec = {**record.spec, "duration": "4h"}
    record.generation = 2
    pool.decide(record, T0 + 60)
    assert record.phase == "Active" and record.status["endTime"] == format_time(T0 + 2 * H)
    denied = [c for c in record.status["conditions"] if c["type"] == "Extended"]
    assert denied and denied[0]["reason"] == "ExtensionDenied"
    assert "maxNodeHoursPerWeek" in denied[0]["message"]


def test_a_scheduled_window_does_not_move_earlier_into_a_limit() -> None:
    pool = Pool([{"namespaceSelector": {"matchLabels": {"limited": "yes"}}, "maxNodes": 1}],
                labels={"team": {"limited": "yes"}, "x": {}})
    other = pool.add(namespace="x", request={"nodes": 3, "exclusive": True}, duration="3h")
    pool.decide(other, T0)
    first = pool.add()
    pool.decide(first, T0)
    assert (other.phase, first.phase) == ("Active", "Active")
    later = pool.add(startTime=format_time(T0))  # the pool is full until first ends
    pool.decide(later, T0)
    assert later.phase == "Scheduled" and later.status["startTime"] == format_time(T0 + H)
    pool.delete(other, T0 + 600)
    pool.decide(later, T0 + 600)  # capacity freed, but moving earlier would overlap first
    assert later.phase == "Scheduled" and later.status["startTime"] == format_time(T0 + H)
    assert pool.planner.get(later.uid).start == T0 + H
    pool.delete(first, T0 + 700)
    pool.decide(later, T0 + 700)
    assert later.phase == "Active" and later.status["startTime"] == format_time(T0 + 700)


# -- properties --------------------------------------------------------------------------------

NAMESPACES = ("a", "b", "c")
LIMITS = [{"maxNodes": 2, "maxCores": 6, "maxNodeHoursPerWeek": 20}]


def _namespace_peaks(pool: Pool) -> dict[str, tuple[tuple[int, int, int], float]]:
    per: dict[str, list[Use]] = {}
    for booking in pool.planner.bookings():
        namespace = pool.records[booking.id].namespace
        per.setdefault(namespace, []).append(fair_share.booking_use(booking))
    held = {b.id: b.start for b in pool.planner.bookings()}
    for uid, namespace, ended in pool.ledger.items():
        if held.get(uid) != ended.start:
            per.setdefault(namespace, []).append(ended)
    result = {}
    for namespace, uses in per.items():
        low = min(u.start for u in uses)
        high = max(u.end for u in uses)
        result[namespace] = (peak(uses, low, high), busiest_week(uses, low, high))
    return result


actions = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(NAMESPACES), st.integers(1, 3),
                  st.integers(0, 6), st.integers(1, 8)),
        st.tuples(st.just("delete"), st.integers(0, 50)),
        st.tuples(st.just("time"), st.integers(1, 40 * 3600)),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(actions)
def test_usage_never_exceeds_a_limit_through_grants(steps: list[Any]) -> None:
    pool = Pool(LIMITS)
    now = T0
    for step in steps:
        if step[0] == "add":
            _, namespace, nodes, start_hours, hours = step
            record = pool.add(namespace=namespace, request={"nodes": nodes, "exclusive": False,
                                                            "slots": 1, "coresPerSlot": 2},
                              startTime=format_time(now + start_hours * H),
                              duration=f"{hours}h")
            pool.decide(record, now)
        elif step[0] == "delete" and pool.records:
            victims = sorted(pool.records)
            pool.delete(pool.records[victims[step[1] % len(victims)]], now)
        elif step[0] == "time":
            now += step[1]
        for record in sorted(pool.records.values(), key=lambda r: r.uid):
            pool.decide(record, now)  # everything due, as the actor would after a change
        for namespace, ((nodes, cores, _), week) in _namespace_peaks(pool).items():
            assert nodes <= 2 and cores <= 6, namespace
            assert week <= 20 * H + 1e-6, namespace


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2), st.integers(1, 12)), min_size=1, max_size=6),
       st.integers(1, 2), st.integers(1, 6), st.booleans())
def test_a_reservation_that_fits_alone_proceeds_once_the_others_release(
        holders: list[tuple[int, int]], nodes: int, hours: int, nights_only: bool) -> None:
    rules: list[dict[str, Any]] = [{"maxNodes": 2, "maxNodeHoursPerWeek": 40}]
    if nights_only:
        rules[0]["allowedHours"] = [{"from": "20:00", "to": "08:00", "timeZone": "Europe/Berlin"}]
    pool = Pool(rules)
    now = T0
    others = []
    for holder_nodes, holder_hours in holders:
        record = pool.add(request={"nodes": holder_nodes, "exclusive": True},
                          duration=f"{holder_hours}h", maxRetry=0)
        pool.decide(record, now)
        others.append(record)
    waiter = pool.add(request={"nodes": nodes, "exclusive": True}, duration=f"{hours}h")
    outcome = pool.decide(waiter, now)
    assert waiter.phase in ("Pending", "Active", "Scheduled")
    for record in others:  # every other reservation of the namespace lets go
        pool.delete(record, now)
    for _ in range(20):
        if waiter.phase in ("Active", "Scheduled"):
            break
        # Woken at its wake time (or by the releases, at once).
        now = max(now + 1, outcome.wake_at or now + 1)
        outcome = pool.decide(waiter, now)
    assert waiter.phase in ("Active", "Scheduled"), waiter.status.get("message")
    assert waiter.status["retryCount"] == 0


def test_policy_from_the_model_keeps_every_field() -> None:
    model = PoolPolicy.model_validate({"limits": [{
        "namespaceSelector": {"matchLabels": {"team": "a"}}, "maxNodes": 1, "maxCores": 2,
        "maxGPUs": 3, "maxNodeHoursPerWeek": 4, "maxDuration": "5h", "maxAdvance": "6h",
        "allowedHours": [{"days": ["Sat", "Sun"], "from": "00:00", "to": "24:00",
                          "timeZone": "Asia/Tokyo"}]}]})
    (parsed,) = Policy.from_model(model).limits
    assert (parsed.max_nodes, parsed.max_cores, parsed.max_gpus) == (1, 2, 3)
    assert parsed.max_node_hours_per_week == 4.0
    assert (parsed.max_duration, parsed.max_advance) == (5 * H, 6 * H)
    assert parsed.hours == (Stretch(frozenset({5, 6}), 0, 1440, ZoneInfo("Asia/Tokyo")),)
    assert parsed.applies_to({"team": "a"}) and not parsed.applies_to({"team": "b"})
    assert Policy.from_model(model) == Policy.from_model(model)


@pytest.mark.parametrize("hours, message", [
    ({"from": "25:00", "to": "01:00"}, "allowedHours.from must be a time of day"),
    ({"from": "01:00", "to": "1:00"}, "allowedHours.to must be a time of day"),
    ({"from": "01:00", "to": "01:00"}, "must differ"),
    ({"from": "01:00", "to": "02:00", "timeZone": ""}, "timeZone"),
    ({"from": "01:00", "to": "02:00", "timeZone": "Mars/Olympus"}, "not a time zone"),
])
def test_allowed_hours_refuse_what_cannot_be_read(hours: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NamespaceLimit.model_validate({"allowedHours": [hours]})


def test_usage_summary_reports_held_used_and_booked() -> None:
    planner = Planner(R)
    request = planner.parse(_jobspec(nodes=2))
    planner.reserve("held", request, T0 - H, T0 + H, "exclusive")
    planner.reserve("booked", request, T0 + 2 * H, T0 + 5 * H, "exclusive")
    ledger = UsageLedger()
    ended = planner.reserve("ended", request, T0 - 3 * H, T0 - 2 * H, "exclusive")
    planner.release("ended")
    ledger.record("ended", "team", ended, T0 - 2 * H)
    namespaces = {"held": "team", "booked": "team"}
    (entry,) = fair_share.usage_summary(planner.bookings(), namespaces.get, ledger, T0)
    assert entry == {"namespace": "team", "nodes": 2, "cores": 8, "gpus": 2,
                     "nodeHoursUsed": 4.0, "nodeHoursBooked": 8.0}


def test_next_allowed_start_sees_the_week_round() -> None:
    sunday_only = limit(allowedHours=[{"days": ["Sun"], "from": "10:00", "to": "11:00"}]).hours
    start = next_allowed_start(sunday_only, T0, H)
    assert start == parse_time("2026-12-13T10:00:00Z")
    assert datetime.fromtimestamp(start, UTC).weekday() == 6
    assert next_allowed_start(sunday_only, T0, 2 * H) is None
    assert next_allowed_start(sunday_only, T0 + timedelta(days=5).total_seconds(), H) == start


def test_a_restarted_operator_reads_the_ledger_back_from_expired_reservations() -> None:
    from respool.controller.pool_model import PoolModel
    from respool.controller.ports import ClusterFacts

    now = T0
    records: dict[str, Reservation] = {}

    def expired(uid: str, request: dict[str, Any], start: float, end: float) -> None:
        records[uid] = Reservation(
            uid=uid, namespace="team", name=uid, generation=1,
            spec={"pool": "rack", "request": request, "duration": "1h"},
            status={"phase": "Expired", "startTime": format_time(start),
                    "endTime": format_time(end), "observedGeneration": 1})

    expired("two-nodes", {"nodes": 2, "exclusive": True}, now - 5 * H, now - 2 * H)
    expired("slots", {"slots": 3}, now - 3 * H, now - H)  # at least one node
    expired("old", {"nodes": 1}, now - 9 * 24 * H, now - 8 * 24 * H)  # out of the week
    model = PoolModel("rack", ClusterFacts(api=None))  # type: ignore[arg-type]
    raw = {"metadata": {"name": "rack", "generation": 1, "uid": "p"},
           "spec": {"resources": R, "policy": {"limits": [{"maxNodeHoursPerWeek": 9}]}}}
    model.apply(raw, records, finalizer_added=True, now=now)
    ended = sorted((uid, use.nodes, use.end - use.start) for uid, _, use in model.ledger.items())
    assert ended == [("slots", 1, 2 * H), ("two-nodes", 2, 3 * H)]
    # 8 node-hours used: a 2-hour window of one node is over the 9 of the rolling week.
    assert model.planner is not None
    uses = fair_share.namespace_uses(model.planner.bookings(), model.context.namespace_of,
                                     model.ledger, "team", "new", now)
    assert judge(model.context.policy.limits, use(now, now + 2 * H), uses, now) is not None
    assert judge(model.context.policy.limits, use(now, now + H), uses, now) is None
