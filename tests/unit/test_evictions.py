"""spec.onEnd: Evict (respool.controller.evictions): when a reservation has ended, what its
grace period is, and the evictor's calls against a recording API (no Kubernetes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from respool.api import format_time
from respool.controller.consumers import ConsumerTracker
from respool.controller.evictions import DEFAULT_GRACE, Evictor, ended_at, grace_of
from respool.controller.kubeapi import ApiError

T0 = 1_900_000_000.0


def reservation(phase: str | None, *, on_end: str | None = "Evict", **status: Any
                ) -> dict[str, Any]:
    spec: dict[str, Any] = {"pool": "rack"}
    if on_end:
        spec["onEnd"] = on_end
    return {"metadata": {"namespace": "team", "name": "train"}, "spec": spec,
            "status": {"phase": phase, **status}}


def test_a_reservation_ends_when_expired_failed_or_deleted() -> None:
    assert ended_at(None, reservation("Active"), T0) is None
    assert ended_at(None, reservation("Scheduled"), T0) is None
    assert ended_at(None, reservation("Expired", endTime=format_time(T0 - 60)), T0) == T0 - 60
    failed = reservation("Failed", conditions=[
        {"type": "Ready", "status": "False", "lastTransitionTime": format_time(T0 - 5)}])
    assert ended_at(None, failed, T0) == T0 - 5
    deleting = reservation("Active")
    deleting["metadata"]["deletionTimestamp"] = format_time(T0 - 2)
    assert ended_at("MODIFIED", deleting, T0) == T0 - 2
    assert ended_at("DELETED", reservation("Active"), T0) == T0


def test_the_grace_period_is_the_pools_or_thirty_seconds() -> None:
    assert DEFAULT_GRACE == 30.0
    assert grace_of({"spec": {"policy": {"evictionGracePeriod": "2m"}}}) == 120.0
    assert grace_of({"spec": {"policy": {}}}) == DEFAULT_GRACE
    assert grace_of({"spec": {"policy": {"evictionGracePeriod": "nonsense"}}}) == DEFAULT_GRACE


class RecordingApi:
    def __init__(self, refuse: int = 0) -> None:
        self.posts: list[tuple[str, Mapping[str, Any], float]] = []
        self.refuse = refuse  # answer this many evictions 429 (a PodDisruptionBudget)

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if self.refuse:
            self.refuse -= 1
            raise ApiError(429, "Cannot evict pod as it would violate the pod's disruption "
                           "budget.", "TooManyRequests")
        self.posts.append((path, body, time.time()))
        return {}


def _pod(name: str, node: str = "n0", reservation: str = "train") -> dict[str, Any]:
    return {"metadata": {"namespace": "team", "name": name,
                         "labels": {"respool.io/reservation": reservation}},
            "spec": {"nodeName": node} if node else {}, "status": {"phase": "Running"}}


class RecordingEvents:
    def __init__(self) -> None:
        self.posted: list[tuple[Any, str, str, str]] = []

    def post(self, obj: Any, type_: str, reason: str, message: str) -> None:
        self.posted.append((obj, type_, reason, message))


async def _until(probe: Any, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not probe():
        assert time.monotonic() < deadline, "not reached"
        await asyncio.sleep(0.01)


def test_evict_evicts_bound_consumers_after_the_grace_period_and_leave_does_nothing() -> None:
    events = RecordingEvents()

    async def run() -> tuple[RecordingApi, float]:
        api = RecordingApi(refuse=1)
        tracker = ConsumerTracker()
        for pod in (_pod("a"), _pod("b"), _pod("gated", node=""), _pod("x", reservation="other")):
            tracker.on_pod(None, pod, T0)
        evictor = Evictor(api, tracker, events=events)
        evictor.on_pool(None, {"metadata": {"name": "rack"},
                               "spec": {"policy": {"evictionGracePeriod": "1s"}}})
        evictor.start()
        end = float(int(time.time()))
        evictor.on_reservation(None, reservation("Expired", endTime=format_time(end)))
        # "other" leaves its Pods (Leave is the default)
        other = reservation("Expired", on_end=None, endTime=format_time(end))
        other["metadata"]["name"] = "other"
        evictor.on_reservation(None, other)
        await asyncio.sleep(0.2)
        assert not api.posts  # not before the Pods were listed
        tracker.mark_synced(time.time())
        evictor.kick()
        await _until(lambda: len(api.posts) == 2)
        # evicted: the watch shows them deleting; nothing more is evicted, it is forgotten
        for name in ("a", "b"):
            pod = _pod(name)
            pod["metadata"]["deletionTimestamp"] = format_time(time.time())
            tracker.on_pod("MODIFIED", pod, time.time())
        await _until(lambda: not evictor.ended)
        await evictor.stop()
        return api, end

    api, end = asyncio.run(run())
    paths = sorted(path for path, _, _ in api.posts)
    assert paths == ["/api/v1/namespaces/team/pods/a/eviction",
                     "/api/v1/namespaces/team/pods/b/eviction"]
    assert all(body["apiVersion"] == "policy/v1" and body["kind"] == "Eviction"
               for _, body, _ in api.posts)
    assert min(at for _, _, at in api.posts) >= end + 1.0  # after the grace period
    # one Event per pass that evicted something, on the reservation
    assert [(obj.name, reason) for obj, _, reason, _ in events.posted] == [
        ("train", "ConsumersEvicted"), ("train", "ConsumersEvicted")]
    assert "evicted 1 consumer Pod: b" in events.posted[0][3]
