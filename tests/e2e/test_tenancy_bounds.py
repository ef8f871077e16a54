"""Bounded internal state (issue 11, item 5), on the real API server with `respool run`.

Renaming one Pending reservation's `spec.pool` over and over once left one pool actor (two
asyncio tasks) behind per name: 3,000 edits, 3,100 actors and 6,200 tasks. Actors of pools
nobody refers to are now dropped; what the operator keeps is read from its own metrics
(`respool_pool_actors`, `respool_asyncio_tasks`).
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

EDITS = 400


def _gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from the operator's metrics"
    return float(match.group(1))


def _reading(operator: Any) -> tuple[float, float]:
    text = operator.metrics()
    return _gauge(text, "respool_pool_actors"), _gauge(text, "respool_asyncio_tasks")


def _R(hosts: str) -> dict[str, Any]:
    return {"version": 1, "execution": {
        "R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}], "nodelist": [hosts]}}


def test_spec_pool_churn_leaves_no_actors_behind(rk: Any, operator: Any,
                                                 namespace: str) -> None:
    tag = secrets.token_hex(3)
    pool = f"bounds-{tag}"
    rk.create_pool(pool, {"resources": _R(f"b{tag}-[0-1]")})
    rk.create(namespace, "holder", {"pool": pool, "request": {"nodes": 1, "coresPerSlot": 4},
                                    "duration": "1h"})
    held = rk.wait_phase(namespace, "holder", "Active")["status"]
    time.sleep(1.5)  # one task count sampled with the pool's actor in place
    actors_before, tasks_before = _reading(operator)

    rk.create(namespace, "churner", {"pool": f"nowhere-{tag}-0", "duration": "1h"})
    rk.wait_phase(namespace, "churner", "Pending")
    for edit in range(1, EDITS + 1):
        rk.patch(namespace, "churner", {"pool": f"nowhere-{tag}-{edit}"})
    generation = rk.get(namespace, "churner")["metadata"]["generation"]
    churned = rk.wait_for(namespace, "churner", lambda o: (o.get("status") or {}).get(
        "observedGeneration") == generation, timeout=120, what="the last name decided")
    assert churned["status"]["phase"] == "Pending"
    assert f"nowhere-{tag}-{EDITS}" in churned["status"]["message"]

    # What is left: at most the actor of the name it has now (others' tests may have
    # finished meanwhile, so fewer is fine). Polled: the task count is sampled every second
    # and a busy actor is looked at again a second later.
    deadline = time.monotonic() + 60
    actors, tasks = _reading(operator)
    while time.monotonic() < deadline and not (actors <= actors_before + 1
                                               and tasks <= tasks_before + 10):
        time.sleep(0.5)
        actors, tasks = _reading(operator)
    assert actors <= actors_before + 1, (actors_before, actors)
    assert tasks <= tasks_before + 10, (tasks_before, tasks)

    # Nothing was lost on the way: the holder keeps its grant, and a name whose actor was
    # dropped long ago is served by a new one (and grants) when the reservation comes back.
    assert rk.get(namespace, "holder")["status"]["allocated"] == held["allocated"]
    rk.patch(namespace, "churner", {"pool": f"nowhere-{tag}-1"})
    rk.wait_for(namespace, "churner", lambda o: f"nowhere-{tag}-1'" in (
        o.get("status") or {}).get("message", ""), what="judged again on a dropped name")
    rk.patch(namespace, "churner", {"pool": pool})
    active = rk.wait_phase(namespace, "churner", "Active")["status"]
    assert active["allocated"]["ranks"] != held["allocated"]["ranks"]
    # A deleted reservation's actor goes too, and its pool's name can be used again.
    rk.create(namespace, "lonely", {"pool": f"lonely-{tag}", "duration": "1h"})
    rk.wait_phase(namespace, "lonely", "Pending")
    rk.delete(namespace, "lonely")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _reading(operator)[0] > actors_before:
        time.sleep(0.5)
    assert _reading(operator)[0] <= actors_before


def _counter(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from the operator's metrics"
    return float(match.group(1))


def test_fractional_deadlines_do_not_spin_the_loop(rk: Any, operator: Any,
                                                   namespace: str) -> None:
    # Issue 11, item 1: 20 reservations with `maxWait: "N.01s"` on a missing pool kept the
    # operator ~90% busy: the loop slept until the exact deadline but decided on the whole
    # second, found nothing due, and went round again until the next second. Counted (the
    # pool loops' steps), not timed: each deadline costs a step or two, a spin thousands.
    tag = secrets.token_hex(3)
    before = _counter(operator.metrics(), "respool_pool_steps_total")
    names = [f"fraction-{index}" for index in range(8)]
    for index, name in enumerate(names):
        rk.create(namespace, name, {"pool": f"missing-{tag}", "duration": "1h",
                                    "maxWait": f"{2 + index}.01s"})
    for name in names:
        failed = rk.wait_phase(namespace, name, "Failed", timeout=120)
        assert rk.condition(failed, "Stalled")["reason"] == "MaxWaitExceeded"
    steps = _counter(operator.metrics(), "respool_pool_steps_total") - before
    # 8 creations, 8 first decisions and status writes, 8 deadlines: a few dozen steps.
    assert steps < 200, steps
