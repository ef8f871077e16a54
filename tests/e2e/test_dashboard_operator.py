"""The dashboard served by the operator (issue 16): the chart's `dashboard.enabled` (off by
default) renders the arguments, port, Service and the one extra permission; and `respool run
--dashboard-port` really serves it, live, next to the operator, with a waiting reservation's
place in line."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.conftest import OperatorProcess, _check_log, _OperatorSlot
from tests.e2e.test_helm_chart import _cluster_roles, _container, by_kind, render
from tests.unit.test_client_extra import RUN_CLI

from respool.cli.main import build_parser

pytestmark = pytest.mark.timeout(180)

Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]


def test_the_chart_serves_no_dashboard_by_default(control_plane: Any) -> None:
    documents = render(control_plane.bin_dir)
    deployment = by_kind(documents)["Deployment"]
    container = _container(deployment)
    assert not any(arg.startswith("--dashboard") for arg in container["args"])
    assert "dashboard" not in {p["name"] for p in container["ports"]}
    assert not [d for d in documents if d["kind"] == "Service"
                and d["metadata"]["name"].endswith("-dashboard")]
    role = _cluster_roles(documents)["rp-respool"]
    assert not [r for r in role["rules"] if "events" in r["resources"] and "list" in r["verbs"]]


def test_the_chart_value_serves_it_behind_a_service(control_plane: Any) -> None:
    documents = render(control_plane.bin_dir, "--set", "dashboard.enabled=true",
                       "--set", "dashboard.port=8800")
    deployment = by_kind(documents)["Deployment"]
    container = _container(deployment)
    args = build_parser(container["args"]).parse_args(container["args"])
    assert (args.dashboard_port, args.dashboard_address) == (8800, "0.0.0.0")
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["dashboard"] == 8800
    services = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Service"}
    service = services["rp-respool-dashboard"]
    assert service["spec"]["ports"] == [
        {"name": "dashboard", "port": 8800, "targetPort": "dashboard", "protocol": "TCP"}]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    role = _cluster_roles(documents)["rp-respool"]
    assert {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]} in role["rules"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> Any:
    # A generous limit: a details request of `respool dashboard` through the Kubernetes client
    # has taken ~15 s on a loaded machine (the first Events list of a process).
    with urllib.request.urlopen(url, timeout=90) as answer:
        return json.loads(answer.read().decode())


class OperatorWithoutClient(OperatorProcess):
    """`respool run` where the Kubernetes client cannot be imported, as in the operator's image
    (which installs the plain package, not the ``client`` extra)."""

    @property
    def command(self) -> list[str]:
        command = super().command
        assert command[1:3] == ["-m", "respool.cli.main"]
        return [command[0], "-c", RUN_CLI, *command[3:]]


@pytest.fixture
def operator_with_dashboard(_operator_slot: _OperatorSlot, crds: list[str],
                            kube_env: dict[str, str],
                            tmp_path: Path) -> Iterator[tuple[OperatorProcess, int]]:
    """The session's operator slot, taken by `respool run --dashboard-port`, without the
    Kubernetes client (the dashboard it serves needs none)."""
    port = _free_port()
    _operator_slot.stop_current()
    process = OperatorWithoutClient(kube_env, tmp_path / "operator.log",
                              ["--dashboard-port", str(port)])
    process.start()
    _operator_slot.current = process
    try:
        yield process, port
    finally:
        _check_log(process, 0)
        _operator_slot.stop_current()


def test_the_operator_serves_the_dashboard_live(
        kubectl: Kubectl, namespace: str,
        operator_with_dashboard: tuple[OperatorProcess, int]) -> None:
    process, port = operator_with_dashboard
    base = f"http://127.0.0.1:{port}"
    pool = f"dash-{secrets.token_hex(3)}"
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "respool.io/v1alpha1", "kind": "ResourcePool", "metadata": {"name": pool},
        "spec": {"resources": {"version": 1, "execution": {
            "R_lite": [{"rank": "0", "children": {"core": "0-1"}}], "nodelist": ["dash0"]}}}}))
    try:
        for name in ("holder", "waiter"):
            kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
                "apiVersion": "respool.io/v1alpha1", "kind": "ResourceReservation",
                "metadata": {"name": name},
                "spec": {"pool": pool, "duration": "1h", "nextAvailable": False,
                         "request": {"nodes": 1, "exclusive": True}, "maxRetry": 20}}))
        with urllib.request.urlopen(base + "/", timeout=10) as page:
            assert page.status == 200 and b"respool" in page.read()
        deadline = time.monotonic() + 60
        while True:
            state = _get(base + "/api/state")
            views = {r["key"]: r for r in state["reservations"]}
            waiter = views.get(f"{namespace}/waiter") or {}
            holder = views.get(f"{namespace}/holder") or {}
            if holder.get("phase") == "Active" and waiter.get("queuePosition") == 1:
                break
            assert time.monotonic() < deadline, f"the dashboard never showed them: {views}"
            time.sleep(0.3)
        assert pool in {p["name"] for p in state["pools"]}
        assert waiter["startNoLaterThan"] == holder["end"]
        details = _get(f"{base}/api/reservations/{namespace}/waiter")
        assert details["object"]["status"]["queuePosition"] == 1
        assert any(e["reason"] == "WaitingForCapacity" for e in details["events"]), details
    finally:
        kubectl("delete", "rsv", "--all", "-n", namespace, "--wait=false", check=False)
        kubectl("delete", "rpool", pool, "--wait=false", check=False)
    assert process.running()
