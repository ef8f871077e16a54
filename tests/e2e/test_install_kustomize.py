"""`kubectl apply -k manifests/` installs respool: the kustomize base on the real API server."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from respool.api.crds import generate

ROOT = Path(__file__).resolve().parents[2]


def test_kustomize_build_renders_the_base(kubectl: Any) -> None:
    documents = [
        d for d in yaml.safe_load_all(kubectl("kustomize", str(ROOT / "manifests")).stdout) if d
    ]
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == sorted(
        [
            "Namespace",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "ClusterRole",  # respool-edit
            "ClusterRole",  # respool-view
        ]
    )
    namespaced = [
        d
        for d in documents
        if d["kind"] in {"ServiceAccount", "Deployment", "Service", "Role", "RoleBinding"}
    ]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"respool-system"}
    binding = next(d for d in documents if d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "respool", "namespace": "respool-system"}
    ]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/respool/respool:0.1.0"
    # Metrics on localhost only, unless the metrics-service component is added.
    assert "--metrics-address=127.0.0.1" in container["args"]
    assert [p["name"] for p in container["ports"]] == ["healthz"]
    # Leader election: the new Pod of a rollout waits as a standby, never a second writer.
    assert "--leader-elect" in container["args"]
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    lease_binding = next(d for d in documents if d["kind"] == "RoleBinding")
    assert lease_binding["subjects"] == binding["subjects"]
    crds = [d for d in documents if d["kind"] == "CustomResourceDefinition"]
    # kustomize adds only the part-of label; the schemas are the generated ones.
    assert [c["spec"] for c in crds] == [c["spec"] for c in generate()]


def test_kubectl_apply_k_installs_everything(kubectl: Any) -> None:
    result = kubectl("apply", "-k", str(ROOT / "manifests"))
    for expected in (
        "namespace/respool-system",
        "customresourcedefinition.apiextensions.k8s.io/resourcepools.respool.io",
        "customresourcedefinition.apiextensions.k8s.io/resourcereservations.respool.io",
        "serviceaccount/respool",
        "clusterrole.rbac.authorization.k8s.io/respool",
        "clusterrolebinding.rbac.authorization.k8s.io/respool",
        "role.rbac.authorization.k8s.io/respool-leases",
        "rolebinding.rbac.authorization.k8s.io/respool-leases",
        "clusterrole.rbac.authorization.k8s.io/respool-edit",
        "clusterrole.rbac.authorization.k8s.io/respool-view",
        "deployment.apps/respool",
    ):
        assert expected in result.stdout, result.stdout
    try:
        deployment = json.loads(
            kubectl("get", "deployment", "respool", "-n", "respool-system", "-o", "json").stdout
        )
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "respool"
        assert pod["securityContext"]["runAsNonRoot"] is True
        # The service account may do exactly what the operator needs: spot-check both ways.
        who = "--as=system:serviceaccount:respool-system:respool"
        allowed = [
            ("patch", "resourcereservations.respool.io/status"),
            ("watch", "resourcepools.respool.io"),
            ("create", "events"),
            ("list", "nodes"),
            ("patch", "nodes"),  # enforcement: Taint (its own taint and label only)
            ("watch", "namespaces"),
            ("watch", "priorityclasses.scheduling.k8s.io"),  # spec.priorityClassName
            ("list", "customresourcedefinitions.apiextensions.k8s.io"),
            # ResourceReservationSchedules create and clean up their own reservations.
            ("create", "resourcereservations.respool.io"),
            ("delete", "resourcereservations.respool.io"),
            ("watch", "resourcereservationschedules.respool.io"),
            ("patch", "resourcereservationschedules.respool.io/status"),
        ]
        denied = [
            ("get", "secrets"),
            ("update", "resourcereservations.respool.io"),
            ("patch", "resourcereservationschedules.respool.io"),
            ("delete", "resourcepools.respool.io"),
            ("update", "resourcepools.respool.io"),
            ("update", "nodes"),
            ("delete", "nodes"),
            ("create", "nodes"),
            ("create", "pods"),
            ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
            ("create", "priorityclasses.scheduling.k8s.io"),
        ]

        def can(verb: str, resource: str) -> str:
            name, _, sub = resource.partition("/")
            extra = [f"--subresource={sub}"] if sub else []
            result = kubectl("auth", "can-i", verb, name, *extra, "-A", who, check=False)
            return str(result.stdout.strip())

        for verb, resource in allowed:
            assert can(verb, resource) == "yes", f"{verb} {resource} refused"
        for verb, resource in denied:
            assert can(verb, resource) == "no", f"{verb} {resource} allowed"
        assert can("update", "resourcereservations.respool.io/status") == "no"
        # The leader-election Lease: in respool-system only, and only respool's by name.

        def can_lease(verb: str, where: str, name: str = "") -> str:
            target = f"leases.coordination.k8s.io/{name}" if name else "leases.coordination.k8s.io"
            result = kubectl("auth", "can-i", verb, target, "-n", where, who, check=False)
            return str(result.stdout.strip())

        for verb in ("get", "update"):
            assert can_lease(verb, "respool-system", "respool-leader") == "yes", verb
            assert can_lease(verb, "respool-system", "someone-elses") == "no", verb
            assert can_lease(verb, "default", "respool-leader") == "no", verb
        assert can_lease("create", "respool-system") == "yes"
        assert can_lease("create", "default") == "no"
        assert can_lease("delete", "respool-system", "respool-leader") == "no"
        # Applying again changes nothing (idempotent install).
        again = kubectl("apply", "-k", str(ROOT / "manifests")).stdout
        assert "configured" not in again, again
    finally:
        # The CRDs stay (other tests of this session use them); everything else goes.
        kubectl(
            "delete",
            "deployment/respool",
            "serviceaccount/respool",
            "role/respool-leases",
            "rolebinding/respool-leases",
            "-n",
            "respool-system",
            "--wait=false",
            check=False,
        )
        kubectl("delete", "clusterrolebinding/respool", "clusterrole/respool",
                "clusterrole/respool-edit", "clusterrole/respool-view", check=False)


def test_the_metrics_service_component_exposes_metrics_on_purpose(
        kubectl: Any, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize takes relative paths only.
        "resources": [os.path.relpath(ROOT / "manifests", overlay)],
        "components": [os.path.relpath(ROOT / "manifests" / "metrics-service", overlay)],
    }))
    documents = [d for d in yaml.safe_load_all(kubectl("kustomize", str(overlay)).stdout) if d]
    service = next(d for d in documents if d["kind"] == "Service")
    assert service["metadata"]["namespace"] == "respool-system"
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--metrics-address=0.0.0.0" in container["args"]
    assert "--metrics-address=127.0.0.1" not in container["args"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    assert service["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items())
