"""Workloads consume reservations (issue 13), on the whole cluster: the real kube-scheduler,
kube-controller-manager and kwok's simulated Nodes, with the operator as a real process.

- `enforcement: Taint`: while an exclusive reservation is Active its Nodes carry the taint and
  label; other Pods are not scheduled there, and are once it ends. Others' taints and labels
  stay; a restarted operator removes what nothing holds any more.
- The mutating webhook (`respool run --webhook-port`, reached by the API server on loopback):
  Pods labelled respool.io/reservation get the toleration and node affinity and land on the
  granted Node only; a Pod of a reservation not Active yet is gated until its window opens,
  then scheduled; missing, foreign, Failed and Expired reservations are refused with a message
  that says which; while the operator is down labelled Pods are refused (failurePolicy Fail)
  and unlabelled ones are created as ever.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import REPO, OperatorProcess, RespoolKube, _free_port

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
    process = OperatorProcess(env, tmp_path / "operator.log",
                              ["--webhook-port", str(_free_port())])
    process.start(timeout=120)
    try:
        yield process
    finally:
        process.stop()
        # The registration outlives the operator (failurePolicy Fail, on purpose): gone with
        # the test, so that no later test's labelled Pod meets a webhook nobody serves.
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            subprocess.run([*kubectl, "delete", kind, "respool.io", "--ignore-not-found"],
                           env=env, check=False, capture_output=True, timeout=60)
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


def _webhook_ready(admission: Any) -> bool:
    from kubernetes.client.rest import ApiException

    try:
        config = admission.read_mutating_webhook_configuration("respool.io")
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return any(hook.client_config.ca_bundle for hook in config.webhooks or [])


def _refusal(core: Any, namespace: str, pod: dict[str, Any]) -> str:
    from kubernetes.client.rest import ApiException

    try:
        core.create_namespaced_pod(namespace, pod)
    except ApiException as error:
        return str(error.body)
    raise AssertionError(f"{pod['metadata']['name']} was admitted")


def test_the_webhook_steers_gates_and_refuses_pods_that_name_a_reservation(
    whole_cluster: Any, whole_cluster_api: Any, whole_cluster_namespace: str,
    enforcing_operator: OperatorProcess,
) -> None:
    import datetime

    from kubernetes import client

    rk = RespoolKube(whole_cluster_api)
    core = client.CoreV1Api(whole_cluster_api)
    admission = client.AdmissionregistrationV1Api(whole_cluster_api)
    ns = whole_cluster_namespace
    suffix = secrets.token_hex(3)
    hosts = [f"whk-{suffix}-{index}" for index in range(2)]
    whole_cluster.plane.ensure_fake_nodes(hosts, timeout=PATIENCE)
    now_node, later_node = hosts
    pool = f"whk-{suffix}"
    other_ns = f"whk-other-{suffix}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other_ns)))
    rk.create_pool(pool, _pool_spec(hosts, enforcement="Taint"))
    try:
        wait_for("the webhook registered with its CA bundle", lambda: _webhook_ready(admission))
        config = admission.read_mutating_webhook_configuration("respool.io")
        [hook] = config.webhooks
        assert hook.failure_policy == "Fail"
        assert hook.object_selector.match_expressions[0].key == LABEL
        assert hook.object_selector.match_expressions[0].operator == "Exists"
        rk.wait_pool(pool, lambda o: (o.get("status") or {}).get("down") == "",
                     timeout=PATIENCE, what="all ranks up")

        # A reservation that is over quickly (its Pods are refused below).
        rk.create(ns, "brief", {"pool": pool, "request": {"slots": 1}, "duration": "3s",
                                "constraints": {"hostlist": [later_node]}})
        # Active: the holder's Pod gets the toleration and the affinity, and lands there.
        rk.create(ns, "train", {"pool": pool, "request": {"nodes": 1, "exclusive": True},
                                "constraints": {"hostlist": [now_node]}, "duration": "1h"})
        rk.wait_phase(ns, "train", "Active", timeout=PATIENCE)
        wait_for("the taint", lambda: _ours(core, now_node)[1] == f"{ns}.train")
        pod = core.create_namespaced_pod(ns, _pod("holder", labels={LABEL: "train"}))
        assert [(t.key, t.operator, t.effect) for t in pod.spec.tolerations
                if t.key == RESERVED] == [(RESERVED, "Exists", "NoSchedule")]
        terms = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
        assert [(f.key, f.operator, f.values) for f in terms.node_selector_terms[0].match_fields] \
            == [("metadata.name", "In", [now_node])]
        assert not pod.spec.scheduling_gates
        assert wait_for("holder Running", lambda: _running_on(core, ns, "holder")) == now_node

        # Not Active yet: gated; once its window opens, lifted and scheduled on its Node.
        start = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=20)
        rk.create(ns, "later", {"pool": pool, "request": {"nodes": 1, "exclusive": True},
                                "constraints": {"hostlist": [later_node]},
                                "startTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                "duration": "1h", "nextAvailable": False})
        rk.wait_phase(ns, "later", "Scheduled", timeout=PATIENCE)
        gated = core.create_namespaced_pod(ns, _pod("early", labels={LABEL: "later"}))
        assert [g.name for g in gated.spec.scheduling_gates] == [LABEL]
        assert wait_for("early SchedulingGated", lambda: next(
            (c for c in core.read_namespaced_pod("early", ns).status.conditions or []
             if c.type == "PodScheduled" and c.reason == "SchedulingGated"), None))
        assert rk.phase(rk.get(ns, "later")) == "Scheduled"
        assert core.read_namespaced_pod("early", ns).spec.node_name is None
        rk.wait_phase(ns, "later", "Active", timeout=PATIENCE)
        assert wait_for("early Running", lambda: _running_on(core, ns, "early")) == later_node
        lifted = core.read_namespaced_pod("early", ns)
        assert not lifted.spec.scheduling_gates
        terms = lifted.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
        assert terms.node_selector_terms[0].match_fields[0].values == [later_node]

        # Refusals, each saying which.
        message = _refusal(core, ns, _pod("p1", labels={LABEL: "no-such"}))
        assert "'no-such' does not exist in namespace" in message, message
        rk.create(other_ns, "theirs", {"pool": pool, "request": {"nodes": 1},
                                       "startTime": "2030-01-01T00:00:00Z", "duration": "1h"})
        wait_for("theirs seen", lambda: rk.phase(rk.get(other_ns, "theirs")) is not None)
        message = _refusal(core, ns, _pod("p2", labels={LABEL: "theirs"}))
        assert f"'theirs' is not in namespace '{ns}' (it is in '{other_ns}')" in message, message
        rk.create(ns, "too-big", {"pool": pool, "request": {"nodes": 5}})
        rk.wait_phase(ns, "too-big", "Failed", timeout=PATIENCE)
        message = _refusal(core, ns, _pod("p3", labels={LABEL: "too-big"}))
        assert "'too-big' in namespace" in message and "is Failed (Infeasible)" in message, message
        rk.wait_phase(ns, "brief", "Expired", timeout=PATIENCE)
        message = _refusal(core, ns, _pod("p4", labels={LABEL: "brief"}))
        assert "'brief' in namespace" in message and "has Expired" in message, message

        # An unlabelled Pod never reaches the webhook: nothing added to it.
        plain = core.create_namespaced_pod(ns, _pod("plain"))
        assert not any(t.key == RESERVED for t in plain.spec.tolerations or [])

        # Operator down: labelled Pods are refused (failurePolicy Fail), others created.
        enforcing_operator.stop()
        message = _refusal(core, ns, _pod("while-down", labels={LABEL: "train"}))
        assert "failed calling webhook" in message, message
        core.create_namespaced_pod(ns, _pod("plain-while-down"))
        enforcing_operator.start(timeout=120)
        wait_for("labelled Pods admitted again", lambda: _admitted(
            core, ns, _pod("after-restart", labels={LABEL: "train"})), timeout=PATIENCE)
    finally:
        for namespace in (ns, other_ns):
            for item in rk.list(namespace):
                rk.delete(namespace, item["metadata"]["name"])
            wait_for("reservations gone", lambda namespace=namespace: not rk.list(namespace),
                     timeout=60)
        core.delete_namespace(other_ns)
        rk.delete_pool(pool)
        for host in hosts:
            core.delete_node(host)


def _admitted(core: Any, namespace: str, pod: dict[str, Any]) -> bool:
    from kubernetes.client.rest import ApiException

    try:
        core.create_namespaced_pod(namespace, pod)
    except ApiException as error:
        if "failed calling webhook" in str(error.body):
            return False
        raise
    return True


def test_a_hold_made_from_a_pod_is_released_when_its_job_or_pod_goes(
    whole_cluster: Any, whole_cluster_api: Any, whole_cluster_namespace: str,
    enforcing_operator: OperatorProcess, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Holder liveness: the client, run inside a Pod (the downward API's POD_NAME and
    POD_NAMESPACE, as a CI job's Pod sets them), owns its reservation by the Pod's Job, or by
    the Pod; deleting that - a cancelled CI job - garbage-collects the reservation, and the
    operator releases it."""
    from kubernetes import client

    from respool.client import RespoolClient

    rk = RespoolKube(whole_cluster_api)
    core = client.CoreV1Api(whole_cluster_api)
    batch = client.BatchV1Api(whole_cluster_api)
    ns = whole_cluster_namespace
    suffix = secrets.token_hex(3)
    hosts = [f"gc-{suffix}-0"]
    whole_cluster.plane.ensure_fake_nodes(hosts, timeout=PATIENCE)
    pool = f"gc-{suffix}"
    rk.create_pool(pool, _pool_spec(hosts))
    batch.create_namespaced_job(ns, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ci"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "ci", "image": "registry.invalid/ci:1"}]}}}})
    job_pod = wait_for("the Job's Pod", lambda: next(
        (p.metadata.name for p in core.list_namespaced_pod(ns, label_selector="job-name=ci").items),
        None))
    core.create_namespaced_pod(ns, _pod("runner"))

    def reserve(pod_name: str, name: str, opt_out: bool = False) -> dict[str, Any]:
        monkeypatch.setenv("POD_NAME", pod_name)
        monkeypatch.setenv("POD_NAMESPACE", ns)
        if opt_out:
            monkeypatch.setenv("RESPOOL_OWNER_REFERENCE", "none")
        with RespoolClient(ns, str(whole_cluster.kubeconfig)) as respool:
            respool.create(pool, name=name, cores_per_slot=1, duration="1h")
        monkeypatch.delenv("RESPOOL_OWNER_REFERENCE", raising=False)
        return rk.get(ns, name)

    try:
        by_job = reserve(job_pod, "by-job")
        job = batch.read_namespaced_job("ci", ns)
        assert by_job["metadata"]["ownerReferences"] == [
            {"apiVersion": "batch/v1", "kind": "Job", "name": "ci", "uid": job.metadata.uid}]
        by_pod = reserve("runner", "by-pod")
        [owner] = by_pod["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"]) == ("Pod", "runner")
        unowned = reserve("runner", "unowned", opt_out=True)
        assert not unowned["metadata"].get("ownerReferences")
        for name in ("by-job", "by-pod", "unowned"):
            rk.wait_phase(ns, name, "Active", timeout=PATIENCE)

        # The CI job is cancelled: its hold goes (garbage collector, then the operator's
        # finalizer releases it); so does the bare Pod's; the opted-out one stays.
        batch.delete_namespaced_job("ci", ns, propagation_policy="Background")
        wait_for("by-job collected", lambda: not rk.exists(ns, "by-job"))
        core.delete_namespaced_pod("runner", ns)
        wait_for("by-pod collected", lambda: not rk.exists(ns, "by-pod"))
        assert rk.phase(rk.get(ns, "unowned")) == "Active"
        rk.wait_pool(pool, lambda o: ((o.get("status") or {}).get("capacity") or {})
                     .get("core", {}).get("allocated") == 1, timeout=PATIENCE,
                     what="only the opted-out hold allocated")
    finally:
        for item in rk.list(ns):
            rk.delete(ns, item["metadata"]["name"])
        wait_for("reservations gone", lambda: not rk.list(ns), timeout=60)
        rk.delete_pool(pool)
        for host in hosts:
            core.delete_node(host)


def test_a_shared_reservation_steers_and_gates_its_pods_without_a_taint(
    whole_cluster: Any, whole_cluster_api: Any, whole_cluster_namespace: str,
    enforcing_operator: OperatorProcess,
) -> None:
    """Shared reservations taint nothing: their holders' Pods get the node affinity (and,
    before the window opens, the gate) but no toleration, and other Pods still land there."""
    import datetime

    from kubernetes import client

    rk = RespoolKube(whole_cluster_api)
    core = client.CoreV1Api(whole_cluster_api)
    admission = client.AdmissionregistrationV1Api(whole_cluster_api)
    ns = whole_cluster_namespace
    suffix = secrets.token_hex(3)
    hosts = [f"shr-{suffix}-{index}" for index in range(2)]
    whole_cluster.plane.ensure_fake_nodes(hosts, timeout=PATIENCE)
    now_node, later_node = hosts
    pool = f"shr-{suffix}"
    rk.create_pool(pool, _pool_spec(hosts, enforcement="Taint"))
    try:
        wait_for("the webhook registered with its CA bundle", lambda: _webhook_ready(admission))
        rk.wait_pool(pool, lambda o: (o.get("status") or {}).get("down") == "",
                     timeout=PATIENCE, what="all ranks up")

        # Active now: affinity to its Node, neither toleration nor gate.
        rk.create(ns, "look", {"pool": pool, "mode": "shared", "request": {"nodes": 1},
                               "constraints": {"hostlist": [now_node]}, "duration": "1h"})
        rk.wait_phase(ns, "look", "Active", timeout=PATIENCE)
        pod = core.create_namespaced_pod(ns, _pod("looker", labels={LABEL: "look"}))
        assert not [t for t in pod.spec.tolerations or [] if t.key == RESERVED]
        assert not pod.spec.scheduling_gates
        terms = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
        assert [(f.key, f.operator, f.values) for f in terms.node_selector_terms[0].match_fields] \
            == [("metadata.name", "In", [now_node])]
        assert wait_for("looker Running", lambda: _running_on(core, ns, "looker")) == now_node

        # Not Active yet: gated (no toleration); lifted when the window opens, then it runs on
        # the granted Node.
        start = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=20)
        rk.create(ns, "later", {"pool": pool, "mode": "shared", "request": {"nodes": 1},
                                "constraints": {"hostlist": [later_node]},
                                "startTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                "duration": "1h", "nextAvailable": False})
        rk.wait_phase(ns, "later", "Scheduled", timeout=PATIENCE)
        gated = core.create_namespaced_pod(ns, _pod("early", labels={LABEL: "later"}))
        assert [g.name for g in gated.spec.scheduling_gates] == [LABEL]
        assert not [t for t in gated.spec.tolerations or [] if t.key == RESERVED]
        assert wait_for("early SchedulingGated", lambda: next(
            (c for c in core.read_namespaced_pod("early", ns).status.conditions or []
             if c.type == "PodScheduled" and c.reason == "SchedulingGated"), None))
        assert core.read_namespaced_pod("early", ns).spec.node_name is None
        rk.wait_phase(ns, "later", "Active", timeout=PATIENCE)
        assert wait_for("early Running", lambda: _running_on(core, ns, "early")) == later_node
        lifted = core.read_namespaced_pod("early", ns)
        assert not lifted.spec.scheduling_gates
        terms = lifted.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
        assert terms.node_selector_terms[0].match_fields[0].values == [later_node]

        # No taint, no label on either Node while both are Active: an unlabelled Pod aimed at a
        # shared Node is scheduled there as ever.
        assert _ours(core, now_node) == ([], None) and _ours(core, later_node) == ([], None)
        core.create_namespaced_pod(ns, _pod("bystander", node=later_node))
        assert wait_for("bystander Running",
                        lambda: _running_on(core, ns, "bystander")) == later_node
        assert _ours(core, now_node) == ([], None) and _ours(core, later_node) == ([], None)
    finally:
        for item in rk.list(ns):
            rk.delete(ns, item["metadata"]["name"])
        wait_for("reservations gone", lambda: not rk.list(ns), timeout=60)
        rk.delete_pool(pool)
        for host in hosts:
            core.delete_node(host)
