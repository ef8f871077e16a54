"""The Helm chart with the real helm and API server: lint, render, schema, server-side dry run.

helm comes from the project's build (``control_plane.bin_dir``), the same one `respool dev`
uses. Rendering is offline; the dry runs go to the session's private API server.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from respool.api.crds import generate
from respool.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "respool"
ALL_OPTIONS = [
    "--set",
    "metrics.service.enabled=true",
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "podDisruptionBudget.enabled=true",
    "--set",
    "argocd.configMap.create=true",
    "--set",
    "operator.watchNamespaces={team-a,team-b}",
    "--set",
    "operator.logLevel=debug",
    "--set",
    "image.digest=sha256:" + "a" * 64,
    "--set",
    "podAnnotations.example\\.com/note=hello",
    "--set",
    "replicaCount=2",
    "--set",
    "podAntiAffinity=hard",
    "--set",
    "webhook.enabled=true",
]


def helm(bin_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [str(bin_dir / "helm"), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and completed.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{completed.stderr}{completed.stdout}")
    return completed


def render(bin_dir: Path, *options: str, namespace: str = "respool-system") -> list[dict[str, Any]]:
    text = helm(bin_dir, "template", "rp", str(CHART), "--namespace", namespace, *options).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in documents}


def test_helm_lint_strict(control_plane: Any) -> None:
    result = helm(control_plane.bin_dir, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout
    helm(control_plane.bin_dir, "lint", "--strict", str(CHART), *ALL_OPTIONS)


def test_default_render_has_the_expected_objects(control_plane: Any) -> None:
    kinds = sorted(d["kind"] for d in render(control_plane.bin_dir))
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",  # respool-edit, for tenants
            "ClusterRole",  # respool-view, for tenants
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
        ]
    )
    all_kinds = sorted(d["kind"] for d in render(control_plane.bin_dir, *ALL_OPTIONS))
    assert all_kinds == sorted(
        [*kinds, "Service", "Service", "ServiceMonitor", "PodDisruptionBudget", "ConfigMap"])


def test_grafana_dashboard_config_map_for_the_sidecar(control_plane: Any) -> None:
    assert not [d for d in render(control_plane.bin_dir) if d["kind"] == "ConfigMap"]
    helm(control_plane.bin_dir, "lint", "--strict", str(CHART), "--set", "metrics.grafanaDashboard.enabled=true")
    documents = render(control_plane.bin_dir, "--set", "metrics.grafanaDashboard.enabled=true",
                       "--set", "metrics.grafanaDashboard.namespace=monitoring",
                       "--set", "metrics.grafanaDashboard.annotations.grafana_folder=respool")
    [config_map] = [d for d in documents if d["kind"] == "ConfigMap"]
    metadata = config_map["metadata"]
    assert metadata["labels"]["grafana_dashboard"] == "1"
    assert metadata["namespace"] == "monitoring"
    assert metadata["annotations"] == {"grafana_folder": "respool"}
    shipped = json.loads((CHART / "dashboards" / "respool.json").read_text())
    assert json.loads(config_map["data"]["respool.json"]) == shipped


def test_chart_crds_render_identical_to_the_generated_ones(control_plane: Any) -> None:
    documents = render(control_plane.bin_dir, "--include-crds")
    crds = [d for d in documents if d["kind"] == "CustomResourceDefinition"]
    assert crds == generate()


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_deployment_is_hardened_and_probed(control_plane: Any) -> None:
    deployment = by_kind(render(control_plane.bin_dir))["Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    # Leader election is on by default: a rollout starts the new Pod as a standby.
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _container(deployment)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"healthz": 8080}
    assert f"--liveness=http://0.0.0.0:{ports['healthz']}/healthz" in container["args"]
    # Metrics (no authentication; they name pools and capacity) on localhost only by default.
    assert "--metrics-port=9090" in container["args"]
    assert "--metrics-address=127.0.0.1" in container["args"]


def test_metrics_are_exposed_only_when_asked(control_plane: Any) -> None:
    exposed = by_kind(render(control_plane.bin_dir, "--set", "metrics.service.enabled=true"))
    container = _container(exposed["Deployment"])
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "healthz": 8080, "metrics": 9090}
    assert "--metrics-address=0.0.0.0" in container["args"]
    assert exposed["Service"]["spec"]["ports"][0]["targetPort"] == "metrics"
    refused = helm(control_plane.bin_dir, "template", "rp", str(CHART), "--set",
                   "metrics.serviceMonitor.enabled=true", check=False)
    assert refused.returncode != 0
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled=true" in refused.stderr


@pytest.mark.parametrize("options", [[], ALL_OPTIONS], ids=["defaults", "all-options"])
def test_rendered_arguments_are_accepted_by_respool_run(
    control_plane: Any, options: list[str]
) -> None:
    deployment = by_kind(render(control_plane.bin_dir, *options))["Deployment"]
    container_args = _container(deployment)["args"]
    args = build_parser(container_args).parse_args(container_args)
    assert args.command == "run"
    assert args.leader_elect and args.leader_election_id == "respool-leader"
    assert (
        args.leader_elect_lease_duration,
        args.leader_elect_renew_deadline,
        args.leader_elect_retry_period,
    ) == (15.0, 10.0, 2.0)
    if options:
        assert args.namespace == ["team-a", "team-b"] and args.verbose


def test_services_and_monitor_point_at_the_pod(control_plane: Any) -> None:
    documents = render(control_plane.bin_dir, *ALL_OPTIONS)
    objects = by_kind(documents)
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    (service,) = [d for d in documents if d["metadata"]["name"] == "rp-respool-metrics"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    monitor = objects["ServiceMonitor"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    pdb = objects["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    image = _container(objects["Deployment"])["image"]
    assert image == "ghcr.io/respool/respool@sha256:" + "a" * 64
    config = objects["ConfigMap"]["data"]
    assert set(config) == {
        "resource.customizations.health.respool.io_ResourcePool",
        "resource.customizations.health.respool.io_ResourceReservation",
    }


def _cluster_roles(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == "ClusterRole"}


def test_tenant_roles_aggregate_and_never_write_status(control_plane: Any) -> None:
    # Release "respool": the names the issue promises, and the kustomize base's.
    text = helm(control_plane.bin_dir, "template", "respool", str(CHART)).stdout
    roles = _cluster_roles([d for d in yaml.safe_load_all(text) if d])
    kustomize = _cluster_roles([
        d for d in yaml.safe_load_all((ROOT / "manifests" / "tenant-rbac.yaml").read_text())
        if d])
    assert set(kustomize) == {"respool-edit", "respool-view"} <= set(roles)
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    for name, expected in (("respool-edit", {"admin", "edit"}),
                           ("respool-view", {"admin", "edit", "view"})):
        assert roles[name]["rules"] == kustomize[name]["rules"]
        for labels in (roles[name]["metadata"]["labels"], kustomize[name]["metadata"]["labels"]):
            assert {k[len(aggregate):] for k, v in labels.items()
                    if k.startswith(aggregate) and v == "true"} == expected
        for rule in roles[name]["rules"]:
            assert rule["apiGroups"] == ["respool.io"]
            assert rule["resources"] == [
                "resourcereservations", "resourcereservationschedules"]  # no status, no pools
            assert "*" not in rule["verbs"]
    assert set(roles["respool-view"]["rules"][0]["verbs"]) == {"get", "list", "watch"}
    assert {"create", "delete", "patch"} <= set(roles["respool-edit"]["rules"][0]["verbs"])
    off = render(control_plane.bin_dir, "--set", "rbac.tenantRoles=false")
    assert set(_cluster_roles(off)) == {"rp-respool"}


def test_cluster_role_is_the_kustomize_one_and_least_privilege(control_plane: Any) -> None:
    role = _cluster_roles(render(control_plane.bin_dir))["rp-respool"]
    kustomize = next(
        d
        for d in yaml.safe_load_all((ROOT / "manifests" / "rbac.yaml").read_text())
        if d and d["kind"] == "ClusterRole"
    )
    assert role["rules"] == kustomize["rules"]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "*" not in rule.get("apiGroups", [])
        assert "secrets" not in rule["resources"]
    writes = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        if verb in {"create", "update", "patch", "delete", "deletecollection"}
    }
    assert writes == {
        ("respool.io", "resourcepools", "patch"),
        ("respool.io", "resourcereservations", "patch"),
        ("respool.io", "resourcepools/status", "patch"),
        ("respool.io", "resourcereservations/status", "patch"),
        ("", "events", "create"),
        ("", "nodes", "patch"),  # enforcement: Taint, the operator's own taint and label
        # ResourceReservationSchedules: each occurrence's reservation, created and, past the
        # history limits, deleted; the schedule's status.
        ("respool.io", "resourcereservations", "create"),
        ("respool.io", "resourcereservations", "delete"),
        ("respool.io", "resourcereservationschedules/status", "patch"),
    }


#: The booking seal key's Lease (respool.controller.seal_key), read with or without leader
#: election.
SEAL_KEY_RULE = {
    "apiGroups": ["coordination.k8s.io"],
    "resources": ["leases"],
    "resourceNames": ["respool-booking-seal"],
    "verbs": ["get"],
}


def test_lease_role_is_namespaced_and_names_the_lease(control_plane: Any) -> None:
    objects = render(control_plane.bin_dir, namespace="ops")
    role, binding = by_kind(objects)["Role"], by_kind(objects)["RoleBinding"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "ops"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        SEAL_KEY_RULE,
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["respool-leader"],
            "verbs": ["get", "update"],
        },
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == by_kind(objects)["ClusterRoleBinding"]["subjects"]
    kustomize = [
        d
        for d in yaml.safe_load_all((ROOT / "manifests" / "rbac.yaml").read_text())
        if d and d["kind"] == "Role"
    ]
    assert [k["rules"] for k in kustomize] == [role["rules"]]


def test_replicas_spread_and_pdb_with_leader_election(control_plane: Any) -> None:
    objects = by_kind(render(control_plane.bin_dir, *ALL_OPTIONS))
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert objects["Deployment"]["spec"]["replicas"] == 2
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == objects["Deployment"]["spec"]["selector"][
        "matchLabels"
    ]
    assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    soft = by_kind(render(control_plane.bin_dir, "--set", "replicaCount=3"))["Deployment"]
    preferred = soft["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert list(preferred) == ["preferredDuringSchedulingIgnoredDuringExecution"]
    single = by_kind(render(control_plane.bin_dir))["Deployment"]["spec"]["template"]["spec"]
    assert "affinity" not in single  # one replica: nothing to spread


def test_leader_election_off_means_one_replica_recreated(control_plane: Any) -> None:
    objects = by_kind(render(control_plane.bin_dir, "--set", "leaderElection.enabled=false"))
    # Only the booking seal key's Lease: nothing of the leader Lease.
    assert objects["Role"]["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        SEAL_KEY_RULE,
    ]
    deployment = objects["Deployment"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not any(a.startswith("--leader-elect") for a in _container(deployment)["args"])
    refused = helm(
        control_plane.bin_dir,
        "template",
        "rp",
        str(CHART),
        "--set",
        "leaderElection.enabled=false",
        "--set",
        "replicaCount=2",
        check=False,
    )
    assert refused.returncode != 0 and "replicaCount" in refused.stderr


def test_kustomize_deployment_matches_the_chart(control_plane: Any) -> None:
    chart = _container(by_kind(render(control_plane.bin_dir))["Deployment"])
    kustomize_deployment = yaml.safe_load((ROOT / "manifests" / "deployment.yaml").read_text())
    kustomize = _container(kustomize_deployment)
    for key in ("securityContext", "livenessProbe", "ports", "resources", "env", "volumeMounts"):
        assert kustomize[key] == chart[key], key
    assert (
        kustomize_deployment["spec"]["strategy"]
        == by_kind(render(control_plane.bin_dir))["Deployment"]["spec"]["strategy"]
    )
    assert kustomize["args"] == [a for a in chart["args"] if not a.startswith("--pool-status")]
    chart_pod = by_kind(render(control_plane.bin_dir))["Deployment"]["spec"]["template"]["spec"]
    assert (
        kustomize_deployment["spec"]["template"]["spec"]["securityContext"]
        == chart_pod["securityContext"]
    )


@pytest.mark.parametrize(
    ("option", "complaint"),
    [
        ("replicaCount=11", "replicaCount"),
        ("replicaCount=0", "replicaCount"),
        ("leaderElection.leaseDuration=15", "leaseDuration"),
        ("leaderElection.enabled=yes", "enabled"),
        ("podAntiAffinity=always", "podAntiAffinity"),
        ("securityContext.readOnlyRootFilesystem=false", "readOnlyRootFilesystem"),
        ("securityContext.allowPrivilegeEscalation=true", "allowPrivilegeEscalation"),
        ("podSecurityContext.runAsNonRoot=false", "runAsNonRoot"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("operator.logFormat=xml", "logFormat"),
        ("metrics.port=70000", "port"),
        ("imageDigest=sha256:x", "imageDigest"),
        ("operator.watchNamespaces={Bad_NS}", "watchNamespaces"),
    ],
)
def test_values_schema_refuses_bad_values(control_plane: Any, option: str, complaint: str) -> None:
    result = helm(control_plane.bin_dir, "template", "rp", str(CHART), "--set", option, check=False)
    assert result.returncode != 0, f"{option} accepted"
    assert complaint in result.stderr


def test_rendered_chart_passes_server_side_dry_run(
    control_plane: Any, kubectl: Any, namespace: str
) -> None:
    documents = render(control_plane.bin_dir, "--include-crds", *ALL_OPTIONS, namespace=namespace)
    # No Prometheus Operator here: its ServiceMonitor kind does not exist on this API server.
    # The ConfigMap for Argo CD goes to the argocd namespace, which does not exist either.
    checked = [d for d in documents if d["kind"] not in {"ServiceMonitor", "ConfigMap"}]
    stream = "\n---\n".join(json.dumps(d) for d in checked)
    result = kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=stream)
    for document in checked:
        assert document["metadata"]["name"] in result.stdout


def test_operator_pod_meets_the_restricted_pod_security_standard(
    control_plane: Any, kubectl: Any, namespace: str
) -> None:
    """The API server's PodSecurity admission judges the Pod the Deployment would create."""
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    deployment = by_kind(render(control_plane.bin_dir, namespace=namespace))["Deployment"]
    template = deployment["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "respool-operator", "namespace": namespace, **template["metadata"]},
        "spec": template["spec"],
    }
    accepted = kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert accepted.returncode == 0, accepted.stderr
    assert "violate" not in accepted.stderr  # no PodSecurity warnings either
    # The control: the same Pod with one hardening setting undone is refused, so the admission
    # that accepted it above is really enforcing.
    weakened = json.loads(json.dumps(pod))
    weakened["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    refused = kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(weakened), check=False
    )
    assert refused.returncode != 0
    assert "allowPrivilegeEscalation" in refused.stderr


WEBHOOK_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "patch"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},  # onEnd: Evict
    {"apiGroups": ["admissionregistration.k8s.io"],
     "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
     "verbs": ["create"]},
    {"apiGroups": ["admissionregistration.k8s.io"],
     "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
     "resourceNames": ["respool.io"], "verbs": ["patch"]},
]


def test_webhook_is_off_by_default_and_grants_nothing_for_it(control_plane: Any) -> None:
    objects = render(control_plane.bin_dir)
    container = _container(by_kind(objects)["Deployment"])
    assert not [a for a in container["args"] if a.startswith("--webhook")]
    assert "readinessProbe" not in container
    assert not [d for d in objects if d["metadata"]["name"].endswith("-webhook")]
    rules = _cluster_roles(objects)["rp-respool"]["rules"]
    assert not [r for r in rules if "pods" in r["resources"]
                or r["apiGroups"] == ["admissionregistration.k8s.io"]]


def test_webhook_enabled_serves_behind_a_service_to_the_leader_only(control_plane: Any) -> None:
    objects = render(control_plane.bin_dir, "--set", "webhook.enabled=true", namespace="ops")
    deployment = by_kind(objects)["Deployment"]
    container = _container(deployment)
    args = build_parser(container["args"]).parse_args(container["args"])
    assert (args.webhook_port, args.webhook_address, args.webhook_service) == (
        9443, "0.0.0.0", "ops/rp-respool-webhook")
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in container["ports"]
    # Ready only while serving (the leader), so the Service reaches the leader alone; a
    # rolling update would wait for a standby to become Ready, so it is Recreate.
    assert container["readinessProbe"]["tcpSocket"] == {"port": "webhook"}
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    (service,) = [d for d in objects if d["kind"] == "Service"
                  and d["metadata"]["name"] == "rp-respool-webhook"]
    assert service["metadata"]["namespace"] == "ops"
    assert service["spec"]["ports"] == [
        {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items())
    # RBAC: the default rules plus exactly the webhook's (no create/update/delete of Pods).
    default_rules = _cluster_roles(render(control_plane.bin_dir))["rp-respool"]["rules"]
    assert _cluster_roles(objects)["rp-respool"]["rules"] == default_rules + WEBHOOK_RULES


def test_webhook_certificate_secret_is_mounted_not_granted(control_plane: Any) -> None:
    """webhook.certificateSecret: the Secret is a read-only volume the operator reads as its
    --webhook-cert-dir; the ClusterRole stays exactly the webhook's (nothing on Secrets)."""
    objects = render(control_plane.bin_dir, "--set", "webhook.enabled=true",
                     "--set", "webhook.certificateSecret=respool-webhook-tls", namespace="ops")
    deployment = by_kind(objects)["Deployment"]
    container = _container(deployment)
    args = build_parser(container["args"]).parse_args(container["args"])
    assert args.webhook_cert_dir == "/etc/respool/webhook-tls"
    assert {"name": "webhook-tls", "mountPath": "/etc/respool/webhook-tls",
            "readOnly": True} in container["volumeMounts"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["webhook-tls"]["secret"] == {"secretName": "respool-webhook-tls",
                                                "defaultMode": 0o440}
    default_rules = _cluster_roles(render(control_plane.bin_dir))["rp-respool"]["rules"]
    assert _cluster_roles(objects)["rp-respool"]["rules"] == default_rules + WEBHOOK_RULES
    assert not [d for d in objects if d["kind"] in ("Role", "ClusterRole")
                for r in d["rules"] if "secrets" in r.get("resources", [])]
    # Without it (the default), no volume and no --webhook-cert-dir: the operator makes one.
    plain = by_kind(render(control_plane.bin_dir, "--set", "webhook.enabled=true"))
    assert not [a for a in _container(plain["Deployment"])["args"] if "cert-dir" in a]
    assert [v["name"] for v in plain["Deployment"]["spec"]["template"]["spec"]["volumes"]] == [
        "tmp"]
    # And a certificateSecret without the webhook mounts nothing.
    off = by_kind(render(control_plane.bin_dir, "--set", "webhook.certificateSecret=x"))
    assert [v["name"] for v in off["Deployment"]["spec"]["template"]["spec"]["volumes"]] == [
        "tmp"]


def test_webhook_component_of_the_kustomize_base_matches_the_chart(
    control_plane: Any, kubectl: Any, namespace: str, tmp_path: Path
) -> None:
    import os

    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(ROOT / "manifests", overlay)],
        "components": [os.path.relpath(ROOT / "manifests" / "webhook", overlay)],
    }))
    built = [d for d in yaml.safe_load_all(kubectl("kustomize", str(overlay)).stdout) if d]
    chart = by_kind(render(control_plane.bin_dir, "--set", "webhook.enabled=true",
                           namespace="respool-system"))
    chart_container = _container(chart["Deployment"])
    deployment = next(d for d in built if d["kind"] == "Deployment")
    container = _container(deployment)
    assert deployment["spec"]["strategy"] == chart["Deployment"]["spec"]["strategy"]
    assert container["readinessProbe"] == chart_container["readinessProbe"]
    assert container["ports"] == chart_container["ports"]
    assert [a for a in container["args"] if a.startswith("--webhook")] == [
        "--webhook-port=9443", "--webhook-address=0.0.0.0",
        "--webhook-service=respool-system/respool-webhook"]
    service = next(d for d in built if d["kind"] == "Service")
    assert service["metadata"] == {**service["metadata"], "name": "respool-webhook",
                                   "namespace": "respool-system"}
    assert service["spec"]["ports"] == [
        {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}]
    role = next(d for d in built if d["kind"] == "ClusterRole"
                and d["metadata"]["name"] == "respool")
    assert role["rules"] == _cluster_roles(
        render(control_plane.bin_dir, "--set", "webhook.enabled=true"))["rp-respool"]["rules"]
    # And the API server takes it all (server-side dry run, in the test's namespace: a dry
    # run does not create respool-system).
    checked = [d for d in built if d["kind"] != "Namespace"]
    for document in checked:
        if "namespace" in document["metadata"]:
            document["metadata"]["namespace"] = namespace
    stream = "\n---\n".join(json.dumps(d) for d in checked)
    result = kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=stream)
    assert "respool-webhook" in result.stdout
