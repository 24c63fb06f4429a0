"""Tests for bench/quality_bench.py: recipes, interleaving, and one tiny end-to-end run (not the real benchmark)."""

from __future__ import annotations

import csv
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from satgan.arrays import save_array_with_sidecar
from satgan.params import from_mapping, read_params_file
from satgan.train import train
from satgan.train import TrainParams
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


def tiny_doc() -> dict:
    """params.yaml with tiny nets and a tiny evaluation, so a run takes seconds."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
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
    """tiles.npy and holdout.npy (+ sidecars) of real 32 px tiles, in the prepared-array contract."""
    folder.mkdir(parents=True)
    tiles = load_tiles(files)
    save_array_with_sidecar(folder / "tiles.npy", tiles[n_holdout:].astype(np.float16), {})
    save_array_with_sidecar(folder / "holdout.npy", tiles[:n_holdout], {})
    return folder


def test_recipes_in_the_module_are_valid_against_params_yaml():
    """Every recipe names existing keys, and canonical turns every hack switch in params.yaml off by name."""
    doc = read_params_file(REPO / "params.yaml")
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
    doc = read_params_file(REPO / "params.yaml")
    t = qb.run_params(doc, {}, 0, "cpu", 6400)["train"]
    assert t["iterations"] == 6400 // doc["train"]["batch_size"] == t["checkpoint_every"] == t["sample_every"]


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
def test_tiny_bench_prints_and_writes_one_row_per_run(tmp_path, rsscn7_files):
    """Two recipes, one seed, a 2 s budget on tiny tiles: a row per (recipe, seed) with finite numbers, md + csv."""
    prepared = write_prepared(tmp_path / "prepared", rsscn7_files[::5][:56], 16)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_doc()))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--prepared", str(prepared), "--params", str(tmp_path / "params.yaml"),
         "--budget-seconds", "2", "--recipes", "canonical,default", "--seeds", "0", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sum(line.startswith("[") for line in proc.stdout.splitlines()) == 2
    rows = list(csv.DictReader(open(out / "quality.csv")))
    assert sorted((r["recipe"], r["seed"]) for r in rows) == [("canonical", "0"), ("default", "0")]
    for r in rows:
        assert all(math.isfinite(float(v)) for k, v in r.items() if k != "recipe")
        assert int(r["iterations"]) >= 1 and {"swd_16px", "swd_32px", "judge_log_loss"} <= set(r)
    assert "| canonical | 0 |" in (out / "quality.md").read_text()
