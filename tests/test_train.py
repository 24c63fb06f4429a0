"""Tests for satgan.train: tiny CPU runs, determinism, resume (incl. kill -9), DDP on gloo, learning."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from satgan.errors import TrainingError
from satgan.params import from_mapping
from satgan.train import CHECKPOINT_FILE, train
from satgan.trainparams import TrainParams

REPO = Path(__file__).resolve().parents[1]


def tiny_params_dict(**top: Any) -> dict[str, Any]:
    """params.yaml's train section shrunk to tiny nets and a handful of iterations (a fresh dict)."""
    doc = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text())["train"])
    doc.update(iterations=6, batch_size=4, nz=8, ngf=4, ndf=4, n_samples=4, log_every=2, sample_every=3,
               checkpoint_every=2, device="cpu", threads=1)
    doc["hacks"]["replay"]["size"] = 16
    doc["hacks"]["instance_noise"]["decay_iters"] = 20
    doc.update(top)
    return doc


def tiny_params(**top: Any) -> TrainParams:
    return from_mapping(TrainParams, tiny_params_dict(**top), "train")


def write_tiles(folder: Path, files: list[Path], size: int = 32) -> Path:
    """A prepared-array fixture: tiles.npy (N, 3, size, size) float16 in [-1, 1] plus its sidecar."""
    folder.mkdir(parents=True, exist_ok=True)
    imgs = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in files]
    arr = (np.stack(imgs).transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1).astype(np.float16)
    np.save(folder / "tiles.npy", arr)
    meta = {"shape": list(arr.shape), "dtype": "float16", "channels": 3, "image_size": size, "value_range": [-1, 1]}
    (folder / "tiles.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def tiles(tmp_path_factory, rsscn7_files) -> Path:
    """24 real RSSCN7 tiles at 32x32."""
    return write_tiles(tmp_path_factory.mktemp("prepared"), rsscn7_files[::12][:24])


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("generator", "generator_ema", "discriminator"):
        out.update({f"{name}.{k}": v for k, v in load_file(model_dir / f"{name}.safetensors").items()})
    return out


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs"


def run_dirs(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    return tmp / name / "model", tmp / name / "ck", tmp / name / "live"


def test_tiny_run_writes_model_checkpoint_and_live(tiles, tmp_path):
    """A tiny CPU run writes the model files, a checkpoint, dvclive metrics and sample images."""
    model, ck, live = run_dirs(tmp_path, "a")
    card = train(tiny_params(), tiles, model, ck, live)
    assert card["step"] == 6 and card["architecture"]["image_size"] == 32 and len(card["data_hash"]) == 64
    assert (ck / CHECKPOINT_FILE).is_file()
    metrics = json.loads((live / "metrics.json").read_text())
    for key in ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "lr_g", "lr_d", "img_per_s"):
        assert key in metrics["train"]
    assert sorted(p.name for p in (live / "plots" / "images" / "samples").iterdir()) == ["3.png", "6.png"]


def test_checkpoint_loads_with_weights_only(tiles, tmp_path):
    """The checkpoint holds nets, EMA, optimizers, RNG, replay and step, loadable with weights_only=True."""
    model, ck, live = run_dirs(tmp_path, "a")
    train(tiny_params(), tiles, model, ck, None)
    state = torch.load(ck / CHECKPOINT_FILE, weights_only=True)
    for key in ("g", "d", "g_ema", "opt_g", "opt_d", "rng", "replay", "step"):
        assert state[key] is not None, key
    assert state["step"] == 6 and set(state["rng"]) == {"python", "numpy", "torch", "cuda"}


def test_two_runs_are_bit_identical(tiles, tmp_path):
    """Same params, same data: identical weights."""
    dirs = [run_dirs(tmp_path, n) for n in ("a", "b")]
    for model, ck, _ in dirs:
        train(tiny_params(), tiles, model, ck, None)
    assert_same_weights(dirs[0][0], dirs[1][0])


def test_raising_iterations_resumes_to_the_same_weights(tiles, tmp_path, capsys):
    """6 iterations then 10 (resumed) equals 10 in one go."""
    model, ck, _ = run_dirs(tmp_path, "a")
    train(tiny_params(iterations=6), tiles, model, ck, None)
    card = train(tiny_params(iterations=10), tiles, model, ck, None)
    assert "resuming from" in capsys.readouterr().err and card["resumed"]
    ref, ref_ck, _ = run_dirs(tmp_path, "ref")
    train(tiny_params(iterations=10), tiles, ref, ref_ck, None)
    assert_same_weights(model, ref)


def test_changed_params_start_fresh(tiles, tmp_path, capsys):
    """A checkpoint written under another lr is not resumed, and the log says why."""
    model, ck, _ = run_dirs(tmp_path, "a")
    train(tiny_params(iterations=4), tiles, model, ck, None)
    card = train(tiny_params(iterations=6, lr_g=0.001), tiles, model, ck, None)
    assert "params changed" in capsys.readouterr().err and not card["resumed"]


def test_streamed_data_path_trains(tiles, tmp_path):
    """data_budget_mb=0 streams batches from the memmap through the prefetch thread, deterministically."""
    dirs = [run_dirs(tmp_path, n) for n in ("a", "b")]
    for model, ck, _ in dirs:
        card = train(tiny_params(data_budget_mb=0), tiles, model, ck, None)
    assert card["step"] == 6
    assert_same_weights(dirs[0][0], dirs[1][0])


def test_nan_input_stops_with_a_clear_error(tmp_path):
    """NaN in the data makes the losses NaN; training stops with TrainingError naming the step."""
    arr = np.full((8, 3, 32, 32), np.nan, dtype=np.float32)
    np.save(tmp_path / "tiles.npy", arr)
    (tmp_path / "tiles.json").write_text(json.dumps(
        {"shape": list(arr.shape), "dtype": "float32", "channels": 3, "image_size": 32, "value_range": [-1, 1]}))
    with pytest.raises(TrainingError, match="diverged at step 2"):
        train(tiny_params(), tmp_path, tmp_path / "m", tmp_path / "ck", None)


def _stage_cmd(tiles: Path, run: Path, params: Path) -> list[str]:
    return [sys.executable, str(REPO / "stages" / "train.py"), "--data", str(tiles), "--out", str(run / "model"),
            "--checkpoints", str(run / "ck"), "--params", str(params)]


def _write_params(path: Path, **top: Any) -> Path:
    path.write_text(yaml.safe_dump({"train": tiny_params_dict(**top)}))
    return path


@pytest.mark.slow
def test_kill9_then_rerun_equals_an_uninterrupted_run(tiles, tmp_path):
    """kill -9 the stage after a checkpoint, rerun it: final weights equal an uninterrupted run's."""
    params = _write_params(tmp_path / "params.yaml", iterations=150, checkpoint_every=10, log_every=50, sample_every=1000)
    run = tmp_path / "killed"
    proc = subprocess.Popen(_stage_cmd(tiles, run, params), stderr=subprocess.PIPE, text=True)
    ck = run / "ck" / CHECKPOINT_FILE
    deadline = time.time() + 120
    while not ck.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = torch.load(ck, weights_only=True)["step"]
    assert 0 < killed_at < 150 and not (run / "model" / "model.json").exists()
    res = subprocess.run(_stage_cmd(tiles, run, params), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"resuming from {ck} at step" in res.stderr
    ref = tmp_path / "ref"
    train(from_mapping(TrainParams, yaml.safe_load(params.read_text())["train"], "train"), tiles, ref / "model", ref / "ck", None)
    assert_same_weights(run / "model", ref / "model")


@pytest.mark.slow
def test_ddp_two_cpu_processes_on_gloo(tiles, tmp_path):
    """torchrun --nproc_per_node=2 trains with DDP on gloo; rank 0 writes the model with world_size 2."""
    params = _write_params(tmp_path / "params.yaml", iterations=4)
    run = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(torchrun + _stage_cmd(tiles, run, params)[1:], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    card = json.loads((run / "model" / "model.json").read_text())
    assert card["world_size"] == 2 and card["step"] == 4
    assert "x2 (DDP)" in res.stderr


def test_g_learns_a_one_tile_dataset(rsscn7_files, tmp_path):
    """Trained on one (forest) tile, G's samples are much closer to it than the untrained G's, colour included."""
    tile_file = next(f for f in rsscn7_files if f.parent.name == "eForest")
    data = write_tiles(tmp_path / "one", [tile_file] * 8)
    tile = torch.from_numpy(np.load(data / "tiles.npy")[0].astype(np.float32))
    doc = tiny_params_dict(iterations=200, batch_size=8, ngf=8, ndf=8, lr_g=0.001, lr_d=0.0005, log_every=100, checkpoint_every=200)
    doc["hacks"]["dihedral_augment"] = False  # 8 rotated copies would be 8 targets
    from satgan.modelio import load_generator

    train(tiny_params(iterations=1), data, tmp_path / "m0", tmp_path / "ck0", None)
    train(from_mapping(TrainParams, doc, "train"), data, tmp_path / "m", tmp_path / "ck", None)
    z = torch.randn(16, 8, 1, 1, generator=torch.Generator().manual_seed(1))
    samples = []
    for m in ("m0", "m"):
        g, _ = load_generator(tmp_path / m, use_ema=False)
        with torch.no_grad():
            samples.append(g(z))
    errs = [(s - tile).abs().mean().item() for s in samples]
    colour_gap = (samples[1].mean(dim=(0, 2, 3)) - tile.mean(dim=(1, 2))).abs().max().item()
    assert errs[1] < 0.5 * errs[0] and colour_gap < 0.15, (errs, colour_gap)
