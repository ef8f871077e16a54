"""The `respool` entry point imports only the module that owns the command being run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from respool.cli.main import COMMAND_MODULES, _modules_for, build_parser


@pytest.mark.parametrize("command", sorted(COMMAND_MODULES))
def test_each_command_is_registered_by_its_own_module(command: str) -> None:
    parser = build_parser([command, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert _modules_for([command]) == [COMMAND_MODULES[command]]


def test_help_and_unknown_words_register_every_command() -> None:
    assert set(_modules_for(["--help"])) == set(COMMAND_MODULES.values())
    assert set(_modules_for(["no-such-command"])) == set(COMMAND_MODULES.values())
    parser = build_parser([])
    with pytest.raises(SystemExit):
        parser.parse_args(["no-such-command"])


def test_options_before_the_command_are_skipped() -> None:
    assert _modules_for(["--kubeconfig=x", "get", "pools"]) == ["respool.cli.ops"]


def test_dev_commands_do_not_import_the_kubernetes_client_or_kopf() -> None:
    probe = (
        "import sys\n"
        "from respool.cli.main import build_parser\n"
        "build_parser(['dev', 'status'])\n"
        "print(sorted(m for m in ('kopf', 'kubernetes') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_output_into_a_closed_pipe_ends_quietly_like_a_unix_tool() -> None:
    """`respool ... | head`: once the reader is gone, no BrokenPipeError traceback, and the
    shell's status for a tool ended by SIGPIPE."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first write: EPIPE is certain
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "respool.cli.main", "crds", "--stdout"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert completed.returncode == 141, completed.stderr
    assert completed.stderr == ""
