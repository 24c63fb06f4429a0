"""Tests for satgan.evaluate and stages/evaluate.py on tiny real tiles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from satgan.errors import ParamsError
from satgan.evaluate import EvaluateParams, evaluate, fid_kid
from satgan.arrays import save_array_with_sidecar
from satgan.params import load_section
from tiles import load_tiles




def _params(repo_root: Path, tmp_path: Path, **patch) -> Path:
    """The repository's params.yaml with ``evaluate`` keys patched (small sizes for speed)."""
    doc = yaml.safe_load((repo_root / "params.yaml").read_text())
    ev = doc["evaluate"]
    ev["turing"] = {"n_real": 6, "n_fake": 6, "nrow": 4}
    ev["judge"]["epochs"] = 5
    ev["swd"]["repeats"] = 1
    ev["diversity"]["max_pairs"] = 100
    ev.update(patch)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def dirs(rsscn7_files, tmp_path_factory):
    """prepared/ (60 training + 30 held-out real tiles) and samples/ (30 'fakes' = copies of training tiles)."""
    root = tmp_path_factory.mktemp("pipe")
    tiles = load_tiles(rsscn7_files[::3][:90])
    (root / "prepared").mkdir()
    save_array_with_sidecar(root / "prepared" / "tiles.npy", tiles[:60].astype(np.float16), {})
    save_array_with_sidecar(root / "prepared" / "holdout.npy", tiles[60:], {})
    (root / "samples").mkdir()
    model = {"loaded_weights": "generator_ema.safetensors", "step": 3, "params_hash": "p", "data_hash": "d"}
    save_array_with_sidecar(root / "samples" / "samples.npy", tiles[:30], {"model": model, "architecture": {"image_size": 32}})
    return root


def test_stage_writes_numeric_metrics_and_every_artifact(dirs, repo_root, tmp_path):
    """stages/evaluate.py writes numeric metrics.json, the Turing files, closest pairs, and FID as not computed."""
    params = _params(repo_root, tmp_path)
    out = tmp_path / "eval"
    subprocess.run([sys.executable, str(repo_root / "stages" / "evaluate.py"), "--prepared", str(dirs / "prepared"),
                    "--samples", str(dirs / "samples"), "--out", str(out), "--params", str(params)],
                   check=True, capture_output=True, text=True)
    m = json.loads((out / "metrics.json").read_text())

    def leaves(d):
        return [x for v in d.values() for x in (leaves(v) if isinstance(v, dict) else [v])]

    assert all(isinstance(v, (int, float)) for v in leaves(m))
    for name in ("quiz.html", "turing_grid.png", "turing_key.json", "closest_pairs.png"):
        assert (out / name).is_file()
    assert json.loads((out / "fid_kid.json").read_text())["fid"] == "not computed"


def test_model_card_joins_the_evaluated_model_and_its_metrics(dirs, repo_root, tmp_path):
    """model_card.json names the sampled model (step, hashes, weights) beside exactly the metrics written."""
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    m = evaluate(dirs / "prepared", dirs / "samples", tmp_path / "eval", params)
    card = json.loads((tmp_path / "eval" / "model_card.json").read_text())
    assert card["model"]["step"] == 3 and card["model"]["loaded_weights"] == "generator_ema.safetensors"
    assert card["metrics"] == json.loads((tmp_path / "eval" / "metrics.json").read_text()) == json.loads(json.dumps(m))


def test_two_runs_give_identical_metrics(dirs, repo_root, tmp_path):
    """evaluate twice on the same samples and held-out tiles, on 2 threads: the same metrics.json, judge included."""
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a = evaluate(dirs / "prepared", dirs / "samples", tmp_path / "a", params)
        b = evaluate(dirs / "prepared", dirs / "samples", tmp_path / "b", params)
    finally:
        torch.set_num_threads(threads)
    assert a == b and {"log_loss", "brier"} <= set(a["judge"])
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()


def test_copied_training_tiles_are_flagged(dirs, repo_root, tmp_path):
    """Samples that are training tiles score SSIM 1 to their neighbour; held-out real tiles do not."""
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    m = evaluate(dirs / "prepared", dirs / "samples", tmp_path / "eval", params)
    assert m["memorization"]["frac_above_threshold"] == 1.0
    assert m["memorization"]["holdout_frac_above_threshold"] < 0.2


def test_inception_path_that_does_not_exist_names_the_key(tmp_path):
    """A set but missing inception_weights path is a ParamsError naming evaluate.inception_weights."""
    x = np.zeros((2, 3, 32, 32), np.float32)
    with pytest.raises(ParamsError, match="evaluate.inception_weights"):
        fid_kid(x, x, str(tmp_path / "nope.pth"))


def test_nested_param_errors_name_the_dotted_key(repo_root, tmp_path):
    """A bad nested value is refused with its full dotted key."""
    doc = yaml.safe_load((repo_root / "params.yaml").read_text())
    doc["evaluate"]["judge"]["test_fraction"] = 1.5
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ParamsError, match=r"evaluate\.judge\.test_fraction"):
        load_section("evaluate", EvaluateParams, path)
