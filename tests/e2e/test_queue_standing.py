"""status.queuePosition and status.startNoLaterThan on the real API server with the live
operator: written for reservations waiting for capacity, in the pool's decision order; shown
by `kubectl get rsv -o wide` and `respool get/describe`; kept up to date as the line moves."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from respool.api import parse_time

VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(180)

Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def one_node_pool(kubectl: Kubectl, operator: Any, namespace: str) -> Iterator[str]:
    name = f"solo-{secrets.token_hex(3)}"
    manifest = {
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourcePool",
        "metadata": {"name": name},
        "spec": {"resources": {"version": 1, "execution": {
            "R_lite": [{"rank": "0", "children": {"core": "0-3"}}], "nodelist": ["solo0"]}}},
    }
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    kubectl("wait", "--for=condition=Ready", f"rpool/{name}", "--timeout=30s")
    yield name
    kubectl("delete", "rsv", "--all", "-n", namespace, "--wait=false", check=False)
    kubectl("delete", "rpool", name, "--wait=false", check=False)


def reservation(kubectl: Kubectl, namespace: str, pool: str, name: str, duration: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourceReservation",
        "metadata": {"name": name},
        "spec": {"pool": pool, "mode": "exclusive", "duration": duration,
                 "request": {"nodes": 1, "exclusive": True}, "nextAvailable": False,
                 "maxRetry": 50},
    }))


def respool(kube_env: dict[str, str], *args: str) -> str:
    completed = subprocess.run([str(VENV_BIN / "respool"), *args], capture_output=True,
                               text=True, env=kube_env, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr + completed.stdout
    return completed.stdout


def status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    out = kubectl("get", "rsv", name, "-n", namespace, "-o", "json").stdout
    return dict(json.loads(out).get("status") or {})


def wait_for(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.3)


def test_waiters_get_their_place_and_start_and_move_up_when_the_line_moves(
        kubectl: Kubectl, namespace: str, one_node_pool: str, kube_env: dict[str, str]) -> None:
    reservation(kubectl, namespace, one_node_pool, "holder", "2h")
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "rsv/holder", "--timeout=30s")
    holder_end = parse_time(status(kubectl, namespace, "holder")["endTime"])
    reservation(kubectl, namespace, one_node_pool, "first", "1h")
    wait_for(lambda: status(kubectl, namespace, "first").get("phase") == "Pending")
    reservation(kubectl, namespace, one_node_pool, "second", "30m")

    def standing(name: str) -> tuple[Any, Any]:
        st = status(kubectl, namespace, name)
        return st.get("queuePosition"), st.get("startNoLaterThan")

    wait_for(lambda: standing("first")[0] == 1 and standing("second")[0] == 2)
    first, second = standing("first"), standing("second")
    # The holder's window ends, then first runs its hour, then second.
    assert parse_time(first[1]) == holder_end
    assert parse_time(second[1]) == holder_end + 3600
    holder = status(kubectl, namespace, "holder")
    assert "queuePosition" not in holder and "startNoLaterThan" not in holder

    wide = kubectl("get", "rsv", "-n", namespace, "-o", "wide").stdout
    header, *rows = wide.splitlines()
    assert "QUEUE" in header and "START-BY" in header
    row = {line.split()[0]: line for line in rows}
    assert re.search(rf"\s1\s+{first[1]}\s", row["first"]), row["first"]
    assert re.search(rf"\s2\s+{second[1]}\s", row["second"]), row["second"]

    listed = respool(kube_env, "get", "reservations", "-n", namespace, "-o", "wide")
    assert "QUEUE" in listed and "START-BY" in listed
    described = respool(kube_env, "describe", "reservation", "second", "-n", namespace, "--utc")
    assert "Queue position:  2 on pool" in described

    # The holder goes: first is granted, second moves up to first in line and gets first's
    # hour as its bound.
    kubectl("delete", "rsv", "holder", "-n", namespace)
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "rsv/first", "--timeout=30s")
    first_end = parse_time(status(kubectl, namespace, "first")["endTime"])
    wait_for(lambda: standing("second")[0] == 1)
    assert parse_time(standing("second")[1]) == first_end
    granted = status(kubectl, namespace, "first")
    assert "queuePosition" not in granted and "startNoLaterThan" not in granted


def test_a_namespace_the_pool_does_not_admit_learns_no_place(
        kubectl: Kubectl, namespace: str, operator: Any) -> None:
    """Pending/PoolNotFound is not a place in line (a position would leak the pool)."""
    reservation(kubectl, namespace, f"missing-{secrets.token_hex(3)}", "lost", "1h")
    wait_for(lambda: status(kubectl, namespace, "lost").get("phase") == "Pending")
    time.sleep(1)
    st = status(kubectl, namespace, "lost")
    assert "queuePosition" not in st and "startNoLaterThan" not in st
