"""Operator benchmark: throughput vs the API server's own, create->Ready latency, memory.

Run (starts a private control plane unless --kubeconfig is given):

    .venv/bin/python bench/bench_operator.py                 # all three parts
    .venv/bin/python bench/bench_operator.py --parts throughput,latency --count 1000

Parts, all in one run against the same API server:
1. throughput - baseline: plain create + one status patch per object (what the API server
   accepts, same client, same concurrency); then the operator: reservations created as fast
   as the same client can, timed until every one is Active. Reports both rates and the ratio
   (target >= 50%).
2. latency - reservations created at a steady rate (default 50/s); create->Ready measured from
   a watch; p50/p99 (target p99 < 1 s).
3. memory - 10,000 reservations over 100 pools, all decided; the operator's RSS (target
   < 200 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kopf

from respool.controller.kubeapi import (
    ApiError,
    KubeApi,
    pool_path,
    reservation_path,
    watch_events,
)

REPO = Path(__file__).resolve().parents[1]
GROUP_VERSION = "respool.io/v1alpha1"


def pool_body(name: str, ranks: int, cores: int) -> dict[str, Any]:
    return {"apiVersion": GROUP_VERSION, "kind": "ResourcePool", "metadata": {"name": name},
            "spec": {"resources": {"version": 1, "execution": {
                "R_lite": [{"rank": f"0-{ranks - 1}", "children": {"core": f"0-{cores - 1}"}}],
                "nodelist": [f"{name}-n[0-{ranks - 1}]"]}}}}


def rsv_body(namespace: str, name: str, pool: str) -> dict[str, Any]:
    return {"apiVersion": GROUP_VERSION, "kind": "ResourceReservation",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"pool": pool, "duration": "1h", "request": {"coresPerSlot": 1}}}


class Bench:
    def __init__(self, kubeconfig: str, concurrency: int) -> None:
        os.environ["KUBECONFIG"] = kubeconfig
        self.kubeconfig = kubeconfig
        self.api = KubeApi(kopf.login_with_kubeconfig(settings=kopf.OperatorSettings()),
                           max_connections=concurrency)
        self.concurrency = concurrency
        self.operator: subprocess.Popen[bytes] | None = None

    async def namespace(self, name: str) -> None:
        try:
            await self.api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": name}})
        except ApiError as exc:
            if exc.status != 409:
                raise

    async def bounded(self, jobs: list[Any]) -> None:
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(job: Any) -> None:
            async with semaphore:
                await job

        await asyncio.gather(*(one(job) for job in jobs))

    # -- operator process ----------------------------------------------------------------------

    def start_operator(self, log: Path) -> None:
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, PYTHONUNBUFFERED="1")
        handle = log.open("ab")
        self.operator = subprocess.Popen(
            [sys.executable, "-m", "respool.cli.main", "run", "--log-format", "full", "-q"],
            stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        handle.close()

    def stop_operator(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            self.operator.send_signal(signal.SIGTERM)
            try:
                self.operator.wait(20)
            except subprocess.TimeoutExpired:
                self.operator.kill()
        self.operator = None

    def operator_rss_mb(self) -> float:
        assert self.operator is not None
        for line in Path(f"/proc/{self.operator.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    async def wait_operator_ready(self) -> None:
        # Ready when it has decided a probe reservation.
        await self.namespace("bench-probe")
        name = f"probe-{int(time.time() * 1000)}"
        try:
            await self.api.post(pool_path(), pool_body("bench-probe", 1, 1))
        except ApiError as exc:
            if exc.status != 409:
                raise
        await self.api.post(reservation_path("bench-probe"),
                            rsv_body("bench-probe", name, "bench-probe"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            obj = await self.api.get(reservation_path("bench-probe", name))
            if (obj.get("status") or {}).get("phase"):
                return
            await asyncio.sleep(0.2)
        raise RuntimeError("the operator did not start deciding within 120 s")

    async def count_phases(self, namespace: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        async for obj in self.api.list_items(reservation_path(namespace), page_size=2000):
            phase = (obj.get("status") or {}).get("phase") or "none"
            counts[phase] = counts.get(phase, 0) + 1
        return counts

    async def wait_all(self, namespace: str, count: int, phase: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = await self.count_phases(namespace)
            if counts.get(phase, 0) >= count:
                return time.monotonic()
            await asyncio.sleep(0.25)
        raise RuntimeError(f"{namespace}: not all {count} {phase} in {timeout}s: {counts}")

    # -- part 1 --------------------------------------------------------------------------------

    async def baseline(self, count: int) -> float:
        """Plain create + one status patch per object, no operator involved."""
        namespace = f"bench-baseline-{int(time.time())}"
        await self.namespace(namespace)

        async def one(index: int) -> None:
            name = f"b{index:05d}"
            await self.api.post(reservation_path(namespace),
                                rsv_body(namespace, name, "no-such-pool"))
            await self.api.merge_patch(reservation_path(namespace, name, status=True),
                                       {"status": {"phase": "Active", "reservationId": name}})

        began = time.monotonic()
        await self.bounded([one(i) for i in range(count)])
        return count / (time.monotonic() - began)

    async def throughput(self, count: int, pools: int) -> float:
        """Reservations created as fast as the client can; the time each turns Active is taken
        from a watch (polling LISTs would load the API server being measured)."""
        namespace = f"bench-throughput-{int(time.time())}"
        await self.namespace(namespace)
        per_pool = -(-count // pools)
        for index in range(pools):
            await self.api.post(pool_path(), pool_body(f"{namespace}-{index}", 8,
                                                       max(8, per_pool)))
        await asyncio.sleep(1.0)
        ready: dict[str, float] = {}
        watch = asyncio.create_task(self._watch_ready(namespace, ready, count))
        await asyncio.sleep(0.5)
        began = time.monotonic()
        await self.bounded([
            self.api.post(reservation_path(namespace),
                          rsv_body(namespace, f"t{i:05d}", f"{namespace}-{i % pools}"))
            for i in range(count)])
        await self._until_ready(watch, {f"t{i:05d}" for i in range(count)}, ready, 900)
        return count / (max(ready.values()) - began)

    # -- part 2 --------------------------------------------------------------------------------

    async def latency(self, count: int, rate: float) -> tuple[float, float, float]:
        namespace = f"bench-latency-{int(time.time())}"
        await self.namespace(namespace)
        await self.api.post(pool_path(), pool_body(namespace, 16, max(8, count // 16 + 1)))
        await asyncio.sleep(1.0)
        created: dict[str, float] = {}
        ready: dict[str, float] = {}
        watch = asyncio.create_task(self._watch_ready(namespace, ready, count))
        await asyncio.sleep(0.5)
        began = time.monotonic()
        tasks = []
        for index in range(count):
            target = began + index / rate
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            name = f"l{index:05d}"
            created[name] = time.monotonic()
            tasks.append(asyncio.create_task(self.api.post(
                reservation_path(namespace), rsv_body(namespace, name, namespace))))
        await asyncio.gather(*tasks)
        achieved = count / (time.monotonic() - began)
        await self._until_ready(watch, set(created), ready, 300)
        latencies = sorted(ready[name] - created[name] for name in created)
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        return achieved, p50, p99

    async def _until_ready(self, watch: asyncio.Task[None], names: set[str],
                           ready: dict[str, float], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not names <= ready.keys():
            if watch.done():
                watch.result()  # raises what stopped the watch
                raise RuntimeError("the watch ended before every reservation was Active")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(names - ready.keys())} of {len(names)} reservations "
                                   f"not Active after {timeout}s")
            await asyncio.sleep(0.1)
        watch.cancel()

    async def _watch_ready(self, namespace: str, ready: dict[str, float], count: int) -> None:
        """Note when each reservation is first seen Active (reconnecting as watches end)."""
        _items, version = await self._list_version(reservation_path(namespace))
        while True:
            async for event in watch_events(self.api, reservation_path(namespace), version):
                now = time.monotonic()
                obj = event.get("object") or {}
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if (obj.get("status") or {}).get("phase") == "Active":
                    ready.setdefault(obj["metadata"]["name"], now)

    async def _list_version(self, path: str) -> tuple[list[dict[str, Any]], str]:
        answer = await self.api.request("GET", path, params={"limit": "1"})
        return answer.get("items") or [], str((answer.get("metadata") or {})
                                               .get("resourceVersion") or "")

    # -- part 3 --------------------------------------------------------------------------------

    async def memory(self, count: int, pools: int) -> tuple[float, float, dict[str, int]]:
        namespace = f"bench-memory-{int(time.time())}"
        await self.namespace(namespace)
        per_pool = count // pools
        for index in range(pools):
            await self.api.post(pool_path(), pool_body(f"{namespace}-{index:03d}", 4,
                                                       max(8, per_pool // 4 + 1)))
        baseline = self.operator_rss_mb()
        ready: dict[str, float] = {}
        watch = asyncio.create_task(self._watch_ready(namespace, ready, count))
        await asyncio.sleep(0.5)
        await self.bounded([
            self.api.post(reservation_path(namespace),
                          rsv_body(namespace, f"m{i:05d}", f"{namespace}-{i % pools:03d}"))
            for i in range(count)])
        await self._until_ready(watch, {f"m{i:05d}" for i in range(count)}, ready, 1800)
        await asyncio.sleep(3)
        return baseline, self.operator_rss_mb(), await self.count_phases(namespace)


async def main_async(args: argparse.Namespace, kubeconfig: str, workdir: Path) -> dict[str, Any]:
    bench = Bench(kubeconfig, args.concurrency)
    results: dict[str, Any] = {"count": args.count, "concurrency": args.concurrency}
    parts = set(args.parts.split(","))
    try:
        if "throughput" in parts:
            results["baseline_per_s"] = round(await bench.baseline(args.count), 1)
            print(f"baseline create+status patch: {results['baseline_per_s']}/s", flush=True)
        bench.start_operator(workdir / "operator.log")
        await bench.wait_operator_ready()
        if "throughput" in parts:
            results["active_per_s"] = round(await bench.throughput(args.count, args.pools), 1)
            results["ratio"] = round(results["active_per_s"] / results["baseline_per_s"], 3)
            print(f"operator reservations to Active: {results['active_per_s']}/s "
                  f"(ratio {results['ratio']:.0%}, target >= 50%)", flush=True)
        if "latency" in parts:
            achieved, p50, p99 = await bench.latency(args.latency_count, args.rate)
            results.update(latency_rate=round(achieved, 1), p50_s=round(p50, 3),
                           p99_s=round(p99, 3))
            print(f"create->Ready at {achieved:.1f}/s: p50 {p50 * 1000:.0f} ms, "
                  f"p99 {p99 * 1000:.0f} ms (target p99 < 1000 ms)", flush=True)
        if "memory" in parts:
            before, after, phases = await bench.memory(args.memory_count, args.memory_pools)
            results.update(rss_start_mb=round(before, 1), rss_mb=round(after, 1),
                           memory_phases=phases)
            print(f"operator RSS with {args.memory_count} reservations over "
                  f"{args.memory_pools} pools: {after:.0f} MB (at start {before:.0f} MB; "
                  f"target < 200 MB)", flush=True)
    finally:
        bench.stop_operator()
        await bench.api.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="use this cluster instead of a private one")
    parser.add_argument("--parts", default="throughput,latency,memory")
    parser.add_argument("--count", type=int, default=2000, help="objects for the throughput part")
    parser.add_argument("--pools", type=int, default=10, help="pools for the throughput part")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=50.0, help="creates/s for the latency part")
    parser.add_argument("--latency-count", type=int, default=1000)
    parser.add_argument("--memory-count", type=int, default=10000)
    parser.add_argument("--memory-pools", type=int, default=100)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    # On SIGTERM, unwind through the finally blocks: they stop the operator and the plane.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="respool-bench-"))
    plane = None
    kubeconfig = args.kubeconfig
    if kubeconfig is None:
        from respool.devcluster import ControlPlane

        plane = ControlPlane(workdir / "plane", name="respool-bench", die_with_parent=True)
        plane.start()
        kubeconfig = str(plane.kubeconfig)
        subprocess.run([str(plane.bin_dir / "kubectl"), "--kubeconfig", kubeconfig, "apply",
                        "--server-side", "-f", os.environ.get("RESPOOL_BENCH_CRDS",
                                                              str(REPO / "crds"))],
                       check=True, capture_output=True)
        subprocess.run([str(plane.bin_dir / "kubectl"), "--kubeconfig", kubeconfig, "wait",
                        "--for=condition=Established", "--timeout=60s", "crd", "--all"],
                       check=True, capture_output=True)
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
