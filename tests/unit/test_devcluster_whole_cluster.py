"""The whole dev cluster's wiring, without starting anything: build steps, component command
lines, simulated Node manifests, `--nodes`/`--node`, state files from before the components."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from respool.cli.dev import _node_names
from respool.devcluster import BINARIES, DEFAULT_VERSIONS, ControlPlane, DevClusterError
from respool.devcluster.build import BUILD_INFO, Builder, BuildStep, build_steps, find_go
from respool.devcluster.controlplane import (
    FAKE_NODE_ANNOTATION,
    POD_CIDR,
    SERVICE_CLUSTER_IP_RANGE,
    STATE_FILE,
    WORKLOAD_COMPONENTS,
)
from respool.devcluster.kwok_stages import STAGES_YAML


def test_every_binary_comes_from_exactly_one_step_and_etcd_is_last() -> None:
    steps = build_steps(DEFAULT_VERSIONS)
    built = [name for step in steps for name in step.packages]
    assert sorted(built) == sorted(BINARIES)
    assert steps[-1].name == "etcd"  # the Debian fallback is decided once the rest is built
    by_name = {step.name: step for step in steps}
    controllers = by_name["kubernetes-controllers"]
    assert controllers.module == by_name["kubernetes"].module == "k8s.io/kubernetes"
    assert controllers.version == DEFAULT_VERSIONS.kubernetes
    assert controllers.staging_replaces
    assert set(controllers.packages) == {"kube-scheduler", "kube-controller-manager"}
    assert by_name["kwok"].packages == {"kwok": "sigs.k8s.io/kwok/cmd/kwok"}
    assert by_name["kwok"].version == DEFAULT_VERSIONS.kwok


def test_kwok_is_stamped_with_its_release() -> None:
    kwok = next(step for step in build_steps(DEFAULT_VERSIONS) if step.name == "kwok")
    flags = kwok.ldflags(None, DEFAULT_VERSIONS)  # type: ignore[arg-type]
    assert flags == [f"-X sigs.k8s.io/kwok/pkg/consts.Version={DEFAULT_VERSIONS.kwok}"]


def test_a_step_is_reused_only_from_a_record_of_the_same_binaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """k8s.io/kubernetes feeds two steps: each takes its binaries and its own record (timings)
    from an entry, never the other step's; an entry from before the second step lends it
    nothing."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    toolchain = find_go()
    root = tmp_path / "bin"
    steps: dict[str, BuildStep] = {step.name: step for step in build_steps(DEFAULT_VERSIONS)}

    def entry(name: str, step_names: list[str]) -> None:
        directory = root / name
        directory.mkdir(parents=True)
        records = []
        for index, step_name in enumerate(step_names):
            step = steps[step_name]
            for binary in step.packages:
                (directory / binary).write_text("#!/bin/sh\n")
                (directory / binary).chmod(0o755)
            records.append({"binaries": list(step.packages), "module": step.module,
                            "version": step.version, "download_seconds": 1.0,
                            "build_seconds": 100.0 * (index + 1), "cpu_seconds": 1.0,
                            "max_rss_mib": 1.0})
        (directory / BUILD_INFO).write_text(json.dumps({
            "versions": {"go": toolchain.version, "goarch": toolchain.goarch}, "steps": records}))

    builder = Builder(toolchain, DEFAULT_VERSIONS, progress=lambda _message: None)
    entry("a-four-binary-entry", ["kubernetes"])
    out = root / ".staging-1"
    out.mkdir()
    assert builder._reusable_step(steps["kubernetes-controllers"], out) is None
    assert not (out / "kube-scheduler").exists()

    entry("b-seven-binary-entry", ["kubernetes", "kubernetes-controllers"])
    out = root / ".staging-2"
    out.mkdir()
    reused = builder._reusable_step(steps["kubernetes-controllers"], out)
    assert reused is not None and reused.reused_from == "b-seven-binary-entry"
    assert reused.binaries == ["kube-scheduler", "kube-controller-manager"]
    assert reused.build_seconds == 200.0  # its own record, not kube-apiserver's (100 s)
    assert (out / "kube-controller-manager").exists()


def _plane(tmp_path: Path) -> ControlPlane:
    return ControlPlane(tmp_path / "plane", bin_dir=tmp_path / "bin", whole_cluster=True)


def test_kwok_manages_only_annotated_nodes_with_its_stages(tmp_path: Path) -> None:
    plane = _plane(tmp_path)
    args = plane._component_args("kwok", 4321)
    assert args[0] == str(tmp_path / "bin" / "kwok")
    assert f"--kubeconfig={plane.kubeconfig}" in args
    assert "--manage-all-nodes=false" in args
    assert f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake" in args
    assert f"--cidr={POD_CIDR}" in args
    assert "--server-address=127.0.0.1:4321" in args
    assert f"--config={plane.kwok_dir / 'stages.yaml'}" in args
    env = plane._component_env("kwok")
    assert env is not None and env["KWOK_WORKDIR"] == str(plane.kwok_dir)
    # kwok refuses to start without stages for Nodes and Pods.
    names = [line.split(":", 1)[1].strip() for line in STAGES_YAML.splitlines() if line.startswith("  name:")]
    assert names == ["node-initialize", "node-heartbeat-with-lease", "pod-ready", "pod-complete", "pod-delete"]


def test_controller_manager_and_scheduler_serve_on_loopback_without_leader_election(tmp_path: Path) -> None:
    plane = _plane(tmp_path)
    manager = plane._component_args("kube-controller-manager", 1111)
    scheduler = plane._component_args("kube-scheduler", 2222)
    for args, port in ((manager, 1111), (scheduler, 2222)):
        assert "--bind-address=127.0.0.1" in args
        assert f"--secure-port={port}" in args
        assert "--leader-elect=false" in args
        assert f"--kubeconfig={plane.kubeconfig}" in args
    # Tokens signed with the key kube-apiserver verifies with; the CA every namespace gets.
    assert f"--service-account-private-key-file={plane.sa_key_file}" in manager
    assert f"--root-ca-file={plane.ca_file}" in manager
    assert f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}" in manager
    with pytest.raises(DevClusterError, match="unknown component"):
        plane._component_args("kubelet", 1)


def test_a_simulated_node_carries_kwoks_annotation_and_no_taint() -> None:
    node = ControlPlane.fake_node_manifest("rack-a-n0", cpu="16", memory="64Gi", pods="50")
    assert node["metadata"]["annotations"][FAKE_NODE_ANNOTATION] == "fake"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "rack-a-n0"
    assert "taints" not in node.get("spec", {})
    assert node["status"]["capacity"] == {"cpu": "16", "memory": "64Gi", "pods": "50"}


def test_simulated_nodes_need_a_whole_cluster(tmp_path: Path) -> None:
    bare = ControlPlane(tmp_path / "plane", bin_dir=tmp_path / "bin")
    with pytest.raises(DevClusterError, match="only a whole cluster runs"):
        bare.ensure_fake_nodes(["n0"])


def _args(nodes: int = 0, node: list[str] | None = None) -> argparse.Namespace:
    return argparse.Namespace(nodes=nodes, node=node or [])


def test_nodes_and_hostlists_expand_in_order_without_repeats() -> None:
    assert _node_names(_args(2)) == ["node-0", "node-1"]
    assert _node_names(_args(1, ["rack-a-n[0-2]", "node-0,lab-gpu1"])) == [
        "node-0", "rack-a-n0", "rack-a-n1", "rack-a-n2", "lab-gpu1",
    ]
    assert _node_names(_args()) == []


def test_bad_node_arguments_are_refused_with_the_reason() -> None:
    with pytest.raises(DevClusterError, match="--nodes must be 0 or more"):
        _node_names(_args(-1))
    with pytest.raises(DevClusterError, match=r"--node 'rack\[0-'"):
        _node_names(_args(0, ["rack[0-"]))


def test_a_state_file_from_before_the_components_loads_as_a_bare_plane(tmp_path: Path) -> None:
    """`respool dev up` after an upgrade finds a plane started by the older respool."""
    home = tmp_path / "dev"
    home.mkdir()
    old_state = {
        "workdir": str(home), "bin_dir": str(tmp_path / "bin"), "server": "https://127.0.0.1:1",
        "api_port": 1, "etcd_port": 2, "etcd_peer_port": 3, "etcd_data": str(tmp_path / "d"),
        "etcd_pid": 0, "apiserver_pid": 0, "started_at": 0.0, "ready_seconds": 1.0,
        "versions": {"kubernetes": DEFAULT_VERSIONS.kubernetes},
    }
    (home / STATE_FILE).write_text(json.dumps(old_state))
    plane = ControlPlane.load(home)
    assert plane is not None and plane.state is not None
    assert plane.state.components == {} and plane.whole_cluster is False
    assert plane.expected_processes() == ("etcd", "kube-apiserver")
    assert plane.processes_alive() == {"etcd": False, "kube-apiserver": False}


def test_a_whole_cluster_expects_all_five_processes(tmp_path: Path) -> None:
    assert _plane(tmp_path).expected_processes() == ("etcd", "kube-apiserver", *WORKLOAD_COMPONENTS)


def test_a_step_that_fails_to_build_names_the_binaries_the_log_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real `go` failure (a package the module does not have), not a simulated one."""
    from respool.devcluster import BuildError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    builder = Builder(find_go(), DEFAULT_VERSIONS, progress=lambda _message: None)
    builder.workspace.mkdir(parents=True)
    broken = BuildStep(name="kwok", module="sigs.k8s.io/kwok", version=DEFAULT_VERSIONS.kwok,
                       packages={"kwok": "sigs.k8s.io/kwok/cmd/no-such-command"})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BuildError) as failure:
        builder._build_step(broken, out)
    message = str(failure.value)
    assert "kwok failed (go exit status 1); nothing was cached" in message
    assert "run `respool dev build` again" in message
    assert str(builder.workspace / "kwok.log") in message
    assert "no-such-command" in message  # go's own words, from the log's tail
    assert not (out / "kwok").exists()
