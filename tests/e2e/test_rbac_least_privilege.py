"""Least privilege, proven: the operator runs with nothing but the Helm chart's identity.

The chart is installed with `helm install`; a token for its ServiceAccount is minted with
TokenRequest (`kubectl create token`); `respool run` runs locally with a kubeconfig holding only
that token, and drives reservations through grant, scheduling, expiry and release. Any call the
chart's ClusterRole does not allow shows up as a 403 in the operator's log and fails the test.

A second identity with only namespaced rights, in a namespace a pool's namespaceSelector does
not select, may create reservations but gets nothing from that pool, and cannot grant itself
anything by writing status.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "respool"
GROUP_VERSION = "respool.io/v1alpha1"
# Every way a refused call shows up in the log: the API server's own message ("... is forbidden:
# User ..."), kopf's APIForbiddenError and our ApiError ("HTTP 403 Forbidden: ..."). Neither a
# bare "403" (millisecond timestamps, byte counts and resourceVersions contain it: that false
# positive once failed CI) nor the bare word "forbidden" (at debug level the log names other
# tests' namespaces, such as "t-test-forbidden-...": that one failed CI too).
REFUSED_CALL = re.compile(r"\bis forbidden\b|APIForbiddenError|\bHTTP 403\b|\b403 Forbidden\b")


def stop_shared_operator(request: pytest.FixtureRequest) -> None:
    """Never two writers for one pool: stop the session's shared operator if one runs."""
    try:
        slot = request.getfixturevalue("_operator_slot")
    except pytest.FixtureLookupError:
        return
    slot.stop_current()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kubeconfig_for_token(admin_kubeconfig: Path, token: str, path: Path) -> Path:
    """A kubeconfig for the same cluster whose only credential is ``token``."""
    config = yaml.safe_load(admin_kubeconfig.read_text())
    context_name = config["current-context"]
    context = next(c for c in config["contexts"] if c["name"] == context_name)["context"]
    cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "limited", "user": {"token": token}}],
                "contexts": [
                    {"name": "limited", "context": {"cluster": cluster["name"], "user": "limited"}}
                ],
                "current-context": "limited",
            }
        )
    )
    path.chmod(0o600)
    return path


class LimitedOperator:
    """`respool run` with a kubeconfig of its own; the log is kept for the 403 check."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        base_env: dict[str, str],
        extra_args: list[str] | None = None,
    ) -> None:
        self.env = {**base_env, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.extra_args = list(extra_args or [])
        self.liveness_port = _free_port()
        self.metrics_port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "respool.cli.main",
                "run",
                f"--liveness=http://127.0.0.1:{self.liveness_port}/healthz",
                f"--metrics-port={self.metrics_port}",
                "--pool-status-interval=0.2",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the operator exited early:\n{self.log()[-4000:]}")
            try:
                url = f"http://127.0.0.1:{self.liveness_port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the operator did not become live:\n{self.log()[-4000:]}")

    def wait_log(self, marker: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.log():
                return
            if not self.alive():
                raise AssertionError(f"the operator exited before {marker!r}:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{marker!r} not logged in {timeout}s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]


def _get(kubectl: Kubectl, *ref: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("get", *ref, "-o", "json").stdout))


def wait_for(
    what: str, probe: Callable[[], Any], timeout: float = 60.0, interval: float = 0.3
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")


def phase_of(kubectl: Kubectl, namespace: str, name: str) -> str | None:
    status = _get(kubectl, "rsv", name, "-n", namespace).get("status") or {}
    return status.get("phase")


@pytest.fixture
def installed_chart(
    control_plane: Any, kubectl: Kubectl, kube_env: dict[str, str], request: pytest.FixtureRequest
) -> Iterator[tuple[str, str]]:
    """(namespace, service account) of a fresh `helm install` of the chart."""
    yield from _helm_install(control_plane, kubectl, kube_env, request)


@pytest.fixture
def installed_chart_with_webhook(
    control_plane: Any, kubectl: Kubectl, kube_env: dict[str, str], request: pytest.FixtureRequest
) -> Iterator[tuple[str, str]]:
    """The same, installed with webhook.enabled=true."""
    yield from _helm_install(control_plane, kubectl, kube_env, request,
                             "--set", "webhook.enabled=true")


def _helm_install(
    control_plane: Any, kubectl: Kubectl, kube_env: dict[str, str],
    request: pytest.FixtureRequest, *options: str,
) -> Iterator[tuple[str, str]]:
    stop_shared_operator(request)
    suffix = secrets.token_hex(3)
    namespace, release = f"respool-rbac-{suffix}", f"rbac-{suffix}"
    kubectl("create", "namespace", namespace)
    install = subprocess.run(
        [
            str(control_plane.bin_dir / "helm"),
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--set",
            "metrics.enabled=true",
            *options,
        ],
        capture_output=True,
        text=True,
        env=kube_env,
        timeout=180,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    assert "kubectl wait --for=condition=Ready" in install.stdout  # NOTES.txt rendered
    assert "High availability: leader election is on" in install.stdout
    account = f"{release}-respool"
    try:
        yield namespace, account
    finally:
        subprocess.run(
            [str(control_plane.bin_dir / "helm"), "uninstall", release, "--namespace", namespace],
            capture_output=True,
            text=True,
            env=kube_env,
            timeout=120,
            check=False,
        )
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _reservation(name: str, namespace: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": GROUP_VERSION,
            "kind": "ResourceReservation",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def test_operator_runs_with_only_the_chart_identity(
    control_plane: Any,
    kubectl: Kubectl,
    kube_env: dict[str, str],
    installed_chart: tuple[str, str],
    tmp_path: Path,
) -> None:
    chart_namespace, account = installed_chart
    suffix = secrets.token_hex(3)

    # The chart's identity, and nothing else.
    token = kubectl(
        "create", "token", account, "-n", chart_namespace, "--duration=1h"
    ).stdout.strip()
    operator_config = kubeconfig_for_token(
        control_plane.kubeconfig, token, tmp_path / "operator.kubeconfig"
    )
    as_operator = {**kube_env, "KUBECONFIG": str(operator_config)}
    who = subprocess.run(
        [str(control_plane.bin_dir / "kubectl"), "auth", "whoami", "-o", "json"],
        capture_output=True,
        text=True,
        env=as_operator,
        timeout=30,
        check=True,
    )
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{chart_namespace}:{account}"
    )

    # A team namespace the pool selects, a tenant namespace it does not.
    team, tenant = f"team-{suffix}", f"tenant-{suffix}"
    kubectl("create", "namespace", team)
    kubectl("label", "namespace", team, f"respool.io/rbac-test={suffix}")
    kubectl("create", "namespace", tenant)
    pool = f"rbac-{suffix}"
    kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": GROUP_VERSION,
                "kind": "ResourcePool",
                "metadata": {"name": pool},
                "spec": {
                    "resources": {
                        "version": 1,
                        "execution": {
                            "R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}],
                            "nodelist": [f"rbac{suffix}-[0-1]"],
                        },
                    },
                    "namespaceSelector": {"matchLabels": {"respool.io/rbac-test": suffix}},
                    "trackNodes": True,
                    # Node enforcement: the operator patches its taint and label onto Nodes.
                    "enforcement": "Taint",
                    "policy": {"defaultDuration": "1h", "claimTimeout": "1m"},
                },
            }
        ),
    )

    # trackNodes: a cordoned Node named like rank 1 takes that rank down (Nodes are watched
    # with the same identity).
    cordoned = f"rbac{suffix}-1"
    kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": cordoned},
                "spec": {"unschedulable": True},
            }
        ),
    )

    # enforcement: Taint: the Node of rank 0, Ready, carries the taint of what holds it.
    enforced = f"rbac{suffix}-0"
    kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": enforced, "labels": {"team": "kept"}},
                "spec": {"taints": [{"key": "other.io/kept", "effect": "PreferNoSchedule"}]},
            }
        ),
    )
    kubectl(
        "patch", "node", enforced, "--subresource=status", "--type=merge", "-p",
        json.dumps({"status": {"conditions": [{"type": "Ready", "status": "True",
                                               "reason": "Test", "message": "set by the test"}]}}),
    )

    def respool_taints() -> list[dict[str, Any]]:
        node = _get(kubectl, "node", enforced)
        return [t for t in node["spec"].get("taints") or [] if t["key"] == "respool.io/reserved"]

    # With leader election, as the chart runs it: the Lease in the chart's namespace, which the
    # chart's Role (not its ClusterRole) lets it create, read and renew; a second replica with
    # the same identity stands by (reads the Lease) and takes over when the first releases it.
    election = [
        "--leader-elect",
        f"--leader-election-namespace={chart_namespace}",
        "--leader-elect-lease-duration=15s",
        "--leader-elect-renew-deadline=10s",
        "--leader-elect-retry-period=1s",
    ]
    operator = LimitedOperator(operator_config, tmp_path / "operator.log", kube_env, election)
    standby = LimitedOperator(operator_config, tmp_path / "standby.log", kube_env, election)
    try:
        operator.start()
        operator.wait_log("respool controller started")
        standby.start()
        standby.wait_log("leader election: standing by")
        # Grant: fits now.
        kubectl(
            "create",
            "-f",
            "-",
            input=_reservation(
                "now",
                team,
                {"pool": pool, "request": {"slots": 2, "coresPerSlot": 1}, "duration": "1h"},
            ),
        )
        # Scheduled: a window in the future.
        kubectl(
            "create",
            "-f",
            "-",
            input=_reservation(
                "later",
                team,
                {
                    "pool": pool,
                    "request": {"slots": 1},
                    "startTime": "2030-01-01T00:00:00Z",
                    "duration": "1h",
                },
            ),
        )
        # Expiry: a short window.
        kubectl(
            "create",
            "-f",
            "-",
            input=_reservation(
                "short", team, {"pool": pool, "request": {"slots": 1}, "duration": "3s"}
            ),
        )

        wait_for("now Active", lambda: phase_of(kubectl, team, "now") == "Active")
        granted = _get(kubectl, "rsv", "now", "-n", team)["status"]
        assert granted["reservationId"] and granted["allocated"]["ranks"]
        assert {c["type"]: c["status"] for c in granted["conditions"]}["Ready"] == "True"
        wait_for("later Scheduled", lambda: phase_of(kubectl, team, "later") == "Scheduled")
        assert _get(kubectl, "rsv", "later", "-n", team)["status"]["preReservationId"]
        wait_for("short Expired", lambda: phase_of(kubectl, team, "short") == "Expired", timeout=30)

        # The Node of the exclusive holder 'now' is tainted and labelled (rank 1 is down, so
        # 'now' holds rank 0); the Node's own taint and label stay.
        wait_for("the reservation taint", lambda: respool_taints() == [
            {"key": "respool.io/reserved", "value": f"{team}.now", "effect": "NoSchedule"}])
        node = _get(kubectl, "node", enforced)
        assert node["metadata"]["labels"]["respool.io/reservation"] == f"{team}.now"
        assert node["metadata"]["labels"]["team"] == "kept"
        assert {"key": "other.io/kept", "effect": "PreferNoSchedule"} in node["spec"]["taints"]

        # The pool's status summary is written with the same identity.
        def pool_counts() -> Any:
            status = _get(kubectl, "rpool", pool).get("status") or {}
            return (
                status if (status.get("capacity") or {}).get("core", {}).get("total") == 8 else None
            )

        pool_status = wait_for("pool capacity", pool_counts)
        assert pool_status["capacity"]["core"]["allocated"] >= 2
        wait_for(
            "rank 1 down (cordoned Node)",
            lambda: _get(kubectl, "rpool", pool).get("status", {}).get("down") == "1",
        )

        # Events were posted (the decision trail) under this identity.
        def granted_event() -> Any:
            events = json.loads(kubectl("get", "events", "-n", team, "-o", "json").stdout)["items"]
            return [e for e in events if e["involvedObject"].get("name") == "now"]

        assert wait_for("an Event for 'now'", granted_event)

        # Release on delete: the operator removes its finalizer, the object goes away.
        kubectl("delete", "rsv", "now", "-n", team, "--wait=false")
        wait_for(
            "'now' deleted",
            lambda: kubectl("get", "rsv", "now", "-n", team, check=False).returncode != 0,
            timeout=30,
        )
        # Released: the taint and label go, the Node's own stay.
        wait_for("the reservation taint removed", lambda: respool_taints() == [])
        node = _get(kubectl, "node", enforced)
        assert "respool.io/reservation" not in node["metadata"]["labels"]
        assert {"key": "other.io/kept", "effect": "PreferNoSchedule"} in node["spec"]["taints"]

        # The second identity: the chart's tenant role (respool-edit for a release named
        # respool), bound in the tenant namespace only - what the built-in `edit` role
        # aggregates.
        kubectl("create", "serviceaccount", "tenant", "-n", tenant)
        kubectl(
            "create",
            "rolebinding",
            "reserver",
            "-n",
            tenant,
            f"--clusterrole={account}-edit",
            f"--serviceaccount={tenant}:tenant",
        )
        tenant_token = kubectl("create", "token", "tenant", "-n", tenant).stdout.strip()
        tenant_config = kubeconfig_for_token(
            control_plane.kubeconfig, tenant_token, tmp_path / "tenant.kubeconfig"
        )

        def as_tenant(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(control_plane.bin_dir / "kubectl"), *args],
                input=input,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                env={**kube_env, "KUBECONFIG": str(tenant_config)},
            )

        created = as_tenant(
            "create",
            "-f",
            "-",
            input=_reservation(
                "sneaky", tenant, {"pool": pool, "request": {"slots": 1}, "duration": "1h"}
            ),
        )
        assert created.returncode == 0, created.stderr
        # Not admitted: it waits exactly as for a pool that does not exist (learning nothing).
        wait_for("sneaky Pending", lambda: phase_of(kubectl, tenant, "sneaky") == "Pending")
        refused = _get(kubectl, "rsv", "sneaky", "-n", tenant)["status"]
        stalled = {c["type"]: c for c in refused["conditions"]}["Stalled"]
        assert stalled["status"] == "True" and stalled["reason"] == "PoolNotFound"
        assert "does not exist, or its namespaceSelector does not admit" in refused["message"]
        assert not refused.get("allocated") and not refused.get("reservationId")
        # It cannot grant itself anything: no status writes, no pools, nothing elsewhere.
        forged = as_tenant(
            "patch",
            "rsv",
            "sneaky",
            "-n",
            tenant,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"phase": "Active"}}),
        )
        assert forged.returncode != 0 and "forbidden" in forged.stderr.lower()
        for args in (("create", "-f", "-"),):
            elsewhere = as_tenant(*args, input=_reservation("elsewhere", team, {"pool": pool}))
            assert elsewhere.returncode != 0 and "forbidden" in elsewhere.stderr.lower()
        pools = as_tenant("get", "rpool")
        assert pools.returncode != 0 and "forbidden" in pools.stderr.lower()
        assert phase_of(kubectl, tenant, "sneaky") == "Pending"
        # What the tenant role does allow: change its own reservation's spec, delete it.
        claimed = as_tenant("patch", "rsv", "sneaky", "-n", tenant, "--type=merge", "-p",
                            json.dumps({"spec": {"duration": "30m"}}))
        assert claimed.returncode == 0, claimed.stderr
        # The view role reads reservations and writes nothing.
        kubectl("create", "serviceaccount", "viewer", "-n", tenant)
        kubectl("create", "rolebinding", "viewer", "-n", tenant,
                f"--clusterrole={account}-view", f"--serviceaccount={tenant}:viewer")
        viewer = f"--as=system:serviceaccount:{tenant}:viewer"
        for verb, allowed in (("get", "yes"), ("list", "yes"), ("watch", "yes"),
                              ("create", "no"), ("patch", "no"), ("delete", "no")):
            answer = kubectl("auth", "can-i", verb, "resourcereservations.respool.io", "-n",
                             tenant, viewer, check=False).stdout.strip()
            assert answer == allowed, (verb, answer)
        for who in (viewer, f"--as=system:serviceaccount:{tenant}:tenant"):
            for verb in ("patch", "update"):
                answer = kubectl("auth", "can-i", verb, "resourcereservations.respool.io",
                                 "--subresource=status", "-n", tenant, who,
                                 check=False).stdout.strip()
                assert answer == "no", (who, verb)
        gone = as_tenant("delete", "rsv", "sneaky", "-n", tenant, "--wait=false")
        assert gone.returncode == 0, gone.stderr

        assert operator.alive(), operator.log()[-4000:]
        lease = _get(kubectl, "lease", "respool-leader", "-n", chart_namespace)
        assert lease["spec"]["holderIdentity"], lease

        # Let the leader finish its last pool summary, so the stop below meets an idle one.
        seen: dict[str, Any] = {}

        def pool_quiet() -> bool:
            version = _get(kubectl, "rpool", pool)["metadata"]["resourceVersion"]
            now = time.monotonic()
            if seen.get("version") != version:
                seen.update(version=version, since=now)
            return bool(now - seen["since"] >= 1.5)

        wait_for("the pool's status to settle", pool_quiet)
        # SIGTERM: the leader releases the Lease (update), the standby takes it (update).
        operator.stop()
        assert operator.process is not None and operator.process.returncode == 0, operator.log()
        assert "leader election: released lease" in operator.log()
        standby.wait_log("respool controller started")
        later = _get(kubectl, "rsv", "later", "-n", team)["status"]
        assert later["phase"] == "Scheduled" and later["preReservationId"]
        assert standby.alive(), standby.log()[-4000:]
    finally:
        operator.stop()
        standby.stop()
        kubectl("delete", "rsv", "--all", "-n", team, "--wait=false", check=False)
        kubectl("delete", "rsv", "--all", "-n", tenant, "--wait=false", check=False)
        kubectl("delete", "rpool", pool, "--wait=false", check=False)
        kubectl("delete", "node", cordoned, enforced, "--wait=false", check=False)

    for log in (operator.log(), standby.log()):
        denied = REFUSED_CALL.search(log)
        assert denied is None, f"the operator hit a permission error ({denied[0]!r}):\n{log[-6000:]}"
        assert "Traceback" not in log, log[-6000:]


def test_the_webhook_runs_with_only_the_chart_identity(
    control_plane: Any,
    kubectl: Kubectl,
    kube_env: dict[str, str],
    installed_chart_with_webhook: tuple[str, str],
    tmp_path: Path,
) -> None:
    """webhook.enabled=true: the operator, with only the chart's identity, registers the
    webhook (kopf creates and patches the configurations), admits a labelled Pod, refuses one
    naming a missing reservation, and lifts a gate when the window opens (watches and patches
    Pods). The API server reaches it on loopback here (a Service needs a cluster network)."""
    chart_namespace, account = installed_chart_with_webhook
    suffix = secrets.token_hex(3)
    token = kubectl(
        "create", "token", account, "-n", chart_namespace, "--duration=1h"
    ).stdout.strip()
    operator_config = kubeconfig_for_token(
        control_plane.kubeconfig, token, tmp_path / "operator.kubeconfig"
    )
    team = f"hooked-{suffix}"
    kubectl("create", "namespace", team)
    # No controller-manager on this API server: the namespace's default ServiceAccount, which
    # Pod admission looks up, is made here.
    kubectl("create", "serviceaccount", "default", "-n", team, check=False)
    pool = f"hook-{suffix}"
    kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": GROUP_VERSION,
        "kind": "ResourcePool",
        "metadata": {"name": pool},
        "spec": {
            "resources": {"version": 1, "execution": {
                "R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}],
                "nodelist": [f"hook{suffix}-[0-1]"]}},
            "enforcement": "Taint",
            "policy": {"defaultDuration": "1h", "evictionGracePeriod": "1s"},
        },
    }))

    def pod(name: str, reservation: str) -> str:
        return json.dumps({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": team,
                         "labels": {"respool.io/reservation": reservation}},
            "spec": {"automountServiceAccountToken": False,
                     "containers": [{"name": "c", "image": "registry.invalid/none"}]},
        })

    def webhook_ready() -> bool:
        found = kubectl("get", "mutatingwebhookconfiguration", "respool.io", "-o", "json",
                        check=False)
        if found.returncode != 0:
            return False
        return any((hook.get("clientConfig") or {}).get("caBundle")
                   for hook in json.loads(found.stdout).get("webhooks") or [])

    election = ["--leader-elect", f"--leader-election-namespace={chart_namespace}",
                "--leader-elect-retry-period=1s"]
    operator = LimitedOperator(operator_config, tmp_path / "operator.log", kube_env,
                               [*election, "--webhook-port", str(_free_port())])
    try:
        operator.start()
        operator.wait_log("respool controller started")
        wait_for("the webhook registered with its CA bundle", webhook_ready)
        kubectl("create", "-f", "-", input=_reservation(
            "now", team, {"pool": pool, "request": {"nodes": 1}, "duration": "1h"}))
        wait_for("now Active", lambda: phase_of(kubectl, team, "now") == "Active")
        admitted = wait_for("a labelled Pod admitted", lambda: kubectl(
            "create", "-f", "-", "-o", "json", input=pod("runs", "now"),
            check=False).stdout.strip())
        spec = json.loads(admitted)["spec"]
        assert {"key": "respool.io/reserved", "operator": "Exists",
                "effect": "NoSchedule"} in spec["tolerations"]
        (term,) = spec["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        (field,) = term["matchFields"]
        assert field["key"] == "metadata.name" and len(field["values"]) == 1
        assert field["values"][0].startswith(f"hook{suffix}-")
        # A reservation that does not exist: refused, saying which.
        refused = kubectl("create", "-f", "-", input=pod("nope", "missing"), check=False)
        assert refused.returncode != 0
        assert "'missing' does not exist in namespace" in refused.stderr, refused.stderr
        # Before the window: gated; the operator lifts the gate (Pod watch + patch) when the
        # reservation becomes Active.
        start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 6))
        kubectl("create", "-f", "-", input=_reservation(
            "soon", team, {"pool": pool, "request": {"nodes": 1}, "startTime": start,
                           "duration": "1h"}))
        wait_for("soon Scheduled", lambda: phase_of(kubectl, team, "soon") == "Scheduled")
        gated = json.loads(kubectl("create", "-f", "-", "-o", "json",
                                   input=pod("waits", "soon")).stdout)
        assert [g["name"] for g in gated["spec"]["schedulingGates"]] == ["respool.io/reservation"]
        wait_for("soon Active", lambda: phase_of(kubectl, team, "soon") == "Active", timeout=90)
        wait_for("the gate lifted", lambda: not _get(kubectl, "pod", "waits", "-n", team)[
            "spec"].get("schedulingGates"))
        # status.consumers from the Pod watch (no scheduler here: both are Pending).
        wait_for("consumers counted", lambda: (_get(kubectl, "rsv", "now", "-n", team).get(
            "status") or {}).get("consumers", {}).get("pods") == ["runs"])
        # onEnd: Evict, with only the chart's rules: "runs", bound to a Node here by hand
        # (no scheduler), is evicted (pods/eviction create) once "now" ends and the pool's
        # evictionGracePeriod has passed; with no kubelet it stays, deleting.
        kubectl("create", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": "runs", "namespace": team},
            "target": {"apiVersion": "v1", "kind": "Node", "name": field["values"][0]}}))
        kubectl("patch", "rsv", "now", "-n", team, "--type=merge",
                "-p", '{"spec":{"onEnd":"Evict","duration":"1s"}}')
        wait_for("now Expired", lambda: phase_of(kubectl, team, "now") == "Expired")
        wait_for("runs evicted", lambda: _get(kubectl, "pod", "runs", "-n", team)[
            "metadata"].get("deletionTimestamp"))
        assert operator.alive(), operator.log()[-4000:]
    finally:
        operator.stop()
        # Nobody serves it any more (failurePolicy Fail): later labelled Pods must not meet it.
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            kubectl("delete", kind, "respool.io", "--ignore-not-found", check=False)
        kubectl("delete", "pod", "--all", "-n", team, "--wait=false", check=False)
        kubectl("delete", "rsv", "--all", "-n", team, "--wait=false", check=False)
        kubectl("delete", "rpool", pool, "--wait=false", check=False)
        kubectl("delete", "namespace", team, "--wait=false", check=False)

    log = operator.log()
    denied = REFUSED_CALL.search(log)
    assert denied is None, f"the operator hit a permission error ({denied[0]!r}):\n{log[-6000:]}"
    assert "Traceback" not in log, log[-6000:]


def test_the_chart_registers_its_webhook_service_with_a_certificate_for_it(
    control_plane: Any,
    kubectl: Kubectl,
    kube_env: dict[str, str],
    installed_chart_with_webhook: tuple[str, str],
    tmp_path: Path,
) -> None:
    """With the chart's webhook arguments (--webhook-service <ns>/<release>-webhook), the
    operator registers the Service (port 443, no URL) and serves a certificate that the
    registered caBundle verifies for the Service's DNS name. (The API server cannot reach a
    Service here - no cluster network - so the call through it is not made.)"""
    import base64
    import ssl

    chart_namespace, account = installed_chart_with_webhook
    release = account.removesuffix("-respool")
    rendered = subprocess.run(
        [str(control_plane.bin_dir / "helm"), "get", "manifest", release, "-n", chart_namespace],
        capture_output=True, text=True, env=kube_env, timeout=60, check=True,
    ).stdout
    deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    service_name = f"{account}-webhook"
    assert f"--webhook-service={chart_namespace}/{service_name}" in container["args"]
    port = _free_port()
    webhook_args = [f"--webhook-port={port}" if a.startswith("--webhook-port=") else a
                    for a in container["args"] if a.startswith("--webhook-")]
    token = kubectl(
        "create", "token", account, "-n", chart_namespace, "--duration=1h"
    ).stdout.strip()
    operator_config = kubeconfig_for_token(
        control_plane.kubeconfig, token, tmp_path / "operator.kubeconfig"
    )

    def registered() -> dict[str, Any] | None:
        found = kubectl("get", "mutatingwebhookconfiguration", "respool.io", "-o", "json",
                        check=False)
        if found.returncode != 0:
            return None
        for hook in json.loads(found.stdout).get("webhooks") or []:
            config = hook.get("clientConfig") or {}
            if config.get("caBundle") and config.get("service"):
                return dict(config)
        return None

    operator = LimitedOperator(operator_config, tmp_path / "operator.log", kube_env,
                               [*webhook_args, f"--leader-election-namespace={chart_namespace}"])
    try:
        operator.start()
        operator.wait_log("respool controller started")
        config = wait_for("the webhook registered with the Service", registered)
        assert "url" not in config
        assert config["service"] == {"namespace": chart_namespace, "name": service_name,
                                     "port": 443, "path": config["service"].get("path")}
        # The served certificate is for <service>.<namespace>.svc, signed by the caBundle.
        context = ssl.create_default_context(
            cadata=base64.b64decode(config["caBundle"]).decode())
        for name in (f"{service_name}.{chart_namespace}.svc",
                     f"{service_name}.{chart_namespace}.svc.cluster.local"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    context.wrap_socket(raw, server_hostname=name) as tls:
                assert tls.version()
    finally:
        operator.stop()
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            kubectl("delete", kind, "respool.io", "--ignore-not-found", check=False)
    log = operator.log()
    denied = REFUSED_CALL.search(log)
    assert denied is None, f"the operator hit a permission error ({denied[0]!r}):\n{log[-6000:]}"
    assert "Traceback" not in log, log[-6000:]
