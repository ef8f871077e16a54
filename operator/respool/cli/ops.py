"""`respool ops` sub-commands (placeholder until its area lands: registers nothing)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    """Add this module's sub-commands to the `respool` parser; each sets `handler=`."""
