"""New CRDs over live objects, the way docs/install.md says (Helm never upgrades `crds/`).

On a private control plane (CRDs are cluster-wide: the session's cluster keeps its own):
`helm install` of the chart as it was before the last change to the ResourcePool schema (fd98c98:
no `policy.maxUnclaimedHold`, no `policy.maxDuration` default), so Helm creates the old CRDs;
the operator from the checkout grants live reservations; then exactly the documented command
applies the current CRDs. The CRDs are replaced in place, every live object keeps its grant,
the new field is accepted and kept (before, the API server refused it as unknown), the new
default shows on objects stored without it, and the operator goes on deciding.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from respool.devcluster.controlplane import ControlPlane
from respool.devcluster.errors import DevClusterError

from .conftest import OperatorProcess, RespoolKube
from .invariants import assert_no_conflicting_holds

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "respool"
POOL_CRD = "resourcepools.respool.io.yaml"
INSTALL_DOC = ROOT / "docs" / "install.md"


def _previous_pool_crd() -> dict[str, Any]:
    """The ResourcePool CRD as the chart shipped it before fd98c98."""
    crd = yaml.safe_load((CHART / "crds" / POOL_CRD).read_text())
    old = copy.deepcopy(crd)
    for version in old["spec"]["versions"]:
        policy = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["policy"]
        del policy["properties"]["maxUnclaimedHold"]
        del policy["properties"]["maxDuration"]["default"]
        policy["default"].pop("maxDuration")
    assert old != crd
    return dict(old)


def _documented_upgrade_command() -> list[str]:
    """The CRD upgrade command of docs/install.md, as a person would copy it."""
    text = INSTALL_DOC.read_text()
    match = re.search(r"apply the new CRDs yourself:\s*```sh\n(kubectl [^\n]+)\n```", text)
    assert match, "docs/install.md names the command that upgrades the CRDs"
    return match[1].split()


@pytest.fixture(scope="module")
def private_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("crd-upgrade-plane"), name="respool-crd-upgrade",
                         die_with_parent=True)
    failure = None
    try:
        plane.start()
    except DevClusterError as error:
        failure = str(error)
    if failure is not None:
        pytest.fail(f"the private control plane could not start:\n{failure}", pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


def test_new_crds_over_live_objects_keep_every_grant(
    private_plane: ControlPlane, tmp_path: Path,
) -> None:
    from kubernetes import config

    env = private_plane.env()
    bin_dir = private_plane.bin_dir

    def kubectl(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(bin_dir / "kubectl"), *args], input=input, capture_output=True,
                              text=True, env=env, timeout=120, check=False)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}{done.stdout}"
        return done

    def pool_policy_schema() -> dict[str, Any]:
        crd = json.loads(kubectl("get", "crd", "resourcepools.respool.io", "-o", "json").stdout)
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        return dict(schema["properties"]["spec"]["properties"]["policy"])

    # The previous chart: today's chart with the previous ResourcePool CRD in crds/.
    chart = tmp_path / "respool"
    shutil.copytree(CHART, chart)
    (chart / "crds" / POOL_CRD).write_text(yaml.safe_dump(_previous_pool_crd(), sort_keys=False))
    helm = subprocess.run([str(bin_dir / "helm"), "install", "respool", str(chart), "--namespace",
                           "respool-system", "--create-namespace"], capture_output=True,
                          text=True, env=env, timeout=180, check=False)
    assert helm.returncode == 0, helm.stderr
    kubectl("wait", "--for=condition=Established", "--timeout=60s",
            "crd/resourcepools.respool.io", "crd/resourcereservations.respool.io")
    assert "maxUnclaimedHold" not in pool_policy_schema()["properties"]

    api_client = config.new_client_from_config(config_file=str(private_plane.kubeconfig))
    rk = RespoolKube(api_client)
    operator = OperatorProcess(env, tmp_path / "operator.log")
    operator.start()
    try:
        namespace = f"upgrade-{secrets.token_hex(3)}"
        kubectl("create", "namespace", namespace)
        pool = {"apiVersion": "respool.io/v1alpha1", "kind": "ResourcePool",
                "metadata": {"name": "upgrade-pool"},
                "spec": {"resources": {"version": 1, "execution": {
                    "R_lite": [{"rank": "0-3", "children": {"core": "0-7"}}],
                    "nodelist": ["upg[0-3]"]}},
                    "policy": {"claimTimeout": "5m", "maxUnclaimedHold": "30m"}}}

        def reservation(name: str, **spec: Any) -> dict[str, Any]:
            return {"apiVersion": "respool.io/v1alpha1", "kind": "ResourceReservation",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"pool": "upgrade-pool", **spec}}

        live = [
            reservation("holder", mode="exclusive", duration="2h",
                        request={"nodes": 2, "slots": 1, "coresPerSlot": 8}),
            reservation("sharer", mode="shared", duration="2h",
                        request={"slots": 1, "coresPerSlot": 2}),
            reservation("later", mode="exclusive", duration="1h", startTime="2030-06-01T02:00:00Z",
                        request={"nodes": 4, "slots": 1, "coresPerSlot": 8}),
            reservation("waiter", mode="exclusive", duration="1h", nextAvailable=False,
                        maxRetry=50, request={"nodes": 4, "slots": 1, "coresPerSlot": 8}),
        ]
        # The previous schema does not know maxUnclaimedHold: kubectl's strict field
        # validation has the API server refuse it.
        refused = subprocess.run([str(bin_dir / "kubectl"), "apply", "-f", "-"],
                                 input=json.dumps(pool), capture_output=True, text=True, env=env,
                                 timeout=120, check=False)
        assert refused.returncode != 0
        assert 'unknown field "spec.policy.maxUnclaimedHold"' in refused.stderr, refused.stderr
        previous_pool = copy.deepcopy(pool)
        del previous_pool["spec"]["policy"]["maxUnclaimedHold"]
        kubectl("apply", "-f", "-",
                input="\n---\n".join(json.dumps(o) for o in [previous_pool, *live]))
        # Stored without a maxDuration: the previous schema had no default for it.
        assert "maxDuration" not in rk.pool("upgrade-pool")["spec"]["policy"]
        before = {
            "holder": rk.wait_phase(namespace, "holder", "Active", timeout=60)["status"],
            "sharer": rk.wait_phase(namespace, "sharer", "Active", timeout=60)["status"],
            "later": rk.wait_phase(namespace, "later", "Scheduled", timeout=60)["status"],
            "waiter": rk.wait_phase(namespace, "waiter", "Pending", timeout=60)["status"],
        }

        # The upgrade, exactly as documented, from the repository's root.
        command = _documented_upgrade_command()
        upgraded = subprocess.run([str(bin_dir / command[0]), *command[1:]], cwd=ROOT,
                                  capture_output=True, text=True, env=env, timeout=120,
                                  check=False)
        assert upgraded.returncode == 0, f"{' '.join(command)}:\n{upgraded.stderr}"
        kubectl("wait", "--for=condition=Established", "--timeout=60s",
                "crd/resourcepools.respool.io")
        policy_schema = pool_policy_schema()
        assert "maxUnclaimedHold" in policy_schema["properties"]
        assert policy_schema["properties"]["maxDuration"]["default"] == "24h"

        # Objects stored under the previous schema read with the new default ...
        assert rk.pool("upgrade-pool")["spec"]["policy"]["maxDuration"] == "24h"
        # ... the new field is now kept ...
        kubectl("apply", "-f", "-", input=json.dumps(pool))
        assert rk.pool("upgrade-pool")["spec"]["policy"]["maxUnclaimedHold"] == "30m"
        # ... and the operator goes on deciding: a new reservation is granted.
        kubectl("apply", "-f", "-", input=json.dumps(reservation(
            "after", mode="exclusive", duration="30m", request={"slots": 1, "coresPerSlot": 1})))
        rk.wait_phase(namespace, "after", "Active", timeout=60)
        for name, status in before.items():
            now = rk.get(namespace, name)["status"]
            assert now["phase"] == status["phase"], (name, now)
            for key in ("reservationId", "preReservationId", "startTime", "endTime", "allocated"):
                assert now.get(key) == status.get(key), (name, key, now.get(key), status.get(key))
        items = [rk.get(namespace, o["metadata"]["name"]) for o in live]
        items.append(rk.get(namespace, "after"))
        assert_no_conflicting_holds(items)
        assert operator.running()
        assert "Traceback" not in operator.log_text()
    finally:
        operator.stop()
        api_client.close()
