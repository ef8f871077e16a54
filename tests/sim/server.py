"""A simulated Kubernetes API server, in process, for the deterministic simulation.

It holds pools, reservations, Namespaces and Nodes with the semantics the operator relies on:
one resourceVersion counter (etcd's revision), `metadata.generation` bumped by spec changes
only, the status subresource (a status patch changes only status, a main-resource patch
never status), JSON-patch `test` ops (a failed one is a 422 and changes nothing), deletion
with finalizers (a deletionTimestamp until the last finalizer goes), and a log of watch
events per kind.

The client side (`SimApi`, one per operator incarnation) adds what the network adds, chosen
by the seeded scheduler: latency before a request is applied and before its answer comes
back, refusals, an unavailable server that did not apply the request, and answers lost after
the request *was* applied. A request, once sent, is applied by the server even if its sender
crashed meanwhile - which is how a deposed leader's late write lands.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from respool.api import format_time
from respool.controller.kubeapi import ApiError, WatchExpired

GROUP_PATH = "/apis/respool.io/v1alpha1"


def _copy(value: Any) -> Any:
    """A deep copy of JSON data: dicts and lists copied, everything else (str, numbers, bool,
    None) immutable and shared. Twice as fast as a JSON round trip, many times faster than
    copy.deepcopy, as fast as a marshal round trip (what users write and patch values are
    copied; what the server hands out is shared, see `SimServer.share`)."""
    kind = type(value)
    if kind is dict:
        return {key: _copy(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_copy(item) for item in value]
    return value


class SharedObjectChanged(AssertionError):
    """The operator changed an object the simulated server shares with it."""


@dataclass
class Faults:
    """Probabilities of what can go wrong; all zero once the schedule's faults stop."""

    refuse: float = 0.0  # a definite refusal (403/422 with the object unchanged)
    unavailable: float = 0.0  # 503: not applied
    answer_lost: float = 0.0  # applied, but the answer never arrives (status 0)
    slow: float = 0.0  # a long delay before the request is applied
    watch_late: float = 0.0  # a watch event held back for a while (later ones queue behind)
    watch_break: float = 0.0  # the watch stream ends (reconnect) ...
    watch_expire: float = 0.0  # ... or answers 410 Gone (relist)

    def off(self) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, 0.0)


@dataclass
class WatchEvent:
    version: int
    kind: str  # "pool" | "reservation" | "namespace" | "node"
    type: str  # ADDED | MODIFIED | DELETED
    obj: dict[str, Any]


@dataclass
class Write:
    """One mutation the server applied (for the invariants and the trace)."""

    version: int
    kind: str
    key: str
    writer: str  # "user" or "op<N>"
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    status_write: bool = False


@dataclass
class SimServer:
    clock: Callable[[], float]
    rng: random.Random
    faults: Faults = field(default_factory=Faults)
    version: int = 0
    #: kind -> key -> the stored object (never changed in place: each write stores a new one)
    store: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    log: list[WatchEvent] = field(default_factory=list)
    uids: int = 0
    #: Called after every mutation (the invariants are checked there).
    on_write: Callable[[Write], None] | None = None
    #: Called when a status write finds the status already as written (no new version).
    on_same_status: Callable[[str, str, str], None] | None = None
    #: The oldest version a watch may start from (older: 410 Gone, as after compaction).
    compacted: int = 0
    #: Requests sent but not yet applied (they land even if their sender is gone).
    inflight: set[asyncio.Task[None]] = field(default_factory=set)
    _waiters: list[asyncio.Future[None]] = field(default_factory=list)
    #: Stored objects are handed to the operator as they are, not copied (a copy of every
    #: answer, listing and watch event took a tenth of the simulation's time). That is sound
    #: only while the operator never changes what it is given; with `verify_shared` the
    #: server fingerprints each object it hands out and `check_shared()` says if one changed
    #: (tests/sim/test_simulation.py runs schedules so).
    verify_shared: bool = False
    _fingerprints: dict[int, tuple[Any, str]] = field(default_factory=dict)

    def share(self, value: Any, kind: str = "") -> Any:
        """`value` (a stored object, or a list of them) to hand to the operator. Pools are
        copied: the operator changes the pool object it keeps (pool_keeper notes in it that
        its finalizer is gone), as it may - what a client reads is its own."""
        if kind == "pool":
            return _copy(value)
        if self.verify_shared:
            for obj in value if isinstance(value, list) else [value]:
                if id(obj) not in self._fingerprints:
                    self._fingerprints[id(obj)] = (obj, json.dumps(obj, sort_keys=True))
        return value

    def check_shared(self) -> None:
        for obj, text in self._fingerprints.values():
            if json.dumps(obj, sort_keys=True) != text:
                raise SharedObjectChanged(
                    f"the operator changed an object the server handed it: was {text}, "
                    f"is {json.dumps(obj, sort_keys=True)}")

    async def wait_change(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    # -- storage -------------------------------------------------------------------------------

    def _bump(self) -> str:
        self.version += 1
        return str(self.version)

    def _emit(self, kind: str, type_: str, obj: dict[str, Any]) -> None:
        # Stored objects are never changed in place (every mutation stores a new one), so the
        # log shares them; whatever is handed to the operator is a copy (or, for the
        # reservation watch, read only).
        self.log.append(WatchEvent(self.version, kind, type_, obj))
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _record(self, kind: str, key: str, writer: str, before: dict[str, Any] | None,
                after: dict[str, Any] | None, status_write: bool = False) -> None:
        if self.on_write is not None:
            self.on_write(Write(self.version, kind, key, writer, before, after, status_write))

    def get_object(self, kind: str, key: str) -> dict[str, Any] | None:
        return self.store.get(kind, {}).get(key)

    def _put(self, kind: str, key: str, obj: dict[str, Any]) -> None:
        self.store.setdefault(kind, {})[key] = obj

    def keys(self, kind: str) -> list[str]:
        """The keys of one kind's objects, sorted (the order every listing uses)."""
        return sorted(self.store.get(kind, ()))

    def items(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        objects = self.store.get(kind, {})
        found = [objects[key] for key in sorted(objects)]
        if namespace is not None:
            found = [o for o in found if o["metadata"].get("namespace") == namespace]
        return found

    # -- what users (and kubelets) do --------------------------------------------------------

    def create(self, kind: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self.get_object(kind, key) is None, key
        self.uids += 1
        obj = _copy(body)
        metadata = obj.setdefault("metadata", {})
        metadata.update(uid=f"{kind[:3]}-{self.uids:04d}-0000-4000-8000-{self.uids:012d}",
                        generation=1, creationTimestamp=format_time(self.clock()),
                        resourceVersion=self._bump())
        self._put(kind, key, obj)
        self._emit(kind, "ADDED", obj)
        self._record(kind, key, "user", None, obj)
        return obj

    def update_spec(self, kind: str, key: str, change: Callable[[dict[str, Any]], None]) -> bool:
        before = self.get_object(kind, key)
        if before is None:
            return False
        obj = _copy(before)
        spec = obj.setdefault("spec", {})
        change(spec)
        if spec == before.get("spec"):
            return False
        obj["metadata"]["generation"] += 1
        obj["metadata"]["resourceVersion"] = self._bump()
        self._put(kind, key, obj)
        self._emit(kind, "MODIFIED", obj)
        self._record(kind, key, "user", before, obj)
        return True

    def update_meta(self, kind: str, key: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Labels, Node conditions: no generation change."""
        before = self.get_object(kind, key)
        if before is None:
            return
        obj = _copy(before)
        change(obj)
        obj["metadata"]["resourceVersion"] = self._bump()
        self._put(kind, key, obj)
        self._emit(kind, "MODIFIED", obj)
        self._record(kind, key, "user", before, obj)

    def delete(self, kind: str, key: str) -> None:
        before = self.get_object(kind, key)
        if before is None or before["metadata"].get("deletionTimestamp"):
            return
        if before["metadata"].get("finalizers"):
            obj = {**before, "metadata": {**before["metadata"],
                                          "deletionTimestamp": format_time(self.clock()),
                                          "resourceVersion": self._bump()}}
            self._put(kind, key, obj)
            self._emit(kind, "MODIFIED", obj)
            self._record(kind, key, "user", before, obj)
        else:
            self._remove(kind, key, "user")

    def _remove(self, kind: str, key: str, writer: str) -> None:
        before = self.store[kind].pop(key)
        obj = {**before, "metadata": {**before["metadata"], "resourceVersion": self._bump()}}
        self._emit(kind, "DELETED", obj)
        self._record(kind, key, writer, before, None)

    # -- what the operator's requests do -----------------------------------------------------

    def apply_json_patch(self, path: str, ops: list[dict[str, Any]],
                         writer: str) -> dict[str, Any]:
        kind, key, status = parse_path(path)
        obj = self.get_object(kind, key)
        if obj is None:
            raise ApiError(404, f"{kind} {key} not found", "NotFound")
        new = obj  # each op below copies only the containers on its path
        for op in ops:
            target = op["path"]
            if op["op"] == "test":
                if _pointer_get(new, target) != op["value"]:
                    raise ApiError(422, f"the test of {target} failed", "Invalid")
                continue
            if status != target.startswith("/status"):
                continue  # the subresource decides what a patch may change
            if op["op"] in ("add", "replace"):
                new = _pointer_set(new, _split(target), _copy(op["value"]))
            elif op["op"] == "remove":
                new = _pointer_remove(new, _split(target))
        if new is obj or new == obj:
            if status and self.on_same_status is not None:
                self.on_same_status(kind, key, writer)
            return self.share(obj, kind)  # a no-op write: no new version, no event
        before = obj  # replaced, never changed again
        new = {**new, "metadata": {**new["metadata"], "resourceVersion": self._bump()}}
        self._put(kind, key, new)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._remove(kind, key, writer)
            return self.share(new, kind)
        self._emit(kind, "MODIFIED", new)
        self._record(kind, key, writer, before, new, status_write=status)
        return self.share(new, kind)

    def read(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        if path.startswith("/api/v1/namespaces") and path.count("/") == 3:
            items = self.items("namespace")
            selector = (params or {}).get("fieldSelector", "")
            if selector.startswith("metadata.name="):
                name = selector.split("=", 1)[1]
                items = [i for i in items if i["metadata"]["name"] == name]
            return {"items": self.share(items),
                    "metadata": {"resourceVersion": str(self.version)}}
        if path == "/api/v1/nodes":
            return {"items": self.share(self.items("node")),
                    "metadata": {"resourceVersion": str(self.version)}}
        if path == "/apis/scheduling.k8s.io/v1/priorityclasses":
            # The simulated workloads name no PriorityClass (issue 14): the listing is empty.
            return {"items": [], "metadata": {"resourceVersion": str(self.version)}}
        kind, key, _status = parse_path(path)
        if key == "" or key.endswith("/"):
            namespace = key[:-1] if key else None
            return {"items": self.share(self.items(kind, namespace), kind),
                    "metadata": {"resourceVersion": str(self.version)}}
        obj = self.get_object(kind, key)
        if obj is None:
            raise ApiError(404, f"{kind} {key} not found", "NotFound")
        return self.share(obj, kind)


def parse_path(path: str) -> tuple[str, str, bool]:
    """(kind, key, status subresource) of a respool path; key "" for a collection."""
    rest = path[len(GROUP_PATH):]
    parts = [p for p in rest.split("/") if p]
    status = parts[-1:] == ["status"]
    if status:
        parts = parts[:-1]
    if parts[0] == "resourcepools":
        return "pool", parts[1] if len(parts) > 1 else "", status
    if parts[0] == "resourcereservations":
        return "reservation", "", status
    namespace = parts[1]
    if len(parts) == 3:
        return "reservation", f"{namespace}/", status
    return "reservation", f"{namespace}/{parts[3]}", status


def _split(pointer: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]


def _pointer_get(obj: Any, pointer: str) -> Any:
    for part in _split(pointer):
        if isinstance(obj, list):
            index = int(part)
            if index >= len(obj):
                return None
            obj = obj[index]
        elif isinstance(obj, dict):
            if part not in obj:
                return None
            obj = obj[part]
        else:
            return None
    return obj


def _pointer_set(obj: Any, parts: list[str], value: Any) -> Any:
    """`obj` with `value` added at `parts`: a new object sharing everything off the path
    (`obj` itself is never changed)."""
    head, rest = parts[0], parts[1:]
    if isinstance(obj, list):
        copy = list(obj)
        if not rest:
            copy.insert(len(copy) if head == "-" else int(head), value)
        else:
            copy[int(head)] = _pointer_set(copy[int(head)], rest, value)
        return copy
    copy = dict(obj)
    copy[head] = value if not rest else _pointer_set(copy.get(head, {}), rest, value)
    return copy


def _pointer_remove(obj: Any, parts: list[str]) -> Any:
    """`obj` without what is at `parts` (a new object; `obj` is never changed)."""
    head, rest = parts[0], parts[1:]
    if isinstance(obj, list):
        copy = list(obj)
        if not rest:
            copy.pop(int(head))
        else:
            copy[int(head)] = _pointer_remove(copy[int(head)], rest)
        return copy
    copy = dict(obj)
    if not rest:
        copy.pop(head, None)
    else:
        copy[head] = _pointer_remove(copy[head], rest)
    return copy


class SimApi:
    """What one operator incarnation sees of the server: `KubeApi`'s surface, with latency
    and faults drawn from the schedule's seeded generator."""

    def __init__(self, server: SimServer, name: str, rng: random.Random) -> None:
        self.server = server
        self.name = name
        self.rng = rng
        self.alive = True
        self.listed_version: int | None = None
        #: Called as a write is sent (what the sender knew then is judged there).
        self.on_send: Callable[[str, str, list[Any]], None] | None = None
        self.default_namespace = "default"
        self.server_url = "sim://"

    def _latency(self) -> float:
        faults = self.server.faults
        if faults.slow and self.rng.random() < faults.slow:
            return self.rng.uniform(2.0, 12.0)
        return self.rng.choice((0.0, 0.001, 0.005, 0.02, 0.1))

    async def request(self, method: str, path: str, *, params: Any = None,
                      body: Any = None, **_: Any) -> dict[str, Any]:
        assert method == "GET", (method, path)
        await asyncio.sleep(self._latency())
        faults = self.server.faults
        if faults.unavailable and self.rng.random() < faults.unavailable:
            raise ApiError(503, "the server is currently unable to handle the request")
        if self.listed_version is None and path.endswith("/resourcereservations"):
            self.listed_version = self.server.version  # the start-up listing's snapshot
        return self.server.read(path, dict(params or {}))

    async def get(self, path: str) -> dict[str, Any]:
        return await self.request("GET", path)

    async def list_items(self, path: str, **_: Any) -> AsyncIterator[dict[str, Any]]:
        answer = await self.request("GET", path)
        for item in answer.get("items") or []:
            yield item

    async def json_patch(self, path: str, ops: list[Any]) -> dict[str, Any]:
        faults, rng = self.server.faults, self.rng
        roll = rng.random()
        if roll < faults.refuse:
            await asyncio.sleep(self._latency())
            raise ApiError(403, "refused by the simulation", "Forbidden")
        roll -= faults.refuse
        if roll < faults.unavailable:
            await asyncio.sleep(self._latency())
            raise ApiError(503, "the server is currently unable to handle the request")
        roll -= faults.unavailable
        lose_answer = roll < faults.answer_lost
        if self.on_send is not None:
            self.on_send(self.name, path, ops)
        delay = self._latency()
        # The server applies what was sent even if the sender is gone by then.
        applied: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        async def on_the_server() -> None:
            await asyncio.sleep(delay)
            try:
                applied.set_result(self.server.apply_json_patch(path, ops, self.name))
            except ApiError as exc:
                applied.set_exception(exc)
                applied.exception()  # its sender may be gone: nobody else would look

        task = asyncio.get_running_loop().create_task(on_the_server())
        self.server.inflight.add(task)
        task.add_done_callback(self.server.inflight.discard)
        answer = await asyncio.shield(applied)
        await asyncio.sleep(self._latency())
        if lose_answer:
            raise ApiError(0, "connection reset: the answer was lost")
        return answer

    async def post(self, path: str, body: Any) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        self.alive = False


async def sim_watch(api: SimApi, path: str, version: str, **_: Any,
                    ) -> AsyncIterator[dict[str, Any]]:
    """`watch_events` against the simulated server: the reservation events after `version`,
    in order, each possibly late (later ones queue behind it); the stream may end (the client
    reconnects) or answer 410 Gone (the client lists again)."""
    server, rng = api.server, api.rng
    start = int(version or 0)
    if start < server.compacted:
        raise WatchExpired(path)
    kind, key, _status = parse_path(path)
    namespace = key[:-1] if key else None
    position = 0
    while True:
        faults = server.faults
        if faults.watch_break and rng.random() < faults.watch_break:
            return
        if faults.watch_expire and rng.random() < faults.watch_expire:
            server.compacted = max(server.compacted, server.version)
            raise WatchExpired(path)
        while position < len(server.log) and (
                server.log[position].version <= start or server.log[position].kind != kind
                or (namespace is not None
                    and server.log[position].obj["metadata"].get("namespace") != namespace)):
            position += 1
        if position >= len(server.log):
            await server.wait_change()
            continue
        event = server.log[position]
        position += 1
        if faults.watch_late and rng.random() < faults.watch_late:
            await asyncio.sleep(rng.uniform(0.5, 6.0))
        else:
            await asyncio.sleep(rng.choice((0.0, 0.001, 0.01)))
        start = event.version
        yield {"type": event.type, "object": server.share(event.obj)}
