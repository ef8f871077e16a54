"""The Argo CD health checks (Lua, shipped in the chart's values and docs/gitops.md), run with a
real Lua runtime (lupa) against sample objects of every phase, the way Argo CD runs them:
the object in the global ``obj``, a table ``{status, message}`` returned."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import LuaRuntime

ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "helm" / "respool" / "values.yaml"
POOL_KEY = "respool.io_ResourcePool"
RESERVATION_KEY = "respool.io_ResourceReservation"
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def health_checks() -> dict[str, str]:
    values = yaml.safe_load(VALUES.read_text())
    checks: dict[str, str] = values["argocd"]["healthChecks"]
    return checks


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        # Lua arrays are 1-based tables; ipairs() walks them.
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def run_health_check(script: str, obj: dict[str, Any]) -> dict[str, str]:
    """Evaluate an Argo CD health script on ``obj``; returns {'status', 'message'}."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _to_lua(lua, obj)
    result = lua.execute(script)
    assert result is not None, "the health script returned nothing"
    answer = {key: result[key] for key in ("status", "message")}
    assert answer["status"] in ARGO_STATUSES, answer
    assert isinstance(answer["message"], str)
    return answer


def condition(type_: str, status: bool, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message or reason,
        "lastTransitionTime": "2026-11-21T10:00:00Z",
        "observedGeneration": 1,
    }


def kstatus(
    ready: bool, reconciling: str | None, stalled: str | None, reason: str
) -> list[dict[str, Any]]:
    """The Ready/Reconciling/Stalled trio as the operator writes it."""
    return [
        condition("Ready", ready, reason),
        condition("Reconciling", reconciling is not None, reconciling or reason),
        condition("Stalled", stalled is not None, stalled or reason),
    ]


def reservation(
    phase: str | None,
    conditions: list[dict[str, Any]] | None = None,
    *,
    generation: int = 1,
    observed: int | None = 1,
    message: str = "",
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourceReservation",
        "metadata": {"name": "r", "namespace": "team-a", "generation": generation},
        "spec": {"pool": "rack-a"},
    }
    if phase is not None:
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": conditions or [],
            "message": message,
        }
        if observed is not None:
            status["observedGeneration"] = observed
        obj["status"] = status
    return obj


RESERVATION_CASES = [
    (
        "active",
        reservation("Active", kstatus(True, None, None, "Granted"), message="granted 0/core0"),
        "Healthy",
        "granted",
    ),
    (
        "active-degraded",
        reservation(
            "Active",
            [
                *kstatus(True, None, None, "Granted"),
                condition("ResourcesDegraded", True, "ResourcesDegraded", "rank 1 down"),
            ],
        ),
        "Degraded",
        "rank 1 down",
    ),
    (
        "scheduled",
        reservation(
            "Scheduled",
            kstatus(False, "WaitingForStart", None, "WaitingForStart"),
            message="pre-reserved from 2030",
        ),
        "Suspended",
        "pre-reserved",
    ),
    (
        "scheduled-manual",
        reservation("Scheduled", kstatus(False, "WaitingForClaim", None, "WaitingForClaim")),
        "Suspended",
        "Scheduled",
    ),
    (
        "pending-capacity",
        reservation(
            "Pending",
            kstatus(False, "WaitingForCapacity", None, "WaitingForCapacity"),
            message="insufficient resources",
        ),
        "Progressing",
        "insufficient",
    ),
    (
        "pending-pool-not-found",
        reservation(
            "Pending",
            kstatus(False, None, "PoolNotFound", "PoolNotFound"),
            message="pool 'x' does not exist",
        ),
        "Degraded",
        "PoolNotFound",
    ),
    (
        "expired",
        reservation("Expired", kstatus(False, None, None, "Expired")),
        "Healthy",
        "Expired",
    ),
    (
        "failed-infeasible",
        reservation(
            "Failed",
            kstatus(False, None, "Infeasible", "Infeasible"),
            message="unsatisfiable request",
        ),
        "Degraded",
        "Infeasible: unsatisfiable",
    ),
    (
        "failed-retry",
        reservation("Failed", kstatus(False, None, "RetryExceeded", "RetryExceeded")),
        "Degraded",
        "RetryExceeded",
    ),
    (
        "failed-max-wait",
        reservation("Failed", kstatus(False, None, "MaxWaitExceeded", "MaxWaitExceeded")),
        "Degraded",
        "MaxWaitExceeded",
    ),
    (
        "failed-namespace",
        reservation("Failed", kstatus(False, None, "NamespaceNotAllowed", "NamespaceNotAllowed")),
        "Degraded",
        "NamespaceNotAllowed",
    ),
    (
        "failed-lost",
        reservation("Failed", kstatus(False, None, "ResourcesLost", "ResourcesLost")),
        "Degraded",
        "ResourcesLost",
    ),
    (
        "failed-invalid",
        reservation("Failed", kstatus(False, None, "InvalidSpec", "InvalidSpec")),
        "Degraded",
        "InvalidSpec",
    ),
    ("no-status-yet", reservation(None), "Progressing", "Waiting for the respool operator"),
    (
        "stale-generation",
        reservation("Active", kstatus(True, None, None, "Granted"), generation=2, observed=1),
        "Progressing",
        "observe generation 2",
    ),
    (
        "no-observed-generation",
        reservation("Active", kstatus(True, None, None, "Granted"), observed=None),
        "Progressing",
        "observe generation 1",
    ),
]


@pytest.mark.parametrize(
    ("case", "obj", "status", "fragment"), RESERVATION_CASES, ids=[c[0] for c in RESERVATION_CASES]
)
def test_reservation_health(case: str, obj: dict[str, Any], status: str, fragment: str) -> None:
    answer = run_health_check(health_checks()[RESERVATION_KEY], obj)
    assert answer["status"] == status, (case, answer)
    assert fragment in answer["message"], (case, answer)


def pool(
    conditions: list[dict[str, Any]] | None,
    *,
    generation: int = 1,
    observed: int = 1,
    message: str = "",
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourcePool",
        "metadata": {"name": "rack-a", "generation": generation},
        "spec": {},
    }
    if conditions is not None:
        obj["status"] = {
            "observedGeneration": observed,
            "conditions": conditions,
            "message": message,
        }
    return obj


POOL_CASES = [
    (
        "ready",
        pool(kstatus(True, None, None, "PoolReady"), message="4 ranks, 32 cores free"),
        "Healthy",
        "32 cores",
    ),
    (
        "invalid-resources",
        pool(kstatus(False, None, "InvalidResources", "InvalidResources")),
        "Degraded",
        "InvalidResources",
    ),
    ("deleting-in-use", pool(kstatus(False, None, "InUse", "InUse")), "Degraded", "InUse"),
    (
        "reconciling",
        pool(kstatus(False, "Reconciling", None, "Reconciling")),
        "Progressing",
        "Reconciling",
    ),
    ("not-ready", pool(kstatus(False, None, None, "NotReady")), "Degraded", "NotReady"),
    ("no-status", pool(None), "Progressing", "Waiting"),
    (
        "stale",
        pool(kstatus(True, None, None, "PoolReady"), generation=3, observed=2),
        "Progressing",
        "generation 3",
    ),
]


@pytest.mark.parametrize(
    ("case", "obj", "status", "fragment"), POOL_CASES, ids=[c[0] for c in POOL_CASES]
)
def test_pool_health(case: str, obj: dict[str, Any], status: str, fragment: str) -> None:
    answer = run_health_check(health_checks()[POOL_KEY], obj)
    assert answer["status"] == status, (case, answer)
    assert fragment in answer["message"], (case, answer)


def test_every_phase_is_covered() -> None:
    phases = {c[1]["status"]["phase"] for c in RESERVATION_CASES if "status" in c[1]}
    assert phases == {"Pending", "Scheduled", "Active", "Expired", "Failed"}


def test_scripts_survive_missing_conditions_and_messages() -> None:
    # Argo CD shows "Unknown" with an error when a script raises; ours must never raise.
    for phase in ("Pending", "Scheduled", "Active", "Expired", "Failed"):
        obj = reservation(phase)
        del obj["status"]["conditions"]
        del obj["status"]["message"]
        run_health_check(health_checks()[RESERVATION_KEY], obj)
    bare_pool = pool([])
    del bare_pool["status"]["conditions"]
    run_health_check(health_checks()[POOL_KEY], bare_pool)


def _lua_blocks(markdown: str) -> dict[str, str]:
    """``resource.customizations.health.<key>: |`` blocks of a YAML snippet in the docs."""
    blocks: dict[str, str] = {}
    lines = markdown.splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"^( *)resource\.customizations\.health\.([\w.]+): \|$", line)
        if not match:
            continue
        indent = len(match[1])
        body: list[str] = []
        for following in lines[index + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following)
        blocks[match[2]] = textwrap.dedent("\n".join(body)).strip() + "\n"
    return blocks


def test_docs_ship_the_same_lua_as_the_chart() -> None:
    documented = _lua_blocks((ROOT / "docs" / "gitops.md").read_text())
    shipped = {key: script.strip() + "\n" for key, script in health_checks().items()}
    assert documented == shipped
