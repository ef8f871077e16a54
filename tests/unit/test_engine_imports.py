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


CONTROLLER_DIR = POOL_DIR.parent / "controller"
#: The pool actor and the parts split out of it read time only through the port's clock.
PORT_CLOCK_ONLY = ("actor.py", "pool_model.py", "pool_keeper.py", "finalizer_keeper.py",
                   "pool_status.py", "lifecycle.py")


def _controller_imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for source in sorted(CONTROLLER_DIR.glob("*.py")):
        edges = graph.setdefault(source.stem, set())
        for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
            if isinstance(node, ast.ImportFrom) and node.module == "respool.controller":
                edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "respool.controller."):
                edges.add((node.module or "").split(".")[2])
    return graph


def test_controller_modules_import_each_other_without_a_cycle() -> None:
    graph = _controller_imports()
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for other in sorted(graph.get(module, ())):
            if state.get(other) == "open":
                cycles.append([*path[path.index(other):], other])
            elif other not in state:
                visit(other, [*path, other])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
    # The actor's collaborators return results; none of them reaches back into it.
    assert sorted(m for m, edges in graph.items() if "actor" in edges) == ["controller"]


def test_the_actor_reads_time_only_through_its_port() -> None:
    offenders = []
    for name in PORT_CLOCK_ONLY:
        source = CONTROLLER_DIR / name
        for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in ("time", "datetime")
                    and node.attr in ("time", "now", "utcnow", "monotonic")):
                offenders.append(f"{name}:{node.lineno} {node.value.id}.{node.attr}")
    assert offenders == []
