"""ResourceReservation objects: building their spec, and a typed view of what the operator wrote."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from respool import GROUP, VERSION
from respool.api import format_duration, format_time, parse_time_or_none
from respool.client.ats import MODES
from respool.client.errors import InvalidConfigRequest
from respool.client.kube import KIND_RESERVATION, reason_of

CLAIM_POLICIES = ("Auto", "Manual")
# `request` shorthand keys accepted at the top of an ATS resource_config (both spellings).
_REQUEST_KEYS = {
    "nodes": "nodes",
    "slots": "slots",
    "coresPerSlot": "coresPerSlot",
    "cores_per_slot": "coresPerSlot",
    "gpusPerSlot": "gpusPerSlot",
    "gpus_per_slot": "gpusPerSlot",
    "exclusive": "exclusive",
}
_SPEC_KEYS = ("request", "resources", "constraints", "config")
ONE_WHOLE_NODE = {"nodes": 1, "exclusive": True}
# A start this close to now is sent as "now", so the operator's clock decides it.
NOW_TOLERANCE = 1.0


def spec_from_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `request`/`resources`/`constraints`/`config` part of a spec from an ATS config.

    Accepted keys: the `spec.request` shorthand (``nodes``, ``slots``, ``coresPerSlot``,
    ``gpusPerSlot``, ``exclusive``; snake_case too), or ``request``/``resources`` given whole,
    plus ``constraints`` and ``config`` (free-form, echoed back when granted). Nothing asked:
    one whole node (an ATS resource is the hardware, not a core of it).
    """
    if config is None:
        return {"request": dict(ONE_WHOLE_NODE)}
    if not isinstance(config, Mapping):
        raise InvalidConfigRequest(f"resource_config must be a mapping, got {config!r}")
    unknown = sorted(str(key) for key in config if key not in _REQUEST_KEYS and key not in _SPEC_KEYS)
    if unknown:
        raise InvalidConfigRequest(
            f"unknown resource_config keys {unknown}: use the request shorthand "
            f"({', '.join(k for k in _REQUEST_KEYS if '_' not in k)}), or 'request', "
            "'resources', 'constraints', and 'config' for free-form data"
        )
    spec: dict[str, Any] = {key: config[key] for key in _SPEC_KEYS if key in config}
    shorthand = {_REQUEST_KEYS[key]: value for key, value in config.items() if key in _REQUEST_KEYS}
    if shorthand:
        if "request" in spec or "resources" in spec:
            raise InvalidConfigRequest(
                "resource_config mixes request shorthand keys with 'request'/'resources'; use one"
            )
        spec["request"] = shorthand
    if "request" not in spec and "resources" not in spec:
        spec["request"] = dict(ONE_WHOLE_NODE)
    return spec


def reservation_body(
    pool: str,
    *,
    config: Mapping[str, Any] | None = None,
    mode: str = "exclusive",
    start: float | None = None,
    duration: float,
    next_available: bool = True,
    max_wait: float | None = None,
    max_retry: int | None = None,
    claim_policy: str = "Auto",
    name: str | None = None,
    generate_name: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """A complete ResourceReservation manifest (times in epoch seconds)."""
    if mode not in MODES:
        raise InvalidConfigRequest(f"mode must be one of {MODES}, got {mode!r}")
    if claim_policy not in CLAIM_POLICIES:
        raise InvalidConfigRequest(f"claimPolicy must be one of {CLAIM_POLICIES}, got {claim_policy!r}")
    if not duration > 0:
        raise InvalidConfigRequest(f"the duration must be > 0 seconds, got {duration!r}")
    spec: dict[str, Any] = {"pool": pool, "mode": mode}
    spec.update(spec_from_config(config))
    now = time.time() if now is None else now
    if start is None or start <= now + NOW_TOLERANCE:
        spec["duration"] = format_duration(duration)
    else:
        spec["startTime"] = format_time(start)
        spec["endTime"] = format_time(start + duration)
    spec["nextAvailable"] = bool(next_available)
    if max_wait is not None:
        spec["maxWait"] = format_duration(max(0.0, max_wait))
    if max_retry is not None:
        spec["maxRetry"] = max_retry
    spec["claimPolicy"] = claim_policy
    metadata: dict[str, Any] = {}
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = generate_name or f"{pool[:40]}-"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND_RESERVATION,
        "metadata": metadata,
        "spec": spec,
    }


@dataclass(frozen=True)
class Reservation:
    """What the operator says about one ResourceReservation (a snapshot)."""

    namespace: str
    name: str
    pool: str
    mode: str
    phase: str | None
    reason: str | None
    message: str | None
    reservation_id: str | None
    pre_reservation_id: str | None
    start: float | None
    end: float | None
    pre_reservation_expires: float | None
    ranks: str
    nodelist: str
    retry_count: int
    raw: dict[str, Any] = field(repr=False, compare=False)
    queue_position: int | None = None  # Pending, waiting for capacity: 1 = next in line
    start_no_later_than: float | None = None  # the planner's projected start, if it has one

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Reservation:
        metadata = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        allocated = status.get("allocated") or {}
        return cls(
            namespace=str(metadata.get("namespace") or ""),
            name=str(metadata.get("name") or ""),
            pool=str(spec.get("pool") or ""),
            mode=str(spec.get("mode") or "exclusive"),
            phase=status.get("phase"),
            reason=reason_of(obj),
            message=status.get("message"),
            reservation_id=status.get("reservationId"),
            pre_reservation_id=status.get("preReservationId"),
            start=parse_time_or_none(status.get("startTime")),
            end=parse_time_or_none(status.get("endTime")),
            pre_reservation_expires=parse_time_or_none(status.get("preReservationExpires")),
            ranks=str(allocated.get("ranks") or ""),
            nodelist=str(allocated.get("nodelist") or ""),
            retry_count=int(status.get("retryCount") or 0),
            raw=dict(obj),
            queue_position=status.get("queuePosition"),
            start_no_later_than=parse_time_or_none(status.get("startNoLaterThan")),
        )

    @property
    def nodes(self) -> list[str]:
        """Host names of the granted nodes (expanded from the hostlist)."""
        from respool.pool import Hostlist

        return list(Hostlist(self.nodelist)) if self.nodelist else []

    @property
    def active(self) -> bool:
        return self.phase == "Active"

    def describe_state(self) -> str:
        """One line for a person: phase, reason and message."""
        parts = [self.phase or "not yet evaluated"]
        if self.reason:
            parts.append(f"({self.reason})")
        if self.message:
            parts.append(f"- {self.message}")
        return " ".join(parts)
