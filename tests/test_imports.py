"""The packages' import graph has no cycles: a factory wires, a service sends, handlers translate
HTTP, and nothing imports back up (a function-level import only hides a cycle, so it counts)."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import gateway
import providers

PACKAGES = (gateway, providers)


def _modules() -> dict[str, Path]:
    """Every module of the packages by dotted name (a package by its ``__init__``)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        root = Path(next(iter(package.__path__)))
        for path in root.rglob("*.py"):
            parts = (package.__name__, *path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
              known: Mapping[str, Path]) -> Iterator[str]:
    """The known modules one import statement names (``from p import m`` names ``p.m``)."""
    if isinstance(node, ast.Import):
        bases = [alias.name for alias in node.names]
        names: list[str] = []
    else:
        base = node.module or ""
        if node.level:  # relative: from the module's own package, up level - 1
            here = module.split(".") if is_package else module.split(".")[:-1]
            here = here[: len(here) - (node.level - 1)]
            base = ".".join([*here, base] if base else here)
        bases = [base]
        names = [f"{base}.{alias.name}" for alias in node.names]
    for name in names:
        if name in known:
            yield name
    if not any(name in known for name in names):
        for base in bases:
            parts = base.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()  # ``import a.b.c`` of a name in a.b: the module is a.b
            if parts:
                yield ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its text (top level, in functions,
    under ``TYPE_CHECKING``)."""
    known = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        graph[module] = {
            target
            for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
            for target in _imported(node, module, is_package, known) if target != module
        }
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_every_kind_of_import() -> None:
    """The walker itself: function-level, relative and ``from package import module`` imports
    are all edges, or the check below would pass by not looking."""
    graph = import_graph()
    assert "gateway.handlers" in graph["gateway.app"]  # wiring: the factory adds the routes
    assert "providers.base" in graph["providers.aliyun"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


COUNTERS = frozenset({"requests", "attempts", "latency", "reloads", "transitions", "pool_waits",
                      "pool_timeouts", "limited"})


def test_only_the_observer_counts() -> None:
    """Every outcome goes through :class:`gateway.observe.Observer`: no other module reaches
    into the metrics' counters (``….metrics.requests``), so nothing is counted twice or missed."""
    counted: list[str] = []
    for module, path in _modules().items():
        if module in ("gateway.observe", "gateway.metrics"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr in COUNTERS
                    and isinstance(node.value, ast.Attribute | ast.Name)
                    and getattr(node.value, "attr", getattr(node.value, "id", "")) == "metrics"):
                counted.append(f"{module}:{node.lineno}")
    assert counted == []
