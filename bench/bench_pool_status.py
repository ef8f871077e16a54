"""Pool status build cost on a fragmented pool (issue 11, item 6).

Run from the repository root:

    .venv/bin/python bench/bench_pool_status.py                  # 4,000 holders, 16,384 ranks
    .venv/bin/python bench/bench_pool_status.py --holders 1000 2000 4000 8000

For each holder count: one `pool_status.summary(...)` (what the pool actor builds at most once
per status interval, on the event loop) over that many Active holders, each on its own
non-adjacent rank, and the old per-holder fold `allocated | IDset(ranks)` it replaced, timed
in the same run. The summary should grow linearly with the holders; the fold grew
quadratically. A benchmark, not a test: it checks only that both give the same ranks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import make_R, timed
from respool.controller import pool_status
from respool.controller.lifecycle import Reservation
from respool.pool import IDset, Planner


def build(ranks: int, holders: int) -> tuple[Planner, list[Reservation]]:
    planner = Planner(make_R(ranks, 4, 1))
    records = []
    now = time.time()
    step = max(2, ranks // holders)
    for index in range(holders):
        rank = str(step * index)
        planner.restore(f"u{index}", {"version": 1, "execution": {
            "R_lite": [{"rank": rank, "children": {"core": "0"}}]}}, now - 10, now + 3600,
            "exclusive")
        records.append(Reservation(uid=f"u{index}", namespace="b", name=f"r{index}",
                                   generation=1, spec={},
                                   status={"phase": "Active", "allocated": {"ranks": rank}}))
    return planner, records


def measure(ranks: int, holders: int) -> tuple[float, float]:
    """Seconds for one summary (best of 3) and for the old fold, on one pool."""
    planner, records = build(ranks, holders)
    raw = {"metadata": {"generation": 1}}
    result: dict[str, object] = {}

    def summary() -> None:
        result.update(pool_status.summary(raw, records, planner, problem="", deleting=False,
                                          conditions=[], now=time.time()))

    def fold() -> None:
        allocated = IDset()
        for record in records:
            if record.phase == "Active" and record.allocated_ranks:
                allocated = allocated | IDset(record.allocated_ranks)
        result["folded"] = str(allocated)

    fast = min(timed(summary) for _ in range(3))
    slow = timed(fold)
    assert result["allocated"] == result["folded"]
    return fast, slow


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=16_384)
    parser.add_argument("--holders", type=int, nargs="+", default=[4_000])
    args = parser.parse_args()
    print(f"| Active holders on {args.ranks} ranks | summary() | old fold alone | ratio |")
    print("|---|---|---|---|")
    for holders in args.holders:
        fast, slow = measure(args.ranks, holders)
        print(f"| {holders:,} | {fast * 1000:.1f} ms | {slow * 1000:.0f} ms | "
              f"{slow / fast:.0f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
