"""The tenant roles reach tenants through the built-in roles (issue 11, item 12).

`respool-edit` and `respool-view` carry the `aggregate-to-edit|admin|view` labels; what makes
those labels mean anything is kube-controller-manager's ClusterRole aggregation controller.
This runs on the session's whole cluster (with its controller-manager): a ServiceAccount bound
only to the built-in `edit` role may create and delete reservations but never write their
status nor touch pools, and one bound to `view` may only read them.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from e2e.conftest import REPO


def _can(kubectl: list[str], namespace: str, account: str, verb: str, resource: str,
         subresource: str | None = None) -> bool:
    args = [*kubectl, "auth", "can-i", verb, resource, "-n", namespace,
            f"--as=system:serviceaccount:{namespace}:{account}"]
    if subresource:
        args.append(f"--subresource={subresource}")
    answer = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    return answer.stdout.strip() == "yes"


def test_the_built_in_roles_give_tenants_the_respool_roles(whole_cluster: Any,
                                                           whole_cluster_namespace: str) -> None:
    kubectl = [str(whole_cluster.bin_dir / "kubectl"), "--kubeconfig",
               str(whole_cluster.kubeconfig)]
    namespace = whole_cluster_namespace

    def run(*args: str) -> None:
        done = subprocess.run([*kubectl, *args], capture_output=True, text=True, timeout=180,
                              check=False)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"

    run("apply", "--server-side", "-f", str(REPO / "crds"))
    # (Ours only: the whole cluster may hold other CRDs, and other tests' objects.)
    run("wait", "--for=condition=Established", "--timeout=150s",
        "crd/resourcepools.respool.io", "crd/resourcereservations.respool.io")
    run("apply", "--server-side", "-f", str(REPO / "manifests" / "tenant-rbac.yaml"))
    for account, role in (("editor", "edit"), ("viewer", "view")):
        run("create", "serviceaccount", account, "-n", namespace)
        run("create", "rolebinding", f"{account}-{role}", "-n", namespace,
            f"--clusterrole={role}", f"--serviceaccount={namespace}:{account}")
    reservations = "resourcereservations.respool.io"
    # The aggregation controller adds the rules to `edit` and `view` asynchronously.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
            _can(kubectl, namespace, "editor", "create", reservations)
            and _can(kubectl, namespace, "viewer", "list", reservations)):
        time.sleep(1)
    for verb in ("create", "get", "list", "watch", "patch", "update", "delete"):
        assert _can(kubectl, namespace, "editor", verb, reservations), verb
    for verb in ("get", "list", "watch"):
        assert _can(kubectl, namespace, "viewer", verb, reservations), verb
    for verb in ("create", "patch", "delete"):
        assert not _can(kubectl, namespace, "viewer", verb, reservations), verb
    for account in ("editor", "viewer"):
        # Status is the operator's (restore trusts it), pools are the administrators'.
        for verb in ("patch", "update"):
            assert not _can(kubectl, namespace, account, verb, reservations, "status"), \
                (account, verb)
        for verb in ("create", "patch", "delete"):
            assert not _can(kubectl, namespace, account, verb, "resourcepools.respool.io"), \
                (account, verb)
