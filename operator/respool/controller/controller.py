"""The operator's state: one `PoolActor` per pool, plus the Node and Namespace facts they use.

Created by the kopf start-up handler, which lists pools, reservations, Nodes and Namespaces
*before* kopf starts watching, and re-registers every committed grant (`Planner.restore`) -
no decision is taken before that. Afterwards kopf's watch events are routed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiohttp

from respool.controller import metrics
from respool.controller.actor import PoolActor
from respool.controller.admission import ReservationIndex
from respool.controller.booking_seal import BookingSeal
from respool.controller.consumers import ConsumerTracker
from respool.controller.events import EventPoster
from respool.controller.evictions import Evictor
from respool.controller.kubeapi import (
    ApiError,
    KubeApi,
    WatchExpired,
    pool_path,
    reservation_path,
    watch_events,
)
from respool.controller.lifecycle import Reservation
from respool.controller.node_enforcement import NodeEnforcer
from respool.controller.pod_gates import GateLifter
from respool.controller.ports import ClusterFacts, EventSink, PoolPort
from respool.controller.reminders import Reminders
from respool.controller.turns import Turn

logger = logging.getLogger(__name__)

#: Reconnect backoff of our own reservation watch. Capped low: while the API server is away
#: nothing is lost by trying every few seconds, and it bounds how long after its return the
#: operator is blind to new reservations.
WATCH_RETRY_FIRST = 0.5
WATCH_RETRY_MAX = 4.0
#: How soon an actor that nobody refers to any more, but that was still busy (its pool's
#: deletion not yet applied, a status write in flight), is looked at again to be dropped.
UNUSED_ACTOR_RECHECK = 1.0
#: Listing reservations: the first page's size, the largest, and about how many bytes of
#: JSON a page should hold (objects near etcd's limit are listed a few at a time).
LIST_PAGE_FIRST = 10
LIST_PAGE_MAX = 500
LIST_PAGE_BYTES = 4 << 20


PRIORITY_CLASSES = "/apis/scheduling.k8s.io/v1/priorityclasses"


class Controller:
    def __init__(self, api: KubeApi, *, namespaces: Iterable[str] = (),
                 pool_status_interval: float = 1.0, events: EventSink | None = None,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 watch: Callable[..., AsyncIterator[dict[str, Any]]] = watch_events,
                 pod_gates: bool = False, seal: BookingSeal | None = None) -> None:
        namespaces = list(namespaces)
        self.api = api
        self._watch = watch
        self._monotonic = monotonic
        self.events = EventPoster(api)
        self.facts = ClusterFacts(api)
        # Taints and labels on the Nodes of enforcing pools: fed the same listings and watch
        # events as the actors, decides from them alone (level-based, see node_enforcement).
        self.enforcer = NodeEnforcer(api)
        # What the admission webhook reads (respool.controller.webhook), and, with the webhook
        # on, the scheduling gates it set, lifted when their reservation becomes Active.
        self.reservations = ReservationIndex()
        # StartingSoon / EndingSoon Events, from the pools' policy and the reservations' status.
        self.reminders = Reminders(events if events is not None else self.events, clock=clock)
        # The consumer Pods of reservations, counted from the same labelled Pod watch.
        self.consumers = ConsumerTracker()
        self._clock = clock
        self._pods_unlisted = {None} if not namespaces else set(namespaces)
        self._uid_of: dict[tuple[str, str], str] = {}  # (namespace, name) -> reservation uid
        self.gates = GateLifter(api, self.reservations, namespaces=list(namespaces),
                                watch=watch, on_pod=self.on_pod,
                                on_listing=self.on_pod_listing) if pod_gates else None
        # spec.onEnd: Evict - the consumers of ended reservations (only with the Pod watch).
        self.evictor = Evictor(api, self.consumers, clock=clock,
                               events=events if events is not None else self.events
                               ) if pod_gates else None
        # The one port every actor gets (the composition root is here, nowhere else).
        self.port = PoolPort(api=api, events=events if events is not None else self.events,
                             facts=self.facts, pool_status_interval=pool_status_interval,
                             clock=clock, monotonic=monotonic,
                             consumers=self.consumers.view, seal=seal)
        self.namespaces = list(namespaces)  # empty: all namespaces
        self.actors: dict[str, PoolActor] = {}
        self.owner: dict[str, str] = {}  # reservation uid -> pool name
        self.started = False
        self.pruned = False
        self._uid_namespace: dict[str, str] = {}
        self._watchers: list[asyncio.Task[None]] = []
        # Pools whose actor nobody refers to any more but was busy when last looked at.
        self._maybe_unused: set[str] = set()
        self._recheck: asyncio.TimerHandle | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._page_limit = LIST_PAGE_FIRST

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """List everything, restore every pool's grants, then start the actors."""
        began = self._monotonic()
        pools, listed, others, versions = await self._initial_listing()
        self.events.start()
        try:
            async for node in self.api.list_items("/api/v1/nodes"):
                self.facts.note_node(node)
                self.enforcer.on_node(None, node)
        except ApiError as exc:
            logger.warning("cannot list Nodes (trackNodes will see none): %s", exc)
        try:
            async for namespace in self.api.list_items("/api/v1/namespaces"):
                self.facts.note_namespace(namespace)
        except ApiError as exc:
            logger.warning("cannot list Namespaces (namespaceSelector sees no labels): %s", exc)
        try:
            async for priority_class in self.api.list_items(PRIORITY_CLASSES):
                self.facts.priority_classes.note(priority_class)
        except ApiError as exc:
            logger.warning("cannot list PriorityClasses (every reservation has priority 0 "
                           "until the watch tells): %s", exc)
        for pool in pools:
            name = (pool.get("metadata") or {}).get("name")
            if name:
                self._actor(name).pool_raw = pool
                self.enforcer.on_pool(None, pool)
                self.reminders.on_pool(None, pool)
                if self.evictor is not None:
                    self.evictor.on_pool(None, pool)
        for raw in others:
            self.enforcer.on_reservation(None, raw)
            self.reservations.on_reservation(None, raw)
            self.reminders.on_reservation(None, raw)
            if self.gates is not None:
                self.gates.on_reservation(None, raw)
            if self.evictor is not None:
                self.evictor.on_reservation(None, raw)
        del others
        for pool_name, record in listed:
            self.owner[record.uid] = pool_name
            self._uid_namespace[record.uid] = record.namespace
            self._uid_of[(record.namespace, record.name)] = record.uid
            self._actor(pool_name).adopt(record)
        restored = 0
        for actor in self.actors.values():
            actor.restore()  # before any decision
            restored += len(actor.planner.bookings()) if actor.planner is not None else 0
        for actor in self.actors.values():
            actor.start()
        self.reminders.start()
        self.enforcer.start()  # after everything is listed: it removes what nothing holds
        if self.gates is not None:
            self.gates.start()
        if self.evictor is not None:
            self.evictor.start()
        # Reservations are watched here, not by kopf: from exactly the listed version (no event
        # is missed between the listing and the watch), and without kopf's per-event work,
        # which was most of the operator's CPU per reservation (docs/operator.md).
        for path, version in versions:
            self._watchers.append(asyncio.create_task(
                self._watch_reservations(path, version), name=f"respool-watch {path}"))
        self.started = True
        logger.info("respool controller started: %d pools, %d reservations, %d grants restored "
                    "in %.2fs", len(pools), len(listed), restored,
                    self._monotonic() - began)

    async def _initial_listing(self) -> tuple[list[dict[str, Any]],
                                              list[tuple[str, Reservation]],
                                              list[dict[str, Any]],
                                              list[tuple[str, str]]]:
        """Pools, the records of all reservations (with the pool each names), the listed
        objects for the other consumers without their configs (`_without_config`) and the
        resourceVersion of each reservation listing, waiting for an API server that is away
        (an operator restarted during a control-plane upgrade starts within seconds of the
        server's return, not at kopf's next start-up retry a minute later).

        Each listed reservation is turned into its compact record as its page arrives, and
        the page is let go: holding every listed object until all were listed made the
        start-up's memory the sum of all of them parsed (issue 11, item 11: a 256 KiB
        spec.config echoed to status parses into megabytes)."""
        delay = WATCH_RETRY_FIRST
        waiting_since: float | None = None
        reminded = 0.0
        while True:
            try:
                pools = [p async for p in self.api.list_items(pool_path())]
                listed: list[tuple[str, Reservation]] = []
                others: list[dict[str, Any]] = []

                def take(raw: dict[str, Any], listed: list[tuple[str, Reservation]] = listed,
                         others: list[dict[str, Any]] = others) -> int:
                    record = Reservation.from_object(raw)
                    if record is None:
                        return 0
                    spec = raw.get("spec") or {}
                    listed.append((str(spec.get("pool") or ""), record))
                    others.append(_without_config(raw))
                    return record.text_size

                versions = [(path, await self._list(path, take))
                            for path in self._reservation_paths()]
            except ApiError as exc:
                if exc.not_found:
                    raise RuntimeError(
                        "the respool CRDs are not installed in this cluster: apply crds/ first "
                        "(kubectl apply -f crds/, or `respool crds | kubectl apply -f -`)"
                    ) from exc
                if not exc.unavailable:
                    raise
                now = self._monotonic()
                if waiting_since is None:
                    waiting_since = reminded = now
                    logger.warning("the API server %s is unavailable (%s); waiting for it",
                                   self.api.server, exc)
                elif now - reminded >= 60:
                    reminded = now
                    logger.warning("still waiting for the API server %s after %.0fs (%s)",
                                   self.api.server, now - waiting_since, exc)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, WATCH_RETRY_MAX)
                continue
            if waiting_since is not None:
                logger.info("the API server answered after %.1fs", self._monotonic() -
                            waiting_since)
            return pools, listed, others, versions

    async def stop(self) -> None:
        for task in self._watchers:
            task.cancel()
        for task in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watchers.clear()
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        await self.enforcer.stop()
        await self.reminders.stop()
        if self.gates is not None:
            await self.gates.stop()
        if self.evictor is not None:
            await self.evictor.stop()
        for actor in list(self.actors.values()):
            await actor.stop()
        for task in list(self._stopping):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.events.stop()
        await self.api.close()

    def _reservation_paths(self) -> list[str]:
        if not self.namespaces:
            return [reservation_path()]
        return [reservation_path(namespace) for namespace in self.namespaces]

    async def _list(self, path: str, each: Callable[[dict[str, Any]], int]) -> str:
        """Hand every item of a collection to `each`, page by page, and return the
        resourceVersion of that consistent snapshot. No page is kept once handled.

        `each` returns about how many bytes of JSON the item was. The first page is small
        and later ones are sized to hold about LIST_PAGE_BYTES, so a page of objects near
        etcd's limit (a maximal spec.config, echoed to status, parses into megabytes) never
        sits in memory hundreds at a time, while small objects are still listed 500 a page."""
        token = ""
        version = ""
        limit = self._page_limit
        while True:
            params = {"limit": str(limit)}
            if token:
                params["continue"] = token
            answer = await self.api.request("GET", path, params=params)
            metadata = answer.get("metadata") or {}
            version = version or str(metadata.get("resourceVersion") or "")
            token = metadata.get("continue") or ""
            items = answer.get("items") or []
            del answer
            size = 0
            items.reverse()  # popped in listing order, each let go once handled
            while items:
                size += each(items.pop())
            if size:
                limit = max(1, min(LIST_PAGE_MAX, int(limit * LIST_PAGE_BYTES / size)))
                self._page_limit = limit
            if not token:
                return version

    async def _watch_reservations(self, path: str, version: str) -> None:
        """Follow the collection from `version` for as long as the operator runs.

        Whatever the API server does - closes the stream, restarts, answers 410 Gone or 5xx
        while it comes back - this loop reconnects (re-listing when the version is too old),
        with a short capped backoff so that it is following again within seconds of the
        server's return. One warning when it breaks, one line when it follows again."""
        delay = WATCH_RETRY_FIRST
        broken_since: float | None = None
        relist = False
        while True:
            try:
                if relist:
                    version = await self._relist(path)
                    relist = False
                    if broken_since is not None:
                        logger.info("watch of %s re-listed and following again after %.1fs",
                                    path, self._monotonic() - broken_since)
                        broken_since = None
                opened = self._monotonic()
                received = False
                turn = Turn(self._monotonic)
                async for event in self._watch(self.api, path, version):
                    received = True
                    if broken_since is not None:
                        logger.info("watch of %s following again after %.1fs", path,
                                    self._monotonic() - broken_since)
                        broken_since = None
                    delay = WATCH_RETRY_FIRST
                    obj = event.get("object") or {}
                    seen = (obj.get("metadata") or {}).get("resourceVersion")
                    if event.get("type") != "BOOKMARK":
                        with turn.work():
                            self.on_reservation(event.get("type"), obj)
                    version = seen or version
                    # Events already buffered (a burst of objects near etcd's limit costs ~10
                    # ms each to read) are not handled in one go: that would hold every
                    # pool, the Lease and the probes (turns.py).
                    await turn.next_item()
                if received or self._monotonic() - opened > 1.0:
                    continue  # the server ended the stream (its timeout): carry on
                # Closed at once and empty: a server shutting down. Back off, never spin.
                logger.debug("watch of %s closed at once; retrying in %.1fs", path, delay)
            except WatchExpired:
                logger.info("watch of %s expired (410 Gone); listing again", path)
                relist = True
                continue
            except asyncio.CancelledError:
                raise
            except (TimeoutError, ApiError, OSError, aiohttp.ClientError,
                    json.JSONDecodeError, ValueError) as exc:
                if broken_since is None:
                    broken_since = self._monotonic()
                    logger.warning("watch of %s broke (%s); reconnecting", path, exc)
                else:
                    logger.debug("watch of %s: %s; retrying in %.1fs", path, exc, delay)
            except Exception:
                broken_since = broken_since or self._monotonic()
                logger.exception("watch of %s failed; retrying in %.1fs", path, delay)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, WATCH_RETRY_MAX)

    async def _relist(self, path: str) -> str:
        present = set()

        def take(item: dict[str, Any]) -> int:
            self.on_reservation(None, item)
            uid = (item.get("metadata") or {}).get("uid")
            present.add(uid)
            actor = self.actors.get(self.owner.get(uid or "", ""))
            record = actor.records.get(uid or "") if actor is not None else None
            return record.text_size if record is not None else 0

        version = await self._list(path, take)
        namespace = path.split("/namespaces/")[1].split("/")[0] if "/namespaces/" in path else None
        for uid in [u for u, ns in self._uid_namespace.items()
                    if u not in present and (namespace is None or ns == namespace)]:
            self.on_reservation("DELETED", {"metadata": {"uid": uid}, "spec": {}})
        return version

    def _actor(self, pool: str) -> PoolActor:
        actor = self.actors.get(pool)
        if actor is None:
            actor = PoolActor(pool, self.port)
            self.actors[pool] = actor
            metrics.POOL_ACTORS.set(len(self.actors))
            if self.started:
                actor.start()
        return actor

    def _drop_if_unused(self, pool: str) -> None:
        """Drop the actor of a pool nobody refers to any more (issue 11, item 5: renaming
        one reservation's spec.pool 3,000 times once left 3,100 actors and 6,200 tasks).

        Only an actor with nothing in it goes: no pool object, no planner, no reservation,
        no write in flight (`PoolActor.unused`), so no grant can be lost with it. One still
        busy is looked at again shortly. Whatever names the pool later (a reservation event,
        the pool's creation) makes a new actor, which starts from the objects as they are -
        the same as a pool first heard of."""
        actor = self.actors.get(pool)
        if actor is None:
            self._maybe_unused.discard(pool)
            return
        if actor.unused():
            self._maybe_unused.discard(pool)
            del self.actors[pool]
            metrics.POOL_ACTORS.set(len(self.actors))
            stopping = asyncio.create_task(actor.stop(), name=f"respool-drop-{pool}")
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)
        elif actor.pool_raw is None and not actor.records:
            # Unreferenced but busy (a deleted pool's planner not yet let go, a write in
            # flight): look again soon.
            self._maybe_unused.add(pool)
            if self._recheck is None:
                self._recheck = asyncio.get_running_loop().call_later(
                    UNUSED_ACTOR_RECHECK, self._recheck_unused)
        else:
            self._maybe_unused.discard(pool)

    def _recheck_unused(self) -> None:
        self._recheck = None
        for pool in list(self._maybe_unused):
            self._drop_if_unused(pool)

    # -- watch events ------------------------------------------------------------------------

    def on_pool(self, event_type: str | None, raw: dict[str, Any]) -> None:
        name = (raw.get("metadata") or {}).get("name")
        if not name:
            return
        self.enforcer.on_pool(event_type, raw)
        self.reminders.on_pool(event_type, raw)
        if self.evictor is not None:
            self.evictor.on_pool(event_type, raw)
        self._actor(name).pool_event(None if event_type == "DELETED" else raw)
        if event_type == "DELETED":
            self._drop_if_unused(name)

    def on_reservation(self, event_type: str | None, raw: dict[str, Any]) -> None:
        metadata = raw.get("metadata") or {}
        uid = metadata.get("uid")
        if not uid:
            return
        pool = str((raw.get("spec") or {}).get("pool") or "")
        previous = self.owner.get(uid)
        self.enforcer.on_reservation(event_type, raw)
        self.reservations.on_reservation(event_type, raw)  # before the gates read it
        self.reminders.on_reservation(event_type, raw)
        if self.gates is not None:
            self.gates.on_reservation(event_type, raw)
        if self.evictor is not None:
            self.evictor.on_reservation(event_type, raw)
        key = (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
        if event_type == "DELETED":
            self.owner.pop(uid, None)
            self._uid_namespace.pop(uid, None)
            if self._uid_of.get(key) == uid:
                del self._uid_of[key]
                self.consumers.forget(key)
            # (No actor is made just to forget: a dropped one knew nothing of it.)
            owner = previous if previous is not None else pool
            actor = self.actors.get(owner)
            if actor is not None:
                actor.forget(uid)
                self._drop_if_unused(owner)
            return
        if previous is not None and previous != pool:
            # Moved to another pool (allowed before it is Active): the old pool lets go.
            actor = self.actors.get(previous)
            if actor is not None:
                actor.forget(uid)
        self.owner[uid] = pool
        self._uid_namespace[uid] = metadata.get("namespace") or ""
        self._uid_of[key] = uid
        self._actor(pool).reservation_event(raw, deleted=False)
        if previous is not None and previous != pool:
            self._drop_if_unused(previous)

    def on_pod(self, event_type: str | None, raw: Any) -> None:
        """A labelled Pod seen by the watch (GateLifter's): its reservation's consumers."""
        self._consumers_changed(self.consumers.on_pod(event_type, raw, self._clock()))

    def on_pod_listing(self, namespace: str | None, present: set[tuple[str, str]]) -> None:
        """A full listing of labelled Pods: those it did not name are gone. Once every
        collection was listed, the consumers are known and the actors judge them."""
        now = self._clock()
        changed = self.consumers.on_listing(namespace, present, now)
        self._pods_unlisted.discard(namespace)
        if not self._pods_unlisted and self.consumers.synced_at is None:
            self.consumers.mark_synced(now)
            for actor in self.actors.values():
                actor.consumers_synced()
            if self.evictor is not None:
                self.evictor.kick()
        self._consumers_changed(changed)

    def _consumers_changed(self, reservations: Iterable[tuple[str, str]]) -> None:
        if self.consumers.synced_at is None:
            return  # judged all together once listed (consumers_synced)
        for key in reservations:
            uid = self._uid_of.get(key)
            actor = self.actors.get(self.owner.get(uid, "")) if uid is not None else None
            if actor is not None:
                actor.consumers_changed([uid])  # type: ignore[list-item]

    def on_node(self, event_type: str | None, raw: dict[str, Any]) -> None:
        name = (raw.get("metadata") or {}).get("name")
        self.enforcer.on_node(event_type, raw)
        if event_type == "DELETED":
            changed = self.facts.node_deleted(name or "")
        else:
            changed = self.facts.note_node(raw)
        if changed:
            for actor in self.actors.values():
                actor.nodes_changed()

    def on_namespace(self, event_type: str | None, raw: dict[str, Any]) -> None:
        name = (raw.get("metadata") or {}).get("name") or ""
        if event_type == "DELETED":
            self.facts.namespace_labels.forget(name)
        elif self.facts.note_namespace(raw):
            self._namespace_changed(name)

    def on_priority_class(self, event_type: str | None, raw: dict[str, Any]) -> None:
        """A PriorityClass came, changed or went (issue 14): reservations not yet granted are
        decided again with their new priority (a waiter may have waited for its class)."""
        name = (raw.get("metadata") or {}).get("name") or ""
        if event_type == "DELETED":
            changed = self.facts.priority_classes.forget(name)
        else:
            changed = self.facts.priority_classes.note(raw)
        if not changed:
            return
        for actor in self.actors.values():
            waiting = [uid for uid, record in actor.records.items() if record.phase != "Active"]
            if waiting:
                actor.dirty.update(waiting)
                actor.kick()

    def _namespace_changed(self, name: str) -> None:
        """A namespace's labels were learnt or changed: pools with a namespaceSelector judge its
        waiting reservations again (a relabelled namespace may now be admitted)."""
        for actor in self.actors.values():
            actor.namespace_changed(name)

    def prune(self, pool_names: Iterable[str]) -> None:
        """Once kopf's first listing of pools is complete: drop pools deleted between our
        listing and kopf's (no DELETED event would ever tell us). A pool missing from kopf's
        listing may also be one created after it (a reservation's actor looked it up), so
        each actor confirms with the API server before it forgets its pool."""
        if self.pruned:
            return
        self.pruned = True
        live_pools = set(pool_names)
        for name, actor in self.actors.items():
            if actor.pool_raw is not None and name not in live_pools:
                actor.suspect_deleted()


def _without_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A listed reservation as the start-up's other consumers (node enforcement, the
    admission index, the scheduling gates) get it: without spec.config and its echo in
    status (up to 256 KiB each, parsed into megabytes; only the record keeps the config) and
    without managedFields."""
    shell = dict(raw)
    metadata = dict(raw.get("metadata") or {})
    metadata.pop("managedFields", None)
    shell["metadata"] = metadata
    for part in ("spec", "status"):
        body = raw.get(part)
        if isinstance(body, dict) and "config" in body:
            shell[part] = {key: value for key, value in body.items() if key != "config"}
    return shell
