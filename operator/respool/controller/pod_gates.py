"""Lifting the scheduling gate ``respool.io/reservation`` when a reservation becomes Active.

The admission webhook gates a Pod that names a reservation which is not Active yet (see
`respool.controller.admission`). This watches the gated Pods (label ``respool.io/reservation``)
and, once their reservation is Active, sends each one JSON patch that adds the required node
affinity to the granted Nodes and removes the gate: the scheduler places it on the reserved
Nodes when the window opens. Level-based: on start-up (and after every relisting) every gated
Pod whose reservation is Active is lifted, so a restart in between loses nothing.

Gated Pods of a reservation that ends without becoming Active (Failed, Expired, deleted) stay
gated: nothing they asked for will come, and a person or their controller decides what next.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from respool.controller import metrics
from respool.controller.admission import (
    RESERVATION_LABEL,
    SCHEDULING_GATE,
    ReservationFacts,
    ReservationIndex,
    add_node_affinity,
)
from respool.controller.kubeapi import ApiError, WatchExpired, watch_events

logger = logging.getLogger(__name__)

#: Gate lifts of one window opening go out together; with the Node patches (16) they use at
#: most half of the API client's 64 connections, so status writes are never crowded out.
PATCH_CONCURRENCY = 16
RETRY_FIRST = 0.5
RETRY_MAX = 30.0
WATCH_RETRY_MAX = 4.0


class PodApi(Protocol):
    async def get(self, path: str) -> dict[str, Any]: ...

    async def json_patch(self, path: str, ops: list[Any]) -> dict[str, Any]: ...

    async def request(self, method: str, path: str, *,
                      params: Mapping[str, str] | None = None) -> dict[str, Any]: ...


def pod_path(namespace: str | None = None, name: str | None = None) -> str:
    if namespace is None:
        return "/api/v1/pods"
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods"
    return path + (f"/{quote(name, safe='')}" if name is not None else "")


def is_gated(pod: Mapping[str, Any]) -> bool:
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return any(gate.get("name") == SCHEDULING_GATE for gate in gates)


def lift_ops(pod: Mapping[str, Any], facts: ReservationFacts) -> list[dict[str, Any]]:
    """The JSON patch that confines ``pod`` to the granted Nodes and lifts our gate,
    conditional on the resourceVersion read (a Pod's node affinity can be narrowed only while
    it is gated, so both go in one write)."""
    spec = dict(pod.get("spec") or {})
    version = (pod.get("metadata") or {}).get("resourceVersion")
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/resourceVersion",
                                  "value": version}]
    if facts.nodes:
        changed = {"affinity": json.loads(json.dumps(spec.get("affinity") or {}))}
        add_node_affinity(changed, facts.nodes)
        ops.append({"op": "add", "path": "/spec/affinity", "value": changed["affinity"]})
    remaining = [gate for gate in spec.get("schedulingGates") or []
                 if gate.get("name") != SCHEDULING_GATE]
    if remaining:
        ops.append({"op": "replace", "path": "/spec/schedulingGates", "value": remaining})
    else:
        ops.append({"op": "remove", "path": "/spec/schedulingGates"})
    return ops


class GateLifter:
    """Watches gated Pods and lifts the gate of those whose reservation is Active."""

    def __init__(self, api: PodApi, reservations: ReservationIndex, *,
                 namespaces: Iterable[str] = (),
                 watch: Callable[..., AsyncIterator[dict[str, Any]]] = watch_events,
                 concurrency: int = PATCH_CONCURRENCY,
                 on_pod: Callable[[str | None, Mapping[str, Any]], None] | None = None,
                 on_listing: Callable[[str | None, set[tuple[str, str]]], None] | None = None,
                 ) -> None:
        self.api = api
        # Every labelled Pod seen (watch events and listings) and, after each full listing,
        # the namespace listed (None: all) and the Pods it named: the consumers of
        # reservations are counted from the same watch (consumers.py).
        self._seen = on_pod
        self._listed = on_listing
        self.reservations = reservations
        self.namespaces = list(namespaces)
        self._watch = watch
        self.gated: dict[tuple[str, str], dict[str, Any]] = {}  # (namespace, pod) -> Pod
        self._by_reservation: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self._retry_delay: dict[tuple[str, str], float] = {}
        self.lifted = 0
        #: When each reservation was first seen Active here (monotonic), for the lift latency.
        self.active_since: dict[tuple[str, str], float] = {}
        self.latencies: list[float] = []

    # -- facts ---------------------------------------------------------------------------------

    def on_pod(self, event_type: str | None, raw: Mapping[str, Any]) -> None:
        metadata = raw.get("metadata") or {}
        key = (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
        if not key[1]:
            return
        old = self.gated.pop(key, None)
        if old is not None:
            self._by_reservation.get(_reservation_of(old), set()).discard(key)
        if event_type == "DELETED" or not is_gated(raw) or metadata.get("deletionTimestamp"):
            return
        self.gated[key] = dict(raw)
        self._by_reservation.setdefault(_reservation_of(raw), set()).add(key)
        self._mark([key])

    def on_reservation(self, event_type: str | None, raw: Mapping[str, Any]) -> None:
        metadata = raw.get("metadata") or {}
        key = (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
        active = (event_type != "DELETED"
                  and (raw.get("status") or {}).get("phase") == "Active")
        if not active:
            self.active_since.pop(key, None)
            return
        self.active_since.setdefault(key, time.monotonic())
        self._mark(self._by_reservation.get(key, ()))

    def _mark(self, keys: Iterable[tuple[str, str]]) -> None:
        before = len(self._dirty)
        self._dirty.update(keys)
        if len(self._dirty) != before:
            self._wake.set()

    # -- tasks -------------------------------------------------------------------------------

    def start(self) -> None:
        paths = [pod_path(ns) for ns in self.namespaces] or [pod_path()]
        self._tasks = [asyncio.create_task(self._follow(path), name=f"respool-gates {path}")
                       for path in paths]
        self._tasks.append(asyncio.create_task(self._run(), name="respool-gates"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _follow(self, path: str) -> None:
        """List the labelled Pods, then watch them; list again whenever the watch breaks."""
        delay = 0.5
        params = {"labelSelector": RESERVATION_LABEL}
        while True:
            try:
                answer = await self.api.request("GET", path, params=params)
                listed = {(str((p.get("metadata") or {}).get("namespace") or ""),
                           str((p.get("metadata") or {}).get("name") or ""))
                          for p in answer.get("items") or []}
                for key in [k for k in self.gated if k not in listed
                            and (path == pod_path() or path == pod_path(k[0]))]:
                    self.on_pod("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})
                for pod in answer.get("items") or []:
                    self.on_pod(None, pod)
                    if self._seen is not None:
                        self._seen(None, pod)
                if self._listed is not None:
                    self._listed(None if path == pod_path() else path.split("/")[4], listed)
                version = str((answer.get("metadata") or {}).get("resourceVersion") or "")
                while True:
                    async for event in self._watch(self.api, path, version, params=params):
                        delay = 0.5
                        obj = event.get("object") or {}
                        version = str((obj.get("metadata") or {}).get("resourceVersion")
                                      or version)
                        if event.get("type") != "BOOKMARK":
                            self.on_pod(event.get("type"), obj)
                            if self._seen is not None:
                                self._seen(event.get("type"), obj)
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                continue
            except (TimeoutError, ApiError, OSError, aiohttp.ClientError,
                    json.JSONDecodeError, ValueError) as exc:
                logger.warning("watch of gated Pods (%s) broke (%s); listing again", path, exc)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, WATCH_RETRY_MAX)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._dirty = self._dirty, set()
            await asyncio.gather(*(self._lift(key) for key in sorted(batch)))

    async def _lift(self, key: tuple[str, str]) -> None:
        async with self._slots:
            pod = self.gated.get(key)
            if pod is None:
                return
            reservation = _reservation_of(pod)
            facts = self.reservations.get(*reservation)
            if facts is None or facts.phase != "Active":
                return
            path = pod_path(*key)
            try:
                answer = await self.api.json_patch(path, lift_ops(pod, facts))
            except ApiError as exc:
                if exc.not_found:
                    self.on_pod("DELETED", pod)
                    return
                if exc.status in (409, 422):
                    # Changed since we read it (the test op): read it again and go again.
                    with contextlib.suppress(ApiError):
                        self.on_pod("MODIFIED", await self.api.get(path))
                        return
                self._retry_later(key, exc)
                return
            self._retry_delay.pop(key, None)
            self.lifted += 1
            since = self.active_since.get(reservation)
            if since is not None:
                self.latencies.append(time.monotonic() - since)
                metrics.GATE_LIFT_SECONDS.observe(self.latencies[-1])
            logger.info("Pod %s/%s: reservation %s is Active, scheduling gate lifted", *key,
                        reservation[1])
            self.on_pod("MODIFIED", answer)

    def _retry_later(self, key: tuple[str, str], exc: Exception) -> None:
        delay = self._retry_delay.get(key, RETRY_FIRST)
        self._retry_delay[key] = min(delay * 2, RETRY_MAX)
        logger.warning("Pod %s/%s: cannot lift the scheduling gate (%s); retrying in %.1fs",
                       *key, exc, delay)
        asyncio.get_running_loop().call_later(delay * random.uniform(0.8, 1.2),
                                              lambda: self._mark([key]))


def _reservation_of(pod: Mapping[str, Any]) -> tuple[str, str]:
    metadata = pod.get("metadata") or {}
    return (str(metadata.get("namespace") or ""),
            str((metadata.get("labels") or {}).get(RESERVATION_LABEL) or ""))
