"""One seeded schedule of the deterministic simulation, and the invariants checked in it.

A schedule runs the real `Controller` (its start-up listing and restore, its reservation
watch loop, the pool actors, `lifecycle`, the engine) against `SimServer` on a virtual clock.
From the seed it draws a workload and faults (`ACTIONS`): users create, edit and delete
reservations; administrators grow a pool's R or remove any rank from it, give a pool a spec the
operator cannot use and fix it, edit its policy (claim timeout, default and maximum window,
unclaimed hold) and its namespaceSelector (matchLabels, matchExpressions with In, NotIn, Exists,
DoesNotExist), delete and re-create pools; namespaces are relabelled; Nodes flap between Ready
and NotReady, are deleted and come back (pools with trackNodes take their ranks down); the
network delays, reorders (across streams),
bursts and drops watch events, refuses writes, answers 503 or loses answers of applied writes;
the operator crashes and restarts, or hands over to a new leader while its last writes are
still on their way. Then the faults stop and the schedule runs until it is quiet.

After every write the server applies, the invariants are checked (`Violation`): no core held
twice (exclusive against anything in overlapping time), nothing granted lost (an Active
reservation only ever becomes Expired at its end or after an edit - or Failed/ResourcesLost
when a rank it held was removed from the pool's R during its life, the one loss DESIGN.md
allows), no new hold on a pool that is deleted or that the operator knew was being deleted,
reservation IDs unique across objects and stable while Active; at the end the eventual ones
(every reservation has a phase for its current generation, no finalizer left behind, the
planner holds exactly what the server says). `run_schedule(seed)` returns the trace (every applied write, in order).
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
import logging
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from respool.api import format_time, parse_time
from respool.controller.controller import Controller
from respool.controller.events import InvolvedObject
from respool.pool import Hostlist, IDset
from sim import vloop
from sim.server import Faults, SimApi, SimServer, Write, _copy, parse_path, sim_watch

HOLDING = ("Active", "Scheduled")
NAMESPACES = ("team-a", "team-b")
NODES = tuple(f"{pool}-h{n}" for pool in ("p0", "p1") for n in range(4))
QUIET_SECONDS = 150.0

#: What users, administrators and the cluster do, with how often (relative weights).
ACTIONS: tuple[tuple[str, float], ...] = (
    ("create_reservation", 31),
    ("delete_reservation", 11),
    ("edit_reservation", 11),
    ("grow_pool", 5),
    ("shrink_pool", 5),
    ("break_pool", 3),
    ("delete_or_create_pool", 4),
    ("edit_pool_policy", 3),
    ("edit_pool_selector", 3),
    ("relabel_namespace", 5),
    ("flap_node", 5),
    ("delete_or_create_node", 3),
    ("restart_operator", 6),
    ("idle", 5),
)
CUMULATIVE_WEIGHTS = list(itertools.accumulate(weight for _name, weight in ACTIONS))
TOTAL_WEIGHT = CUMULATIVE_WEIGHTS[-1]

#: Pool policies an edit switches between (each one the API server admits: the default
#: window is never longer than maxDuration).
POLICIES: tuple[dict[str, str], ...] = (
    {"claimTimeout": "20s"},
    {"claimTimeout": "5s"},
    {"claimTimeout": "20s", "maxDuration": "30s", "defaultDuration": "20s"},
    {"claimTimeout": "1m", "defaultDuration": "10s"},
    {"claimTimeout": "20s", "maxUnclaimedHold": "30s"},
)

#: namespaceSelectors a pool is created with or edited to (None: no selector).
SELECTORS: tuple[dict[str, Any] | None, ...] = (
    None,
    {"matchLabels": {"respool": "yes"}},
    {"matchExpressions": [{"key": "respool", "operator": "In", "values": ["yes"]}]},
    {"matchExpressions": [{"key": "respool", "operator": "NotIn", "values": ["no"]}]},
    {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
    {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]},
    {"matchLabels": {"respool": "yes"},
     "matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold", "silver"]}]},
)


def _node(name: str, ready: str = "True") -> dict[str, Any]:
    return {"metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}


class Violation(AssertionError):
    pass


class _Sink:
    def __init__(self) -> None:
        self.count = 0

    def post(self, obj: InvolvedObject, type_: str, reason: str, message: str) -> None:
        self.count += 1


@dataclass
class Incarnation:
    """One run of the operator process (a crash or a leader change starts the next)."""

    number: int
    api: SimApi
    ctl: Controller
    kopf: asyncio.Task[None] | None = None
    knows_deleting: set[str] = field(default_factory=set)
    started: bool = False


@dataclass
class Schedule:
    seed: int
    rng: random.Random
    clock: vloop.VirtualClock
    server: SimServer
    trace: list[str] = field(default_factory=list)
    incarnations: list[Incarnation] = field(default_factory=list)
    #: Objects whose status was last written by a dead incarnation after a newer one listed.
    #: (With the version of that write: a leader that listed after it restored from it - it
    #: is then what that leader holds, and the hold invariants judge it like any other.)
    tainted: dict[str, int] = field(default_factory=dict)
    id_owner: dict[str, str] = field(default_factory=dict)
    quiet: bool = False
    names: itertools.count[int] = field(default_factory=lambda: itertools.count())
    #: The ranks each pool's R has now.
    pool_ranks: dict[str, list[int]] = field(default_factory=dict)
    #: Ranks taken out of each pool object's R: (rank, version of that edit).
    removed_ranks: defaultdict[str, list[tuple[int, int]]] = field(
        default_factory=lambda: defaultdict(list))
    #: How often each kind of action was taken (tests check every kind is reached).
    actions: Counter[str] = field(default_factory=Counter)
    _parsed_holds: dict[str, tuple[str, list[Any]]] = field(default_factory=dict)
    #: Reservations counted as holders now: key -> (pool, what `_cores_held` says).
    _counted: dict[str, tuple[str, list[Any]]] = field(default_factory=dict)
    #: (pool, rank, core) -> key -> (start, end, mode, name) of each counted holder.
    _core_index: defaultdict[tuple[str, int, int], dict[str, tuple[float, float, str, str]]] \
        = field(default_factory=lambda: defaultdict(dict))

    # -- the operator ------------------------------------------------------------------------

    @property
    def current(self) -> Incarnation | None:
        return self.incarnations[-1] if self.incarnations else None

    async def start_operator(self) -> None:
        number = len(self.incarnations)
        api = SimApi(self.server, f"op{number}", random.Random(self.rng.random()))
        ctl = Controller(api, pool_status_interval=1.0,  # type: ignore[arg-type]
                         events=_Sink(), clock=self.clock.wall,
                         monotonic=self.clock.monotonic, watch=sim_watch)
        api.on_send = self.on_send
        incarnation = Incarnation(number, api, ctl)
        self.incarnations.append(incarnation)
        self.trace.append(f"{self.clock.now:.3f} start op{number} at v{self.server.version}")
        await ctl.start()
        incarnation.started = True
        incarnation.kopf = asyncio.create_task(self._kopf(incarnation))

    async def stop_operator(self) -> None:
        incarnation = self.current
        if incarnation is None or not incarnation.api.alive:
            return
        self.trace.append(f"{self.clock.now:.3f} stop op{incarnation.number}")
        if incarnation.kopf is not None:
            incarnation.kopf.cancel()
        incarnation.api.alive = False
        await incarnation.ctl.stop()

    async def _kopf(self, incarnation: Incarnation) -> None:
        """What kopf does for the operator: list pools, Nodes and Namespaces some time after
        start-up (its first pool event prunes), then follow their events, each delivered
        with its own delay (the streams are independent of the reservation watch)."""
        rng, server, ctl = incarnation.api.rng, self.server, incarnation.ctl
        await asyncio.sleep(rng.choice((0.0, 0.01, 0.5, 2.0)))
        version = server.version
        # Copies (SimServer.share): the operator keeps the pool object kopf gives it and
        # changes it, as it may - kopf's objects are its own.
        pools = _copy(server.items("pool"))
        ctl.prune([p["metadata"]["name"] for p in pools])
        for pool in pools:
            self._deliver_pool(incarnation, None, pool)
        position = 0
        while True:
            while position < len(server.log) and (
                    server.log[position].version <= version
                    or server.log[position].kind == "reservation"):
                position += 1
            if position >= len(server.log):
                await server.wait_change()
                continue
            event = server.log[position]
            position += 1
            version = event.version
            late = server.faults.watch_late and rng.random() < server.faults.watch_late
            await asyncio.sleep(rng.uniform(0.5, 6.0) if late else rng.choice((0.0, 0.002, 0.02)))
            obj = _copy(event.obj)
            if event.kind == "pool":
                self._deliver_pool(incarnation, event.type, obj)
            elif event.kind == "node":
                ctl.on_node(event.type, obj)
            elif event.kind == "namespace":
                ctl.on_namespace(event.type, obj)

    def _deliver_pool(self, incarnation: Incarnation, type_: str | None,
                      obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if type_ != "DELETED" and obj["metadata"].get("deletionTimestamp"):
            incarnation.knows_deleting.add(name)
        else:
            incarnation.knows_deleting.discard(name)
        incarnation.ctl.on_pool(type_, obj)

    # -- invariants after every write --------------------------------------------------------

    def on_write(self, write: Write) -> None:
        try:
            self._on_write(write)
        except Violation as exc:
            # Raised where the server applies a write (maybe in a request's task): keep the
            # first, and end the schedule with it.
            if self.violation is None:
                self.violation = exc

    def _on_write(self, write: Write) -> None:
        after = write.after
        if after is None:
            what = "DELETED"
        elif write.before is None:
            what = "created"
        else:
            what = ((after.get("status") or {}).get("phase") or "") if write.status_write \
                else f"gen {after['metadata']['generation']}"
            if after["metadata"].get("deletionTimestamp"):
                what += " deleting"
            if write.status_write and write.kind == "reservation" and \
                    after.get("status", {}).get("allocated"):
                what += " " + after["status"]["allocated"].get("summary", "")
        self.trace.append(f"{self.clock.now:.3f} v{write.version} {write.writer} {write.kind} "
                          f"{write.key} {what}".rstrip())
        if write.kind == "reservation":
            if write.status_write:
                self._check_status_write(write)
            elif write.after is None:
                self.tainted.pop(write.key, None)  # gone: no status of it stands any more
            self._recount(write.key)
        elif write.kind == "pool" and write.after is None:
            self._pool_gone(write.key)

    def on_same_status(self, kind: str, key: str, writer: str) -> None:
        """The current leader wrote what the object already says: it stands behind it."""
        if kind == "reservation" and not self._writer_deposed(writer) and \
                self.tainted.pop(key, None) is not None:
            try:
                self._recount(key)
            except Violation as exc:
                if self.violation is None:
                    self.violation = exc

    def _writer_deposed(self, writer: str) -> bool:
        number = int(writer[2:])
        return any(i.number > number for i in self.incarnations)

    def _check_status_write(self, write: Write) -> None:
        assert write.after is not None and write.before is not None
        key = write.key
        before_status = write.before.get("status") or {}
        after_status = write.after.get("status") or {}
        was_tainted = key in self.tainted
        if self._writer_deposed(write.writer):
            listed = self.incarnations[-1].api.listed_version
            if listed is not None and listed < write.version:
                # Landed after the current leader listed: it must overwrite it.
                self.tainted[key] = write.version
            return
        self.tainted.pop(key, None)
        uid = write.after["metadata"]["uid"]
        # IDs: unique across objects, stable while held.
        for id_key in ("reservationId", "preReservationId"):
            value = after_status.get(id_key)
            if value:
                owner = self.id_owner.setdefault(value, uid)
                if owner != uid:
                    raise Violation(f"{key}: {id_key} {value} already belongs to {owner}")
        before_phase, after_phase = before_status.get("phase"), after_status.get("phase")
        if was_tainted:
            return  # overwriting a deposed leader's status: it said nothing we promised
        if before_phase == "Active" and after_phase == "Active" and \
                before_status.get("reservationId") != after_status.get("reservationId"):
            raise Violation(f"{key}: reservationId changed while Active: "
                            f"{before_status.get('reservationId')} -> "
                            f"{after_status.get('reservationId')}")
        if before_phase == "Active" and after_phase != "Active":
            ended = parse_time(before_status["endTime"]) if before_status.get("endTime") \
                else None
            edited = (write.after["metadata"]["generation"]
                      != before_status.get("observedGeneration"))
            expired_in_time = after_phase == "Expired" and (
                edited or (ended is not None and self.clock.wall() >= ended))
            if not expired_in_time and not self._lost_with_its_ranks(
                    write.after["spec"]["pool"], before_status, after_status):
                raise Violation(f"{key}: granted, then {after_phase} "
                                f"({after_status.get('message')!r}) at "
                                f"{format_time(self.clock.wall())}")
        if after_phase in HOLDING and before_phase not in HOLDING:
            pool = write.after["spec"]["pool"]
            if self.server.get_object("pool", pool) is None:
                raise Violation(f"{key}: {after_phase} on pool {pool}, which does not exist")

    def _lost_with_its_ranks(self, pool: str, before: dict[str, Any],
                             after: dict[str, Any]) -> bool:
        """Failed/ResourcesLost holding a rank that was removed from the pool's R: the one way
        DESIGN.md lets a grant be lost. Any removal of that rank from this pool object counts,
        not only one after the grant: the operator decides on the pool as its watch last
        showed it, so a grant decided on a rank an edit has just removed lands Active and is
        lost once the edit arrives - also when the rank was put back meanwhile."""
        if after.get("phase") != "Failed" or not any(
                c.get("reason") == "ResourcesLost" for c in after.get("conditions") or []):
            return False
        held = set(IDset((before.get("allocated") or {}).get("ranks") or ""))
        return any(rank in held for rank, _version in self.removed_ranks[pool])

    def on_send(self, writer: str, path: str, ops: list[Any]) -> None:
        """A new hold sent by an operator that had already seen its pool's deletion."""
        try:
            kind, key, status = parse_path(path)
            current = self.current
            if kind != "reservation" or not status or current is None or \
                    writer != f"op{current.number}":
                return
            new_status = next((op["value"] for op in ops if op["path"] == "/status"), {})
            obj = self.server.get_object("reservation", key)
            if obj is None or new_status.get("phase") not in HOLDING or \
                    (obj.get("status") or {}).get("phase") in HOLDING:
                return
            pool = obj["spec"]["pool"]
            if pool in current.knows_deleting:
                raise Violation(f"{key}: {new_status['phase']} on pool {pool} sent after the "
                                "operator saw its deletion")
        except Violation as exc:
            if self.violation is None:
                self.violation = exc

    # The hold invariant after every write, incrementally: what one write can change is
    # whether *its* reservation counts as a holder (its phase, deletion, whether a deposed
    # leader's status stands on it) and where it holds, and whether a pool is gone. So each
    # write re-counts only its own reservation against an index of what the others hold -
    # the verdicts of a full rescan after every write (which `check_quiet` still does, with
    # the deposed leaders' statuses counted too), without its cost.

    def _counts(self, key: str, obj: dict[str, Any] | None) -> bool:
        if obj is None or key in self.tainted or obj["metadata"].get("deletionTimestamp"):
            return False
        return (obj.get("status") or {}).get("phase") in HOLDING

    def _recount(self, key: str) -> None:
        held = self._counted.pop(key, None)
        if held is not None:
            for core, _window in held[1]:
                del self._core_index[core][key]
        obj = self.server.get_object("reservation", key)
        if obj is None or not self._counts(key, obj):
            return
        pool = obj["spec"]["pool"]
        if self.server.get_object("pool", pool) is None:
            raise Violation(f"{key} holds {obj['status']['allocated'].get('summary')} on pool "
                            f"{pool}, which is gone")
        cores = self._cores_held(obj)
        for core, (s1, e1, m1, n1) in cores:
            for s2, e2, m2, n2 in self._core_index[core].values():
                if s1 < e2 and s2 < e1 and "exclusive" in (m1, m2):
                    raise Violation(f"core {core} held by {n2} ({m2}, [{s2}, {e2})) and by "
                                    f"{n1} ({m1}, [{s1}, {e1}))")
        for core, window in cores:
            self._core_index[core][key] = window
        self._counted[key] = (pool, cores)

    def _pool_gone(self, pool: str) -> None:
        for key, (held_pool, _cores) in sorted(self._counted.items()):
            if held_pool == pool:
                obj = self.server.get_object("reservation", key)
                summary = obj["status"]["allocated"].get("summary") if obj else None
                raise Violation(f"{key} holds {summary} on pool {pool}, which is gone")

    def _holders(self, strict: bool) -> list[dict[str, Any]]:
        found = []
        for obj in self.server.items("reservation"):
            status = obj.get("status") or {}
            key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
            if status.get("phase") not in HOLDING or obj["metadata"].get("deletionTimestamp"):
                continue
            if not strict and key in self.tainted:
                continue
            found.append(obj)
        return found

    def _check_holds(self, strict: bool = False) -> None:
        holds: dict[tuple[str, int, int], list[tuple[float, float, str, str]]] = \
            defaultdict(list)
        for obj in self._holders(strict):
            status = obj["status"]
            pool = obj["spec"]["pool"]
            name = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
            if self.server.get_object("pool", pool) is None:
                raise Violation(f"{name} holds {status['allocated'].get('summary')} on pool "
                                f"{pool}, which is gone")
            for core, window in self._cores_held(obj):
                holds[core].append(window)
        for key, windows in holds.items():
            for (s1, e1, m1, n1), (s2, e2, m2, n2) in itertools.combinations(windows, 2):
                if s1 < e2 and s2 < e1 and "exclusive" in (m1, m2):
                    raise Violation(f"core {key} held by {n1} ({m1}, [{s1}, {e1})) and by "
                                    f"{n2} ({m2}, [{s2}, {e2}))")

    def _cores_held(self, obj: dict[str, Any]) -> list[tuple[tuple[str, int, int],
                                                             tuple[float, float, str, str]]]:
        """(pool, rank, core) and window of every core a holder holds; parsed once per
        version of the object (the check runs after every write, over every holder)."""
        metadata = obj["metadata"]
        cached = self._parsed_holds.get(metadata["uid"])
        if cached is not None and cached[0] == metadata["resourceVersion"]:
            return cached[1]
        status = obj["status"]
        pool = obj["spec"]["pool"]
        name = f"{metadata['namespace']}/{metadata['name']}"
        start, end = parse_time(status["startTime"]), parse_time(status["endTime"])
        mode = status["allocated"].get("mode") or obj["spec"].get("mode", "exclusive")
        cores = [((pool, rank, core), (start, end, mode, name))
                 for entry in status["allocated"]["R"]["execution"]["R_lite"]
                 for rank in IDset(entry["rank"])
                 for core in IDset(entry["children"]["core"])]
        self._parsed_holds[metadata["uid"]] = (metadata["resourceVersion"], cores)
        return cores

    # -- eventual invariants -----------------------------------------------------------------

    def check_quiet(self) -> None:
        self._check_holds(strict=True)
        current = self.current
        listed = current.api.listed_version if current is not None else None
        standing = sorted(key for key, version in self.tainted.items()
                          if listed is None or version > listed)
        if standing:
            raise Violation(f"a deposed leader's status still stands on {standing}")
        for obj in self.server.items("reservation"):
            key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
            status = obj.get("status") or {}
            if obj["metadata"].get("deletionTimestamp"):
                raise Violation(f"{key}: deleted, but its finalizer was never removed")
            if not status.get("phase"):
                raise Violation(f"{key}: no phase once the faults stopped")
            if status.get("observedGeneration") != obj["metadata"]["generation"]:
                raise Violation(f"{key}: decided on generation "
                                f"{status.get('observedGeneration')}, not on "
                                f"{obj['metadata']['generation']}")
        for pool in self.server.items("pool"):
            if pool["metadata"].get("deletionTimestamp") and not any(
                    o["spec"]["pool"] == pool["metadata"]["name"]
                    for o in self._holders(strict=True)):
                raise Violation(f"pool {pool['metadata']['name']}: deleted, nothing holds it, "
                                "but its finalizer stays")
        current = self.current
        assert current is not None
        for name, actor in current.ctl.actors.items():
            held = {o["metadata"]["uid"]: o["status"]["allocated"]["summary"]
                    for o in self._holders(strict=True) if o["spec"]["pool"] == name}
            booked = {} if actor.planner is None else {
                b.id: b.R.dumps() for b in actor.planner.bookings()}
            if actor.planner is None and not actor.context.exists:
                booked = {}
            if actor.planner is not None and booked != held:
                raise Violation(f"pool {name}: the planner holds {booked}, the server says "
                                f"{held}")

    # -- the workload ------------------------------------------------------------------------

    def _resources(self, name: str, extra_hosts: int = 0) -> dict[str, Any]:
        """The pool's R v1 over its ranks now (`pool_ranks`; rank n is host <pool>-h<n>);
        `extra_hosts`: a nodelist naming more hosts than ranks, which the API server admits
        and the operator cannot use."""
        ranks = self.pool_ranks[name]
        hosts = [f"{name}-h{rank}" for rank in ranks]
        hosts += [f"{name}-x{n}" for n in range(extra_hosts)]
        return {"version": 1, "execution": {
            "R_lite": [{"rank": str(IDset(ranks)), "children": {"core": "0-1"}}],
            "nodelist": [str(Hostlist(hosts))]}}

    def create_pool(self, name: str) -> None:
        self.pool_ranks[name] = list(range(self.rng.choice((1, 2))))
        self.removed_ranks.pop(name, None)  # a new pool object
        spec: dict[str, Any] = {"resources": self._resources(name),
                                "policy": dict(POLICIES[0])}
        if self.rng.random() < 0.3:
            spec["namespaceSelector"] = self.rng.choice(SELECTORS[1:])
        if self.rng.random() < 0.4:
            spec["trackNodes"] = True
        self.server.create("pool", name, {"metadata": {"name": name}, "spec": spec})

    def create_reservation(self) -> None:
        rng = self.rng
        name = f"r{next(self.names)}"
        namespace = rng.choice(NAMESPACES)
        spec: dict[str, Any] = {
            "pool": rng.choice(("p0", "p0", "p1")),
            "duration": rng.choice(("7s", "20s", "45s", "1h")),
            "request": {"coresPerSlot": rng.choice((1, 1, 2))},
            "mode": rng.choice(("exclusive", "exclusive", "shared")),
            "nextAvailable": rng.random() < 0.7,
            "maxRetry": rng.choice((1, 3, 50)),
        }
        if rng.random() < 0.3:
            spec["startTime"] = format_time(int(self.clock.wall()) + rng.choice((3, 10, 30)))
        if rng.random() < 0.2:
            spec["claimPolicy"] = "Manual"
        if rng.random() < 0.2:
            spec["maxWait"] = rng.choice(("5s", "30s"))
        self.server.create("reservation", f"{namespace}/{name}", {
            "metadata": {"name": name, "namespace": namespace}, "spec": spec})

    def _some(self, kind: str) -> str | None:
        keys = self.server.keys(kind)
        return self.rng.choice(keys) if keys else None

    def _existing_pool(self) -> str | None:
        name = self.rng.choice(("p0", "p1"))
        return name if self.server.get_object("pool", name) is not None else None

    async def act(self) -> None:
        """One user or operator action, drawn from the seed (`ACTIONS`: name and weight)."""
        index = bisect.bisect_right(CUMULATIVE_WEIGHTS, self.rng.random() * TOTAL_WEIGHT)
        name = ACTIONS[min(index, len(ACTIONS) - 1)][0]
        if await getattr(self, f"_act_{name}")():
            self.actions[name] += 1

    async def _act_idle(self) -> bool:
        return True  # only time passes

    async def _act_create_reservation(self) -> bool:
        self.create_reservation()
        return True

    async def _act_delete_reservation(self) -> bool:
        key = self._some("reservation")
        if key:
            self.server.delete("reservation", key)
        return key is not None

    async def _act_edit_reservation(self) -> bool:
        rng = self.rng
        key = self._some("reservation")
        if not key:
            return False
        edit = rng.choice(("duration", "config", "mode", "claimed"))

        def change(spec: dict[str, Any]) -> None:
            if edit == "duration":
                spec["duration"] = rng.choice(("5s", "30s", "2h"))
            elif edit == "config":
                spec["config"] = {"n": rng.randrange(100)}
            elif edit == "mode":
                spec["mode"] = "shared" if spec.get("mode") == "exclusive" else "exclusive"
            else:
                spec["claimed"] = True

        return self.server.update_spec("reservation", key, change)

    async def _act_grow_pool(self) -> bool:
        name = self._existing_pool()
        if name is None:
            return False
        ranks = self.pool_ranks[name]
        ranks.append(max(ranks) + 1)
        return self.server.update_spec("pool", name, lambda spec: spec.update(
            resources=self._resources(name)))

    async def _act_shrink_pool(self) -> bool:
        """An R edit that removes a rank (any, not only the last): Active holders there end
        Failed/ResourcesLost, the one loss DESIGN.md allows; Scheduled ones are re-planned."""
        name = self._existing_pool()
        if name is None or len(self.pool_ranks[name]) < 2:
            return False
        ranks = self.pool_ranks[name]
        rank = self.rng.choice(ranks)
        ranks.remove(rank)
        changed = self.server.update_spec("pool", name, lambda spec: spec.update(
            resources=self._resources(name)))
        if changed:
            self.removed_ranks[name].append((rank, self.server.version))
        return changed

    async def _act_break_pool(self) -> bool:
        name = self._existing_pool()
        if name is None:
            return False
        # Admitted by the API server, refused by the operator (more hosts than ranks).
        self.server.update_spec("pool", name, lambda spec: spec.update(
            resources=self._resources(name, extra_hosts=2)))
        self.later(self.rng.uniform(1, 20), lambda: self._fix_pool(name))
        return True

    async def _act_delete_or_create_pool(self) -> bool:
        name = self.rng.choice(("p0", "p1"))
        if self.server.get_object("pool", name) is not None:
            self.server.delete("pool", name)
        else:
            self.create_pool(name)
        return True

    async def _act_edit_pool_policy(self) -> bool:
        """Shorter or longer claim timeouts and unclaimed holds, a maxDuration some windows
        already held exceed, another default window length."""
        name = self._existing_pool()
        if name is None:
            return False
        policy = dict(self.rng.choice(POLICIES))
        return self.server.update_spec("pool", name, lambda spec: spec.update(policy=policy))

    async def _act_edit_pool_selector(self) -> bool:
        """A namespaceSelector with matchLabels and/or matchExpressions (In, NotIn, Exists,
        DoesNotExist), or none."""
        name = self._existing_pool()
        if name is None:
            return False
        selector = self.rng.choice(SELECTORS)

        def change(spec: dict[str, Any]) -> None:
            if selector is None:
                spec.pop("namespaceSelector", None)
            else:
                spec["namespaceSelector"] = _copy(selector)

        return self.server.update_spec("pool", name, change)

    async def _act_relabel_namespace(self) -> bool:
        namespace = self.rng.choice(NAMESPACES)
        if self.rng.random() < 0.6:
            label = self.rng.choice(("yes", "no"))
            self.server.update_meta("namespace", namespace, lambda o: o["metadata"].setdefault(
                "labels", {}).update(respool=label))
        else:
            def toggle_tier(obj: dict[str, Any]) -> None:
                labels = obj["metadata"].setdefault("labels", {})
                if labels.pop("tier", None) is None:
                    labels["tier"] = "gold"
            self.server.update_meta("namespace", namespace, toggle_tier)
        return True

    async def _act_flap_node(self) -> bool:
        node = self._some("node")
        if node:
            ready = self.rng.choice(("True", "False"))
            self.server.update_meta("node", node, lambda o: o.update(
                status={"conditions": [{"type": "Ready", "status": ready}]}))
        return node is not None

    async def _act_delete_or_create_node(self) -> bool:
        """A Node deleted (its ranks go down on pools with trackNodes) or created again."""
        name = self.rng.choice(NODES)
        if self.server.get_object("node", name) is not None:
            self.server.delete("node", name)
        else:
            self.server.create("node", name, _node(name))
        return True

    async def _act_restart_operator(self) -> bool:
        await self.stop_operator()
        # A restart after a pause, or a standby taking over at once (handover) while the
        # old leader's last writes are still on their way.
        await asyncio.sleep(self.rng.choice((0.0, 0.0, 0.3, 3.0)))
        await self.start_operator()
        return True

    async def _fix_pool(self, name: str) -> None:
        if self.server.get_object("pool", name) is not None:
            self.server.update_spec("pool", name, lambda spec: spec.update(
                resources=self._resources(name)))

    def later(self, delay: float, action: Any) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            if not self.quiet:
                await action()
            else:
                await self._fix_all_pools()
        self.pending.append(asyncio.create_task(run()))

    async def _fix_all_pools(self) -> None:
        for name in ("p0", "p1"):
            await self._fix_pool(name)

    pending: list[asyncio.Task[None]] = field(default_factory=list)
    violation: Violation | None = None

    def raise_violation(self) -> None:
        if self.violation is not None:
            raise self.violation


def _faults(rng: random.Random) -> Faults:
    level = rng.choice((0.0, 0.02, 0.08, 0.2))
    return Faults(refuse=level / 4, unavailable=level / 2, answer_lost=level / 2,
                  slow=level / 2, watch_late=level, watch_break=level / 4,
                  watch_expire=level / 10)


async def _main(schedule: Schedule, steps: int) -> None:
    rng, server = schedule.rng, schedule.server
    server.faults = _faults(rng)
    for namespace in NAMESPACES:
        server.create("namespace", namespace, {"metadata": {
            "name": namespace, "labels": {"respool": rng.choice(("yes", "no"))}}})
    for name in NODES:
        server.create("node", name, _node(name))
    schedule.create_pool("p0")
    if rng.random() < 0.5:
        schedule.create_pool("p1")
    for _ in range(rng.randrange(1, 4)):
        schedule.create_reservation()
    await schedule.start_operator()
    for _ in range(steps):
        await asyncio.sleep(rng.choice((0.0, 0.001, 0.05, 0.3, 1.0, 4.0, 11.0)))
        schedule.raise_violation()
        await schedule.act()
    # The faults stop; users stop; anything left broken by them is put right; then quiet.
    schedule.quiet = True
    server.faults.off()
    await schedule._fix_all_pools()
    current = schedule.current
    if current is None or not current.api.alive:
        await schedule.start_operator()
    for task in schedule.pending:
        await task
    await asyncio.sleep(QUIET_SECONDS)
    while server.inflight:
        await asyncio.sleep(1.0)
    schedule.raise_violation()
    schedule.check_quiet()
    await schedule.stop_operator()


def run_schedule(seed: int, steps: int | None = None, verify_shared: bool = False,
                 actions: Counter[str] | None = None) -> list[str]:
    """Run one schedule; raises Violation (with the trace attached) if an invariant breaks.
    `verify_shared`: check that the operator changed nothing the server shared with it
    (`SharedObjectChanged` if it did). `actions`: counts the actions taken, by kind."""
    rng = random.Random(seed)
    clock = vloop.VirtualClock()
    server = SimServer(clock=clock.wall, rng=rng, verify_shared=verify_shared)
    schedule = Schedule(seed, rng, clock, server)
    server.on_write = schedule.on_write
    server.on_same_status = schedule.on_same_status
    random.seed(seed)  # the operator's own jitter (backoffs) draws from the global generator
    logging.disable(logging.CRITICAL)
    try:
        try:
            vloop.run(clock, _main(schedule, steps if steps is not None else
                                   rng.randrange(4, 24)))
        except (vloop.Spin, vloop.Deadlock) as exc:
            raise Violation(str(exc)) from exc
    except Violation as exc:
        exc.trace = schedule.trace  # type: ignore[attr-defined]
        raise
    finally:
        logging.disable(logging.NOTSET)
        if actions is not None:
            actions.update(schedule.actions)
    server.check_shared()
    return schedule.trace


def trace_digest(trace: list[str]) -> str:
    return hashlib.sha256("\n".join(trace).encode()).hexdigest()[:16]
