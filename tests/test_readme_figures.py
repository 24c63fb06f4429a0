"""Tests for bench/readme_figures.py's pure parts: the demo block it writes into README (the real run is in test_small_region)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load():
    spec = importlib.util.spec_from_file_location("readme_figures", REPO / "bench" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RF = load()
METRICS = {"n": {"train": 657, "holdout": 82, "fake": 512},
           "judge": {"accuracy": 1.0, "p_value": 2e-25, "n_test": 82, "conclusive": 1,
                     "accuracy_ci_low": 0.96, "accuracy_ci_high": 1.0},
           "swd": {"mean": 0.36}, "colour_hist": {"mean": 0.28},
           "memorization": {"frac_above_threshold": 0.0, "holdout_frac_above_threshold": 0.0},
           "diversity": {"fake_mean_ssim": 0.36, "real_mean_ssim": 0.04, "collapsed": 1}}


def test_readme_has_exactly_one_demo_block():
    """README.md holds one block between the markers, so the script can rewrite it."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.count(RF.BEGIN) == 1 and text.count(RF.END) == 1 and text.index(RF.BEGIN) < text.index(RF.END)


def test_the_block_names_the_run_and_replaces_only_itself():
    """The block names date, machine, command, step and tile counts; the text around it is untouched."""
    card = {"step": 600, "device": "cpu", "compute": {"wall_seconds": 300}, "git_rev": "5f1de2ecff2fc23927bee8b7986c3cede4526c59"}
    block = RF.render_block(METRICS, None, card, date="2026-12-01", where="Some CPU, 2 cores", command="dvc repro")
    assert block.startswith(RF.BEGIN) and block.endswith(RF.END)
    assert ("A real run: `dvc repro` of git 5f1de2ec on Some CPU, 2 cores, evaluated 2026-12-01; model at step 600, "
            "trained on cpu in 5.0 min; 657 training and 82 held-out real tiles, 512 samples.") in block
    assert "| judge accuracy | 1.000 (95% CI 0.96-1.00) |" in block
    text = f"before\n{RF.BEGIN}\nold\n{RF.END}\nafter\n"
    assert RF.replace_block(text, block) == f"before\n{block}\nafter\n"


def test_a_readme_without_the_markers_is_refused():
    """No markers (or two blocks) is an error naming the file, never a guess where to write."""
    with pytest.raises(RF.FiguresError, match="README.md: expected one"):
        RF.replace_block("no markers here", "x")
    with pytest.raises(RF.FiguresError, match="README.md: expected one"):
        RF.replace_block(f"{RF.BEGIN}{RF.END}{RF.BEGIN}{RF.END}", "x")


def test_the_command_is_dvc_repro_unless_named_and_is_printed(tmp_path, monkeypatch, capsys):
    """Without --command the block names `dvc repro` (what writes every output; make demo runs it), not a guess such as
    `make demo`; --command names another; the script prints the command it recorded."""
    got = {}

    def regenerate(params, readme, img_dir, command, **kwargs):
        got["command"] = command
        return []

    monkeypatch.setattr(RF, "regenerate", regenerate)
    RF.main([])
    assert got["command"] == RF.DEFAULT_COMMAND == "dvc repro"
    assert "described as made by `dvc repro`" in capsys.readouterr().out
    got.clear()
    RF.main(["--command", "dvc exp run --temp -S train.iterations=300"])
    assert got["command"] == "dvc exp run --temp -S train.iterations=300"


def test_the_code_revision_names_the_commit_or_experiment_and_uncommitted_changes():
    """The block names the code that trained the model: 8 characters of a commit, an experiment's ref, a dirty tree."""
    assert RF.code_revision({"git_rev": "5f1de2ecff2fc23927bee8b7986c3cede4526c59-dirty"}) == (
        " of git 5f1de2ec with uncommitted changes")
    assert RF.code_revision({"git_rev": "refs/exps/5f/1de2ec/no-ema"}) == " of git refs/exps/5f/1de2ec/no-ema"
    assert RF.code_revision({"git_rev": None}) == RF.code_revision(None) == ""

