"""Smoke tests proving the local control plane is a real Kubernetes API server.

Objects round-trip through etcd, watches deliver events, CRDs register with a working status
subresource, and ServiceAccount tokens minted through TokenRequest are judged by RBAC.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException

from respool.devcluster import DEFAULT_VERSIONS

pytestmark = pytest.mark.e2e


def _eventually(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout}s")


def test_server_reports_the_built_version(api_client: ApiClient, kubectl: Any) -> None:
    info = client.VersionApi(api_client).get_code()
    assert info.git_version == DEFAULT_VERSIONS.kubernetes
    client_version = json.loads(kubectl("version", "--client", "-o", "json").stdout)
    assert client_version["clientVersion"]["gitVersion"] == DEFAULT_VERSIONS.kubernetes


def test_create_get_delete_configmap(api_client: ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="settings", labels={"app": "smoke"}),
        data={"colour": "blue"},
    )
    created = core.create_namespaced_config_map(namespace, body)
    assert created.metadata.uid
    fetched = core.read_namespaced_config_map("settings", namespace)
    assert fetched.data == {"colour": "blue"}
    assert fetched.metadata.resource_version == created.metadata.resource_version

    with pytest.raises(ApiException) as conflict:
        core.create_namespaced_config_map(namespace, body)
    assert conflict.value.status == 409

    core.delete_namespaced_config_map("settings", namespace)
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map("settings", namespace)
    assert gone.value.status == 404


def test_kubectl_applies_and_reads_back(kubectl: Any, namespace: str) -> None:
    manifest = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "from-kubectl", "namespace": namespace},
            "data": {"k": "v"},
        }
    )
    kubectl("apply", "-f", "-", input=manifest)
    out = kubectl("get", "configmap", "from-kubectl", "-n", namespace, "-o", "jsonpath={.data.k}")
    assert out.stdout == "v"


def test_watch_delivers_added_modified_deleted(api_client: ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    seen: list[tuple[str, str]] = []
    watcher = watch.Watch()

    def collect() -> None:
        for event in watcher.stream(
            core.list_namespaced_config_map,
            namespace,
            resource_version=start,
            timeout_seconds=30,
        ):
            seen.append((event["type"], event["object"].metadata.name))
            if event["type"] == "DELETED":
                watcher.stop()

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="watched"), data={"n": "1"})
    )
    core.patch_namespaced_config_map("watched", namespace, {"data": {"n": "2"}})
    core.delete_namespaced_config_map("watched", namespace)
    thread.join(timeout=30)
    assert not thread.is_alive(), f"watch did not see the deletion; saw {seen}"
    assert seen == [("ADDED", "watched"), ("MODIFIED", "watched"), ("DELETED", "watched")]


def _widget_crd(group: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                    "required": ["size"],
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"phase": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


def test_crd_registers_and_status_subresource_works(api_client: ApiClient, namespace: str) -> None:
    # A group per test namespace: CRDs are cluster-scoped and test sessions may share a cluster.
    group = f"{namespace}.smoke.respool.io"
    extensions = client.ApiextensionsV1Api(api_client)
    extensions.create_custom_resource_definition(_widget_crd(group))
    try:

        def established() -> bool:
            crd = extensions.read_custom_resource_definition(f"widgets.{group}")
            conditions = (crd.status and crd.status.conditions) or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        _eventually(established, what="CRD Established")
        custom = client.CustomObjectsApi(api_client)

        def create_widget() -> dict[str, Any]:
            return custom.create_namespaced_custom_object(
                group,
                "v1",
                namespace,
                "widgets",
                {
                    "apiVersion": f"{group}/v1",
                    "kind": "Widget",
                    "metadata": {"name": "w1"},
                    "spec": {"size": 3},
                    "status": {"phase": "ignored-on-create"},
                },
            )

        # Discovery can lag Established by a moment: retry until the new kind is served.
        created: dict[str, Any] = {}

        def try_create() -> bool:
            nonlocal created
            try:
                created = create_widget()
            except ApiException as error:
                if error.status == 404:
                    return False
                raise
            return True

        _eventually(try_create, what="custom resource served")
        # With a status subresource, status in a create is dropped.
        assert "status" not in created or not created["status"]
        assert created["metadata"]["generation"] == 1

        # Schema validation is enforced by the server.
        with pytest.raises(ApiException) as invalid:
            custom.create_namespaced_custom_object(
                group,
                "v1",
                namespace,
                "widgets",
                {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "bad"}, "spec": {"size": 0}},
            )
        assert invalid.value.status == 422

        patched = custom.patch_namespaced_custom_object_status(
            group, "v1", namespace, "widgets", "w1", {"status": {"phase": "Ready"}}
        )
        assert patched["status"] == {"phase": "Ready"}
        assert patched["metadata"]["generation"] == 1  # status writes do not bump generation

        # A spec write through the main resource leaves status alone and bumps generation.
        spec_patched = custom.patch_namespaced_custom_object(
            group, "v1", namespace, "widgets", "w1", {"spec": {"size": 4}, "status": {"phase": "Nope"}}
        )
        assert spec_patched["status"] == {"phase": "Ready"}
        assert spec_patched["spec"] == {"size": 4}
        assert spec_patched["metadata"]["generation"] == 2
    finally:
        extensions.delete_custom_resource_definition(f"widgets.{group}")


def _as(server: str, token: str, ca_file: str, path: str) -> int:
    """HTTP status of a GET of ``path`` made with a bearer token."""
    import ssl

    context = ssl.create_default_context(cafile=ca_file)
    request = urllib.request.Request(server + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_token_request_token_is_judged_by_rbac(
    api_client: ApiClient, namespace: str, control_plane: Any
) -> None:
    core = client.CoreV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="robot"))
    )
    minted = core.create_namespaced_service_account_token(
        "robot", namespace, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    )
    token = minted.status.token
    assert token and token.count(".") == 2  # a signed JWT
    ca_file = api_client.configuration.ssl_ca_cert
    server = api_client.configuration.host
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    secrets = f"/api/v1/namespaces/{namespace}/secrets"

    # Authenticated (not 401) but not authorized (403): RBAC grants it nothing yet.
    assert _as(server, token, ca_file, configmaps) == 403
    assert _as(server, "not-a-token", ca_file, configmaps) == 401

    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="read-configmaps"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="robot-reads-configmaps"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="read-configmaps"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="robot", namespace=namespace)],
        ),
    )
    # The RBAC authorizer reads roles from an informer cache: allow it a moment to see them.
    _eventually(lambda: _as(server, token, ca_file, configmaps) == 200, what="RBAC grant effective")
    assert _as(server, token, ca_file, secrets) == 403
    assert _as(server, token, ca_file, f"/api/v1/namespaces/{namespace}/configmaps/x") == 404

    review = client.AuthenticationV1Api(api_client).create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
    )
    assert review.status.authenticated
    assert review.status.user.username == f"system:serviceaccount:{namespace}:robot"


def test_helm_is_stamped_and_talks_to_the_cluster(
    control_plane: Any, kube_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    helm = str(control_plane.bin_dir / "helm")
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\n"
        "data:\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )

    def run(*args: str) -> str:
        completed = subprocess.run(
            [helm, *args], capture_output=True, text=True, env=kube_env, timeout=120, check=False
        )
        assert completed.returncode == 0, completed.stderr
        return completed.stdout

    assert DEFAULT_VERSIONS.helm in run("version", "--short")
    # Offline rendering assumes the Kubernetes minor stamped at build time (helm's own
    # client-go, v0.Y -> 1.Y), not helm's compiled-in default of 1.20.
    offline = run("template", "probe", str(chart))
    assert 'kube: "v1.20.0"' not in offline
    assert re.search(r'kube: "v1\.\d\d\.0"', offline), offline
    # Installing asks the server: a real release lands in the namespace.
    run("install", "probe", str(chart), "--namespace", namespace, "--wait", "--timeout", "60s")
    assert "probe" in run("list", "--namespace", namespace, "--short")
    configmap = run("get", "manifest", "probe", "--namespace", namespace)
    assert f'kube: "{DEFAULT_VERSIONS.kubernetes}"' in configmap
    run("uninstall", "probe", "--namespace", namespace)
