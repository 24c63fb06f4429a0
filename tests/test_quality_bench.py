"""Tests for bench/quality_bench.py: recipes, budgets, figures read by name, per-recipe summaries, and one tiny
end-to-end selection (validation split) and certification (held-out split) run (not the real benchmark)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from satgan.arrays import save_array_with_sidecar
from satgan.params import from_mapping, read_params_file
from satgan.train import TrainParams, train
from tiles import load_tiles

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "quality_bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("quality_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


qb = load_bench()

TINY_TRAIN = {"batch_size": 8, "nz": 8, "ngf": 4, "ndf": 4, "n_samples": 4, "log_every": 2, "threads": 1}


def params_doc() -> dict:
    """params.yaml as a mapping (evaluate.against comes with the evaluate stage's validation support, issue 19)."""
    doc = read_params_file(REPO / "params.yaml")
    doc["evaluate"].setdefault("against", "holdout")
    return doc


def tiny_doc() -> dict:
    """params.yaml with tiny nets and a tiny evaluation, so a run takes seconds."""
    doc = params_doc()
    doc["train"].update(TINY_TRAIN)
    doc["train"]["hacks"]["replay"]["size"] = 16
    doc["generate"].update(n_samples=16, batch_size=16, grid_tiles=4, grid_nrow=2, interp_rows=1, interp_steps=2)
    ev = doc["evaluate"]
    ev["turing"] = {"n_real": 2, "n_fake": 2, "nrow": 2}
    ev["judge"].update(epochs=1, width=4)
    ev["swd"].update(patches_per_image=4, n_projections=8, repeats=1)
    ev["diversity"]["max_pairs"] = 10
    ev["memorization"]["n_pairs_image"] = 2
    return doc


def write_prepared(folder: Path, files: list[Path], n_holdout: int) -> Path:
    """tiles.npy, holdout.npy and validation.npy (+ sidecars) of real 32 px tiles, in the prepared-array contract:
    ``n_holdout`` tiles in each evaluation split."""
    folder.mkdir(parents=True)
    tiles = load_tiles(files)
    save_array_with_sidecar(folder / "tiles.npy", tiles[2 * n_holdout:].astype(np.float16), {})
    save_array_with_sidecar(folder / "holdout.npy", tiles[:n_holdout], {})
    save_array_with_sidecar(folder / "validation.npy", tiles[n_holdout:2 * n_holdout], {})
    return folder


def test_recipes_in_the_module_are_valid_against_params_yaml():
    """Every recipe names existing keys, and canonical turns every hack switch in params.yaml off by name."""
    doc = params_doc()
    qb.check_recipes(qb.RECIPES, doc)
    params = qb.run_params(doc, qb.RECIPES["canonical"], 3, "cpu", None)
    hacks = params["train"]["hacks"]
    on = [k for k in qb.hack_switches(params["train"]) if k not in qb.CANONICAL or qb.CANONICAL[k] is True]
    assert sorted(on) == ["train.hacks.gaussian_latent", "train.hacks.non_saturating", "train.hacks.separate_batches"]
    assert hacks["ema"]["enabled"] is False and params["train"]["seed"] == 3


def test_a_canonical_recipe_missing_a_hack_is_refused():
    """A hack switch canonical does not name would keep its params.yaml default: refused, naming it."""
    doc = read_params_file(REPO / "params.yaml")
    partial = {k: v for k, v in qb.CANONICAL.items() if k != "train.hacks.replay.enabled"}
    with pytest.raises(qb.BenchError, match="train.hacks.replay.enabled"):
        qb.check_recipes({"canonical": partial}, doc)
    with pytest.raises(qb.BenchError, match="no such key"):
        qb.check_recipes({"typo": {"train.hacks.emma.enabled": False}}, doc)


def test_runs_are_interleaved_with_the_order_rotated_per_seed():
    """Seed by seed, each recipe once, starting one recipe later each time."""
    assert qb.run_order(["a", "b", "c"], [0, 1]) == [("a", 0), ("b", 0), ("c", 0), ("b", 1), ("c", 1), ("a", 1)]


def test_budget_images_sets_iterations():
    """--budget-images N trains N // batch_size iterations; checkpoints and grids only at the end."""
    doc = params_doc()
    t = qb.run_params(doc, {}, 0, "cpu", 6400)["train"]
    assert t["iterations"] == 6400 // doc["train"]["batch_size"] == t["checkpoint_every"] == t["sample_every"]


def test_budget_iterations_sets_iterations_and_runs_score_on_validation():
    """--budget-iterations N trains exactly N iterations whatever the batch; a selection run scores on validation."""
    params = qb.run_params(params_doc(), {}, 0, "cpu", None, 300)
    assert params["train"]["iterations"] == 300 == params["train"]["checkpoint_every"]
    assert params["evaluate"]["against"] == "validation"
    assert qb.run_params(params_doc(), {}, 0, "cpu", None, None, "holdout")["evaluate"]["against"] == "holdout"


def test_params_without_evaluate_against_are_refused():
    """A params.yaml whose evaluate cannot score on the validation split is refused, naming evaluate.against."""
    doc = params_doc()
    del doc["evaluate"]["against"]
    with pytest.raises(qb.BenchError, match="evaluate.against: no such key"):
        qb.run_params(doc, {}, 0, "cpu", None, 10)


def test_default_is_four_seeds_and_certify_needs_a_finished_bench():
    """Four seeds by default; --certify takes --out and no budget; a selection run needs a budget."""
    args = qb.parse_args(["--budget-iterations", "5"])
    assert args.seeds.split(",") == ["0", "1", "2", "3"] and args.budget_iterations == 5
    for bad in (["--certify", "default"], ["--certify", "default", "--out", "x", "--budget-iterations", "5"], []):
        with pytest.raises(SystemExit):
            qb.parse_args(bad)


def test_figures_are_read_by_name_and_missing_ones_left_out():
    """metric() reads dotted keys (a mapping: its mean), None when absent; rows add the floors named in FLOORS."""
    m = {"judge": {"accuracy": 0.75, "auc": 0.8, "conclusive": True}, "swd": {"16px": 0.1, "mean": 0.2},
         "spectral": {"ch0": 0.04, "mean": 0.05}, "floor": {"judge": {"accuracy": 0.52}, "swd": {"mean": 0.03}, "n": 82}}
    assert qb.metric(m, "judge.accuracy") == 0.75 and qb.metric(m, "swd") == 0.2
    assert qb.metric(m, "judge.log_loss") is None and qb.metric(m, "judge.conclusive") is None
    row = qb.row_from({"recipe": "r", "seed": 0, "against": "validation", "iterations": 2, "train_s": 1.0,
                       "img_per_s": 16.0, "metrics": m})
    assert "judge.log_loss" not in row and row["spectral"] == 0.05
    assert row["floor.judge.accuracy"] == 0.52 and row["floor.swd"] == 0.03 and "floor.n" not in row


def test_summary_gives_mean_sd_and_the_difference_from_canonical_with_its_standard_error():
    """Per recipe: mean ± sd across seeds, and difference of means from canonical ± sqrt(sd1²/n1 + sd2²/n2)."""
    rows = [{"recipe": r, "seed": k, "img_per_s": 100.0, "swd": v + k} for r, v in (("canonical", 1.0), ("lean", 2.0))
            for k in range(4)]
    summary = {(e["recipe"], e["figure"]): e for e in qb.summarize(rows)}
    lean, canon = summary[("lean", "swd")], summary[("canonical", "swd")]
    assert lean["n"] == 4 and lean["mean"] == 3.5 and lean["sd"] == pytest.approx(1.2909944)
    assert lean["diff"] == 1.0 and lean["diff_se"] == pytest.approx(math.sqrt(2 * 1.2909944**2 / 4))
    assert canon["diff"] is None and summary[("lean", "img_per_s")]["sd"] == 0.0
    assert qb.rank(qb.summarize(rows), ("swd", "lower")) == [("canonical", 2.5), ("lean", 3.5)]
    assert "| lean | swd | 4 | 3.500 ± 1.291 | 1.000 ± 0.913 |" in qb.summary_table(qb.summarize(rows))


def test_table_has_every_column_of_mixed_rows():
    """Labelled runs differ at the end (gan_test vs class_tv): the table has both columns, a missing cell is empty."""
    rows = [{"recipe": "default", "seed": 0, "class_tv": 0.2}, {"recipe": "default-acgan", "seed": 0, "gan_test": 0.5}]
    assert qb.table_columns(rows) == ["recipe", "seed", "class_tv", "gan_test"]
    lines = qb.markdown_table(rows).splitlines()
    assert lines[2] == "| default | 0 | 0.200 |  |" and lines[3] == "| default-acgan | 0 |  | 0.500 |"


def test_max_seconds_stops_training_early_and_still_writes_the_model(tmp_path, rsscn7_files):
    """train(max_seconds=tiny) stops after its first step, far before iterations, with model and checkpoint written."""
    data = write_prepared(tmp_path / "prepared", rsscn7_files[:10], 2)
    params = from_mapping(TrainParams, {**tiny_doc()["train"], "iterations": 1000, "device": "cpu"}, "train")
    card = train(params, data, tmp_path / "model", tmp_path / "ck", None, max_seconds=1e-9)
    assert card["step"] == 1 and (tmp_path / "model" / "generator.safetensors").is_file()
    assert (tmp_path / "ck" / "checkpoint.pt").is_file()


@pytest.mark.slow
def test_tiny_bench_selects_on_validation_and_certifies_on_the_holdout(tmp_path, rsscn7_files):
    """Two recipes, two seeds, 2 iterations on tiny tiles: a row per run scored on validation, a per-recipe summary;
    --certify then rescores one recipe's runs on the held-out tiles."""
    prepared = write_prepared(tmp_path / "prepared", rsscn7_files[::5][:56], 12)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_doc()))
    out = tmp_path / "out"
    common = ["--prepared", str(prepared), "--params", str(tmp_path / "params.yaml"), "--device", "cpu", "--out", str(out)]
    proc = subprocess.run([sys.executable, str(BENCH), *common, "--budget-iterations", "2",
                           "--recipes", "canonical,default", "--seeds", "0,1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sum(line.startswith("[") for line in proc.stdout.splitlines()) == 4
    rows = list(csv.DictReader(open(out / "quality.csv")))
    assert sorted((r["recipe"], r["seed"]) for r in rows) == [("canonical", "0"), ("canonical", "1"),
                                                             ("default", "0"), ("default", "1")]
    for r in rows:
        assert r["against"] == "validation" and r["iterations"] == "2" and float(r["img_per_s"]) > 0
        assert all(math.isfinite(float(v)) for k, v in r.items() if k not in ("recipe", "against") and v)
        assert {"judge.accuracy", "judge.log_loss"} <= set(r)
    summary = list(csv.DictReader(open(out / "quality_summary.csv")))
    diff = [e for e in summary if e["recipe"] == "default" and e["figure"] == "judge.accuracy"]
    assert len(diff) == 1 and diff[0]["n"] == "2" and math.isfinite(float(diff[0]["diff_se"]))
    assert "ranked by mean judge.log_loss" in (out / "quality.md").read_text()
    proc = subprocess.run([sys.executable, str(BENCH), *common, "--certify", "default"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    certified = list(csv.DictReader(open(out / "certify.csv")))
    assert [(r["recipe"], r["seed"], r["against"]) for r in certified] == [("default", "0", "holdout"),
                                                                           ("default", "1", "holdout")]


def _finished_run(folder: Path, recipe: str, seed: int, swd: float) -> None:
    """A finished run's result.json, as a bench child writes it, under ``folder/runs``."""
    run = folder / "runs" / f"{recipe}-s{seed}"
    run.mkdir(parents=True)
    result = {"recipe": recipe, "seed": seed, "against": "validation", "iterations": 10, "train_s": 1.0,
              "img_per_s": 80.0, "metrics": {"swd": swd}}
    (run / "result.json").write_text(json.dumps(result))


def test_tables_join_two_halves_and_take_differences_from_the_baseline(tmp_path):
    """--tables A,B --baseline default: one table over both folders' runs, differences from default, nothing trained."""
    for half, seeds in (("a", (0, 1)), ("b", (2, 3))):
        for seed in seeds:
            _finished_run(tmp_path / half, "default", seed, 1.0 + seed)
            _finished_run(tmp_path / half, "default-noflips", seed, 2.0 + seed)
    out = tmp_path / "joined"
    qb.main(["--tables", f"{tmp_path / 'a'},{tmp_path / 'b'}", "--baseline", "default", "--out", str(out)])
    rows = list(csv.DictReader(open(out / "quality_summary.csv")))
    noflips = next(r for r in rows if r["recipe"] == "default-noflips" and r["figure"] == "swd")
    assert noflips["n"] == "4" and float(noflips["diff"]) == pytest.approx(1.0)
    assert "difference from default" in (out / "quality.md").read_text()


def test_tables_without_the_baseline_recipe_say_so(tmp_path, capsys):
    """--baseline naming a recipe none of the runs has is one line and exit code 2."""
    _finished_run(tmp_path / "a", "default", 0, 1.0)
    with pytest.raises(SystemExit) as exc:
        qb.main(["--tables", str(tmp_path / "a"), "--baseline", "canonical", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "--baseline: no run of 'canonical'" in capsys.readouterr().err
