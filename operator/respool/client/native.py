"""The native Python API: reserve, wait with a timeout, use the nodes, release.

    from respool.client import reserve

    with reserve("rack-a", nodes=2, duration="1h", timeout=600) as r:
        run_tests_on(r.nodes)

`RespoolClient` underneath offers the same steps one by one (create, wait, release, list).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from respool.api import parse_duration, parse_time
from respool.client.errors import (
    InvalidConfigRequest,
    OperatorNotResponding,
    ReservationTimeout,
)
from respool.client.kube import ClientBase, KubeAPI, Object, evaluated
from respool.client.kubernetes_ats import unavailable_error
from respool.client.objects import Reservation, reservation_body

Progress = Callable[[Reservation], None]


def seconds(value: str | float | int, what: str) -> float:
    """Seconds from a Go-style duration string or a number."""
    if isinstance(value, bool):
        raise InvalidConfigRequest(f"{what} must be a duration like '1h' or seconds, got {value!r}")
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = parse_duration(value)
        except ValueError as exc:
            raise InvalidConfigRequest(f"{what}: {exc}") from exc
    else:
        raise InvalidConfigRequest(f"{what} must be a duration like '1h' or seconds, got {value!r}")
    if not math.isfinite(result) or result < 0:
        raise InvalidConfigRequest(f"{what} must be a finite, non-negative duration, got {value!r}")
    return result


def epoch(value: str | float | int, what: str) -> float:
    """Epoch seconds from an RFC 3339 string or a number."""
    if isinstance(value, str):
        try:
            return parse_time(value)
        except ValueError as exc:
            raise InvalidConfigRequest(f"{what}: {exc}") from exc
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidConfigRequest(f"{what} must be an RFC 3339 time or epoch seconds, got {value!r}")
    return float(value)


def _finished(obj: Object) -> bool:
    phase = (obj.get("status") or {}).get("phase")
    return evaluated(obj) and phase in ("Active", "Failed", "Expired")


class RespoolClient(ClientBase):
    """Reservations in one namespace (default: the kubeconfig context's, else ``default``)."""

    def __init__(
        self,
        namespace: str | None = None,
        kubeconfig: str | None = None,
        *,
        context: str | None = None,
        request_timeout: float = 30.0,
        operator_timeout: float = 30.0,
        api: KubeAPI | None = None,
    ) -> None:
        super().__init__(namespace, kubeconfig, context=context, request_timeout=request_timeout,
                         operator_timeout=operator_timeout, api=api)

    def create(
        self,
        pool: str,
        *,
        nodes: int | None = 1,
        slots: int | None = None,
        cores_per_slot: int | None = None,
        gpus_per_slot: int | None = None,
        exclusive: bool = False,
        mode: str = "exclusive",
        duration: str | float = "1h",
        start: str | float | None = None,
        next_available: bool = True,
        max_wait: str | float | None = None,
        max_retry: int | None = None,
        constraints: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        name: str | None = None,
        claim_policy: str = "Auto",
    ) -> Reservation:
        """Create a reservation (it is not waited for: see `wait`).

        Raises `PoolNotFound`, `InvalidConfigRequest` (admission rejected it),
        `NamespaceForbidden`, `ClusterUnreachable`, `NotInstalled`.
        """
        request: dict[str, Any] = {}
        for key, value in (
            ("nodes", nodes),
            ("slots", slots),
            ("coresPerSlot", cores_per_slot),
            ("gpusPerSlot", gpus_per_slot),
        ):
            if value is not None:
                request[key] = value
        if exclusive:
            request["exclusive"] = True
        resource_config: dict[str, Any] = {"request": request}
        if constraints is not None:
            resource_config["constraints"] = dict(constraints)
        if config is not None:
            resource_config["config"] = dict(config)
        body = reservation_body(
            pool,
            config=resource_config,
            mode=mode,
            start=None if start is None else epoch(start, "start"),
            duration=seconds(duration, "duration"),
            next_available=next_available,
            max_wait=None if max_wait is None else seconds(max_wait, "max_wait"),
            max_retry=max_retry,
            claim_policy=claim_policy,
            name=name,
        )
        self.api.check_pool(pool)
        return Reservation.from_object(self.api.create_reservation(self.namespace, body, pool=pool))

    def get(self, name: str) -> Reservation:
        return Reservation.from_object(self.api.get_reservation(self.namespace, name))

    def wait(self, name: str, timeout: float, on_change: Progress | None = None) -> Reservation:
        """Wait until the reservation is Active; at most `timeout` seconds.

        Raises `ReservationTimeout` (still waiting; the reservation is kept),
        `OperatorNotResponding` (nothing evaluated it), or the reason it cannot be granted
        (`ResourceUnavailable` subclasses, `PoolNotFound`, `InvalidConfigRequest`, ...).
        """
        if not timeout >= 0:
            raise InvalidConfigRequest(f"timeout must be >= 0 seconds, got {timeout!r}")

        def report(obj: Object) -> None:
            if on_change is not None:
                on_change(Reservation.from_object(obj))

        deadline = time.monotonic() + timeout

        def timed_out() -> ReservationTimeout:
            current = self.get(name)
            return ReservationTimeout(
                f"ResourceReservation {self.namespace}/{name} not granted within "
                f"{timeout:g}s: {current.describe_state()}"
            )

        first = self.api.wait_reservation(
            self.namespace, name, evaluated, min(timeout, self.operator_timeout), report
        )
        if first is None:
            if timeout > self.operator_timeout:
                raise OperatorNotResponding(
                    f"the respool operator did not evaluate ResourceReservation "
                    f"{self.namespace}/{name} within {self.operator_timeout:g}s; is it running?"
                )
            raise timed_out()
        found = first if _finished(first) else self.api.wait_reservation(
            self.namespace, name, _finished, max(0.0, deadline - time.monotonic()), report
        )
        if found is None:
            raise timed_out()
        result = Reservation.from_object(found)
        if result.active:
            return result
        raise unavailable_error(found)

    def release(self, name_or_id: str) -> bool:
        """Delete the reservation named so (or holding that ID); False if there is none."""
        found = self.api.find_reservation(self.namespace, name_or_id)
        if found is None:
            return False
        return self.api.delete_reservation(self.namespace, str(found["metadata"]["name"]))

    def reservations(self, *, all_namespaces: bool = False, pool: str | None = None) -> list[Reservation]:
        items = self.api.list_reservations(None if all_namespaces else self.namespace)
        views = [Reservation.from_object(item) for item in items]
        return [v for v in views if pool is None or v.pool == pool]


@contextmanager
def reserve(
    pool: str,
    nodes: int | None = 1,
    duration: str | float = "1h",
    timeout: float = 600.0,
    *,
    namespace: str | None = None,
    mode: str = "exclusive",
    exclusive: bool = False,
    slots: int | None = None,
    cores_per_slot: int | None = None,
    gpus_per_slot: int | None = None,
    constraints: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    name: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    on_change: Progress | None = None,
) -> Iterator[Reservation]:
    """Reserve from `pool`, wait up to `timeout` seconds for the grant, yield it, release.

    The reservation asks for the earliest window within `timeout` (``maxWait``), so the
    operator itself gives up on time. On any failure, and on exit, it is deleted.
    """
    wait_limit = seconds(timeout, "timeout")
    client = RespoolClient(namespace, kubeconfig, context=context)
    try:
        created = client.create(
            pool,
            nodes=nodes,
            slots=slots,
            cores_per_slot=cores_per_slot,
            gpus_per_slot=gpus_per_slot,
            exclusive=exclusive,
            mode=mode,
            duration=duration,
            max_wait=wait_limit,
            constraints=constraints,
            config=config,
            name=name,
        )
        try:
            yield client.wait(created.name, wait_limit, on_change)
        except BaseException as exc:
            # The error is what the caller must see; a failing clean-up is only noted on it.
            try:
                client.api.delete_reservation(client.namespace, created.name)
            except Exception as cleanup:  # any failure: it must not mask `exc`
                exc.add_note(f"also, deleting ResourceReservation {client.namespace}/"
                             f"{created.name} failed: {cleanup!r}; delete it by hand")
            raise
        client.api.delete_reservation(client.namespace, created.name)
    finally:
        client.close()
