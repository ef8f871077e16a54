"""Dev-cluster scale benchmark: many simulated Nodes and Pods, and what the plane then weighs.

Run (starts a private whole cluster in a temp dir; nothing else is touched):

    .venv/bin/python bench/bench_devcluster.py                        # 1,000 Nodes, 10,000 Pods
    .venv/bin/python bench/bench_devcluster.py --nodes 100 --pods 1000

Steps: start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok; create the
Nodes (kwok makes them Ready); create Deployments of ``--pods`` replicas in total (the
controller-manager makes the Pods, the scheduler binds them, kwok makes them Running); wait
until every Pod runs; sample each process's RSS (``/proc/<pid>/status`` VmRSS) and report it
with the total against the goal (``--goal-gib``, default 2 GiB) as a ratio. Times are reported
too, as information for the next scale test, never as a pass/fail criterion.

Prints one JSON object. Exit status 0 when the plane held everything (all Pods Running);
whether RSS met the goal is in ``rss_ratio_of_goal`` (<= 1.0 meets it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from respool.devcluster import ControlPlane

NAMESPACE = "scale"
PODS_PER_DEPLOYMENT = 1000


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def plane_rss(plane: ControlPlane) -> dict[str, float]:
    state = plane.state
    assert state is not None
    pids = {"etcd": state.etcd_pid, "kube-apiserver": state.apiserver_pid}
    pids.update({name: component["pid"] for name, component in state.components.items()})
    return {name: round(rss_mib(pid), 1) for name, pid in pids.items()}


def create_nodes(plane: ControlPlane, count: int, workers: int = 8) -> list[str]:
    names = [f"scale-node-{index:04d}" for index in range(count)]
    chunks = [names[start::workers] for start in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        # ensure_fake_nodes without waiting: the wait below covers them all at once.
        list(pool.map(lambda chunk: plane.ensure_fake_nodes(chunk, wait=False), chunks))
    return names


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "registry.invalid/scale:1"}]},
            },
        },
    }


def running_pods(plane: ControlPlane) -> int:
    """Pods in NAMESPACE whose phase is Running, counted page by page (small responses)."""
    total, token = 0, ""
    while True:
        path = f"/api/v1/namespaces/{NAMESPACE}/pods?fieldSelector=status.phase%3DRunning&limit=2000"
        if token:
            path += f"&continue={token}"
        status, body = plane._api("GET", path, timeout=120)
        if status != 200:
            raise RuntimeError(f"listing Pods: HTTP {status}: {body}")
        total += len(body.get("items", []))
        token = (body.get("metadata") or {}).get("continue") or ""
        if not token:
            return total


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--goal-gib", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for all Pods")
    args = parser.parse_args(argv)

    report: dict[str, Any] = {"nodes": args.nodes, "pods": args.pods}
    with tempfile.TemporaryDirectory(prefix="respool-bench-cluster-") as workdir:
        plane = ControlPlane(workdir, whole_cluster=True, die_with_parent=True, start_timeout=300)
        started = time.monotonic()
        plane.start()
        try:
            report["start_seconds"] = round(time.monotonic() - started, 1)
            report["rss_mib_idle"] = plane_rss(plane)

            began = time.monotonic()
            names = create_nodes(plane, args.nodes)
            plane.wait_nodes_ready(names, timeout=args.timeout)
            report["nodes_ready_seconds"] = round(time.monotonic() - began, 1)

            status, body = plane._api("POST", "/api/v1/namespaces",
                                      {"metadata": {"name": NAMESPACE}})
            if status != 201:
                raise RuntimeError(f"creating namespace: HTTP {status}: {body}")
            began = time.monotonic()
            remaining, index = args.pods, 0
            while remaining > 0:
                replicas = min(PODS_PER_DEPLOYMENT, remaining)
                status, body = plane._api(
                    "POST", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
                    deployment(f"scale-{index}", replicas))
                if status != 201:
                    raise RuntimeError(f"creating Deployment: HTTP {status}: {body}")
                remaining -= replicas
                index += 1
            deadline = time.monotonic() + args.timeout
            peak: dict[str, float] = {}
            running = 0
            while time.monotonic() < deadline:
                for name, value in plane_rss(plane).items():
                    peak[name] = max(peak.get(name, 0.0), value)
                running = running_pods(plane)
                print(f"running Pods: {running}/{args.pods} after "
                      f"{time.monotonic() - began:.0f}s", file=sys.stderr, flush=True)
                if running >= args.pods:
                    break
                time.sleep(5)
            report["pods_running"] = running
            report["pods_running_seconds"] = round(time.monotonic() - began, 1)
            held = plane_rss(plane)
            report["rss_mib_holding"] = held
            report["rss_mib_peak"] = peak
            total = sum(held.values())
            report["rss_mib_total"] = round(total, 1)
            report["rss_ratio_of_goal"] = round(total / (args.goal_gib * 1024), 3)
            alive = plane.processes_alive()
            report["all_processes_alive"] = all(alive.values())
        finally:
            plane.stop()
    print(json.dumps(report, indent=2))
    return 0 if report.get("pods_running", 0) >= args.pods and report.get("all_processes_alive") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
