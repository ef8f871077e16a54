"""`respool get|describe|reserve|release` (and `kubectl respool`) on real objects, with the
live operator on the real control plane."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from respool.api import parse_time

pytestmark = pytest.mark.timeout(180)

Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]
Run = Callable[..., "subprocess.CompletedProcess[str]"]
VENV_BIN = Path(sys.executable).parent


def admin_cluster(control_plane: Any) -> dict[str, Any]:
    """The cluster entry (server and CA) of the test kubeconfig, for a kubeconfig of another user."""
    config = yaml.safe_load(Path(control_plane.kubeconfig).read_text())
    return dict(config["clusters"][0]["cluster"])


@pytest.fixture
def cli(kube_env: dict[str, str]) -> Run:
    """Run the installed `respool` command (or any other) with the test cluster's env."""
    env = dict(kube_env)
    env["PATH"] = os.pathsep.join([env["PATH"], str(VENV_BIN)])
    env["COLUMNS"] = "120"

    def run(*args: str, expect: int = 0, program: str = "respool") -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [program, *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        assert completed.returncode == expect, (
            f"{program} {' '.join(args)} exited {completed.returncode}, expected {expect}:\n"
            f"{completed.stderr}{completed.stdout}"
        )
        return completed

    return run


@pytest.fixture
def pool(kubectl: Kubectl, operator: Any, namespace: str) -> Iterator[str]:
    """A 4-rank pool (node[0-3], 8 cores and 1 GPU each), ready."""
    name = f"rack-{secrets.token_hex(3)}"
    manifest = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourcePool",
        "metadata": {"name": name},
        "spec": {
            "resources": {
                "version": 1,
                "execution": {
                    "R_lite": [{"rank": "0-3", "children": {"core": "0-7", "gpu": "0"}}],
                    "nodelist": ["node[0-3]"],
                },
            },
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    kubectl("wait", "--for=condition=Ready", f"rpool/{name}", "--timeout=30s")
    yield name
    kubectl("delete", "rsv", "--all", "-n", namespace, "--wait=false", check=False)
    kubectl("delete", "rpool", name, "--wait=false", check=False)


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def test_reserve_wait_get_describe_release(cli: Run, pool: str, namespace: str, kubectl: Kubectl) -> None:
    done = cli("reserve", pool, "--nodes", "2", "--exclusive", "--duration", "1h", "--wait", "--timeout", "60s",
               "-n", namespace, "--name", "mine")
    assert f"{namespace}/mine Active: node[0-1] (ranks 0-1)" in done.stdout
    assert "waiting up to 1m" in done.stderr and "mine: Active" in done.stderr

    later = cli("reserve", pool, "--nodes", "4", "--exclusive", "--duration", "30m", "-n", namespace, "--name", "later")
    assert later.stdout.startswith("resourcereservation.respool.io/later created")
    wait_for(lambda: json.loads(kubectl("get", "rsv", "later", "-n", namespace, "-o", "json").stdout)
             .get("status", {}).get("phase") == "Scheduled")

    table = cli("get", "reservations", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "POOL", "MODE", "PHASE", "ID", "START", "END", "NODES", "AGE"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["mine"][1:4] == [pool, "exclusive", "Active"]
    assert rows["mine"][7] == "node[0-1]"
    assert rows["later"][3] == "Scheduled" and rows["later"][7] == "node[0-3]"

    everywhere = cli("get", "rsv", "-A", "--pool", pool).stdout.splitlines()
    assert everywhere[0].split()[0] == "NAMESPACE"
    assert {line.split()[1] for line in everywhere[1:]} == {"mine", "later"}

    as_json = json.loads(cli("get", "rsv", "mine", "-n", namespace, "-o", "json").stdout)
    assert as_json["status"]["allocated"]["nodelist"] == "node[0-1]"
    as_yaml = yaml.safe_load(cli("get", "reservations", "-n", namespace, "-o", "yaml").stdout)
    assert as_yaml["kind"] == "List" and len(as_yaml["items"]) == 2

    pools = cli("get", "pools").stdout.splitlines()
    assert pools[0].split()[:4] == ["NAME", "RANKS", "DOWN", "ALLOCATED"]
    row = next(line.split() for line in pools[1:] if line.split()[0] == pool)
    assert row[1] == "4"
    assert json.loads(cli("get", "pool", pool, "-o", "json").stdout)["metadata"]["name"] == pool

    described = cli("describe", "pool", pool, "--hours", "4", "--width", "48", "--utc").stdout
    assert f"Name:          {pool}" in described
    assert "Utilization now:" in described
    lines = described.splitlines()
    grid = {line.split()[0]: line.split()[1] for line in lines if line.startswith("node")}
    # the 1h Active hold on node0-1 (A), then the 30m whole-pool window (B) right after it
    assert grid["node[0-1]"].startswith("A" * 11) and "B" in grid["node[0-1]"]
    assert grid["node[2-3]"].startswith("." * 11) and "B" in grid["node[2-3]"]
    assert any(line.startswith(f"A  {namespace}/mine") and "Active" in line for line in lines)
    assert any(line.startswith(f"B  {namespace}/later") and "Scheduled" in line and "starts in" in line for line in lines)

    one = cli("describe", "reservation", "mine", "-n", namespace).stdout
    assert "Phase:           Active" in one and "node[0-1]" in one

    released = cli("release", "mine", "later", "-n", namespace)
    assert "resourcereservation.respool.io/mine released" in released.stdout
    assert "No reservations found" in cli("get", "rsv", "-n", namespace).stderr


def test_free_answers_without_creating_anything(
        cli: Run, pool: str, namespace: str, kubectl: Kubectl) -> None:
    cli("reserve", pool, "--nodes", "2", "--exclusive", "--duration", "1h", "--wait",
        "--timeout", "60s", "-n", namespace, "--name", "holder")
    held = json.loads(kubectl("get", "rsv", "holder", "-n", namespace, "-o", "json").stdout)
    end = parse_time(held["status"]["endTime"])
    before = json.loads(kubectl("get", "rsv", "-A", "-o", "json").stdout)["items"]
    # Two nodes of 8 cores are free now, without end; four only after the holder.
    two = json.loads(cli("free", pool, "--nodes", "2", "--cores", "8", "--duration", "2h",
                         "-o", "json").stdout)
    # Nothing in the way: as long as policy.maxDuration (24 h by default) allows.
    assert two["available"] is True and two["longestFromStart"] == 86400
    assert two["maxDuration"] == 86400
    four = json.loads(cli("free", pool, "--nodes", "4", "--duration", "30m", "-o",
                          "json").stdout)
    assert four["available"] is False and four["longestFromStart"] == 0
    assert four["earliestStart"] == end and four["earliestEnd"] == end + 1800
    assert [step["node"] for step in four["free"]] == [2]
    gpus = cli("free", pool, "--gpus", "1", "--duration", "1h", "--utc").stdout
    assert f"pool {pool}: one node with 1 core(s) and 1 GPU(s)" in gpus
    assert "free at" in gpus and ": yes" in gpus and "longest window from" in gpus
    assert "(policy.maxDuration 24h" in gpus
    never = cli("free", pool, "--nodes", "5", "--duration", "1h", expect=1)
    assert "can never fit" in never.stderr
    # Nothing was created, changed or deleted meanwhile.
    after = json.loads(kubectl("get", "rsv", "-A", "-o", "json").stdout)["items"]
    # (Compared without metadata: the operator adds its finalizer behind the grant.)
    assert [(o["metadata"]["uid"], o["metadata"]["generation"], o["spec"], o["status"])
            for o in after] == [
        (o["metadata"]["uid"], o["metadata"]["generation"], o["spec"], o["status"])
        for o in before]
    cli("release", "holder", "-n", namespace)


def test_kubectl_plugin(cli: Run, pool: str) -> None:
    out = cli("respool", "get", "pools", program="kubectl").stdout
    assert pool in out and out.startswith("NAME")
    assert cli("respool", "--help", program="kubectl").stdout.startswith("usage: kubectl respool")


def test_shared_reservations_and_release_by_id(cli: Run, pool: str, namespace: str) -> None:
    for name in ("s1", "s2"):
        cli("reserve", pool, "--nodes", "4", "--shared", "--duration", "10m", "--wait", "--timeout", "30s",
            "-n", namespace, "--name", name)
    described = cli("describe", "pool", pool, "--width", "24", "--hours", "1").stdout
    assert any(line.startswith("node[0-3]") and line.split()[1].startswith("+") for line in described.splitlines())
    identifier = json.loads(cli("get", "rsv", "s1", "-n", namespace, "-o", "json").stdout)["status"]["reservationId"]
    assert "s1 released" in cli("release", identifier, "-n", namespace).stdout


def test_clear_errors(cli: Run, pool: str, namespace: str, kubectl: Kubectl, control_plane: Any, tmp_path: Path) -> None:
    missing = cli("reserve", "no-such-pool", "-n", namespace, expect=1)
    assert missing.stderr.strip() == "error: ResourcePool 'no-such-pool' does not exist"
    assert "does not exist" in cli("describe", "pool", "no-such-pool", expect=1).stderr
    gone = cli("release", "nothing-here", "-n", namespace, expect=1)
    assert f"no reservation 'nothing-here' in namespace '{namespace}'" in gone.stderr
    ghost = cli("reserve", pool, "-n", "no-such-namespace", expect=1)
    assert "namespace 'no-such-namespace' does not exist" in ghost.stderr, ghost.stderr

    kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    kubeconfig = tmp_path / "nobody.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": admin_cluster(control_plane)}],
        "users": [{"name": "nobody", "user": {"token": token}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "nobody", "namespace": namespace}}],
        "current-context": "x",
    }))
    forbidden = cli("reserve", pool, "--kubeconfig", str(kubeconfig), expect=1)
    assert forbidden.stderr.startswith(f"error: forbidden in namespace '{namespace}'")
    listing = cli("get", "rsv", "--kubeconfig", str(kubeconfig), expect=1)
    assert listing.stderr.startswith(f"error: forbidden in namespace '{namespace}'")


def test_wait_gives_up_and_releases(cli: Run, pool: str, namespace: str, kubectl: Kubectl) -> None:
    cli("reserve", pool, "--nodes", "4", "--exclusive", "--duration", "1h", "--wait", "-n", namespace, "--name", "hog")
    late = cli("reserve", pool, "--nodes", "1", "--wait", "--timeout", "5s", "-n", namespace, "--name", "late", expect=1)
    assert "MaxWaitExceeded" in late.stderr
    assert "released" in late.stderr
    names = [o["metadata"]["name"] for o in json.loads(kubectl("get", "rsv", "-n", namespace, "-o", "json").stdout)["items"]]
    assert names == ["hog"]
