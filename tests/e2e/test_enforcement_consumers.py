"""Consumers of reservations (issue 13), on the whole cluster (real kube-scheduler,
kube-controller-manager, kwok's simulated Nodes and Pods) with the operator as a real process
serving the webhook (it watches the labelled Pods):

- `status.consumers` counts and lists the Pods labelled `respool.io/reservation: <name>`
  that have not finished, and a burst of Pods costs far fewer status writes than Pod changes;
- `spec.idleTimeout`: an Active hold with no consumer for that long is Expired with reason
  `Idle` (Event `Idle`), one whose consumer runs is not, and is once its last consumer goes;
- `spec.onEnd`: `Evict` evicts the consumers still bound to a Node after the pool's
  `policy.evictionGracePeriod` (Eviction API), `Leave` leaves them.
"""

from __future__ import annotations

import datetime
import secrets
import threading
from typing import Any

from e2e.conftest import OperatorProcess, RespoolKube
from e2e.test_enforcement import (  # noqa: F401 - the fixture is used by name
    LABEL,
    PATIENCE,
    _pod,
    _pool_spec,
    _running_on,
    enforcing_operator,
    wait_for,
)


def _consumers(rk: RespoolKube, ns: str, name: str) -> dict[str, Any]:
    return dict((rk.get(ns, name).get("status") or {}).get("consumers") or {})


def _ready_reason(rk: RespoolKube, ns: str, name: str) -> str | None:
    condition = rk.condition(rk.get(ns, name), "Ready")
    return condition.get("reason") if condition else None


def _cleanup(rk: RespoolKube, core: Any, ns: str, pool: str, hosts: list[str]) -> None:
    for item in rk.list(ns):
        rk.delete(ns, item["metadata"]["name"])
    wait_for("reservations gone", lambda: not rk.list(ns), timeout=60)
    core.delete_collection_namespaced_pod(ns, grace_period_seconds=0)
    rk.delete_pool(pool)
    for host in hosts:
        core.delete_node(host)


def test_consumers_are_counted_and_listed_with_few_status_writes(
    whole_cluster: Any, whole_cluster_api: Any, whole_cluster_namespace: str,
    enforcing_operator: OperatorProcess,  # noqa: F811
) -> None:
    from kubernetes import client, watch

    rk = RespoolKube(whole_cluster_api)
    core = client.CoreV1Api(whole_cluster_api)
    custom = client.CustomObjectsApi(whole_cluster_api)
    ns = whole_cluster_namespace
    suffix = secrets.token_hex(3)
    hosts = [f"csm-{suffix}-0"]
    whole_cluster.plane.ensure_fake_nodes(hosts, timeout=PATIENCE)
    pool = f"csm-{suffix}"
    rk.create_pool(pool, _pool_spec(hosts, enforcement="Taint"))
    try:
        rk.wait_pool(pool, lambda o: (o.get("status") or {}).get("down") == "",
                     timeout=PATIENCE, what="all ranks up")
        rk.create(ns, "train", {"pool": pool, "request": {"nodes": 1, "exclusive": True},
                                "duration": "1h"})
        rk.wait_phase(ns, "train", "Active", timeout=PATIENCE)
        assert "consumers" not in (rk.get(ns, "train").get("status") or {})

        # Count the reservation's status writes while a burst of Pods starts.
        writes: list[str] = []
        stop = threading.Event()
        version = rk.get(ns, "train")["metadata"]["resourceVersion"]

        def follow() -> None:
            stream = watch.Watch()
            for event in stream.stream(
                    custom.list_namespaced_custom_object, "respool.io", "v1alpha1", ns,
                    "resourcereservations", field_selector="metadata.name=train",
                    resource_version=version, timeout_seconds=int(PATIENCE)):
                if event["type"] == "MODIFIED":
                    writes.append(event["object"]["metadata"]["resourceVersion"])
                if stop.is_set():
                    stream.stop()

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        burst = 30
        names = [f"worker-{index:02d}" for index in range(burst)]
        for name in names:
            core.create_namespaced_pod(ns, _pod(name, labels={LABEL: "train"}))
        # Another reservation's Pod and an unlabelled one are not its consumers.
        core.create_namespaced_pod(ns, _pod("bystander"))
        wait_for("all Running", lambda: all(_running_on(core, ns, n) for n in names))
        seen = wait_for("consumers counted", lambda: (
            (c := _consumers(rk, ns, "train")).get("running") == burst and c))
        assert seen == {"count": burst, "running": burst, "pods": names[:20]}
        counted = len(writes)
        stop.set()
        rk.patch(ns, "train", {"config": {"nudge": 1}})  # wakes the follower to stop
        follower.join(timeout=60)
        writes = writes[:counted]
        # Each Pod changed its reservation's consumers at least twice (created Pending, then
        # Running): 60 changes; coalesced, the writes are far fewer.
        print(f"status writes for {burst} Pods starting: {len(writes)}")
        assert len(writes) < burst, writes

        # One goes: counted out.
        core.delete_namespaced_pod(names[0], ns, grace_period_seconds=0)
        wait_for("one fewer", lambda: _consumers(rk, ns, "train").get("count") == burst - 1)
        assert _consumers(rk, ns, "train")["pods"][0] == names[1]
    finally:
        _cleanup(rk, core, ns, pool, hosts)


def test_an_idle_hold_is_released_with_reason_idle_and_a_used_one_is_not(
    whole_cluster: Any, whole_cluster_api: Any, whole_cluster_namespace: str,
    enforcing_operator: OperatorProcess,  # noqa: F811
) -> None:
    from kubernetes import client

    rk = RespoolKube(whole_cluster_api)
    core = client.CoreV1Api(whole_cluster_api)
    ns = whole_cluster_namespace
    suffix = secrets.token_hex(3)
    hosts = [f"idl-{suffix}-{index}" for index in range(2)]
    whole_cluster.plane.ensure_fake_nodes(hosts, timeout=PATIENCE)
    busy_node, idle_node = hosts
    pool = f"idl-{suffix}"
    rk.create_pool(pool, _pool_spec(hosts, enforcement="Taint"))
    try:
        rk.wait_pool(pool, lambda o: (o.get("status") or {}).get("down") == "",
                     timeout=PATIENCE, what="all ranks up")
        # "busy": its Pod is submitted before the window opens (gated: a consumer already),
        # so it has a consumer from the moment it is Active.
        start = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=15)
        rk.create(ns, "busy", {"pool": pool, "request": {"nodes": 1, "exclusive": True},
                               "constraints": {"hostlist": [busy_node]},
                               "startTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                               "duration": "1h", "nextAvailable": False,
                               "idleTimeout": "5s"})
        rk.wait_phase(ns, "busy", "Scheduled", timeout=PATIENCE)
        core.create_namespaced_pod(ns, _pod("job", labels={LABEL: "busy"}))
        wait_for("the gated Pod counted", lambda: _consumers(rk, ns, "busy").get("count") == 1)
        rk.wait_phase(ns, "busy", "Active", timeout=PATIENCE)
        assert wait_for("job Running", lambda: _running_on(core, ns, "job")) == busy_node

        # "idle": Active after busy, nobody uses it: released early.
        rk.create(ns, "idle", {"pool": pool, "request": {"nodes": 1, "exclusive": True},
                               "constraints": {"hostlist": [idle_node]}, "duration": "1h",
                               "idleTimeout": "5s"})
        rk.wait_phase(ns, "idle", "Active", timeout=PATIENCE)
        idle = wait_for("the idle clock shown", lambda: _consumers(rk, ns, "idle"))
        assert idle["count"] == 0 and idle["idleSince"], idle
        rk.wait_phase(ns, "idle", "Expired", timeout=PATIENCE)
        assert _ready_reason(rk, ns, "idle") == "Idle"
        assert wait_for("the Idle Event", lambda: [
            e for e in rk.events(ns, "idle") if e.reason == "Idle"])
        rk.wait_pool(pool, lambda o: ((o.get("status") or {}).get("capacity") or {})
                     .get("node", {}).get("allocated") == 1, timeout=PATIENCE,
                     what="the idle hold's Node returned to the pool")

        # busy went Active before idle did, with the same idleTimeout: its running consumer
        # is what keeps it.
        assert rk.phase(rk.get(ns, "busy")) == "Active"
        assert _consumers(rk, ns, "busy") == {"count": 1, "running": 1, "pods": ["job"]}
        # Its last consumer goes: the idle clock starts then, and it is released too.
        core.delete_namespaced_pod("job", ns, grace_period_seconds=0)
        rk.wait_phase(ns, "busy", "Expired", timeout=PATIENCE)
        assert _ready_reason(rk, ns, "busy") == "Idle"
    finally:
        _cleanup(rk, core, ns, pool, hosts)


def test_on_end_evict_evicts_the_consumers_after_the_grace_period_and_leave_leaves_them(
    whole_cluster: Any, whole_cluster_api: Any, whole_cluster_namespace: str,
    enforcing_operator: OperatorProcess,  # noqa: F811
) -> None:
    import time

    from kubernetes import client, watch

    from respool.api import parse_time

    rk = RespoolKube(whole_cluster_api)
    core = client.CoreV1Api(whole_cluster_api)
    ns = whole_cluster_namespace
    suffix = secrets.token_hex(3)
    hosts = [f"evc-{suffix}-{index}" for index in range(2)]
    whole_cluster.plane.ensure_fake_nodes(hosts, timeout=PATIENCE)
    evict_node, leave_node = hosts
    pool = f"evc-{suffix}"
    grace = 3.0
    rk.create_pool(pool, _pool_spec(hosts, enforcement="Taint",
                                    policy={"evictionGracePeriod": "3s"}))
    try:
        rk.wait_pool(pool, lambda o: (o.get("status") or {}).get("down") == "",
                     timeout=PATIENCE, what="all ranks up")
        for name, node, on_end in (("evict", evict_node, "Evict"), ("leave", leave_node, None)):
            spec = {"pool": pool, "request": {"nodes": 1, "exclusive": True},
                    "constraints": {"hostlist": [node]}, "duration": "20s"}
            if on_end:
                spec["onEnd"] = on_end
            rk.create(ns, name, spec)
        for name, node in (("evict", evict_node), ("leave", leave_node)):
            rk.wait_phase(ns, name, "Active", timeout=PATIENCE)
            core.create_namespaced_pod(ns, _pod(f"{name}-job", labels={LABEL: name}))
            assert wait_for(f"{name}-job Running",
                            lambda name=name: _running_on(core, ns, f"{name}-job")) == node

        # When the eviction is first seen (a lower bound on when it was made: no timing
        # assumption).
        seen: dict[str, float] = {}

        def follow() -> None:
            for event in watch.Watch().stream(
                    core.list_namespaced_pod, ns, field_selector="metadata.name=evict-job",
                    timeout_seconds=int(PATIENCE) * 2):
                pod = event["object"]
                if event["type"] == "DELETED" or pod.metadata.deletion_timestamp:
                    seen.setdefault("deleting", time.time())
                    return

        import threading

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        rk.wait_phase(ns, "evict", "Expired", timeout=PATIENCE)
        rk.wait_phase(ns, "leave", "Expired", timeout=PATIENCE)
        wait_for("evict-job evicted", lambda: not [
            p for p in core.list_namespaced_pod(ns).items
            if p.metadata.name == "evict-job" and not p.metadata.deletion_timestamp])
        follower.join(timeout=60)
        end = parse_time(rk.get(ns, "evict")["status"]["endTime"])
        assert seen["deleting"] >= end + grace, (seen, end)
        # Leave: its consumer runs on (the window is over, the Pod is not touched).
        assert _running_on(core, ns, "leave-job") == leave_node
        assert not core.read_namespaced_pod("leave-job", ns).metadata.deletion_timestamp
        assert "evicted" in enforcing_operator.log_text()
        [event] = wait_for("the ConsumersEvicted Event", lambda: [
            e for e in rk.events(ns, "evict") if e.reason == "ConsumersEvicted"])
        assert "evict-job" in event.message, event.message
        assert not [e for e in rk.events(ns, "leave") if e.reason == "ConsumersEvicted"]
    finally:
        _cleanup(rk, core, ns, pool, hosts)


def test_evict_on_deletion_respects_a_pod_disruption_budget(
    whole_cluster: Any, whole_cluster_api: Any, whole_cluster_namespace: str,
    enforcing_operator: OperatorProcess,  # noqa: F811
) -> None:
    """A reservation deleted (released) with onEnd: Evict: its consumers are evicted, but
    not while a PodDisruptionBudget forbids it (the Eviction API answers 429, the operator
    tries again); once the budget allows, they go."""
    from kubernetes import client

    rk = RespoolKube(whole_cluster_api)
    core = client.CoreV1Api(whole_cluster_api)
    policy = client.PolicyV1Api(whole_cluster_api)
    ns = whole_cluster_namespace
    suffix = secrets.token_hex(3)
    hosts = [f"pdb-{suffix}-0"]
    whole_cluster.plane.ensure_fake_nodes(hosts, timeout=PATIENCE)
    pool = f"pdb-{suffix}"
    rk.create_pool(pool, _pool_spec(hosts, enforcement="Taint",
                                    policy={"evictionGracePeriod": "1s"}))
    try:
        rk.wait_pool(pool, lambda o: (o.get("status") or {}).get("down") == "",
                     timeout=PATIENCE, what="all ranks up")
        rk.create(ns, "guarded", {"pool": pool, "request": {"nodes": 1, "exclusive": True},
                                  "duration": "1h", "onEnd": "Evict"})
        rk.wait_phase(ns, "guarded", "Active", timeout=PATIENCE)
        names = ["guarded-0", "guarded-1"]
        for name in names:
            core.create_namespaced_pod(ns, _pod(name, labels={LABEL: "guarded",
                                                              "app": "guarded"}))
        for name in names:
            wait_for(f"{name} Running", lambda name=name: _running_on(core, ns, name))
        policy.create_namespaced_pod_disruption_budget(ns, {
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "keep-both"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "guarded"}}}})
        wait_for("the budget observed", lambda: (
            (budget := policy.read_namespaced_pod_disruption_budget("keep-both", ns)).status
            and budget.status.current_healthy == 2 and budget.status.observed_generation))

        offset = len(enforcing_operator.log_text())
        rk.delete(ns, "guarded")
        wait_for("guarded released", lambda: not rk.exists(ns, "guarded"))
        wait_for("an eviction refused by the budget", lambda: "disruption budget" in
                 enforcing_operator.log_text(offset))
        assert all(_running_on(core, ns, name) for name in names)
        assert not [p for p in core.list_namespaced_pod(ns).items
                    if p.metadata.name in names and p.metadata.deletion_timestamp]

        # The budget allows it now: both are evicted (retried with backoff).
        policy.patch_namespaced_pod_disruption_budget("keep-both", ns,
                                                      {"spec": {"minAvailable": 0}})
        wait_for("both evicted", lambda: not [
            p for p in core.list_namespaced_pod(ns).items
            if p.metadata.name in names and not p.metadata.deletion_timestamp])
    finally:
        client.PolicyV1Api(whole_cluster_api).delete_collection_namespaced_pod_disruption_budget(ns)
        _cleanup(rk, core, ns, pool, hosts)


def test_a_restart_starts_the_idle_clock_again_instead_of_releasing_early(
    whole_cluster: Any, whole_cluster_api: Any, whole_cluster_namespace: str,
    enforcing_operator: OperatorProcess,  # noqa: F811
) -> None:
    """The operator is away past an idle hold's deadline: when it is back it does not release
    the hold at once (Pods may have come and gone unseen) but starts its idle clock again
    from when it has listed the Pods, and releases it one idleTimeout later."""
    import time

    from respool.api import parse_time

    rk = RespoolKube(whole_cluster_api)
    ns = whole_cluster_namespace
    suffix = secrets.token_hex(3)
    hosts = [f"rst-{suffix}-0"]
    whole_cluster.plane.ensure_fake_nodes(hosts, timeout=PATIENCE)
    pool = f"rst-{suffix}"
    rk.create_pool(pool, _pool_spec(hosts, enforcement="Taint"))
    from kubernetes import client

    core = client.CoreV1Api(whole_cluster_api)
    try:
        rk.wait_pool(pool, lambda o: (o.get("status") or {}).get("down") == "",
                     timeout=PATIENCE, what="all ranks up")
        rk.create(ns, "quiet", {"pool": pool, "request": {"nodes": 1}, "duration": "1h",
                                "idleTimeout": "15s"})
        rk.wait_phase(ns, "quiet", "Active", timeout=PATIENCE)
        first = parse_time(wait_for("the idle clock", lambda: _consumers(
            rk, ns, "quiet").get("idleSince")))
        enforcing_operator.stop()
        # Away until well past the deadline the clock showed.
        while time.time() < first + 15 + 3:
            time.sleep(0.5)
        assert rk.phase(rk.get(ns, "quiet")) == "Active"  # nobody released it meanwhile
        enforcing_operator.start(timeout=120)
        again = wait_for("the idle clock started again", lambda: (
            (status := rk.get(ns, "quiet").get("status") or {}).get("consumers", {})
            .get("idleSince") not in (None, "") and parse_time(
                status["consumers"]["idleSince"]) > first and status))
        assert again["phase"] == "Active", again
        assert parse_time(again["consumers"]["idleSince"]) >= first + 15 + 3
        rk.wait_phase(ns, "quiet", "Expired", timeout=PATIENCE)
        assert _ready_reason(rk, ns, "quiet") == "Idle"
    finally:
        _cleanup(rk, core, ns, pool, hosts)
