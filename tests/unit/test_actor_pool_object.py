"""The pool actor's own writes to its pool object (our finalizer, the debounced status), with
a fake port and a virtual clock (tests/unit/actor_world.py)."""

from __future__ import annotations

import asyncio

from actor_world import SLOW_ANSWER, World

from respool.controller.actor import RETRY_AFTER_WRITE_FAILURE
from respool.controller.lifecycle import FINALIZER


def test_a_failed_pool_finalizer_is_retried_while_a_slow_status_write_is_out() -> None:
    """Seed 2757: adding our finalizer to the pool failed (503) and its retry was a kick
    2 s later; the pool's status write, made in the same pass, took longer than that to be
    answered. The kick found that pass still running, so no new pass began - and once the
    write was answered nothing asked for one. The pool never got its finalizer, and nothing
    was ever decided on it (a reservation never got a phase)."""
    assert SLOW_ANSWER > RETRY_AFTER_WRITE_FAILURE

    async def scenario(world: World) -> None:
        world.api.scripts["pool"] = ["unavailable"]
        world.api.scripts["pool-status"] = ["slow"]
        actor = world.actor()
        world.reserve(actor, "a")
        actor.start()
        await asyncio.sleep(SLOW_ANSWER + 10)
        assert world.api.writes[:2] == [("pool", "unavailable"), ("pool-status", "slow")]
        assert FINALIZER in world.pool()["metadata"].get("finalizers", []), \
            "the pool's finalizer was never added again"
        assert world.status("a").get("phase") == "Active"
        await actor.stop()

    World(guarded=False).run(scenario)


def test_a_failed_pool_finalizer_removal_is_retried_while_a_slow_status_write_is_out() -> None:
    """The same lost retry on the way out: the last holder of a deleted pool goes, the
    finalizer's removal fails, and the status write (its counts changed) is slow."""
    async def scenario(world: World) -> None:
        actor = world.actor()
        actor.start()
        uid = world.reserve(actor, "a")
        await asyncio.sleep(3)
        assert world.status("a")["phase"] == "Active"
        world.server.delete("pool", "rack")  # blocked by our finalizer while a holds it
        actor.pool_event(world.pool())
        await asyncio.sleep(3)
        world.api.scripts["pool"] = ["unavailable"]
        world.api.scripts["pool-status"] = ["slow"]
        # a's DELETED event (how its own finalizer went is beside the point here): the pool
        # is held by nothing, and its status counts change.
        actor.forget(uid)
        await asyncio.sleep(SLOW_ANSWER + 10)
        assert ("pool", "unavailable") in world.api.writes
        assert ("pool-status", "slow") in world.api.writes
        assert world.server.get_object("pool", "rack") is None, \
            "the deleted pool's finalizer was never removed"
        await actor.stop()

    World().run(scenario)
