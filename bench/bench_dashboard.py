"""Dashboard benchmark: first render in headless Chromium and the server's memory, with
100 pools and 10,000 reservations; and how fast a change reaches an open page.

Run (starts a private control plane unless --kubeconfig is given; needs Debian's chromium
and chromium-driver):

    .venv/bin/python bench/bench_dashboard.py
    .venv/bin/python bench/bench_dashboard.py --pools 100 --reservations 10000 --loads 5

What it does:
1. creates the pools (16 ranks each) and the reservations, and writes each reservation's
   status as the operator would (Active now or Scheduled later, 2 ranks for 2 hours), so
   every one is a booking on a timeline (no operator runs: this measures the dashboard);
2. starts `respool dashboard`, waits until it has listed everything, reads its RSS;
3. loads the page `--loads` times in a fresh headless Chromium and reads, from the page's
   own performance marks, the time from navigation to the first painted frame with the pools
   (the first ones are drawn at once, the others in the tasks after it), and to every pool
   drawn (the targets: first render under 1 s; under 150 MB RSS);
4. with the page open, creates `--live` reservations one by one and measures, in the
   browser, how long after the API call returned each one was drawn (the 2 s promise).
Figures are reported with their ratio to the target.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.browser import DashboardProcess, start_chromium, stop_chromium  # noqa: E402

GROUP, VERSION = "respool.io", "v1alpha1"
RANKS = 16
TARGET_RENDER_S = 1.0
TARGET_RSS_MB = 150.0
TARGET_LIVE_S = 2.0


def rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def pool_body(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResourcePool", "metadata": {"name": name},
            "spec": {"resources": {"version": 1, "execution": {
                "R_lite": [{"rank": f"0-{RANKS - 1}", "children": {"core": "0-15"}}],
                "nodelist": [f"{name}-n[0-{RANKS - 1}]"]}}}}


def booking(pool: str, index: int, now: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The spec and the status of reservation `index` of `pool`: 2 ranks for 2 hours, 8 in a
    row side by side, the next 8 two hours later."""
    first = (index % (RANKS // 2)) * 2
    start = now - 3600 + (index // (RANKS // 2)) * 7200
    end = start + 7200
    spec = {"pool": pool, "startTime": rfc3339(start), "endTime": rfc3339(end),
            "request": {"nodes": 2}, "nextAvailable": False}
    status = {"phase": "Active" if start <= now else "Scheduled", "startTime": rfc3339(start),
              "endTime": rfc3339(end), "reservationId": f"{pool}-{index}",
              "allocated": {"ranks": f"{first}-{first + 1}",
                            "nodelist": f"{pool}-n[{first}-{first + 1}]"},
              "message": "granted"}
    return spec, status


def populate(kubeconfig: str, pools: int, reservations: int, namespace: str, workers: int) -> float:
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=kubeconfig)
    custom = client.CustomObjectsApi(api_client)
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": namespace}})
    began = time.monotonic()
    names = [f"bench-{p:03d}" for p in range(pools)]
    for name in names:
        custom.create_cluster_custom_object(GROUP, VERSION, "resourcepools", pool_body(name))
    now = time.time()

    def one(number: int) -> None:
        pool = names[number % pools]
        spec, status = booking(pool, number // pools, now)
        name = f"r{number:05d}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResourceReservation",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "resourcereservations", body)
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "resourcereservations", name, {"status": status})

    with ThreadPoolExecutor(workers) as pool_of_threads:
        list(pool_of_threads.map(one, range(reservations)))
    return time.monotonic() - began


def wait_synced(url: str, timeout: float) -> float:
    import urllib.error
    import urllib.request

    began = time.monotonic()
    while time.monotonic() - began < timeout:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=5) as answer:
                if answer.status == 200:
                    return time.monotonic() - began
        except urllib.error.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the dashboard did not list everything in {timeout}s")


FIRST_PAINT = """
const paint = performance.getEntriesByName('respool-first-paint')[0];
const render = performance.getEntriesByName('respool-first-render')[0];
const snapshot = performance.getEntriesByName('respool-snapshot-received')[0];
const all = performance.getEntriesByName('respool-all-drawn')[0];
return {all: all ? all.startTime : null,paint: paint ? paint.startTime : null, render: render ? render.startTime : null,
        snapshot: snapshot ? snapshot.startTime : null,
        bookings: document.querySelectorAll('g.booking').length,
        pools: document.querySelectorAll('section.pool').length};
"""

WATCH_FOR = """
window.respoolSeen = {};
new MutationObserver(() => {
  for (const el of document.querySelectorAll('g.booking[data-key^="' + arguments[0] + '"]')) {
    if (!(el.dataset.key in window.respoolSeen))
      window.respoolSeen[el.dataset.key] = performance.timeOrigin + performance.now();
  }
}).observe(document.getElementById('pool-list'), {childList: true, subtree: true});
"""


def measure(kubeconfig: str, args: argparse.Namespace, namespace: str, workdir: Path) -> dict[str, Any]:
    from kubernetes import client, config
    from selenium.webdriver.support.ui import WebDriverWait

    results: dict[str, Any] = {}
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    dashboard = DashboardProcess(env, workdir / "dashboard.log")
    url = dashboard.start()
    results["dashboard_list_s"] = round(wait_synced(url, 600), 2)
    results["rss_mb_after_list"] = round(dashboard.rss_bytes() / 2**20, 1)
    paints, renders, snapshots, everything = [], [], [], []
    try:
        for _ in range(args.loads):
            chrome = start_chromium(1600, 1000)
            try:
                chrome.set_page_load_timeout(120)
                chrome.get(url)
                WebDriverWait(chrome, 120, poll_frequency=0.05).until(
                    lambda c: c.execute_script("return document.body.dataset.complete === '1' "
                                               "&& document.body.dataset.ready === '1'"))
                figures = chrome.execute_script(FIRST_PAINT)
                assert figures["pools"] == args.pools, figures
                paints.append(figures["paint"] / 1000)
                renders.append(figures["render"] / 1000)
                snapshots.append(figures["snapshot"] / 1000)
                everything.append(figures["all"] / 1000)
                results["bookings_drawn"] = figures["bookings"]
            finally:
                stop_chromium(chrome)
        results["first_paint_s"] = {"median": round(statistics.median(paints), 3),
                                    "max": round(max(paints), 3), "all": [round(p, 3) for p in paints]}
        # Where the time goes: the page and the stream's snapshot arriving, then drawing.
        results["snapshot_received_s_median"] = round(statistics.median(snapshots), 3)
        results["first_render_script_done_s_median"] = round(statistics.median(renders), 3)
        results["load_average_1m_after_loads"] = round(os.getloadavg()[0], 2)
        # The pools out of view are drawn in the tasks after the first paint.
        results["all_pools_drawn_s"] = {"median": round(statistics.median(everything), 3),
                                        "max": round(max(everything), 3)}
        results["first_paint_vs_target_1s"] = round(statistics.median(paints) / TARGET_RENDER_S, 2)
        results["rss_mb_with_browsers"] = round(dashboard.rss_bytes() / 2**20, 1)

        # Live: a change reaches an open page.
        chrome = start_chromium(1600, 1000)
        try:
            chrome.get(url)
            WebDriverWait(chrome, 120, poll_frequency=0.05).until(
                lambda c: c.execute_script("return document.body.dataset.ready === '1'"))
            chrome.execute_script(WATCH_FOR, f"{namespace}/live-")
            api_client = config.new_client_from_config(config_file=kubeconfig)
            custom = client.CustomObjectsApi(api_client)
            delays = []
            now = time.time()
            for number in range(args.live):
                name = f"live-{number:03d}"
                spec, status = booking("bench-000", 200 + number, now)
                spec["startTime"], spec["endTime"] = rfc3339(now), rfc3339(now + 600)
                status.update(phase="Active", startTime=spec["startTime"], endTime=spec["endTime"])
                custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "resourcereservations", {
                    "apiVersion": f"{GROUP}/{VERSION}", "kind": "ResourceReservation",
                    "metadata": {"name": name, "namespace": namespace}, "spec": spec})
                custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, "resourcereservations", name, {"status": status})
                written = time.time()
                key = f"{namespace}/{name}"
                WebDriverWait(chrome, 30, poll_frequency=0.02).until(
                    lambda c, k=key: c.execute_script("return window.respoolSeen[arguments[0]]", k))
                seen = chrome.execute_script("return window.respoolSeen[arguments[0]]", key) / 1000
                delays.append(max(0.0, seen - written))
            delays.sort()
            results["live_status_write_to_drawn_s"] = {
                "median": round(statistics.median(delays), 3), "max": round(delays[-1], 3),
                "count": len(delays)}
            results["live_max_vs_target_2s"] = round(delays[-1] / TARGET_LIVE_S, 2)
        finally:
            stop_chromium(chrome)
        results["rss_mb_end"] = round(dashboard.rss_bytes() / 2**20, 1)
        with open(f"/proc/{dashboard.process.pid}/status", encoding="ascii") as status_file:  # type: ignore[union-attr]
            peak = next(line for line in status_file if line.startswith("VmHWM:"))
        results["rss_mb_peak"] = round(int(peak.split()[1]) / 1024, 1)
        results["rss_peak_vs_target_150mb"] = round(results["rss_mb_peak"] / TARGET_RSS_MB, 2)
    finally:
        dashboard.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="use this cluster instead of a private one")
    parser.add_argument("--pools", type=int, default=100)
    parser.add_argument("--reservations", type=int, default=10000)
    parser.add_argument("--loads", type=int, default=5, help="page loads to time")
    parser.add_argument("--live", type=int, default=20, help="reservations created with the page open")
    parser.add_argument("--workers", type=int, default=16, help="threads creating objects")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="respool-bench-dashboard-"))
    plane = None
    kubeconfig = args.kubeconfig
    namespace = f"bench-dashboard-{int(time.time())}"
    if kubeconfig is None:
        from respool.devcluster import ControlPlane

        plane = ControlPlane(workdir / "plane", name="respool-bench-dashboard", die_with_parent=True)
        plane.start()
        kubeconfig = str(plane.kubeconfig)
        kubectl = [str(plane.bin_dir / "kubectl"), "--kubeconfig", kubeconfig]
        subprocess.run([*kubectl, "apply", "--server-side", "-f", str(REPO / "crds")],
                       check=True, capture_output=True)
        subprocess.run([*kubectl, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"],
                       check=True, capture_output=True)
    try:
        results: dict[str, Any] = {"pools": args.pools, "reservations": args.reservations,
                                   "ranks_per_pool": RANKS}
        results["populate_s"] = round(populate(kubeconfig, args.pools, args.reservations, namespace,
                                               args.workers), 1)
        results.update(measure(kubeconfig, args, namespace, workdir))
    finally:
        if plane is not None:
            plane.stop()
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
