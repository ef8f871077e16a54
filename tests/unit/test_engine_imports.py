"""respool.pool must import nothing outside the standard library (docs/architecture.md)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import respool.pool

POOL_DIR = Path(respool.pool.__file__).parent


def test_pool_sources_import_only_the_standard_library() -> None:
    allowed = set(sys.stdlib_module_names) | {"__future__"}
    offenders: list[str] = []
    for source in sorted(POOL_DIR.glob("*.py")):
        tree = ast.parse(source.read_text(), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level > 0:  # relative: inside respool.pool
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                if name.split(".")[0] not in allowed:
                    offenders.append(f"{source.name}:{node.lineno} imports {name}")
    assert offenders == []


def test_importing_the_pool_loads_no_third_party_module() -> None:
    script = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import respool.pool\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(result.stdout)
    allowed = set(sys.stdlib_module_names)
    third_party = [
        name
        for name in loaded
        if name.split(".")[0] not in allowed and not name.startswith("respool")
    ]
    assert third_party == []
    # and of respool itself, only the engine package (respool/__init__ must stay light)
    assert [
        name
        for name in loaded
        if name.startswith("respool") and not name.startswith("respool.pool")
    ] in ([], ["respool"])
