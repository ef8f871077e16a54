"""Entry point of the `respool` command.

Each area of the product registers its own sub-commands from its own module, so that the
engine, the dev cluster, the operator and the client can grow without editing one shared file:

- ``respool dev ...``                       -> respool.cli.dev       (local control plane)
- ``respool crds``                          -> respool.cli.crds      (CRD generation)
- ``respool run``                           -> respool.cli.run       (the operator)
- ``respool get/describe/reserve/release/free`` -> respool.cli.ops    (users' view)
- ``respool dashboard``                     -> respool.cli.dashboard (the web dashboard)
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from respool import __version__
from respool.extras import CLIENT_EXTRA_INSTALL, ClientExtraMissing, is_client_extra_missing

# Which module registers each top-level command. Only the module that owns the command being
# run is imported: `ops` pulls in the kubernetes client and `run` pulls in kopf, which would make
# every `respool dev ...` call pay for both.
COMMAND_MODULES: dict[str, str] = {
    "dev": "respool.cli.dev",
    "crds": "respool.cli.crds",
    "run": "respool.cli.run",
    "get": "respool.cli.ops",
    "describe": "respool.cli.ops",
    "reserve": "respool.cli.ops",
    "release": "respool.cli.ops",
    "free": "respool.cli.ops",
    "dashboard": "respool.cli.dashboard",
}


def _modules_for(argv: Sequence[str]) -> list[str]:
    """The modules to register: the owner of the first positional word, else all (for help)."""
    first = next((word for word in argv if not word.startswith("-")), None)
    if first in COMMAND_MODULES:
        return [COMMAND_MODULES[first]]
    return list(dict.fromkeys(COMMAND_MODULES.values()))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    # Installed twice: as `respool` and as the kubectl plugin `kubectl-respool`.
    invoked_as_plugin = os.path.basename(sys.argv[0]).startswith("kubectl-")
    parser = argparse.ArgumentParser(
        prog="kubectl respool" if invoked_as_plugin else "respool",
        description="Reserve shared hardware on Kubernetes: ResourcePools and ResourceReservations.",
    )
    parser.add_argument("--version", action="version", version=f"respool {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = _modules_for(sys.argv[1:] if argv is None else argv)
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as missing:
            # The client's commands without the client extra (e.g. in the operator's image):
            # they stay listed and say how to get them; the operator's commands still work.
            if not is_client_extra_missing(missing):
                raise
            _register_unavailable(sub, name, missing)
            continue
        module.register(sub)
    return parser


def _register_unavailable(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    module: str,
    missing: ModuleNotFoundError,
) -> None:
    """Register ``module``'s commands as stubs that explain what to install and exit 2."""
    explanation = str(ClientExtraMissing(missing.name))

    def explain(_args: argparse.Namespace) -> int:
        print(f"error: {explanation}", file=sys.stderr)
        return 2

    for command, owner in COMMAND_MODULES.items():
        if owner != module:
            continue
        # No argument can start with NUL, so every word (options and -h too) reaches the stub.
        stub = sub.add_parser(
            command, help=f"(needs {CLIENT_EXTRA_INSTALL})", add_help=False, prefix_chars="\x00"
        )
        stub.add_argument("ignored", nargs=argparse.REMAINDER)
        stub.set_defaults(handler=explain)


#: What a shell reports for a tool ended by SIGPIPE (128 + 13), e.g. `yes | head`.
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        status = int(handler(args) or 0)
        # Inside the try: a reader that went away shows up here, not in the final flush at
        # interpreter exit (where it would print "Exception ignored ... BrokenPipeError").
        sys.stdout.flush()
        return status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `respool get reservations -A | head`: the reader has all it wanted. Stop quietly as
        # Unix tools do; what is still buffered goes nowhere instead of raising again at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
