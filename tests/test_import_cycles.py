"""meshlab's modules import one another without a cycle, and each imports on its own.

The layers point one way (``meshlab/__init__.py``): netfilter knows nothing of Istio, Istio
builds on it, pods and worlds combine them, and lessons, pictures, widgets and the command
line only read their results. A cycle means two modules each need the other, so neither can
be read (or tested, or changed) alone, and a cycle hidden in a function-level import is a
cycle still: the graph below counts every import the code runs, wherever it is written. Only
imports under ``if TYPE_CHECKING:`` are left out, since they never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "meshlab"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _run_time_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree`` except those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _run_time_imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _run_time_imports(node)


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The meshlab modules an import statement in ``module`` loads (a name that is a
    submodule counts as that submodule)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
        yield from (t for t in targets if t in MODULES)
        return
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    if base not in MODULES:
        return
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        yield sub if sub in MODULES else base


@cache
def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = {target for node in _run_time_imports(tree)
                         for target in _imported(module, node) if target != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle once, as found by a depth-first search (``[a, b, a]``: a imports b imports a)."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle = [*path[path.index(target):], target]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    found.append(cycle)
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_the_graph_sees_function_level_imports() -> None:
    graph = import_graph()
    assert "meshlab.errors" in graph["meshlab.scenarios"]
    assert "meshlab.istio.inject" in graph["meshlab.pod"]  # imported inside Pod.from_manifest
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


#: Cycles being cut elsewhere, each named by its modules. An entry that no longer matches a
#: cycle fails the test below, so it is removed as soon as the cycle is gone.
BEING_CUT: set[frozenset[str]] = set()


def test_no_module_of_meshlab_imports_itself_round_a_cycle() -> None:
    found = cycles(import_graph())
    new = [cycle for cycle in found if frozenset(cycle) not in BEING_CUT]
    assert not new, "import cycles (cut each where the ownership is clear):\n" + "\n".join(
        " -> ".join(cycle) for cycle in new)
    gone = BEING_CUT - {frozenset(cycle) for cycle in found}
    assert not gone, f"these cycles are cut now; remove them from BEING_CUT: {gone}"


@pytest.mark.slow
def test_each_module_imports_alone_in_a_fresh_interpreter() -> None:
    # One fresh interpreter; before each module, every meshlab module is forgotten, so each
    # import starts from nothing of meshlab (third-party modules stay loaded: it is quicker).
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {sorted(MODULES)!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'meshlab' or m.startswith('meshlab.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as error:\n"
        "        failed.append(f'{name}: {type(error).__name__}: {error}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, f"modules that do not import alone:\n{done.stdout}{done.stderr}"
