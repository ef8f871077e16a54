"""Run or replay seeded schedules of the deterministic simulation.

    PYTHONHASHSEED=0 python tests/sim/run.py --seed 1234 [--trace]   # replay one schedule
    PYTHONHASHSEED=0 python tests/sim/run.py --first 0 --count 5000  # a range; JSON summary
    PYTHONHASHSEED=0 python tests/sim/run.py --count 10000 --workers 2   # on two cores

The simulation is deterministic for a given seed and hash seed (string hashing orders sets):
every run of a seed executes the same interleaving and yields the same trace, whichever
worker process runs it and whatever ran there before.

With `--workers N` the seeds are handed out in small chunks to N processes (each started with
PYTHONHASHSEED=0) as they become free, so that a process slowed by a busy machine, or by a
run of long schedules, does not leave the other idle at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.world import Violation, run_schedule, trace_digest

#: Seeds per chunk handed to a worker: small enough that the workers end together, large
#: enough that handing out costs nothing next to ~40 ms per schedule.
CHUNK = 20


def replay_command(seed: int) -> str:
    return f"PYTHONHASHSEED=0 .venv/bin/python tests/sim/run.py --seed {seed} --trace"


def run_seeds(seeds: list[int]) -> dict[str, Any]:
    """Run `seeds` in this process: how many, writes applied, failures (with replays)."""
    failures = []
    writes = 0
    for seed in seeds:
        try:
            writes += len(run_schedule(seed))
        except Violation as exc:
            failures.append({"seed": seed, "violation": str(exc),
                             "replay": replay_command(seed)})
    return {"count": len(seeds), "writes": writes, "failures": failures,
            "cpu": time.process_time()}


def _worker_started() -> None:
    # Set-ordering (and so the schedule) depends on string hashing: a worker must hash as
    # the replay command does, or a failing seed would not replay.
    assert sys.flags.hash_randomization == 0, "worker started without PYTHONHASHSEED=0"


def seeds_to_run(first: int, count: int, skip: list[int]) -> list[int]:
    """`count` seeds from `first` on, leaving out `skip`."""
    seeds: list[int] = []
    seed = first
    while len(seeds) < count:
        if seed not in skip:
            seeds.append(seed)
        seed += 1
    return seeds


def run_parallel(seeds: list[int], workers: int) -> dict[str, Any]:
    chunks = [seeds[start:start + CHUNK] for start in range(0, len(seeds), CHUNK)]
    os.environ["PYTHONHASHSEED"] = "0"  # inherited by the spawned workers
    context = multiprocessing.get_context("spawn")
    total: dict[str, Any] = {"count": 0, "writes": 0, "failures": [], "cpu": 0.0}
    cpu: dict[int, float] = {}
    with context.Pool(workers, initializer=_worker_started) as pool:
        for result, pid in pool.imap_unordered(_run_chunk, chunks):
            total["count"] += result["count"]
            total["writes"] += result["writes"]
            total["failures"].extend(result["failures"])
            for failure in result["failures"]:  # at once, not only in the summary at the end
                print(f"seed {failure['seed']}: {failure['violation']}", file=sys.stderr,
                      flush=True)
            cpu[pid] = result["cpu"]  # the worker's CPU time so far (imports included)
    total["failures"].sort(key=lambda failure: failure["seed"])
    total["cpu"] = round(sum(cpu.values()), 2)
    return total


def _run_chunk(seeds: list[int]) -> tuple[dict[str, Any], int]:
    return run_seeds(seeds), os.getpid()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, help="replay this one schedule")
    parser.add_argument("--trace", action="store_true", help="print its trace")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--skip", type=int, action="append", default=[],
                        help="leave this seed out (the range is extended to keep --count)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes to run the seeds in (default 1: this one)")
    parser.add_argument("--progress", action="store_true",
                        help="name each seed on stderr (one worker only)")
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
    seeds = seeds_to_run(args.first, args.count, args.skip)
    if args.workers > 1:
        summary = run_parallel(seeds, args.workers)
    elif args.progress:
        summary = {"count": 0, "writes": 0, "failures": []}
        for seed in seeds:
            print(f"seed {seed}", file=sys.stderr, flush=True)
            result = run_seeds([seed])
            for name in ("count", "writes", "failures"):
                summary[name] += result[name]
        summary["cpu"] = time.process_time()
    else:
        summary = run_seeds(seeds)
    print(json.dumps({"first": args.first, "count": summary["count"], "skipped": args.skip,
                      "failures": summary["failures"], "writes": summary["writes"],
                      "workers": args.workers, "cpu_seconds": round(summary["cpu"], 2),
                      "seconds": round(time.monotonic() - began, 2)}))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
