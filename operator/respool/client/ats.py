"""The KISS ATS reservation handle, with the intended semantics and the shipped defects fixed.

`ResourceReservation` is the state machine of one reserved resource (see
`shared/reference/ats-reservation.md` §1.1). It talks to the reservation system only through
an injected *ATS client* (`ATSClient` below; `KubernetesATSClient` is the respool one), so the
same handle works over any server that speaks this protocol.

Differences from the shipped kissats code, all deliberate:

- the mode is sent with every request and availability probe (shipped: never sent);
- `max_wait` is enforced: it is passed to the server as the remaining wait budget, and a
  request made, or a start granted, past ``first_request_time + max_wait`` raises
  `MaxWaitExceeded` (shipped: never read);
- `first_request_time` is the time of the first request (shipped: `AttributeError`, D1);
- a successful claim stores the server's configuration without tripping the setter (D3) and
  accepts both `reservation_id` and `reservation_ID` (D4);
- when the server moves the start later, the end moves with it, so the window keeps the
  length asked for (shipped: the window silently shrinks);
- a late claim that exhausts the retries releases the hold the server just offered instead
  of leaking it; a context-manager entry that fails releases what it held;
- `__enter__` returns the handle (shipped: None); `release_reservation` returns the server's
  answer; the constructor validates its arguments; equality with other types is `False`
  (shipped: `RecursionError`) and handles are hashable by name.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol

from respool.client.errors import (
    InvalidConfigRequest,
    MaxWaitExceeded,
    ResourceRetryExceeded,
    ResourceUnavailable,
)

MODES = ("exclusive", "shared")
DEFAULT_DURATION = 3600.0
"""Seconds a window lasts when no end is given (the ATS default window is [now, now+1h])."""


class ATSClient(Protocol):
    """What `ResourceReservation` needs from a reservation server."""

    def get_future_reservation(
        self,
        resource_name: str,
        start: float,
        duration: float,
        config: Mapping[str, Any] | None,
        next_available: bool,
        *,
        mode: str = "exclusive",
        max_wait: float | None = None,
    ) -> tuple[str, float, float]:
        """Hold the resource: ``(pre_reservation_id, granted_start, claim_deadline)``.

        Raises `ResourceUnavailable` when nothing can be held.
        """
        ...

    def claim_reservation(self, pre_reservation_id: str) -> Mapping[str, Any]:
        """Claim a hold: a reply with ``reservation_id`` on success, else a new hold
        (``pre_reservation_id``, ``new_avail``, ``new_expire``)."""
        ...

    def release_resource(self, reservation_id: str) -> bool:
        """Release a hold or a claimed reservation; True when something was released."""
        ...

    def get_resource_availablity(
        self,
        resource_name: str,
        start: float | None = None,
        end: float | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        mode: str = "exclusive",
    ) -> dict[str, Any]:
        """``{"available": bool, "avail_start": float, "avail_end": float, ...}``."""
        ...


def _check_mode(mode: object) -> str:
    if mode not in MODES:
        raise InvalidConfigRequest(f"reservation mode must be one of {MODES}, got {mode!r}")
    return str(mode)


def _check_epoch(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidConfigRequest(f"{what} must be a finite epoch-second number, got {value!r}")
    return float(value)


def _check_max_wait(value: object) -> float | None:
    if value is None:
        return None
    seconds = _check_epoch(value, "max_wait")
    if seconds < 0:
        raise InvalidConfigRequest(f"max_wait must be >= 0 seconds or None, got {value!r}")
    return seconds


class ResourceReservation:
    """One reservable resource, as the KISS ATS `ResourceReservation` handle.

    State follows from which ID is held: IDLE (none), PRE_RESERVED (`pre_reservation_id`),
    CLAIMED (`reservation_id`). `request_reservation` (re)books a window, `claim_reservation`
    turns the hold into a reservation, `release_reservation` gives it back. As a context
    manager the handle requests the default window, claims it and releases on exit.

    `retry_count` counts unsuccessful requests and late claims over the handle's whole life
    (it is never reset, as in ATS); past `max_retry` they raise `ResourceRetryExceeded`.
    """

    def __init__(
        self,
        resource_name: str,
        ats_client: ATSClient,
        mode: str = "exclusive",
        max_retry: int = 5,
        max_wait: float | None = None,
    ) -> None:
        if not isinstance(resource_name, str) or not resource_name:
            raise InvalidConfigRequest(f"resource_name must be a non-empty string, got {resource_name!r}")
        if isinstance(max_retry, bool) or not isinstance(max_retry, int) or max_retry < 0:
            raise InvalidConfigRequest(f"max_retry must be an integer >= 0, got {max_retry!r}")
        self._name = resource_name
        self._client = ats_client
        self._mode = _check_mode(mode)
        self._max_retry = max_retry
        self._max_wait = _check_max_wait(max_wait)
        self._retry_count = 0
        self._first_request_time: float | None = None
        self._start_time: float | None = None
        self._end_time: float | None = None
        self._pre_reservation_id: str | None = None
        self._pre_res_expire: float | None = None
        self._reservation_id: str | None = None
        self._requested_config: dict[str, Any] | None = None
        self._server_config: dict[str, Any] | None = None

    # -- identity -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """Name of the resource (for respool: the ResourcePool)."""
        return self._name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResourceReservation):
            return self._name == other._name
        if isinstance(other, str):
            return self._name == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._name)

    def __repr__(self) -> str:
        if self._reservation_id is not None:
            state = f"claimed {self._reservation_id}"
        elif self._pre_reservation_id is not None:
            state = f"pre-reserved {self._pre_reservation_id}"
        else:
            state = "idle"
        return f"<ResourceReservation {self._name!r} {self._mode} {state}>"

    # -- settings -------------------------------------------------------------------------

    @property
    def reservation_mode(self) -> str:
        """``"exclusive"`` or ``"shared"``; sent with the next request."""
        return self._mode

    @reservation_mode.setter
    def reservation_mode(self, mode: str) -> None:
        self._mode = _check_mode(mode)

    @property
    def max_retry(self) -> int:
        """Unsuccessful attempts allowed before `ResourceRetryExceeded`."""
        return self._max_retry

    @property
    def max_wait_time(self) -> float | None:
        """Seconds after the first request by which the resource must be available.

        None waits indefinitely. Enforced by `request_reservation`.
        """
        return self._max_wait

    @max_wait_time.setter
    def max_wait_time(self, seconds: float | None) -> None:
        self._max_wait = _check_max_wait(seconds)

    @property
    def resource_config(self) -> dict[str, Any] | None:
        """The configuration the server granted when claimed, else the one to request."""
        if self._reservation_id is not None:
            return self._server_config
        return self._requested_config

    @resource_config.setter
    def resource_config(self, config: Mapping[str, Any] | None) -> None:
        if self._pre_reservation_id is not None or self._reservation_id is not None:
            raise InvalidConfigRequest(
                f"the configuration of {self._name!r} cannot change while it is reserved; "
                "release it first"
            )
        if config is not None and not isinstance(config, Mapping):
            raise InvalidConfigRequest(f"resource_config must be a mapping or None, got {config!r}")
        self._requested_config = None if config is None else dict(config)

    # -- state ----------------------------------------------------------------------------

    @property
    def retry_count(self) -> int:
        """Unsuccessful attempts to reserve or claim so far."""
        return self._retry_count

    @property
    def first_request_time(self) -> float | None:
        """Epoch time of the first `request_reservation` call (None before it)."""
        return self._first_request_time

    @property
    def start_time(self) -> float:
        """Epoch start of the window; fixed to now when read while unset (ATS semantics)."""
        if self._start_time is None:
            self._start_time = time.time()
        return self._start_time

    @property
    def end_time(self) -> float:
        """Epoch end of the window; ``start_time + 3600`` when read while unset."""
        if self._end_time is None:
            self._end_time = self.start_time + DEFAULT_DURATION
        return self._end_time

    @property
    def pre_reservation_id(self) -> str | None:
        """ID of the held (not yet claimed) window; None when idle or claimed."""
        return self._pre_reservation_id

    @property
    def pre_res_expire(self) -> float | None:
        """Epoch deadline to claim the held window; None when nothing is held unclaimed."""
        return self._pre_res_expire

    @property
    def reservation_id(self) -> str | None:
        """ID of the claimed reservation; None unless claimed."""
        return self._reservation_id

    # -- operations -----------------------------------------------------------------------

    def add_retry_count(self) -> None:
        """Count one more unsuccessful attempt; raise once there were more than `max_retry`."""
        self._retry_count += 1
        if self._retry_count > self._max_retry:
            raise ResourceRetryExceeded(
                f"{self._name!r}: {self._retry_count} unsuccessful attempts, "
                f"more than max_retry={self._max_retry}"
            )

    def _wait_deadline(self) -> float | None:
        if self._max_wait is None or self._first_request_time is None:
            return None
        return self._first_request_time + self._max_wait

    def request_reservation(
        self,
        new_start_time: float | None = None,
        new_end_time: float | None = None,
        next_available: bool = True,
    ) -> bool:
        """Release whatever is held, then hold ``[new_start_time, new_end_time)``.

        Defaults: now and one hour after the start. With `next_available` the server may grant
        a later start; the end then moves by the same amount. Returns True when a window is
        held, False (counting a retry) when the server has nothing; raises
        `ResourceRetryExceeded` past `max_retry` and `MaxWaitExceeded` when the resource
        cannot be had within `max_wait` of the first request.
        """
        start = None if new_start_time is None else _check_epoch(new_start_time, "new_start_time")
        end = None if new_end_time is None else _check_epoch(new_end_time, "new_end_time")
        now = time.time()
        start = now if start is None else start
        end = start + DEFAULT_DURATION if end is None else end
        if end <= start:
            raise InvalidConfigRequest(
                f"new_end_time ({end}) must be after the start ({start})"
            )
        self.release_reservation()
        if self._first_request_time is None:
            self._first_request_time = now
        deadline = self._wait_deadline()
        remaining: float | None = None
        if deadline is not None:
            remaining = deadline - now
            if remaining < 0:
                raise MaxWaitExceeded(
                    f"{self._name!r}: max_wait of {self._max_wait:g}s since the first request "
                    "has passed",
                    reason="MaxWaitExceeded",
                )
        self._start_time, self._end_time = start, end
        try:
            pre_id, granted_start, claim_deadline = self._client.get_future_reservation(
                self._name,
                start,
                end - start,
                self._requested_config,
                next_available,
                mode=self._mode,
                max_wait=remaining,
            )
        except MaxWaitExceeded:
            raise
        except ResourceUnavailable:
            self.add_retry_count()
            return False
        if deadline is not None and granted_start > max(deadline, start):
            # A server that ignores max_wait offered a window we promised not to wait for.
            self._client.release_resource(pre_id)
            raise MaxWaitExceeded(
                f"{self._name!r}: the earliest window starts at {granted_start:.0f}, "
                f"after the max_wait deadline {deadline:.0f}",
                reason="MaxWaitExceeded",
                avail_start=granted_start,
            )
        self._pre_reservation_id = pre_id
        self._pre_res_expire = float(claim_deadline)
        self._start_time = float(granted_start)
        self._end_time = end + (self._start_time - start)
        return True

    def claim_reservation(self) -> bool:
        """Turn the held window into a reservation.

        True on success (also when already claimed). A late claim gets a fresh hold from the
        server: it is stored, a retry is counted, and False is returned. Raises
        `ResourceUnavailable` when nothing is held or the hold is gone.
        """
        if self._reservation_id is not None:
            return True
        pre_id = self._pre_reservation_id
        if pre_id is None:
            raise ResourceUnavailable(
                f"{self._name!r}: nothing to claim; call request_reservation() first"
            )
        try:
            reply = self._client.claim_reservation(pre_id)
        except ResourceUnavailable:
            self._pre_reservation_id = None
            self._pre_res_expire = None
            self.add_retry_count()
            raise
        reservation_id = reply.get("reservation_id") or reply.get("reservation_ID")
        if reservation_id is not None:
            self._reservation_id = str(reservation_id)
            self._pre_reservation_id = None
            self._pre_res_expire = None
            if reply.get("start_time") is not None:
                self._start_time = float(reply["start_time"])
            if reply.get("expire_time") is not None:
                self._end_time = float(reply["expire_time"])
            config = reply.get("resource_config")
            self._server_config = None if config is None else dict(config)
            return True
        try:
            new_pre_id = str(reply["pre_reservation_id"])
            new_start = float(reply["new_avail"])
            new_expire = float(reply["new_expire"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ResourceUnavailable(
                f"{self._name!r}: the server neither granted the claim nor offered a new "
                f"window (reply {dict(reply)!r})"
            ) from exc
        old_start = self.start_time
        self._pre_reservation_id = new_pre_id
        self._pre_res_expire = new_expire
        self._start_time = new_start
        self._end_time = self.end_time + (new_start - old_start)
        try:
            self.add_retry_count()
        except ResourceRetryExceeded:
            self.release_reservation()
            raise
        return False

    def release_reservation(self) -> bool:
        """Give back the held window or the claimed reservation; True if the server released it.

        With nothing held, no call is made and False is returned. If the server cannot be
        reached the ID is kept, so the release can be tried again.
        """
        held = self._pre_reservation_id or self._reservation_id
        if held is None:
            return False
        released = bool(self._client.release_resource(held))
        self._pre_reservation_id = None
        self._reservation_id = None
        self._pre_res_expire = None
        self._server_config = None
        return released

    def get_next_avail_time(self) -> dict[str, Any]:
        """Ask the server when the window could be had; reserves nothing.

        Returns at least ``available`` (the requested window is free), ``avail_start`` and
        ``avail_end`` (the soonest window of the same length).
        """
        return dict(
            self._client.get_resource_availablity(
                self._name,
                self.start_time,
                self.end_time,
                config=self._requested_config,
                mode=self._mode,
            )
        )

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> ResourceReservation:
        """Request the default window and claim it at once; release and raise on failure."""
        try:
            if not self.request_reservation():
                raise ResourceUnavailable(f"{self._name!r} could not be reserved")
            if not self.claim_reservation():
                raise ResourceUnavailable(f"{self._name!r} could not be claimed in time")
        except BaseException as failure:
            try:
                self.release_reservation()
            except Exception as cleanup_error:
                failure.add_note(f"releasing {self._name!r} afterwards failed too: {cleanup_error}")
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release_reservation()

    def __del__(self) -> None:
        # The ATS handle releases when it is dropped. Best effort only: at interpreter
        # shutdown the transport may already be gone, and a finalizer must never raise.
        try:
            if getattr(self, "_pre_reservation_id", None) or getattr(self, "_reservation_id", None):
                self.release_reservation()
        except Exception:
            pass
