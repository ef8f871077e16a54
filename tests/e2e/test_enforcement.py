"""Workloads consume reservations (issue 13), on the whole cluster: the real kube-scheduler,
kube-controller-manager and kwok's simulated Nodes, with the operator as a real process.

- `enforcement: Taint`: while an exclusive reservation is Active its Nodes carry the taint and
  label; other Pods are not scheduled there, and are once it ends. Others' taints and labels
  stay; a restarted operator removes what nothing holds any more.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import REPO, OperatorProcess, RespoolKube

PATIENCE = 180.0
RESERVED = "respool.io/reserved"
LABEL = "respool.io/reservation"


def wait_for(what: str, probe: Callable[[], Any], timeout: float = PATIENCE) -> Any:
    import time

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not reached in {timeout}s; last seen: {last!r}")


@pytest.fixture
def enforcing_operator(whole_cluster: Any, tmp_path: Path,
                       request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    """The operator against the whole cluster (its own CRDs and process)."""
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


def _pool_spec(hosts: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "resources": {"version": 1, "execution": {
            "R_lite": [{"rank": f"0-{len(hosts) - 1}", "children": {"core": "0-3"}}],
            "nodelist": [",".join(hosts)]}},
        "trackNodes": True,
        **extra,
    }


def _pod(name: str, *, node: str | None = None, labels: dict[str, str] | None = None,
         spec: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "containers": [{"name": "main", "image": "registry.invalid/never-pulled:1"}],
        **(spec or {}),
    }
    if node is not None:
        body["nodeSelector"] = {"kubernetes.io/hostname": node}  # through the scheduler
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}}, "spec": body}


def _ours(core: Any, name: str) -> tuple[list[Any], str | None]:
    node = core.read_node(name)
    taints = [t for t in node.spec.taints or [] if t.key == RESERVED]
    return taints, (node.metadata.labels or {}).get(LABEL)


def _unschedulable(core: Any, namespace: str, name: str) -> Any:
    pod = core.read_namespaced_pod(name, namespace)
    return next((c for c in pod.status.conditions or []
                 if c.type == "PodScheduled" and c.status == "False"
                 and c.reason == "Unschedulable"), None)


def _running_on(core: Any, namespace: str, name: str) -> str | None:
    pod = core.read_namespaced_pod(name, namespace)
    return pod.spec.node_name if pod.status.phase == "Running" else None


def test_an_exclusive_reservation_keeps_other_pods_off_its_node_until_it_ends(
    whole_cluster: Any, whole_cluster_api: Any, whole_cluster_namespace: str,
    enforcing_operator: OperatorProcess,
) -> None:
    from kubernetes import client

    rk = RespoolKube(whole_cluster_api)
    core = client.CoreV1Api(whole_cluster_api)
    ns = whole_cluster_namespace
    suffix = secrets.token_hex(3)
    hosts = [f"enf-{suffix}-{index}" for index in range(2)]
    whole_cluster.plane.ensure_fake_nodes(hosts, timeout=PATIENCE)
    reserved, spare = hosts
    # Somebody else's taint and label on the Node: never touched by the operator.
    foreign_taint = {"key": "example.com/maintenance-soon", "value": "yes",
                     "effect": "PreferNoSchedule"}
    core.patch_node(reserved, {"metadata": {"labels": {"example.com/rack": "r1"}},
                               "spec": {"taints": [foreign_taint]}})
    pool = f"enf-{suffix}"
    rk.create_pool(pool, _pool_spec(hosts, enforcement="Taint"))
    try:
        rk.wait_pool(pool, lambda o: (o.get("status") or {}).get("down") == "",
                     timeout=PATIENCE, what="all ranks up")
        rk.create(ns, "train", {"pool": pool, "request": {"nodes": 1, "exclusive": True},
                                "constraints": {"hostlist": [reserved]}, "duration": "1h"})
        # A shared reservation on the other Node: no taint for it.
        rk.create(ns, "watch", {"pool": pool, "mode": "shared", "request": {"nodes": 1},
                                "constraints": {"hostlist": [spare]}, "duration": "1h"})
        rk.wait_phase(ns, "train", "Active", timeout=PATIENCE)
        rk.wait_phase(ns, "watch", "Active", timeout=PATIENCE)
        key = f"{ns}.train"
        taints, _label = wait_for("the reservation taint", lambda: (
            (ours := _ours(core, reserved))[1] == key and ours))
        assert [(t.key, t.value, t.effect) for t in taints] == [(RESERVED, key, "NoSchedule")]
        node = core.read_node(reserved)
        assert node.metadata.labels["example.com/rack"] == "r1"
        assert any(t.key == foreign_taint["key"] and t.effect == "PreferNoSchedule"
                   for t in node.spec.taints)
        assert _ours(core, spare) == ([], None)

        # Another team's Pod aimed at the Node: the scheduler keeps it off (the taint).
        core.create_namespaced_pod(ns, _pod("intruder", node=reserved))
        condition = wait_for("intruder Unschedulable",
                             lambda: _unschedulable(core, ns, "intruder"))
        assert "untolerated taint" in condition.message, condition.message
        # A Pod that tolerates the taint and is confined to the granted Node runs there.
        core.create_namespaced_pod(ns, _pod("holder", spec={
            "tolerations": [{"key": RESERVED, "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": [reserved]}]}]}}},
        }))
        assert wait_for("holder Running", lambda: _running_on(core, ns, "holder")) == reserved
        assert _unschedulable(core, ns, "intruder") is not None

        # The reservation ends: taint and label go, the intruder is scheduled there now.
        rk.delete(ns, "train")
        wait_for("taint and label removed", lambda: _ours(core, reserved) == ([], None))
        assert wait_for("intruder Running", lambda: _running_on(core, ns, "intruder")) == reserved
        node = core.read_node(reserved)
        assert node.metadata.labels["example.com/rack"] == "r1"
        assert [(t.key, t.effect) for t in node.spec.taints] == [
            (foreign_taint["key"], "PreferNoSchedule")]

        # Level-based across a restart: a taint of ours that nothing holds (left by a
        # reservation that ended while the operator was away) is removed at start-up.
        enforcing_operator.stop()
        core.patch_node(spare, {"metadata": {"labels": {LABEL: f"{ns}.gone"}},
                                "spec": {"taints": [{"key": RESERVED, "value": f"{ns}.gone",
                                                     "effect": "NoSchedule"}]}})
        enforcing_operator.start(timeout=120)
        wait_for("stale taint removed", lambda: _ours(core, spare) == ([], None))
    finally:
        for name in ("train", "watch"):
            if rk.exists(ns, name):
                rk.delete(ns, name)
        wait_for("reservations gone", lambda: not rk.list(ns), timeout=60)
        rk.delete_pool(pool)
        for host in hosts:
            core.delete_node(host)
