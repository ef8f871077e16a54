"""Unknown namespace labels never admit (issue 11, item 7), on the real API server.

The operator runs with the chart's ClusterRole minus the right to list and watch Namespaces,
so it can never learn a namespace's labels. A pool whose `namespaceSelector` is a `NotIn` or
`DoesNotExist` (which an empty label set satisfies) once admitted every namespace then; now
its reservations wait, answered as for a pool that does not exist, while a pool without a
selector still grants.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.test_rbac_least_privilege import (
    Kubectl,
    LimitedOperator,
    kubeconfig_for_token,
    phase_of,
    stop_shared_operator,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]


def _rules_without_namespaces() -> list[dict[str, Any]]:
    role = next(d for d in yaml.safe_load_all((ROOT / "manifests" / "rbac.yaml").read_text())
                if d and d["kind"] == "ClusterRole")
    rules = [r for r in role["rules"] if "namespaces" not in r["resources"]]
    assert len(rules) == len(role["rules"]) - 1
    return rules


def _pool(name: str, selector: dict[str, Any] | None) -> str:
    spec: dict[str, Any] = {"resources": {"version": 1, "execution": {
        "R_lite": [{"rank": "0", "children": {"core": "0-3"}}], "nodelist": [f"{name}-n0"]}}}
    if selector is not None:
        spec["namespaceSelector"] = selector
    return json.dumps({"apiVersion": "respool.io/v1alpha1", "kind": "ResourcePool",
                       "metadata": {"name": name}, "spec": spec})


def _reservation(name: str, namespace: str, pool: str) -> str:
    return json.dumps({"apiVersion": "respool.io/v1alpha1", "kind": "ResourceReservation",
                       "metadata": {"name": name, "namespace": namespace},
                       "spec": {"pool": pool, "duration": "10m"}})


@pytest.mark.timeout(300)
def test_selectors_never_admit_a_namespace_whose_labels_are_unknown(
    control_plane: Any, kubectl: Kubectl, kube_env: dict[str, str], tmp_path: Path,
    request: pytest.FixtureRequest, crds: list[str],
) -> None:
    stop_shared_operator(request)
    suffix = secrets.token_hex(3)
    home, team = f"blind-{suffix}", f"team-{suffix}"
    role = f"respool-blind-{suffix}"
    for namespace in (home, team):
        kubectl("create", "namespace", namespace)
    kubectl("create", "serviceaccount", "operator", "-n", home)
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": role}, "rules": _rules_without_namespaces()}))
    kubectl("create", "clusterrolebinding", role, f"--clusterrole={role}",
            f"--serviceaccount={home}:operator")
    # The chart's namespaced Role too (the booking seal key's Lease lives in the operator's
    # own namespace, here `home`).
    leases = next(d for d in yaml.safe_load_all((ROOT / "manifests" / "rbac.yaml").read_text())
                  if d and d["kind"] == "Role")
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": role, "namespace": home}, "rules": leases["rules"]}))
    kubectl("create", "rolebinding", role, f"--role={role}", f"--serviceaccount={home}:operator",
            "-n", home)
    token = kubectl("create", "token", "operator", "-n", home, "--duration=1h").stdout.strip()
    config = kubeconfig_for_token(control_plane.kubeconfig, token, tmp_path / "blind.kubeconfig")
    pools = {f"notin-{suffix}": {"matchExpressions": [
                 {"key": "team", "operator": "NotIn", "values": ["banned"]}]},
             f"absent-{suffix}": {"matchExpressions": [
                 {"key": "banned", "operator": "DoesNotExist"}]},
             f"open-{suffix}": None}
    operator = LimitedOperator(config, tmp_path / "operator.log", kube_env,
                               [f"--leader-election-namespace={home}"])
    try:
        for name, selector in pools.items():
            kubectl("apply", "-f", "-", input=_pool(name, selector))
        operator.start()
        operator.wait_log("respool controller started")
        assert "cannot list Namespaces" in operator.log()
        for name in pools:
            kubectl("create", "-f", "-", input=_reservation(name, team, name))
        # No selector: nothing to judge, granted as usual (the operator is working).
        wait_for("the open pool's grant",
                 lambda: phase_of(kubectl, team, f"open-{suffix}") == "Active")
        for name in (f"notin-{suffix}", f"absent-{suffix}"):
            wait_for(f"{name} waiting",
                     lambda name=name: phase_of(kubectl, team, name) == "Pending")
            status = json.loads(kubectl("get", "rsv", name, "-n", team, "-o", "json").stdout)[
                "status"]
            stalled = {c["type"]: c for c in status["conditions"]}["Stalled"]
            assert stalled["status"] == "True" and stalled["reason"] == "PoolNotFound", status
            assert not status.get("allocated"), status
        assert operator.alive(), operator.log()[-4000:]
        assert "Traceback" not in operator.log(), operator.log()[-6000:]
    finally:
        # Deleted while the operator runs, so that it lets go of its finalizers.
        kubectl("delete", "rsv", "--all", "-n", team, "--timeout=30s", check=False)
        for name in pools:
            kubectl("delete", "rpool", name, "--timeout=30s", check=False)
        operator.stop()
        kubectl("delete", "clusterrolebinding", role, check=False)
        kubectl("delete", "clusterrole", role, check=False)
        kubectl("delete", "namespace", home, team, "--wait=false", check=False)
