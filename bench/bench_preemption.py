"""Preemption planning benchmark (issue 14): ``Planner.plan_preemption`` on a busy pool.

Run from the repository root:

    .venv/bin/python bench/bench_preemption.py            # 16,384 ranks, 10,000 bookings
    .venv/bin/python bench/bench_preemption.py --quick    # smaller, for a smoke test

The pool (ranks x 64 cores x 4 GPUs) is filled with ``--bookings`` bookings over an
eight-hour horizon (each at a random start where it fits; see ``fill``): 60 % whole-node
exclusive (1-8 nodes), 25 % exclusive core slots, 15 % shared core slots, priorities 0-9, a third preemptible, a tenth already running. Then
``--decisions`` requests of priority 5-12 - whole nodes (1-64), core slots (8-512 x 8
cores) or GPU slots, each for one or two hours at a random start inside the horizon, some
under a property constraint - are each planned (``plan_preemption``) and half of them
carried out on a scratch copy (``preempt`` + ``reserve``). Prints the latency per decision
(p50, p99, max), how many needed preemption and how many victims, how often the smallest
set was proven (``exact``), and checks that invariant 1 holds after every carried-out
decision. A benchmark, not a test: it asserts correctness, not speed.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
from typing import Any

from respool.pool import InsufficientResources, Planner, jobspec_from_shorthand

HOUR = 3600.0


def make_R(ranks: int, cores: int = 64, gpus: int = 4) -> dict[str, Any]:
    return {
        "version": 1,
        "execution": {
            "R_lite": [{"rank": f"0-{ranks - 1}",
                        "children": {"core": f"0-{cores - 1}", "gpu": f"0-{gpus - 1}"}}],
            "nodelist": [f"node[0-{ranks - 1}]"],
            "properties": {"a100": f"0-{ranks // 4 - 1}"},
        },
    }


def fill(planner: Planner, count: int, rng: random.Random) -> int:
    """Book ``count`` windows: each at a random start in the horizon if it fits there, else at
    up to 20 other random starts (the pool ends up full at the busy hours)."""
    booked = 0
    for n in range(count):
        kind = rng.random()
        if kind < 0.6:
            request = jobspec_from_shorthand(nodes=rng.randint(1, 8), exclusive=True)
            mode = "exclusive"
        else:
            request = jobspec_from_shorthand(slots=rng.randint(1, 32),
                                             cores_per_slot=rng.choice((1, 2, 4, 8)))
            mode = "exclusive" if kind < 0.85 else "shared"
        running = rng.random() < 0.1
        length = rng.choice((1, 2, 3, 4)) * HOUR
        priority, preemptible = rng.randint(0, 9), rng.random() < 1 / 3
        for _ in range(21):
            start = 0.0 if running else float(int(rng.uniform(0, 8 * HOUR)))
            try:
                planner.reserve(f"b{n}", request, start, start + length, mode,
                                priority=priority, preemptible=preemptible)
            except InsufficientResources:
                continue
            booked += 1
            break
    return booked


def decision_requests(count: int, rng: random.Random) -> list[tuple[dict[str, Any], str]]:
    out = []
    for _ in range(count):
        kind = rng.random()
        constraints = {"properties": ["a100"]} if rng.random() < 0.2 else None
        if kind < 0.5:
            out.append((jobspec_from_shorthand(nodes=rng.randint(1, 64), exclusive=True,
                                               constraints=constraints), "exclusive"))
        elif kind < 0.8:
            out.append((jobspec_from_shorthand(slots=rng.randint(8, 512), cores_per_slot=8,
                                               constraints=constraints),
                        rng.choice(("exclusive", "shared"))))
        else:
            out.append((jobspec_from_shorthand(slots=rng.randint(4, 256), cores_per_slot=4,
                                               gpus_per_slot=1, constraints=constraints),
                        "exclusive"))
    return out


def check_invariant_1(planner: Planner, booking_id: str) -> None:
    """No core or GPU of the booking just made is held by any other booking in overlapping
    time that it may not share with (invariant 1, for what the decision changed: the new
    booking against everything it overlaps, the victims cut back or gone)."""
    booking = planner.get(booking_id)
    assert booking is not None
    clashes = planner._conflicts(planner._grants[booking_id], booking.start, booking.end,
                                 booking.mode, booking_id)
    assert not clashes, (booking_id, clashes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, default=16384)
    parser.add_argument("--bookings", type=int, default=10000)
    parser.add_argument("--decisions", type=int, default=400)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.ranks, args.bookings, args.decisions = 1024, 1000, 100
    rng = random.Random(args.seed)
    planner = Planner(make_R(args.ranks))
    began = time.perf_counter()
    booked = fill(planner, args.bookings, rng)
    fill_seconds = time.perf_counter() - began
    requests = decision_requests(args.decisions, rng)
    latencies: list[float] = []
    apply_latencies: list[float] = []
    preempting = victims_total = exact = impossible = 0
    for n, (request, mode) in enumerate(requests):
        start = float(int(rng.uniform(0, 8 * HOUR)))
        end = start + rng.choice((1, 2)) * HOUR
        priority = rng.randint(5, 12)
        now = 0.0
        gc.collect()
        gc.disable()
        t0 = time.perf_counter()
        plan = planner.plan_preemption(f"d{n}", request, start, end, mode, priority, now)
        latencies.append(time.perf_counter() - t0)
        gc.enable()
        if plan is None:
            impossible += 1
            continue
        exact += plan.exact
        if plan.victims:
            preempting += 1
            victims_total += len(plan.victims)
        if n % 2 == 0:
            scratch = planner.copy()
            t0 = time.perf_counter()
            scratch.preempt(f"d{n}", plan.victims, at=start, now=now)
            scratch.reserve(f"d{n}", request, start, end, mode, priority=priority)
            apply_latencies.append(time.perf_counter() - t0)
            check_invariant_1(scratch, f"d{n}")
    ms = sorted(x * 1000 for x in latencies)
    figures = {
        "ranks": args.ranks,
        "bookings_requested": args.bookings,
        "bookings_held": booked,
        "fill_seconds": round(fill_seconds, 1),
        "decisions": len(latencies),
        "plan_ms_p50": round(statistics.median(ms), 2),
        "plan_ms_p99": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "plan_ms_max": round(ms[-1], 2),
        "apply_ms_p99": round(sorted(apply_latencies)[int(len(apply_latencies) * 0.99)] * 1000, 2)
        if apply_latencies else None,
        "needed_preemption": preempting,
        "victims_mean": round(victims_total / preempting, 2) if preempting else 0,
        "proven_smallest": exact,
        "cannot_fit_even_preempting": impossible,
    }
    width = max(len(key) for key in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
