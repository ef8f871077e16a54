"""The errors of respool's readers of the Kubernetes API, without the Kubernetes client.

Defined here, outside `respool.client` (whose package needs the ``client`` extra), so that the
operator's own readers - the dashboard it serves (`respool.dashboard.rest`) - raise the very
classes the client raises. `respool.client.errors` re-exports them all.

The three KISS ATS names (`ResourceUnavailable`, `ResourceRetryExceeded`, `InvalidConfigRequest`)
keep their meaning so that ported ATS code catches what it always caught. The others say *why*
a call could not be served, so that a person reading the traceback knows what to fix.
"""


from __future__ import annotations

from typing import Any

from respool import GROUP, VERSION


class RespoolError(Exception):
    """Base class of every error the respool client raises."""


class ResourceUnavailable(RespoolError):
    """Nothing could be held for the request (ATS semantics: counts a retry)."""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        avail_start: float | None = None,
        avail_end: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.avail_start = avail_start
        self.avail_end = avail_end


class MaxWaitExceeded(ResourceUnavailable):
    """The resource could not be had within the handle's or reservation's `max_wait`.

    A subclass of `ResourceUnavailable` so that ATS code that catches the latter still works,
    but `ResourceReservation.request_reservation` raises it instead of returning False: waiting
    longer is exactly what the caller said it does not want.
    """


class ResourceRetryExceeded(RespoolError):
    """More unsuccessful attempts than `max_retry` allows."""


class InvalidConfigRequest(RespoolError, ValueError):
    """The request or its configuration is invalid (or may not be changed now)."""


class ClusterUnreachable(RespoolError):
    """The Kubernetes API server could not be reached."""


class NotInstalled(RespoolError):
    """The respool CRDs are not installed on the cluster."""


class PoolNotFound(RespoolError):
    """The named ResourcePool does not exist."""


class AccessDenied(RespoolError):
    """The API server rejected the credentials or forbids the operation."""


class NamespaceForbidden(AccessDenied):
    """The namespace may not be used: RBAC denies it, it does not exist, or the pool refuses it."""


class ReservationNotFound(RespoolError):
    """No reservation with that name or ID exists."""


class OperatorNotResponding(RespoolError):
    """The respool operator did not evaluate a reservation in time (is it running?)."""


class ReservationTimeout(RespoolError):
    """A reservation was not granted within the caller's timeout."""


class AlreadyExists(RespoolError):
    """An object of that name exists already (and is not the one this call created)."""


class ServerError(RespoolError):
    """The API server answered 5xx: the request may or may not have been carried out."""


class ReservationFailed(ResourceUnavailable):
    """The operator put the reservation into phase Failed (the reason says why)."""


class ResourceVersionExpired(RespoolError):
    """A watch's resourceVersion is too old (HTTP 410 Gone): list again."""


POOLS = "resourcepools"
RESERVATIONS = "resourcereservations"


def translate(
    status: int,
    message: str,
    details: dict[str, Any],
    *,
    server: str,
    namespace: str | None = None,
    pool: str | None = None,
) -> RespoolError:
    """The client's exception for an API server's error answer (`status`, the Status object's
    `message` and `details`), whichever HTTP library received it."""
    if status == 401:
        return AccessDenied(f"the API server at {server} rejected the credentials: {message}")
    if status == 403:
        if namespace is not None:
            return NamespaceForbidden(f"forbidden in namespace {namespace!r}: {message}")
        return AccessDenied(f"forbidden: {message}")
    if status == 404:
        if details.get("kind") == "namespaces":
            return NamespaceForbidden(f"namespace {namespace or details.get('name')!r} does not exist")
        if details.get("kind") == POOLS and pool is not None:
            return PoolNotFound(f"ResourcePool {pool!r} does not exist")
        if details.get("name"):
            if details.get("kind") == RESERVATIONS:
                return ReservationNotFound(
                    f"ResourceReservation {namespace}/{details['name']} does not exist"
                )
            return ReservationNotFound(message)
        return NotInstalled(
            f"the respool CRDs ({GROUP}/{VERSION}) are not installed on "
            f"{server}: apply crds/ (or install the Helm chart) first"
        )
    if status == 409:
        return AlreadyExists(message)
    if status == 422 or status == 400:
        return InvalidConfigRequest(f"rejected by the API server: {message}")
    if status >= 500:
        return ServerError(f"API server error {status}: {message}")
    return RespoolError(f"API server error {status}: {message}")


def watch_change(plural: str, resource_version: str | None,
                 event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """One decoded watch event as (type, object), whichever HTTP library received it; None for
    an event without an object. An ERROR event raises: 410 Gone as `ResourceVersionExpired`
    (list again), anything else as `RespoolError`."""
    kind = str(event.get("type") or "")
    obj = event.get("object")
    if kind == "ERROR":
        code = obj.get("code") if isinstance(obj, dict) else None
        if code == 410:
            raise ResourceVersionExpired(f"{plural} at {resource_version}")
        raise RespoolError(f"watch of {plural} failed: {obj!r:.200}")
    return (kind, obj) if isinstance(obj, dict) else None
