"""The whole dev cluster on real processes: kube-controller-manager, kube-scheduler and kwok.

Everything here runs against the session's ``whole_cluster`` (its own etcd and kube-apiserver
plus the three components), never against the bare ``control_plane`` the other e2e tests use.
Each test would fail on a bare control plane: Pods would stay Pending, namespaces Terminating,
dependents of a deleted owner would stay, no ServiceAccount or token would appear.
"""

from __future__ import annotations

import ipaddress
import secrets
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from respool.devcluster.controlplane import FAKE_NODE_ANNOTATION, POD_CIDR

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

T = TypeVar("T")
# Generous: the suite runs on 2 shared cores; a healthy cluster needs a few seconds.
PATIENCE = 180.0


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = PATIENCE) -> T:
    """``probe()``'s first truthy result; AssertionError naming ``what`` if none in time."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"{what}: not reached; last seen: {last!r}")


def _gone(read: Callable[[], object]) -> bool:
    from kubernetes.client.rest import ApiException

    try:
        read()
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


@pytest.fixture
def fake_nodes(whole_cluster: Any, whole_cluster_api: ApiClient) -> Iterator[Callable[[int], list[str]]]:
    """``fake_nodes(n)``: n new simulated Nodes, Ready; deleted after the test."""
    from kubernetes import client

    created: list[str] = []

    def make(count: int) -> list[str]:
        assert whole_cluster.plane is not None
        names = [f"sim-{secrets.token_hex(3)}" for _ in range(count)]
        created.extend(names)
        whole_cluster.plane.ensure_fake_nodes(names, timeout=PATIENCE)
        return names

    yield make
    core = client.CoreV1Api(whole_cluster_api)
    for name in created:
        if not _gone(lambda name=name: core.read_node(name)):  # type: ignore[misc]
            core.delete_node(name)


def _pod(name: str, node: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "registry.invalid/never-pulled:1"}],
    }
    if node is not None:
        # Through the scheduler (a selector), not around it (spec.nodeName).
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


def test_simulated_nodes_are_ready_and_a_pod_scheduled_there_runs(
    whole_cluster_api: ApiClient, whole_cluster_namespace: str, fake_nodes: Callable[[int], list[str]]
) -> None:
    from kubernetes import client

    core = client.CoreV1Api(whole_cluster_api)
    first, second = fake_nodes(2)
    node = core.read_node(first)
    assert node.metadata.annotations[FAKE_NODE_ANNOTATION] == "fake"
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"

    core.create_namespaced_pod(whole_cluster_namespace, _pod("on-second", node=second))
    pod = wait_for(
        "Pod Running",
        lambda: (p := core.read_namespaced_pod("on-second", whole_cluster_namespace)).status.phase == "Running"
        and p,
    )
    assert pod.spec.node_name == second  # bound by kube-scheduler, honouring the selector
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(POD_CIDR)
    assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"

    # Deleting it: kwok plays the kubelet that confirms the container stopped.
    core.delete_namespaced_pod("on-second", whole_cluster_namespace)
    wait_for("Pod gone", lambda: _gone(lambda: core.read_namespaced_pod("on-second", whole_cluster_namespace)))


def test_a_pod_that_fits_no_node_stays_pending_with_the_schedulers_reason(
    whole_cluster_api: ApiClient, whole_cluster_namespace: str, fake_nodes: Callable[[int], list[str]]
) -> None:
    from kubernetes import client

    core = client.CoreV1Api(whole_cluster_api)
    fake_nodes(1)
    core.create_namespaced_pod(whole_cluster_namespace, _pod("nowhere", node="no-such-node"))
    condition = wait_for(
        "PodScheduled=False",
        lambda: next(
            (
                c
                for c in core.read_namespaced_pod("nowhere", whole_cluster_namespace).status.conditions or []
                if c.type == "PodScheduled" and c.status == "False"
            ),
            None,
        ),
    )
    assert condition.reason == "Unschedulable"
    assert core.read_namespaced_pod("nowhere", whole_cluster_namespace).status.phase == "Pending"


def test_a_deployment_rolls_out_onto_simulated_nodes(
    whole_cluster_api: ApiClient, whole_cluster_namespace: str, fake_nodes: Callable[[int], list[str]]
) -> None:
    from kubernetes import client

    apps = client.AppsV1Api(whole_cluster_api)
    core = client.CoreV1Api(whole_cluster_api)
    nodes = fake_nodes(2)
    template = _pod("ignored", labels={"app": "web"})
    apps.create_namespaced_deployment(
        whole_cluster_namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": template["spec"]},
            },
        },
    )
    wait_for(
        "3 available replicas",
        lambda: (apps.read_namespaced_deployment_status("web", whole_cluster_namespace).status.available_replicas or 0)
        == 3,
    )
    pods = core.list_namespaced_pod(whole_cluster_namespace, label_selector="app=web").items
    assert len(pods) == 3
    assert all(p.status.phase == "Running" for p in pods)
    assert {p.spec.node_name for p in pods} <= set(nodes)


def test_a_deleted_namespace_and_its_contents_go_away(whole_cluster_api: ApiClient) -> None:
    from kubernetes import client

    core = client.CoreV1Api(whole_cluster_api)
    name = f"t-gone-{secrets.token_hex(3)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(name, {"metadata": {"name": "content"}, "data": {"k": "v"}})
    core.delete_namespace(name)
    # The namespace controller empties it, then removes its finalizer: the namespace is gone.
    wait_for("namespace deleted", lambda: _gone(lambda: core.read_namespace(name)))


def _owned_by(owner: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
    }


def test_garbage_collector_deletes_dependents_and_honours_orphan(
    whole_cluster_api: ApiClient, whole_cluster_namespace: str
) -> None:
    from kubernetes import client

    core = client.CoreV1Api(whole_cluster_api)
    ns = whole_cluster_namespace
    owner = core.create_namespaced_config_map(ns, {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "dependent", "ownerReferences": [_owned_by(owner)]}})
    keeper = core.create_namespaced_config_map(ns, {"metadata": {"name": "keeper"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "orphan", "ownerReferences": [_owned_by(keeper)]}})

    core.delete_namespaced_config_map("owner", ns)  # background propagation (the default)
    wait_for("dependent collected", lambda: _gone(lambda: core.read_namespaced_config_map("dependent", ns)))

    core.delete_namespaced_config_map("keeper", ns, body=client.V1DeleteOptions(propagation_policy="Orphan"))
    wait_for("keeper deleted", lambda: _gone(lambda: core.read_namespaced_config_map("keeper", ns)))
    orphan = wait_for(
        "orphan released",
        lambda: (o := core.read_namespaced_config_map("orphan", ns)).metadata.owner_references is None and o,
    )
    assert orphan.metadata.name == "orphan"


def test_service_accounts_and_their_tokens_are_made(
    whole_cluster: Any, whole_cluster_api: ApiClient, whole_cluster_namespace: str
) -> None:
    import base64

    from kubernetes import client

    core = client.CoreV1Api(whole_cluster_api)
    ns = whole_cluster_namespace
    # serviceaccount controller: every namespace gets its `default` ServiceAccount.
    wait_for("default ServiceAccount", lambda: not _gone(lambda: core.read_namespaced_service_account("default", ns)))
    # serviceaccount-token controller: a token Secret is filled in, signed with the plane's key.
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": "default-token", "annotations": {"kubernetes.io/service-account.name": "default"}},
            "type": "kubernetes.io/service-account-token",
        },
    )
    secret = wait_for(
        "token filled in",
        lambda: (s := core.read_namespaced_secret("default-token", ns)).data and "token" in s.data and s,
    )
    token = base64.b64decode(secret.data["token"]).decode()
    # kube-apiserver accepts it: the ServiceAccount's identity reaches discovery (allowed to
    # every authenticated user) and RBAC refuses it the rest (403, not 401).
    context = ssl.create_default_context(cafile=str(whole_cluster.plane.ca_file))  # type: ignore[union-attr]

    def status_of(path: str) -> int:
        request = urllib.request.Request(f"{whole_cluster.server}{path}")
        request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    assert status_of("/api") == 200
    assert status_of("/api/v1/nodes") == 403
