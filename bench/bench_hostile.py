"""Hostile-tenant benchmark (issue 11 Targets): does one tenant's hostile input hurt another's?

Run (starts a private control plane and the operator):

    .venv/bin/python bench/bench_hostile.py
    .venv/bin/python bench/bench_hostile.py --hostile 100 --ordinary 100 --rate 5

1. latency - ordinary reservations on their own pool, created at a steady rate, timed from
   create to Active (from a watch); first with nothing else present (baseline), then with
   `--hostile` hostile reservations present at once, a quarter of each kind: the costliest
   constraint trees the cost budget admits (and some past it), fractional `maxWait`
   deadlines on a missing pool, `spec.pool` churn (their pool renamed over and over while
   the ordinary ones are measured) and maximal `spec.config`s (`--config-shape`). By default
   (`--settle`) the measurement starts once every hostile reservation was decided once
   (they are then "present"; `--no-settle` measures while the API server is still storing
   them). The event loop's lag is read two ways: the operator's own histogram
   (respool_event_loop_lag_seconds, a 0.1 s sleeper on its loop; p50/p99 as bucket bounds)
   and the answer time of its liveness endpoint (served on the same loop, but also paying
   for HTTP and this process's thread). Reports p50/p99 and their ratios to the baseline
   (targets: p99 create->Active < 1 s, loop lag p99 < 50 ms).
2. memory - the operator restarted with `--configs` reservations of a 256 KiB `spec.config`
   present; its RSS and peak RSS once it decides again (target: under the chart's 256 Mi
   limit). `--skip-latency` runs this part alone.

A benchmark, not a test: it asserts nothing, it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_operator import REPO, Bench, pool_body, rsv_body
from respool.controller.kubeapi import ApiError, pool_path, reservation_path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


LIVENESS_PORT = _free_port()  # (free, so that two runs side by side do not collide)
METRICS_PORT = _free_port()


def lag_buckets() -> dict[float, float]:
    """The operator's own respool_event_loop_lag_seconds histogram: cumulative count per
    bucket bound (empty if it cannot be read)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics",
                                    timeout=10) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    buckets = {}
    for line in text.splitlines():
        if line.startswith("respool_event_loop_lag_seconds_bucket{"):
            bound = line.split('le="')[1].split('"')[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.split()[-1])
    return buckets


def histogram_quantile(before: dict[float, float], after: dict[float, float],
                       fraction: float) -> float:
    """The upper bound of the bucket holding the `fraction` quantile of what was observed
    between two readings (nan without samples)."""
    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
    total = counts.get(float("inf"), 0.0)
    if not total:
        return float("nan")
    for bound in sorted(counts):
        if counts[bound] >= fraction * total:
            return bound
    return float("inf")
CHART_MEMORY_LIMIT_MB = 256


def costliest_constraints(hosts_prefix: str) -> dict[str, Any]:
    """32 objects, 256 terms, 4,096 host names: the most the cost budget admits."""
    unknown = [f"^nosuch{i}" for i in range(216)]
    return {
        "hostlist": [f"{hosts_prefix}[0-255]"] + [f"other{i}-[0-255]" for i in range(15)],
        "or": [{"ranks": "0-9999999"}]
        + [{"ranks": "9999999", "properties": unknown[i * 31:(i + 1) * 31]} for i in range(7)],
        "and": [{"ranks": "0-7", "or": [{}] * 7}] + [{"ranks": "0-7"}] * 7,
        "not": [{"ranks": "9999999"}] * 8,
    }


KINDS = ("constraints", "deadlines", "churn", "configs")


def maximal_config(shape: str, fill: str = "x") -> dict[str, Any]:
    """A spec.config of about 255 kB of JSON: one long string ("blob": the largest), or
    ~85,000 empty objects ("objects": the costliest to parse, ~6 MB once parsed)."""
    if shape == "objects":
        return {fill: [{}] * 85_000}
    return {"blob": fill * 250_000}


def hostile_bodies(namespace: str, pool: str, ordinary_pool: str, count: int,
                   kinds: tuple[str, ...] = KINDS, shape: str = "blob") -> list[dict[str, Any]]:
    """`count` hostile reservations, the `kinds` in turn; those on `pool` wait behind a holder
    of all of it."""
    bodies = []
    for index in range(count):
        kind = KINDS.index(kinds[index % len(kinds)])
        spec: dict[str, Any] = {"pool": pool, "duration": "1h",
                                "request": {"nodes": 1, "coresPerSlot": 8},
                                "nextAvailable": False}
        if kind == 0:  # costly constraints; every other one past the budget
            spec["constraints"] = costliest_constraints(f"{pool}-n")
            if index % 8 == 4:
                spec["constraints"] = {"or": [{"hostlist": ["n0[0-262143]"] * 8}] * 8}
        elif kind == 1:  # fractional deadlines on a pool that does not exist
            spec["pool"] = f"missing-{index}"
            spec["maxWait"] = f"{30 + index}.01s"
        elif kind == 2:  # spec.pool churn (renamed during the measurement)
            spec["pool"] = f"churn-{index}-0"
        else:  # the largest config, echoed to status once granted (on the ordinary pool)
            spec["pool"] = ordinary_pool
            spec["request"] = {"coresPerSlot": 1}
            spec["nextAvailable"] = True
            spec["config"] = maximal_config(shape)
        bodies.append({"apiVersion": "respool.io/v1alpha1", "kind": "ResourceReservation",
                       "metadata": {"name": f"h{index:04d}", "namespace": namespace},
                       "spec": spec})
    return bodies


def operator_peak_mb(bench: Bench) -> float:
    """The operator's peak RSS so far (VmHWM): what a memory limit would have met."""
    assert bench.operator is not None
    for line in Path(f"/proc/{bench.operator.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def wait_decided(bench: Bench, namespace: str, count: int, timeout: float) -> None:
    """Until `count` reservations of the namespace have a phase (polled every 2 s: each
    listing carries every maximal config)."""
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = await bench.count_phases(namespace)
        if sum(n for phase, n in counts.items() if phase != "none") >= count:
            return
        await asyncio.sleep(2)
    raise RuntimeError(f"{namespace}: not all {count} decided in {timeout}s: {counts}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


#: A process that does nothing but what the operator's lag sampler does (sleep 0.1 s, note
#: how late it woke): its lag is what this machine's load alone costs a loop at that moment.
FLOOR_SAMPLER = """
import asyncio, sys, time
async def main():
    while True:
        began = time.monotonic()
        await asyncio.sleep(0.1)
        now = time.monotonic()
        print(f"{now:.4f} {max(0.0, now - began - 0.1):.6f}", flush=True)
asyncio.run(main())
"""


class FloorSampler:
    """The machine's own loop lag beside the operator's (FLOOR_SAMPLER in a subprocess)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        handle = path.open("w")
        self.process = subprocess.Popen([sys.executable, "-c", FLOOR_SAMPLER], stdout=handle)
        handle.close()

    def lags(self, since: float, until: float) -> list[float]:
        values = []
        for line in self.path.read_text().splitlines():
            when, _, lag = line.partition(" ")
            with contextlib.suppress(ValueError):
                if since <= float(when) <= until:
                    values.append(float(lag))
        return values

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class HostileBench(Bench):
    profile = ""  # --profile: run the operator under cProfile, written here when it stops
    decisions_logged = False  # --log-decisions: the operator logs every decision (not -q)
    slow_callback_ms: float | None = None  # --slow-callback-ms: passed to respool run
    floor: FloorSampler | None = None

    def start_operator(self, log: Path) -> None:
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, PYTHONUNBUFFERED="1")
        handle = log.open("ab")
        profile = ["-m", "cProfile", "-o", self.profile] if self.profile else []
        quiet = [] if self.decisions_logged else ["-q"]
        self.operator = subprocess.Popen(
            [sys.executable, *profile, "-m", "respool.cli.main", "run", "--log-format", "full",
             *quiet,
             "--liveness", f"http://127.0.0.1:{LIVENESS_PORT}/healthz",
             "--metrics-port", str(METRICS_PORT),
             *([f"--slow-callback-ms={self.slow_callback_ms}"]
               if self.slow_callback_ms else [])],
            stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        handle.close()

    async def sample_lag(self, samples: list[float], stop: asyncio.Event) -> None:
        """The liveness endpoint's answer time every 50 ms (in a thread: not on our loop)."""
        url = f"http://127.0.0.1:{LIVENESS_PORT}/healthz"

        def once() -> float:
            began = time.perf_counter()
            try:
                with urllib.request.urlopen(url, timeout=10) as answer:
                    answer.read()
            except OSError:
                return float("nan")
            return time.perf_counter() - began

        while not stop.is_set():
            value = await asyncio.to_thread(once)
            if value == value:  # not NaN
                samples.append(value)
            await asyncio.sleep(0.05)

    async def ordinary(self, namespace: str, pool: str, count: int,
                       rate: float) -> list[float]:
        ready: dict[str, float] = {}
        created: dict[str, float] = {}
        watch = asyncio.create_task(self._watch_ready(namespace, ready, count))
        await asyncio.sleep(0.5)
        began = time.monotonic()
        tasks = []
        for index in range(count):
            delay = began + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            name = f"o{index:04d}"
            created[name] = time.monotonic()
            body = rsv_body(namespace, name, pool)
            body["spec"]["duration"] = "10m"
            tasks.append(asyncio.create_task(self.api.post(reservation_path(namespace), body)))
        await asyncio.gather(*tasks)
        await self._until_ready(watch, set(created), ready, 600)
        return [ready[name] - created[name] for name in created]

    @staticmethod
    def _operator_lag(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
        return {"loop_lag_p99_le_s": histogram_quantile(before, after, 0.99),
                "loop_lag_p50_le_s": histogram_quantile(before, after, 0.5)}

    async def churn(self, namespace: str, names: list[str], stop: asyncio.Event) -> int:
        edits = 0
        while not stop.is_set():
            for name in names:
                edits += 1
                with contextlib.suppress(ApiError):
                    await self.api.merge_patch(reservation_path(namespace, name),
                                               {"spec": {"pool": f"{name}-{edits}"}})
            await asyncio.sleep(0.05)
        return edits

    async def measure(self, tag: str, pool: str, count: int, rate: float,
                      churn: list[str] | None, hostile_ns: str) -> dict[str, float]:
        namespace = f"bench-{tag}-{int(time.time())}"
        await self.namespace(namespace)
        lag: list[float] = []
        stop = asyncio.Event()
        histogram_before = await asyncio.to_thread(lag_buckets)
        load_before = os.getloadavg()[0]
        began = time.monotonic()
        sampler = asyncio.create_task(self.sample_lag(lag, stop))
        churner = asyncio.create_task(self.churn(hostile_ns, churn, stop)) if churn else None
        try:
            latencies = await self.ordinary(namespace, pool, count, rate)
        finally:
            stop.set()
            await sampler
            edits = await churner if churner is not None else 0
        histogram_after = await asyncio.to_thread(lag_buckets)
        floor = self.floor.lags(began, time.monotonic()) if self.floor is not None else []
        return {"load_avg_1m": round((load_before + os.getloadavg()[0]) / 2, 1),
                "floor_lag_p50_s": statistics.median(floor) if floor else float("nan"),
                "floor_lag_p99_s": percentile(floor, 0.99) if floor else float("nan"),
                **self._operator_lag(histogram_before, histogram_after),
                "p50_s": statistics.median(latencies), "p99_s": percentile(latencies, 0.99),
                "lag_p50_s": statistics.median(lag) if lag else float("nan"),
                "lag_p99_s": percentile(lag, 0.99) if lag else float("nan"),
                "lag_max_s": max(lag) if lag else float("nan"), "pool_edits": edits}


def floor_text(figures: dict[str, float]) -> str:
    return (f"the machine's own loop lag meanwhile (an idle process beside it) p50 "
            f"{figures['floor_lag_p50_s'] * 1000:.1f} ms, p99 "
            f"{figures['floor_lag_p99_s'] * 1000:.0f} ms; load average "
            f"{figures['load_avg_1m']}")


async def memory_part(bench: HostileBench, args: argparse.Namespace, ordinary_pool: str,
                      workdir: Path, results: dict[str, Any]) -> None:
    # Part 2: a restart with many maximal configs present.
    configs_ns = "bench-configs"
    await bench.namespace(configs_ns)

    async def create(index: int) -> None:
        try:
            await bench.api.post(reservation_path(configs_ns), {
                "apiVersion": "respool.io/v1alpha1", "kind": "ResourceReservation",
                "metadata": {"name": f"c{index:04d}", "namespace": configs_ns},
                "spec": {"pool": ordinary_pool, "duration": "1h",
                         "request": {"coresPerSlot": 1},
                         "config": maximal_config(args.config_shape, "y")}})
        except ApiError as exc:
            # A create whose answer came too late (the API server takes seconds per large
            # object) is sent again and finds its object there.
            if exc.status != 409:
                raise

    await bench.bounded([create(index) for index in range(args.configs)])
    await bench.wait_all(configs_ns, args.configs, "Active", 900)
    bench.stop_operator()
    bench.start_operator(workdir / "operator.log")
    await bench.wait_operator_ready()
    await asyncio.sleep(3)
    rss, peak = bench.operator_rss_mb(), operator_peak_mb(bench)
    results["restart_rss_mb"] = round(rss, 1)
    results["restart_peak_rss_mb"] = round(peak, 1)
    print(f"RSS after a restart with {args.configs} x 255 kB configs "
          f"({args.config_shape}): {rss:.0f} MB, peak {peak:.0f} MB "
          f"(chart limit {CHART_MEMORY_LIMIT_MB} Mi)", flush=True)


async def main_async(args: argparse.Namespace, kubeconfig: str, workdir: Path) -> dict[str, Any]:
    bench = HostileBench(kubeconfig, args.concurrency)
    bench.profile = args.profile or ""
    bench.decisions_logged = args.log_decisions
    bench.slow_callback_ms = args.slow_callback_ms
    bench.floor = FloorSampler(workdir / "floor-lag.txt")
    results: dict[str, Any] = {"hostile": args.hostile, "ordinary": args.ordinary,
                               "rate": args.rate}
    ordinary_pool, hostile_pool = "bench-ordinary", "bench-hostile-pool"
    for name, ranks in ((ordinary_pool, 16), (hostile_pool, 8)):
        try:
            await bench.api.post(pool_path(), pool_body(name, ranks, 64))
        except ApiError as exc:
            if exc.status != 409:
                raise
    try:
        bench.start_operator(workdir / "operator.log")
        await bench.wait_operator_ready()
        if args.skip_latency:
            await memory_part(bench, args, ordinary_pool, workdir, results)
            return results
        baseline = await bench.measure("baseline", ordinary_pool, args.ordinary, args.rate,
                                       None, "")
        results["baseline"] = baseline
        print(f"baseline: create->Active p50 {baseline['p50_s'] * 1000:.0f} ms, p99 "
              f"{baseline['p99_s'] * 1000:.0f} ms; liveness answer p99 "
              f"{baseline['lag_p99_s'] * 1000:.0f} ms; operator's loop lag p99 <= "
              f"{baseline['loop_lag_p99_le_s'] * 1000:.0f} ms; {floor_text(baseline)}",
              flush=True)
        hostile_ns = "bench-hostile"
        await bench.namespace(hostile_ns)
        blocker = rsv_body(hostile_ns, "blocker", hostile_pool)
        blocker["spec"]["request"] = {"nodes": 8, "coresPerSlot": 64}
        await bench.api.post(reservation_path(hostile_ns), blocker)
        kinds = tuple(args.kinds.split(","))
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise SystemExit(f"unknown --kinds {sorted(unknown)}; choose from {KINDS}")
        results["kinds"] = list(kinds)
        bodies = hostile_bodies(hostile_ns, hostile_pool, ordinary_pool, args.hostile, kinds,
                                args.config_shape)
        arrived = time.monotonic()
        await bench.bounded([bench.api.post(reservation_path(hostile_ns), body)
                             for body in bodies])
        if args.settle:
            # "Present": every hostile reservation decided once before the measurement (the
            # churned ones keep changing during it), so the figure is not the time the API
            # server takes to store and echo ~100 objects of up to 0.5 MB each.
            await wait_decided(bench, hostile_ns, args.hostile + 1, 900)
            results["hostile_settled_s"] = round(time.monotonic() - arrived, 1)
            print(f"hostile reservations all decided {results['hostile_settled_s']} s after "
                  "their creation began", flush=True)
        churn = [b["metadata"]["name"] for b in bodies if b["spec"]["pool"].startswith("churn")]
        hostile = await bench.measure("hostile", ordinary_pool, args.ordinary, args.rate,
                                      churn, hostile_ns)
        results["with_hostile"] = hostile
        results["p99_ratio"] = round(hostile["p99_s"] / baseline["p99_s"], 2)
        results["lag_p99_ratio"] = round(hostile["lag_p99_s"] / baseline["lag_p99_s"], 2)
        print(f"with {args.hostile} hostile: create->Active p50 {hostile['p50_s'] * 1000:.0f} "
              f"ms, p99 {hostile['p99_s'] * 1000:.0f} ms (target < 1000 ms; "
              f"{results['p99_ratio']}x baseline); liveness answer p50 "
              f"{hostile['lag_p50_s'] * 1000:.0f} ms, p99 {hostile['lag_p99_s'] * 1000:.0f} ms "
              f"(target < 50 ms), max {hostile['lag_max_s'] * 1000:.0f} ms; operator's own "
              f"loop lag histogram: p50 <= {hostile['loop_lag_p50_le_s'] * 1000:.0f} ms, p99 <= "
              f"{hostile['loop_lag_p99_le_s'] * 1000:.0f} ms; "
              f"{hostile['pool_edits']} spec.pool edits; {floor_text(hostile)}", flush=True)
        if args.skip_memory:
            return results
        await memory_part(bench, args, ordinary_pool, workdir, results)
    finally:
        bench.stop_operator()
        bench.floor.stop()
        await bench.api.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="use this cluster instead of a private one")
    parser.add_argument("--hostile", type=int, default=100)
    parser.add_argument("--ordinary", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5.0, help="ordinary creates per second")
    parser.add_argument("--configs", type=int, default=100)
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"hostile kinds, in turn (default all: {','.join(KINDS)})")
    parser.add_argument("--skip-memory", action="store_true", help="only the latency part")
    parser.add_argument("--skip-latency", action="store_true", help="only the memory part")
    parser.add_argument("--config-shape", choices=("blob", "objects"), default="blob",
                        help="maximal spec.config: one 250 kB string (largest) or ~85,000 "
                        "empty objects (costliest to parse)")
    parser.add_argument("--settle", action=argparse.BooleanOptionalAction, default=True,
                        help="measure once every hostile reservation was decided once "
                        "(--no-settle: while they arrive)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--log-decisions", action="store_true",
                        help="the operator logs every decision with its time (not -q)")
    parser.add_argument("--slow-callback-ms", type=float, default=None, metavar="MS",
                        help="the operator logs each event loop callback longer than MS ms "
                        "with where it was (respool run --slow-callback-ms)")
    parser.add_argument("--profile", help="run the operator under cProfile, writing its "
                        "statistics to this file when it stops (pstats format)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="respool-bench-hostile-"))
    plane = None
    kubeconfig = args.kubeconfig
    if kubeconfig is None:
        from respool.devcluster import ControlPlane

        plane = ControlPlane(workdir / "plane", name="respool-bench-hostile",
                             die_with_parent=True)
        plane.start()
        kubeconfig = str(plane.kubeconfig)
        kubectl = [str(plane.bin_dir / "kubectl"), "--kubeconfig", kubeconfig]
        subprocess.run([*kubectl, "apply", "--server-side", "-f", str(REPO / "crds")],
                       check=True, capture_output=True)
        subprocess.run([*kubectl, "wait", "--for=condition=Established", "--timeout=60s",
                        "crd", "--all"], check=True, capture_output=True)
    try:
        results = asyncio.run(main_async(args, kubeconfig, workdir))
    finally:
        if plane is not None:
            plane.stop()
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"(operator log: {workdir / 'operator.log'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
