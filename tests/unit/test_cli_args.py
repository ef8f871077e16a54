"""`respool get|describe|reserve|release`: argument handling and errors that need no cluster.

Output on real objects is checked in tests/e2e/test_cli_*.py.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from respool.cli.main import main
from respool.cli.ops import table


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: ctx, context: {{cluster: c, user: u, namespace: team-x}}}}]
current-context: ctx
"""
    )
    return path


def test_unreachable_cluster_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_kubeconfig(tmp_path / "kc", f"https://127.0.0.1:{closed_port()}")
    assert main(["get", "pools", "--kubeconfig", str(config), "--request-timeout", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach the Kubernetes API server at https://127.0.0.1:")
    assert "connection refused" in err
    assert "Traceback" not in err


def test_kubeconfig_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", f"https://127.0.0.1:{port}")))
    assert main(["release", "x"]) == 1
    assert f"127.0.0.1:{port}" in capsys.readouterr().err


def test_missing_kubeconfig_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", "reservations", "--kubeconfig", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_unknown_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", "widgets", "--kubeconfig", str(tmp_path / "nope")]) == 1
    assert "unknown kind 'widgets'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["reserve", "rack-a", "--nodes", "0"], "--nodes must be >= 1"),
        (["reserve", "rack-a", "--duration", "an hour"], "invalid duration"),
        (["reserve", "rack-a", "--wait", "--timeout", "soon"], "invalid duration"),
        (["reserve", "rack-a", "--start", "tomorrow"], "invalid time"),
        (["describe", "pool", "x", "--hours", "0"], "--hours must be > 0"),
    ],
)
def test_bad_arguments_fail_before_any_call(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_kubeconfig(tmp_path / "kc", f"https://127.0.0.1:{closed_port()}")
    assert main([*argv, "--kubeconfig", str(config)]) == 1
    err = capsys.readouterr().err
    assert message in err and "cannot reach" not in err


def test_table_aligns_columns_like_kubectl() -> None:
    assert table(["NAME", "AGE"], [["a-long-name", "5s"], ["b", "12m"]]).splitlines() == [
        "NAME          AGE",
        "a-long-name   5s",
        "b             12m",
    ]
