"""Where the key of status.bookingSeal lives: a Lease in the operator's own namespace.

Why a Lease (decided for issue 11; docs/operator.md "The booking seal key"):
- Not a Secret: the chart's least privilege has no access to Secrets (DESIGN §5), and a
  Secret made by the chart at install time would need Helm's `lookup` to survive upgrades,
  which `helm template` (Argo CD) does not run - every sync would make a new key, and every
  restart after it would re-plan every holder.
- Not a ConfigMap: the built-in `view`, `edit` and `admin` roles read ConfigMaps, and `view`
  is often bound across the cluster; none of them reads Leases (coordination.k8s.io).
- The operator's Role may create Leases in its namespace and read only its own two (the
  leader Lease and this one); an administrator of that namespace can of course read it, as
  they could read any Secret there.

The operator makes the key on its first start (32 random bytes, base64, in an annotation of
a Lease nobody holds) and reads it on every later one. A start that had to make the key can
check no seal yet: it restores what it finds as earlier versions did and seals it
(`BookingSeal.trust_unsealed`). That is the upgrade path, and also what deleting the Lease
does: the next start trusts every status once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from respool.controller.booking_seal import MIN_KEY_BYTES, BookingSeal
from respool.controller.kubeapi import ApiError

logger = logging.getLogger(__name__)

LEASE_NAME = "respool-booking-seal"
KEY_ANNOTATION = "respool.io/booking-seal-key"
#: Pauses between reads while the API server is away (it grows to the last).
WAIT_FIRST, WAIT_MAX = 0.5, 4.0


class _Api(Protocol):
    async def get(self, path: str) -> dict[str, Any]: ...

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]: ...


class SealKeyError(RuntimeError):
    """The key cannot be read nor made; the operator does not start without it."""


def _leases(namespace: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


def _key_of(lease: dict[str, Any], where: str) -> bytes:
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(KEY_ANNOTATION)
    try:
        key = base64.b64decode(str(text), validate=True) if text else b""
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < MIN_KEY_BYTES:
        raise SealKeyError(
            f"Lease {where} has no usable {KEY_ANNOTATION} annotation (base64 of at least "
            f"{MIN_KEY_BYTES} bytes). Delete the Lease to have a new key made: the next start "
            "then restores every booking unverified, once, and seals it")
    return key


async def load_booking_seal(
        api: _Api, namespace: str, name: str = LEASE_NAME, *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic) -> BookingSeal:
    """The operator's BookingSeal: its key read from the Lease, or made and stored there.

    While the API server is away (unreachable or answering 5xx) it waits for it, as the
    start-up listing does: an operator started during a control-plane upgrade must start
    within seconds of the server's return, not give up (tests/e2e/test_apiserver_restart.py).
    The key it would make is chosen once, so a create whose answer was lost and is found on
    the next attempt is still known as ours (and this start still trusts unsealed bookings)."""
    made = secrets.token_bytes(MIN_KEY_BYTES)
    delay = WAIT_FIRST
    waiting_since: float | None = None
    reminded = 0.0
    while True:
        try:
            seal = await _load_once(api, namespace, name, made)
        except SealKeyError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, ApiError) and cause.unavailable):
                raise
            now = monotonic()
            if waiting_since is None:
                waiting_since = reminded = now
                logger.warning("the API server %s is unavailable (%s); waiting for it before "
                               "reading the booking seal key", getattr(api, "server", ""), cause)
            elif now - reminded >= 60:
                reminded = now
                logger.warning("still waiting for the API server after %.0fs (%s)",
                               now - waiting_since, cause)
            await sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, WAIT_MAX)
            continue
        if waiting_since is not None:
            logger.info("the API server answered after %.1fs", monotonic() - waiting_since)
        return seal


async def _load_once(api: _Api, namespace: str, name: str, made: bytes) -> BookingSeal:
    where = f"{namespace}/{name}"
    path = f"{_leases(namespace)}/{name}"
    try:
        key = _key_of(await api.get(path), where)
        # Ours if an earlier attempt's create landed and only its answer was lost.
        return _seal(key, made, where)
    except ApiError as exc:
        if not exc.not_found:
            raise SealKeyError(f"cannot read the booking seal key (Lease {where}): {exc}") from exc
    encoded = base64.b64encode(made).decode()
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "respool",
                       "app.kubernetes.io/component": "booking-seal"},
            "annotations": {KEY_ANNOTATION: encoded},
        },
        # Nobody holds it: it only carries the key (see the module docstring).
        "spec": {},
    }
    try:
        lease = await api.post(_leases(namespace), body)
    except ApiError as exc:
        if exc.status != 409:
            raise SealKeyError(f"cannot create the booking seal key (Lease {where}): {exc}") \
                from exc
        # Made meanwhile: by another replica, or by our own create whose answer was lost.
        try:
            lease = await api.get(path)
        except ApiError as again:
            raise SealKeyError(f"cannot read the booking seal key (Lease {where}): {again}") \
                from again
    return _seal(_key_of(lease, where), made, where)


def _seal(key: bytes, made: bytes, where: str) -> BookingSeal:
    created = secrets.compare_digest(key, made)
    if created:
        logger.warning("booking seal: made a new key (Lease %s); this start restores bookings "
                       "without checking their seal (the first start with seals, or the Lease "
                       "was deleted) and seals them", where)
    return BookingSeal(key, trust_unsealed=created)
