"""Entry point of the `respool` command.

Each area of the product registers its own sub-commands from its own module, so that the
engine, the dev cluster, the operator and the client can grow without editing one shared file:

- ``respool dev ...``                       -> respool.cli.dev       (local control plane)
- ``respool crds``                          -> respool.cli.crds      (CRD generation)
- ``respool run``                           -> respool.cli.run       (the operator)
- ``respool get/describe/reserve/release``  -> respool.cli.ops       (users' view)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from respool import __version__
from respool.cli import crds, dev, ops, run


def build_parser() -> argparse.ArgumentParser:
    # Installed twice: as `respool` and as the kubectl plugin `kubectl-respool`.
    invoked_as_plugin = os.path.basename(sys.argv[0]).startswith("kubectl-")
    parser = argparse.ArgumentParser(
        prog="kubectl respool" if invoked_as_plugin else "respool",
        description="Reserve shared hardware on Kubernetes: ResourcePools and ResourceReservations.",
    )
    parser.add_argument("--version", action="version", version=f"respool {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (dev, crds, run, ops):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
