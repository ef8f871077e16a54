"""`KubernetesATSClient`: the KISS ATS server protocol over respool ResourceReservations.

Each ATS hold is one ResourceReservation with ``claimPolicy: Manual`` in the client's
namespace: the operator books the window (``Scheduled``, ``preReservationId``), the claim sets
``spec.claimed: true`` and waits for ``Active`` (``reservationId``), a release deletes the
object. A request the operator cannot grant is deleted again at once, so nothing is left
behind, and surfaces as `ResourceUnavailable` (the handle counts a retry).

Every wait is bounded: `operator_timeout` for the operator to evaluate a change (plus, for a
claim, the time until the window starts), `request_timeout` for each API call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from respool.api import format_time, parse_time
from respool.client import availability
from respool.client.ats import DEFAULT_DURATION
from respool.client.errors import (
    InvalidConfigRequest,
    MaxWaitExceeded,
    NamespaceForbidden,
    OperatorNotResponding,
    PoolNotFound,
    ReservationFailed,
    ReservationNotFound,
    ResourceUnavailable,
    RespoolError,
)
from respool.client.kube import ClientBase, KubeAPI, Object, evaluated
from respool.client.objects import Reservation, reservation_body
from respool.controller.lifecycle import SpecError
from respool.pool import InfeasibleRequest

_INVALID_REASONS = ("Infeasible", "InvalidSpec")


def _next_available(obj: Mapping[str, Any]) -> tuple[bool | None, float | None, float | None]:
    found = (obj.get("status") or {}).get("nextAvailable") or {}
    start, end = found.get("availStart"), found.get("availEnd")
    return (
        found.get("available"),
        parse_time(start) if isinstance(start, str) and start else None,
        parse_time(end) if isinstance(end, str) and end else None,
    )


def unavailable_error(obj: Mapping[str, Any]) -> RespoolError:
    """The exception that says why the operator did not grant this reservation."""
    view = Reservation.from_object(obj)
    reason = view.reason or ("Failed" if view.phase == "Failed" else None)
    where = f"ResourceReservation {view.namespace}/{view.name} on pool {view.pool!r}"
    text = f"{where}: {view.describe_state()}"
    if reason == "PoolNotFound":
        # The operator answers this also when the pool does not admit the namespace (so
        # that a namespace learns nothing about pools it may not use).
        return PoolNotFound(f"ResourcePool {view.pool!r} does not exist or does not admit "
                            f"namespace {view.namespace!r} ({where})")
    if reason == "NamespaceNotAllowed":
        return NamespaceForbidden(
            f"pool {view.pool!r} does not accept reservations from namespace "
            f"{view.namespace!r}: {view.message or 'namespaceSelector does not match'}"
        )
    if reason in _INVALID_REASONS:
        return InvalidConfigRequest(text)
    _, avail_start, avail_end = _next_available(obj)
    if reason == "MaxWaitExceeded":
        return MaxWaitExceeded(text, reason=reason, avail_start=avail_start, avail_end=avail_end)
    if view.phase == "Failed":
        return ReservationFailed(text, reason=reason, avail_start=avail_start, avail_end=avail_end)
    return ResourceUnavailable(text, reason=reason, avail_start=avail_start, avail_end=avail_end)


def granted_config(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration the server granted: what was asked, the echoed config, and the
    allocated ranks and nodes."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    view = Reservation.from_object(obj)
    granted: dict[str, Any] = {
        key: spec[key] for key in ("request", "resources", "constraints") if key in spec
    }
    granted["config"] = status.get("config") if status.get("config") is not None else spec.get("config", {})
    granted["ranks"] = view.ranks
    granted["nodelist"] = view.nodelist
    granted["nodes"] = view.nodes
    return granted


class KubernetesATSClient(ClientBase):
    """The ATS client for respool: `resource_name` names a ResourcePool.

    ``resource_config`` may carry a request (``{"nodes": 2, "gpusPerSlot": 1}``, or
    ``request``/``resources``/``constraints``/``config`` given whole); the default is one whole node.
    """

    def __init__(
        self,
        namespace: str = "default",
        kubeconfig: str | None = None,
        *,
        context: str | None = None,
        operator_timeout: float = 30.0,
        request_timeout: float = 30.0,
        api: KubeAPI | None = None,
    ) -> None:
        if namespace is None:  # the seed's default is a fixed namespace, not the context's
            raise InvalidConfigRequest("namespace must be a non-empty string, got None")
        super().__init__(namespace, kubeconfig, context=context, request_timeout=request_timeout,
                         operator_timeout=operator_timeout, api=api)
        # ID (pre-reservation or reservation) -> object name, for the IDs this client minted;
        # other IDs are looked up by listing the namespace.
        self._names: dict[str, str] = {}

    # -- helpers --------------------------------------------------------------------------

    def _create_and_evaluate(self, body: dict[str, Any], pool: str) -> Object:
        """Create `body` and wait for the operator's first verdict; on any failure the
        object is deleted again."""
        self.api.check_pool(pool)
        created = self.api.create_reservation(self.namespace, body, pool=pool)
        name = created["metadata"]["name"]
        try:
            found = self.api.wait_reservation(self.namespace, name, evaluated, self.operator_timeout)
        except BaseException as exc:
            self._discard_after(name, exc)
            raise
        if found is None:
            error = OperatorNotResponding(
                f"the respool operator did not evaluate ResourceReservation "
                f"{self.namespace}/{name} within {self.operator_timeout:g}s; is it running "
                "(`respool run`, or the Helm chart's Deployment)?"
            )
            self._discard_after(name, error)
            raise error
        return found

    def _discard_after(self, name: str, error: BaseException) -> None:
        """Clean up after `error`, which the caller raises next: a failing clean-up never
        hides it (it is added to the error's notes instead)."""
        try:
            self._discard(name)
        except Exception as cleanup:  # any failure: it must not mask `error`
            error.add_note(f"also, deleting ResourceReservation {self.namespace}/{name} "
                           f"failed: {cleanup!r}; delete it by hand")

    def _discard(self, name: str) -> None:
        try:
            self.api.delete_reservation(self.namespace, name)
        finally:
            for key in [k for k, v in self._names.items() if v == name]:
                del self._names[key]

    def _locate(self, reservation_id: str) -> str | None:
        name = self._names.get(reservation_id)
        if name is not None:
            return name
        found = self.api.find_reservation(self.namespace, reservation_id)
        return None if found is None else str(found["metadata"]["name"])

    def _claimed_reply(self, obj: Object) -> dict[str, Any]:
        view = Reservation.from_object(obj)
        assert view.reservation_id is not None
        self._names[view.reservation_id] = view.name
        return {
            "reservation_id": view.reservation_id,
            "reservation_ID": view.reservation_id,
            "start_time": view.start,
            "expire_time": view.end,
            "resource_config": granted_config(obj),
        }

    def _late_reply(self, obj: Object) -> dict[str, Any]:
        view = Reservation.from_object(obj)
        assert view.pre_reservation_id is not None
        self._names[view.pre_reservation_id] = view.name
        return {
            "pre_reservation_id": view.pre_reservation_id,
            "new_avail": view.start,
            "new_expire": view.pre_reservation_expires,
        }

    # -- the ATS protocol -------------------------------------------------------------------

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
        """Hold `resource_name` for ``[start, start + duration)`` (a later window when
        `next_available`): ``(pre_reservation_id, granted_start, claim_deadline)``.

        Raises `ResourceUnavailable` (nothing held, nothing left behind), `MaxWaitExceeded`,
        `PoolNotFound`, `InvalidConfigRequest`, `NamespaceForbidden`, `OperatorNotResponding`.
        """
        body = reservation_body(
            resource_name,
            config=config,
            mode=mode,
            start=start,
            duration=duration,
            next_available=next_available,
            max_wait=max_wait,
            claim_policy="Manual",
            generate_name=f"{resource_name[:40]}-ats-",
        )
        obj = self._create_and_evaluate(body, resource_name)
        view = Reservation.from_object(obj)
        if view.phase == "Scheduled" and view.pre_reservation_id and view.start is not None:
            self._names[view.pre_reservation_id] = view.name
            expires = view.pre_reservation_expires
            return view.pre_reservation_id, view.start, expires if expires is not None else view.start
        error = unavailable_error(obj)
        self._discard_after(view.name, error)
        raise error

    def claim_reservation(self, pre_reservation_id: str) -> dict[str, Any]:
        """Claim a hold. Waits (bounded) until its window starts and the operator activates it.

        Success: ``reservation_id`` (also as ``reservation_ID``), ``start_time``,
        ``expire_time``, ``resource_config``. A hold the operator re-planned because its claim
        deadline passed (also one claimed after its deadline, which the operator is about to
        re-plan): ``pre_reservation_id``, ``new_avail``, ``new_expire``. A hold that is gone:
        `ResourceUnavailable`.
        """
        if not pre_reservation_id:
            raise ResourceUnavailable("nothing to claim: no pre-reservation ID was given")
        name = self._locate(pre_reservation_id)
        if name is None:
            raise ResourceUnavailable(f"hold {pre_reservation_id!r} no longer exists in {self.namespace!r}")
        try:
            obj = self.api.get_reservation(self.namespace, name)
        except ReservationNotFound as exc:
            raise ResourceUnavailable(f"hold {pre_reservation_id!r} no longer exists") from exc
        view = Reservation.from_object(obj)
        if view.active and view.reservation_id:
            return self._claimed_reply(obj)
        if view.phase != "Scheduled":
            error = unavailable_error(obj)
            self._discard_after(name, error)
            raise error
        if view.pre_reservation_id != pre_reservation_id:
            return self._late_reply(obj)
        deadline = view.pre_reservation_expires
        late = deadline is not None and time.time() >= deadline
        if not late:
            self.api.patch_reservation(self.namespace, name, {"spec": {"claimed": True}})
        # else: too late (ATS "late claim"). The operator re-plans a hold whose claim deadline
        # has passed; claiming now would race that re-plan, so wait for the new hold instead.

        def settled(candidate: Object) -> bool:
            if not evaluated(candidate):
                return False
            status = candidate.get("status") or {}
            if status.get("phase") == "Active":
                return bool(status.get("reservationId"))
            return (
                status.get("phase") != "Scheduled"
                or status.get("preReservationId") != pre_reservation_id
            )

        until_start = 0.0 if late else max(0.0, (view.start or 0.0) - time.time())
        timeout = until_start + self.operator_timeout
        try:
            found = self.api.wait_reservation(self.namespace, name, settled, timeout)
        except ReservationNotFound as exc:
            raise ResourceUnavailable(f"hold {pre_reservation_id!r} was deleted while claiming") from exc
        if found is None:
            doing = "re-plan the late claim of" if late else "activate the claimed"
            raise OperatorNotResponding(
                f"the operator did not {doing} ResourceReservation {self.namespace}/{name} "
                f"within {timeout:g}s; is it running?"
            )
        result = Reservation.from_object(found)
        if result.active:
            return self._claimed_reply(found)
        if result.phase == "Scheduled" and result.pre_reservation_id:
            return self._late_reply(found)
        error = unavailable_error(found)
        self._discard_after(name, error)
        raise error

    def release_resource(self, reservation_id: str) -> bool:
        """Release a hold or a claimed reservation (deletes its object); False if unknown."""
        if not reservation_id:
            return False
        name = self._locate(reservation_id)
        if name is None:
            return False
        released = self.api.delete_reservation(self.namespace, name)
        self._names.pop(reservation_id, None)
        return released

    def get_resource_availability(
        self,
        resource_name: str,
        start: float | None = None,
        end: float | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        mode: str = "exclusive",
    ) -> dict[str, Any]:
        """When could `resource_name` be had? Creates nothing: the answer is computed from the
        pool and its reservations' statuses (`respool.client.availability`), so another
        tenant's waiting reservations are not disturbed and nothing is left behind.

        ``{"available": bool, "avail_start": float, "avail_end": float, "longest_now",
        "reason", "message"}``: `available` says whether ``[start, end)`` is free;
        `avail_start`/`avail_end` is the earliest window of the same length; `longest_now`
        the longest window from `start` (None: open-ended). Defaults: now and one hour.
        Reading needs `get` on the pool and `list` on reservations in every namespace.
        """
        start = time.time() if start is None else float(start)
        end = start + DEFAULT_DURATION if end is None else float(end)
        if end <= start:
            raise InvalidConfigRequest(f"the end ({end}) must be after the start ({start})")
        spec = reservation_body(resource_name, config=config, mode=mode,
                                duration=end - start)["spec"]
        pool = self.api.get_pool(resource_name)
        reservations = self.api.list_reservations(None)
        try:
            found = availability.query(pool, reservations, spec, start, end - start)
        except SpecError as exc:
            raise InvalidConfigRequest(f"invalid request for pool {resource_name!r}: {exc}") \
                from None
        except InfeasibleRequest as exc:
            raise ReservationFailed(f"the request can never fit ResourcePool "
                                    f"{resource_name!r}: {exc}", reason="Infeasible") from None
        if found.earliest_start is None or found.earliest_end is None:
            raise ResourceUnavailable(
                f"no window of {end - start:g}s fits ResourcePool {resource_name!r} (the ranks "
                "it needs are down, or the pool expires first)", reason="WaitingForCapacity")
        when = "now" if found.available else f"from {format_time(found.earliest_start)}"
        return {
            "available": found.available,
            "avail_start": found.earliest_start,
            "avail_end": found.earliest_end,
            "longest_now": found.longest_now,
            "reason": None if found.available else "WaitingForCapacity",
            "message": f"free {when} on pool {resource_name!r}",
        }

    get_resource_availablity = get_resource_availability
