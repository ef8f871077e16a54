"""Prometheus metrics of the operator (served by `respool run --metrics-port`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

RESERVATIONS = Gauge(
    "respool_reservations",
    "ResourceReservations by pool and phase.",
    ["pool", "phase"],
)
POOL_CAPACITY = Gauge(
    "respool_pool_capacity",
    "Pool capacity now, per resource type (core, gpu, node) and state "
    "(total, allocated, down, free).",
    ["pool", "resource", "state"],
)
GRANT_SECONDS = Histogram(
    "respool_request_to_grant_seconds",
    "Time from a reservation's creation to it becoming Active.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
)
DECISION_SECONDS = Histogram(
    "respool_decision_seconds",
    "Time spent on one allocation decision (engine + life cycle, no API calls).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
STATUS_WRITES = Counter(
    "respool_status_writes_total",
    "Status writes by kind and result.",
    ["kind", "result"],
)
EVENTS_POSTED = Counter(
    "respool_events_total",
    "Kubernetes Events posted, by type and reason.",
    ["type", "reason"],
)
RESTORED = Counter(
    "respool_restored_bookings_total",
    "Grants re-registered from reservation status at start-up or after a pool change.",
    ["result"],
)


NAMESPACE_USAGE = Gauge(
    "respool_namespace_usage",
    "What one namespace's reservations hold on a pool (status.usage, what policy.limits "
    "count): resource nodes, cores, gpus (held now), node_hours_used (the last 7 days), "
    "node_hours_booked (from now on).",
    ["pool", "namespace", "resource"],
)
_USAGE_FIELDS = {"nodes": "nodes", "cores": "cores", "gpus": "gpus",
                 "nodeHoursUsed": "node_hours_used", "nodeHoursBooked": "node_hours_booked"}
_usage_namespaces: dict[str, set[str]] = {}


def set_usage(pool: str, usage: list[dict[str, Any]]) -> None:
    """Set the pool's per-namespace usage gauges; namespaces no longer listed are dropped."""
    seen = set()
    for entry in usage:
        namespace = str(entry.get("namespace"))
        seen.add(namespace)
        for key, resource in _USAGE_FIELDS.items():
            NAMESPACE_USAGE.labels(pool, namespace, resource).set(float(entry.get(key) or 0))
    for namespace in _usage_namespaces.get(pool, set()) - seen:
        for resource in _USAGE_FIELDS.values():
            with contextlib.suppress(KeyError):
                NAMESPACE_USAGE.remove(pool, namespace, resource)
    _usage_namespaces[pool] = seen


def forget_pool(pool: str) -> None:
    """Drop the label sets of a deleted pool so that stale series disappear."""
    set_usage(pool, [])
    _usage_namespaces.pop(pool, None)
    for phase in ("Pending", "Scheduled", "Active", "Expired", "Failed"):
        with contextlib.suppress(KeyError):
            RESERVATIONS.remove(pool, phase)
    for resource in ("core", "gpu", "node"):
        for state in ("total", "allocated", "down", "free"):
            with contextlib.suppress(KeyError):
                POOL_CAPACITY.remove(pool, resource, state)


POOL_STEPS = Counter(
    "respool_pool_steps_total",
    "Steps of all pool actors' decision loops (each wakes for a change or a deadline; a loop "
    "that woke without anything due would show here as a count racing ahead).",
)
POOL_ACTORS = Gauge(
    "respool_pool_actors",
    "Pool actors the operator keeps: pools that exist or that a reservation names (actors "
    "of pools nobody refers to any more are dropped).",
)
ASYNCIO_TASKS = Gauge(
    "respool_asyncio_tasks",
    "Tasks on the operator's event loop (sampled with the loop's lag, every "
    "LOOP_LAG_PERIOD x TASKS_EVERY seconds).",
)
TASKS_EVERY = 10

LOOP_LAG_SECONDS = Histogram(
    "respool_event_loop_lag_seconds",
    "How late the operator's event loop woke a sleeper (every LOOP_LAG_PERIOD): the time any "
    "one piece of work held the loop that serves every pool, the watches and the Lease.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LOOP_LAG_PERIOD = 0.1


async def sample_loop_lag(period: float = LOOP_LAG_PERIOD) -> None:
    """Sleep `period` seconds again and again; how much later than asked each sleep ends is
    the event loop's lag (observed into LOOP_LAG_SECONDS). Runs until cancelled."""
    samples = 0
    while True:
        began = time.monotonic()
        await asyncio.sleep(period)
        LOOP_LAG_SECONDS.observe(max(0.0, time.monotonic() - began - period))
        if samples % TASKS_EVERY == 0:
            ASYNCIO_TASKS.set(len(asyncio.all_tasks()))
        samples += 1


WEBHOOK_SECONDS = Histogram(
    "respool_webhook_admission_seconds",
    "Time the admission webhook spent on one Pod (outcome mutated or refused), measured in the "
    "handler (the API server's round trip adds TLS and transport).",
    ["outcome"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
)
GATE_LIFT_SECONDS = Histogram(
    "respool_gate_lift_seconds",
    "Time from the operator seeing a reservation Active to the scheduling gate of one of its "
    "Pods being lifted.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
