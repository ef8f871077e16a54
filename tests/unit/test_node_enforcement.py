"""The node-enforcement reconciler on its own: what it wants per Node, the patches it sends,
how it treats others' taints and labels, conflicts, and convergence from listed state."""

from __future__ import annotations

import asyncio
import copy
import functools
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import pytest

from respool.controller.kubeapi import ApiError
from respool.controller.node_enforcement import (
    RESERVATION_LABEL,
    RESERVED_TAINT_KEY,
    NodeEnforcer,
    hold_of,
    node_patch,
    reservation_key,
)


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """A synchronous test that runs the coroutine on its own event loop."""

    @functools.wraps(test)
    def sync(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return sync


OTHER_TAINT = {"key": "gpu.example/broken", "value": "yes", "effect": "NoExecute"}


def node(name: str, version: int = 1, *, taints: list[dict[str, Any]] | None = None,
         labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": str(version), "labels": labels or {}},
            "spec": {"taints": taints} if taints is not None else {}}


def reservation(name: str, *, phase: str = "Active", mode: str = "exclusive",
                nodelist: str = "n[0-1]", pool: str = "p", ns: str = "team") -> dict[str, Any]:
    return {"metadata": {"uid": f"uid-{ns}-{name}", "namespace": ns, "name": name},
            "spec": {"pool": pool, "mode": mode},
            "status": {"phase": phase, "allocated": {"mode": mode, "nodelist": nodelist}}}


def pool(name: str = "p", enforcement: str = "Taint") -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"enforcement": enforcement}}


class FakeNodes:
    """Nodes as the API server keeps them: merge patches with a resourceVersion precondition."""

    def __init__(self, *nodes: dict[str, Any]) -> None:
        self.nodes = {n["metadata"]["name"]: copy.deepcopy(n) for n in nodes}
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.fail_next: list[ApiError] = []

    async def get(self, path: str) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        if name not in self.nodes:
            raise ApiError(404, "not found", "NotFound")
        return copy.deepcopy(self.nodes[name])

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        self.patches.append((name, copy.deepcopy(dict(patch))))
        if self.fail_next:
            raise self.fail_next.pop(0)
        if name not in self.nodes:
            raise ApiError(404, "not found", "NotFound")
        current = self.nodes[name]
        metadata = current["metadata"]
        if patch["metadata"].get("resourceVersion") != metadata["resourceVersion"]:
            raise ApiError(409, "the object has been modified", "Conflict")
        for key, value in (patch["metadata"].get("labels") or {}).items():
            if value is None:
                metadata["labels"].pop(key, None)
            else:
                metadata["labels"][key] = value
        if "spec" in patch:
            if patch["spec"]["taints"] is None:
                current["spec"].pop("taints", None)
            else:
                current["spec"]["taints"] = patch["spec"]["taints"]
        metadata["resourceVersion"] = str(int(metadata["resourceVersion"]) + 1)
        return copy.deepcopy(current)

    def ours(self, name: str) -> tuple[list[dict[str, Any]], str | None]:
        current = self.nodes[name]
        taints = [t for t in current["spec"].get("taints") or [] if t["key"] == RESERVED_TAINT_KEY]
        return taints, current["metadata"]["labels"].get(RESERVATION_LABEL)


async def settle(enforcer: NodeEnforcer) -> None:
    for _ in range(200):
        await asyncio.sleep(0)
        if enforcer.idle() and not enforcer._wake.is_set():
            await asyncio.sleep(0)
            if enforcer.idle():
                return
    raise AssertionError("the enforcer did not settle")


def test_reservation_key_fits_a_label_value() -> None:
    assert reservation_key("team-a", "train") == "team-a.train"
    long = reservation_key("n" * 63, "r" * 200)
    assert len(long) <= 63 and long[-1].isalnum()
    assert long != reservation_key("n" * 63, "r" * 199)


def test_only_active_exclusive_reservations_hold_nodes() -> None:
    hold = hold_of(reservation("a"))
    assert hold is not None and hold.hosts == {"n0", "n1"} and hold.key == "team.a"
    assert hold_of(reservation("a", phase="Scheduled")) is None
    assert hold_of(reservation("a", phase="Expired")) is None
    assert hold_of(reservation("a", mode="shared")) is None


def test_patch_keeps_everybody_elses_taints_and_labels() -> None:
    before = node("n0", 7, taints=[OTHER_TAINT], labels={"team": "x"})
    patch = node_patch(before, "team.a")
    assert patch == {
        "metadata": {"resourceVersion": "7", "labels": {RESERVATION_LABEL: "team.a"}},
        "spec": {"taints": [OTHER_TAINT, {"key": RESERVED_TAINT_KEY, "value": "team.a",
                                          "effect": "NoSchedule"}]},
    }
    after = node("n0", 8, taints=patch["spec"]["taints"],
                 labels={"team": "x", RESERVATION_LABEL: "team.a"})
    assert node_patch(after, "team.a") is None
    removal = node_patch(after, None)
    assert removal == {"metadata": {"resourceVersion": "8", "labels": {RESERVATION_LABEL: None}},
                       "spec": {"taints": [OTHER_TAINT]}}
    # Nothing of ours and nothing wanted: no write at all (a Node of no enforcing pool).
    assert node_patch(node("n1", taints=[OTHER_TAINT], labels={"team": "x"}), None) is None
    # Only our taint: removing it removes the field.
    only = node_patch(node("n2", taints=[{"key": RESERVED_TAINT_KEY, "value": "t.a",
                                           "effect": "NoSchedule"}]), None)
    assert only is not None and only["spec"] == {"taints": None}


@run
async def test_converges_on_grant_and_release_and_leaves_other_pools_alone() -> None:
    api = FakeNodes(node("n0", taints=[OTHER_TAINT], labels={"team": "x"}), node("n1"), node("m0"))
    enforcer = NodeEnforcer(api)
    for raw in api.nodes.values():
        enforcer.on_node(None, copy.deepcopy(raw))
    enforcer.on_pool(None, pool("p"))
    enforcer.on_pool(None, pool("q", "None"))
    enforcer.start()
    await settle(enforcer)
    assert api.patches == []  # nothing held: nothing written

    enforcer.on_reservation("MODIFIED", reservation("a"))
    enforcer.on_reservation("MODIFIED", reservation("b", pool="q", nodelist="m0"))
    await settle(enforcer)
    wanted = [{"key": RESERVED_TAINT_KEY, "value": "team.a", "effect": "NoSchedule"}]
    assert api.ours("n0") == (wanted, "team.a") and api.ours("n1") == (wanted, "team.a")
    assert api.nodes["n0"]["spec"]["taints"][0] == OTHER_TAINT
    assert api.nodes["n0"]["metadata"]["labels"]["team"] == "x"
    assert api.ours("m0") == ([], None)  # pool q does not enforce

    enforcer.on_reservation("MODIFIED", reservation("a", phase="Expired"))
    await settle(enforcer)
    assert api.ours("n0") == ([], None) and api.ours("n1") == ([], None)
    assert api.nodes["n0"]["spec"]["taints"] == [OTHER_TAINT]
    await enforcer.stop()


@run
async def test_restart_removes_what_nothing_holds_and_restores_what_was_removed() -> None:
    stale = {"key": RESERVED_TAINT_KEY, "value": "team.gone", "effect": "NoSchedule"}
    api = FakeNodes(node("n0", taints=[stale, OTHER_TAINT], labels={RESERVATION_LABEL: "team.gone"}),
                    node("n1"))
    enforcer = NodeEnforcer(api)
    enforcer.on_pool(None, pool("p"))
    enforcer.on_reservation(None, reservation("a", nodelist="n1"))
    for raw in api.nodes.values():
        enforcer.on_node(None, copy.deepcopy(raw))
    enforcer.start()
    await settle(enforcer)
    assert api.ours("n0") == ([], None) and api.nodes["n0"]["spec"]["taints"] == [OTHER_TAINT]
    assert api.ours("n1")[1] == "team.a"
    # Somebody strips the taint: the watch event brings it back.
    api.nodes["n1"]["spec"]["taints"] = []
    api.nodes["n1"]["metadata"]["resourceVersion"] = "99"
    enforcer.on_node("MODIFIED", copy.deepcopy(api.nodes["n1"]))
    await settle(enforcer)
    assert len(api.ours("n1")[0]) == 1
    await enforcer.stop()


@run
async def test_a_conflict_is_read_again_and_nothing_of_the_other_writer_is_lost() -> None:
    api = FakeNodes(node("n0"))
    enforcer = NodeEnforcer(api)
    enforcer.on_pool(None, pool("p"))
    enforcer.on_node(None, copy.deepcopy(api.nodes["n0"]))  # version 1 as listed
    # Meanwhile somebody else adds a taint (version 2): our first patch is refused.
    api.nodes["n0"]["spec"]["taints"] = [OTHER_TAINT]
    api.nodes["n0"]["metadata"]["resourceVersion"] = "2"
    enforcer.on_reservation(None, reservation("a", nodelist="n0"))
    enforcer.start()
    await settle(enforcer)
    assert [name for name, _ in api.patches] == ["n0", "n0"]
    assert api.nodes["n0"]["spec"]["taints"][0] == OTHER_TAINT
    assert api.ours("n0")[1] == "team.a"
    await enforcer.stop()


@run
async def test_several_exclusive_holders_of_one_node_take_the_first_key() -> None:
    api = FakeNodes(node("n0"))
    enforcer = NodeEnforcer(api)
    enforcer.on_pool(None, pool("p"))
    enforcer.on_node(None, copy.deepcopy(api.nodes["n0"]))
    enforcer.on_reservation(None, reservation("zeta", nodelist="n0"))
    enforcer.on_reservation(None, reservation("alpha", nodelist="n0"))
    enforcer.start()
    await settle(enforcer)
    assert api.ours("n0")[1] == "team.alpha"
    enforcer.on_reservation("DELETED", reservation("alpha", nodelist="n0"))
    await settle(enforcer)
    assert api.ours("n0")[1] == "team.zeta"
    await enforcer.stop()


@run
async def test_pool_switching_enforcement_off_removes_the_taints() -> None:
    api = FakeNodes(node("n0"))
    enforcer = NodeEnforcer(api)
    enforcer.on_pool(None, pool("p"))
    enforcer.on_node(None, copy.deepcopy(api.nodes["n0"]))
    enforcer.on_reservation(None, reservation("a", nodelist="n0"))
    enforcer.start()
    await settle(enforcer)
    assert api.ours("n0")[1] == "team.a"
    enforcer.on_pool("MODIFIED", pool("p", "None"))
    await settle(enforcer)
    assert api.ours("n0") == ([], None)
    await enforcer.stop()


@pytest.mark.parametrize("status", [500, 0])
@run
async def test_a_failed_write_is_retried_later(status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("respool.controller.node_enforcement.RETRY_FIRST", 0.01)
    api = FakeNodes(node("n0"))
    api.fail_next.append(ApiError(status, "server error"))
    enforcer = NodeEnforcer(api)
    enforcer.on_pool(None, pool("p"))
    enforcer.on_node(None, copy.deepcopy(api.nodes["n0"]))
    enforcer.on_reservation(None, reservation("a", nodelist="n0"))
    enforcer.start()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if api.ours("n0")[1] == "team.a":
            break
    assert api.ours("n0")[1] == "team.a" and len(api.patches) == 2
    await enforcer.stop()
