"""Admission on a real API server: every rule the schema and CEL can judge refuses bad objects
with the message a person needs, and the Active-reservation immutability holds.

Each negative fixture is the smallest change to a valid object that breaks exactly one rule;
the test asserts both the refusal and the words of the message.
"""

from __future__ import annotations

import copy
import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from respool.api.crds import generate

ROOT = Path(__file__).resolve().parents[2]

GOOD_POOL_SPEC: dict[str, Any] = {
    "resources": {
        "version": 1,
        "execution": {
            "R_lite": [{"rank": "0-3", "children": {"core": "0-15", "gpu": "0-1"}}],
            "nodelist": ["node[0-3]"],
            "properties": {"a100": "0-1"},
        },
    },
    "policy": {"defaultDuration": "1h", "maxDuration": "24h", "claimTimeout": "5m"},
}

GOOD_RESERVATION_SPEC: dict[str, Any] = {
    "pool": "rack-a",
    "request": {"nodes": 1, "slots": 2, "coresPerSlot": 4},
    "startTime": "2030-12-01T08:00:00Z",
    "endTime": "2030-12-01T10:00:00Z",
}


def stop_shared_operator(request: pytest.FixtureRequest) -> None:
    """Stop the session's shared operator, if the operator fixtures run one (tests/e2e/conftest.py)."""
    try:
        slot = request.getfixturevalue("_operator_slot")
    except pytest.FixtureLookupError:
        return
    slot.stop_current()


@pytest.fixture(scope="module")
def crds(kubectl: Any, request: pytest.FixtureRequest) -> None:
    """The CRDs installed, and no operator running: the immutability test plays the operator
    (writes status.phase itself) and must not race one."""
    stop_shared_operator(request)
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    for crd in generate():
        kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd['metadata']['name']}"
        )


def _set(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of spec with the dotted path set (value ``...`` deletes the key)."""
    result = copy.deepcopy(spec)
    target: Any = result
    keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
    for key in keys[:-1]:
        target = target[key]
    if value is ...:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return result


def _slot(*children: dict[str, Any]) -> dict[str, Any]:
    return {"type": "slot", "count": 1, "label": "task", "with": list(children)}


CORE = {"type": "core", "count": 1}
NO_REQUEST = _set(GOOD_RESERVATION_SPEC, "request", ...)

RESERVATION_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "mode-enum",
        _set(GOOD_RESERVATION_SPEC, "mode", "exclusively"),
        'supported values: "exclusive", "shared"',
    ),
    (
        "claim-policy-enum",
        _set(GOOD_RESERVATION_SPEC, "claimPolicy", "auto"),
        'supported values: "Auto", "Manual"',
    ),
    (
        "request-xor-resources",
        _set(GOOD_RESERVATION_SPEC, "resources", [_slot(CORE)]),
        "give spec.request or spec.resources, not both",
    ),
    (
        "endtime-xor-duration",
        _set(GOOD_RESERVATION_SPEC, "duration", "1h"),
        "give spec.endTime or spec.duration, not both",
    ),
    (
        "end-after-start",
        _set(GOOD_RESERVATION_SPEC, "endTime", "2030-12-01T09:00:00+02:00"),
        "spec.endTime must be after spec.startTime",
    ),
    (
        "duration-positive",
        _set(_set(GOOD_RESERVATION_SPEC, "endTime", ...), "duration", "0s"),
        "spec.duration must be longer than zero",
    ),
    (
        "start-time-format",
        _set(GOOD_RESERVATION_SPEC, "startTime", "2030-12-01 08:00"),
        "spec.startTime",
    ),
    (
        "start-time-zone",
        _set(GOOD_RESERVATION_SPEC, "startTime", "2030-12-01T08:00:00"),
        "should match",
    ),
    (
        "duration-format",
        _set(_set(GOOD_RESERVATION_SPEC, "endTime", ...), "duration", "2 hours"),
        "spec.duration",
    ),
    ("max-wait-format", _set(GOOD_RESERVATION_SPEC, "maxWait", "-5m"), "spec.maxWait"),
    ("max-retry-range", _set(GOOD_RESERVATION_SPEC, "maxRetry", -1), "spec.maxRetry"),
    ("slots-range", _set(GOOD_RESERVATION_SPEC, "request.slots", 0), "spec.request.slots"),
    (
        "gpus-range",
        _set(GOOD_RESERVATION_SPEC, "request.gpusPerSlot", -1),
        "spec.request.gpusPerSlot",
    ),
    ("pool-name", _set(GOOD_RESERVATION_SPEC, "pool", "Rack_A"), "spec.pool"),
    ("pool-name-length", _set(GOOD_RESERVATION_SPEC, "pool", "a" * 64), "Too long"),
    (
        "ranks-idset",
        _set(GOOD_RESERVATION_SPEC, "constraints", {"ranks": "3-1x"}),
        "spec.constraints.ranks",
    ),
    (
        "ranks-huge",
        _set(GOOD_RESERVATION_SPEC, "constraints", {"ranks": "0-99999999"}),
        "spec.constraints.ranks",
    ),
    (
        "hostlist",
        _set(GOOD_RESERVATION_SPEC, "constraints", {"hostlist": ["node[0-3"]}),
        "spec.constraints.hostlist",
    ),
    (
        "property-name",
        _set(GOOD_RESERVATION_SPEC, "constraints", {"properties": ["a|b"]}),
        "spec.constraints.properties",
    ),
    (
        "constraint-depth",
        _set(
            GOOD_RESERVATION_SPEC,
            "constraints",
            {"and": [{"or": [{"not": [{"ranks": "0"}]}]}]},
        ),
        "constraints may nest and/or/not at most 2 levels deep",
    ),
    (
        # 33 objects, each within the shape the schema allows (issue 11's cost budget).
        "constraint-objects",
        _set(
            GOOD_RESERVATION_SPEC,
            "constraints",
            {"and": [{"or": [{}] * 3}] * 8, "not": [{}]},
        ),
        "spec.constraints may hold at most 32 constraint objects, nested ones included",
    ),
    (
        "constraint-terms",
        _set(
            GOOD_RESERVATION_SPEC,
            "constraints",
            {"properties": ["a100"], "or": [{"properties": ["a100"] * 32}] * 8},
        ),
        "spec.constraints may list at most 256 properties, hostlists and ranks entries in all",
    ),
    (
        "vertex-top",
        _set(NO_REQUEST, "resources", [CORE]),
        "the top-level vertex of spec.resources must be a node or a slot",
    ),
    (
        "vertex-node-needs-slot",
        _set(NO_REQUEST, "resources", [{"type": "node", "count": 1, "with": [CORE]}]),
        "a node vertex must contain exactly one slot vertex",
    ),
    (
        "vertex-slot-children",
        _set(NO_REQUEST, "resources", [_slot(CORE, CORE)]),
        "a slot vertex must contain one core vertex and at most one gpu vertex",
    ),
    (
        "vertex-too-deep",
        _set(NO_REQUEST, "resources", [_slot({"type": "core", "count": 1, "with": [CORE]})]),
        "a slot vertex must contain one core vertex and at most one gpu vertex",
    ),
    (
        "vertex-exclusive",
        _set(NO_REQUEST, "resources", [_slot({"type": "core", "count": 1, "exclusive": True})]),
        "only node and slot vertices may set exclusive",
    ),
    (
        "vertex-type",
        _set(NO_REQUEST, "resources", [_slot({"type": "socket", "count": 1})]),
        "supported values",
    ),
    ("vertex-count", _set(NO_REQUEST, "resources", [_slot({"type": "core", "count": 0})]), "count"),
    ("one-top-vertex", _set(NO_REQUEST, "resources", [_slot(CORE), _slot(CORE)]), "Too many"),
    ("config-size", _set(GOOD_RESERVATION_SPEC, "pool", "x" * 100_000), "Too long"),
    (
        "window-past-year-9999",
        _set(
            _set(_set(GOOD_RESERVATION_SPEC, "endTime", ...), "startTime", "9999-12-31T23:00:00Z"),
            "duration",
            "2h",
        ),
        "spec.startTime plus spec.duration must not end after 9999-12-31T23:59:59Z, the last "
        "time RFC 3339 can write",
    ),
    (
        "duration-beyond-go",
        _set(_set(GOOD_RESERVATION_SPEC, "endTime", ...), "duration", "99999999999h"),
        "spec.duration in body should match",
    ),
    (
        "duration-unit-twice",
        _set(_set(GOOD_RESERVATION_SPEC, "endTime", ...), "duration", "1h1h"),
        "spec.duration in body should match",
    ),
    ("max-wait-beyond-go", _set(GOOD_RESERVATION_SPEC, "maxWait", "2562048h"), "spec.maxWait"),
    ("start-year-0000", _set(GOOD_RESERVATION_SPEC, "startTime", "0000-12-01T08:00:00Z"),
     "spec.startTime in body should match"),
    # issue 14
    ("priority-class-name", _set(GOOD_RESERVATION_SPEC, "priorityClassName", "High_Prio"),
     "spec.priorityClassName in body should match"),
    ("preemptible-bool", _set(GOOD_RESERVATION_SPEC, "preemptible", "yes"),
     "spec.preemptible"),
]

MAINTENANCE = {"name": "firmware", "start": "2030-12-05T02:00:00Z", "duration": "4h"}

POOL_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("r-version", _set(GOOD_POOL_SPEC, "resources.version", 2), 'supported values: "1"'),
    ("r-lite-empty", _set(GOOD_POOL_SPEC, "resources.execution.R_lite", []), "R_lite"),
    (
        "rank-idset",
        _set(GOOD_POOL_SPEC, "resources.execution.R_lite.0.rank", "01"),
        "R_lite[0].rank",
    ),
    (
        "core-idset",
        _set(GOOD_POOL_SPEC, "resources.execution.R_lite.0.children.core", "0-15,a"),
        "children.core",
    ),
    ("nodelist", _set(GOOD_POOL_SPEC, "resources.execution.nodelist", ["node[0-3"]), "nodelist"),
    (
        "property-key",
        _set(GOOD_POOL_SPEC, "resources.execution.properties", {"a(b)": "0"}),
        "property names are 1-128 characters without white space",
    ),
    (
        "r-window",
        _set(
            _set(GOOD_POOL_SPEC, "resources.execution.starttime", 100.0),
            "resources.execution.expiration",
            50.0,
        ),
        "execution.expiration must be later than execution.starttime",
    ),
    ("down-idset", _set(GOOD_POOL_SPEC, "down", "3,a"), "spec.down"),
    ("expiration-format", _set(GOOD_POOL_SPEC, "expiration", "tomorrow"), "spec.expiration"),
    (
        "expiration-before-epoch",
        _set(GOOD_POOL_SPEC, "expiration", "1969-12-31T23:59:59Z"),
        "spec.expiration must not be before 1970-01-01T00:00:00Z",
    ),
    (
        "policy-duration-beyond-go",
        _set(GOOD_POOL_SPEC, "policy.maxDuration", "99999999999h"),
        "spec.policy.maxDuration in body should match",
    ),
    (
        "policy-order",
        _set(GOOD_POOL_SPEC, "policy.defaultDuration", "48h"),
        "policy.defaultDuration must not be longer than policy.maxDuration",
    ),
    (
        "policy-max-positive",
        _set(GOOD_POOL_SPEC, "policy.maxDuration", "0s"),
        "policy.maxDuration must be longer than zero",
    ),
    (
        "policy-format",
        _set(GOOD_POOL_SPEC, "policy.claimTimeout", "5 min"),
        "spec.policy.claimTimeout",
    ),
    (
        "selector-values",
        _set(
            GOOD_POOL_SPEC,
            "namespaceSelector",
            {"matchExpressions": [{"key": "a", "operator": "In"}]},
        ),
        "operators In and NotIn need a non-empty 'values' list",
    ),
    (
        "selector-label-key",
        _set(GOOD_POOL_SPEC, "namespaceSelector", {"matchLabels": {"bad key!": "x"}}),
        "matchLabels keys must be valid label keys",
    ),
    (
        "selector-operator",
        _set(
            GOOD_POOL_SPEC,
            "namespaceSelector",
            {"matchExpressions": [{"key": "a", "operator": "Has"}]},
        ),
        "supported values",
    ),
    (
        "limit-from-format",
        _set(GOOD_POOL_SPEC, "policy.limits", [{"allowedHours": [{"from": "8:00", "to": "18:00"}]}]),
        "allowedHours.from must be a time of day HH:MM, 00:00 to 23:59",
    ),
    (
        "limit-to-format",
        _set(GOOD_POOL_SPEC, "policy.limits", [{"allowedHours": [{"from": "08:00", "to": "24:30"}]}]),
        "allowedHours.to must be a time of day HH:MM, 00:00 to 24:00",
    ),
    (
        "limit-from-equals-to",
        _set(GOOD_POOL_SPEC, "policy.limits", [{"allowedHours": [{"from": "08:00", "to": "08:00"}]}]),
        "allowedHours.from and allowedHours.to must differ",
    ),
    (
        "limit-time-zone-empty",
        _set(GOOD_POOL_SPEC, "policy.limits",
             [{"allowedHours": [{"from": "08:00", "to": "18:00", "timeZone": ""}]}]),
        "allowedHours.timeZone must name a time zone",
    ),
    (
        "limit-time-zone-name",
        _set(GOOD_POOL_SPEC, "policy.limits",
             [{"allowedHours": [{"from": "08:00", "to": "18:00", "timeZone": "Europe/../x"}]}]),
        "allowedHours.timeZone must be an IANA time zone name",
    ),
    (
        "limit-max-duration-positive",
        _set(GOOD_POOL_SPEC, "policy.limits", [{"maxDuration": "0s"}]),
        "limits[].maxDuration must be longer than zero",
    ),
    (
        "limit-day-name",
        _set(GOOD_POOL_SPEC, "policy.limits",
             [{"allowedHours": [{"days": ["Monday"], "from": "08:00", "to": "18:00"}]}]),
        "supported values",
    ),
    (
        "hostile-r-lite",
        _set(
            GOOD_POOL_SPEC,
            "resources.execution.R_lite",
            [{"rank": str(i), "children": {"core": "0"}} for i in range(16385)],
        ),
        "Too many",
    ),
    # issue 14: maintenance windows and priority caps
    ("maintenance-ranks-xor-hostlist",
     _set(GOOD_POOL_SPEC, "maintenance", [{**MAINTENANCE, "ranks": "0", "hostlist": "node0"}]),
     "give ranks or hostlist, not both"),
    ("maintenance-end-xor-duration",
     _set(GOOD_POOL_SPEC, "maintenance", [{**MAINTENANCE, "end": "2030-12-05T06:00:00Z"}]),
     "give end or duration, exactly one"),
    ("maintenance-needs-end-or-duration",
     _set(GOOD_POOL_SPEC, "maintenance", [{"name": "fw", "start": "2030-12-05T02:00:00Z"}]),
     "give end or duration, exactly one"),
    ("maintenance-end-after-start",
     _set(GOOD_POOL_SPEC, "maintenance",
          [{"name": "fw", "start": "2030-12-05T02:00:00Z", "end": "2030-12-05T01:00:00Z"}]),
     "end must be after start"),
    ("maintenance-duration-positive",
     _set(GOOD_POOL_SPEC, "maintenance", [{**MAINTENANCE, "duration": "0s"}]),
     "duration must be longer than zero"),
    ("maintenance-mode-enum",
     _set(GOOD_POOL_SPEC, "maintenance", [{**MAINTENANCE, "mode": "Reboot"}]),
     'supported values: "Drain", "Evict"'),
    ("maintenance-ranks-idset",
     _set(GOOD_POOL_SPEC, "maintenance", [{**MAINTENANCE, "ranks": "a-b"}]),
     "ranks in body should match"),
    ("maintenance-names-unique",
     _set(GOOD_POOL_SPEC, "maintenance", [MAINTENANCE, MAINTENANCE]),
     "Duplicate value"),
    ("max-priority-value",
     _set(GOOD_POOL_SPEC, "policy.maxPriority", [{"value": 3000000000}]),
     "policy.maxPriority[0].value"),
    ("preemption-grace-period",
     _set(GOOD_POOL_SPEC, "policy.preemptionGracePeriod", "soon"),
     "policy.preemptionGracePeriod"),
]


def _create(kubectl: Any, body: dict[str, Any], *extra: str) -> Any:
    return kubectl("create", *extra, "-f", "-", input=json.dumps(body), check=False)


@pytest.mark.parametrize(
    ("case", "spec", "message"), RESERVATION_CASES, ids=[c[0] for c in RESERVATION_CASES]
)
def test_reservation_rejected_with_message(
    kubectl: Any, crds: None, namespace: str, case: str, spec: dict[str, Any], message: str
) -> None:
    body = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourceReservation",
        "metadata": {"name": case, "namespace": namespace},
        "spec": spec,
    }
    result = _create(kubectl, body, "--dry-run=server")
    assert result.returncode != 0, f"{case}: accepted, expected a refusal mentioning {message!r}"
    assert message in result.stderr, result.stderr
    assert "evaluation error" not in result.stderr, result.stderr
    assert "evaluating rule" not in result.stderr, result.stderr  # a CEL runtime error


def test_too_deep_constraints_refused_for_non_strict_clients_too(
    kubectl: Any, crds: None, namespace: str
) -> None:
    # Clients that do not ask for strict field validation (most libraries) must get the same
    # refusal, not a silently pruned constraint that would mean something else.
    body = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourceReservation",
        "metadata": {"name": "deep", "namespace": namespace},
        "spec": _set(
            GOOD_RESERVATION_SPEC, "constraints", {"and": [{"or": [{"not": [{"ranks": "0"}]}]}]}
        ),
    }
    result = _create(kubectl, body, "--dry-run=server", "--validate=false")
    assert result.returncode != 0
    assert "constraints may nest and/or/not at most 2 levels deep" in result.stderr


def test_valid_reservation_and_pool_are_accepted(kubectl: Any, crds: None, namespace: str) -> None:
    # The fixtures above are one change away from these; both must pass as they are.
    reservation = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourceReservation",
        "metadata": {"name": "good", "namespace": namespace},
        "spec": GOOD_RESERVATION_SPEC,
    }
    assert _create(kubectl, reservation, "--dry-run=server").returncode == 0
    pool = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourcePool",
        "metadata": {"name": "good-pool"},
        "spec": GOOD_POOL_SPEC,
    }
    result = _create(kubectl, pool, "--dry-run=server")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("case", "spec", "message"), POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_pool_rejected_with_message(
    kubectl: Any, crds: None, case: str, spec: dict[str, Any], message: str
) -> None:
    body = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourcePool",
        "metadata": {"name": f"bad-{case}"},
        "spec": spec,
    }
    result = _create(kubectl, body, "--dry-run=server")
    assert result.returncode != 0, f"{case}: accepted, expected a refusal mentioning {message!r}"
    assert message in result.stderr, result.stderr
    assert "evaluation error" not in result.stderr, result.stderr
    assert "evaluating rule" not in result.stderr, result.stderr  # a CEL runtime error


def test_pool_name_must_be_a_dns_label(kubectl: Any, crds: None) -> None:
    body = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourcePool",
        "metadata": {"name": "rack.a"},
        "spec": GOOD_POOL_SPEC,
    }
    result = _create(kubectl, body, "--dry-run=server")
    assert result.returncode != 0
    assert "a ResourcePool name must be a DNS label" in result.stderr


def _patch(kubectl: Any, namespace: str, name: str, patch: dict[str, Any], *extra: str) -> Any:
    return kubectl(
        "patch",
        "rsv",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps(patch),
        *extra,
        check=False,
    )


IMMUTABLE_CHANGES: list[tuple[str, dict[str, Any]]] = [
    ("pool", {"spec": {"pool": "rack-b"}}),
    ("mode", {"spec": {"mode": "shared"}}),
    ("request", {"spec": {"request": {"slots": 3}}}),
    ("constraints", {"spec": {"constraints": {"properties": ["a100"]}}}),
]


def test_fields_are_immutable_while_active(kubectl: Any, crds: None, namespace: str) -> None:
    name = f"imm-{secrets.token_hex(3)}"
    body = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourceReservation",
        "metadata": {"name": name, "namespace": namespace},
        "spec": GOOD_RESERVATION_SPEC,
    }
    kubectl("create", "-f", "-", input=json.dumps(body))
    # Before it is Active, the same changes are accepted (dry run, so the object stays as is).
    for field, change in IMMUTABLE_CHANGES:
        result = _patch(kubectl, namespace, name, change, "--dry-run=server")
        assert result.returncode == 0, f"{field} refused while Pending: {result.stderr}"
    # The operator's write: phase Active through the status subresource.
    _patch(kubectl, namespace, name, {"status": {"phase": "Active"}}, "--subresource=status")
    for field, change in IMMUTABLE_CHANGES:
        result = _patch(kubectl, namespace, name, change)
        assert result.returncode != 0, f"spec.{field} changed while Active"
        assert f"spec.{field} cannot change while the reservation is Active" in result.stderr
    # resources instead of request: also refused (has() differs from the stored object).
    result = kubectl(
        "patch",
        "rsv",
        name,
        "-n",
        namespace,
        "--type=json",
        "-p",
        json.dumps(
            [
                {"op": "remove", "path": "/spec/request"},
                {"op": "add", "path": "/spec/resources", "value": [_slot(CORE)]},
            ]
        ),
        check=False,
    )
    assert result.returncode != 0
    assert "spec.request cannot change while the reservation is Active" in result.stderr
    assert "spec.resources cannot change while the reservation is Active" in result.stderr
    # What may change while Active: the end (extension), the claim, free-form config.
    for allowed in (
        {"spec": {"endTime": "2030-12-01T12:00:00Z"}},
        {"spec": {"claimed": True}},
        {"spec": {"config": {"note": "extended"}}},
    ):
        result = _patch(kubectl, namespace, name, allowed)
        assert result.returncode == 0, f"{allowed} refused: {result.stderr}"
    stored = json.loads(kubectl("get", "rsv", name, "-n", namespace, "-o", "json").stdout)
    assert (
        stored["spec"]["pool"] == "rack-a" and stored["spec"]["endTime"] == "2030-12-01T12:00:00Z"
    )
    # Once it has left Active (here Expired), the rule no longer applies.
    _patch(kubectl, namespace, name, {"status": {"phase": "Expired"}}, "--subresource=status")
    result = _patch(kubectl, namespace, name, {"spec": {"mode": "shared"}}, "--dry-run=server")
    assert result.returncode == 0, result.stderr


def test_status_phase_is_an_enum(kubectl: Any, crds: None, namespace: str) -> None:
    body = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourceReservation",
        "metadata": {"name": "phase", "namespace": namespace},
        "spec": GOOD_RESERVATION_SPEC,
    }
    kubectl("create", "-f", "-", input=json.dumps(body))
    result = _patch(
        kubectl, namespace, "phase", {"status": {"phase": "Running"}}, "--subresource=status"
    )
    assert result.returncode != 0 and "supported values" in result.stderr
