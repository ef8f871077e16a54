"""Start-up pruning of pools, on the real API server.

After kopf's first listing of pools, the controller drops pools it knows that the listing did
not hold (deleted between the controller's own listing and kopf's: no DELETED event would
ever say so). A pool created *after* kopf's listing is also missing from it, and the
controller may already know it (a reservation's actor looked it up): forgetting that live
pool made its fresh Active holders `Failed/ResourcesLost` (seen once in CI, a reservation
created right after the operator started). So the actor asks the API server first.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest


def test_prune_forgets_only_pools_the_api_server_no_longer_has(
        rk: Any, crds: list[str], control_plane: Any, _operator_slot: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf

    from respool.controller.controller import Controller
    from respool.controller.kubeapi import KubeApi

    _operator_slot.stop_current()  # this test's controller is the only one deciding
    live = f"prune-live-{secrets.token_hex(3)}"
    gone = f"prune-gone-{secrets.token_hex(3)}"
    for name in (live, gone):
        rk.create_pool(name, {"resources": {"version": 1, "execution": {
            "R_lite": [{"rank": "0", "children": {"core": "0-1"}}], "nodelist": [f"{name}-n0"]}}})
    live_raw, gone_raw = rk.pool(live), rk.pool(gone)
    rk.delete_pool(gone)
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None

    async def scenario() -> tuple[Any, Any]:
        ctl = Controller(KubeApi(info))
        try:
            live_actor, gone_actor = ctl._actor(live), ctl._actor(gone)
            live_actor.pool_event(live_raw)
            gone_actor.pool_event(gone_raw)
            ctl.prune([])  # kopf's first listing held neither
            await live_actor.step()
            await gone_actor.step()
            return live_actor.pool_raw, gone_actor.pool_raw
        finally:
            await ctl.stop()

    try:
        live_after, gone_after = asyncio.run(scenario())
        assert live_after is not None, "a pool the API server still has was forgotten"
        assert gone_after is None, "a deleted pool was kept"
    finally:
        rk.delete_pool(live)
