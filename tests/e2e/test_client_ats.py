"""The Python client end to end: the KISS ATS handle over `KubernetesATSClient`, and the native
`reserve()`, against the live operator on the real control plane.

Each reference life-cycle scenario (shared/reference/ats-reservation.md §1.1) has a test:
free pool, busy pool with and without next_available, retry limit, late claim, release,
shared mode, max wait; plus every member of the seed API, the availability probe, the
context manager, and the errors a user meets (missing pool, forbidden namespace).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from respool.api import parse_time
from respool.client import (
    InvalidConfigRequest,
    KubernetesATSClient,
    MaxWaitExceeded,
    NamespaceForbidden,
    OperatorNotResponding,
    PoolNotFound,
    ResourceReservation,
    ResourceRetryExceeded,
    ResourceUnavailable,
    RespoolClient,
    reserve,
)

pytestmark = pytest.mark.timeout(180)

HOUR = 3600.0
PoolFactory = Callable[..., str]
Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def make_pool(kubectl: Kubectl, operator: Any) -> Iterator[PoolFactory]:
    """Create ResourcePools (``node0..``, `cores` cores each) and wait until the operator has
    seen them; deleted afterwards."""
    created: list[str] = []

    def make(ranks: int = 1, cores: int = 4, claim_timeout: str = "5m", **spec: Any) -> str:
        name = f"pool-{secrets.token_hex(4)}"
        manifest = {
            "apiVersion": "respool.io/v1alpha1",
            "kind": "ResourcePool",
            "metadata": {"name": name},
            "spec": {
                "resources": {
                    "version": 1,
                    "execution": {
                        "R_lite": [{"rank": f"0-{ranks - 1}" if ranks > 1 else "0", "children": {"core": f"0-{cores - 1}"}}],
                        "nodelist": [f"node[0-{ranks - 1}]" if ranks > 1 else "node0"],
                    },
                },
                "policy": {"claimTimeout": claim_timeout},
                **spec,
            },
        }
        kubectl("apply", "-f", "-", input=json.dumps(manifest))
        created.append(name)
        kubectl("wait", "--for=condition=Ready", f"rpool/{name}", "--timeout=30s")
        return name

    yield make
    for name in created:
        kubectl("delete", "rpool", name, "--wait=false", check=False)


@pytest.fixture
def ats(control_plane: Any, namespace: str, kubectl: Kubectl) -> Iterator[KubernetesATSClient]:
    client = KubernetesATSClient(namespace, kubeconfig=str(control_plane.kubeconfig), operator_timeout=30)
    yield client
    kubectl("delete", "rsv", "--all", "-n", namespace, "--wait=false", check=False)
    client.close()


def reservations(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    out = kubectl("get", "rsv", "-n", namespace, "-o", "json").stdout
    return list(json.loads(out)["items"])


def hold_whole_pool(ats: KubernetesATSClient, pool: str, hours: float = 1.0) -> ResourceReservation:
    holder = ResourceReservation(pool, ats)
    start = time.time()
    assert holder.request_reservation(start, start + hours * HOUR, next_available=False)
    assert holder.claim_reservation() is True
    return holder


def admin_cluster(control_plane: Any) -> dict[str, Any]:
    """The cluster entry (server and CA) of the test kubeconfig, for a kubeconfig of another user."""
    config = yaml.safe_load(Path(control_plane.kubeconfig).read_text())
    return dict(config["clusters"][0]["cluster"])


# -- life cycle --------------------------------------------------------------------------


def test_free_pool_request_claim_release(ats: KubernetesATSClient, make_pool: PoolFactory, kubectl: Kubectl, namespace: str) -> None:
    pool = make_pool(ranks=2)
    rr = ResourceReservation(pool, ats)
    rr.resource_config = {"nodes": 2}
    before = time.time()
    assert rr.request_reservation() is True
    assert rr.first_request_time is not None and before <= rr.first_request_time <= time.time()
    assert rr.pre_reservation_id and rr.reservation_id is None
    assert rr.start_time == pytest.approx(before, abs=5)
    assert rr.end_time - rr.start_time == pytest.approx(HOUR, abs=0.01)
    assert rr.pre_res_expire is not None and rr.pre_res_expire > rr.start_time
    [obj] = reservations(kubectl, namespace)
    assert obj["spec"]["claimPolicy"] == "Manual" and obj["spec"]["pool"] == pool
    assert obj["status"]["phase"] == "Scheduled"
    assert obj["status"]["preReservationId"] == rr.pre_reservation_id

    assert rr.claim_reservation() is True
    assert rr.reservation_id and rr.pre_reservation_id is None and rr.pre_res_expire is None
    config = rr.resource_config
    assert config is not None and config["nodes"] == ["node0", "node1"] and config["ranks"] == "0-1"
    [obj] = reservations(kubectl, namespace)
    assert obj["status"]["phase"] == "Active"
    assert obj["status"]["reservationId"] == rr.reservation_id
    assert rr.end_time == pytest.approx(parse_time(obj["status"]["endTime"]))

    assert rr.release_reservation() is True
    assert rr.reservation_id is None
    assert reservations(kubectl, namespace) == []
    assert rr.release_reservation() is False, "nothing held: no call"


def test_busy_pool_with_next_available_books_later_and_moves_the_end(
    ats: KubernetesATSClient, make_pool: PoolFactory
) -> None:
    pool = make_pool()
    holder = hold_whole_pool(ats, pool)
    waiter = ResourceReservation(pool, ats)
    start = time.time() + 60
    assert waiter.request_reservation(start, start + 600, next_available=True) is True
    assert waiter.start_time == pytest.approx(holder.end_time, abs=2)
    assert waiter.end_time - waiter.start_time == pytest.approx(600, abs=0.01), "the end moved with the start"
    assert waiter.retry_count == 0
    waiter.release_reservation()
    holder.release_reservation()


def test_busy_pool_without_next_available_counts_a_retry_and_leaves_nothing(
    ats: KubernetesATSClient, make_pool: PoolFactory, kubectl: Kubectl, namespace: str
) -> None:
    pool = make_pool()
    holder = hold_whole_pool(ats, pool)
    waiter = ResourceReservation(pool, ats)
    assert waiter.request_reservation(next_available=False) is False
    assert waiter.retry_count == 1
    assert waiter.pre_reservation_id is None and waiter.reservation_id is None
    names = [o["metadata"]["name"] for o in reservations(kubectl, namespace)]
    assert len(names) == 1, f"only the holder's object is left: {names}"
    holder.release_reservation()
    assert waiter.request_reservation(next_available=False) is True, "free again after the release"


def test_claim_of_a_future_window_waits_for_its_start(ats: KubernetesATSClient, make_pool: PoolFactory) -> None:
    pool = make_pool()
    rr = ResourceReservation(pool, ats)
    start = time.time() + 10  # still ahead once the hold is made, even under load
    assert rr.request_reservation(start, start + 60, next_available=False)
    assert rr.start_time == pytest.approx(start, abs=1)
    assert rr.claim_reservation() is True
    assert time.time() >= rr.start_time - 0.5, "Active only once the window has started"
    assert rr.reservation_id
    rr.release_reservation()


def test_retry_limit(ats: KubernetesATSClient, make_pool: PoolFactory, kubectl: Kubectl, namespace: str) -> None:
    pool = make_pool()
    holder = hold_whole_pool(ats, pool)
    waiter = ResourceReservation(pool, ats, max_retry=1)
    assert waiter.request_reservation(next_available=False) is False
    with pytest.raises(ResourceRetryExceeded):
        waiter.request_reservation(next_available=False)
    assert waiter.retry_count == 2
    assert len(reservations(kubectl, namespace)) == 1
    holder.release_reservation()


def test_late_claim_gets_a_new_hold_and_counts_a_retry(ats: KubernetesATSClient, make_pool: PoolFactory) -> None:
    pool = make_pool(claim_timeout="6s")
    rr = ResourceReservation(pool, ats)
    assert rr.request_reservation()
    first_id = rr.pre_reservation_id
    assert rr.pre_res_expire is not None
    # Past the deadline, the operator re-plans at once: a new hold whose own deadline is 6s
    # later. Claim late for the first hold but well within the second one.
    time.sleep(max(0.0, rr.pre_res_expire - time.time()) + 1.5)
    assert rr.claim_reservation() is False, "too late: the operator re-planned the hold"
    assert rr.retry_count == 1
    assert rr.pre_reservation_id and rr.pre_reservation_id != first_id
    assert rr.end_time - rr.start_time == pytest.approx(HOUR, abs=0.01)
    assert rr.claim_reservation() is True
    assert rr.reservation_id
    rr.release_reservation()


def test_shared_mode_is_sent_and_shares(ats: KubernetesATSClient, make_pool: PoolFactory, kubectl: Kubectl, namespace: str) -> None:
    pool = make_pool()
    first = ResourceReservation(pool, ats, mode="shared")
    second = ResourceReservation(pool, ats, mode="shared")
    now = time.time()
    assert first.request_reservation(now, now + 600, next_available=False)
    assert second.request_reservation(now, now + 600, next_available=False), "shared holds overlap"
    modes = {o["spec"]["mode"] for o in reservations(kubectl, namespace)}
    assert modes == {"shared"}
    assert first.claim_reservation() and second.claim_reservation()
    exclusive = ResourceReservation(pool, ats)
    assert exclusive.request_reservation(next_available=False) is False, "exclusive cannot overlap shared"
    for rr in (first, second):
        rr.release_reservation()


def test_max_wait_is_enforced(ats: KubernetesATSClient, make_pool: PoolFactory, kubectl: Kubectl, namespace: str) -> None:
    pool = make_pool()
    holder = hold_whole_pool(ats, pool)
    waiter = ResourceReservation(pool, ats, max_wait=4)
    # The earliest window (in an hour) starts after the budget: not granted, but capacity may
    # still free early, so this is a retry, not the end.
    assert waiter.request_reservation() is False
    assert waiter.retry_count == 1
    assert len(reservations(kubectl, namespace)) == 1, "nothing left behind"
    assert waiter.first_request_time is not None
    time.sleep(max(0.0, waiter.first_request_time + 4.5 - time.time()))
    with pytest.raises(MaxWaitExceeded, match="max_wait of 4s"):
        waiter.request_reservation()
    assert waiter.retry_count == 1 and waiter.pre_reservation_id is None

    patient = ResourceReservation(pool, ats, max_wait=2 * HOUR)
    assert patient.request_reservation() is True
    assert patient.start_time == pytest.approx(holder.end_time, abs=2)
    patient.release_reservation()
    holder.release_reservation()


def test_max_wait_spent_on_the_server_raises(
    ats: KubernetesATSClient, make_pool: PoolFactory, kubectl: Kubectl, namespace: str
) -> None:
    pool = make_pool()
    holder = hold_whole_pool(ats, pool)
    with pytest.raises(MaxWaitExceeded):
        ats.get_future_reservation(pool, time.time(), 600, None, True, max_wait=0.0)
    assert len(reservations(kubectl, namespace)) == 1, "nothing left behind"
    holder.release_reservation()


def test_next_avail_time_on_free_and_busy_pool(
    ats: KubernetesATSClient, make_pool: PoolFactory, kubectl: Kubectl, namespace: str
) -> None:
    pool = make_pool()
    probe = ResourceReservation(pool, ats)
    free = probe.get_next_avail_time()
    assert free["available"] is True
    assert free["avail_start"] == pytest.approx(probe.start_time, abs=2)
    holder = hold_whole_pool(ats, pool)
    busy = ResourceReservation(pool, ats).get_next_avail_time()
    assert busy["available"] is False
    assert busy["avail_start"] == pytest.approx(holder.end_time, abs=2)
    assert busy["avail_end"] - busy["avail_start"] == pytest.approx(HOUR, abs=1)
    assert ats.get_resource_availablity(pool)["available"] is False, "the kissats spelling works"
    assert len(reservations(kubectl, namespace)) == 1, "probes leave nothing behind"
    holder.release_reservation()


def test_availability_creates_nothing_and_disturbs_no_waiter(
    ats: KubernetesATSClient, make_pool: PoolFactory, kubectl: Kubectl, namespace: str,
    control_plane: Any,
) -> None:
    # Issue 11, item 3: the availability probe once created and deleted a real hold, which
    # also cost every waiter of the pool a retry. Now it reads the pool and the statuses.
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes import watch

    pool = make_pool()
    holder = hold_whole_pool(ats, pool)
    [held] = reservations(kubectl, namespace)
    holder_name = held["metadata"]["name"]
    waiter = ResourceReservation(pool, ats, max_retry=0)
    api = k8s.CustomObjectsApi(k8s_config.new_client_from_config(str(control_plane.kubeconfig)))
    # The probe's own namespace only: a cluster-wide watch also saw an earlier test's holder
    # being deleted late (its pool's name showed it; failed one CI run).
    listed = api.list_namespaced_custom_object("respool.io", "v1alpha1", namespace,
                                               "resourcereservations")
    version = listed["metadata"]["resourceVersion"]
    answers = [ResourceReservation(pool, ats).get_next_avail_time() for _ in range(3)]
    for answer in answers:
        assert answer["available"] is False
        assert answer["avail_start"] == pytest.approx(holder.end_time, abs=2)
        assert answer["longest_now"] == 0
    # No reservation created or deleted since: the watch from that version sees none (a
    # MODIFIED one could only be the operator's own bookkeeping of the holder).
    events = list(watch.Watch().stream(
        api.list_namespaced_custom_object, "respool.io", "v1alpha1", namespace,
        "resourcereservations",
        resource_version=version, timeout_seconds=2))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events
            if e["type"] != "MODIFIED"] == []
    assert {e["object"]["metadata"]["name"] for e in events} <= {holder_name}
    # The same answer the operator gives a real request for that window.
    assert waiter.request_reservation() is True
    assert waiter.start_time == pytest.approx(answers[0]["avail_start"], abs=1)
    waiter.release_reservation()
    holder.release_reservation()
    free = ResourceReservation(pool, ats).get_next_avail_time()
    # Nothing in the way: as long as the pool's policy.maxDuration (24 h by default) allows.
    assert free["available"] is True and free["longest_now"] == 86400


def test_context_manager_claims_and_releases(ats: KubernetesATSClient, make_pool: PoolFactory, kubectl: Kubectl, namespace: str) -> None:
    pool = make_pool()
    with ResourceReservation(pool, ats) as rr:
        assert rr.reservation_id
        [obj] = reservations(kubectl, namespace)
        assert obj["status"]["phase"] == "Active"
    assert reservations(kubectl, namespace) == []


def test_every_seed_member(ats: KubernetesATSClient, make_pool: PoolFactory) -> None:
    pool = make_pool()
    rr = ResourceReservation(pool, ats, mode="exclusive", max_retry=3, max_wait=None)
    assert rr.name == pool and rr == pool
    assert rr.reservation_mode == "exclusive"
    rr.reservation_mode = "shared"
    assert rr.max_retry == 3
    assert rr.max_wait_time is None
    rr.max_wait_time = 7200
    assert rr.retry_count == 0
    rr.add_retry_count()
    assert rr.retry_count == 1
    assert rr.first_request_time is None
    rr.resource_config = {"nodes": 1, "config": {"firmware": "v2"}}
    assert rr.get_next_avail_time()["available"] is True
    assert rr.request_reservation(next_available=True) is True
    assert rr.pre_reservation_id is not None and rr.pre_res_expire is not None
    assert rr.first_request_time is not None
    assert rr.start_time < rr.end_time
    with pytest.raises(InvalidConfigRequest):
        rr.resource_config = {"nodes": 1}
    assert rr.claim_reservation() is True
    assert rr.reservation_id is not None
    config = rr.resource_config
    assert config is not None and config["config"] == {"firmware": "v2"} and config["nodes"] == ["node0"]
    assert rr.release_reservation() is True
    assert rr.reservation_id is None


# -- errors -------------------------------------------------------------------------------


def test_missing_pool(ats: KubernetesATSClient, kubectl: Kubectl, namespace: str, operator: Any) -> None:
    rr = ResourceReservation("no-such-pool", ats)
    with pytest.raises(PoolNotFound, match="no-such-pool"):
        rr.request_reservation()
    assert rr.retry_count == 0
    assert reservations(kubectl, namespace) == []


def test_infeasible_request_is_a_config_error(ats: KubernetesATSClient, make_pool: PoolFactory, kubectl: Kubectl, namespace: str) -> None:
    pool = make_pool(ranks=1)
    rr = ResourceReservation(pool, ats)
    rr.resource_config = {"nodes": 5}
    with pytest.raises(InvalidConfigRequest):
        rr.request_reservation()
    rr.resource_config = {"nodes": 0}
    with pytest.raises(InvalidConfigRequest, match="rejected by the API server"):
        rr.request_reservation()
    assert reservations(kubectl, namespace) == []


def test_forbidden_namespace_by_rbac(
    control_plane: Any, kubectl: Kubectl, namespace: str, make_pool: PoolFactory, tmp_path: Any
) -> None:
    pool = make_pool()
    kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    kubeconfig = tmp_path / "nobody.kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": admin_cluster(control_plane)}],
                "users": [{"name": "nobody", "user": {"token": token}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "nobody"}}],
                "current-context": "x",
            }
        )
    )
    client = KubernetesATSClient(namespace, kubeconfig=str(kubeconfig))
    with pytest.raises(NamespaceForbidden, match=f"forbidden in namespace '{namespace}'"):
        ResourceReservation(pool, client).request_reservation()


def test_namespace_not_selected_by_the_pool(ats: KubernetesATSClient, make_pool: PoolFactory, kubectl: Kubectl, namespace: str) -> None:
    # The operator answers a namespace the pool does not admit as it answers a pool that does
    # not exist (the namespace learns nothing about the pool): PoolNotFound, saying both.
    pool = make_pool(namespaceSelector={"matchLabels": {"team": "other"}})
    with pytest.raises(PoolNotFound, match="does not exist or does not admit namespace"):
        ResourceReservation(pool, ats).request_reservation()
    assert reservations(kubectl, namespace) == []


# -- native API ---------------------------------------------------------------------------


def test_reserve_context_manager_yields_nodes_and_releases(
    control_plane: Any, make_pool: PoolFactory, kubectl: Kubectl, namespace: str
) -> None:
    pool = make_pool(ranks=3)
    with reserve(pool, nodes=2, duration="30m", timeout=60, namespace=namespace, kubeconfig=str(control_plane.kubeconfig)) as r:
        assert r.active and r.phase == "Active"
        assert r.nodes == ["node0", "node1"] or len(r.nodes) == 2
        assert r.end is not None and r.start is not None
        assert r.end - r.start == pytest.approx(1800, abs=1)
        [obj] = reservations(kubectl, namespace)
        assert obj["metadata"]["name"] == r.name
    assert reservations(kubectl, namespace) == []


def test_reserve_times_out_on_a_busy_pool_and_leaves_nothing(
    control_plane: Any, make_pool: PoolFactory, kubectl: Kubectl, namespace: str, ats: KubernetesATSClient
) -> None:
    pool = make_pool()
    holder = hold_whole_pool(ats, pool)
    started = time.monotonic()
    with pytest.raises(ResourceUnavailable), reserve(
        pool, timeout=5, namespace=namespace, kubeconfig=str(control_plane.kubeconfig)
    ):
        pytest.fail("must not be granted")
    assert time.monotonic() - started < 40
    assert len(reservations(kubectl, namespace)) == 1
    holder.release_reservation()


def test_native_client_create_wait_release(control_plane: Any, make_pool: PoolFactory, namespace: str) -> None:
    pool = make_pool(ranks=2)
    with RespoolClient(namespace, str(control_plane.kubeconfig)) as client:
        seen: list[str | None] = []
        created = client.create(pool, nodes=1, duration=600, name="by-hand")
        granted = client.wait(created.name, 30, on_change=lambda r: seen.append(r.phase))
        assert granted.reservation_id and seen[-1] == "Active"
        assert [r.name for r in client.reservations(pool=pool)] == ["by-hand"]
        assert client.release(granted.reservation_id) is True, "release by ID"
        assert client.release("by-hand") is False


def test_operator_not_running_is_reported_and_leaves_nothing(
    control_plane: Any, fresh_operator: Any, kubectl: Kubectl, namespace: str
) -> None:
    pool = f"pool-{secrets.token_hex(4)}"
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "respool.io/v1alpha1",
        "kind": "ResourcePool",
        "metadata": {"name": pool},
        "spec": {"resources": {"version": 1, "execution": {"R_lite": [{"rank": "0", "children": {"core": "0"}}]}}},
    }))
    kubectl("wait", "--for=condition=Ready", f"rpool/{pool}", "--timeout=30s")
    fresh_operator.kill()
    client = KubernetesATSClient(namespace, kubeconfig=str(control_plane.kubeconfig), operator_timeout=3)
    started = time.monotonic()
    with pytest.raises(OperatorNotResponding, match="is it running"):
        ResourceReservation(pool, client).request_reservation()
    assert time.monotonic() - started < 15
    fresh_operator.start()
    wait_until_gone = time.monotonic() + 30
    while reservations(kubectl, namespace) and time.monotonic() < wait_until_gone:
        time.sleep(0.2)  # deleted at once; the restarted operator removes its finalizer, if any
    assert reservations(kubectl, namespace) == []
    kubectl("delete", "rpool", pool, "--wait=false", check=False)


# -- creates whose answer is lost, clean-ups that fail (issue 11, item 10) ----------------


def _lose_answers(ats: KubernetesATSClient, monkeypatch: pytest.MonkeyPatch,
                  landed: bool, times: int = 1) -> list[str]:
    """The next `times` creates reach the real API server (landed) or not, and their answer
    is lost on the way back: the connection drops."""
    import urllib3

    real = ats.api.custom.create_namespaced_custom_object
    names: list[str] = []

    def create(*args: Any, **kwargs: Any) -> Any:
        names.append(args[4]["metadata"]["name"])
        if len(names) <= times:
            if landed:
                real(*args, **kwargs)
            raise urllib3.exceptions.ProtocolError("Connection aborted.")
        return real(*args, **kwargs)

    monkeypatch.setattr(ats.api.custom, "create_namespaced_custom_object", create)
    return names


@pytest.mark.parametrize("landed", [True, False], ids=["create-landed", "create-lost"])
def test_a_create_whose_answer_is_lost_leaves_exactly_one_object(
    ats: KubernetesATSClient, make_pool: PoolFactory, kubectl: Kubectl, namespace: str,
    monkeypatch: pytest.MonkeyPatch, landed: bool,
) -> None:
    pool = make_pool()
    sent = _lose_answers(ats, monkeypatch, landed)
    pre_id, _start, _expires = ats.get_future_reservation(pool, time.time(), 600, None, True)
    [obj] = reservations(kubectl, namespace)
    # One name throughout (no generateName on the server): the retry found or made that one.
    assert len(set(sent)) == 1 and obj["metadata"]["name"] == sent[0]
    assert len(sent) == (1 if landed else 2)
    assert obj["metadata"]["annotations"]["respool.io/request-id"]
    assert obj["status"]["preReservationId"] == pre_id
    assert ats.release_resource(pre_id) is True


def test_a_failing_clean_up_never_hides_the_original_error(
    ats: KubernetesATSClient, make_pool: PoolFactory, kubectl: Kubectl, namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from respool.client import ClusterUnreachable

    pool = make_pool()
    holder = hold_whole_pool(ats, pool)

    def unreachable(*_args: Any, **_kwargs: Any) -> bool:
        raise ClusterUnreachable("the API server went away during the clean-up")

    monkeypatch.setattr(ats.api, "delete_reservation", unreachable)
    with pytest.raises(ResourceUnavailable) as caught:
        ats.get_future_reservation(pool, time.time(), 600, None, False)
    notes = " ".join(getattr(caught.value, "__notes__", []))
    assert "deleting ResourceReservation" in notes and "went away" in notes
    monkeypatch.undo()
    holder.release_reservation()
