"""What the dashboard sends the browser: a small, flat view of each pool and reservation.

The browser draws from these alone; the full object (spec, status, conditions) and its Events
are fetched when someone opens a reservation. Keeping the views small keeps the dashboard's
memory and the first page load modest with ten thousand reservations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from respool.api import parse_time_or_none
from respool.api.conditions import condition, reason_of
from respool.pool import Hostlist, IDset

View = dict[str, Any]


def reservation_key(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return f"{metadata.get('namespace') or ''}/{metadata.get('name') or ''}"


def reservation_view(obj: Mapping[str, Any]) -> View:
    """Who, which pool, mode, phase, why, the window (epoch seconds) and what it holds."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    allocated = status.get("allocated") or {}
    available = status.get("nextAvailable") or {}
    view: View = {
        "key": reservation_key(obj),
        "namespace": metadata.get("namespace") or "",
        "name": metadata.get("name") or "",
        "pool": spec.get("pool") or "",
        "mode": spec.get("mode") or "exclusive",
        "phase": status.get("phase") or "",
        "reason": reason_of(obj) or "",
        "message": status.get("message") or "",
        "start": parse_time_or_none(status.get("startTime")),
        "end": parse_time_or_none(status.get("endTime")),
        "ranks": allocated.get("ranks") or "",
        "nodes": allocated.get("nodelist") or "",
        "created": parse_time_or_none(metadata.get("creationTimestamp")),
        "deleting": bool(metadata.get("deletionTimestamp")),
    }
    earliest = parse_time_or_none(available.get("availStart"))
    if earliest is not None:
        view["earliest"] = earliest
    if status.get("queuePosition") is not None:
        view["queuePosition"] = status["queuePosition"]
    start_by = parse_time_or_none(status.get("startNoLaterThan"))
    if start_by is not None:
        view["startNoLaterThan"] = start_by
    return view


def _ranks(spec: Mapping[str, Any]) -> list[int]:
    execution = (spec.get("resources") or {}).get("execution") or {}
    ranks: set[int] = set()
    for entry in execution.get("R_lite") or []:
        try:
            ranks.update(IDset(str(entry.get("rank", "")).strip("[]")))
        except ValueError:
            continue  # admission rejects such a pool; show the rest
    return sorted(ranks)


def _rank_names(spec: Mapping[str, Any], ranks: list[int]) -> list[str]:
    """One host name per rank when the pool names its hosts, else ``rank<N>``."""
    execution = (spec.get("resources") or {}).get("execution") or {}
    try:
        hosts = list(Hostlist(",".join(execution.get("nodelist") or [])))
    except ValueError:
        hosts = []
    if len(hosts) == len(ranks):
        return [str(host) for host in hosts]
    return [f"rank{rank}" for rank in ranks]


def pool_view(obj: Mapping[str, Any]) -> View:
    """Name, ranks and their host names, down ranks, capacity, counts by phase, readiness."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ranks = _ranks(spec)
    ready = condition(obj, "Ready")
    return {
        "name": metadata.get("name") or "",
        "ranks": ranks,
        "rankNames": _rank_names(spec, ranks),
        "down": status.get("down") or spec.get("down") or "",
        "allocated": status.get("allocated") or "",
        "capacity": status.get("capacity") or {},
        "counts": status.get("reservations") or {},
        "ready": (ready or {}).get("status") or "Unknown",
        "readyReason": (ready or {}).get("reason") or "",
        "message": status.get("message") or "",
        "expiration": parse_time_or_none(spec.get("expiration")),
        "policy": spec.get("policy") or {},
        "created": parse_time_or_none(metadata.get("creationTimestamp")),
        "maintenance": _maintenance(status),
    }


def _maintenance(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The pool's maintenance windows as the operator applies them (status.maintenance: ranks
    resolved, end computed), with epoch-second times for the timeline (issue 14)."""
    windows = []
    for item in status.get("maintenance") or []:
        start = parse_time_or_none(item.get("start"))
        end = parse_time_or_none(item.get("end"))
        if start is None or end is None:
            continue
        windows.append({"name": str(item.get("name") or ""), "ranks": str(item.get("ranks") or ""),
                        "start": start, "end": end, "mode": str(item.get("mode") or "Drain"),
                        "reason": str(item.get("reason") or "")})
    return windows
