"""The pool actor's commit, rollback and unknown-outcome paths, with a fake port and a virtual
clock (tests/sim's in-process API server; each write's answer scripted by the test:
tests/unit/actor_world.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from actor_world import POOL, SLOW_ANSWER, World, writes_done

from respool.controller.actor import RETRY_AFTER_WRITE_FAILURE, PoolActor
from respool.controller.lifecycle import FINALIZER
from respool.controller.ports import ClusterFacts, PoolPort


def test_a_grant_is_committed_then_announced() -> None:
    async def scenario(world: World) -> None:
        actor = world.actor()
        uid = world.reserve(actor, "a")
        await actor.step()
        assert actor.planner is not None and actor.planner.get(uid) is not None
        assert "Granted" not in world.sink.reasons, "announced before the commit"
        await writes_done(actor)
        assert world.status("a")["phase"] == "Active"
        assert actor.records[uid].phase == "Active"
        assert "Granted" in world.sink.reasons

    World().run(scenario)


def test_a_refused_grant_is_rolled_back_and_retried_later_not_at_once() -> None:
    async def scenario(world: World) -> None:
        actor = world.actor()
        world.api.script = ["refuse"]
        uid = world.reserve(actor, "a")
        await actor.step()
        await writes_done(actor)
        assert actor.planner is not None and actor.planner.get(uid) is None, "not rolled back"
        assert not world.status("a") and actor.records[uid].phase is None
        assert actor.wake_at[uid] == pytest.approx(world.clock.wall() + 30, abs=0.1)
        # The core is free for another meanwhile; the refused one waits its turn.
        other = world.reserve(actor, "b")
        await actor.step()
        await writes_done(actor)
        assert world.status("b")["phase"] == "Active" and actor.planner.get(other) is not None
        world.clock.now += 31
        await actor.step()
        await writes_done(actor)
        assert world.status("a")["phase"] == "Pending"

    World().run(scenario)


def test_an_unknown_outcome_keeps_the_booking_and_repeats_the_same_write() -> None:
    async def scenario(world: World) -> None:
        actor = world.actor()
        world.api.script = ["lost", "unavailable", "lost"]
        uid = world.reserve(actor, "a")
        await actor.step()
        assert actor.planner is not None
        task = actor._inflight[uid]
        while not task.done():
            # Held all along: an applied write whose answer was lost must not be given away.
            assert actor.planner.get(uid) is not None
            await asyncio.sleep(0.1)
        assert world.api.status_writes == 4
        assert world.status("a")["phase"] == "Active"
        assert actor.records[uid].phase == "Active" and actor.planner.get(uid) is not None
        assert world.clock.now > 0.5, "retried without a pause"

    World().run(scenario)


def test_a_lost_answer_then_a_refused_repeat_commits_what_landed() -> None:
    """The first write landed but its answer was lost; the repeat is refused. The object shows
    the grant: it is committed as it stands, not rolled back and granted again under a new
    ID (the simulation's seed 112 found this)."""
    async def scenario(world: World) -> None:
        actor = world.actor()
        world.api.script = ["lost", "refuse"]
        uid = world.reserve(actor, "a")
        await actor.step()
        landed_id = None
        task = actor._inflight[uid]
        while not task.done():
            landed_id = landed_id or world.status("a").get("reservationId")
            await asyncio.sleep(0.1)
        assert world.api.status_writes == 2
        assert landed_id is not None
        assert actor.records[uid].phase == "Active" and actor.planner is not None
        assert actor.planner.get(uid) is not None
        await actor.step()
        await writes_done(actor)
        assert world.status("a")["reservationId"] == landed_id
        assert actor.records[uid].status["reservationId"] == landed_id

    World().run(scenario)


def test_a_write_conflicting_with_a_spec_edit_is_rolled_back_and_decided_again() -> None:
    async def scenario(world: World) -> None:
        actor = world.actor()
        uid = world.reserve(actor, "a")
        # The spec changes between the decision and its write: the write's generation test
        # fails (422), the read-back explains it, the booking is rolled back.
        world.server.update_spec("reservation", "team/a",
                                 lambda spec: spec.update(config={"x": 1}))
        await actor.step()
        await writes_done(actor)
        assert actor.planner is not None and actor.planner.get(uid) is None
        assert actor.records[uid].generation == 2 and uid in actor.dirty
        await actor.step()
        await writes_done(actor)
        status = world.status("a")
        assert status["phase"] == "Active" and status["observedGeneration"] == 2

    World().run(scenario)


def test_a_refused_release_is_restored_exactly() -> None:
    """A decision that frees capacity is written before a later decision may use it, so that
    a refused write can restore exactly what was held."""
    async def scenario(world: World) -> None:
        actor = world.actor()
        holder = world.reserve(actor, "holder", duration="5s")
        await actor.step()
        await writes_done(actor)
        waiter = world.reserve(actor, "waiter", maxRetry=50)
        await actor.step()
        await writes_done(actor)
        assert world.status("waiter")["phase"] == "Pending"
        world.api.script = ["refuse"]  # the expiry's write is refused
        world.clock.now += 6
        await actor.step()
        await writes_done(actor)
        assert actor.planner is not None
        held = actor.planner.get(holder)
        assert held is not None, "the refused release was not restored"
        assert world.status("holder")["phase"] == "Active"
        # The waiter may have the core only after the holder's window (which has ended).
        granted = actor.planner.get(waiter)
        assert granted is None or (held.end is not None and granted.start >= held.end)
        world.clock.now += 31
        await actor.step()
        await writes_done(actor)
        await actor.step()
        await writes_done(actor)
        assert world.status("holder")["phase"] == "Expired"
        assert world.status("waiter")["phase"] == "Active"

    World().run(scenario)


def test_a_lost_answer_then_a_spec_edit_commits_what_landed() -> None:
    """Seed 432: the grant's write landed but its answer was lost; before it was repeated the
    spec changed, so the repeat failed its generation test. That refusal says nothing about
    the first attempt: it landed, so it is committed (not rolled back, which freed the cores
    and granted them again under a new reservationId) and the new spec decided next."""
    async def scenario(world: World) -> None:
        actor = world.actor()
        world.api.script = ["lost"]
        uid = world.reserve(actor, "a")
        await actor.step()
        task = actor._inflight[uid]
        await asyncio.sleep(0.05)  # the first attempt has landed, its answer is lost
        granted = world.status("a")
        assert granted["phase"] == "Active"
        world.server.update_spec("reservation", "team/a",
                                 lambda spec: spec.update(config={"x": 1}))
        while not task.done():
            assert actor.planner is not None and actor.planner.get(uid) is not None
            await asyncio.sleep(0.1)
        assert actor.records[uid].phase == "Active"
        assert actor.records[uid].status["reservationId"] == granted["reservationId"]
        await actor.step()
        await writes_done(actor)
        status = world.status("a")
        assert status["observedGeneration"] == 2
        assert status["reservationId"] == granted["reservationId"]

    World().run(scenario)


def test_a_mode_change_to_shared_is_committed_before_a_neighbour_uses_it() -> None:
    """Seed 405: exclusive -> shared frees the cores for shared neighbours. It was written in
    the background like a grant, a shared neighbour booked on the same cores landed first,
    and etcd held an exclusive and a shared hold on one core."""
    async def scenario(world: World) -> None:
        actor = world.actor()
        start = "2030-03-17T18:00:00Z"  # later than the virtual now: Scheduled
        world.reserve(actor, "a", startTime=start)
        await actor.step()
        await writes_done(actor)
        assert world.status("a")["allocated"]["mode"] == "exclusive"
        world.server.update_spec("reservation", "team/a",
                                 lambda spec: spec.update(mode="shared"))
        actor.reservation_event(world.server.read(
            "/apis/respool.io/v1alpha1/namespaces/team/resourcereservations/a"), deleted=False)
        world.reserve(actor, "b", startTime=start, mode="shared")
        order: list[str] = []
        original = world.api.json_patch

        async def recording(path: str, ops: list[Any]) -> dict[str, Any]:
            if path.endswith("/a/status"):
                await asyncio.sleep(1.0)  # a slow write: anything not waiting for it overtakes
            answer = await original(path, ops)
            if path.endswith("/status"):
                order.append(path.split("/")[-2])
            return answer

        world.api.json_patch = recording  # type: ignore[method-assign]
        await actor.step()
        await writes_done(actor)
        assert world.status("a")["allocated"]["mode"] == "shared"
        assert world.status("b")["phase"] == "Scheduled"
        assert order.index("a") < order.index("b"), order

    World().run(scenario)


def test_a_new_booking_is_not_repeated_once_its_pool_is_deleting() -> None:
    """Seed 467: a grant decided before the pool's deletion was seen kept being repeated
    through an outage and landed after it. Once the pool is known to be deleting, the write
    is not sent again: it is withdrawn (rolled back) and the reservation decided again."""
    async def scenario(world: World) -> None:
        actor = world.actor()
        await actor._handle_pool_deletion()
        world.api.script = ["unavailable"]
        uid = world.reserve(actor, "a")
        await actor.step()
        task = actor._inflight[uid]
        await asyncio.sleep(0.02)  # the first attempt failed; the next is 0.5 s away
        world.server.delete("pool", POOL)
        actor.pool_event(world.server.read(f"/apis/respool.io/v1alpha1/resourcepools/{POOL}"))
        await task
        assert world.api.status_writes == 1, "the booking was sent again"
        assert actor.planner is not None and actor.planner.get(uid) is None
        await actor.step()
        await writes_done(actor)
        status = world.status("a")
        assert status["phase"] == "Pending", status
        assert next(c for c in status["conditions"] if c["type"] == "Stalled")[
            "reason"] == "PoolDeleting"

    World().run(scenario)


def test_a_refused_write_is_retried_even_with_no_planner() -> None:
    """Seed 312: a refused write on a pool that does not exist set a retry 30 s later, but
    the loop slept with no deadline (no planner, so the rollback kicked nothing): never
    retried, the reservation never got a phase."""
    async def scenario(world: World) -> None:
        port = PoolPort(api=world.api, events=world.sink, facts=ClusterFacts(world.api),
                        clock=world.clock.wall, monotonic=world.clock.monotonic)
        actor = PoolActor("missing", port)
        actor.start()
        world.api.script = ["refuse"]
        obj = world.server.create("reservation", "team/a", {
            "metadata": {"name": "a", "namespace": "team"},
            "spec": {"pool": "missing", "duration": "1h"}})
        actor.reservation_event(obj, deleted=False)
        await asyncio.sleep(5)
        assert world.api.status_writes == 1 and not world.status("a")
        await asyncio.sleep(40)
        assert world.status("a")["phase"] == "Pending"
        await actor.stop()

    World().run(scenario)


def test_a_grant_for_a_reservation_deleted_meanwhile_is_rolled_back_and_forgotten() -> None:
    """The write answers 404: the object is gone. Its booking is released at once (the core
    goes to the next one) and the record forgotten, not retried."""
    async def scenario(world: World) -> None:
        actor = world.actor()
        uid = world.reserve(actor, "a")
        await actor.step()
        assert uid in actor._inflight
        world.server.delete("reservation", "team/a")  # no finalizer yet: gone at once
        await writes_done(actor)
        assert actor.planner is not None and actor.planner.get(uid) is None
        assert uid not in actor.records and uid not in actor.wake_at
        other = world.reserve(actor, "b")
        await actor.step()
        await writes_done(actor)
        assert world.status("b")["phase"] == "Active" and actor.planner.get(other) is not None

    World().run(scenario)


def test_an_unexplained_conflict_is_rolled_back_and_retried_soon() -> None:
    """409 with the object unchanged (same generation): nothing explains it, so it is not a
    refusal of what was written - rolled back and retried in 2 s, not in 30."""
    async def scenario(world: World) -> None:
        actor = world.actor()
        world.api.script = ["conflict"]
        uid = world.reserve(actor, "a")
        await actor.step()
        await writes_done(actor)
        assert actor.planner is not None and actor.planner.get(uid) is None
        assert not world.status("a")
        assert actor.wake_at[uid] == pytest.approx(
            world.clock.wall() + RETRY_AFTER_WRITE_FAILURE, abs=0.1)
        world.clock.now += RETRY_AFTER_WRITE_FAILURE + 1
        await actor.step()
        await writes_done(actor)
        assert world.status("a")["phase"] == "Active" and actor.planner.get(uid) is not None

    World().run(scenario)


def test_an_unknown_outcome_that_did_not_land_then_a_refusal_is_rolled_back() -> None:
    """503 (not applied; the actor cannot know that), then the repeat is refused: the object
    is read back, shows no grant, so the booking is rolled back - the core is not kept for a
    grant nobody can see."""
    async def scenario(world: World) -> None:
        actor = world.actor()
        world.api.script = ["unavailable", "refuse"]
        uid = world.reserve(actor, "a")
        await actor.step()
        task = actor._inflight[uid]
        reads = world.api.reads
        await task
        assert world.api.status_writes == 2 and world.api.reads > reads, "not read back"
        assert actor.planner is not None and actor.planner.get(uid) is None
        assert not world.status("a") and actor.records[uid].phase is None
        assert actor.wake_at[uid] == pytest.approx(world.clock.wall() + 30, abs=0.1)

    World().run(scenario)


def test_a_lost_answer_is_judged_only_by_reading_the_object_back() -> None:
    """The grant landed, its answer was lost, the repeat was refused, and the object cannot be
    read for a while: the booking is held and the read repeated until it answers (a guess
    either way is wrong), then what landed is committed."""
    async def scenario(world: World) -> None:
        actor = world.actor()
        world.api.script = ["lost", "refuse"]
        uid = world.reserve(actor, "a")
        await actor.step()
        task = actor._inflight[uid]
        await asyncio.sleep(0.05)  # landed, answer lost; the repeat comes after a pause
        world.api.unreadable = 3
        reads = world.api.reads
        while not task.done():
            assert actor.planner is not None and actor.planner.get(uid) is not None
            await asyncio.sleep(0.1)
        assert world.api.unreadable == 0 and world.api.reads >= reads + 4
        assert actor.records[uid].phase == "Active"
        assert actor.records[uid].status["reservationId"] == world.status("a")["reservationId"]

    World().run(scenario)


def test_a_write_that_fails_without_an_answer_is_rolled_back_and_retried_soon() -> None:
    """An error that is no API answer at all (a bug, a client error): rolled back, retried in
    2 s; the pool goes on."""
    async def scenario(world: World) -> None:
        actor = world.actor()
        world.api.script = ["crash"]
        uid = world.reserve(actor, "a")
        await actor.step()
        await writes_done(actor)
        assert actor.planner is not None and actor.planner.get(uid) is None
        assert actor.wake_at[uid] == pytest.approx(
            world.clock.wall() + RETRY_AFTER_WRITE_FAILURE, abs=0.1)
        world.clock.now += RETRY_AFTER_WRITE_FAILURE + 1
        await actor.step()
        await writes_done(actor)
        assert world.status("a")["phase"] == "Active"

    World().run(scenario)


def test_a_refused_extension_keeps_the_grant_as_it_was() -> None:
    """Raising the end of an Active grant is written in the background; refused, the booking
    is restored with its old end (the same cores, the same ID), and the edit decided again
    later."""
    async def scenario(world: World) -> None:
        actor = world.actor()
        uid = world.reserve(actor, "a", duration="1h")
        await actor.step()
        await writes_done(actor)
        granted = world.status("a")
        assert actor.planner is not None
        before = actor.planner.get(uid)
        assert before is not None and granted["phase"] == "Active"
        world.server.update_spec("reservation", "team/a",
                                 lambda spec: spec.update(duration="2h"))
        actor.reservation_event(world.server.read(
            "/apis/respool.io/v1alpha1/namespaces/team/resourcereservations/a"), deleted=False)
        world.api.script = ["refuse"]
        await actor.step()
        assert actor.planner.get(uid).end == before.end + 3600, "not extended"  # type: ignore[union-attr]
        await writes_done(actor)
        after = actor.planner.get(uid)
        assert after is not None and (after.start, after.end, after.R.dumps()) == (
            before.start, before.end, before.R.dumps())
        assert world.status("a") == granted
        world.clock.now += 31
        await actor.step()
        await writes_done(actor)
        status = world.status("a")
        assert status["observedGeneration"] == 2
        assert status["reservationId"] == granted["reservationId"]
        assert actor.planner.get(uid).end == before.end + 3600  # type: ignore[union-attr]

    World().run(scenario)


def test_a_grant_decided_before_its_pool_was_seen_deleting_is_never_sent() -> None:
    """Seeds 300 and 978: a grant decided just before the pool's deletion was known, and not
    yet sent, would keep the pool alive. It is withdrawn (rolled back, nothing written) and
    the reservation decided again: Pending, PoolDeleting."""
    async def scenario(world: World) -> None:
        actor = world.actor()
        await actor._handle_pool_deletion()
        uid = world.reserve(actor, "a")
        await actor.step()
        assert uid in actor._inflight  # decided; its write has not started yet
        world.server.delete("pool", POOL)  # our finalizer holds it: a deletionTimestamp
        actor.pool_event(world.pool())
        await writes_done(actor)
        assert world.api.status_writes == 0, "the grant was sent"
        assert actor.planner is not None and actor.planner.get(uid) is None
        assert uid in actor.dirty
        await actor.step()
        await writes_done(actor)
        status = world.status("a")
        assert status["phase"] == "Pending", status
        assert next(c for c in status["conditions"] if c["type"] == "Stalled")[
            "reason"] == "PoolDeleting"

    World().run(scenario)


RSV_PATH = "/apis/respool.io/v1alpha1/namespaces/team/resourcereservations/a"


def test_a_foreign_status_seen_while_writing_is_overwritten_once_answered() -> None:
    """A deposed leader's late write lands while our grant's write is out (its answer is
    slow): the watch event is judged once ours is answered - newer than our answer and not
    what we wrote, so ours is written again."""
    async def scenario(world: World) -> None:
        actor = world.actor()
        world.api.script = ["slow"]
        uid = world.reserve(actor, "a")
        await actor.step()
        task = actor._inflight[uid]
        await asyncio.sleep(1)  # ours has landed; its answer is on its way
        ours = world.status("a")
        assert ours["phase"] == "Active"
        late = {**ours, "reservationId": "rack-someone-else-1"}
        world.server.apply_json_patch(f"{RSV_PATH}/status",
                                      [{"op": "add", "path": "/status", "value": late}], "old")
        actor.reservation_event(world.server.read(RSV_PATH), deleted=False)
        assert world.api.status_writes == 1
        await task
        assert uid in actor.dirty and actor.records[uid].foreign_status
        await actor.step()
        await writes_done(actor)
        assert world.api.status_writes == 2
        assert world.status("a")["reservationId"] == ours["reservationId"]

    World().run(scenario)


def test_our_own_write_seen_while_writing_is_not_written_again() -> None:
    """The watch event of our own write, seen before the write's answer: nothing foreign."""
    async def scenario(world: World) -> None:
        actor = world.actor()
        world.api.script = ["slow"]
        uid = world.reserve(actor, "a")
        await actor.step()
        task = actor._inflight[uid]
        await asyncio.sleep(1)
        actor.reservation_event(world.server.read(RSV_PATH), deleted=False)
        await task
        assert not actor.records[uid].foreign_status
        await actor.step()
        await writes_done(actor)
        assert world.api.status_writes == 1

    World().run(scenario)


def test_a_late_status_answer_does_not_hide_our_finalizer_from_the_deletion() -> None:
    """Simulation seed 2165: a status write's answer arrived after the watch had shown our
    finalizer added (by a retry of the finalizer keeper); the answer, older, said there was no
    finalizer, the record believed it, and once the reservation was deleted nobody removed the
    finalizer: it stayed undeletable. An older body no longer overrides what a newer one said,
    and a deleted reservation's finalizer is removed even if the record says it has none."""
    async def scenario(world: World) -> None:
        actor = world.actor()
        actor.start()
        world.api.scripts["reservation"] = ["unavailable"]  # the first finalizer add fails
        world.reserve(actor, "a")
        await asyncio.sleep(0.5)
        assert world.status("a")["phase"] == "Active"
        assert FINALIZER not in world.server.get_object("reservation", "team/a")["metadata"].get(
            "finalizers", [])
        # A spec edit: its status write lands at once but is answered late; meanwhile the
        # keeper's retry adds the finalizer, and the watch shows it.
        world.api.script = ["slow"]
        world.server.update_spec("reservation", "team/a",
                                 lambda spec: spec.update(config={"x": 1}))
        actor.reservation_event(world.server.get_object("reservation", "team/a"), deleted=False)
        await asyncio.sleep(3)
        current = world.server.get_object("reservation", "team/a")
        assert FINALIZER in current["metadata"]["finalizers"]
        actor.reservation_event(current, deleted=False)
        # Deleted while that answer is still out: its release waits for the answer.
        world.server.delete("reservation", "team/a")  # held by our finalizer
        actor.reservation_event(world.server.get_object("reservation", "team/a"), deleted=False)
        await asyncio.sleep(SLOW_ANSWER + 3)
        assert world.server.get_object("reservation", "team/a") is None, \
            "the deleted reservation kept our finalizer"
        await actor.stop()

    World().run(scenario)
