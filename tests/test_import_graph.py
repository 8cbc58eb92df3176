"""The project's import graph: no cycles, and the layer rules of ARCHITECTURE.md.

Every module of ``trainers``, ``search``, ``ensemble`` and ``reports`` is parsed with ``ast``;
both module-level and function-local ``import`` / ``from`` statements count, so a cycle cannot
hide behind a function-local import. Imports under ``if TYPE_CHECKING:`` are left out: they
never run (annotations are strings under ``from __future__ import annotations``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("trainers", "search", "ensemble", "reports")

#: Config modules are leaves (ARCHITECTURE.md rule 17): they may import other config modules
#: and these helpers, which import no project module themselves.
CONFIG_MODULES = frozenset({"trainers.config", "search.config", "ensemble.config"})
LEAF_HELPERS = frozenset(
    {"trainers._atomic", "trainers._registry", "trainers.errors", "search._locations"}
)
#: Imports of config modules not yet moved out, each with why it is still there. An entry that
#: no longer occurs fails the test, so the list only shrinks.
KNOWN_CONFIG_IMPORTS: Mapping[tuple[str, str], str] = {
    ("ensemble.config", "ensemble.methods"): "ensemble.methods: the methods field validator "
    "checks names against the METHODS registry (lazy, for numpy/scipy)",
}


@dataclass(frozen=True)
class Edge:
    """Project module ``source`` imports project module ``target`` (at ``line`` of ``source``)."""

    source: str
    target: str
    line: int


def module_name(path: Path, root: Path = REPO) -> str:
    """``trainers/data/layouts.py`` -> ``trainers.data.layouts``; a package's ``__init__`` -> the package."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path = REPO) -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    return {
        module_name(p, root): p
        for package in PACKAGES
        for p in sorted((root / package).rglob("*.py"))
    }


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run (anywhere: module level or in a function)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:  # the `else:` branch does run
                yield from _runtime_imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _runtime_imports(node)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a (possibly relative) ``from`` import names."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_names(module: str, path: Path) -> Iterator[tuple[list[str], int]]:
    """Per run-time import statement of ``module``: the dotted names it may load, and its line.

    ``from a import b`` gives ``[a, a.b]`` (``b`` may be a submodule or a name in ``a``).
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            yield from (([alias.name], node.lineno) for alias in node.names)
        else:
            base = _absolute(node, module, is_package)
            yield [base] + [f"{base}.{alias.name}" for alias in node.names], node.lineno


def _resolve(name: str, modules: Mapping[str, Path]) -> str | None:
    """The longest project module that ``name`` is or lies in, else None."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_edges(modules: Mapping[str, Path]) -> list[Edge]:
    """Edges between project modules (``from pkg import sub`` points at ``pkg.sub``)."""
    edges: dict[tuple[str, str], Edge] = {}
    for module, path in modules.items():
        for names, line in imported_names(module, path):
            targets = {_resolve(name, modules) for name in names} - {None, module}
            if len(names) > 1 and len(targets) > 1:
                # `from pkg import sub`: the edge goes to pkg.sub, not to pkg's __init__ too
                targets.discard(_resolve(names[0], modules))
            for target in targets:
                edges.setdefault((module, target), Edge(module, target, line))
    return list(edges.values())


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component with more than one node
    (or a self-loop), found with Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    components.append(component)
    return [_cycle_in(sorted(c), graph) for c in components]


def _cycle_in(component: list[str], graph: Mapping[str, set[str]]) -> list[str]:
    """A concrete cycle through the component's first node (breadth-first, so a short one)."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph.get(node, ())):
            if child == start:
                return paths[node] + [start]
            if child in members and child not in paths:
                paths[child] = paths[node] + [child]
                queue.append(child)
    return component  # unreachable for a strongly connected component


MODULES = project_modules()
EDGES = import_edges(MODULES)


def _where(edge: Edge) -> str:
    return f"{MODULES[edge.source].relative_to(REPO)}:{edge.line} imports {edge.target}"


def _package(module: str) -> str:
    return module.split(".")[0]


# ------------------------------------------------------------------------------ the checker


def test_find_cycles_finds_a_cycle_and_passes_a_tree() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"a"}}) == [["a", "a"]]


def test_function_local_imports_count_and_type_checking_ones_do_not(tmp_path: Path) -> None:
    pkg = tmp_path / "trainers"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from trainers import b\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from trainers.a import f\n"
        "from . import c\n"
    )
    (pkg / "c.py").write_text("import trainers.a\n")
    modules = {module_name(p, tmp_path): p for p in sorted(pkg.rglob("*.py"))}
    graph = {e.source: set() for e in import_edges(modules)}
    for e in import_edges(modules):
        graph[e.source].add(e.target)
    assert graph == {
        "trainers.a": {"trainers.b"},
        "trainers.b": {"trainers.c"},
        "trainers.c": {"trainers.a"},
    }
    assert find_cycles(graph) == [["trainers.a", "trainers.b", "trainers.c", "trainers.a"]]


def test_the_scan_sees_the_project() -> None:
    # a scan that finds nothing would pass every rule below
    assert {"trainers.config", "search.config", "ensemble.config", "search.cli._app"} <= set(
        MODULES
    )
    assert any(e.source == "trainers.loop" and e.target == "trainers.config" for e in EDGES)


# ------------------------------------------------------------------------------ the rules


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    lines = {}
    for e in EDGES:
        graph[e.source].add(e.target)
        lines[e.source, e.target] = e.line
    cycles = find_cycles(graph)
    shown = [
        " -> ".join(f"{a} ({MODULES[a].relative_to(REPO)}:{lines[a, b]})" for a, b in zip(c, c[1:]))
        + f" -> {c[-1]}"
        for c in cycles
    ]
    assert not cycles, "import cycles (move the shared part into a leaf module):\n" + "\n".join(
        shown
    )


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("trainers", {"search", "ensemble", "reports"}), ("ensemble", {"search"})],
)
def test_data_flows_one_way(package: str, forbidden: set[str]) -> None:
    bad = [
        _where(e)
        for e in EDGES
        if _package(e.source) == package and _package(e.target) in forbidden
    ]
    assert not bad, f"{package} must not import {sorted(forbidden)}:\n" + "\n".join(bad)


def test_only_search_imports_ray() -> None:
    bad = []
    for module, path in MODULES.items():
        if _package(module) == "search":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):  # TYPE_CHECKING imports too: ray is search's alone
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and not node.level
                    else []
                )
            )
            bad += [
                f"{path.relative_to(REPO)}:{node.lineno} imports {n}"
                for n in names
                if n == "ray" or n.startswith("ray.")
            ]
    assert not bad, "only search imports Ray:\n" + "\n".join(bad)


def test_config_modules_are_leaves() -> None:
    allowed = CONFIG_MODULES | LEAF_HELPERS
    found = {
        (e.source, e.target): e
        for e in EDGES
        if e.source in CONFIG_MODULES and e.target not in allowed
    }
    bad = [_where(e) for key, e in sorted(found.items()) if key not in KNOWN_CONFIG_IMPORTS]
    assert not bad, (
        "config modules import only config modules and "
        f"{', '.join(sorted(LEAF_HELPERS))}:\n" + "\n".join(bad)
    )
    gone = sorted(set(KNOWN_CONFIG_IMPORTS) - set(found))
    assert not gone, f"remove these from KNOWN_CONFIG_IMPORTS, they no longer occur: {gone}"


def test_leaf_helpers_import_only_leaves() -> None:
    leaves = LEAF_HELPERS | CONFIG_MODULES
    bad = [_where(e) for e in EDGES if e.source in LEAF_HELPERS and e.target not in leaves]
    assert not bad, "leaf helpers import only leaf helpers and config modules:\n" + "\n".join(bad)
