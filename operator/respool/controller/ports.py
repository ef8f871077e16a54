"""What a pool actor needs from the world, injected in one piece (`PoolPort`).

The actor decides and commits; everything it reads or writes outside its own state goes
through this port: the API server (reads and JSON patches), the Event poster, the cluster
facts its decisions use (namespace labels, unhealthy Nodes), the slots that bound background
writes, the pool-status debounce interval, and the clock. The `Controller` builds the real
one; tests and the deterministic simulation (tests/sim) build their own - a simulated API
server and a virtual clock - and run the same actor code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from respool.controller.booking_seal import BookingSeal
from respool.controller.consumers import ConsumerView
from respool.controller.events import InvolvedObject
from respool.controller.kubeapi import ApiError
from respool.controller.priorities import PriorityClasses
from respool.controller.selectors import NamespaceLabels

logger = logging.getLogger(__name__)


class Api(Protocol):
    """The API server calls an actor makes (`KubeApi` has them)."""

    async def get(self, path: str) -> dict[str, Any]: ...

    async def json_patch(self, path: str, ops: list[Any]) -> dict[str, Any]: ...

    async def request(self, method: str, path: str, *,
                      params: Mapping[str, str] | None = None) -> dict[str, Any]: ...


class EventSink(Protocol):
    """Where Events go (`EventPoster` queues and posts them in the background)."""

    def post(self, obj: InvolvedObject, type_: str, reason: str, message: str) -> None: ...


class ClusterFacts:
    """What the decisions read about the cluster besides pools and reservations: namespace
    labels (namespaceSelector) and unhealthy Nodes (trackNodes). Fed by the watches."""

    def __init__(self, api: Api) -> None:
        self.api = api
        # Namespaces whose labels are not known (listing failed, look-up failed, not seen yet)
        # answer UNKNOWN_LABELS: their reservations wait until the labels are known.
        self.namespace_labels = NamespaceLabels()
        self.unhealthy_nodes: set[str] = set()
        # spec.priorityClassName (issue 14): the cluster's PriorityClasses.
        self.priority_classes = PriorityClasses()

    def note_node(self, node: dict[str, Any]) -> bool:
        """Record a Node's health; True if whether it is healthy changed."""
        name = (node.get("metadata") or {}).get("name")
        if not name:
            return False
        spec = node.get("spec") or {}
        ready = False
        for condition in (node.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready":
                ready = condition.get("status") == "True"
        before = name in self.unhealthy_nodes
        if spec.get("unschedulable") or not ready:
            self.unhealthy_nodes.add(name)
        else:
            self.unhealthy_nodes.discard(name)
        return before != (name in self.unhealthy_nodes)

    def node_deleted(self, name: str) -> bool:
        """A deleted Node is down, not healthy: the cloud node controller deletes dead Nodes,
        and their ranks must not be granted again (until a Node of that name is back and
        Ready). True if that changed what is known."""
        if not name or name in self.unhealthy_nodes:
            return False
        self.unhealthy_nodes.add(name)
        return True

    def note_namespace(self, namespace: dict[str, Any]) -> bool:
        """Record a namespace's labels; True when that changed what is known of them."""
        metadata = namespace.get("metadata") or {}
        name = metadata.get("name")
        if not name:
            return False
        return self.namespace_labels.set(name, metadata.get("labels") or {})

    async def ensure_namespace(self, name: str) -> None:
        """Read a namespace's labels now if the watch has not told us yet (a namespace and its
        first reservation are often created together)."""
        if name in self.namespace_labels:
            return
        try:
            # A filtered LIST, not a GET: the operator's role may list namespaces, not get them.
            answer = await self.api.request("GET", "/api/v1/namespaces",
                                            params={"fieldSelector": f"metadata.name={name}"})
        except ApiError as exc:
            logger.warning("cannot read namespace %s: %s", name, exc)
            return
        for item in answer.get("items") or []:
            # The caller decides right after with these labels: nothing to kick.
            self.note_namespace(item)


@dataclass
class PoolPort:
    """Everything a `PoolActor` uses that is not its own state."""

    api: Api
    events: EventSink
    facts: ClusterFacts
    #: Finalizer edits of all pools share these slots, so that a burst of them never crowds
    #: out the status writes that commit decisions.
    write_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    pool_status_interval: float = 1.0
    #: Wall-clock seconds (decisions, deadlines, what is written in status).
    clock: Callable[[], float] = time.time
    #: Seconds for measuring intervals (log throttles, outage durations).
    monotonic: Callable[[], float] = time.monotonic
    #: A reservation's consumer Pods, by (namespace, name); None while not known (Pods not
    #: watched, or not listed yet): status.consumers and spec.idleTimeout (consumers.py).
    consumers: Callable[[str, str], ConsumerView | None] = lambda _namespace, _name: None
    #: Seals every committed booking and checks the seals on restore (status.bookingSeal);
    #: None (tests, the simulation): no seals are written or checked.
    seal: BookingSeal | None = None
