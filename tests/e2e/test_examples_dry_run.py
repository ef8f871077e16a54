"""Every file in manifests/examples/ is accepted by the real API server as written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from respool.api.crds import generate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests" / "examples"


@pytest.fixture(scope="module")
def ready(kubectl: Any) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    for crd in generate():
        kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd['metadata']['name']}"
        )
    # The namespaces must exist for a server-side dry run of the namespaced examples.
    kubectl("apply", "-f", str(EXAMPLES / "00-namespaces.yaml"))


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_passes_server_side_dry_run(kubectl: Any, ready: None, path: Path) -> None:
    result = kubectl("apply", "--dry-run=server", "-f", str(path))
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(path.read_text()) if d]
    for name in names:
        assert name in result.stdout


def test_examples_are_commented_for_newcomers() -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        head = path.read_text().splitlines()[:3]
        assert all(line.startswith("#") for line in head), f"{path.name}: start with a comment"
