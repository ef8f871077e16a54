"""A pool actor's world for unit tests: tests/sim's in-process API server on a virtual clock,
behind a fake port whose writes' fates the test scripts.

Not a test module (no `test_` prefix): the actor's unit tests import it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

from respool.controller.actor import PoolActor
from respool.controller.events import InvolvedObject
from respool.controller.kubeapi import ApiError
from respool.controller.lifecycle import FINALIZER
from respool.controller.ports import ClusterFacts, PoolPort
from sim import vloop
from sim.server import SimServer

POOL = "rack"
POOL_PATH = f"/apis/respool.io/v1alpha1/resourcepools/{POOL}"
R = {"version": 1, "execution": {"R_lite": [{"rank": "0", "children": {"core": "0"}}],
                                  "nodelist": ["n0"]}}
#: How long a "slow" write's answer takes (longer than any of the actor's retry pauses).
SLOW_ANSWER = 5.0


class Sink:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def post(self, obj: InvolvedObject, type_: str, reason: str, message: str) -> None:
        self.reasons.append(reason)


def write_kind(path: str) -> str:
    """"reservation-status", "reservation", "pool-status" or "pool" (a metadata patch)."""
    kind = "pool" if "/resourcepools/" in path else "reservation"
    return f"{kind}-status" if path.endswith("/status") else kind


class ScriptedApi:
    """The simulated server, with the fates of the next writes of each kind (`write_kind`)
    chosen by the test: "ok", "refuse" (403, not applied), "conflict" (409, not applied),
    "lost" (applied, answer lost: status 0), "unavailable" (503, not applied), "slow"
    (applied, answered `SLOW_ANSWER` seconds later), "crash" (not applied; an error that is no
    API answer at all). `script` is the reservation status writes' list. The next
    `unreadable` reads answer 503."""

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.scripts: dict[str, list[str]] = {}
        self.status_writes = 0
        self.unreadable = 0
        self.reads = 0
        self.writes: list[tuple[str, str]] = []  # (kind, fate) of every write, in order

    @property
    def script(self) -> list[str]:
        return self.scripts.setdefault("reservation-status", [])

    @script.setter
    def script(self, fates: list[str]) -> None:
        self.scripts["reservation-status"] = fates

    async def get(self, path: str) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        self.reads += 1
        if self.unreadable:
            self.unreadable -= 1
            raise ApiError(503, "unavailable")
        return self.server.read(path)

    async def request(self, method: str, path: str, *, params: Any = None,
                      **_: Any) -> dict[str, Any]:
        return self.server.read(path, dict(params or {}))

    async def json_patch(self, path: str, ops: list[Any]) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        kind = write_kind(path)
        fates = self.scripts.get(kind)
        fate = fates.pop(0) if fates else "ok"
        self.writes.append((kind, fate))
        if kind == "reservation-status":
            self.status_writes += 1
        if fate == "refuse":
            raise ApiError(403, "forbidden", "Forbidden")
        if fate == "conflict":
            raise ApiError(409, "the object has been modified", "Conflict")
        if fate == "unavailable":
            raise ApiError(503, "unavailable")
        if fate == "crash":
            raise RuntimeError("no answer of any kind")
        answer = self.server.apply_json_patch(path, ops, "op0")
        if fate == "lost":
            raise ApiError(0, "connection reset")
        if fate == "slow":
            await asyncio.sleep(SLOW_ANSWER)
        return answer


class World:
    """One pool `rack` (one rank, one core), with our finalizer on it unless `guarded` is
    False, and reservations in namespace `team`."""

    def __init__(self, guarded: bool = True) -> None:
        self.clock = vloop.VirtualClock()
        self.server = SimServer(clock=self.clock.wall, rng=random.Random(0))
        self.api = ScriptedApi(self.server)
        self.sink = Sink()
        metadata: dict[str, Any] = {"name": POOL}
        if guarded:
            metadata["finalizers"] = [FINALIZER]
        self.server.create("pool", POOL, {"metadata": metadata, "spec": {"resources": R}})

    def run(self, scenario: Callable[[World], Coroutine[Any, Any, None]]) -> None:
        vloop.run(self.clock, scenario(self))

    def port(self) -> PoolPort:
        return PoolPort(api=self.api, events=self.sink, facts=ClusterFacts(self.api),
                        clock=self.clock.wall, monotonic=self.clock.monotonic)

    def actor(self) -> PoolActor:
        actor = PoolActor(POOL, self.port())
        actor.pool_event(self.pool())
        actor.restore()
        return actor

    def pool(self) -> dict[str, Any]:
        return self.server.read(POOL_PATH)

    def reserve(self, actor: PoolActor, name: str, **spec: Any) -> str:
        obj = self.server.create("reservation", f"team/{name}", {
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"pool": POOL, "duration": "1h", "nextAvailable": False, **spec}})
        actor.reservation_event(obj, deleted=False)
        return str(obj["metadata"]["uid"])

    def status(self, name: str) -> dict[str, Any]:
        obj = self.server.get_object("reservation", f"team/{name}")
        assert obj is not None
        return dict(obj.get("status") or {})


async def writes_done(actor: PoolActor) -> None:
    while actor._inflight:
        await asyncio.gather(*list(actor._inflight.values()))
