"""dvc.yaml's code deps cover every satgan module each stage imports (found with ast, transitively, nothing imported).

A module missing from a stage's deps means DVC keeps a stale cached result after that module
changes. A package dep (``src/satgan/train``) covers every file under it.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = list(DVC["stages"])


def module_file(name: str) -> Path | None:
    """The file of module ``name`` under src/ (``satgan.a.b`` -> a/b.py or a/b/__init__.py), or None."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """satgan modules ``path`` imports anywhere in its body (function-level imports included), relative ones resolved."""
    package = module_name(path) if path.is_relative_to(SRC) else ""
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from satgan import names` imports a module
    return {m for m in found if m.split(".")[0] == "satgan" and module_file(m) is not None}


def closure(script: Path) -> set[Path]:
    """Every satgan source file executed by importing ``script``'s satgan imports, parent packages included."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in imported_modules(todo.pop()):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
                f = module_file(".".join(parts[:i]))
                if f is not None and f not in seen:
                    seen.add(f)
                    todo.append(f)
    return seen


def stage_script(stage: dict) -> Path:
    argv = shlex.split(stage["cmd"])
    assert argv[0] == "python" and argv[1].startswith("stages/"), stage["cmd"]
    return REPO / argv[1]


def code_deps(stage: dict) -> list[Path]:
    return [REPO / d for d in stage["deps"] if isinstance(d, str) and d.startswith(("src/", "stages/"))]


def covered(path: Path, deps: list[Path]) -> bool:
    return any(path == d or path.is_relative_to(d) for d in deps)


@pytest.mark.parametrize("name", STAGES)
def test_deps_cover_every_imported_satgan_module(name):
    """Each stage's deps list its script and every satgan file it imports, directly or transitively."""
    stage = DVC["stages"][name]
    deps = code_deps(stage)
    script = stage_script(stage)
    needed = {script} | closure(script)
    missing = sorted(str(p.relative_to(REPO)) for p in needed if not covered(p, deps))
    assert missing == [], f"dvc.yaml stage {name} lacks deps: {missing}"


@pytest.mark.parametrize("name", STAGES)
def test_code_deps_exist(name):
    """No stage lists a code dep that no longer exists (e.g. a module that became a package)."""
    stale = [str(d.relative_to(REPO)) for d in code_deps(DVC["stages"][name]) if not d.exists()]
    assert stale == []


def test_closure_follows_relative_and_function_level_imports(tmp_path):
    """The scanner sees `from . import x`, `from .x import y` and imports inside functions."""
    train_files = closure(REPO / "stages" / "train.py")
    rel = lambda p: str(p.relative_to(SRC))  # noqa: E731
    assert {"satgan/train/step.py", "satgan/train/checkpoint.py", "satgan/imageops.py", "satgan/__init__.py",
            "satgan/train/__init__.py"} <= {rel(p) for p in train_files}
