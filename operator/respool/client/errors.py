"""Exceptions of the respool client.

The three KISS ATS names (`ResourceUnavailable`, `ResourceRetryExceeded`, `InvalidConfigRequest`)
keep their meaning so that ported ATS code catches what it always caught. The others say *why*
a call could not be served, so that a person reading the traceback knows what to fix.
"""

from __future__ import annotations


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
