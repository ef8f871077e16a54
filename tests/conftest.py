"""Shared fixtures: a real Kubernetes control plane for the e2e tests, started only when needed.

- ``control_plane`` (session): a PRIVATE etcd + kube-apiserver for this pytest session, in a
  temp dir, on free loopback ports, so that test sessions running side by side never share
  state. With ``RESPOOL_TEST_KUBECONFIG=<path>`` the cluster of that kubeconfig is used instead.
  It is started lazily: a run that selects no test using it starts nothing. If it cannot start,
  every test that needs it ERRORS (a missing cluster is a failure, never a skip).
- ``kube_env``: environment with ``KUBECONFIG`` and ``PATH`` (kubectl, helm first).
- ``api_client`` (session): a ``kubernetes.client.ApiClient`` for the cluster.
- ``namespace``: a fresh namespace per test. It is deleted afterwards without waiting: without
  kube-controller-manager a deleted namespace stays ``Terminating`` forever.
- ``kubectl``: ``kubectl(*args, input=None, check=True)`` runs the built kubectl against it.

A whole cluster, for tests that need Pods to run, Nodes to be simulated, namespaces to be
deleted or ownerReferences to be garbage-collected (kept apart from the plane above, so that
the hundreds of tests that need only an API server pay nothing for it, and a controller-manager
never acts behind their backs):

- ``whole_cluster`` (session): a second private plane running kube-controller-manager,
  kube-scheduler and kwok too, started lazily by the first test that asks for it.
  ``whole_cluster.plane.ensure_fake_nodes([...])`` creates simulated Nodes (kwok keeps them
  Ready; Pods bound to them become Running).
- ``whole_cluster_api`` (session): a ``kubernetes.client.ApiClient`` for it.
- ``whole_cluster_namespace``: a fresh namespace there, deleted afterwards (and, there, really
  gone once kube-controller-manager has emptied it).

Tests using ``control_plane`` (directly or through the others) get the ``e2e`` marker
automatically, so ``pytest -m "not e2e"`` runs exactly the tests that need no cluster.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, settings

from respool.devcluster import ControlPlane, DevClusterError, cached_bin_dir, ensure_binaries

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

# Hypothesis profiles. "ci" (what scripts/test.sh, and so CI, selects) is deterministic: the
# same examples on every run and machine, and no example database, so a fresh clone never
# depends on, or is surprised by, a .hypothesis/ directory from an earlier run. "dev" (plain
# pytest) explores with random seeds and keeps failures in the database to replay them.
# HYPOTHESIS_PROFILE=dev|ci chooses; each test's own @settings still set its example counts.
# No per-example deadline and no "input generation is slow" health check in "ci" either: on a
# loaded 2-core machine both are timed assertions that fail correct tests (seen: 214 ms against
# 200 ms for a hostlist property; a cheap strategy reported slow at load 8). The strategies are
# kept cheap on their own (an explicit alphabet instead of all of Unicode, for instance).
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

EXTERNAL_KUBECONFIG_ENV = "RESPOOL_TEST_KUBECONFIG"
_CLUSTER_FIXTURES = {
    "control_plane",
    "kube_env",
    "api_client",
    "namespace",
    "kubectl",
    "whole_cluster",
    "whole_cluster_api",
    "whole_cluster_namespace",
}


@dataclass(frozen=True)
class Cluster:
    """How tests reach the cluster: the kubeconfig plus the directory of kubectl and helm."""

    kubeconfig: Path
    bin_dir: Path
    server: str
    token: str | None
    plane: ControlPlane | None  # None when RESPOOL_TEST_KUBECONFIG points elsewhere

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH", "")])
        return env


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("respool simulation (tests/sim)")
    group.addoption("--sim-schedules", dest="sim_schedules", type=int, default=None,
                    help="seeded schedules to run (default: $RESPOOL_SIM_SCHEDULES or 300)")
    group.addoption("--sim-workers", dest="sim_workers", type=int, default=None,
                    help="processes to run them in (default: $RESPOOL_SIM_WORKERS or 2)")
    group.addoption("--sim-first-seed", dest="sim_first_seed", type=int, default=None,
                    help="the first seed (default: $RESPOOL_SIM_FIRST_SEED or 0)")


def _needs_cluster(item: pytest.Item) -> bool:
    return bool(_CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselection looks at the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _needs_cluster(item):
            item.add_marker(pytest.mark.e2e)


def pytest_collection_finish(session: pytest.Session) -> None:
    # Build the binaries here, outside any test's timeout, when the selected tests need them
    # and they are not cached yet (a cold build takes many minutes). Failures surface again,
    # as errors, in the fixture.
    needing = any(_needs_cluster(item) for item in session.items)
    if not needing or session.config.option.collectonly:
        return
    try:
        if cached_bin_dir() is None:
            print("\nrespool: building the control-plane binaries (first run only)",
                  file=sys.stderr)
            ensure_binaries()
    except DevClusterError as error:  # e.g. a bad RESPOOL_ETCD_SOURCE: one clear line
        print(f"respool: {error}", file=sys.stderr)


def _external_cluster(path_text: str) -> Cluster:
    import yaml

    path = Path(path_text)
    if not path.is_file():
        pytest.fail(f"{EXTERNAL_KUBECONFIG_ENV}={path_text}: no such file", pytrace=False)
    config: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    context_name = config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts", [])}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters", [])}
    users = {u["name"]: u.get("user") or {} for u in config.get("users", [])}
    if context_name not in contexts:
        pytest.fail(f"{path}: current-context {context_name!r} is not defined", pytrace=False)
    context = contexts[context_name]
    return Cluster(
        kubeconfig=path,
        bin_dir=ensure_binaries(),
        server=clusters[context["cluster"]]["server"],
        token=users.get(context.get("user", ""), {}).get("token"),
        plane=None,
    )


def _private_plane(tmp_path_factory: pytest.TempPathFactory, *, whole_cluster: bool) -> Iterator[Cluster]:
    kind = "whole cluster" if whole_cluster else "control plane"
    plane = ControlPlane(
        tmp_path_factory.mktemp("whole-cluster" if whole_cluster else "control-plane"),
        name="respool-test",
        # If pytest is killed outright, every process of the plane goes with it.
        die_with_parent=True,
        whole_cluster=whole_cluster,
    )
    failure = None
    try:
        plane.start()
    except DevClusterError as error:
        failure = str(error)
    if failure is not None:  # outside the except block: one message, no exception chain
        pytest.fail(f"the local {kind} could not start:\n{failure}", pytrace=False)
    try:
        yield Cluster(
            kubeconfig=plane.kubeconfig,
            bin_dir=plane.bin_dir,
            server=plane.server,
            token=plane.token,
            plane=plane,
        )
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The cluster of this test session (see the module docstring)."""
    external = os.environ.get(EXTERNAL_KUBECONFIG_ENV)
    if external:
        yield _external_cluster(external)
        return
    yield from _private_plane(tmp_path_factory, whole_cluster=False)


@pytest.fixture(scope="session")
def whole_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A private whole cluster (controller-manager, scheduler, kwok) for this session.

    Always local, even with RESPOOL_TEST_KUBECONFIG: its tests create simulated Nodes, which
    need this plane's kwok.
    """
    yield from _private_plane(tmp_path_factory, whole_cluster=True)


@pytest.fixture(scope="session")
def whole_cluster_api(whole_cluster: Cluster) -> Iterator[ApiClient]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(whole_cluster.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def whole_cluster_namespace(whole_cluster_api: ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace on the whole cluster for this test (deleted afterwards)."""
    yield from _fresh_namespace(whole_cluster_api, request)


@pytest.fixture(scope="session")
def kube_env(control_plane: Cluster) -> dict[str, str]:
    return control_plane.env()


@pytest.fixture(scope="session")
def api_client(control_plane: Cluster) -> Iterator[ApiClient]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    try:
        yield client
    finally:
        client.close()


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(api_client: ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for this test (deleted afterwards, without waiting)."""
    yield from _fresh_namespace(api_client, request)


def _fresh_namespace(api_client: ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(api_client)
    name = _namespace_name(request.node.name)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as error:
            if error.status != 404:
                raise


KubectlRunner = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="session")
def kubectl(control_plane: Cluster, kube_env: dict[str, str]) -> KubectlRunner:
    """``kubectl(*args, input=None, check=True, timeout=60)`` against the test cluster."""
    executable = str(control_plane.bin_dir / "kubectl")

    def run(
        *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [executable, *args],
            input=input,
            capture_output=True,
            text=True,
            env=kube_env,
            timeout=timeout,
            check=False,
        )
        if check and completed.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed with exit {completed.returncode}:\n"
                f"{completed.stderr}{completed.stdout}"
            )
        return completed

    return run
