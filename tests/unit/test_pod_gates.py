"""The gate lifter on its own: lifts only when the reservation is Active, from the listing
(restart), after a conflict (read again), and not at all for other reservations."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Mapping
from typing import Any

from respool.controller.admission import SCHEDULING_GATE, ReservationIndex
from respool.controller.kubeapi import ApiError
from respool.controller.pod_gates import GateLifter


def gated_pod(name: str, reservation: str, version: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "team", "resourceVersion": str(version),
                         "labels": {"respool.io/reservation": reservation}},
            "spec": {"schedulingGates": [{"name": SCHEDULING_GATE}]}}


def reservation(name: str, phase: str) -> dict[str, Any]:
    return {"metadata": {"uid": f"uid-{name}", "namespace": "team", "name": name},
            "spec": {"pool": "p"},
            "status": {"phase": phase, "allocated": {"mode": "exclusive", "nodelist": "n0"}}}


class FakePods:
    def __init__(self, *pods: dict[str, Any], listed: list[dict[str, Any]] | None = None) -> None:
        self.pods = {p["metadata"]["name"]: copy.deepcopy(p) for p in pods}
        self.listed = listed  # what a listing answers (default: the Pods as they are)
        self.patches: list[str] = []

    async def request(self, method: str, path: str, *,
                      params: Mapping[str, str] | None = None) -> dict[str, Any]:
        items = self.listed if self.listed is not None else list(self.pods.values())
        return {"metadata": {"resourceVersion": "1"}, "items": copy.deepcopy(items)}

    async def get(self, path: str) -> dict[str, Any]:
        return copy.deepcopy(self.pods[path.rsplit("/", 1)[1]])

    async def json_patch(self, path: str, ops: list[Any]) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        self.patches.append(name)
        pod = self.pods[name]
        if ops[0]["value"] != pod["metadata"]["resourceVersion"]:
            raise ApiError(422, "the test operation failed", "Invalid")
        for op in ops[1:]:
            key = op["path"].rsplit("/", 1)[1]
            if op["op"] == "remove":
                pod["spec"].pop(key, None)
            else:
                pod["spec"][key] = op["value"]
        pod["metadata"]["resourceVersion"] = str(int(pod["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(pod)


async def quiet_watch(*_: Any, **__: Any) -> AsyncIterator[dict[str, Any]]:
    await asyncio.Event().wait()
    yield {}


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def test_gates_are_lifted_when_and_only_when_the_reservation_is_active() -> None:
    async def scenario() -> None:
        api = FakePods(gated_pod("a", "later"), gated_pod("b", "other"))
        index = ReservationIndex()
        lifter = GateLifter(api, index, watch=quiet_watch)
        for raw in (reservation("later", "Scheduled"), reservation("other", "Scheduled")):
            index.on_reservation(None, raw)
            lifter.on_reservation(None, raw)
        lifter.start()
        await settle()
        assert api.patches == []  # listed, gated, nothing Active yet
        active = reservation("later", "Active")
        index.on_reservation("MODIFIED", active)
        lifter.on_reservation("MODIFIED", active)
        await settle()
        assert api.patches == ["a"] and "schedulingGates" not in api.pods["a"]["spec"]
        terms = api.pods["a"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                           "values": ["n0"]}]}]
        assert api.pods["b"]["spec"]["schedulingGates"]  # another reservation's Pod: kept
        assert lifter.lifted == 1 and len(lifter.latencies) == 1
        await lifter.stop()

    asyncio.run(scenario())


def test_an_already_active_reservation_is_lifted_from_the_listing_and_after_a_conflict() -> None:
    async def scenario() -> None:
        # The listing is older than the Pod (somebody wrote it since): the guarded patch is
        # refused (422), the Pod read again, and the second patch lifts the gate.
        api = FakePods(gated_pod("a", "now", version=5), listed=[gated_pod("a", "now", 4)])
        index = ReservationIndex()
        lifter = GateLifter(api, index, watch=quiet_watch)
        index.on_reservation(None, reservation("now", "Active"))
        lifter.on_reservation(None, reservation("now", "Active"))
        lifter.start()
        await settle()
        assert api.patches == ["a", "a"] and "schedulingGates" not in api.pods["a"]["spec"]
        assert not lifter.gated
        await lifter.stop()

    asyncio.run(scenario())
