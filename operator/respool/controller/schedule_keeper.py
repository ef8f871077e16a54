"""The kopf handlers and the loop that keep every ResourceReservationSchedule's reservations.

kopf watches the schedules (`@kopf.on.event`, writing nothing itself); one task per operator
makes the passes: for a schedule that changed or is due, list the reservations it owns (by
label), create the missing ones (`schedules.plan`; names are deterministic, so an existing one
answers 409 and nothing is duplicated), delete those past the history limits, and write the
schedule's status through its status subresource. A schedule is due again when its next
occurrence enters the lead time, and at least every `RESYNC` seconds (for the phases in its
status).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from urllib.parse import quote

import kopf

from respool.controller import handlers
from respool.controller.kubeapi import GROUP, RESERVATIONS, VERSION, ApiError, KubeApi
from respool.controller.schedules import SCHEDULE_LABEL, plan

logger = logging.getLogger(__name__)

SCHEDULES = "resourcereservationschedules"
RESYNC = 30.0


def _path(namespace: str, plural: str, name: str | None = None, status: bool = False) -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/{plural}"
    if name is not None:
        path += f"/{quote(name, safe='')}" + ("/status" if status else "")
    return path


class ScheduleKeeper:
    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.due: dict[tuple[str, str], float] = {}
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="respool-schedules")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def on_event(self, type_: str | None, obj: dict[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        key = (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
        if type_ == "DELETED" or metadata.get("deletionTimestamp"):
            self.objects.pop(key, None)
            self.due.pop(key, None)
            return
        known = self.objects.get(key)
        self.objects[key] = obj
        if known is None or (known.get("metadata") or {}).get("generation") != \
                metadata.get("generation"):
            self.due[key] = 0.0
            self._kick.set()

    async def _run(self) -> None:
        while True:
            now = time.time()
            wait = min((t - now for t in self.due.values()), default=RESYNC)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._kick.wait()
            self._kick.clear()
            now = time.time()
            for key in [k for k, t in self.due.items() if t <= now]:
                obj = self.objects.get(key)
                if obj is None:
                    self.due.pop(key, None)
                    continue
                try:
                    self.due[key] = await self.reconcile(obj, now)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("schedule %s/%s: pass failed; again in 10s", *key)
                    self.due[key] = now + 10.0

    async def reconcile(self, obj: dict[str, Any], now: float) -> float:
        """One pass over one schedule; returns when it is due again."""
        metadata = obj.get("metadata") or {}
        namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
        listed = await self.api.request(
            "GET", _path(namespace, RESERVATIONS),
            params={"labelSelector": f"{SCHEDULE_LABEL}={name}"})
        uid = metadata.get("uid")
        children = [c for c in listed.get("items") or []
                    if any(o.get("uid") == uid
                           for o in (c.get("metadata") or {}).get("ownerReferences") or [])]
        result = plan(obj, children, now)
        refused: list[dict[str, Any]] = []
        for body in result.create:
            try:
                created = await self.api.request("POST", _path(namespace, RESERVATIONS),
                                                 body=body, idempotent=False)
                children.append(created)
                logger.info("schedule %s/%s: created reservation %s", namespace, name,
                            body["metadata"]["name"])
            except ApiError as exc:
                if exc.status == 409:
                    continue  # created by an earlier pass: the name says which occurrence
                if exc.unavailable:
                    raise
                # Refused at admission (the template is invalid): said in status, retried
                # at the next pass.
                refused.append({"startTime": body["spec"]["startTime"],
                                "reservation": body["metadata"]["name"],
                                "reason": "CreateRefused", "message": exc.message[:1024]})
        for child in result.delete:
            with contextlib.suppress(ApiError):
                await self.api.request("DELETE", _path(namespace, RESERVATIONS, child))
        if result.create:
            result = plan(obj, children, now)  # the status names what was just created
        status = result.status
        if refused:
            status["unbooked"] = (refused + list(status.get("unbooked") or []))[:20]
            status["message"] = f"could not create {len(refused)} reservation(s): " \
                                f"{refused[0]['message']}"
        if status != (obj.get("status") or {}):
            try:
                await self.api.merge_patch(_path(namespace, SCHEDULES, name, status=True),
                                           {"status": status})
            except ApiError as exc:
                if not exc.not_found:
                    raise
        due = now + RESYNC
        if result.next_pass is not None:
            due = min(due, max(now + 1.0, result.next_pass))
        return due


_keeper: list[ScheduleKeeper] = []


@kopf.on.startup()
async def start_schedules(settings: kopf.OperatorSettings, **_: Any) -> None:
    api = KubeApi(handlers.connection_info(settings),
                  relogin=lambda: handlers.connection_info(settings))
    keeper = ScheduleKeeper(api)
    keeper.start()
    _keeper.append(keeper)


@kopf.on.event(GROUP, VERSION, SCHEDULES)
async def schedule_event(event: kopf.RawEvent, **_: Any) -> None:
    if _keeper:
        _keeper[0].on_event(event.get("type"), dict(event.get("object") or {}))


@kopf.on.cleanup()
async def stop_schedules(**_: Any) -> None:
    while _keeper:
        keeper = _keeper.pop()
        await keeper.stop()
        await keeper.api.close()
