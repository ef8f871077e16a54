"""Run or replay seeded schedules of the deterministic simulation.

    PYTHONHASHSEED=0 python tests/sim/run.py --seed 1234 [--trace]   # replay one schedule
    PYTHONHASHSEED=0 python tests/sim/run.py --first 0 --count 5000  # a range; JSON summary

The simulation is deterministic for a given seed and hash seed (string hashing orders sets):
every run of a seed executes the same interleaving and yields the same trace.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.world import Violation, run_schedule, trace_digest


def replay_command(seed: int) -> str:
    return f"PYTHONHASHSEED=0 .venv/bin/python tests/sim/run.py --seed {seed} --trace"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, help="replay this one schedule")
    parser.add_argument("--trace", action="store_true", help="print its trace")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--progress", action="store_true", help="name each seed on stderr")
    args = parser.parse_args()
    if os.environ.get("PYTHONHASHSEED") != "0":
        print("warning: set PYTHONHASHSEED=0 to replay exactly what CI ran", file=sys.stderr)
    if args.seed is not None:
        try:
            trace = run_schedule(args.seed)
        except Violation as exc:
            if args.trace:
                print("\n".join(getattr(exc, "trace", [])))
            print(f"seed {args.seed}: VIOLATION: {exc}")
            return 1
        if args.trace:
            print("\n".join(trace))
        print(f"seed {args.seed}: ok, {len(trace)} writes, trace {trace_digest(trace)}")
        return 0
    began = time.monotonic()
    failures = []
    writes = 0
    for seed in range(args.first, args.first + args.count):
        if args.progress:
            print(f"seed {seed}", file=sys.stderr, flush=True)
        try:
            writes += len(run_schedule(seed))
        except Violation as exc:
            failures.append({"seed": seed, "violation": str(exc),
                             "replay": replay_command(seed)})
    print(json.dumps({"first": args.first, "count": args.count, "failures": failures,
                      "writes": writes, "seconds": round(time.monotonic() - began, 2)}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
