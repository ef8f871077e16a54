"""Leader election over a `coordination.k8s.io/v1` Lease, the way client-go does it.

Several `respool run --leader-elect` replicas may run; only the holder of the Lease decides
and writes (DESIGN.md §3: never two writers for one pool). The others stand by: alive for
their liveness probe, idle, and `respool_leader` is 0 on their metrics.

The algorithm is client-go's `leaderelection` package:
- A candidate reads the Lease. It may take it when nobody holds it (no Lease, or an empty
  `holderIdentity` after a release) or when the record has not changed for the holder's
  `leaseDurationSeconds`, measured on the candidate's *own* monotonic clock from the moment it
  first saw that record. Clocks of different machines are never compared.
- Every write is an optimistic-concurrency update (`metadata.resourceVersion`): of two
  candidates racing for an expired Lease, exactly one update succeeds.
- The leader renews every retry period. Its leadership is valid until `sent + renew_deadline`,
  where `sent` is the moment it *sent* its last successful renewal: a standby can take over no
  earlier than `observed + lease_duration >= sent + lease_duration`, and
  `renew_deadline < lease_duration`, so the leader has stopped before anyone else can start.
- Past that point the process exits at once (`os._exit`): see `LeaderElector._lose`.
- On a clean shutdown the leader releases the Lease (empty holder, 1 s duration), so that a
  standby takes over at its next retry instead of waiting out the lease duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from prometheus_client import Gauge

from respool.controller.kubeapi import ApiError, KubeApi

logger = logging.getLogger("respool.leader")

LEADER = Gauge(
    "respool_leader",
    "1 while this process holds the leader Lease and runs the controller, 0 while it stands by "
    "(only with --leader-elect).",
)

# client-go's JitterFactor: a candidate waits retry_period * (1 + random[0, 1.2)) between
# attempts, so that standbys do not hammer the API server in lock step.
JITTER_FACTOR = 1.2
# Exit status when leadership is lost (the Deployment restarts the Pod as a standby).
EXIT_LEADERSHIP_LOST = 1


@dataclass(frozen=True)
class LeaseTimings:
    """client-go's defaults (and controller-runtime's): 15 s / 10 s / 2 s."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def check(self) -> None:
        """ValueError unless lease_duration > renew_deadline > retry_period * jitter > 0."""
        if not self.retry_period > 0:
            raise ValueError("the retry period must be > 0")
        if not self.renew_deadline > self.retry_period * JITTER_FACTOR:
            raise ValueError(
                f"the renew deadline ({self.renew_deadline:g}s) must be more than "
                f"{JITTER_FACTOR:g} x the retry period ({self.retry_period:g}s)")
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(
                f"the lease duration ({self.lease_duration:g}s) must be more than the renew "
                f"deadline ({self.renew_deadline:g}s): a leader that cannot renew must stop "
                "before a standby may take over")


def default_identity() -> str:
    """The Pod's name (POD_NAME, from the downward API; else the host name) + a random suffix,
    so that a restarted container never mistakes its predecessor's lease for its own."""
    base = os.environ.get("POD_NAME") or os.uname().nodename or "respool"
    return f"{base}_{secrets.token_hex(4)}"


def _micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace, safe='')}/leases"
    return path if name is None else f"{path}/{quote(name, safe='')}"


class LeaderElector:
    """Acquire, keep and release one Lease. Use from one event loop.

    `api_factory` builds a fresh `KubeApi` (it is called again after a 401, so that a rotated
    service-account token is picked up). Its requests should not retry for long: every call
    here is bounded by the renew deadline anyway.
    """

    def __init__(
        self,
        api_factory: Callable[[], KubeApi],
        *,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaseTimings = LeaseTimings(),  # frozen: safe to share
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        timings.check()
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timings = timings
        self._api_factory = api_factory
        self._api: KubeApi | None = None
        self._exit_process = exit_process
        # What this candidate last saw of the Lease, and when (monotonic) it first saw it.
        self._observed_version: str | None = None
        self._observed_spec: dict[str, Any] = {}
        self._observed_at = 0.0
        # While leading: the monotonic instant until which leadership is certainly ours.
        self._valid_until: float | None = None
        self._lock = threading.Lock()
        self._watchdog: threading.Thread | None = None
        self._stopping = threading.Event()
        self._renewer: asyncio.Task[None] | None = None
        self._last_holder: str | None = None
        LEADER.set(0)

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def leading(self) -> bool:
        with self._lock:
            return self._valid_until is not None

    def holder(self) -> str:
        """The holder last seen on the Lease ('' if none)."""
        return str(self._observed_spec.get("holderIdentity") or "")

    # -- the API -----------------------------------------------------------------------------

    def _client(self) -> KubeApi:
        if self._api is None:
            self._api = self._api_factory()
        return self._api

    async def _reconnect(self) -> None:
        if self._api is not None:
            await self._api.close()
        self._api = None

    async def close(self) -> None:
        await self._reconnect()

    def _observe(self, lease: dict[str, Any]) -> None:
        metadata = lease.get("metadata") or {}
        version = str(metadata.get("resourceVersion") or "")
        if version != self._observed_version:
            self._observed_version = version
            self._observed_spec = dict(lease.get("spec") or {})
            self._observed_at = time.monotonic()

    async def _try_acquire_or_renew(self) -> bool:
        """One attempt (client-go's tryAcquireOrRenew). True: this process holds the Lease
        until `sent + renew_deadline`. False: someone else holds it, or a race was lost."""
        api = self._client()
        sent = time.monotonic()
        now = _micro_time(datetime.now(UTC))
        duration = math.ceil(self.timings.lease_duration)
        try:
            lease = await api.get(lease_path(self.namespace, self.name))
        except ApiError as exc:
            if not exc.not_found:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": duration,
                         "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
            }
            try:
                created = await api.post(lease_path(self.namespace), body)
            except ApiError as race:
                if race.status == 409:  # AlreadyExists: another candidate was first
                    return False
                raise
            self._observe(created)
            self._hold_until(sent)
            return True
        self._observe(lease)
        spec = self._observed_spec
        holder = str(spec.get("holderIdentity") or "")
        held_for = float(spec.get("leaseDurationSeconds") or self.timings.lease_duration)
        if holder and holder != self.identity:
            if self.leading:
                # Someone took the Lease while we believed we held it (our renewals stalled
                # past its duration): stop now, not at our own deadline.
                self._lose(f"the Lease was taken over by {holder}")
            if self._observed_at + held_for > time.monotonic():
                return False
        new_spec = dict(spec)
        new_spec.update(holderIdentity=self.identity, leaseDurationSeconds=duration,
                        renewTime=now)
        if holder != self.identity:
            new_spec["acquireTime"] = now
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace,
                         "resourceVersion": self._observed_version},
            "spec": new_spec,
        }
        try:
            updated = await api.request("PUT", lease_path(self.namespace, self.name), body=body)
        except ApiError as exc:
            if exc.conflict:  # changed since we read it: somebody else renewed or took it
                return False
            raise
        self._observe(updated)
        self._hold_until(sent)
        return True

    async def _attempt(self, timeout: float) -> bool:
        """One attempt with a time bound; API and network errors count as a failed attempt."""
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
            # that arrives as the attempt completes, and release() would wait forever.
            async with asyncio.timeout(timeout):
                return await self._try_acquire_or_renew()
        except TimeoutError:
            logger.warning("lease %s: no answer from the API server within %.1fs",
                           self.where, timeout)
        except ApiError as exc:
            if exc.status == 401:
                # A rotated service-account token: log in again on the next attempt.
                await self._reconnect()
            if exc.status == 403:
                logger.error("lease %s: forbidden (%s); the operator's Role must allow get, "
                             "create and update on leases in namespace %s",
                             self.where, exc.message, self.namespace)
            else:
                logger.warning("lease %s: %s", self.where, exc)
        except (OSError, ValueError) as exc:
            logger.warning("lease %s: %s: %s", self.where, type(exc).__name__, exc)
        return False

    # -- acquire -----------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Return once this process holds the Lease; until then stand by (cancellable)."""
        logger.info("leader election: candidate %s for lease %s", self.identity, self.where)
        announced = False
        while True:
            if await self._attempt(self.timings.renew_deadline):
                LEADER.set(1)
                logger.info("leader election: %s acquired lease %s; this replica now runs the "
                            "controller", self.identity, self.where)
                self._start_watchdog()
                return
            holder = self.holder()
            if holder and (not announced or holder != self._last_holder):
                logger.info("leader election: standing by, lease %s is held by %s; this replica "
                            "makes no decisions until it expires or is released",
                            self.where, holder)
                announced = True
            self._last_holder = holder
            await asyncio.sleep(self.timings.retry_period
                                * (1 + JITTER_FACTOR * secrets.randbelow(1000) / 1000))

    # -- keep --------------------------------------------------------------------------------

    def _hold_until(self, sent: float) -> None:
        with self._lock:
            self._valid_until = sent + self.timings.renew_deadline

    def start_renewing(self) -> asyncio.Task[None]:
        """Renew in the background of the running loop until `release()` or loss."""
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_loop(), name="respool-lease-renewer")
        return self._renewer

    async def _renew_loop(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(self.timings.retry_period)
            if self._stopping.is_set():
                return
            with self._lock:
                valid_until = self._valid_until
            if valid_until is None:
                return
            remaining = valid_until - time.monotonic()
            if remaining <= 0:
                self._lose(f"not renewed within the renew deadline "
                           f"({self.timings.renew_deadline:g}s)")
                return
            # Retry within what is left of the deadline (client-go polls every retry period).
            if not await self._attempt(remaining):
                logger.warning("leader election: renewal of lease %s failed; leadership ends "
                               "in %.1fs unless a renewal succeeds", self.where,
                               max(0.0, valid_until - time.monotonic()))

    def _start_watchdog(self) -> None:
        """A thread, not a task: it fires even while the event loop is blocked (a long
        CPU-bound restore, a stuck handler), which is exactly when renewals stop."""
        if self._watchdog is not None:
            return
        self._watchdog = threading.Thread(target=self._watch_deadline,
                                          name="respool-lease-watchdog", daemon=True)
        self._watchdog.start()

    def _watch_deadline(self) -> None:
        while not self._stopping.wait(0.1):
            with self._lock:
                valid_until = self._valid_until
            if valid_until is not None and time.monotonic() > valid_until:
                self._lose(f"not renewed within the renew deadline "
                           f"({self.timings.renew_deadline:g}s)")
                return

    def _lose(self, why: str) -> None:
        """Leadership is gone: end the process now.

        Exiting is the only safe choice. The controller's actors may be in the middle of a
        decision, with status writes queued or in flight; any of them completing after a
        standby has taken over would be a second writer for the same pool (a core granted
        twice, an ID minted twice). Cancelling tasks cannot stop a write that is already on
        its way, and a graceful shutdown would still run kopf's cleanup, which flushes pool
        status. A hard exit stops every write at once; the API server holds all state, so
        the Pod's restart comes back as a clean standby, and the new leader rebuilds every
        pool from the reservations' status. (It is what controller-runtime's managers do:
        "leader election lost" ends the process.)
        """
        with self._lock:
            if self._stopping.is_set():
                return  # released on purpose: nothing left to lose
            self._valid_until = None
        LEADER.set(0)
        logger.critical("leader election: lost lease %s (%s); exiting now so that this "
                        "replica writes nothing more", self.where, why)
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
            sys.stdout.flush()
        self._exit_process(EXIT_LEADERSHIP_LOST)

    # -- release -----------------------------------------------------------------------------

    async def release(self) -> None:
        """Stop renewing and hand the Lease back (empty holder, 1 s), so a standby takes over
        at its next attempt instead of after the lease duration. Call only once this process
        has stopped writing."""
        self._stopping.set()
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(self.timings.renew_deadline):
                    await self._renewer
            self._renewer = None
        with self._lock:
            was_leading = self._valid_until is not None
            self._valid_until = None
        LEADER.set(0)
        if not was_leading:
            return
        try:
            async with asyncio.timeout(self.timings.renew_deadline):
                released = await self._hand_back()
        except (TimeoutError, ApiError, OSError) as exc:
            # The standby takes over after the lease duration instead: slower, still safe.
            logger.warning("leader election: could not release lease %s (%s); a standby takes "
                           "over when it expires", self.where, exc)
            return
        if released:
            logger.info("leader election: released lease %s", self.where)

    async def _hand_back(self) -> bool:
        """Empty the holder with an optimistic-concurrency update. A renewal cancelled in
        flight may have landed unseen (a 409 here): read again and retry while we still hold
        it; someone else holding it means there is nothing to release."""
        api = self._client()
        path = lease_path(self.namespace, self.name)
        for _attempt in range(3):
            now = _micro_time(datetime.now(UTC))
            spec = dict(self._observed_spec)
            spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=now,
                        acquireTime=now)
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "resourceVersion": self._observed_version},
                "spec": spec,
            }
            try:
                await api.request("PUT", path, body=body)
                return True
            except ApiError as exc:
                if not exc.conflict:
                    raise
            self._observe(await api.get(path))
            if self.holder() != self.identity:
                return False
        raise ApiError(409, "the Lease kept changing while it was being released", "Conflict")


__all__ = ["EXIT_LEADERSHIP_LOST", "LEADER", "LeaderElector", "LeaseTimings", "default_identity",
           "lease_path"]
