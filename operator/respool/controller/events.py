"""Kubernetes Events for every decision, posted in the background.

Events are informative, never the record of truth, so they are posted after the status write
that commits a decision, off the hot path, by a few workers draining a bounded queue. A full
queue drops the oldest-waiting work rather than stalling allocation (counted in the logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any

from respool.api import format_time
from respool.controller import metrics
from respool.controller.kubeapi import ApiError, KubeApi

logger = logging.getLogger(__name__)

COMPONENT = "respool-operator"


@dataclass(frozen=True)
class InvolvedObject:
    kind: str
    name: str
    uid: str
    namespace: str | None = None  # None for cluster-scoped (ResourcePool)
    api_version: str = "respool.io/v1alpha1"

    def as_ref(self) -> dict[str, Any]:
        ref = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name,
               "uid": self.uid}
        if self.namespace:
            ref["namespace"] = self.namespace
        return ref


class EventPoster:
    def __init__(self, api: KubeApi, *, workers: int = 1, max_queue: int = 20000) -> None:
        self.api = api
        self._queue: asyncio.Queue[tuple[InvolvedObject, str, str, str, float]] = asyncio.Queue(
            maxsize=max_queue)
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self._instance = socket.gethostname()
        self.dropped = 0

    def start(self) -> None:
        for index in range(self._workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"respool-events-{index}"))

    async def stop(self, drain_timeout: float = 2.0) -> None:
        with contextlib.suppress(TimeoutError):  # (asyncio.timeout: see PoolActor._run)
            async with asyncio.timeout(drain_timeout):
                await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def post(self, obj: InvolvedObject, type_: str, reason: str, message: str) -> None:
        """Queue an Event (kept compact until it is sent: a burst queues thousands)."""
        if self._queue.full():
            self.dropped += 1
            if self.dropped % 1000 == 1:
                logger.warning("event queue full; dropped %d events so far", self.dropped)
            return
        self._queue.put_nowait((obj, type_, reason, message[:1024], time.time()))
        metrics.EVENTS_POSTED.labels(type_, reason).inc()

    def _body(self, obj: InvolvedObject, type_: str, reason: str, message: str,
              when: float) -> dict[str, Any]:
        stamp = format_time(when)
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{obj.name}.",
                         "namespace": obj.namespace or self.api.default_namespace},
            "involvedObject": obj.as_ref(),
            "type": type_,
            "reason": reason,
            "message": message,
            "source": {"component": COMPONENT},
            "reportingComponent": "respool.io/operator",
            "reportingInstance": self._instance[:128],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }

    async def _work(self) -> None:
        while True:
            obj, type_, reason, message, when = await self._queue.get()
            try:
                event = self._body(obj, type_, reason, message, when)
                namespace = event["metadata"]["namespace"]
                await self.api.post(f"/api/v1/namespaces/{namespace}/events", event)
            except ApiError as exc:
                logger.debug("could not post event %s: %s", reason, exc)
            except Exception:  # never let one bad event kill the poster
                logger.exception("unexpected error posting an event")
            finally:
                self._queue.task_done()
