"""Node enforcement: the taint and label that keep other Pods off an exclusive reservation's Nodes.

While an exclusive reservation is Active on a pool with ``spec.enforcement: Taint``, every Node
it holds (a rank's host name is the Node's name, as ``trackNodes`` assumes) carries

- the taint ``respool.io/reserved=<namespace>.<name>:NoSchedule`` (Pods without the toleration,
  which the admission webhook gives the reservation's own Pods, are not scheduled there), and
- the label ``respool.io/reservation=<namespace>.<name>`` (so people and selectors can see it);

both go when the reservation ends. The operator owns exactly these two keys on Nodes: every
other taint and label is left as it is, and its writes are merge patches conditional on the
Node's resourceVersion (a taint list cannot be merged entry by entry, so the whole list is
written back, with everybody else's taints as they were in the version read).

Level-based: `NodeEnforcer` is fed the listed and watched pools, reservations and Nodes (by the
`Controller`) and converges each Node to what they say - after a restart it removes taints of
reservations that ended meanwhile, and it puts back a taint someone removed. Nothing is
decided from the actors' memory; a reservation's status as the API server has it is the truth.

A Node held by several exclusive reservations at once (each holds some of its cores) carries
the taint and label of the first of them in name order; the webhook's toleration is for the
taint key (``operator: Exists``), and each holder's Pods are confined to their own Nodes by
node affinity, so every holder can use its share.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from respool.controller.kubeapi import ApiError
from respool.pool import Hostlist

logger = logging.getLogger(__name__)

RESERVED_TAINT_KEY = "respool.io/reserved"
RESERVATION_LABEL = "respool.io/reservation"
TAINT_EFFECT = "NoSchedule"
ENFORCE_TAINT = "Taint"
MAX_LABEL_VALUE = 63
#: Concurrent Node patches: many reservations start or end together (bench/bench_enforcement.py,
#: 200 of 5 Nodes each), and each patch waits on the API server, not on us; with the gate
#: lifts (16) at most half of the API client's 64 connections.
PATCH_CONCURRENCY = 16
RETRY_FIRST = 0.5
RETRY_MAX = 30.0


def reservation_key(namespace: str, name: str) -> str:
    """``<namespace>.<name>``, the taint and label value; a label value holds at most 63
    characters, so a longer one keeps its first 52 and ends with a hash of the whole."""
    key = f"{namespace}.{name}"
    if len(key) <= MAX_LABEL_VALUE:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{key[:52].rstrip('.-_')}-{digest}"


class NodeApi(Protocol):
    async def get(self, path: str) -> dict[str, Any]: ...

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Hold:
    """An exclusive reservation that is Active: its key, pool and the host names it holds."""

    key: str
    pool: str
    hosts: frozenset[str]


def hold_of(raw: Mapping[str, Any]) -> Hold | None:
    """The Hold a reservation object stands for, or None (not Active, not exclusive)."""
    metadata = raw.get("metadata") or {}
    status = raw.get("status") or {}
    spec = raw.get("spec") or {}
    if status.get("phase") != "Active":
        return None
    allocated = status.get("allocated") or {}
    mode = allocated.get("mode") or spec.get("mode") or "exclusive"
    if mode != "exclusive" or not allocated.get("nodelist"):
        return None
    try:
        hosts = frozenset(Hostlist(str(allocated["nodelist"])))
    except (ValueError, TypeError):
        logger.warning("reservation %s/%s: cannot read status.allocated.nodelist %r",
                       metadata.get("namespace"), metadata.get("name"), allocated["nodelist"])
        return None
    key = reservation_key(str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
    return Hold(key=key, pool=str(spec.get("pool") or ""), hosts=hosts)


def node_patch(node: Mapping[str, Any], wanted: str | None) -> dict[str, Any] | None:
    """The merge patch that gives ``node`` our taint and label for reservation key ``wanted``
    (None: neither), or None when it already has exactly that. Other taints and labels are
    kept; the patch is conditional on the resourceVersion read."""
    metadata = node.get("metadata") or {}
    labels = metadata.get("labels") or {}
    taints = list((node.get("spec") or {}).get("taints") or [])
    ours = [t for t in taints if t.get("key") == RESERVED_TAINT_KEY]
    others = [t for t in taints if t.get("key") != RESERVED_TAINT_KEY]
    wanted_taints = [{"key": RESERVED_TAINT_KEY, "value": wanted, "effect": TAINT_EFFECT}] \
        if wanted is not None else []
    taints_ok = [{"key": t.get("key"), "value": t.get("value"), "effect": t.get("effect")}
                 for t in ours] == wanted_taints
    label_ok = labels.get(RESERVATION_LABEL) == wanted
    if taints_ok and label_ok:
        return None
    patch: dict[str, Any] = {"metadata": {"resourceVersion": metadata.get("resourceVersion")}}
    if not label_ok:
        patch["metadata"]["labels"] = {RESERVATION_LABEL: wanted}
    if not taints_ok:
        # The whole list (Node taints have no merge key): others' exactly as read. An empty
        # list would be kept as [] where there was none; null removes the field instead.
        patch["spec"] = {"taints": (others + wanted_taints) or None}
    return patch


class NodeEnforcer:
    """Keeps every known Node's respool taint and label equal to what the reservations say."""

    def __init__(self, api: NodeApi, *, concurrency: int = PATCH_CONCURRENCY) -> None:
        self.api = api
        self.enforcing: set[str] = set()  # pools with enforcement Taint
        self.holds: dict[str, Hold] = {}  # reservation uid -> its exclusive Active hold
        self.nodes: dict[str, dict[str, Any]] = {}  # name -> the Node as last seen
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._retry_delay: dict[str, float] = {}
        self._retry_handles: dict[str, asyncio.TimerHandle] = {}
        self.patches = 0  # Node patches sent (benchmarks and tests read it)

    # -- what the world says -------------------------------------------------------------------

    def wanted(self, node: str) -> str | None:
        keys = sorted(hold.key for hold in self.holds.values()
                      if node in hold.hosts and hold.pool in self.enforcing)
        return keys[0] if keys else None

    def on_pool(self, event_type: str | None, raw: Mapping[str, Any]) -> None:
        name = str((raw.get("metadata") or {}).get("name") or "")
        if not name:
            return
        enforcing = (event_type != "DELETED"
                     and (raw.get("spec") or {}).get("enforcement") == ENFORCE_TAINT)
        if enforcing == (name in self.enforcing):
            return
        if enforcing:
            self.enforcing.add(name)
        else:
            self.enforcing.discard(name)
        self._mark(host for hold in self.holds.values() if hold.pool == name
                   for host in hold.hosts)

    def on_reservation(self, event_type: str | None, raw: Mapping[str, Any]) -> None:
        uid = str((raw.get("metadata") or {}).get("uid") or "")
        if not uid:
            return
        before = self.holds.get(uid)
        after = None if event_type == "DELETED" else hold_of(raw)
        if before == after:
            return
        if after is None:
            self.holds.pop(uid, None)
        else:
            self.holds[uid] = after
        for hold in (before, after):
            if hold is not None:
                self._mark(hold.hosts)

    def on_node(self, event_type: str | None, raw: Mapping[str, Any]) -> None:
        name = str((raw.get("metadata") or {}).get("name") or "")
        if not name:
            return
        if event_type == "DELETED":
            self.nodes.pop(name, None)
            return
        self._note_node(name, dict(raw))
        self._mark([name])

    def _note_node(self, name: str, raw: dict[str, Any]) -> None:
        """Keep the newest version seen (a watch event may arrive after our patch's answer)."""
        old = self.nodes.get(name)
        if old is not None and _version(old) > _version(raw):
            return
        self.nodes[name] = raw

    def _mark(self, names: Iterable[str]) -> None:
        before = len(self._dirty)
        self._dirty.update(names)
        if len(self._dirty) != before:
            self._wake.set()

    # -- the loop ----------------------------------------------------------------------------

    def start(self) -> None:
        """Begin converging: every Node once (restart: reconcile from the listed state)."""
        self._mark(self.nodes)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="respool-node-enforcement")

    async def stop(self) -> None:
        for handle in self._retry_handles.values():
            handle.cancel()
        self._retry_handles.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def idle(self) -> bool:
        """Nothing left to do (tests and benchmarks wait for it)."""
        return not self._dirty and not self._retry_handles

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._dirty = self._dirty, set()
            await asyncio.gather(*(self._converge(name) for name in sorted(batch)))

    async def _converge(self, name: str) -> None:
        async with self._slots:
            node = self.nodes.get(name)
            if node is None:
                return  # no such Node (yet): its watch event marks it when it comes
            patch = node_patch(node, self.wanted(name))
            if patch is None:
                self._retry_delay.pop(name, None)
                return
            path = f"/api/v1/nodes/{name}"
            try:
                self.patches += 1
                answer = await self.api.merge_patch(path, patch)
            except ApiError as exc:
                if exc.not_found:
                    self.nodes.pop(name, None)
                    return
                if exc.conflict:
                    # Someone else wrote the Node since we read it: read it and go again.
                    with contextlib.suppress(ApiError):
                        self._note_node(name, await self.api.get(path))
                        self._mark([name])
                        return
                self._retry_later(name, exc)
                return
            self._retry_delay.pop(name, None)
            self._note_node(name, answer)
            logger.info("Node %s: %s", name, _describe(self.wanted(name)))

    def _retry_later(self, name: str, exc: Exception) -> None:
        delay = self._retry_delay.get(name, RETRY_FIRST)
        self._retry_delay[name] = min(delay * 2, RETRY_MAX)
        logger.warning("Node %s: cannot set the reservation taint and label (%s); retrying in "
                       "%.1fs", name, exc, delay)
        if name in self._retry_handles:
            return

        def again() -> None:
            self._retry_handles.pop(name, None)
            self._mark([name])

        self._retry_handles[name] = asyncio.get_running_loop().call_later(
            delay * random.uniform(0.8, 1.2), again)


def _version(node: Mapping[str, Any]) -> int:
    text = str((node.get("metadata") or {}).get("resourceVersion") or "0")
    return int(text) if text.isdigit() else 0


def _describe(key: str | None) -> str:
    return (f"tainted {RESERVED_TAINT_KEY}={key}:{TAINT_EFFECT}" if key is not None
            else "reservation taint and label removed")
