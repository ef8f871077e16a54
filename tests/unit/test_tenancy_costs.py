"""What one tenant's object may cost the operator (issue 11): deep configs, listing pages.

A spec.config nested past Python's recursion limit once broke the operator's watch of every
reservation for good (the one event it could not parse was read again on every reconnect).
Now: `respool run` raises the limit (10,001 levels parse), a config nested
more than MAX_CONFIG_DEPTH levels is an invalid spec, and a line the watch cannot parse is
skipped rather than breaking the stream.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from respool.api import ResourceReservationSpec
from respool.api.models import MAX_CONFIG_DEPTH, json_depth
from respool.cli.run import RECURSION_LIMIT
from respool.controller.controller import LIST_PAGE_FIRST, LIST_PAGE_MAX, Controller


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_json_depth_counts_without_recursion() -> None:
    assert json_depth(1, 8) == 0
    assert json_depth({}, 8) == 1
    assert json_depth({"a": [{"b": []}]}, 8) == 4
    assert json_depth(_nested(50_000), 8) == 9  # stops counting past the limit


def test_a_config_nested_deeper_than_the_limit_is_invalid() -> None:
    ResourceReservationSpec.model_validate({"pool": "p", "config": _nested(MAX_CONFIG_DEPTH)})
    with pytest.raises(ValueError, match=r"spec\.config nests"):
        ResourceReservationSpec.model_validate({"pool": "p",
                                                "config": _nested(MAX_CONFIG_DEPTH + 1)})
    with pytest.raises(ValueError, match=r"spec\.config nests"):
        ResourceReservationSpec.model_validate({"pool": "p", "config": _nested(5_000)})


def test_the_operators_recursion_limit_reads_what_the_api_server_stores() -> None:
    # At `respool run`'s limit the JSON parser and encoder handle 10,001 levels on the main
    # thread's stack (in a child process: a stack overflow would end it, not this test run).
    assert RECURSION_LIMIT > 10_000
    script = (f"import json, sys; sys.setrecursionlimit({RECURSION_LIMIT}); "
              "d = 10_001; text = '{\"a\":' * d + '1' + '}' * d; "
              "value = json.loads(text); assert json.dumps(value, separators=(',', ':')) == "
              "text; print('ok')")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result


class _Pages:
    """A fake API answering a paginated list from `objects`, recording each page's limit."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects
        self.limits: list[int] = []

    async def request(self, method: str, path: str, *, params: Any = None,
                      **_: Any) -> dict[str, Any]:
        limit = int(params["limit"])
        start = int(params.get("continue") or 0)
        self.limits.append(limit)
        end = start + limit
        return {"metadata": {"resourceVersion": "7",
                             "continue": str(end) if end < len(self.objects) else ""},
                "items": [json.loads(json.dumps(o)) for o in self.objects[start:end]]}


def _rsv(index: int, blob: int) -> dict[str, Any]:
    return {"metadata": {"uid": f"u{index}", "name": f"r{index}", "namespace": "n"},
            "spec": {"pool": "p", "config": {"blob": "x" * blob}}}


@pytest.mark.parametrize(("blob", "largest"), [(10, LIST_PAGE_MAX), (500_000, 10)])
def test_listing_pages_are_sized_by_what_they_hold(blob: int, largest: int) -> None:
    # Issue 11, item 11: small objects are listed 500 a page, objects near etcd's limit a
    # few at a time (a page of them once sat in memory hundreds at a time, parsed).
    api = _Pages([_rsv(i, blob) for i in range(2_000 if blob < 1000 else 40)])
    controller = Controller(api)  # type: ignore[arg-type]
    seen: list[str] = []

    def take(item: dict[str, Any]) -> int:
        seen.append(item["metadata"]["uid"])
        return len(json.dumps(item["spec"]))

    version = asyncio.run(controller._list("/x", take))
    assert version == "7"
    assert sorted(seen) == sorted(o["metadata"]["uid"] for o in api.objects)
    assert api.limits[0] == LIST_PAGE_FIRST
    assert max(api.limits) == largest


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(alphabet="ab", max_size=3),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(alphabet="xy", max_size=2), inner, max_size=3),
                    max_leaves=40)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@given(JSON, st.integers(min_value=0, max_value=6))
def test_json_depth_is_the_nesting_depth_up_to_the_limit(value: Any, limit: int) -> None:
    # Fuzzed configs (issue 11: specs that maximise cost): the budget check counts what a
    # recursive walk would find, and stops early only past the limit.
    depth = _depth(value)
    counted = json_depth(value, limit)
    if depth <= limit:
        assert counted == depth
    else:
        assert limit < counted <= depth


class _Content:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def iter_any(self) -> Any:
        for chunk in self.chunks:
            yield chunk


class _Response:
    status = 200

    def __init__(self, chunks: list[bytes]) -> None:
        self.content = _Content(chunks)

    async def __aenter__(self) -> _Response:
        return self

    async def __aexit__(self, *_: Any) -> None:
        return None


class _Session:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def get(self, url: str, timeout: Any = None) -> _Response:
        return _Response(self.chunks)


class _WatchApi:
    server = "https://example"

    def __init__(self, chunks: list[bytes]) -> None:
        self.session = _Session(chunks)

    def _ensure_session(self) -> _Session:
        return self.session


def test_the_watch_reads_lines_split_anyhow_and_skips_what_it_cannot_parse() -> None:
    from respool.controller.kubeapi import watch_events

    big = json.dumps({"type": "MODIFIED", "object": {"metadata": {"uid": "big"},
                                                     "spec": {"config": {"b": "x" * 50_000}}}})
    deep = '{"type":"ADDED","object":' + '{"a":' * 5_000 + "1" + "}" * 5_000 + "}"
    small = json.dumps({"type": "ADDED", "object": {"metadata": {"uid": "small"}}})
    stream = (big + "\n" + deep + "\n\n" + small + "\n").encode()
    # A big line in many small chunks, and chunks that end inside and between lines.
    chunks = [stream[i:i + 997] for i in range(0, len(stream), 997)]

    async def read() -> list[str]:
        return [event["object"]["metadata"]["uid"]
                async for event in watch_events(_WatchApi(chunks), "/x", "1")]  # type: ignore[arg-type]

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000)  # (the deep line is past it: skipped, the stream goes on)
    try:
        assert asyncio.run(read()) == ["big", "small"]
    finally:
        sys.setrecursionlimit(limit)
