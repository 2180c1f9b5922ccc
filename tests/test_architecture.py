"""The shape of the package: no import circle, short modules, the algorithm free of NNI, a slim pruner."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nni_dpap"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path) -> set[str]:
    """The nni_dpap modules ``name`` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "nni_dpap")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "nni_dpap":
                continue
            for alias in node.names:  # ``from .x import y`` imports the submodule x.y when there is one
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
    return {m for m in found if m in MODULES and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    assert graph["nni_dpap.pruner"] >= {"nni_dpap._layers", "nni_dpap.policy"}  # the analysis sees imports
    assert _cycles(graph) == []


def test_no_circle_between_subpackages():
    """Importing a submodule runs its package's ``__init__``: packages must not depend on each other in a circle."""
    def group(name: str) -> str:
        return ".".join(name.split(".")[:2])

    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        graph.setdefault(group(name), set()).update(group(m) for m in _imports(name, path) if group(m) != group(name))
    assert "nni_dpap.adapters" in graph["nni_dpap.graph"]
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_400_lines(name):
    assert len(MODULES[name].read_text().splitlines()) <= 400


def test_the_algorithm_does_not_import_nni():
    for name in ("nni_dpap.plasticity", "nni_dpap.metrics", "nni_dpap.ordering", "nni_dpap.policy.survival",
                 "nni_dpap.policy.config", "nni_dpap.policy.rule", "nni_dpap.policy.defaults"):
        tree = ast.parse(MODULES[name].read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m == "nni" or m.startswith("nni.") for m in imported), name


def test_slim_pruner_and_cli():
    source = MODULES["nni_dpap.pruner"].read_text().splitlines()
    start = next(i for i, line in enumerate(source) if line.startswith("class DPAPPruner"))
    assert len(source) - start <= 300
    assert len(MODULES["nni_dpap.cli"].read_text().splitlines()) <= 250
