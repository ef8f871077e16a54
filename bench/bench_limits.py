"""What judging policy.limits adds to one decision (issue 15).

Run from the repository root:

    .venv/bin/python bench/bench_limits.py                      # 100 and 1,000 holders
    .venv/bin/python bench/bench_limits.py --holders 100 1000 4000

For each holder count: a pool with one rank per reservation, that many Active one-node
holders spread over 10 namespaces, then 200 one-node reservations decided one by one
(`lifecycle.decide`, what the pool actor runs for each), each released again so that every
one is decided on the same pool. Timed in CPU seconds of this process (the machine is shared)
without limits, with limits that count (maxNodes and maxNodeHoursPerWeek: every decision
gathers the namespace's windows) and with allowedHours only (wall-clock stretches, nothing
counted). The limits are set so high that every reservation is granted: the cost measured is
the judgement's, not a different outcome's. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from respool.api import PoolPolicy
from respool.controller.lifecycle import Policy, PoolContext, Reservation, decide
from respool.controller.limits import UsageLedger
from respool.pool import Planner

T0 = 1_900_000_000.0
NAMESPACES = 10
WAITERS = 200
COUNTING = [{"maxNodes": 1_000_000, "maxNodeHoursPerWeek": 100_000_000}]
HOURS = [{"allowedHours": [{"from": "00:00", "to": "23:00", "timeZone": "Europe/Berlin"}]}]


def per_decision(limits: list[dict[str, Any]], holders: int) -> float:
    """CPU seconds of one decision, on average over WAITERS."""
    R = {"version": 1, "execution": {"R_lite": [
        {"rank": f"0-{holders + WAITERS - 1}", "children": {"core": "0-3"}}]}}
    planner = Planner(R)
    records: dict[str, Reservation] = {}
    policy = Policy.from_model(PoolPolicy.model_validate({"limits": limits}))

    def namespace_of(uid: str) -> str | None:
        record = records.get(uid)
        return None if record is None else record.namespace

    context = PoolContext(name="p", policy=policy, ledger=UsageLedger(),
                          namespace_of=namespace_of)

    def add(index: int) -> Reservation:
        record = Reservation(uid=f"{index:08d}-aaaa-bbbb-cccc-dddddddddddd",
                             namespace=f"ns{index % NAMESPACES}", name=f"r{index}",
                             generation=1, spec={"pool": "p", "request": {"nodes": 1},
                                                 "duration": "1h"}, status={})
        records[record.uid] = record
        return record

    for index in range(holders):
        holder = add(index)
        holder.status = decide(holder, context, planner, T0).status
        assert holder.phase == "Active"
    waiters = [add(holders + index) for index in range(WAITERS)]
    started = time.process_time()
    for waiter in waiters:
        assert decide(waiter, context, planner, T0).granted
        planner.release(waiter.uid)
    return (time.process_time() - started) / WAITERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holders", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    for holders in args.holders:
        plain = per_decision([], holders)
        counting = per_decision(COUNTING, holders)
        hours = per_decision(HOURS, holders)
        print(f"{holders:>6} holders: one decision {plain * 1e3:.2f} ms without limits, "
              f"{counting * 1e3:.2f} ms with maxNodes+maxNodeHoursPerWeek "
              f"({counting / plain:.1f}x), {hours * 1e3:.2f} ms with allowedHours "
              f"({hours / plain:.1f}x)")


if __name__ == "__main__":
    main()
