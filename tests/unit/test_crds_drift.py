"""The committed CRD YAML (crds/, the Helm chart, the kustomize base) is what the models generate."""

from __future__ import annotations

from pathlib import Path

import pytest

from respool.api.crds import rendered
from respool.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
COPIES = [ROOT / "crds", ROOT / "helm" / "respool" / "crds", ROOT / "manifests" / "crds"]


@pytest.mark.parametrize("directory", COPIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_crds_match_the_models(directory: Path) -> None:
    expected = rendered()
    present = sorted(p.name for p in directory.glob("*.yaml"))
    assert present == sorted(expected), f"{directory}: unexpected CRD files {present}"
    for name, text in expected.items():
        assert (directory / name).read_text(encoding="utf-8") == text, (
            f"{directory / name} is stale; regenerate every copy with `respool crds "
            + " ".join(f"--out {copy.relative_to(ROOT)}" for copy in COPIES)
            + "`"
        )


def test_generation_is_deterministic() -> None:
    assert rendered() == rendered()


def test_cli_check_reports_drift_and_writes_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["crds", "--check", "--out", str(tmp_path)]) == 1
    assert "stale" in capsys.readouterr().err
    assert main(["crds", "--out", str(tmp_path)]) == 0
    assert main(["crds", "--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "resourcepools.respool.io.yaml").write_text("# edited by hand\n")
    assert main(["crds", "--check", "--out", str(tmp_path)]) == 1
