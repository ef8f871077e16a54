"""The examples do what their comments say, with the real operator running.

Each example is applied as written, except that pool and namespace names get a suffix (so that
this test never meets objects of other tests); then every reservation must reach the phase its
comment promises, and the Manual one must become Active once claimed.
"""

from __future__ import annotations

import copy
import json
import secrets
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


def _documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        documents.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return documents


def _renamed(documents: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    result = []
    for original in documents:
        document = copy.deepcopy(original)
        kind, metadata = document["kind"], document["metadata"]
        if kind in ("Namespace", "ResourcePool"):
            metadata["name"] += f"-{suffix}"
        if kind == "ResourceReservation":
            metadata["namespace"] += f"-{suffix}"
            document["spec"]["pool"] += f"-{suffix}"
        if kind == "ResourceReservationSchedule":
            metadata["namespace"] += f"-{suffix}"
            document["spec"]["template"]["pool"] += f"-{suffix}"
        result.append(document)
    return result


def _status(kubectl: Any, namespace: str, name: str) -> dict[str, Any]:
    got = kubectl("get", "rsv", name, "-n", namespace, "-o", "json").stdout
    return dict(json.loads(got).get("status") or {})


def _stalled_reason(status: dict[str, Any]) -> str | None:
    for condition in status.get("conditions") or []:
        if condition["type"] == "Stalled" and condition["status"] == "True":
            return str(condition["reason"])
    return None


# reservation -> (phases its comment allows, Stalled reason when Failed)
PROMISED: dict[str, tuple[set[str], str | None]] = {
    "build-box": ({"Active"}, None),
    "monitoring": ({"Active"}, None),
    "nightly-regression": ({"Scheduled"}, None),
    "asap-benchmark": ({"Active", "Scheduled"}, None),
    "hil-bench": ({"Scheduled"}, None),
    "a100-training": ({"Active"}, None),
    "jobspec-style": ({"Active"}, None),
    "whole-node": ({"Active"}, None),
    "too-big": ({"Failed"}, "Infeasible"),
    "not-my-lab": ({"Pending"}, "PoolNotFound"),
    "llm-finetune": ({"Active"}, None),
    "lab-pair": ({"Active"}, None),
    "lab-three": ({"Failed"}, "QuotaExceeded"),
    "ci-gpu-run": ({"Active"}, None),
    "release-blocker": ({"Active"}, None),
    "best-effort-sweep": ({"Active"}, None),
    "during-firmware": ({"Pending"}, None),
}


def test_examples_reach_the_phases_their_comments_promise(
    operator: Any, kubectl: Any, rk: Any
) -> None:
    suffix = secrets.token_hex(3)
    documents = _renamed(_documents(), suffix)
    reservations = {
        d["metadata"]["name"]: d for d in documents if d["kind"] == "ResourceReservation"
    }
    assert set(reservations) == set(PROMISED), "every example reservation has a promise here"
    pools = [d["metadata"]["name"] for d in documents if d["kind"] == "ResourcePool"]
    stream = "\n---\n".join(json.dumps(d) for d in documents)
    kubectl("apply", "-f", "-", input=stream)
    try:
        for name, (phases, reason) in PROMISED.items():
            namespace = reservations[name]["metadata"]["namespace"]
            obj = rk.wait_for(
                namespace,
                name,
                lambda o, phases=phases: (o.get("status") or {}).get("phase") in phases,
                timeout=30,
                what=f"one of {sorted(phases)}",
            )
            status = obj["status"]
            assert _stalled_reason(status) == reason, (name, status.get("conditions"))
            if status["phase"] in ("Active", "Scheduled"):
                assert status["allocated"]["ranks"], name
        # The comments name the ranks some of them get.
        a100 = reservations["a100-training"]["metadata"]["namespace"]
        assert _status(kubectl, a100, "a100-training")["allocated"]["ranks"] == "1"
        assert _status(kubectl, a100, "whole-node")["allocated"]["ranks"] == "1"
        assert _status(kubectl, a100, "jobspec-style")["allocated"]["ranks"] == "2-3"
        # hil-bench: claimed by the holder, it becomes Active and echoes its config.
        hil = reservations["hil-bench"]
        namespace = hil["metadata"]["namespace"]
        assert _status(kubectl, namespace, "hil-bench")["preReservationId"]
        kubectl(
            "patch",
            "rsv",
            "hil-bench",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"spec":{"claimed":true}}',
        )
        claimed = rk.wait_phase(namespace, "hil-bench", "Active", timeout=30)["status"]
        assert claimed["config"] == hil["spec"]["config"]
        assert claimed["reservationId"] and not claimed.get("preReservationId")
        # The pools report what they hold.
        rack = rk.wait_pool(
            pools[0], lambda o: (o.get("status") or {}).get("down") == "3", timeout=30
        )
        assert rack["status"]["capacity"]["node"]["total"] == 4
        # Issue 14: priorities as capped by lab-c's policy, and maintenance named.
        team_a = reservations["release-blocker"]["metadata"]["namespace"]
        assert _status(kubectl, team_a, "release-blocker")["priority"] == 100000  # team-a cap
        assert _status(kubectl, team_a, "best-effort-sweep")["priority"] == 10
        assert "busy: maintenance 'firmware' 2030-01-10T02:00Z-06:00Z" in _status(
            kubectl, team_a, "during-firmware")["message"]
    finally:
        for name, document in reservations.items():
            kubectl(
                "delete",
                "rsv",
                name,
                "-n",
                document["metadata"]["namespace"],
                "--wait=false",
                check=False,
            )
        for pool in pools:
            kubectl("delete", "rpool", pool, "--wait=false", check=False)
