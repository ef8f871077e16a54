"""The admission webhook's decisions (pure), the gate lifter's patch, the webhook certificate."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from respool.controller.admission import (
    SCHEDULING_GATE,
    TOLERATION,
    ReservationFacts,
    ReservationIndex,
    mutated_spec,
    refusal,
)
from respool.controller.pod_gates import is_gated, lift_ops
from respool.controller.webhook_certs import ensure_certificates


def reservation(name: str = "train", ns: str = "team", *, phase: str = "Active",
                mode: str = "exclusive", nodelist: str = "n[1-2]", uid: str | None = None,
                conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"uid": uid or f"uid-{ns}-{name}", "namespace": ns, "name": name},
            "spec": {"pool": "p", "mode": mode},
            "status": {"phase": phase, "endTime": "2026-12-01T10:00:00Z",
                       "allocated": {"mode": mode, "nodelist": nodelist},
                       "conditions": conditions or []}}


def facts(**kwargs: Any) -> ReservationFacts:
    return ReservationFacts.from_object(reservation(**kwargs))


def test_the_index_finds_by_namespace_and_name_and_forgets_deleted_ones() -> None:
    index = ReservationIndex()
    index.on_reservation(None, reservation())
    index.on_reservation(None, reservation(ns="other"))
    found = index.get("team", "train")
    assert found is not None and found.nodes == ("n1", "n2") and found.phase == "Active"
    assert index.namespaces_of("train") == ["other", "team"]
    index.on_reservation("DELETED", {"metadata": {"uid": "uid-other-train"}})
    assert index.get("other", "train") is None and index.namespaces_of("train") == ["team"]


def test_refusals_say_which() -> None:
    assert refusal("team", "x", None, []) == (
        "ResourceReservation 'x' does not exist in namespace 'team' (label "
        "respool.io/reservation names the reservation the Pod uses)")
    assert "is not in namespace 'team' (it is in 'a', 'b')" in str(refusal("team", "x", None, ["a", "b"]))
    failed = facts(phase="Failed", conditions=[
        {"type": "Ready", "status": "False", "reason": "Infeasible"},
        {"type": "Stalled", "status": "True", "reason": "Infeasible"}])
    assert refusal("team", "train", failed, []) == (
        "ResourceReservation 'train' in namespace 'team' is Failed (Infeasible): no Pod can use it")
    assert "has Expired at 2026-12-01T10:00:00Z" in str(refusal("team", "train", facts(phase="Expired"), []))
    for phase in ("Pending", "Scheduled", "Active"):
        assert refusal("team", "train", facts(phase=phase), []) is None


def test_an_active_exclusive_reservation_gives_toleration_and_affinity_anded_into_every_term() -> None:
    spec = {"containers": [{"name": "c"}],
            "tolerations": [{"key": "other", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}},
                "podAntiAffinity": {"x": 1}}}
    result = mutated_spec(spec, facts())
    assert result["tolerations"] == [{"key": "other", "operator": "Exists"}, TOLERATION]
    terms = result["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert len(terms) == 2
    for term in terms:
        assert term["matchFields"] == [{"key": "metadata.name", "operator": "In",
                                        "values": ["n1", "n2"]}]
        assert term["matchExpressions"]
    assert result["affinity"]["podAntiAffinity"] == {"x": 1}
    assert "schedulingGates" not in result
    assert spec["tolerations"] == [{"key": "other", "operator": "Exists"}]  # input untouched
    # Admitting twice (a re-invocation) adds nothing twice.
    assert mutated_spec(result, facts()) == result


def test_not_active_gates_without_affinity_and_shared_gets_no_toleration() -> None:
    result = mutated_spec({"containers": []}, facts(phase="Scheduled", mode="shared"))
    assert result["schedulingGates"] == [{"name": SCHEDULING_GATE}]
    assert "affinity" not in result and "tolerations" not in result
    shared_active = mutated_spec({"containers": []}, facts(mode="shared"))
    assert "tolerations" not in shared_active and "affinity" in shared_active


def test_lifting_adds_the_affinity_and_removes_only_our_gate_conditionally() -> None:
    pod = {"metadata": {"name": "p", "namespace": "team", "resourceVersion": "42",
                        "labels": {"respool.io/reservation": "train"}},
           "spec": {"schedulingGates": [{"name": SCHEDULING_GATE}, {"name": "example.com/q"}]}}
    assert is_gated(pod)
    ops = lift_ops(pod, facts())
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "42"}
    assert ops[1]["path"] == "/spec/affinity"
    assert ops[1]["value"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                "values": ["n1", "n2"]}]}]}
    assert ops[2] == {"op": "replace", "path": "/spec/schedulingGates",
                      "value": [{"name": "example.com/q"}]}
    pod["spec"]["schedulingGates"] = [{"name": SCHEDULING_GATE}]
    assert lift_ops(pod, facts())[-1] == {"op": "remove", "path": "/spec/schedulingGates"}


def test_the_generated_certificate_serves_tls_for_its_names(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path, ["127.0.0.1", "respool.respool-system.svc"])
    assert files.generated and files.cafile != files.certfile
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(files.certfile, files.keyfile)
    client = ssl.create_default_context(cafile=str(files.cafile))
    assert client.verify_mode == ssl.CERT_REQUIRED
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0
    # Present files (a mounted Secret) are used as they are.
    again = ensure_certificates(tmp_path, ["elsewhere"])
    assert not again.generated and again.certfile.read_bytes() == files.certfile.read_bytes()
