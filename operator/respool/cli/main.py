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
        importlib.import_module(name).register(sub)
    return parser


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
