"""Contract tests for stages/*.py against dvc.yaml and params.yaml.

A stage's params dependency in dvc.yaml must be exactly the sections its script loads,
or DVC would rerun too much (extra) or miss a change (missing). Stage scripts stay thin.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
STAGES = list(DVC["stages"])


def _loaded_sections(script: Path) -> set[str]:
    """Section names passed as the first argument to load_section(...) in a stage script."""
    tree = ast.parse(script.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "load_section":
            first = node.args[0]
            assert isinstance(first, ast.Constant), f"{script}: load_section's section must be a literal"
            found.add(first.value)
    return found


def _declared_params(stage: dict) -> set[str]:
    declared = set()
    for entry in stage.get("params", []):
        declared.update([entry] if isinstance(entry, str) else [k for v in entry.values() for k in v])
    return declared


def test_pipeline_has_the_six_stages_in_order():
    """dvc.yaml defines download, validate, prepare, train, generate, evaluate."""
    assert STAGES == ["download", "validate", "prepare", "train", "generate", "evaluate"]


@pytest.mark.parametrize("name", STAGES)
def test_dvc_declares_exactly_the_params_the_stage_reads(name):
    """Each stage's params in dvc.yaml equal the sections its script loads."""
    script = REPO / "stages" / f"{name}.py"
    assert script.is_file(), f"missing {script}"
    assert _declared_params(DVC["stages"][name]) == _loaded_sections(script) == {name}


@pytest.mark.parametrize("name", STAGES)
def test_stage_script_is_thin(name):
    """Stage scripts stay around 60 lines: logic lives in src/satgan."""
    lines = (REPO / "stages" / f"{name}.py").read_text().splitlines()
    assert len(lines) <= 75, f"stages/{name}.py has {len(lines)} lines"


@pytest.mark.parametrize("name", STAGES)
def test_code_deps_exist(name):
    """Every code file a stage depends on exists (a typo would make DVC fail late)."""
    for dep in DVC["stages"][name]["deps"]:
        if "${" not in dep:
            assert (REPO / dep).exists(), f"dvc.yaml {name}: dep {dep} does not exist"


def test_paths_are_templated_not_repeated():
    """dvc.yaml names data paths only through ${paths.*}, never as literals."""
    text = (REPO / "dvc.yaml").read_text()
    literal = [p for p in PARAMS["paths"].values() if re.search(rf"(?<![\w/{{]){re.escape(p)}\b", text)]
    assert not literal, f"dvc.yaml repeats paths instead of templating them: {literal}"


@pytest.mark.parametrize("name", STAGES)
def test_bad_params_exit_2_with_key_and_no_traceback(name, tmp_path):
    """An unknown key in a stage's section stops the stage with exit 2, naming key and file."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params[name]["no_such_key"] = 1
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    cmd = DVC["stages"][name]["cmd"].split()
    # Resolve ${paths.x} into tmp_path so nothing touches the real data/.
    args = [re.sub(r"\$\{paths\.(\w+)\}", lambda m: str(tmp_path / m.group(1)), a) for a in cmd[2:]]
    proc = subprocess.run(
        [sys.executable, str(REPO / cmd[1]), *args, "--params", str(bad)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{name}.no_such_key: unknown key" in proc.stderr and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr
