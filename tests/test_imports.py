"""Tests for the import structure of src/satgan: no module imports itself back, however indirectly.

The walk reads each module's source with ``ast`` and takes every import statement in it:
module level, inside functions (the lazy imports that keep a stage's startup light) and under
``if TYPE_CHECKING:`` (an annotation-only import still ties the two modules' designs together;
issue 21 counted train/step.py <-> train/fastpath.py that way). An import names the most
specific satgan module it reaches (``from satgan.train import fastpath`` -> satgan.train.fastpath,
``from satgan.train import train`` -> the package satgan.train). The parent packages that Python
initialises on the way are not counted: a package's ``__init__`` re-exporting its submodules is
its public face, not a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx  # a dependency of torch: strongly connected components and cycle listing

from train_helpers import REPO

SRC = REPO / "src"


def satgan_modules(src: Path, top: str = "satgan") -> dict[str, tuple[Path, bool]]:
    """Every module under ``src/top``: dotted name -> (file, is a package ``__init__``)."""
    out = {}
    for f in sorted((src / top).rglob("*.py")):
        parts = list(f.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def _imported(node: ast.Import | ast.ImportFrom, package: str, modules: dict[str, tuple[Path, bool]]) -> list[str]:
    """The dotted names an import statement reaches, relative imports resolved against ``package``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join(up + ([node.module] if node.module else []))
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]


def import_graph(src: Path, top: str = "satgan") -> nx.DiGraph:
    """Modules under ``src/top`` and their imports of each other; each edge keeps the importing ``file:line``."""
    modules = satgan_modules(src, top)
    graph = nx.DiGraph()
    for name, (path, is_pkg) in modules.items():
        graph.add_node(name)
        package = name if is_pkg else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(node, package, modules):
                while target and target not in modules:  # a name inside a module, or outside the package
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph.add_edge(name, target, at=f"{path.relative_to(src)}:{node.lineno}")
    return graph


def import_cycles(graph: nx.DiGraph) -> list[str]:
    """One readable cycle per group of modules that import each other (a strongly connected component), sorted."""
    found = []
    for group in nx.strongly_connected_components(graph):
        if len(group) < 2:
            continue
        cycle = nx.find_cycle(graph.subgraph(group))
        found.append(" -> ".join(f"{a} ({graph.edges[a, b]['at']})" for a, b in cycle) + f" -> {cycle[0][0]}")
    return sorted(found)


def test_src_has_no_import_cycle():
    """No group of satgan modules imports each other, counting function-level and TYPE_CHECKING imports."""
    graph = import_graph(SRC)
    assert graph.number_of_edges() > 50  # the walk did read the package (it has well over 50 internal imports)
    assert import_cycles(graph) == []


def test_the_walk_finds_a_cycle_through_a_function_level_and_a_type_checking_import(tmp_path):
    """A cycle made of a relative import inside a function and an absolute TYPE_CHECKING one is found and named."""
    pkg = tmp_path / "satgan"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def f():\n    from . import b\n    return b\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from satgan.sub.a import f\n")
    (pkg / "c.py").write_text("import os\nfrom satgan.sub import a\n")  # imports into the cycle, not part of it
    cycles = import_cycles(import_graph(tmp_path))
    assert len(cycles) == 1
    assert "satgan.sub.a (satgan/sub/a.py:2)" in cycles[0] and "satgan.sub.b (satgan/sub/b.py:4)" in cycles[0]
    assert "satgan.c" not in cycles[0]


def test_step_does_not_import_the_fast_path():
    """train/step.py imports nothing of train/fastpath.py: the loop builds the runner that wraps the Trainer (issue 21)."""
    graph = import_graph(SRC)
    assert graph.has_edge("satgan.train.fastpath", "satgan.train.step")
    assert not nx.has_path(graph, "satgan.train.step", "satgan.train.fastpath")
