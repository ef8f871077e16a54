"""How Flux's controllers are built from Go modules (respool.devcluster.flux): the wrapper
module takes the controller's own replace lines, drops its local ones, and adds the pin."""

from __future__ import annotations

from pathlib import Path

from respool.devcluster import flux
from respool.devcluster.build import module_replace_lines

# The shape of kustomize-controller v1.9.6's go.mod: a local replace, single and block replaces.
GO_MOD = """module github.com/fluxcd/kustomize-controller

go 1.26.0

replace github.com/fluxcd/kustomize-controller/api => ./api

// Replace digest lib to master to gather access to BLAKE3.
replace github.com/opencontainers/go-digest => github.com/opencontainers/go-digest v1.0.1-0.2022

// Pin kustomize to v5.8.1
replace (
	sigs.k8s.io/kustomize/api => sigs.k8s.io/kustomize/api v0.21.1 // pinned
	sigs.k8s.io/kustomize/kyaml => sigs.k8s.io/kustomize/kyaml v0.21.1
	example.com/local => ../local
)

replace gopkg.in/yaml.v3 => gopkg.in/yaml.v3 v3.0.1

require (
	github.com/fluxcd/kustomize-controller/api v1.9.6
)
"""


def test_module_replaces_are_copied_and_local_ones_dropped() -> None:
    assert module_replace_lines(GO_MOD) == [
        "github.com/opencontainers/go-digest => github.com/opencontainers/go-digest v1.0.1-0.2022",
        "sigs.k8s.io/kustomize/api => sigs.k8s.io/kustomize/api v0.21.1",
        "sigs.k8s.io/kustomize/kyaml => sigs.k8s.io/kustomize/kyaml v0.21.1",
        "gopkg.in/yaml.v3 => gopkg.in/yaml.v3 v3.0.1",
    ]


def test_flux_steps_build_both_controllers_with_their_replaces() -> None:
    steps = {step.name: step for step in flux.flux_steps()}
    assert set(steps) == set(flux.FLUX_BINARIES)
    assert all(step.module_replaces for step in steps.values())
    assert steps["source-controller"].extra_replaces == (flux.ARTIFACT_PIN,)
    assert steps["source-controller"].packages == {"source-controller": flux.SOURCE_CONTROLLER_MODULE}
    assert flux.cache_key("go1.26.8", "amd64") == (
        "flux-source-controller-v1.9.6_kustomize-controller-v1.9.6_go1.26.8_amd64")


def test_an_entry_without_crds_is_not_complete(tmp_path: Path) -> None:
    for name in flux.FLUX_BINARIES:
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    (tmp_path / "build-info.json").write_text("{}")
    assert not flux.is_complete(tmp_path)
    (tmp_path / "crds").mkdir()
    (tmp_path / "crds" / "a.yaml").write_text("kind: CustomResourceDefinition\n")
    assert flux.is_complete(tmp_path)
