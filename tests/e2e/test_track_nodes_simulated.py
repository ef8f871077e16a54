"""trackNodes on Nodes that behave like real ones: kwok's simulated Nodes on the whole cluster.

The operator runs against the session's ``whole_cluster`` (its own CRDs, its own operator
process: the bare ``control_plane``'s shared operator is not involved). The Nodes are made
Ready by kwok, not patched by the test, and a Pod really runs on one of them, so cordoning,
draining and deleting them is what an administrator does on a real cluster.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import REPO, OperatorProcess, RespoolKube


@pytest.fixture
def operator_on_whole_cluster(whole_cluster: Any, tmp_path: Path) -> Iterator[OperatorProcess]:
    env = whole_cluster.env()
    kubectl = [str(whole_cluster.bin_dir / "kubectl")]
    crds = os.environ.get("RESPOOL_TEST_CRDS", str(REPO / "crds"))
    subprocess.run([*kubectl, "apply", "--server-side", "--force-conflicts", "-f", crds],
                   env=env, check=True, capture_output=True, timeout=120)
    subprocess.run([*kubectl, "wait", "--for=condition=Established", "--timeout=120s",
                    "crd/resourcepools.respool.io", "crd/resourcereservations.respool.io"],
                   env=env, check=True, capture_output=True, timeout=180)
    process = OperatorProcess(env, tmp_path / "operator.log")
    process.start(timeout=120)
    try:
        yield process
    finally:
        process.stop()
        assert "Traceback" not in process.log_text(), process.log_text()[-4000:]


def test_cordon_drain_and_delete_of_simulated_nodes_move_ranks_down_and_back(
    whole_cluster: Any, whole_cluster_api: Any, whole_cluster_namespace: str,
    operator_on_whole_cluster: OperatorProcess,
) -> None:
    from kubernetes import client

    rk = RespoolKube(whole_cluster_api)
    core = client.CoreV1Api(whole_cluster_api)
    suffix = secrets.token_hex(3)
    hosts = [f"trk-{suffix}-{index}" for index in range(3)]
    whole_cluster.plane.ensure_fake_nodes(hosts, timeout=180)
    pool = f"trk-{suffix}"
    rk.create_pool(pool, {
        "resources": {"version": 1, "execution": {
            "R_lite": [{"rank": "0-2", "children": {"core": "0-3"}}],
            "nodelist": [",".join(hosts)]}},
        "trackNodes": True,
    })
    try:
        rk.wait_pool(pool, lambda o: (o.get("status") or {}).get("down") == "", timeout=120,
                     what="all ranks up")
        rk.create(whole_cluster_namespace, "holder", {
            "pool": pool, "request": {"nodes": 3, "coresPerSlot": 1}, "duration": "1h"})
        rk.wait_phase(whole_cluster_namespace, "holder", "Active", timeout=120)

        # kubectl cordon: rank 1 goes down and the holder learns it; uncordon: back.
        rk.cordon(hosts[1])
        rk.wait_pool(pool, lambda o: o["status"].get("down") == "1", timeout=120, what="rank 1 down")
        rk.wait_for(whole_cluster_namespace, "holder",
                    lambda o: (rk.condition(o, "ResourcesDegraded") or {}).get("status") == "True",
                    timeout=120, what="ResourcesDegraded")
        rk.cordon(hosts[1], False)
        rk.wait_pool(pool, lambda o: o["status"].get("down") == "", timeout=120, what="rank 1 back")

        # kubectl drain: a Pod running on the Node is evicted (kwok confirms it stopped) and
        # the Node is cordoned: rank 2 goes down.
        core.create_namespaced_pod(whole_cluster_namespace, {
            "metadata": {"name": "on-node-2"},
            "spec": {"nodeName": hosts[2],
                     "containers": [{"name": "main", "image": "registry.invalid/x:1"}]}})
        _wait_pod_running(core, whole_cluster_namespace, "on-node-2")
        drained = subprocess.run(
            [str(whole_cluster.bin_dir / "kubectl"), "drain", hosts[2], "--ignore-daemonsets",
             "--force", "--timeout=120s"],
            env=whole_cluster.env(), capture_output=True, text=True, timeout=180, check=False)
        assert drained.returncode == 0, drained.stderr + drained.stdout
        rk.wait_pool(pool, lambda o: o["status"].get("down") == "2", timeout=120, what="rank 2 down")

        # Deleting a Node takes its rank down too (a deleted Node is no healthy Node: cloud
        # node controllers delete dead ones), whether it was cordoned or healthy; a new Ready
        # Node of that name brings the rank back.
        core.delete_node(hosts[2])
        core.delete_node(hosts[0])
        rk.wait_pool(pool, lambda o: o["status"].get("down") == "0,2", timeout=120,
                     what="ranks 0 and 2 down after their Nodes were deleted")
        whole_cluster.plane.ensure_fake_nodes([hosts[0], hosts[2]], timeout=180)
        rk.wait_pool(pool, lambda o: o["status"].get("down") == "", timeout=120,
                     what="ranks 0 and 2 back with new Ready Nodes")
    finally:
        rk.delete_pool(pool)
        for host in hosts:
            try:
                core.delete_node(host)
            except client.rest.ApiException as error:
                if error.status != 404:
                    raise


def _wait_pod_running(core: Any, namespace: str, name: str) -> None:
    import time

    deadline = time.monotonic() + 180
    phase = None
    while time.monotonic() < deadline:
        phase = core.read_namespaced_pod(name, namespace).status.phase
        if phase == "Running":
            return
        time.sleep(0.3)
    raise AssertionError(f"Pod {name} not Running (last phase {phase})")
