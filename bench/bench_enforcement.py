"""Workloads consume reservations (issue 13): the webhook, the scheduling gate, Node enforcement.

Run (starts a private whole cluster - etcd, kube-apiserver, scheduler, controller-manager,
kwok - and the operator with its webhook; a few minutes):

    .venv/bin/python bench/bench_enforcement.py
    .venv/bin/python bench/bench_enforcement.py --parts webhook --pods 1000 --rate 100

Parts:
1. webhook - Pods created at a steady rate (default 100/s) for 10 s, labelled with a reservation
   that is Scheduled (so they are gated: admission does all its work, the scheduler none), then
   as many unlabelled Pods at the same rate. Reports the create latency seen by the client,
   p50/p99, labelled vs unlabelled (the difference is what the webhook adds, TLS and the API
   server's call included), and p99 of the time in the handler (the operator's histogram
   respool_webhook_admission_seconds). Target: admission p99 < 20 ms.
2. gates - 20 reservations whose windows open together, 10 gated Pods each; for each Pod, the
   time from the bench seeing its reservation Active (a watch) to seeing its gate gone (a
   watch). p50/p99; target p99 < 1 s.
3. scale - 1,000 simulated Nodes in one enforcing pool; 200 exclusive reservations of 5 whole
   Nodes each created at once: time until all 1,000 Nodes carry their taint, then until all
   are clear after the reservations are deleted; the operator's event-loop lag p99 meanwhile
   (respool_event_loop_lag_seconds; "not falling behind": no second-long stalls).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kopf

from respool.controller.kubeapi import ApiError, KubeApi, pool_path, reservation_path, watch_events
from respool.devcluster import ControlPlane

REPO = Path(__file__).resolve().parents[1]
GV = "respool.io/v1alpha1"
LABEL = "respool.io/reservation"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def pod(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "registry.invalid/x:1"}]}}


def pool(name: str, hosts: str, ranks: int, enforcement: str = "Taint") -> dict[str, Any]:
    return {"apiVersion": GV, "kind": "ResourcePool", "metadata": {"name": name},
            "spec": {"enforcement": enforcement, "resources": {"version": 1, "execution": {
                "R_lite": [{"rank": f"0-{ranks - 1}", "children": {"core": "0-3"}}],
                "nodelist": [hosts]}}, "policy": {"maxDuration": "48h"}}}


def rsv(namespace: str, name: str, pool_name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": GV, "kind": "ResourceReservation",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"pool": pool_name, "duration": "1h", **spec}}


def rfc3339(seconds_from_now: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds_from_now)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Bench:
    def __init__(self, plane: ControlPlane, workdir: Path) -> None:
        self.plane = plane
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        self.api = KubeApi(kopf.login_with_kubeconfig(settings=kopf.OperatorSettings()),
                           max_connections=64)
        self.metrics_port = free_port()
        log = (workdir / "operator.log").open("ab")
        env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "PYTHONUNBUFFERED": "1"}
        subprocess.run([str(plane.bin_dir / "kubectl"), "apply", "--server-side", "-f",
                        str(REPO / "crds")], env=env, check=True, capture_output=True)
        subprocess.run([str(plane.bin_dir / "kubectl"), "wait", "--for=condition=Established",
                        "crd/resourcepools.respool.io", "crd/resourcereservations.respool.io"],
                       env=env, check=True, capture_output=True)
        self.operator = subprocess.Popen(
            [sys.executable, "-m", "respool.cli.main", "run", "--quiet",
             "--metrics-port", str(self.metrics_port), "--webhook-port", str(free_port())],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    async def ready(self) -> None:
        for _ in range(600):
            try:
                config = await self.api.get("/apis/admissionregistration.k8s.io/v1/"
                                            "mutatingwebhookconfigurations/respool.io")
                if any((w.get("clientConfig") or {}).get("caBundle")
                       for w in config.get("webhooks") or []):
                    return
            except ApiError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError("the webhook was not registered")

    async def namespace(self, name: str) -> None:
        await self.api.post("/api/v1/namespaces", {"metadata": {"name": name}})

    async def wait_phase(self, namespace: str, name: str, phase: str) -> None:
        for _ in range(1500):
            obj = await self.api.get(reservation_path(namespace, name))
            if (obj.get("status") or {}).get("phase") == phase:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{namespace}/{name} never {phase}")

    def metric(self, name: str) -> dict[str, float]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as answer:
            text = answer.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(name):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def histogram_p99(self, name: str, label: str = "") -> float:
        buckets = [(float(m.group(1)) if m.group(1) != "+Inf" else float("inf"), v)
                   for k, v in self.metric(name + "_bucket").items()
                   if label in k and (m := re.search(r'le="([^"]+)"', k))]
        buckets.sort()
        total = buckets[-1][1] if buckets else 0
        return next((le for le, count in buckets if count >= 0.99 * total), float("nan"))

    async def paced(self, count: int, rate: float, make: Any) -> list[float]:
        latencies: list[float] = []

        async def one(index: int) -> None:
            began = time.perf_counter()
            await make(index)
            latencies.append(time.perf_counter() - began)

        start = time.perf_counter()
        tasks = []
        for index in range(count):
            await asyncio.sleep(max(0.0, start + index / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(index)))
        await asyncio.gather(*tasks)
        return latencies

    async def webhook(self, pods: int, rate: float) -> dict[str, Any]:
        ns = "bench-webhook"
        await self.namespace(ns)
        await self.api.post(pool_path(), pool("bench-webhook", "bw-n[0-1]", 2))
        await self.api.post(reservation_path(ns), rsv(ns, "later", "bench-webhook",
                                                      startTime=rfc3339(36000)))
        await self.wait_phase(ns, "later", "Scheduled")
        path = f"/api/v1/namespaces/{ns}/pods"
        labelled = await self.paced(pods, rate, lambda i: self.api.post(
            path, pod(f"l-{i}", {LABEL: "later"})))
        plain = await self.paced(pods, rate, lambda i: self.api.post(path, pod(f"p-{i}")))
        return {"pods": pods, "rate": rate,
                "labelled_ms": {"p50": pct(labelled, 0.5) * 1e3, "p99": pct(labelled, 0.99) * 1e3},
                "unlabelled_ms": {"p50": pct(plain, 0.5) * 1e3, "p99": pct(plain, 0.99) * 1e3},
                "handler_p99_ms_upper_bucket":
                    self.histogram_p99("respool_webhook_admission_seconds", "mutated") * 1e3}

    async def gates(self, reservations: int, per: int) -> dict[str, Any]:
        ns = "bench-gates"
        await self.namespace(ns)
        hosts = [f"bg-n{i}" for i in range(reservations)]
        await asyncio.to_thread(self.plane.ensure_fake_nodes, hosts, timeout=600)
        await self.api.post(pool_path(), pool("bench-gates", f"bg-n[0-{reservations - 1}]",
                                              reservations))
        start = rfc3339(40)
        for r in range(reservations):
            await self.api.post(reservation_path(ns), rsv(
                ns, f"r{r}", "bench-gates", startTime=start, nextAvailable=False,
                request={"nodes": 1, "exclusive": True}))
        for r in range(reservations):
            await self.wait_phase(ns, f"r{r}", "Scheduled")
            for p in range(per):
                await self.api.post(f"/api/v1/namespaces/{ns}/pods",
                                    pod(f"r{r}-{p}", {LABEL: f"r{r}"}))
        active_at: dict[str, float] = {}
        lifted_at: dict[str, float] = {}
        expected = reservations * per

        async def follow_reservations() -> None:
            listing = await self.api.get(reservation_path(ns))
            async for event in watch_events(self.api, reservation_path(ns),
                                            listing["metadata"]["resourceVersion"]):
                obj = event.get("object") or {}
                if (obj.get("status") or {}).get("phase") == "Active":
                    active_at.setdefault(obj["metadata"]["name"], time.perf_counter())

        async def follow_pods() -> None:
            path = f"/api/v1/namespaces/{ns}/pods"
            listing = await self.api.get(path)
            async for event in watch_events(self.api, path, listing["metadata"]["resourceVersion"]):
                obj = event.get("object") or {}
                if not (obj.get("spec") or {}).get("schedulingGates"):
                    lifted_at.setdefault(obj["metadata"]["name"], time.perf_counter())
                if len(lifted_at) >= expected:
                    return

        watcher = asyncio.create_task(follow_reservations())
        await asyncio.wait_for(follow_pods(), timeout=600)
        watcher.cancel()
        delays = [lifted_at[name] - active_at[name.rsplit("-", 1)[0]] for name in lifted_at]
        return {"reservations": reservations, "pods": expected,
                "lift_ms": {"p50": pct(delays, 0.5) * 1e3, "p99": pct(delays, 0.99) * 1e3,
                            "max": max(delays) * 1e3},
                "operator_lift_p99_upper_bucket_ms":
                    self.histogram_p99("respool_gate_lift_seconds") * 1e3}

    async def tainted(self, prefix: str) -> int:
        count = 0
        async for node in self.api.list_items("/api/v1/nodes"):
            if node["metadata"]["name"].startswith(prefix) and any(
                    t.get("key") == "respool.io/reserved"
                    for t in (node.get("spec") or {}).get("taints") or []):
                count += 1
        return count

    async def scale(self, nodes: int, reservations: int) -> dict[str, Any]:
        ns = "bench-scale"
        await self.namespace(ns)
        began = time.perf_counter()
        await asyncio.to_thread(self.plane.ensure_fake_nodes,
                                [f"bs-n{i}" for i in range(nodes)], timeout=1800)
        nodes_ready = time.perf_counter() - began
        await self.api.post(pool_path(), pool("bench-scale", f"bs-n[0-{nodes - 1}]", nodes))
        per = nodes // reservations
        lag_before = self.histogram_p99("respool_event_loop_lag_seconds")
        began = time.perf_counter()
        await asyncio.gather(*(self.api.post(reservation_path(ns), rsv(
            ns, f"s{r}", "bench-scale", request={"nodes": per, "exclusive": True}))
            for r in range(reservations)))
        while await self.tainted("bs-n") < per * reservations:
            await asyncio.sleep(0.5)
        all_tainted = time.perf_counter() - began
        began = time.perf_counter()
        await asyncio.gather(*(self.api.request("DELETE", reservation_path(ns, f"s{r}"))
                               for r in range(reservations)))
        while await self.tainted("bs-n") > 0:
            await asyncio.sleep(0.5)
        all_clear = time.perf_counter() - began
        return {"nodes": nodes, "reservations": reservations, "nodes_ready_s": nodes_ready,
                "create_to_all_tainted_s": all_tainted, "delete_to_all_clear_s": all_clear,
                "loop_lag_p99_upper_bucket_s": self.histogram_p99(
                    "respool_event_loop_lag_seconds"),
                "loop_lag_p99_before_s": lag_before}

    async def close(self) -> None:
        self.operator.terminate()
        self.operator.wait(timeout=30)
        await self.api.close()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="respool-bench-enf-"))
    plane = ControlPlane(workdir / "plane", name="respool-bench", die_with_parent=True,
                         whole_cluster=True)
    plane.start()
    bench = Bench(plane, workdir)
    results: dict[str, Any] = {"workdir": str(workdir), "load": os.getloadavg()}
    try:
        await bench.ready()
        parts = args.parts.split(",")
        if "webhook" in parts:
            results["webhook"] = await bench.webhook(args.pods, args.rate)
            print(json.dumps(results["webhook"]), flush=True)
        if "gates" in parts:
            results["gates"] = await bench.gates(20, 10)
            print(json.dumps(results["gates"]), flush=True)
        if "scale" in parts:
            results["scale"] = await bench.scale(args.nodes, args.reservations)
            print(json.dumps(results["scale"]), flush=True)
    finally:
        await bench.close()
        plane.stop()
    results["load_after"] = os.getloadavg()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="webhook,gates,scale")
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--reservations", type=int, default=200)
    parser.add_argument("--json", default=None)
    arguments = parser.parse_args()
    outcome = asyncio.run(main(arguments))
    print(json.dumps(outcome, indent=1, default=str))
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(outcome, indent=1, default=str))
