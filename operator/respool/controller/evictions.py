"""``spec.onEnd: Evict``: a reservation's consumer Pods are evicted when it ends.

When a reservation with ``onEnd: Evict`` ends - its window is over or it was released for
idleness (Expired), it Failed, or it was deleted - its consumer Pods still bound to a Node
(`consumers.ConsumerTracker.bound`: labelled with its name, in its namespace, not finished,
not already being deleted) are evicted through the Eviction API (``policy/v1``, so
PodDisruptionBudgets are respected: an eviction they refuse, HTTP 429, is tried again with
backoff) once the pool's ``policy.evictionGracePeriod`` (default 30s) has passed since the
end. ``onEnd: Leave`` (the default) leaves them running.

Like node enforcement, this is not in the pool actors: `Controller` feeds it the pool and
reservation listings and watch events, and it decides from API state alone - the end is read
from status (``endTime`` of an Expired reservation, the Ready condition's transition of a
Failed one), so a restart evicts what is due then. A deleted reservation's end is its
deletionTimestamp, known only to the process that saw the deletion: an operator restarted
within the grace period after a deletion leaves those Pods (docs/api.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

from respool.api import parse_duration, parse_time_or_none
from respool.api.models import DEFAULT_EVICTION_GRACE_PERIOD
from respool.controller.consumers import ConsumerTracker, Key
from respool.controller.events import InvolvedObject
from respool.controller.kubeapi import ApiError

logger = logging.getLogger(__name__)

RETRY_FIRST = 1.0
RETRY_MAX = 30.0
DEFAULT_GRACE = parse_duration(DEFAULT_EVICTION_GRACE_PERIOD)


class EvictionApi(Protocol):
    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]: ...


class EventSink(Protocol):
    def post(self, obj: InvolvedObject, type_: str, reason: str, message: str) -> None: ...


def eviction_path(namespace: str, pod: str) -> str:
    return (f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/"
            f"{quote(pod, safe='')}/eviction")


def ended_at(event_type: str | None, raw: Mapping[str, Any], now: float) -> float | None:
    """When a reservation ended (None: it has not): deleted, Expired or Failed."""
    metadata = raw.get("metadata") or {}
    if event_type == "DELETED" or metadata.get("deletionTimestamp"):
        return parse_time_or_none(metadata.get("deletionTimestamp")) or now
    status = raw.get("status") or {}
    phase = status.get("phase")
    if phase == "Expired":
        return parse_time_or_none(status.get("endTime")) or now
    if phase == "Failed":
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Ready":
                return parse_time_or_none(condition.get("lastTransitionTime")) or now
        return now
    return None


def grace_of(pool: Mapping[str, Any]) -> float:
    value = ((pool.get("spec") or {}).get("policy") or {}).get("evictionGracePeriod")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return parse_duration(value)
    return DEFAULT_GRACE


class Evictor:
    """Evicts the consumer Pods of ended ``onEnd: Evict`` reservations, in one task."""

    def __init__(self, api: EvictionApi, consumers: ConsumerTracker, *,
                 clock: Callable[[], float] = time.time, events: EventSink | None = None
                 ) -> None:
        self.api = api
        self.events = events
        self._uid: dict[Key, str] = {}  # reservation -> its uid (for its Event)
        self.consumers = consumers
        self.clock = clock
        self.grace: dict[str, float] = {}  # pool -> seconds
        #: reservation -> (when it ended, its pool)
        self.ended: dict[Key, tuple[float, str]] = {}
        self._heap: list[tuple[float, Key]] = []
        self._retry: dict[tuple[str, str], float] = {}  # pod -> next backoff
        # pod -> when its eviction was accepted: not sent again while the watch has not shown
        # it deleting yet (for RETRY_MAX seconds, then it is tried again).
        self._sent: dict[tuple[str, str], float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.evicted = 0

    def on_pool(self, event_type: str | None, raw: Mapping[str, Any]) -> None:
        name = (raw.get("metadata") or {}).get("name")
        if not name:
            return
        if event_type == "DELETED":
            self.grace.pop(name, None)
        else:
            self.grace[name] = grace_of(raw)

    def on_reservation(self, event_type: str | None, raw: Mapping[str, Any]) -> None:
        metadata = raw.get("metadata") or {}
        key = (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
        spec = raw.get("spec") or {}
        if spec.get("onEnd") != "Evict":
            if event_type != "DELETED":
                self.ended.pop(key, None)  # (onEnd changed back to Leave)
            return
        end = ended_at(event_type, raw, self.clock())
        if end is None:
            self.ended.pop(key, None)
            return
        if key in self.ended and self.ended[key][0] <= end:
            return
        pool = str(spec.get("pool") or "")
        self.ended[key] = (end, pool)
        self._uid[key] = str(metadata.get("uid") or "")
        self._push(key)

    def _due(self, key: Key) -> float | None:
        entry = self.ended.get(key)
        if entry is None:
            return None
        end, pool = entry
        return end + self.grace.get(pool, DEFAULT_GRACE)

    def _push(self, key: Key, at: float | None = None) -> None:
        due = self._due(key) if at is None else at
        if due is None:
            return
        heapq.heappush(self._heap, (due, key))
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="respool-evictions")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def kick(self) -> None:
        """The consumer Pods were listed (nothing is judged before: none would be seen)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            if self.consumers.synced_at is None:
                await self._wake.wait()
                continue
            now = self.clock()
            ready: list[Key] = []
            while self._heap and self._heap[0][0] <= now:
                _, key = heapq.heappop(self._heap)
                due = self._due(key)
                if due is None:
                    continue
                if due > now:  # the grace period grew meanwhile
                    heapq.heappush(self._heap, (due, key))
                    continue
                ready.append(key)
            for key in dict.fromkeys(ready):
                try:
                    await self._evict(key)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("evicting the consumers of %s/%s failed", *key)
                    self._push(key, self.clock() + RETRY_MAX)
            timeout = None if not self._heap else max(0.0, self._heap[0][0] - self.clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _evict(self, key: Key) -> None:
        namespace, name = key
        pods = self.consumers.bound(namespace, name)
        retry: float | None = None
        now = self.clock()
        evicted: list[str] = []
        for stale in [p for p, at in self._sent.items() if now - at >= RETRY_MAX]:
            del self._sent[stale]
        for pod in pods:
            if now - self._sent.get((namespace, pod.name), -RETRY_MAX) < RETRY_MAX:
                continue
            body = {"apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": {"name": pod.name, "namespace": namespace}}
            try:
                await self.api.post(eviction_path(namespace, pod.name), body)
            except ApiError as exc:
                if exc.not_found:
                    continue
                delay = self._retry.get((namespace, pod.name), RETRY_FIRST)
                self._retry[(namespace, pod.name)] = min(delay * 2, RETRY_MAX)
                retry = delay if retry is None else min(retry, delay)
                # 429: a PodDisruptionBudget does not allow it now; anything else: try again.
                logger.warning("reservation %s/%s ended (onEnd: Evict): cannot evict Pod %s "
                               "yet (%s); retrying in %.0fs", namespace, name, pod.name, exc,
                               delay)
                continue
            self._retry.pop((namespace, pod.name), None)
            self._sent[(namespace, pod.name)] = now
            evicted.append(pod.name)
            self.evicted += 1
            logger.info("reservation %s/%s ended (onEnd: Evict): Pod %s evicted", namespace,
                        name, pod.name)
        if evicted and self.events is not None:
            shown = ", ".join(evicted[:10]) + (f" and {len(evicted) - 10} more"
                                               if len(evicted) > 10 else "")
            self.events.post(InvolvedObject("ResourceReservation", name, self._uid.get(key, ""),
                                            namespace), "Normal", "ConsumersEvicted",
                             f"onEnd: Evict: evicted {len(evicted)} consumer Pod"
                             f"{'s' if len(evicted) != 1 else ''}: {shown}")
        if retry is not None:
            self._push(key, self.clock() + retry * random.uniform(0.8, 1.2))
        elif pods:
            # Look once more shortly: Pods bound meanwhile (or whose eviction is still being
            # carried out) are seen then; with none left the reservation is done.
            self._push(key, self.clock() + RETRY_FIRST)
        else:
            # Nothing of it left to evict: forgotten (seen again - a relisting, a restart -
            # it is looked at once more, and finds nothing).
            self.ended.pop(key, None)
            self._uid.pop(key, None)
