"""Malformed input, fuzzed through the whole path: the real API server plus the live operator.

DESIGN.md section 5: "Malformed input (fuzzed specs, hostile R, huge idsets) is rejected with a
clear message; the operator never crashes or stalls on it." Every example here is submitted to
the API server with `respool run` watching, and must end in exactly one of two ways:

- **refused at admission**: HTTP 422 (400 only for what the JSON decoder itself refuses, such as
  an unknown field under strict field validation), never a 5xx or a time-out, with a message
  that names the offending field and is not a CEL evaluation error;
- **accepted**: the operator evaluates it within a bounded time (a phase, and
  ``status.observedGeneration`` equal to the object's generation for reservations; a ``Ready``
  condition for the generation for pools). When it cannot proceed (``Failed``, ``Pending`` with
  ``Stalled=True``, a pool with ``Ready=False``) there is a machine reason, a message for a
  person and a Warning Event with that reason.

After every example the operator is still running, its liveness probe answers and its log has
no traceback; after each test a plain reservation on an untouched pool is still granted
(nothing stalled). Examples are mostly near-valid: a valid object with one field mutated,
submitted as a create or as a replacement of the spec of a valid reservation. Hand-picked edge
cases (the year 9999, durations Go cannot hold, hostile R, statuses too large for etcd) are
tried every run with the exact outcome each must have; several were defects the fuzzer found.

Hypothesis runs derandomized with no example database, so CI always tries the same examples.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import string
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kubernetes.client.rest import ApiException

from e2e.conftest import OperatorProcess, RespoolKube, condition_of, phase_of
from respool.api import Reason, patterns

GROUP, VERSION = "respool.io", "v1alpha1"
LONGEST_DURATION = "999999h"
FUZZ_POOL = "fuzz-target"  # the pool fuzzed reservations name
CONTROL_POOL = "fuzz-control"  # never touched by a fuzzed object: must keep working
PHASE_TIMEOUT = 60.0  # generous: the machine is shared and loaded
EVENT_TIMEOUT = 60.0
KNOWN_REASONS = {reason.value for reason in Reason}

FUZZ_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the fixtures are meant to be shared by examples
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

_names = itertools.count()


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}-{int(time.time() * 1000) % 100000}"


# ---------------------------------------------------------------------------------------------
# Strategies: values of every shape, biased towards the edges of each field.

INT64_MAX = 2**63 - 1
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=INT64_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)


def _json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    )


json_value = st.recursive(json_leaf, _json_containers, max_leaves=8)
long_text = st.sampled_from(["x", "é", "\u202e", "界", "-", "0", "[", "\x00"]).flatmap(
    lambda unit: st.integers(min_value=200, max_value=120_000).map(lambda n: unit * n)
)
odd_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=string.printable, max_size=40),
    long_text,
    st.sampled_from(["", " ", "null", "true", "0", "-1", "NaN", "∞", "🦄", "a\nb", "${x}"]),
)
anything = st.one_of(json_value, odd_text)
counts = st.one_of(
    st.integers(min_value=-3, max_value=12),
    st.integers(min_value=999_990, max_value=1_000_010),
    st.integers(min_value=2**31 - 2, max_value=INT64_MAX),
    st.sampled_from([0, -1, 2**63 - 1, 1.5, "1", "one", True, None, [], {}]),
)
idset_like = st.one_of(
    st.from_regex(patterns.NONEMPTY_IDSET, fullmatch=True),
    st.sampled_from(
        ["0-4294967295", "0-9999999", "9999999", "3-1", "1,1", "3,1", "01", "-1", "0-", "[0-3",
         "0-262143", "0-262144", "0-4095", "0-4096", "0-1023", "0-1024", "1.5", " 0"]
    ),
    odd_text,
)
hostlist_like = st.one_of(
    st.from_regex(patterns.HOSTLIST, fullmatch=True),
    st.sampled_from(["n[0-9999999]", "n[0-262144]", "n[3-1]", "n[0-3", "n[]", "n[a-b]", "ñode0"]),
    odd_text,
)
property_like = st.one_of(
    st.sampled_from(["a100", "^a100", "nvme", "^", "a|b", "a b", "(x)", "x" * 129, "ü"]),
    st.text(max_size=10),
)


def _datetimes(min_year: int = 1, max_year: int = 9999) -> st.SearchStrategy[datetime]:
    return st.datetimes(
        min_value=datetime(min_year, 1, 2), max_value=datetime(max_year, 12, 30),
        timezones=st.just(UTC),
    )


def _rfc3339(moment: datetime, offset_minutes: int = 0) -> str:
    zone = "Z" if offset_minutes == 0 else (
        f"{'+' if offset_minutes > 0 else '-'}{abs(offset_minutes) // 60:02d}:"
        f"{abs(offset_minutes) % 60:02d}"
    )
    shifted = moment + timedelta(minutes=offset_minutes)
    return shifted.strftime("%Y-%m-%dT%H:%M:%S") + zone


times_like = st.one_of(
    st.builds(_rfc3339, _datetimes(), st.sampled_from([0, 0, 90, -90, 23 * 60 + 59, -(23 * 60 + 59)])),
    st.builds(_rfc3339, _datetimes(2026, 2032)),
    st.sampled_from(
        ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+23:59",
         "9999-12-31T23:59:59-23:59", "2030-02-30T00:00:00Z", "2030-01-01T24:00:00Z",
         "2030-01-01T00:00:00", "2030-01-01 00:00:00Z", "tomorrow", "1970-01-01T00:00:00Z",
         "2030-01-01T00:00:00.123456789Z"]
    ),
    odd_text,
)
durations_like = st.one_of(
    st.from_regex(r"\A[0-9]{1,4}(h|m|s|ms)\Z"),
    st.sampled_from(
        ["0", "0s", "1ns", "1h30m", ".5s", "1.s", "2562047h", "2562048h", "99999999999999h",
         "9223372036854775807ns", "9223372036854775808ns", "1e3s", "-1h", "1d", "1 h", "h",
         "1h" + "0" * 60, "0.0000000001ns"]
    ),
    odd_text,
)


def _set(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``spec`` with the dotted ``path`` set (intermediate objects are created)."""
    result = copy.deepcopy(spec)
    target: Any = result
    keys = path.split(".")
    for key in keys[:-1]:
        index: Any = int(key) if key.isdigit() and isinstance(target, list) else key
        if isinstance(target, dict) and not isinstance(target.get(index), dict | list):
            target[index] = {}
        target = target[index]
    last: Any = int(keys[-1]) if keys[-1].isdigit() and isinstance(target, list) else keys[-1]
    target[last] = value
    return result


def _mutation(path: str, values: st.SearchStrategy[Any], hint: str | None = None
              ) -> st.SearchStrategy[tuple[str, Any, str]]:
    """(path, value, the word a refusal must contain): the field's own name by default."""
    return st.tuples(st.just(path), values, st.just(hint or path.split(".")[-1]))


# -- reservations ----------------------------------------------------------------------------

valid_request = st.fixed_dictionaries(
    {},
    optional={
        "nodes": st.integers(1, 2),
        "slots": st.integers(1, 2),
        "coresPerSlot": st.integers(1, 4),
        "gpusPerSlot": st.integers(0, 1),
        "exclusive": st.booleans(),
    },
)
valid_reservation = st.fixed_dictionaries(
    {"pool": st.just(FUZZ_POOL), "duration": st.sampled_from(["30s", "10m", "1h"])},
    optional={
        "mode": st.sampled_from(["exclusive", "shared"]),
        "request": valid_request,
        "nextAvailable": st.booleans(),
        "maxRetry": st.integers(0, 3),
        "maxWait": st.sampled_from(["1s", "1m", "1h"]),
        "claimPolicy": st.sampled_from(["Auto", "Manual"]),
        "constraints": st.sampled_from([{"properties": ["a100"]}, {"ranks": "1-2"},
                                        {"hostlist": ["fz[0-1]"]}]),
        "config": st.dictionaries(st.text(max_size=5), json_leaf, max_size=3),
    },
)
vertex_types = st.sampled_from(["node", "slot", "core", "gpu", "socket", "", "Node"])


def _vertex_with(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"type": vertex_types, "count": counts},
        optional={"with": st.lists(children, max_size=3), "exclusive": anything,
                  "label": odd_text, "unit": odd_text},
    )


vertex = st.recursive(st.fixed_dictionaries({"type": vertex_types, "count": counts}),
                      _vertex_with, max_leaves=6)
well_formed_vertices = st.builds(
    lambda node, slots, cores, gpus, exclusive: (
        [{"type": "node", "count": node, "exclusive": exclusive,
          "with": [{"type": "slot", "count": slots, "label": "t",
                    "with": [{"type": "core", "count": cores}]
                    + ([{"type": "gpu", "count": gpus}] if gpus else [])}]}]
        if node else
        [{"type": "slot", "count": slots, "label": "t",
          "with": [{"type": "core", "count": cores}]
          + ([{"type": "gpu", "count": gpus}] if gpus else [])}]
    ),
    st.integers(0, 5), st.integers(1, 1_000_000), st.integers(1, 1_000_000),
    st.integers(0, 1_000_000), st.booleans(),
)


def _constraint_operators(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.dictionaries(st.sampled_from(["and", "or", "not"]), st.lists(inner, max_size=3),
                        min_size=1, max_size=2),
        st.dictionaries(st.sampled_from(["and", "or", "not", "$eq", "properties", "bogus"]),
                        anything, min_size=1, max_size=2),
    )


constraint = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "properties": st.lists(property_like, max_size=4),
            "hostlist": st.lists(hostlist_like, max_size=3),
            "ranks": idset_like,
        },
    ),
    _constraint_operators,
    max_leaves=6,
)

reservation_mutations = st.one_of(
    _mutation("pool", st.one_of(odd_text, st.sampled_from(["no-such-pool", "Fuzz", "a" * 64]))),
    _mutation("mode", anything),
    _mutation("request", anything),
    _mutation("request.nodes", counts),
    _mutation("request.slots", counts),
    _mutation("request.coresPerSlot", counts),
    _mutation("request.gpusPerSlot", counts),
    _mutation("request.exclusive", anything),
    _mutation("resources", st.one_of(st.lists(vertex, max_size=2), well_formed_vertices,
                                     anything)),
    _mutation("constraints", st.one_of(constraint, anything)),
    _mutation("startTime", times_like),
    _mutation("endTime", times_like),
    _mutation("duration", durations_like),
    _mutation("maxWait", durations_like),
    _mutation("maxRetry", counts),
    _mutation("nextAvailable", anything),
    _mutation("claimPolicy", anything),
    _mutation("claimed", anything),
    _mutation("config", st.one_of(json_value, long_text.map(lambda s: {"blob": s}))),
    _mutation(
        "unknownField",
        st.tuples(st.sampled_from(["", "request.", "constraints.", "resources.0."]),
                  st.text(alphabet=string.ascii_letters, min_size=1, max_size=12), json_leaf),
        hint="unknown field",
    ),
)


def _apply_reservation_mutation(base: dict[str, Any], mutation: tuple[str, Any, str]
                                ) -> tuple[dict[str, Any], str]:
    path, value, hint = mutation
    spec = copy.deepcopy(base)
    if path == "unknownField":
        prefix, key, leaf = value
        if prefix == "resources.0.":
            spec.pop("request", None)
            spec["resources"] = [{"type": "slot", "count": 1, "with": [{"type": "core",
                                                                        "count": 1}]}]
        if prefix == "request." and not isinstance(spec.get("request"), dict):
            spec["request"] = {}
        return _set(spec, prefix + "x" + key, leaf), "unknown field"
    if path == "resources" or (path.startswith("request") and "resources" in spec):
        spec.pop("resources" if path.startswith("request") else "request", None)
    if path in ("endTime", "duration"):
        spec.pop("duration" if path == "endTime" else "endTime", None)
    return _set(spec, path, value), hint


cross_field = st.one_of(
    # request and resources together
    st.tuples(st.just("both"), well_formed_vertices),
    # endTime not after startTime
    st.tuples(st.just("reversed"), st.builds(lambda t, back: (t, back), _datetimes(2026, 2200),
                                             st.integers(0, 10**6))),
    # endTime and duration together
    st.tuples(st.just("end-and-duration"), times_like),
)


def _apply_cross_field(base: dict[str, Any], case: tuple[str, Any]) -> tuple[dict[str, Any], str]:
    kind, value = case
    spec = copy.deepcopy(base)
    spec.pop("duration", None)
    if kind == "both":
        spec["request"] = {"slots": 1}
        spec["resources"] = value
        return spec, "spec.request or spec.resources"
    if kind == "reversed":
        start, back = value
        spec["startTime"] = _rfc3339(start)
        spec["endTime"] = _rfc3339(start - timedelta(seconds=back))
        return spec, "spec.endTime must be after spec.startTime"
    spec["endTime"] = value
    spec["duration"] = "1h"
    return spec, "endTime"


# Values the schema accepts but only the operator can judge: reversed or huge idsets, hostlists
# beyond the engine's limits, unknown properties, times from year 1 to 9999, the longest
# durations, counts up to the schema's maximum, pools that do not exist.
schema_valid_times = st.builds(_rfc3339, _datetimes(), st.sampled_from([0, 0, 90, -90]))
schema_valid_durations = st.from_regex(patterns.DURATION, fullmatch=True).filter(
    lambda text: len(text) <= 64)
operator_judged = st.one_of(
    _mutation("constraints", st.fixed_dictionaries({"ranks": st.from_regex(
        patterns.NONEMPTY_IDSET, fullmatch=True)})),
    _mutation("constraints", st.fixed_dictionaries({"hostlist": st.lists(st.from_regex(
        patterns.HOSTLIST, fullmatch=True), min_size=1, max_size=2)})),
    _mutation("constraints", st.fixed_dictionaries({"properties": st.lists(st.from_regex(
        patterns.PROPERTY_MATCH, fullmatch=True).filter(lambda name: len(name) <= 128),
        min_size=1, max_size=3)})),
    _mutation("request", st.fixed_dictionaries({}, optional={
        "nodes": st.integers(1, 1_000_000), "slots": st.integers(1, 1_000_000),
        "coresPerSlot": st.integers(1, 1_000_000), "gpusPerSlot": st.integers(0, 1_000_000),
        "exclusive": st.booleans()})),
    _mutation("startTime", schema_valid_times),
    _mutation("endTime", schema_valid_times),
    _mutation("duration", schema_valid_durations),
    _mutation("maxWait", schema_valid_durations),
    _mutation("pool", st.from_regex(r"\A[a-z][a-z0-9-]{0,20}[a-z0-9]\Z")),
)

reservation_examples = st.one_of(
    st.tuples(valid_reservation, st.just(None), st.booleans(), st.booleans()),
    st.tuples(valid_reservation, reservation_mutations, st.booleans(), st.booleans()),
    st.tuples(valid_reservation, reservation_mutations, st.booleans(), st.booleans()),
    st.tuples(valid_reservation, reservation_mutations, st.booleans(), st.booleans()),
    st.tuples(valid_reservation, cross_field, st.booleans(), st.booleans()),
    st.tuples(valid_reservation, operator_judged, st.booleans(), st.booleans()),
    st.tuples(valid_reservation, operator_judged, st.booleans(), st.booleans()),
)
"""(valid spec, mutation or None, strict field validation?, as an update of the valid one?)"""


# -- pools -----------------------------------------------------------------------------------


def _small_R() -> dict[str, Any]:
    return {
        "version": 1,
        "execution": {
            "R_lite": [{"rank": "0-3", "children": {"core": "0-7", "gpu": "0-1"}}],
            "nodelist": ["fz[0-3]"],
            "properties": {"a100": "0-1"},
        },
    }


valid_pool = st.fixed_dictionaries(
    {"resources": st.builds(_small_R)},
    optional={
        "down": st.sampled_from(["", "3", "0-1"]),
        "trackNodes": st.booleans(),
        "policy": st.just({"defaultDuration": "10m", "maxDuration": "2h", "claimTimeout": "1m"}),
    },
)
r_lite_entries = st.lists(
    st.fixed_dictionaries(
        {"rank": idset_like, "children": st.fixed_dictionaries(
            {"core": idset_like}, optional={"gpu": idset_like, "socket": idset_like})},
    ),
    min_size=1, max_size=4,
)
epoch_like = st.one_of(
    st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    st.integers(min_value=-10, max_value=2**64),
    st.sampled_from([0, 1e300, 1.7976931348623157e308, 253402300800, 253402300799.999, -1,
                     "1", None]),
)
pool_mutations = st.one_of(
    _mutation("resources", anything),
    _mutation("resources.version", anything),
    _mutation("resources.execution", anything),
    _mutation("resources.execution.R_lite", st.one_of(r_lite_entries, anything), hint="R_lite"),
    _mutation("resources.execution.R_lite.0.rank", idset_like, hint="rank"),
    _mutation("resources.execution.R_lite.0.children.core", idset_like, hint="core"),
    _mutation("resources.execution.R_lite.0.children.gpu", idset_like, hint="gpu"),
    _mutation("resources.execution.nodelist", st.one_of(st.lists(hostlist_like, max_size=4),
                                                        anything), hint="nodelist"),
    _mutation("resources.execution.properties",
              st.one_of(st.dictionaries(property_like, idset_like, max_size=3), anything),
              hint="properties"),
    _mutation("resources.execution.starttime", epoch_like),
    _mutation("resources.execution.expiration", epoch_like),
    _mutation("resources.execution.nslots", counts),
    _mutation("resources.scheduling", json_value),
    _mutation("down", idset_like),
    _mutation("trackNodes", anything),
    _mutation("expiration", times_like),
    _mutation("namespaceSelector", st.one_of(
        st.fixed_dictionaries({}, optional={
            "matchLabels": st.dictionaries(odd_text, odd_text, max_size=2),
            "matchExpressions": st.lists(st.fixed_dictionaries(
                {"key": odd_text, "operator": st.one_of(
                    st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]), odd_text)},
                optional={"values": st.lists(odd_text, max_size=2)}), max_size=2)}),
        anything)),
    _mutation("policy.defaultDuration", durations_like),
    _mutation("policy.maxDuration", durations_like),
    _mutation("policy.claimTimeout", durations_like),
    _mutation("policy", anything),
)
hostile_R = st.sampled_from([
    # huge idsets and counts that pass the syntax check
    ("resources.execution.R_lite", [{"rank": "0-9999999", "children": {"core": "0"}}]),
    ("resources.execution.R_lite", [{"rank": "0", "children": {"core": "0-999999"}}]),
    ("resources.execution.R_lite", [{"rank": "0", "children": {"core": "0", "gpu": "0-9999999"}}]),
    ("resources.execution.R_lite", [{"rank": "0-4294967295", "children": {"core": "0"}}]),
    ("resources.execution.R_lite", [{"rank": "0-65535", "children": {"core": "0-255"}}]),
    # duplicate ranks
    ("resources.execution.R_lite", [{"rank": "0-3", "children": {"core": "0-1"}},
                                    {"rank": "2-5", "children": {"core": "0-1"}}]),
    ("resources.execution.R_lite", [{"rank": "0,0", "children": {"core": "0-1"}}]),
    # reversed ranges
    ("resources.execution.R_lite", [{"rank": "3-0", "children": {"core": "0-1"}}]),
    ("resources.execution.R_lite.0.children.core", "7-0"),
    # nodelist and ranks that disagree
    ("resources.execution.nodelist", ["fz[0-1]"]),
    ("resources.execution.nodelist", ["fz[0-99]"]),
    ("resources.execution.nodelist", ["fz0", "fz0", "fz0", "fz0"]),
    ("resources.execution.nodelist", ["n[0-9999999]"]),
    # properties on ranks that do not exist
    ("resources.execution.properties", {"a100": "4-9"}),
    # windows at the edge of time
    ("resources.execution.expiration", 1e300),
    ("resources.execution.expiration", 2**64),
    ("expiration", "9999-12-31T23:59:59Z"),
    ("expiration", "0001-01-01T00:00:00Z"),
    ("down", "3-1"),
    ("down", "0-9999999"),
    ("down", "9"),
])
pool_examples = st.one_of(
    st.tuples(valid_pool, st.just(None), st.booleans()),
    st.tuples(valid_pool, pool_mutations, st.booleans()),
    st.tuples(valid_pool, pool_mutations, st.booleans()),
    st.tuples(valid_pool, hostile_R.map(lambda pv: (pv[0], pv[1], pv[0].split(".")[-1])),
              st.booleans()),
)


# ---------------------------------------------------------------------------------------------
# Checks


def _refusal(error: ApiException) -> str:
    """The API server's message for a refused object; fails on anything but a clean refusal."""
    assert error.status in (400, 422), (
        f"expected a refusal (422), got HTTP {error.status}: {str(error.body)[:2000]}")
    try:
        body = json.loads(error.body)
    except (TypeError, ValueError):
        raise AssertionError(f"refusal without a Status body: {str(error.body)[:2000]}") from None
    message = str(body.get("message") or "")
    assert message, f"refusal without a message: {body}"
    if error.status == 400:
        # Only what the decoder itself refuses (unknown or duplicate fields under Strict, JSON
        # the server cannot read) may be a 400; everything the schema judges is a 422.
        assert "unknown field" in message or "decode" in message or "json" in message.lower(), (
            f"HTTP 400 for something the schema should judge (expected 422): {message[:2000]}")
    for cel_failure in ("evaluation error", "evaluating rule"):
        assert cel_failure not in message, \
            f"a CEL rule failed to run, not a clear message:\n{message[:2000]}"
    assert "Internal error" not in message, message[:2000]
    return message


def _check_operator(operator: OperatorProcess, log_offset: int, what: str) -> None:
    assert operator.running(), f"the operator died on {what}:\n" + \
        operator.log_text(log_offset)[-6000:]
    assert operator._alive(), f"the operator's liveness probe failed after {what}"
    text = operator.log_text(log_offset)
    assert "Traceback" not in text, f"the operator logged a traceback on {what}:\n{text[-6000:]}"


def _events(rk: RespoolKube, namespace: str, name: str, kind: str) -> list[Any]:
    selector = f"involvedObject.name={name},involvedObject.kind={kind}"
    return list(rk.core.list_namespaced_event(namespace, field_selector=selector).items)


def _wait_warning(rk: RespoolKube, namespace: str, name: str, kind: str, reason: str,
                  what: str) -> None:
    deadline = time.monotonic() + EVENT_TIMEOUT
    seen: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        events = _events(rk, namespace, name, kind)
        seen = [(e.type, e.reason) for e in events]
        if any(e.type == "Warning" and e.reason == reason and e.message for e in events):
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: no Warning Event with reason {reason} in {EVENT_TIMEOUT}s "
                         f"(events: {seen})")


def _evaluated(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(status.get("phase")) and \
        status.get("observedGeneration") == obj["metadata"].get("generation")


def _check_reservation_status(rk: RespoolKube, namespace: str, obj: dict[str, Any],
                              what: str) -> None:
    name = obj["metadata"]["name"]
    status = obj.get("status") or {}
    phase = phase_of(obj)
    assert phase in ("Pending", "Scheduled", "Active", "Expired", "Failed"), what
    message = status.get("message")
    assert isinstance(message, str) and message.strip(), f"{what}: no status.message: {status}"
    stalled = condition_of(obj, "Stalled")
    ready = condition_of(obj, "Ready")
    assert ready is not None and ready.get("status") == ("True" if phase == "Active" else "False"), \
        f"{what}: Ready does not agree with phase {phase}: {status}"
    if phase == "Failed" or (phase == "Pending" and stalled and stalled["status"] == "True"):
        assert stalled is not None and stalled.get("status") == "True", \
            f"{what}: {phase} without Stalled=True: {status}"
        reason = stalled.get("reason")
        assert reason in KNOWN_REASONS, f"{what}: unknown Stalled reason {reason!r}: {status}"
        assert (stalled.get("message") or "").strip(), f"{what}: Stalled without a message"
        _wait_warning(rk, namespace, name, "ResourceReservation", str(reason), what)
    elif phase == "Pending":
        reconciling = condition_of(obj, "Reconciling")
        assert reconciling is not None and reconciling.get("status") == "True", \
            f"{what}: Pending, neither Stalled nor Reconciling: {status}"


def _wait_evaluated(rk: RespoolKube, namespace: str, name: str, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + PHASE_TIMEOUT
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = rk.get(namespace, name)
        if _evaluated(last):
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what}: not evaluated in {PHASE_TIMEOUT}s (no phase for its "
                         f"generation); object:\n{json.dumps(last, indent=1)[:4000]}")


def _create_reservation(rk: RespoolKube, namespace: str, name: str, spec: Any,
                        strict: bool) -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResourceReservation",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    kwargs = {"field_validation": "Strict"} if strict else {}
    return dict(rk.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "resourcereservations", body, _request_timeout=60, **kwargs))


def _replace_spec(rk: RespoolKube, namespace: str, name: str, spec: Any, strict: bool) -> None:
    """Replace the whole spec (a JSON patch: the operator's finalizer edits cannot conflict)."""
    kwargs = {"field_validation": "Strict"} if strict else {}
    rk.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "resourcereservations", name,
        [{"op": "replace", "path": "/spec", "value": spec}],
        _content_type="application/json-patch+json", _request_timeout=60, **kwargs)


def _create_pool(rk: RespoolKube, name: str, spec: Any, strict: bool) -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResourcePool",
            "metadata": {"name": name}, "spec": spec}
    kwargs = {"field_validation": "Strict"} if strict else {}
    return dict(rk.custom.create_cluster_custom_object(
        GROUP, VERSION, "resourcepools", body, _request_timeout=60, **kwargs))


def _wait_gone(check: Callable[[], bool], what: str, timeout: float = PHASE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} still exists after {timeout}s (a finalizer was not removed)")


def _granted_on_control_pool(rk: RespoolKube, namespace: str) -> None:
    """A plain reservation on the untouched pool is still granted: nothing stalled."""
    name = _name("control")
    rk.create(namespace, name, {"pool": CONTROL_POOL, "request": {"slots": 1},
                                "duration": "5m"})
    rk.wait_phase(namespace, name, "Active", timeout=PHASE_TIMEOUT)
    rk.delete(namespace, name)
    _wait_gone(lambda: rk.exists(namespace, name), f"reservation {namespace}/{name}")


def _pool_ready(rk: RespoolKube, name: str) -> dict[str, Any]:
    return rk.wait_pool(
        name,
        lambda o: (condition_of(o, "Ready") or {}).get("status") == "True"
        and (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"],
        timeout=PHASE_TIMEOUT, what="Ready=True")


@pytest.fixture
def fuzz_pools(rk: RespoolKube, operator: OperatorProcess) -> Iterator[None]:
    """The pool fuzzed reservations name, and a control pool nothing fuzzed touches."""
    for name in (FUZZ_POOL, CONTROL_POOL):
        if not rk.pool_exists(name):
            # The longest maxDuration there is (the default is a day), so that the edge cases
            # can reach the longest windows a reservation may write.
            rk.create_pool(name, {"resources": _small_R(),
                                  "policy": {"maxDuration": LONGEST_DURATION}})
        _pool_ready(rk, name)
    yield
    for name in (FUZZ_POOL, CONTROL_POOL):
        rk.delete_pool(name)
    for name in (FUZZ_POOL, CONTROL_POOL):
        _wait_gone(lambda name=name: rk.pool_exists(name), f"pool {name}")


# ---------------------------------------------------------------------------------------------
# The two judges: every example, fuzzed or hand-picked, goes through one of them.


IMMUTABLE_WHILE_ACTIVE = "cannot change while the reservation is Active"


def judge_reservation(rk: RespoolKube, operator: OperatorProcess, namespace: str,
                      spec: Any, hint: str, strict: bool,
                      update_of: dict[str, Any] | None = None) -> str:
    """Submit one reservation - created with ``spec``, or created with the valid ``update_of``
    and then replaced by ``spec`` - and check how it ends; returns what happened."""
    name = _name("fz")
    verb = "update" if update_of is not None else "create"
    what = f"reservation {name} ({verb}, strict={strict}) spec={json.dumps(spec)[:1500]}"
    offset = operator.log_size()
    created: dict[str, Any] | None = None
    try:
        try:
            if update_of is not None:
                created = _create_reservation(rk, namespace, name, update_of, strict=True)
                _wait_evaluated(rk, namespace, name, f"{what}: before the update")
                _replace_spec(rk, namespace, name, spec, strict)
            else:
                created = _create_reservation(rk, namespace, name, spec, strict)
        except ApiException as error:
            message = _refusal(error)
            if update_of is None or IMMUTABLE_WHILE_ACTIVE not in message:
                assert hint in message, \
                    f"{what}: refusal does not name {hint!r}: {message[:2000]}"
            outcome = f"{verb} refused with HTTP {error.status}"
        else:
            obj = _wait_evaluated(rk, namespace, name, what)
            _check_reservation_status(rk, namespace, obj, what)
            assert created is not None and obj["metadata"]["uid"] == created["metadata"]["uid"]
            stalled = condition_of(obj, "Stalled") or {}
            outcome = f"{verb} accepted: {phase_of(obj)}" + (
                f"/{stalled.get('reason')}" if stalled.get("status") == "True" else "")
    finally:
        if created is not None:
            rk.delete(namespace, name)
    if created is not None:
        _wait_gone(lambda: rk.exists(namespace, name), f"reservation {namespace}/{name}")
    _check_operator(operator, offset, what)
    return outcome


def judge_pool(rk: RespoolKube, operator: OperatorProcess, namespace: str, spec: Any,
               hint: str, strict: bool) -> str:
    """Submit one pool (and, if accepted, one reservation on it); check how both end."""
    name = _name("fzpool")
    what = f"pool {name} (strict={strict}) spec={json.dumps(spec)[:1500]}"
    offset = operator.log_size()
    try:
        _create_pool(rk, name, spec, strict)
    except ApiException as error:
        message = _refusal(error)
        assert hint in message, f"{what}: refusal does not name {hint!r}: {message[:2000]}"
        _check_operator(operator, offset, what)
        return f"refused with HTTP {error.status}"
    rsv = _name("onpool")
    try:
        pool = rk.wait_pool(
            name,
            lambda o: (condition_of(o, "Ready") is not None and (o.get("status") or {}).get(
                "observedGeneration") == o["metadata"]["generation"]),
            timeout=PHASE_TIMEOUT, what="a Ready condition for its generation")
        ready = condition_of(pool, "Ready") or {}
        outcome = f"accepted: Ready={ready.get('status')}/{ready.get('reason')}"
        if ready.get("status") != "True":
            stalled = condition_of(pool, "Stalled") or {}
            assert stalled.get("status") == "True", f"{what}: not Ready and not Stalled: " \
                f"{pool.get('status')}"
            reason = str(stalled.get("reason") or "")
            assert reason in KNOWN_REASONS, f"{what}: Stalled reason {reason!r}"
            assert (pool["status"].get("message") or "").strip(), f"{what}: no status.message"
            _wait_warning(rk, "default", name, "ResourcePool", reason, what)
        # A reservation on it is evaluated too (it waits, with a reason, if the pool is unusable).
        rk.create(namespace, rsv, {"pool": name, "duration": "1m"})
        obj = _wait_evaluated(rk, namespace, rsv, f"{what}: reservation {rsv}")
        _check_reservation_status(rk, namespace, obj, f"{what}: reservation {rsv}")
    finally:
        if rk.exists(namespace, rsv):
            rk.delete(namespace, rsv)
        _wait_gone(lambda: rk.exists(namespace, rsv), f"reservation {namespace}/{rsv}")
        rk.delete_pool(name)
    _wait_gone(lambda: rk.pool_exists(name), f"pool {name}")
    _check_operator(operator, offset, what)
    # The other pools are unaffected.
    control = rk.pool(CONTROL_POOL)
    assert (condition_of(control, "Ready") or {}).get("status") == "True", control.get("status")
    return outcome


# ---------------------------------------------------------------------------------------------
# Fuzzed examples


@settings(FUZZ_SETTINGS, max_examples=120)
@given(example=reservation_examples)
def test_fuzzed_reservations_are_refused_or_evaluated(
    example: tuple[dict[str, Any], Any, bool, bool], rk: RespoolKube,
    operator: OperatorProcess, namespace: str, fuzz_pools: None,
) -> None:
    base, mutation, strict, as_update = example
    if mutation is None:
        spec, hint = base, ""
    elif isinstance(mutation[0], str) and mutation[0] in ("both", "reversed", "end-and-duration"):
        spec, hint = _apply_cross_field(base, mutation)
    else:
        spec, hint = _apply_reservation_mutation(base, mutation)
    event(judge_reservation(rk, operator, namespace, spec, hint, strict,
                            update_of=base if as_update else None))


def test_fuzzed_reservations_left_the_operator_working(
    rk: RespoolKube, operator: OperatorProcess, namespace: str, fuzz_pools: None
) -> None:
    """Runs after the fuzzing above (same session, same operator): still granting."""
    _granted_on_control_pool(rk, namespace)


@settings(FUZZ_SETTINGS, max_examples=60)
@given(example=pool_examples)
def test_fuzzed_pools_are_refused_or_reported(
    example: tuple[dict[str, Any], Any, bool], rk: RespoolKube, operator: OperatorProcess,
    namespace: str, fuzz_pools: None,
) -> None:
    base, mutation, strict = example
    if mutation is None:
        spec, hint = base, ""
    else:
        path, value, hint = mutation
        spec = _set(base, path, value)
    event(judge_pool(rk, operator, namespace, spec, hint, strict))


def test_fuzzed_pools_left_the_operator_working(
    rk: RespoolKube, operator: OperatorProcess, namespace: str, fuzz_pools: None
) -> None:
    _granted_on_control_pool(rk, namespace)


# ---------------------------------------------------------------------------------------------
# Hand-picked edge cases, each tried every run (the fuzzer may or may not draw them), with the
# outcome each must have: "refused" (at admission) or the phase/reason the operator must reach.

def _in_hours(hours: int) -> str:
    """An RFC 3339 time `hours` from now (whole seconds, UTC)."""
    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _constraint_tree(levels: int, width: int) -> dict[str, Any]:
    """`width` empty constraint objects under each of and/or/not, `levels` deep."""
    if levels <= 1:
        return {}
    return {operator: [_constraint_tree(levels - 1, width) for _ in range(width)]
            for operator in ("and", "or", "not")}


def _nested(depth: int) -> dict[str, Any]:
    """{"a": {"a": ... {} ...}}, `depth` objects deep."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _costliest_admitted_constraints() -> dict[str, Any]:
    """At every bound of the cost budget at once - 32 constraint objects, 256 terms, 4096
    host names - and still matching rank 0 of the fuzz pool."""
    unknown = [f"^nosuch{i}" for i in range(216)]  # excluded properties nobody has
    return {
        "hostlist": ["fz[0-255]"] + [f"other{i}-[0-255]" for i in range(15)],  # 16, 4096 hosts
        "or": [{"ranks": "0-9999999"}]  # 8 objects, 8 + 216 terms
        + [{"ranks": "9999999", "properties": unknown[i * 31:(i + 1) * 31]} for i in range(7)],
        "and": [{"ranks": "0-3", "or": [{}] * 7}] + [{"ranks": "0-3"}] * 7,  # 15 objects, 8
        "not": [{"ranks": "9999999"}] * 8,  # 8 objects, 8 terms
    }


EDGE_RESERVATIONS: list[tuple[str, dict[str, Any], str]] = [
    # Windows at the edge of what RFC 3339 can write (year 9999): refused, or Failed with a
    # reason - the operator once crashed formatting the end of such a window.
    ("start-9999-plus-duration", {"startTime": "9999-12-31T23:00:00Z", "duration": "2h"},
     "refused"),
    ("start-9999-default-duration", {"startTime": "9999-12-31T23:59:59Z"},
     "Failed/InvalidSpec"),
    ("start-9999-manual-claim", {"startTime": "9999-12-31T22:00:00Z", "duration": "1h",
                                 "claimPolicy": "Manual"}, "Scheduled"),
    # Now to the year 9999 is longer than any policy.maxDuration (999999h, 114 years) allows.
    ("end-9999", {"endTime": "9999-12-31T23:59:59Z"}, "Failed/InvalidSpec"),
    ("end-longest", {"endTime": _in_hours(999998)}, "Active"),
    ("start-0001-end-9999", {"startTime": "0001-01-01T00:00:00Z",
                             "endTime": "9999-12-31T23:59:59Z"}, "Failed/InvalidSpec"),
    ("end-0001", {"endTime": "0001-01-01T00:00:00Z"}, "Failed/InvalidSpec"),
    ("start-0001", {"startTime": "0001-01-01T00:00:00Z", "duration": "1m"}, "Active"),
    ("offset-out-of-range", {"startTime": "9999-12-31T23:59:59-23:59", "duration": "1s"},
     "Failed/InvalidSpec"),
    # Durations Go cannot hold, or written twice.
    ("duration-huge", {"duration": "99999999999h"}, "refused"),
    ("duration-repeated-unit", {"duration": "1h1h"}, "refused"),
    ("max-wait-huge", {"duration": "1m", "maxWait": "2562048h"}, "refused"),
    ("duration-longest", {"duration": "999999h"}, "Active"),
    # Idsets and hostlists the pattern lets through but that mean nothing.
    ("ranks-reversed", {"duration": "1m", "constraints": {"ranks": "3-1"}},
     "Failed/InvalidSpec"),
    ("hostlist-reversed", {"duration": "1m", "constraints": {"hostlist": ["fz[3-1]"]}},
     "Failed/InvalidSpec"),
    ("hostlist-huge", {"duration": "1m", "constraints": {"hostlist": ["fz[0-9999999]"]}},
     "Failed/InvalidSpec"),
    ("ranks-huge-valid", {"duration": "1m", "constraints": {"ranks": "0-9999999"}}, "Active"),
    # Constraints that maximise cost (issue 11): past the budget they are refused (at
    # admission where CEL can count, else at once as InvalidSpec); at the budget they are
    # evaluated, and the control pool keeps granting throughout (_granted_on_control_pool).
    ("constraints-largest-tree", {"duration": "1m", "constraints": _constraint_tree(3, 8)},
     "refused"),
    ("constraints-too-many-terms", {"duration": "1m", "constraints": {
        "and": [{"properties": ["a100"] * 32}] * 8, "properties": ["a100"]}}, "refused"),
    ("constraints-hostlist-bomb", {"duration": "1m", "constraints": {
        "or": [{"hostlist": ["fz0[0-262143]"] * 8}] * 8}}, "Failed/InvalidSpec"),
    ("constraints-hosts-over-budget", {"duration": "1m", "constraints": {
        "hostlist": ["fz[0-2047]", "fy[0-2048]"]}}, "Failed/InvalidSpec"),
    ("constraints-costliest-admitted", {"duration": "1m",
                                        "constraints": _costliest_admitted_constraints()},
     "Active"),
    # Counts at the limits.
    ("count-max", {"duration": "1m", "request": {"nodes": 1_000_000, "slots": 1_000_000,
                                                 "coresPerSlot": 1_000_000}},
     "Failed/Infeasible"),
    ("count-over-max", {"duration": "1m", "request": {"slots": 1_000_001}}, "refused"),
    ("count-int64", {"duration": "1m", "request": {"slots": 2**63 - 1}}, "refused"),
    ("vertex-max", {"duration": "1m", "resources": [
        {"type": "slot", "count": 1_000_000, "with": [{"type": "core", "count": 1_000_000}]}]},
     "Failed/Infeasible"),
    ("no-such-pool", {"pool": "fuzz-no-such-pool", "duration": "1m"}, "Pending/PoolNotFound"),
    ("property-unknown", {"duration": "1m", "constraints": {"properties": ["nosuch"]}},
     "Failed/Infeasible"),
    # A config echoed to status must fit in one etcd object with the spec (else HTTP 500 on
    # every status write: the operator once retried that forever, leaving no phase).
    ("config-too-large", {"duration": "1m", "config": {"blob": "x" * 300_000}},
     "Failed/InvalidSpec"),
    ("config-largest", {"duration": "1m", "config": {"blob": "x" * 200_000}}, "Active"),
    # Configs that maximise the operator's cost rather than their size (issue 11): ~85,000
    # empty objects (the costliest to parse: ~6 MB parsed, echoed to status), and nesting
    # deeper than Python's JSON parser goes by default (one such object in a watch stream
    # once stopped the operator from seeing any reservation).
    ("config-costliest-to-parse", {"duration": "1m", "config": {"a": [{}] * 85_000}},
     "Active"),
    ("config-deepest", {"duration": "1m", "config": _nested(2_000)}, "Failed/InvalidSpec"),
]


@pytest.mark.parametrize(("case", "fields", "expected"), EDGE_RESERVATIONS,
                         ids=[case for case, _, _ in EDGE_RESERVATIONS])
def test_edge_reservations(case: str, fields: dict[str, Any], expected: str, rk: RespoolKube,
                           operator: OperatorProcess, namespace: str, fuzz_pools: None) -> None:
    spec = {"pool": FUZZ_POOL, **fields}
    # (This client walks a spec recursively too: deep configs need more than Python's 1,000.)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        outcome = judge_reservation(rk, operator, namespace, spec, "spec", strict=True)
    finally:
        sys.setrecursionlimit(limit)
    if expected == "refused":
        assert outcome == "create refused with HTTP 422", f"{case}: {outcome}"
    else:
        assert outcome == f"create accepted: {expected}", f"{case}: {outcome}"


EDGE_UPDATES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    # (case, the valid spec created first, the spec it is replaced with, the outcome)
    ("active-extended-to-the-last-time", {"duration": "1m"},
     {"endTime": "9999-12-31T23:59:59Z"}, "update accepted: Active"),
    ("active-extended-by-the-longest-duration", {"duration": "1m"}, {"duration": "999999h"},
     "update accepted: Active"),
    ("active-shortened", {"duration": "1h"}, {"duration": "30m0.000000001s"},
     "update accepted: Active"),
    ("active-request-changed", {"duration": "1m"},
     {"duration": "1m", "request": {"slots": 2}}, "update refused with HTTP 422"),
    ("scheduled-moved-to-the-year-9999", {"startTime": "2030-01-01T00:00:00Z"},
     {"startTime": "9999-12-31T23:30:00Z"}, "update accepted: Failed/InvalidSpec"),
    ("scheduled-window-past-the-year-9999", {"startTime": "9999-12-31T20:00:00Z",
                                             "duration": "1h"},
     {"startTime": "9999-12-31T20:00:00Z", "duration": "4h"}, "update refused with HTTP 422"),
    ("scheduled-pool-renamed-to-a-missing-one", {"startTime": "2030-01-01T00:00:00Z"},
     {"startTime": "2030-01-01T00:00:00Z", "pool": "fuzz-no-such-pool"},
     "update accepted: Pending/PoolNotFound"),
    ("scheduled-ranks-reversed", {"startTime": "2030-01-01T00:00:00Z"},
     {"startTime": "2030-01-01T00:00:00Z", "constraints": {"ranks": "3-1"}},
     "update accepted: Failed/InvalidSpec"),
]


@pytest.mark.parametrize(("case", "before", "after", "expected"), EDGE_UPDATES,
                         ids=[case for case, _, _, _ in EDGE_UPDATES])
def test_edge_updates(case: str, before: dict[str, Any], after: dict[str, Any], expected: str,
                      rk: RespoolKube, operator: OperatorProcess, namespace: str,
                      fuzz_pools: None) -> None:
    outcome = judge_reservation(rk, operator, namespace, {"pool": FUZZ_POOL, **after}, "spec",
                                strict=True, update_of={"pool": FUZZ_POOL, **before})
    assert outcome == expected, f"{case}: {outcome}"


HOSTILE_POOLS: list[tuple[str, str, Any, str]] = [
    # (case, path in the pool spec, value, "refused" or the Ready reason the pool must show)
    ("ranks-beyond-engine", "resources.execution.R_lite",
     [{"rank": "0-9999999", "children": {"core": "0"}}], "InvalidResources"),
    ("ranks-uint32", "resources.execution.R_lite",
     [{"rank": "0-4294967295", "children": {"core": "0"}}], "refused"),
    ("million-cores-per-rank", "resources.execution.R_lite",
     [{"rank": "0", "children": {"core": "0-999999"}}], "InvalidResources"),
    ("gpus-beyond-engine", "resources.execution.R_lite",
     [{"rank": "0", "children": {"core": "0", "gpu": "0-9999999"}}], "InvalidResources"),
    ("duplicate-ranks", "resources.execution.R_lite",
     [{"rank": "0-3", "children": {"core": "0-1"}}, {"rank": "2-5", "children": {"core": "0"}}],
     "InvalidResources"),
    ("reversed-ranks", "resources.execution.R_lite",
     [{"rank": "3-0", "children": {"core": "0-1"}}], "InvalidResources"),
    ("reversed-cores", "resources.execution.R_lite.0.children.core", "7-0", "InvalidResources"),
    ("nodelist-too-short", "resources.execution.nodelist", ["fz[0-1]"], "InvalidResources"),
    ("nodelist-too-long", "resources.execution.nodelist", ["fz[0-99]"], "InvalidResources"),
    ("nodelist-huge", "resources.execution.nodelist", ["n[0-9999999]"], "InvalidResources"),
    ("nodelist-malformed", "resources.execution.nodelist", ["fz[0-3"], "refused"),
    ("properties-outside", "resources.execution.properties", {"a100": "4-9"},
     "InvalidResources"),
    ("expiration-huge-float", "resources.execution.expiration", 1e300, "PoolReady"),
    ("expiration-2-64", "resources.execution.expiration", 2**64, "PoolReady"),
    ("expiration-9999", "expiration", "9999-12-31T23:59:59Z", "PoolReady"),
    ("expiration-0001", "expiration", "0001-01-01T00:00:00Z", "refused"),
    ("expiration-0001-offset", "expiration", "0001-01-01T00:00:00+01:00", "InvalidResources"),
    ("expiration-1970", "expiration", "1970-01-01T00:00:00Z", "PoolReady"),
    ("down-reversed", "down", "3-1", "InvalidResources"),
    ("down-huge", "down", "0-9999999", "PoolReady"),
    ("policy-duration-huge", "policy", {"defaultDuration": "1h",
                                        "maxDuration": "99999999999h"}, "refused"),
    ("policy-claim-timeout-longest", "policy", {"claimTimeout": "999999h"}, "PoolReady"),
    # policy.limits (issue 15): a zone no tz database knows passes the schema (it is shaped
    # like one) and is reported by the operator; the largest admitted limits are accepted.
    ("limits-unknown-zone", "policy", {"limits": [{"allowedHours": [
        {"from": "01:00", "to": "02:00", "timeZone": "Mars/Olympus_Mons"}]}]},
     "InvalidResources"),
    ("limits-max-duration-zero", "policy", {"limits": [{"maxDuration": "0s"}]}, "refused"),
    ("limits-all-zero", "policy", {"limits": [{"maxNodes": 0, "maxCores": 0, "maxGPUs": 0,
                                               "maxNodeHoursPerWeek": 0, "maxAdvance": "0s"}]},
     "PoolReady"),
    ("limits-largest", "policy", {"limits": [
        {"namespaceSelector": {"matchExpressions": [{"key": "k", "operator": "NotIn",
                                                      "values": ["v"]}]},
         "allowedHours": [{"from": f"{h:02d}:00", "to": f"{h:02d}:30",
                           "timeZone": "Pacific/Chatham"} for h in range(16)]}
        for _ in range(32)]}, "PoolReady"),
]


@pytest.mark.parametrize(("case", "path", "value", "expected"), HOSTILE_POOLS,
                         ids=[case for case, _, _, _ in HOSTILE_POOLS])
def test_hostile_pools(case: str, path: str, value: Any, expected: str, rk: RespoolKube,
                       operator: OperatorProcess, namespace: str, fuzz_pools: None) -> None:
    spec = _set({"resources": _small_R()}, path, value)
    outcome = judge_pool(rk, operator, namespace, spec, path.split(".")[-1], strict=True)
    if expected == "refused":
        assert outcome.startswith("refused with HTTP 422"), f"{case}: {outcome}"
    else:
        assert outcome.startswith("accepted: Ready=") and outcome.endswith(f"/{expected}"), \
            f"{case}: {outcome}"


def test_pool_recreated_under_the_same_name_is_reconciled(
    rk: RespoolKube, operator: OperatorProcess, namespace: str
) -> None:
    """Found by the fuzzing above: a pool deleted and created again with the same name (and
    the same spec) got no finalizer and no status, because the operator remembered what it had
    written to the old object."""
    name = _name("again")
    for _ in range(2):
        rk.create_pool(name, {"resources": _small_R()})
        pool = _pool_ready(rk, name)
        assert "respool.io/finalizer" in (pool["metadata"].get("finalizers") or [])
        reservation = _name("on-again")
        rk.create(namespace, reservation, {"pool": name, "duration": "1m"})
        rk.wait_phase(namespace, reservation, "Active", timeout=PHASE_TIMEOUT)
        rk.delete(namespace, reservation)
        _wait_gone(lambda r=reservation: rk.exists(namespace, r), f"reservation {reservation}")
        rk.delete_pool(name)
        _wait_gone(lambda: rk.pool_exists(name), f"pool {name}")


def test_a_grant_too_large_to_write_fails_and_gives_its_resources_back(
    rk: RespoolKube, operator: OperatorProcess, namespace: str
) -> None:
    """A pool whose host names do not compress (4,200 distinct 200-character names): a grant
    of every node lists them twice in status (allocated.nodelist and allocated.R), 1.6 MB -
    more than etcd stores in one object (it answers HTTP 500, which looks like an outage). The reservation fails with a reason instead of a status write that
    is refused forever, and what it was about to hold is free again."""
    ranks = 4200
    hosts = [hashlib.sha256(str(i).encode()).hexdigest() * 3 + "-h" for i in range(ranks)]
    pool = _name("longnames")
    rk.create_pool(pool, {"resources": {"version": 1, "execution": {
        "R_lite": [{"rank": f"0-{ranks - 1}", "children": {"core": "0"}}],
        "nodelist": hosts}}})
    try:
        _pool_ready(rk, pool)
        offset = operator.log_size()
        whole = _name("whole")
        rk.create(namespace, whole, {"pool": pool, "duration": "10m",
                                     "request": {"nodes": ranks, "exclusive": True}})
        obj = _wait_evaluated(rk, namespace, whole, "the whole-pool reservation")
        _check_reservation_status(rk, namespace, obj, "the whole-pool reservation")
        assert phase_of(obj) == "Failed", obj.get("status")
        assert (condition_of(obj, "Stalled") or {}).get("reason") == "InvalidSpec"
        assert "bytes of JSON" in obj["status"]["message"], obj["status"]["message"]
        # Nothing of it stayed booked: one node is granted at once.
        one = _name("one")
        rk.create(namespace, one, {"pool": pool, "duration": "10m", "request": {"nodes": 1}})
        rk.wait_phase(namespace, one, "Active", timeout=PHASE_TIMEOUT)
        _check_operator(operator, offset, "a grant too large to write")
        for name in (whole, one):
            rk.delete(namespace, name)
        for name in (whole, one):
            _wait_gone(lambda n=name: rk.exists(namespace, n), f"reservation {name}")
    finally:
        rk.delete_pool(pool)
    _wait_gone(lambda: rk.pool_exists(pool), f"pool {pool}")
