"""The operator needs no Kubernetes client; the client says how to get it when it is missing.

`pip install respool` (and the operator's image) leaves the official ``kubernetes`` package --
the bulk of the image before -- to the ``client`` extra. These tests run fresh interpreters in
which ``kubernetes`` and ``urllib3`` cannot be imported, as in the image, and check that the
operator loads, that the client's commands stay listed and name the extra, and that the
operator's modules do not even import the client where it is installed.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from respool.extras import CLIENT_EXTRA_INSTALL

# Makes `import kubernetes` / `import urllib3` fail as where they are not installed.
WITHOUT_CLIENT = (
    "import sys\n"
    "sys.modules['kubernetes'] = None\n"
    "sys.modules['urllib3'] = None\n"
)
RUN_CLI = WITHOUT_CLIENT + "from respool.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
# Everything `respool run` loads before it starts kopf, and kopf itself.
OPERATOR_MODULES = (
    "kopf",
    "respool.cli.run",
    "respool.controller.handlers",
    "respool.controller.controller",
    "respool.controller.kubeapi",
    "respool.controller.leader",
)


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


def test_the_operator_loads_without_the_kubernetes_client() -> None:
    imports = "".join(f"import {name}\n" for name in OPERATOR_MODULES)
    result = _python(WITHOUT_CLIENT + imports + "print('loaded')")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded"


def test_the_operator_does_not_import_the_client_where_it_is_installed() -> None:
    # kopf itself imports an installed kubernetes package (for its optional piggy-backed
    # login); what respool's operator modules add on top must hold nothing of the client.
    probe = (
        "import sys\n"
        "def client_modules():\n"
        "    return {m for m in sys.modules if m.split('.')[0] in {'kubernetes', 'urllib3'}\n"
        "            or m.startswith('respool.client')}\n"
        "import kopf\n"
        "before = client_modules()\n"
        + "".join(f"import {name}\n" for name in OPERATOR_MODULES)
        + "print(sorted(client_modules() - before))\n"
    )
    result = _python(probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_run_help_works_without_the_client() -> None:
    result = _python(RUN_CLI, "run", "--help")
    assert result.returncode == 0, result.stderr
    assert "--leader-election" in result.stdout or "usage:" in result.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["get", "pools"],
        ["get", "reservations", "-A", "-o", "json"],
        ["describe", "pool", "rack-a"],
        ["reserve", "rack-a", "--nodes", "2", "--wait"],
        ["release", "-h"],
        ["free", "rack-a"],
        ["dashboard", "--port", "0"],
    ],
)
def test_client_commands_name_the_extra_without_the_client(argv: list[str]) -> None:
    result = _python(RUN_CLI, *argv)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert CLIENT_EXTRA_INSTALL in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_command_without_the_client() -> None:
    result = _python(RUN_CLI, "--help")
    assert result.returncode == 0, result.stderr
    for command in ("dev", "crds", "run", "get", "describe", "reserve", "release", "free", "dashboard"):
        assert command in result.stdout
    assert f"(needs {CLIENT_EXTRA_INSTALL})" in result.stdout


def test_importing_the_client_names_the_extra() -> None:
    result = _python(
        WITHOUT_CLIENT
        + "from respool.extras import ClientExtraMissing\n"
        + "try:\n    import respool.client\n"
        + "except ClientExtraMissing as error:\n    print(type(error).__mro__[1].__name__, error)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ModuleNotFoundError ")
    assert CLIENT_EXTRA_INSTALL in result.stdout
