"""DESIGN §2's correctness invariants, checked on what the API server holds."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

from respool.api import parse_time
from respool.pool import IDset

HOLDING = ("Active", "Scheduled")


def assert_no_conflicting_holds(items: list[dict[str, Any]]) -> None:
    """Invariant 1: a core held by an exclusive reservation is held by no other reservation of
    its pool in overlapping time (shared holds may overlap each other)."""
    holds: dict[tuple[str, int, int], list[tuple[float, float, str, str]]] = defaultdict(list)
    for obj in items:
        status = obj.get("status") or {}
        if status.get("phase") not in HOLDING:
            continue
        start, end = parse_time(status["startTime"]), parse_time(status["endTime"])
        # The mode booked (spec.mode may have been edited since).
        mode = status["allocated"].get("mode") or obj["spec"].get("mode", "exclusive")
        for entry in status["allocated"]["R"]["execution"]["R_lite"]:
            for rank in IDset(entry["rank"]):
                for core in IDset(entry["children"]["core"]):
                    key = (obj["spec"]["pool"], rank, core)
                    holds[key].append((start, end, mode, obj["metadata"]["name"]))
    for key, windows in holds.items():
        for (s1, e1, m1, n1), (s2, e2, m2, n2) in itertools.combinations(windows, 2):
            if s1 < e2 and s2 < e1 and "exclusive" in (m1, m2):
                raise AssertionError(f"core {key} held by {n1} ({m1}, [{s1}, {e1})) and by "
                                     f"{n2} ({m2}, [{s2}, {e2}))")
