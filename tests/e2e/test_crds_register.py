"""The generated CRDs on a real API server: registration, structural schema, pruning, columns.

Runs against the session's private control plane (tests/conftest.py). No operator runs here:
statuses are written by the test through the status subresource, as the operator would.
"""

from __future__ import annotations

import copy
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from respool.api import ResourcePoolSpec, ResourceReservationSpec
from respool.api.crds import generate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests" / "examples"


def install_crds(kubectl: Any) -> None:
    """Apply crds/ server-side and wait until both CRDs are Established."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    for crd in generate():
        kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd['metadata']['name']}"
        )


def stop_shared_operator(request: pytest.FixtureRequest) -> None:
    """Stop the session's shared operator, if the operator fixtures run one (tests/e2e/conftest.py)."""
    try:
        slot = request.getfixturevalue("_operator_slot")
    except pytest.FixtureLookupError:
        return
    slot.stop_current()


@pytest.fixture(scope="module")
def crds(kubectl: Any, request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """The CRDs installed, and no operator running: these tests write status themselves, as
    the operator would, and must not race one (the shared operator restarts on next use)."""
    stop_shared_operator(request)
    install_crds(kubectl)
    return generate()


def _get_json(kubectl: Any, *args: str) -> dict[str, Any]:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def test_crds_are_established_and_structural(kubectl: Any, crds: list[dict[str, Any]]) -> None:
    for crd in crds:
        live = _get_json(kubectl, "crd", crd["metadata"]["name"])
        conditions = {c["type"]: c for c in live["status"]["conditions"]}
        assert conditions["Established"]["status"] == "True"
        assert conditions["NamesAccepted"]["status"] == "True"
        assert "NonStructuralSchema" not in conditions, conditions.get("NonStructuralSchema")
        assert live["status"]["acceptedNames"]["shortNames"] == crd["spec"]["names"]["shortNames"]
        assert live["status"]["acceptedNames"]["categories"] == ["respool"]
        # What the API server stored is what we generated (nothing dropped or rewritten).
        assert live["spec"]["versions"][0]["schema"] == crd["spec"]["versions"][0]["schema"]


def test_api_resources_short_names_and_category(kubectl: Any, crds: list[dict[str, Any]]) -> None:
    listing = kubectl("api-resources", "--api-group=respool.io", "-o", "wide").stdout
    assert "rpool" in listing and "rsv" in listing
    assert "respool" in listing  # category column
    kubectl("get", "rpool")
    kubectl("get", "rsv", "-A")
    kubectl("get", "respool", "-A")


def _unique(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


FULL_POOL_SPEC: dict[str, Any] = {
    "resources": {
        "version": 1,
        "execution": {
            "R_lite": [
                {"rank": "0-1", "children": {"core": "0-7"}},
                {"rank": "2", "children": {"core": "0-7", "gpu": "0-1"}},
            ],
            "nodelist": ["cn[10-12]"],
            "properties": {"bigmem": "1", "+debugq": "0-2"},
            "starttime": 0,
            "expiration": 1760003600.0,
            "nslots": 3,
        },
        "scheduling": {"writer": "mysched", "graph": {"nodes": [{"id": "0"}], "edges": []}},
    },
    "down": "1",
    "enforcement": "Taint",
    "trackNodes": True,
    "expiration": "2030-01-01T00:00:00Z",
    "namespaceSelector": {
        "matchLabels": {"team": "a"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold", "silver"]}],
    },
    "policy": {
        "defaultDuration": "30m",
        "maxDuration": "12h",
        "claimTimeout": "2m",
        "maxUnclaimedHold": "45m",
        "reminders": {"startingSoon": "10m", "endingSoon": "0s"},
        "limits": [
            {
                "namespaceSelector": {
                    "matchLabels": {"tier": "student"},
                    "matchExpressions": [{"key": "course", "operator": "NotIn",
                                          "values": ["hpc-101"]}],
                },
                "maxNodes": 2,
                "maxCores": 16,
                "maxGPUs": 1,
                "maxNodeHoursPerWeek": 40,
                "maxDuration": "4h",
                "maxAdvance": "168h",
                "allowedHours": [
                    {"days": ["Mon", "Fri"], "from": "20:00", "to": "08:00",
                     "timeZone": "Europe/Berlin"},
                ],
            },
        ],
        "maxPriority": [
            {"value": 100},
            {
                "namespaceSelector": {
                    "matchLabels": {"tier": "release"},
                    "matchExpressions": [{"key": "team", "operator": "In", "values": ["ci"]}],
                },
                "value": 1000000,
            },
        ],
        "preemptionGracePeriod": "2m",
        "evictionGracePeriod": "45s",
    },
    "maintenance": [
        {
            "name": "firmware",
            "ranks": "0-1",
            "start": "2030-12-05T02:00:00Z",
            "end": "2030-12-05T06:00:00Z",
            "reason": "BIOS update",
            "mode": "Evict",
        },
        {"name": "rack-power", "hostlist": "cn12", "start": "2030-12-06T00:00:00Z",
         "duration": "1h", "mode": "Drain"},
    ],
}

FULL_POOL_STATUS: dict[str, Any] = {
    "observedGeneration": 1,
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "PoolReady",
            "message": "3 ranks, 1 down",
            "lastTransitionTime": "2026-11-21T10:00:00Z",
            "observedGeneration": 1,
        },
        {"type": "Reconciling", "status": "False", "reason": "PoolReady", "message": "idle"},
        {"type": "Stalled", "status": "False", "reason": "PoolReady", "message": "ok"},
    ],
    "allocationGeneration": 12,
    "down": "1",
    "allocated": "0,2",
    "summary": "rank[0-1]/core[0-7] rank2/core[0-7],gpu[0-1]",
    "capacity": {
        "core": {"total": 24, "allocated": 6, "down": 8, "free": 10},
        "gpu": {"total": 2, "allocated": 1, "down": 0, "free": 1},
        "node": {"total": 3, "allocated": 2, "down": 1, "free": 0},
    },
    "reservations": {"Pending": 1, "Scheduled": 2, "Active": 3, "Expired": 4, "Failed": 5},
    "usage": [
        {"namespace": "team-a", "nodes": 1, "cores": 8, "gpus": 1, "nodeHoursUsed": 12.5,
         "nodeHoursBooked": 3.0},
    ],
    "maintenance": [
        {
            "name": "firmware",
            "ranks": "0-1",
            "start": "2030-12-05T02:00:00Z",
            "end": "2030-12-05T06:00:00Z",
            "mode": "Evict",
            "reason": "BIOS update",
            "inProgress": False,
        }
    ],
    "message": "3 ranks (1 down), 10 of 24 cores free",
}

FULL_RESERVATION_SPEC: dict[str, Any] = {
    "pool": "placeholder",
    "mode": "shared",
    "request": {"nodes": 2, "slots": 2, "coresPerSlot": 4, "gpusPerSlot": 1, "exclusive": True},
    "constraints": {
        "properties": ["bigmem", "^slow"],
        "hostlist": ["cn[10-11]"],
        "ranks": "0-2",
        "and": [{"or": [{"properties": ["a"]}, {"ranks": "1"}]}],
        "or": [{"hostlist": ["cn10"]}],
        "not": [{"ranks": "2"}],
    },
    "startTime": "2030-06-01T02:00:00Z",
    "endTime": "2030-06-01T04:00:00+01:00",
    "nextAvailable": False,
    "maxRetry": 7,
    "maxWait": "1h30m",
    "claimPolicy": "Manual",
    "claimed": True,
    "config": {"image": "x", "nested": {"list": [1, "two", {"three": 3.5}], "flag": False}},
    "priorityClassName": "release-blocking",
    "preemptible": True,
    "onEnd": "Evict",
    "idleTimeout": "15m",
}

# The fields FULL_RESERVATION_SPEC cannot hold beside its own (spec.resources excludes
# spec.request, spec.duration excludes spec.endTime).
FULL_RESERVATION_SPEC_ALTERNATIVES: dict[str, Any] = {
    "pool": "placeholder",
    "resources": [
        {
            "type": "node",
            "count": 2,
            "exclusive": True,
            "label": "nodes",
            "with": [
                {
                    "type": "slot",
                    "count": 1,
                    "label": "task",
                    "exclusive": False,
                    "with": [{"type": "core", "count": 4}, {"type": "gpu", "count": 1}],
                }
            ],
        }
    ],
    "startTime": "2030-06-01T02:00:00Z",
    "duration": "2h",
}

FULL_RESERVATION_STATUS: dict[str, Any] = {
    "phase": "Active",
    "reservationId": "pool-42",
    "startTime": "2030-06-01T02:00:00Z",
    "endTime": "2030-06-01T04:00:00.5Z",
    "firstRequestTime": "2026-11-21T10:00:00Z",
    "retryCount": 2,
    # Fields of other phases too (a storage round trip, not a state the operator writes).
    "preReservationId": "pool-41",
    "preReservationExpires": "2030-06-01T01:00:00Z",
    "queuePosition": 3,
    "startNoLaterThan": "2030-06-01T02:00:00Z",
    "unclaimedSince": "2030-06-01T02:00:00Z",
    "priority": 1000,
    "consumers": {"count": 3, "running": 2, "pods": ["train-0", "train-1", "train-2"],
                  "idleSince": "2030-06-01T03:00:00Z"},
    "bookingSeal": "v1.ryvb4aqbbsHireHWlPQfxxqDHQJo6YkVYhE9imKt0b8",
    "displacedBy": ["2f1c7a3e-0b6d-4c59-9a51-7d2e8f0c4b11"],
    "allocated": {
        "ranks": "0-1",
        "nodelist": "cn[10-11]",
        "summary": "rank[0-1]/core[0-7],gpu0",
        "mode": "shared",
        "R": {
            "version": 1,
            "execution": {
                "R_lite": [{"rank": "0-1", "children": {"core": "0-7", "gpu": "0"}}],
                "starttime": 1906596000.0,
                "expiration": 1906603200.5,
                "nslots": 4,
                "nodelist": ["cn[10-11]"],
                "properties": {"bigmem": "1"},
            },
            "scheduling": {"writer": "mysched"},
        },
    },
    "nextAvailable": {
        "available": True,
        "availStart": "2030-06-01T02:00:00Z",
        "availEnd": "2030-06-01T04:00:00Z",
    },
    "config": {"image": "x", "nested": {"list": [1, "two", {"three": 3.5}]}},
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Claimed",
            "message": "claimed",
            "lastTransitionTime": "2026-11-21T10:00:00Z",
            "observedGeneration": 1,
        },
        {"type": "Scheduled", "status": "True", "reason": "WindowBooked", "message": "booked"},
        {"type": "Reconciling", "status": "False", "reason": "Claimed", "message": "done"},
        {"type": "Stalled", "status": "False", "reason": "Claimed", "message": "fine"},
        {
            "type": "ResourcesDegraded",
            "status": "False",
            "reason": "ResourcesHealthy",
            "message": "ok",
        },
    ],
    "observedGeneration": 1,
    "message": "Active until 2030-06-01T04:00:00Z",
}


def _apply_status(kubectl: Any, kind_ref: list[str], status: dict[str, Any]) -> dict[str, Any]:
    patched = kubectl(
        "patch",
        *kind_ref,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
        "-o",
        "json",
    )
    return json.loads(patched.stdout)


def test_pruning_round_trip_keeps_every_field(
    kubectl: Any, crds: list[dict[str, Any]], namespace: str
) -> None:
    pool_name = _unique("prune")
    pool = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourcePool",
        "metadata": {"name": pool_name},
        "spec": FULL_POOL_SPEC,
    }
    created = json.loads(kubectl("create", "-o", "json", "-f", "-", input=json.dumps(pool)).stdout)
    try:
        assert created["spec"] == FULL_POOL_SPEC
        read = _apply_status(kubectl, ["rpool", pool_name], FULL_POOL_STATUS)
        assert read["status"] == FULL_POOL_STATUS
        assert read["spec"] == FULL_POOL_SPEC
        # The models read back exactly what the API server stored.
        assert ResourcePoolSpec.model_validate(read["spec"]).to_wire() == FULL_POOL_SPEC

        spec = {**FULL_RESERVATION_SPEC, "pool": pool_name}
        reservation = {
            "apiVersion": "respool.io/v1alpha1",
            "kind": "ResourceReservation",
            "metadata": {"name": "full", "namespace": namespace},
            "spec": spec,
        }
        created = json.loads(
            kubectl("create", "-o", "json", "-f", "-", input=json.dumps(reservation)).stdout
        )
        assert created["spec"] == spec
        read = _apply_status(kubectl, ["rsv", "full", "-n", namespace], FULL_RESERVATION_STATUS)
        assert read["status"] == FULL_RESERVATION_STATUS
        assert read["spec"] == spec
        assert ResourceReservationSpec.model_validate(read["spec"]).to_wire() == spec

        alternatives = {**FULL_RESERVATION_SPEC_ALTERNATIVES, "pool": pool_name}
        reservation = {
            "apiVersion": "respool.io/v1alpha1",
            "kind": "ResourceReservation",
            "metadata": {"name": "full-alternatives", "namespace": namespace},
            "spec": alternatives,
        }
        created = json.loads(
            kubectl("create", "-o", "json", "-f", "-", input=json.dumps(reservation)).stdout
        )
        # Every field kept as sent; the server adds only the models' defaults.
        assert {key: created["spec"][key] for key in alternatives} == alternatives
        assert created["spec"] == ResourceReservationSpec.model_validate(alternatives).to_wire()
    finally:
        kubectl("delete", "rpool", pool_name, "--wait=false", check=False)


def test_unknown_fields_are_refused_by_strict_clients_and_pruned_otherwise(
    kubectl: Any, crds: list[dict[str, Any]], namespace: str
) -> None:
    body = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourceReservation",
        "metadata": {"name": "typo", "namespace": namespace},
        "spec": {"pool": "p", "coresPerSlot": 4},
    }
    refused = kubectl("create", "-f", "-", input=json.dumps(body), check=False)
    assert refused.returncode != 0
    assert 'unknown field "spec.coresPerSlot"' in refused.stderr
    kubectl("create", "--validate=false", "-f", "-", input=json.dumps(body))
    stored = _get_json(kubectl, "rsv", "typo", "-n", namespace)
    assert "coresPerSlot" not in stored["spec"]


def test_server_defaults_equal_the_model_defaults(
    kubectl: Any, crds: list[dict[str, Any]], namespace: str
) -> None:
    body = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourceReservation",
        "metadata": {"name": "minimal", "namespace": namespace},
        "spec": {"pool": "p", "request": {"nodes": 1}},
    }
    stored = json.loads(kubectl("create", "-o", "json", "-f", "-", input=json.dumps(body)).stdout)
    assert stored["spec"] == ResourceReservationSpec.model_validate(body["spec"]).to_wire()
    pool_name = _unique("defaults")
    pool = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourcePool",
        "metadata": {"name": pool_name},
        "spec": {"resources": FULL_POOL_SPEC["resources"]},
    }
    try:
        stored = json.loads(
            kubectl("create", "-o", "json", "-f", "-", input=json.dumps(pool)).stdout
        )
        assert stored["spec"] == ResourcePoolSpec.model_validate(pool["spec"]).to_wire()
        assert stored["spec"]["policy"] == {
            "defaultDuration": "1h", "claimTimeout": "5m", "maxDuration": "24h",
            "reminders": {"startingSoon": "15m", "endingSoon": "15m"}}
    finally:
        kubectl("delete", "rpool", pool_name, "--wait=false", check=False)


def _examples() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        documents.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return documents


def test_examples_round_trip_through_the_api_server(
    kubectl: Any, crds: list[dict[str, Any]], namespace: str
) -> None:
    suffix = secrets.token_hex(3)
    created_pools = []
    try:
        for document in _examples():
            document = copy.deepcopy(document)
            if document["kind"] == "ResourcePool":
                document["metadata"]["name"] += f"-{suffix}"
                created_pools.append(document["metadata"]["name"])
                model: Any = ResourcePoolSpec
            elif document["kind"] == "ResourceReservation":
                document["metadata"]["namespace"] = namespace
                document["spec"]["pool"] += f"-{suffix}"
                model = ResourceReservationSpec
            else:
                continue
            stored = json.loads(
                kubectl("create", "-o", "json", "-f", "-", input=json.dumps(document)).stdout
            )
            # Nothing the example says was dropped, and the server's defaults are the models'.
            assert stored["spec"] == model.model_validate(document["spec"]).to_wire(), document
    finally:
        for name in created_pools:
            kubectl("delete", "rpool", name, "--wait=false", check=False)


def test_printer_columns_render(kubectl: Any, crds: list[dict[str, Any]], namespace: str) -> None:
    pool_name = _unique("cols")
    pool = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourcePool",
        "metadata": {"name": pool_name},
        "spec": FULL_POOL_SPEC,
    }
    kubectl("create", "-f", "-", input=json.dumps(pool))
    try:
        _apply_status(kubectl, ["rpool", pool_name], FULL_POOL_STATUS)
        header, row = kubectl("get", "rpool", pool_name).stdout.strip().splitlines()
        assert header.split()[:8] == [
            "NAME",
            "RANKS",
            "DOWN",
            "ALLOCATED",
            "FREE",
            "CORES",
            "FREE",
            "GPUS",
        ]
        assert row.split()[:7] == [pool_name, "3", "1", "0,2", "10", "1", "True"]

        reservation = {
            "apiVersion": "respool.io/v1alpha1",
            "kind": "ResourceReservation",
            "metadata": {"name": "cols", "namespace": namespace},
            "spec": {**FULL_RESERVATION_SPEC, "pool": pool_name},
        }
        kubectl("create", "-f", "-", input=json.dumps(reservation))
        _apply_status(kubectl, ["rsv", "cols", "-n", namespace], FULL_RESERVATION_STATUS)
        header, row = kubectl("get", "rsv", "cols", "-n", namespace).stdout.strip().splitlines()
        assert header.split()[:9] == [
            "NAME",
            "POOL",
            "MODE",
            "PHASE",
            "ID",
            "START",
            "END",
            "NODES",
            "AGE",
        ]
        assert row.split()[:8] == [
            "cols",
            pool_name,
            "shared",
            "Active",
            "pool-42",
            "2030-06-01T02:00:00Z",
            "2030-06-01T04:00:00.5Z",
            "cn[10-11]",
        ]
        wide = kubectl("get", "rsv", "cols", "-n", namespace, "-o", "wide").stdout
        assert "RETRIES" in wide and "Active until" in wide
        # kubectl wait on the Ready condition works on the status the operator writes.
        kubectl("wait", "--for=condition=Ready", "--timeout=10s", "rsv/cols", "-n", namespace)
        # Server-side filtering by pool and phase (selectableFields).
        selected = kubectl(
            "get",
            "rsv",
            "-A",
            "--field-selector",
            f"spec.pool={pool_name},status.phase=Active",
            "-o",
            "name",
        ).stdout.split()
        assert selected == ["resourcereservation.respool.io/cols"]
        none = kubectl(
            "get", "rsv", "-A", "--field-selector", "status.phase=Failed", "-o", "name"
        ).stdout.split()
        assert "resourcereservation.respool.io/cols" not in none
    finally:
        kubectl("delete", "rpool", pool_name, "--wait=false", check=False)
