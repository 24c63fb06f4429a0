"""requirements.txt installs nothing that cannot be imported: each line's distribution is installed and every public
top-level module it ships imports (torchvision's CUDA-built wheel next to the CPU torch did not, issue 22)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

# Imports each module named on the command line in turn; prints {module: "ExceptionType: message"} for those that fail.
IMPORT_EACH = """
import importlib, json, sys
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def requirements(path: Path) -> list[str]:
    """The distribution names ``path`` installs, one per requirement line (comments and options left out)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line).name for line in lines if line and not line.startswith("-")]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def top_level_modules(dist: str) -> list[str]:
    """The public top-level modules the installed distribution ``dist`` ships (private ``_x`` ones left out)."""
    owners = importlib.metadata.packages_distributions()
    return sorted(m for m, dists in owners.items()
                  if not m.startswith("_") and any(_canonical(d) == _canonical(dist) for d in dists))


def import_failures(modules: list[str]) -> dict[str, str]:
    """Each of ``modules`` that cannot be imported in a fresh interpreter, with the one-line reason."""
    proc = subprocess.run([sys.executable, "-c", IMPORT_EACH, *modules], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_requirement_is_installed_and_imports(repo_root):
    """Every distribution requirements.txt names is installed and each of its public top-level modules imports."""
    dists = requirements(repo_root / "requirements.txt")
    assert "torch" in dists and "pytest" in dists  # the file was read
    modules = {dist: top_level_modules(dist) for dist in dists}
    assert not [d for d, mods in modules.items() if not mods], "installed with no module, or not installed at all"
    assert import_failures(sorted({m for mods in modules.values() for m in mods})) == {}


def test_a_module_that_fails_to_import_is_reported_with_its_reason(tmp_path, monkeypatch):
    """The import check names a module whose import raises (as torchvision's RuntimeError did), and its reason."""
    (tmp_path / "broken_pkg.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert import_failures(["json", "broken_pkg"]) == {"broken_pkg": "RuntimeError: operator torchvision::nms does not exist"}
