"""The layer rule: cluster < actors < training < serving < pipelines.

Every import of the five packages (module level and inside functions alike) is parsed; a package
may import only itself and lower layers, and no two modules may import each other in a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("cluster", "actors", "training", "serving", "pipelines")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in LAYERS:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = f
    return mods


def _imported(node: ast.AST, module: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: resolve against this module's package
            pkg = module.split(".")[: -node.level]
            base = ".".join(pkg + ([base] if base else []))
        return [base] + [f"{base}.{a.name}" for a in node.names]
    return []


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (the longest known prefix of each import)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            for name in _imported(node, m):
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                if name and name != m:
                    graph[m].add(name)
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    rank = {p: i for i, p in enumerate(LAYERS)}
    return sorted((a, b) for a, deps in graph.items() for b in deps
                  if rank[b.split(".")[0]] > rank[a.split(".")[0]])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_upward_imports():
    up = upward_imports(import_graph())
    assert not up, "imports against the layers (cluster < actors < training < serving < pipelines): " + \
        ", ".join(f"{a} -> {b}" for a, b in up)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, f"import cycles: {found}"


def test_the_checker_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    """The checks can fail: a function-level upward import and a two-module cycle are found."""
    for pkg in LAYERS:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "actors" / "a.py").write_text("def f():\n    from pipelines.b import g\n")
    (tmp_path / "pipelines" / "b.py").write_text("from .c import h\n")
    (tmp_path / "pipelines" / "c.py").write_text("import pipelines.b\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    graph = import_graph()
    assert upward_imports(graph) == [("actors.a", "pipelines.b")]
    assert cycles(graph) == [["pipelines.b", "pipelines.c"]]
