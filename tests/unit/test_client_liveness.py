"""Holder liveness: which Pod the client runs in, whom the reservation is owned by, opting out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from respool.client.liveness import owner_of, running_pod, with_owner

JOB_POD = {"metadata": {"name": "ci-7xk2p", "uid": "pod-uid", "ownerReferences": [
    {"apiVersion": "batch/v1", "kind": "Job", "name": "ci", "uid": "job-uid", "controller": True}]}}
BARE_POD = {"metadata": {"name": "runner", "uid": "runner-uid"}}
BODY = {"apiVersion": "respool.io/v1alpha1", "kind": "ResourceReservation",
        "metadata": {"name": "r"}, "spec": {"pool": "p"}}


def test_the_pod_is_found_from_the_downward_api_or_the_service_account(tmp_path: Path) -> None:
    assert running_pod({}) is None  # not in a Pod
    assert running_pod({"POD_NAME": "p", "POD_NAMESPACE": "ns"}) == ("ns", "p")
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("team\n")
    in_pod = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "runner"}
    assert running_pod(in_pod, str(namespace_file)) == ("team", "runner")
    assert running_pod(in_pod, str(tmp_path / "absent")) is None
    for value in ("none", "None", "off", "false", "0"):
        assert running_pod({"POD_NAME": "p", "POD_NAMESPACE": "ns",
                            "RESPOOL_OWNER_REFERENCE": value}) is None


def test_a_job_owns_the_hold_of_its_pod_else_the_pod_does() -> None:
    assert owner_of(JOB_POD) == {"apiVersion": "batch/v1", "kind": "Job", "name": "ci",
                                 "uid": "job-uid"}
    assert owner_of(BARE_POD) == {"apiVersion": "v1", "kind": "Pod", "name": "runner",
                                  "uid": "runner-uid"}


def test_with_owner_sets_it_only_where_it_can_hold() -> None:
    env = {"POD_NAME": "ci-7xk2p", "POD_NAMESPACE": "team"}
    read: list[tuple[str, str]] = []

    def read_pod(namespace: str, name: str) -> dict[str, Any]:
        read.append((namespace, name))
        return JOB_POD

    owned = with_owner(BODY, "team", read_pod, env)
    assert owned["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert "ownerReferences" not in BODY["metadata"]  # the input is not changed
    assert read == [("team", "ci-7xk2p")]
    # Another namespace: owner references never cross namespaces.
    assert "ownerReferences" not in with_owner(BODY, "other", read_pod, env)["metadata"]
    # Opted out, or an owner given by the caller: left alone.
    assert "ownerReferences" not in with_owner(
        BODY, "team", read_pod, {**env, "RESPOOL_OWNER_REFERENCE": "none"})["metadata"]
    given = {**BODY, "metadata": {"name": "r", "ownerReferences": [{"kind": "X"}]}}
    assert with_owner(given, "team", read_pod, env)["metadata"]["ownerReferences"] == [{"kind": "X"}]


@pytest.mark.parametrize("error", [PermissionError("403"), LookupError("404")])
def test_a_pod_that_cannot_be_read_leaves_the_body_alone(error: Exception) -> None:
    def read_pod(namespace: str, name: str) -> dict[str, Any]:
        raise error

    env = {"POD_NAME": "p", "POD_NAMESPACE": "team"}
    assert with_owner(BODY, "team", read_pod, env) == BODY
