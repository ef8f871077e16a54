"""GitOps health on objects the real operator wrote: kstatus (Flux CD) and the Argo CD Lua.

Reservations are driven into every phase by the running operator; then, on the live objects,
1. the kstatus rules Flux CD applies give the expected result for each phase,
2. the Argo CD health scripts shipped in the chart's values give the expected health,
3. nothing but the user who created a reservation ever wrote its spec (the operator writes
   status, through the status subresource, and its finalizer): a GitOps sync never fights it.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import LuaRuntime

VALUES = Path(__file__).resolve().parents[2] / "helm" / "respool" / "values.yaml"


def health_checks() -> dict[str, str]:
    """The Argo CD health scripts as the chart ships them."""
    return dict(yaml.safe_load(VALUES.read_text())["argocd"]["healthChecks"])


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def run_health_check(script: str, obj: dict[str, Any]) -> dict[str, str]:
    """Run a script the way Argo CD does: ``obj`` global in, ``{status, message}`` out."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _to_lua(lua, obj)
    result = lua.execute(script)
    return {"status": str(result["status"]), "message": str(result["message"])}


POOL_SPEC = {
    "resources": {
        "version": 1,
        "execution": {
            "R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}],
            "nodelist": ["gitops[0-1]"],
        },
    },
    "policy": {"defaultDuration": "1h", "claimTimeout": "5m"},
}


def kstatus(obj: dict[str, Any]) -> str:
    """kstatus (sigs.k8s.io/cli-utils) for a custom resource: InProgress until the latest
    generation is observed, then Reconciling=True -> InProgress, Stalled=True -> Failed,
    otherwise Current."""
    status = obj.get("status") or {}
    observed = status.get("observedGeneration")
    if observed is None or observed != obj["metadata"].get("generation"):
        return "InProgress"
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    if conditions.get("Reconciling", {}).get("status") == "True":
        return "InProgress"
    if conditions.get("Stalled", {}).get("status") == "True":
        return "Failed"
    return "Current"


def trio(obj: dict[str, Any]) -> tuple[str, str, str]:
    conditions = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}
    return (
        conditions.get("Ready", "-"),
        conditions.get("Reconciling", "-"),
        conditions.get("Stalled", "-"),
    )


# name -> (spec changes, phase, (Ready, Reconciling, Stalled), kstatus, Argo CD health)
CASES: dict[str, tuple[dict[str, Any], str, tuple[str, str, str], str, str]] = {
    "active": (
        {"request": {"slots": 2}, "duration": "1h"},
        "Active",
        ("True", "False", "False"),
        "Current",
        "Healthy",
    ),
    "scheduled": (
        {"request": {"slots": 1}, "startTime": "2030-01-01T00:00:00Z", "duration": "1h"},
        "Scheduled",
        ("False", "True", "False"),
        "InProgress",
        "Suspended",
    ),
    "waiting": (
        {"request": {"nodes": 2, "exclusive": True}, "duration": "1h", "nextAvailable": False},
        "Pending",
        ("False", "True", "False"),
        "InProgress",
        "Progressing",
    ),
    "infeasible": (
        {"request": {"slots": 1, "coresPerSlot": 64}, "duration": "1h"},
        "Failed",
        ("False", "False", "True"),
        "Failed",
        "Degraded",
    ),
    "expired": (
        {"request": {"slots": 1}, "duration": "2s"},
        "Expired",
        ("False", "False", "False"),
        "Current",
        "Healthy",
    ),
    "no-pool": (
        {"pool": "does-not-exist", "request": {"slots": 1}, "duration": "1h"},
        "Pending",
        ("False", "False", "True"),
        "Failed",
        "Degraded",
    ),
}


@pytest.fixture
def driven(operator: Any, rk: Any, namespace: str) -> Iterator[dict[str, dict[str, Any]]]:
    """Reservations in every phase, as the operator left them (snapshots of the live objects)."""
    from kubernetes.client.rest import ApiException

    pool = f"gitops-{secrets.token_hex(3)}"
    rk.create_pool(pool, POOL_SPEC)
    try:
        for name, (spec, *_rest) in CASES.items():
            rk.create(namespace, name, {"pool": pool, **spec})
        objects = {}
        for name, (_spec, phase, *_rest) in CASES.items():
            objects[name] = rk.wait_for(
                namespace,
                name,
                lambda o, phase=phase: (
                    (o.get("status") or {}).get("phase") == phase
                    and o["status"].get("observedGeneration") == o["metadata"]["generation"]
                ),
                timeout=30,
                what=f"phase {phase}, observed",
            )
        # A waiter has settled once it knows its place in line too: the standing is computed
        # after its first status write and at most every few seconds (controller/standing.py),
        # so it lands in a second write (see test_settled_objects_are_not_rewritten).
        objects["waiting"] = rk.wait_for(
            namespace,
            "waiting",
            lambda o: (o.get("status") or {}).get("queuePosition") == 1
            and bool(o["status"].get("startNoLaterThan")),
            timeout=30,
            what="queuePosition 1 and a startNoLaterThan",
        )
        objects["pool"] = rk.wait_pool(
            pool, lambda o: kstatus(o) == "Current", timeout=30, what="pool observed"
        )
        yield objects
    finally:
        for name in CASES:
            with contextlib.suppress(ApiException):
                rk.delete(namespace, name)
        with contextlib.suppress(ApiException):
            rk.delete_pool(pool)


def test_kstatus_and_argo_health_per_phase(driven: dict[str, dict[str, Any]]) -> None:
    reservation_check = health_checks()["respool.io_ResourceReservation"]
    for name, (_spec, phase, expected_trio, expected_kstatus, expected_argo) in CASES.items():
        obj = driven[name]
        assert obj["status"]["phase"] == phase
        assert trio(obj) == expected_trio, (name, obj["status"]["conditions"])
        assert kstatus(obj) == expected_kstatus, name
        health = run_health_check(reservation_check, obj)
        assert health["status"] == expected_argo, (name, health)
        assert health["message"], name
    # Ready is True exactly while Active (kubectl wait --for=condition=Ready semantics).
    assert [n for n, o in driven.items() if n != "pool" and trio(o)[0] == "True"] == ["active"]
    pool = driven["pool"]
    assert trio(pool) == ("True", "False", "False")
    assert run_health_check(health_checks()["respool.io_ResourcePool"], pool)["status"] == "Healthy"


def test_the_operator_never_writes_spec(driven: dict[str, dict[str, Any]]) -> None:
    for name, obj in driven.items():
        writers_of_spec = {
            entry["manager"]
            for entry in obj["metadata"].get("managedFields") or []
            if "f:spec" in (entry.get("fieldsV1") or {})
        }
        creators = {
            entry["manager"]
            for entry in obj["metadata"].get("managedFields") or []
            if entry.get("operation") == "Update"
            and entry.get("subresource") != "status"
            and "f:spec" in (entry.get("fieldsV1") or {})
        }
        assert len(writers_of_spec) == 1, (name, writers_of_spec)
        assert writers_of_spec == creators
        status_writers = {
            entry["manager"]
            for entry in obj["metadata"].get("managedFields") or []
            if "f:status" in (entry.get("fieldsV1") or {})
        }
        assert status_writers, name
        for entry in obj["metadata"].get("managedFields") or []:
            if "f:status" in (entry.get("fieldsV1") or {}):
                assert entry.get("subresource") == "status", (name, entry["manager"])
        assert not writers_of_spec & status_writers, name


def test_settled_objects_are_not_rewritten(
    driven: dict[str, dict[str, Any]], rk: Any, namespace: str
) -> None:
    """Once settled, nothing is written again: a status field the schema would prune (and the
    operator would then rewrite forever) or a flapping condition would show up here."""
    import time

    names = ("active", "scheduled", "waiting", "infeasible", "no-pool")
    time.sleep(2)
    before = {n: rk.get(namespace, n)["metadata"]["resourceVersion"] for n in names}
    time.sleep(2)
    after = {n: rk.get(namespace, n)["metadata"]["resourceVersion"] for n in names}
    assert before == after, "settled reservations keep being rewritten"
