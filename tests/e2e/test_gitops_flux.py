"""Flux CD reconciles respool from git: the kstatus promise of docs/gitops.md, with the real thing.

Flux's source-controller and kustomize-controller (built from their Go modules,
:mod:`respool.devcluster.flux`) run as processes against the test cluster, with Flux's CRDs
from those modules. A git repository holding respool's kustomize base (``manifests/`` as
committed) and the examples (``manifests/examples``, names suffixed so this test meets no
other's objects, split by what their comments promise) is served from loopback by
`git http-backend` (:mod:`.gitserver`); the operator runs from the checkout. Then:

- the base applies through a ``Kustomization``;
- a ``Kustomization`` with ``wait: true`` over the reservations the operator grants at once
  is Ready when they are Active (kstatus Current);
- one over the reservations that fail (``too-big``: Failed, ``Infeasible``; ``lab-three``:
  Failed, ``QuotaExceeded``) is not Ready: Flux stops waiting early, naming one of them as
  ``Failed``, and each carries respool's reason and message in its ``Stalled`` condition;
- one over a reservation for a future window (Scheduled: kstatus InProgress, as Ready is true
  only while Active) is not Ready when its health-check timeout runs out; with docs/gitops.md's
  `healthCheckExprs` for respool (booked counts as done) the same reservation makes it Ready.

Each verdict is taken from a reconciliation requested (as `flux reconcile` does) after the
operator decided: kstatus counts an object that has no status yet as Current, so the health
check Flux runs right after applying can pass before the operator wrote anything (a gap
docs/gitops.md describes).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from respool.devcluster.flux import ensure_flux_binaries

from .gitserver import serve_git
from .test_examples_live import PROMISED, _documents, _renamed

ROOT = Path(__file__).resolve().parents[2]
FLUX_NAMESPACE = "flux-system"
SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
#: The example that fails (phase Failed), and the Stalled reason respool gives it.
FAILING = {name: reason for name, (phases, reason) in PROMISED.items() if phases == {"Failed"}}
GRANTED = sorted(name for name, (phases, _reason) in PROMISED.items() if phases == {"Active"})
LATER = "nightly-regression"  # a window in 2030: Scheduled until then
BOOKED = "nightly-regression-booked"  # a copy a day later, under docs/gitops.md's expressions


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(what: str, probe: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


@dataclass
class Controller:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    health_port: int

    def ready(self) -> bool:
        assert self.process.poll() is None, f"{self.name} exited:\n{self.tail()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz",
                                        timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def tail(self, size: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-size:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def _start(binary: Path, args: list[str], env: dict[str, str], log: Path) -> Controller:
    health_port = _free_port()
    command = [str(binary), f"--health-addr=127.0.0.1:{health_port}",
               f"--metrics-addr=127.0.0.1:{_free_port()}", "--enable-leader-election=false",
               "--log-level=info", *args]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL)
    return Controller(binary.name, process, log, health_port)


@pytest.fixture(scope="module")
def flux(kubectl: Any, kube_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Flux's CRDs installed, source-controller and kustomize-controller running and ready."""
    bin_dir = ensure_flux_binaries()
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(bin_dir / "crds"),
            timeout=120)
    kubectl("wait", "--for=condition=Established", "--timeout=60s",
            "crd/gitrepositories.source.toolkit.fluxcd.io",
            "crd/kustomizations.kustomize.toolkit.fluxcd.io")
    kubectl("create", "namespace", FLUX_NAMESPACE, check=False)
    work = tmp_path_factory.mktemp("flux")
    (work / "storage").mkdir()  # source-controller serves artifacts from it; it must exist
    env = {**kube_env, "RUNTIME_NAMESPACE": FLUX_NAMESPACE}
    storage_port = _free_port()
    controllers = [
        _start(bin_dir / "source-controller",
               [f"--storage-path={work / 'storage'}", f"--storage-addr=127.0.0.1:{storage_port}",
                f"--storage-adv-addr=127.0.0.1:{storage_port}"],
               env, work / "source-controller.log"),
        # Dependencies are looked at again every 5 s (30 s by default), so the Kustomizations
        # that depend on the pools' start as soon as the pools are Ready.
        _start(bin_dir / "kustomize-controller",
               ["--no-remote-bases=true", "--requeue-dependency=5s"],
               env, work / "kustomize-controller.log"),
    ]
    try:
        for controller in controllers:
            _wait(f"{controller.name} to be ready", controller.ready, timeout=90)
        yield
    finally:
        for controller in controllers:
            controller.stop()


def _write_yaml(path: Path, documents: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))


def _repository(root: Path, suffix: str) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A bare repository ``root/respool.git``: respool's kustomize base as committed under
    ``manifests/``, the examples renamed and split under ``examples/{pools,granted,failing,
    later}``. Returns it and the reservations by name."""
    tree = root / "tree"
    shutil.copytree(ROOT / "manifests", tree / "manifests",
                    ignore=shutil.ignore_patterns("examples"))
    documents = _renamed(_documents(), suffix)
    reservations = {d["metadata"]["name"]: d for d in documents
                    if d["kind"] == "ResourceReservation"}
    _write_yaml(tree / "examples" / "pools" / "pools.yaml",
                [d for d in documents
                 if d["kind"] in ("Namespace", "ResourcePool", "PriorityClass")])
    _write_yaml(tree / "examples" / "granted" / "reservations.yaml",
                [reservations[name] for name in GRANTED])
    _write_yaml(tree / "examples" / "failing" / "reservations.yaml",
                [reservations[name] for name in sorted(FAILING)])
    _write_yaml(tree / "examples" / "later" / "reservations.yaml", [reservations[LATER]])
    booked = copy.deepcopy(reservations[LATER])
    booked["metadata"]["name"] = BOOKED
    booked["spec"]["startTime"] = "2030-06-02T02:00:00Z"
    booked["spec"]["endTime"] = "2030-06-02T04:00:00Z"
    reservations[BOOKED] = booked
    _write_yaml(tree / "examples" / "booked" / "reservations.yaml", [booked])
    git_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root),
               "GIT_AUTHOR_NAME": "respool test", "GIT_AUTHOR_EMAIL": "test@respool.invalid",
               "GIT_COMMITTER_NAME": "respool test",
               "GIT_COMMITTER_EMAIL": "test@respool.invalid"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "respool"]):
        subprocess.run(["git", *args], cwd=tree, env=git_env, check=True, timeout=60)
    bare = root / "respool.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(tree), str(bare)], env=git_env,
                   check=True, timeout=60)
    return bare, reservations


def _gitops_doc_health_check_exprs() -> list[dict[str, Any]]:
    """The `healthCheckExprs` docs/gitops.md gives for respool, read from the doc itself."""
    text = (ROOT / "docs" / "gitops.md").read_text()
    start = text.index("```yaml\n", text.index("<!-- respool-health-check-exprs -->"))
    block = yaml.safe_load(text[start + len("```yaml\n"):text.index("```", start + 7)])
    exprs: list[dict[str, Any]] = block["spec"]["healthCheckExprs"]
    return exprs


def _kustomization(name: str, path: str, *, wait: bool, timeout: str,
                   depends_on: str | None = None,
                   health_check_exprs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "interval": "10m", "retryInterval": "5s", "timeout": timeout, "path": path,
        # prune: false: deleting the Kustomization at the end must never delete the CRDs
        # (and with them every other test's objects); this test deletes what it made.
        "prune": False, "wait": wait,
        "sourceRef": {"kind": "GitRepository", "name": "respool"},
    }
    if depends_on:
        spec["dependsOn"] = [{"name": depends_on}]
    if health_check_exprs:
        spec["healthCheckExprs"] = health_check_exprs
    return {"apiVersion": KUSTOMIZE_API, "kind": "Kustomization",
            "metadata": {"name": name, "namespace": FLUX_NAMESPACE}, "spec": spec}


def _ready(kubectl: Any, kind: str, name: str) -> dict[str, Any] | None:
    """The Ready condition of a Flux object, once it speaks of the object's generation (Flux
    moves status.observedGeneration only when a reconciliation succeeds; the condition carries
    the generation either way)."""
    got = kubectl("get", kind, name, "-n", FLUX_NAMESPACE, "-o", "json", check=False)
    if got.returncode != 0:
        return None
    obj = json.loads(got.stdout)
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if (condition["type"] == "Ready"
                and condition.get("observedGeneration") == obj["metadata"]["generation"]):
            return dict(condition)
    return None


def _until_ready_is(kubectl: Any, kind: str, name: str, status: str, reason: str,
                    timeout: float, controller_logs: Callable[[], str]) -> dict[str, Any]:
    """Wait until the object's Ready condition has ``status`` and ``reason``; fail with the
    last condition seen and the controllers' logs."""
    seen: list[dict[str, Any] | None] = [None]

    def matches() -> bool:
        seen[0] = _ready(kubectl, kind, name)
        return bool(seen[0] and seen[0]["status"] == status and seen[0]["reason"] == reason)

    try:
        _wait(f"{kind} {name} Ready={status} ({reason})", matches, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"{kind} {name}: Ready never became {status}/{reason}; last: "
                             f"{seen[0]}\n{controller_logs()}") from None
    assert seen[0] is not None
    return seen[0]


def _reconciled_now(kubectl: Any, name: str, timeout: float,
                    controller_logs: Callable[[], str]) -> dict[str, Any]:
    """Have kustomize-controller reconcile the Kustomization now (Flux's requestedAt
    annotation, what `flux reconcile` does) and return the Ready condition that reconciliation
    ended with: a verdict on the objects as they are from now on."""
    token = f"{time.time():.6f}"
    kubectl("annotate", "--overwrite", "kustomization", name, "-n", FLUX_NAMESPACE,
            f"reconcile.fluxcd.io/requestedAt={token}")
    seen: list[dict[str, Any]] = [{}]

    def handled() -> dict[str, Any] | None:
        got = kubectl("get", "kustomization", name, "-n", FLUX_NAMESPACE, "-o", "json")
        obj = json.loads(got.stdout)
        seen[0] = obj.get("status") or {}
        if seen[0].get("lastHandledReconcileAt") != token:
            return None
        return _ready(kubectl, "kustomization", name)

    try:
        return dict(_wait(f"kustomization {name} to reconcile once more", handled, timeout))
    except AssertionError:
        raise AssertionError(f"kustomization {name} did not handle the reconcile request; "
                             f"status: {seen[0]}\n{controller_logs()}") from None


def test_flux_reconciles_respool_and_kstatus_keeps_the_promise(
    flux: None, operator: Any, kubectl: Any, rk: Any,
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    suffix = os.urandom(3).hex()
    bare, reservations = _repository(tmp_path, suffix)
    flux_logs = tmp_path_factory.getbasetemp()

    def logs() -> str:
        text = []
        for log in sorted(flux_logs.glob("flux*/*.log")):
            text.append(f"--- {log.name}\n" + log.read_text(errors="replace")[-3000:])
        return "\n".join(text)

    names = ["respool-base", "respool-pools", "respool-granted", "respool-failing",
             "respool-later", "respool-booked"]
    with serve_git(bare.parent) as base_url:
        source = {
            "apiVersion": SOURCE_API, "kind": "GitRepository",
            "metadata": {"name": "respool", "namespace": FLUX_NAMESPACE},
            "spec": {"url": f"{base_url}/{bare.name}", "interval": "10m", "timeout": "60s",
                     "ref": {"branch": "main"}},
        }
        kustomizations = [
            # The base: namespace, CRDs, RBAC, the Deployment (the operator itself runs from
            # the checkout here: no kubelet starts Pods in this cluster, so no wait).
            _kustomization("respool-base", "./manifests", wait=False, timeout="2m"),
            _kustomization("respool-pools", "./examples/pools", wait=True, timeout="2m",
                           depends_on="respool-base"),
            _kustomization("respool-granted", "./examples/granted", wait=True, timeout="2m",
                           depends_on="respool-pools"),
            _kustomization("respool-failing", "./examples/failing", wait=True, timeout="2m",
                           depends_on="respool-pools"),
            # Scheduled is InProgress; this one can only time out.
            _kustomization("respool-later", "./examples/later", wait=True, timeout="20s",
                           depends_on="respool-pools"),
            # The same kind of reservation, with docs/gitops.md's expressions: booked is done.
            _kustomization("respool-booked", "./examples/booked", wait=True, timeout="2m",
                           depends_on="respool-pools",
                           health_check_exprs=_gitops_doc_health_check_exprs()),
        ]
        try:
            kubectl("apply", "-f", "-",
                    input="\n---\n".join(json.dumps(o) for o in [source, *kustomizations]))
            _until_ready_is(kubectl, "gitrepository", "respool", "True", "Succeeded", 120, logs)
            for name in ("respool-base", "respool-pools"):
                _until_ready_is(kubectl, "kustomization", name, "True",
                                "ReconciliationSucceeded", 120, logs)

            # kstatus counts an object without status as Current, so the first health check,
            # right after Flux applied the reservations, can pass before the operator wrote
            # anything (docs/gitops.md). The verdicts below are each from a reconciliation that
            # Flux started after the operator had decided.
            def phase(name: str) -> str | None:
                got = kubectl("get", "rsv", name, "-n",
                              reservations[name]["metadata"]["namespace"], "-o",
                              "jsonpath={.status.phase}", check=False)
                return got.stdout.strip() if got.returncode == 0 else None

            expected = {**dict.fromkeys(GRANTED, "Active"),
                        **dict.fromkeys(FAILING, "Failed"), LATER: "Scheduled",
                        BOOKED: "Scheduled"}
            for name, wanted in expected.items():
                _wait(f"{name} applied by Flux and {wanted}",
                      lambda name=name, wanted=wanted: phase(name) == wanted, timeout=120)

            # wait: true over reservations the operator granted: Ready.
            granted = _reconciled_now(kubectl, "respool-granted", 120, logs)
            assert granted["status"] == "True", (granted, logs())
            assert granted["reason"] == "ReconciliationSucceeded", granted

            # wait: true over a reservation that can never be granted: not Ready, at once,
            # naming it.
            failing = _reconciled_now(kubectl, "respool-failing", 120, logs)
            assert failing["status"] == "False", failing
            assert failing["reason"] == "HealthCheckFailed", failing
            assert "failed early due to stalled resources" in failing["message"], failing
            # Flux stops at the first stalled object it meets: it names one of them.
            assert any(f"ResourceReservation/{reservations[name]['metadata']['namespace']}/"
                       f"{name} status: 'Failed'" in failing["message"]
                       for name in FAILING), failing
            for name, reason in FAILING.items():
                namespace = reservations[name]["metadata"]["namespace"]
                # What Flux points at carries respool's reason and message.
                status = rk.get(namespace, name)["status"]
                (stalled,) = [c for c in status["conditions"] if c["type"] == "Stalled"]
                assert stalled["status"] == "True" and stalled["reason"] == reason, stalled
                assert stalled["message"] and stalled["message"] == status["message"], status

            # wait: true over a future window: Scheduled is InProgress, so only the health
            # check's timeout (20 s here) ends the wait, not Ready.
            later = _reconciled_now(kubectl, "respool-later", 120, logs)
            assert later["status"] == "False", later
            assert later["reason"] == "HealthCheckFailed", later
            namespace = reservations[LATER]["metadata"]["namespace"]
            assert (f"timeout waiting for: [ResourceReservation/{namespace}/{LATER} "
                    "status: 'InProgress']") in later["message"], later

            # The same, under docs/gitops.md's healthCheckExprs for respool: a booked window
            # is done, so the sync is Ready now, years before the window opens.
            booked = _reconciled_now(kubectl, "respool-booked", 120, logs)
            assert booked["status"] == "True", (booked, logs())
            assert booked["reason"] == "ReconciliationSucceeded", booked
        finally:
            kubectl("delete", "kustomization", "-n", FLUX_NAMESPACE, *names, "--wait=true",
                    "--timeout=60s", check=False, timeout=90)
            kubectl("delete", "gitrepository", "-n", FLUX_NAMESPACE, "respool", "--wait=true",
                    "--timeout=60s", check=False, timeout=90)
            for name, document in reservations.items():
                kubectl("delete", "rsv", name, "-n", document["metadata"]["namespace"],
                        "--wait=false", check=False)
            for pool in ("rack-a", "gpu-lab", "shared-lab"):
                kubectl("delete", "rpool", f"{pool}-{suffix}", "--wait=false", check=False)
            # What the base made, but the CRDs (other tests of this session use them) and the
            # namespace, as test_install_kustomize leaves it.
            kubectl("delete", "deployment/respool", "serviceaccount/respool",
                    "role/respool-leases", "rolebinding/respool-leases",
                    "-n", "respool-system", "--wait=false", check=False)
            kubectl("delete", "clusterrolebinding/respool", "clusterrole/respool",
                    "clusterrole/respool-edit", "clusterrole/respool-view", check=False)
