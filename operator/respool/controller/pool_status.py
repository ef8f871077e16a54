"""A pool's own status: the debounced summary its actor writes (pure: no I/O, no clock)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from respool.api import ConditionType, Reason, format_time
from respool.api.models import MAX_USAGE_ENTRIES
from respool.controller import lifecycle
from respool.controller.lifecycle import ACTIVE, Reservation
from respool.controller.limits import UsageLedger, usage_summary
from respool.pool import IDset, Planner

PHASES = ("Pending", "Scheduled", "Active", "Expired", "Failed")


def summary(raw: dict[str, Any], records: Iterable[Reservation], planner: Planner | None, *,
            problem: str, deleting: bool, conditions: list[dict[str, Any]],
            now: float, ledger: UsageLedger | None = None) -> dict[str, Any]:
    """The status of pool `raw`: counts per phase, capacity, and kstatus conditions (updated
    from `conditions`, the ones last written, so that unchanged ones keep their times)."""
    metadata = raw.get("metadata") or {}
    generation = int(metadata.get("generation") or 0)
    records = list(records)
    counts = dict.fromkeys(PHASES, 0)
    for record in records:
        phase = record.phase
        if phase in counts:
            counts[phase] += 1
    conditions = [dict(c) for c in conditions]
    status: dict[str, Any] = {"observedGeneration": generation, "reservations": counts}
    blocked = deleting and (counts["Active"] + counts["Scheduled"]) > 0
    if planner is not None:
        # One union of every holder's ranks (folding `|` per holder was quadratic in the
        # holders on a fragmented pool: 4,000 Active holders took seconds, issue 11 item 6).
        allocated = IDset.union_of(record.allocated_ranks for record in records
                                   if record.phase == ACTIVE and record.allocated_ranks)
        status.update(
            allocationGeneration=planner.generation,
            down=str(planner.down()),
            allocated=str(allocated),
            summary=planner.pool.dumps(),
            capacity=planner.capacity(now),
        )
        if ledger is not None:
            ledger.prune(now)
        namespaces = {record.uid: record.namespace for record in records}
        usage = usage_summary(planner.bookings(), namespaces.get, ledger, now)
        if usage:
            # Per namespace, what policy.limits count (sorted by name; a pool used by more
            # namespaces than a status may list shows the first ones).
            status["usage"] = usage[:MAX_USAGE_ENTRIES]
        maintenance = [
            {"name": block.name, "ranks": str(block.ranks), "start": format_time(block.start),
             "end": format_time(block.end), "mode": block.mode, "reason": block.reason or None,
             "inProgress": block.start <= now}
            for block in planner.maintenance() if block.end > now
        ]
        if maintenance:
            status["maintenance"] = maintenance
    if problem:
        message = problem
        set_pool_conditions(conditions, False, (Reason.INVALID_RESOURCES.value, message),
                            generation, now)
    elif blocked:
        message = (f"deletion blocked: {counts['Active']} Active and "
                   f"{counts['Scheduled']} Scheduled reservations hold resources")
        set_pool_conditions(conditions, False, (Reason.IN_USE.value, message), generation, now)
    else:
        cores = (status.get("capacity") or {}).get("core", {})
        message = (f"{cores.get('free', 0)}/{cores.get('total', 0)} cores free; "
                   f"{counts['Active']} Active, {counts['Scheduled']} Scheduled, "
                   f"{counts['Pending']} Pending")
        set_pool_conditions(conditions, True, None, generation, now, message)
    status["conditions"] = conditions
    status["message"] = message
    return status


def set_pool_conditions(conditions: list[dict[str, Any]], ready: bool,
                        stalled: tuple[str, str] | None, generation: int, now: float,
                        message: str = "") -> None:
    if stalled:
        reason, text = stalled
        lifecycle.set_condition(conditions, ConditionType.READY.value, False, reason, text,
                                generation, now)
        lifecycle.set_condition(conditions, ConditionType.STALLED.value, True, reason, text,
                                generation, now)
    else:
        lifecycle.set_condition(conditions, ConditionType.READY.value, ready,
                                Reason.POOL_READY.value, message, generation, now)
        lifecycle.set_condition(conditions, ConditionType.STALLED.value, False,
                                Reason.POOL_READY.value, message, generation, now)
    lifecycle.set_condition(conditions, ConditionType.RECONCILING.value, False,
                            Reason.POOL_READY.value if not stalled else stalled[0],
                            message or (stalled[1] if stalled else ""), generation, now)


def without_times(status: dict[str, Any]) -> dict[str, Any]:
    """What decides whether a new summary is worth writing (not the transition times)."""
    copy = dict(status)
    copy["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                          for c in status.get("conditions") or []]
    return copy
