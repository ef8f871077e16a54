"""Fuzz: arbitrary JSON-like input to every engine parser either parses or raises a clear
ValueError/TypeError — never another exception, a hang or a partial state change."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from respool.pool import (
    Hostlist,
    IDset,
    Planner,
    ResourcePool,
    jobspec_from_shorthand,
    parse_jobspec,
)
from respool.pool.constraint import validate_constraint

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet="0123456789-,[]+:*^abn ", max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "version",
                    "execution",
                    "R_lite",
                    "rank",
                    "children",
                    "core",
                    "gpu",
                    "nodelist",
                    "properties",
                    "starttime",
                    "expiration",
                    "nslots",
                    "scheduling",
                    "resources",
                    "type",
                    "count",
                    "with",
                    "exclusive",
                    "attributes",
                    "system",
                    "duration",
                    "constraints",
                    "and",
                    "or",
                    "not",
                    "hostlist",
                    "ranks",
                    "min",
                    "max",
                    "operator",
                    "operand",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID_R: dict[str, Any] = {
    "version": 1,
    "execution": {
        "R_lite": [{"rank": "0-3", "children": {"core": "0-3", "gpu": "0"}}],
        "nodelist": ["n[0-3]"],
        "properties": {"red": "0-1"},
    },
}


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


def replaced(document: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    clone = copy.deepcopy(document)
    target = clone
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return clone


@FUZZ
@given(json_values)
def test_r_parser(value: Any) -> None:
    with contextlib.suppress(ValueError, TypeError):
        ResourcePool(value)
    with contextlib.suppress(ValueError, TypeError):
        ResourcePool(json.dumps(value))


@FUZZ
@given(st.data(), json_values)
def test_mutated_r(data: st.DataObject, new: Any) -> None:
    path = data.draw(st.sampled_from(paths(VALID_R)))
    document = replaced(VALID_R, path, new)
    try:
        pool = ResourcePool(document)
    except (ValueError, TypeError):
        return
    assert ResourcePool(pool.to_dict()).to_dict() == pool.to_dict()


@FUZZ
@given(st.data(), json_values)
def test_mutated_jobspec_on_pool_and_planner(data: st.DataObject, new: Any) -> None:
    base = jobspec_from_shorthand(
        nodes=2, slots=1, cores_per_slot=2, constraints={"properties": ["red"]}
    )
    path = data.draw(st.sampled_from(paths(base)))
    jobspec = replaced(base, path, new)
    pool = ResourcePool(VALID_R)
    before = (pool.generation, pool.copy_allocated().to_dict())
    try:
        request = parse_jobspec(jobspec)
    except (ValueError, TypeError):
        return
    try:
        pool.alloc(1, request)
    except (ValueError, TypeError, OSError):
        assert (pool.generation, pool.copy_allocated().to_dict()) == before
    planner = Planner(VALID_R)
    try:
        planner.reserve("a", request, 0, 10, "exclusive")
        planner.earliest(request, 10, 0, "shared")
    except (ValueError, TypeError, OSError):
        pass


@FUZZ
@given(json_values)
def test_constraints(value: Any) -> None:
    try:
        validate_constraint(value)
    except ValueError:
        return
    js = jobspec_from_shorthand(slots=1)
    js["attributes"]["system"]["constraints"] = value
    pool = ResourcePool(VALID_R)
    with contextlib.suppress(OSError):
        pool.alloc(1, js)


@FUZZ
@given(st.text(max_size=30))
def test_idset_and_hostlist_text(text: str) -> None:
    try:
        ids = IDset(text)
        assert IDset(str(ids)) == ids
    except ValueError:
        pass
    try:
        hosts = Hostlist(text)
        assert list(Hostlist(str(hosts))) == list(hosts)
    except ValueError:
        pass


@FUZZ
@given(json_values, json_values)
def test_pool_methods_with_garbage(first: Any, second: Any) -> None:
    pool = ResourcePool(VALID_R)
    pool.alloc(1, jobspec_from_shorthand(slots=2))
    snapshot = (pool.generation, pool.copy_allocated().to_dict(), pool.copy_down().to_dict())
    calls = [
        lambda: pool.free(1, first),
        lambda: pool.register_alloc(2, first),
        lambda: pool.mark_down(first),
        lambda: pool.remove_ranks(first),
        lambda: pool.update_expiration(1, first),
        lambda: pool.set_expiration(first),
        lambda: pool.alloc(3, first),
    ]
    for call in calls:
        try:
            call()
        except (ValueError, TypeError, OSError):
            assert (
                pool.generation,
                pool.copy_allocated().to_dict(),
                pool.copy_down().to_dict(),
            ) == snapshot
        snapshot = (pool.generation, pool.copy_allocated().to_dict(), pool.copy_down().to_dict())
    planner = Planner(VALID_R)
    for call in (
        lambda: planner.restore("x", first, 0, 10, "exclusive"),
        lambda: planner.reserve("y", first, 0, second, "shared"),
        lambda: planner.extend("x", second),
        lambda: planner.fits(first, 0, 10, second),
    ):
        with contextlib.suppress(ValueError, TypeError, OSError):
            call()
