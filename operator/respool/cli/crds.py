"""`respool crds`: write (or check) the CRD YAML generated from the API models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``respool crds`` to the ``respool`` parser."""
    parser = sub.add_parser(
        "crds",
        help="write the CustomResourceDefinitions generated from the API models",
        description="Write resourcepools.respool.io.yaml and resourcereservations.respool.io.yaml, "
        "generated from the pydantic models in respool.api, into each --out directory "
        "(default: crds/). With --check, write nothing and exit 1 if any file differs.",
    )
    parser.add_argument(
        "--out",
        action="append",
        type=Path,
        metavar="DIR",
        help="directory to write into; repeat for several (default: crds)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare instead of writing; exit 1 and name the stale files if they differ",
    )
    parser.add_argument(
        "--stdout", action="store_true", help="print both CRDs as one YAML stream instead"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from respool.api.crds import rendered

    files = rendered()
    if args.stdout:
        sys.stdout.write("".join(files.values()))
        return 0
    stale: list[Path] = []
    for directory in args.out or [Path("crds")]:
        for name, text in files.items():
            path = directory / name
            current = path.read_text(encoding="utf-8") if path.is_file() else None
            if current == text:
                continue
            if args.check:
                stale.append(path)
                continue
            directory.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        for path in stale:
            print(f"stale: {path} differs from the models; run `respool crds`", file=sys.stderr)
        return 1
    return 0
