"""Static checks of what ships: chart metadata and values schema, kustomize base, Dockerfile.

Rendering, linting and server-side dry runs need the helm/kubectl binaries and a cluster; they
are in tests/e2e/test_helm_*.py and tests/e2e/test_install_*.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "respool"


def _schema_covers(values: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths of values the schema does not describe."""
    missing: list[str] = []
    if not isinstance(values, dict) or schema.get("type") != "object":
        return missing
    if "properties" not in schema and "additionalProperties" not in schema:
        return missing  # a free-form object (e.g. affinity), validated by Kubernetes
    properties = schema.get("properties", {})
    for key, value in values.items():
        if key in properties:
            missing += _schema_covers(value, properties[key], f"{path}.{key}")
        elif not isinstance(schema.get("additionalProperties"), dict):
            missing.append(f"{path}.{key}")
    return missing


def test_values_schema_describes_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert _schema_covers(values, schema) == []
    assert set(schema["properties"]) - {"global"} == set(values)


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "respool"
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M)
    assert version is not None and chart["appVersion"] == version[1]


def test_chart_defaults_are_hardened() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["replicaCount"] == 1
    assert values["leaderElection"]["enabled"] is True
    assert values["podSecurityContext"]["runAsNonRoot"] is True
    assert values["podSecurityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = values["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert values["resources"]["requests"] and values["resources"]["limits"]


def test_dockerfile_runs_respool_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    # The runtime is the base (less build-only parts), flattened into the final image.
    assert re.search(r"^FROM \$\{BASE\} AS runtime$", text, re.M)
    assert re.search(r"^FROM scratch\nCOPY --from=runtime / /$", text, re.M)
    assert "command -v openssl" in text  # the webhook's certificate (webhook_certs.py)
    assert re.search(r"^ARG BASE=python:3\.11-slim", text, re.M)
    assert re.search(r"^USER 65532:65532$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["respool"\]$', text, re.M)
    assert 'CMD ["run"' in text
    assert "uv sync --locked --no-editable" in text  # the closure itself: tests/unit/test_lock.py
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[:1] == ["*"] or "*" in ignore


def test_kustomization_lists_the_base() -> None:
    kustomization = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "respool-system"
    for resource in kustomization["resources"]:
        assert (ROOT / "manifests" / resource).is_file(), resource
    kinds = {
        d["kind"]
        for r in kustomization["resources"]
        for d in yaml.safe_load_all((ROOT / "manifests" / r).read_text())
        if d
    }
    assert kinds == {
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
    }
    assert not any("examples" in r for r in kustomization["resources"])
    # The metrics Service is an opt-in component (metrics are served on 127.0.0.1 otherwise).
    component = yaml.safe_load(
        (ROOT / "manifests" / "metrics-service" / "kustomization.yaml").read_text())
    assert component["kind"] == "Component" and component["resources"] == ["service.yaml"]


def test_no_wildcards_no_secrets_in_any_role() -> None:
    templates = (CHART / "templates" / "rbac.yaml").read_text()
    tenants = (CHART / "templates" / "tenant-rbac.yaml").read_text()
    for text in (templates, tenants, (ROOT / "manifests" / "rbac.yaml").read_text(),
                 (ROOT / "manifests" / "tenant-rbac.yaml").read_text()):
        assert '"*"' not in text and "'*'" not in text and "- *" not in text
        assert "secrets" not in text
        assert "cluster-admin" not in text


def test_leader_election_timings_and_lease_name_agree_everywhere() -> None:
    """client-go's defaults in the chart and the kustomize base, which name the Lease their
    Roles grant (respool run's default id)."""
    from respool.api import parse_duration
    from respool.cli.run import DEFAULT_LEADER_ELECTION_ID

    election = yaml.safe_load((CHART / "values.yaml").read_text())["leaderElection"]
    seconds = {key: parse_duration(election[key])
               for key in ("leaseDuration", "renewDeadline", "retryPeriod")}
    assert seconds == {"leaseDuration": 15.0, "renewDeadline": 10.0, "retryPeriod": 2.0}
    deployment = yaml.safe_load((ROOT / "manifests" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert f"--leader-election-id={DEFAULT_LEADER_ELECTION_ID}" in container["args"]
    for text in ((CHART / "templates" / "rbac.yaml").read_text(),
                 (ROOT / "manifests" / "rbac.yaml").read_text()):
        assert f'resourceNames: ["{DEFAULT_LEADER_ELECTION_ID}"]' in text
    assert f"--leader-election-id={DEFAULT_LEADER_ELECTION_ID}" in (
        CHART / "templates" / "deployment.yaml").read_text()


def test_more_than_one_replica_needs_leader_election() -> None:
    """values.schema.json: replicaCount > 1 only with leaderElection.enabled (never two
    writers); checked here on the schema's own if/then, and by helm in tests/e2e."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["if"]["properties"]["leaderElection"]["properties"]["enabled"] == {
        "const": False}
    assert schema["then"]["properties"]["replicaCount"]["maximum"] == 1
