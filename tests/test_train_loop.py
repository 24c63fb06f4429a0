"""Tests for satgan.train.loop: tiny CPU runs, determinism, resume (incl. kill -9), DDP on gloo, max_seconds, learning.

Reproducibility is tested where it can fail: 64x64 tiles, ngf = ndf = 16 and 2 CPU threads
(the shipped defaults' nets and CI's thread count, so the multi-threaded kernels run), not only
on 4-channel nets on one thread.
"""

from __future__ import annotations

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

from pipeline_helpers import TINY, make_repo_copy, run
from satgan import names
from satgan.errors import DataError, TrainingError
from satgan.generate import GenerateParams, generate
from satgan.modelio import load_generator
from satgan.params import from_mapping
from satgan.train import TrainParams, train
from satgan.train.checkpoint import CHECKPOINT_FILE, read_checkpoint
from train_helpers import (
    CONDITIONALS,
    REPO,
    assert_same_weights,
    every_hack_on,
    run_dirs,
    tiny_params,
    tiny_params_dict,
    weights,
    write_labelled_tiles,
    write_tiles,
)

# The default nets on 2 threads, with a batch and a run short enough for the test suite.
REALISTIC = dict(nz=100, ngf=16, ndf=16, batch_size=16, threads=2, n_samples=16)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory, rsscn7_files) -> Path:
    """24 real RSSCN7 tiles at 32x32."""
    return write_tiles(tmp_path_factory.mktemp("prepared"), rsscn7_files[::12][:24])


@pytest.fixture(scope="module")
def tiles64(tmp_path_factory, rsscn7_files) -> Path:
    """48 real RSSCN7 tiles at 64x64 (the default training resolution)."""
    return write_tiles(tmp_path_factory.mktemp("prepared64"), rsscn7_files[::6][:48], size=64)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, rsscn7_files) -> Path:
    """The same 24 tiles as ``tiles``, with labels.npy (their RSSCN7 class folders: 7 classes) and the classes in the sidecar."""
    return write_labelled_tiles(tmp_path_factory.mktemp("labelled"), rsscn7_files[::12][:24])


def realistic_dict(**top: Any) -> dict[str, Any]:
    """Tiny params widened to the default nets at 2 threads (replay buffer of 64, so pushes wrap around it)."""
    doc = tiny_params_dict(**{**REALISTIC, **top})
    doc["hacks"]["replay"]["size"] = 64
    return doc


def test_tiny_run_writes_model_checkpoint_and_live(tiles, tmp_path):
    """A tiny CPU run writes the model files, a checkpoint, dvclive metrics and sample images."""
    model, ck, live = run_dirs(tmp_path, "a")
    card = train(tiny_params(), tiles, model, ck, live)
    assert card["step"] == 6 and card["architecture"]["image_size"] == 32 and len(card["data_hash"]) == 64
    assert (ck / CHECKPOINT_FILE).is_file()
    metrics = json.loads((live / "metrics.json").read_text())
    for key in ("loss_d", "loss_g", "d_real", "d_fake", "d_acc_real", "d_acc_fake", "grad_norm_d", "grad_norm_g", "lr_g",
                "lr_d", "img_per_s"):
        assert key in metrics["train"]
    assert sorted(p.name for p in (live / "plots" / "images" / "samples").iterdir()) == ["3.png", "6.png"]


def test_checkpoint_loads_with_weights_only(tiles, tmp_path):
    """The checkpoint holds nets, EMA, optimizers, RNG, replay and step, loadable with weights_only=True."""
    model, ck, live = run_dirs(tmp_path, "a")
    train(tiny_params({"ema.enabled": True, "replay.enabled": True}), tiles, model, ck, None)
    parts = torch.load(ck / CHECKPOINT_FILE, weights_only=True)["parts"]
    for key in ("g", "d", "ema", "opt_g", "opt_d", "rng", "replay", "progress", "data"):
        assert parts[key] is not None, key
    assert parts["progress"]["step"] == 6 and set(parts["rng"]) == {"python", "numpy", "torch", "cuda"}


def test_two_runs_are_bit_identical_at_default_widths_on_two_threads(tiles64, tmp_path, capsys):
    """Same params and data, 64x64 tiles, ngf = ndf = 16, 2 threads, deterministic: identical weights."""
    p = from_mapping(TrainParams, realistic_dict(iterations=8), "train")
    dirs = [run_dirs(tmp_path, n) for n in ("a", "b")]
    for model, ck, _ in dirs:
        train(p, tiles64, model, ck, None)
    assert "threads 2, deterministic" in capsys.readouterr().err
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


def test_resume_survives_a_summary_cut_short_by_a_kill(tiles, tmp_path, capsys):
    """A kill -9 during dvclive's summary write leaves metrics.json empty: the rerun says so, resumes and rewrites it."""
    model, ck, live = run_dirs(tmp_path, "a")
    train(tiny_params(iterations=4), tiles, model, ck, live)
    (live / "metrics.json").write_text("")
    card = train(tiny_params(iterations=6), tiles, model, ck, live)
    assert card["resumed"] and "metrics.json: unreadable (a write was interrupted)" in capsys.readouterr().err
    assert json.loads((live / "metrics.json").read_text())["step"] == 6


def test_changed_params_start_fresh(tiles, tmp_path, capsys):
    """A checkpoint written under another lr is not resumed, and the log says why."""
    model, ck, _ = run_dirs(tmp_path, "a")
    train(tiny_params(iterations=4), tiles, model, ck, None)
    card = train(tiny_params(iterations=6, lr_g=0.001), tiles, model, ck, None)
    assert "params changed" in capsys.readouterr().err and not card["resumed"]


def test_resume_with_every_hack_on_is_bit_identical(tiles, tmp_path, capsys):
    """Every hack on (replay, EMA, swap, historical averaging, SGD, ...): 4 then 7 resumed equals 7 in one go.

    Resuming at step 4 lands inside a checkpoint-swap cycle with a moving replay buffer and
    historical average: a stateful part that forgot its state would change the weights.
    """
    model, ck, _ = run_dirs(tmp_path, "a")
    train(every_hack_on(iterations=4), tiles, model, ck, None)
    card = train(every_hack_on(iterations=7), tiles, model, ck, None)
    assert "resuming from" in capsys.readouterr().err and card["resumed"]
    ref, ref_ck, _ = run_dirs(tmp_path, "ref")
    train(every_hack_on(iterations=7), tiles, ref, ref_ck, None)
    assert_same_weights(model, ref)


def test_streamed_resume_is_bit_identical(tiles, tmp_path):
    """Streaming from the memmap, 4 then 6 resumed equals 6 in one go (the batch counter is restored)."""
    model, ck, _ = run_dirs(tmp_path, "a")
    train(tiny_params(iterations=4, data_budget_mb=0), tiles, model, ck, None)
    train(tiny_params(iterations=6, data_budget_mb=0), tiles, model, ck, None)
    ref, ref_ck, _ = run_dirs(tmp_path, "ref")
    train(tiny_params(iterations=6, data_budget_mb=0), tiles, ref, ref_ck, None)
    assert_same_weights(model, ref)


# A checkpoint's code as satgan.modelio.git_state records it: a commit that is not this checkout's HEAD.
OTHER_CODE = {"rev": "f" * 40, "dirty_paths": [], "dirty_count": 0, "experiment": None, "exp_ref": None}


def _edit_checkpoint(ck: Path, **fields: Any) -> dict[str, Any]:
    """Set top-level fields of the checkpoint in ``ck`` (e.g. train_seconds) and save it back; returns the new state."""
    state = {**torch.load(ck / CHECKPOINT_FILE, weights_only=True), **fields}
    torch.save(state, ck / CHECKPOINT_FILE)
    return state


def _as_format_2(ck: Path) -> None:
    """Rewrite the checkpoint in ``ck`` as satgan wrote it before it recorded training time and code (format /2)."""
    state = torch.load(ck / CHECKPOINT_FILE, weights_only=True)
    for key in ("train_seconds", "untimed_steps", "git"):
        del state[key]
    torch.save({**state, "format": "satgan-train-checkpoint/2"}, ck / CHECKPOINT_FILE)


def test_model_json_records_the_time_its_final_checkpoint_records(tiles, tmp_path):
    """A fresh run's model.json wall_seconds is its final checkpoint's train_seconds, so a rerun can write it again."""
    model, ck, _ = run_dirs(tmp_path, "a")
    card = train(tiny_params(), tiles, model, ck, None)
    saved = read_checkpoint(ck / CHECKPOINT_FILE).trained_by
    assert card["compute"] == {"steps": 6, "untimed_steps": 0, "wall_seconds": round(saved.seconds, 1)}
    assert saved.untimed_steps == 0 and saved.git == card["git"]


def test_resume_at_the_final_step_keeps_the_checkpoints_time_and_code(tiles, tmp_path, capsys):
    """Nothing left to train: model.json keeps the checkpoint's training time and git state, not ~0 s and HEAD."""
    model, ck, _ = run_dirs(tmp_path, "a")
    train(tiny_params(), tiles, model, ck, None)
    _edit_checkpoint(ck, train_seconds=1234.5, git=OTHER_CODE)
    card = train(tiny_params(), tiles, model, ck, None)
    assert "resuming from" in capsys.readouterr().err and card["resumed"] and card["step"] == 6
    assert card["compute"] == {"steps": 6, "untimed_steps": 0, "wall_seconds": 1234.5}
    assert card["git"] == OTHER_CODE and card["git_rev"] == "f" * 40
    assert "20 min 34 s of training in all (resumed from a checkpoint" in (model / "MODEL_CARD.md").read_text()


def test_resume_in_the_middle_adds_this_runs_time_to_the_checkpoints(tiles, tmp_path):
    """4 steps recorded as 1000 s, resumed to 6: the time is 1000 s plus this run's, and the code is this run's."""
    model, ck, _ = run_dirs(tmp_path, "a")
    train(tiny_params(iterations=4), tiles, model, ck, None)
    _edit_checkpoint(ck, train_seconds=1000.0, git=OTHER_CODE)
    t0 = time.perf_counter()
    card = train(tiny_params(iterations=6), tiles, model, ck, None)
    this_run = time.perf_counter() - t0
    saved = read_checkpoint(ck / CHECKPOINT_FILE).trained_by
    assert 1000.0 < saved.seconds <= 1000.0 + this_run
    assert card["compute"] == {"steps": 6, "untimed_steps": 0, "wall_seconds": round(saved.seconds, 1)}
    assert card["git"] != OTHER_CODE and card["git"] == saved.git


def test_resume_at_the_final_step_of_an_old_checkpoint_says_the_time_and_code_are_unknown(tiles, tmp_path):
    """A /2 checkpoint (no time recorded) at the last step: model.json has no wall_seconds, 6 untimed steps, no git."""
    model, ck, _ = run_dirs(tmp_path, "a")
    train(tiny_params(), tiles, model, ck, None)
    _as_format_2(ck)
    card = train(tiny_params(), tiles, model, ck, None)
    assert card["resumed"] and card["compute"] == {"steps": 6, "untimed_steps": 6, "timed_seconds": 0.0}
    assert card["git"] is None and card["git_rev"] is None
    text = (model / "MODEL_CARD.md").read_text()
    assert "training time unknown: the first 6 steps were trained before checkpoints recorded their time" in text
    assert "git revision not recorded" in text


def test_resume_in_the_middle_of_an_old_checkpoint_times_only_the_new_steps(tiles, tmp_path, capsys):
    """A /2 checkpoint at step 4 resumed to 6: its 4 steps stay untimed (model.json and the new checkpoint), 2 are timed."""
    model, ck, _ = run_dirs(tmp_path, "a")
    train(tiny_params(iterations=4), tiles, model, ck, None)
    _as_format_2(ck)
    card = train(tiny_params(iterations=6), tiles, model, ck, None)
    assert "the first 4 steps' training time is unknown" in capsys.readouterr().err
    saved = read_checkpoint(ck / CHECKPOINT_FILE).trained_by
    assert saved.untimed_steps == 4 and saved.git == card["git"]
    assert card["compute"] == {"steps": 6, "untimed_steps": 4, "timed_seconds": round(saved.seconds, 1)}
    assert "wall_seconds" not in card["compute"]


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


def test_max_seconds_stops_early_and_writes_a_loadable_model(tiles, tmp_path):
    """max_seconds=0 stops after the first step, checkpoints it, and writes a model whose card says step 1."""
    model, ck, _ = run_dirs(tmp_path, "a")
    card = train(tiny_params(iterations=50), tiles, model, ck, None, max_seconds=0.0)
    assert card["step"] == 1 and card["max_seconds"] == 0.0
    g, loaded = load_generator(model)
    assert loaded["step"] == 1 and read_checkpoint(ck / CHECKPOINT_FILE).step == 1
    with torch.no_grad():
        assert torch.isfinite(g(torch.randn(2, 8, 1, 1))).all()


def test_uniform_latent_round_trips_to_generate(tiles, tmp_path, monkeypatch):
    """gaussian_latent: false trains on U(-1, 1); model.json says uniform; generate then draws U(-1, 1) latents."""
    import satgan.generate
    from satgan.model import sample_latent

    model, ck, _ = run_dirs(tmp_path, "a")
    card = train(tiny_params({"gaussian_latent": False}, iterations=2), tiles, model, ck, None)
    assert json.loads((model / "model.json").read_text())["architecture"]["latent"] == card["architecture"]["latent"] == "uniform"
    drawn: list[torch.Tensor] = []
    monkeypatch.setattr(satgan.generate, "sample_latent", lambda *a, **k: drawn.append(sample_latent(*a, **k)) or drawn[-1])
    params = GenerateParams(seed=1, n_samples=64, batch_size=64, use_ema=True, grid_tiles=4, grid_nrow=2,
                            interp_rows=1, interp_steps=2, classes="all")
    info = generate(model, tmp_path / "samples", params)
    z = drawn[0]
    assert info["latent"] == "uniform" and z.shape == (64, 8, 1, 1)
    assert z.min() >= -1 and z.max() <= 1 and abs(z.std().item() - 3**-0.5) < 0.05  # U(-1, 1): std 1/sqrt(3)


def _stage_cmd(tiles: Path, run: Path, params: Path) -> list[str]:
    return [sys.executable, str(REPO / "stages" / "train.py"), "--data", str(tiles), "--out", str(run / "model"),
            "--checkpoints", str(run / "ck"), "--params", str(params)]


def _write_params(path: Path, **top: Any) -> Path:
    path.write_text(yaml.safe_dump({"train": tiny_params_dict(**top)}))
    return path


def _kill_after_first_checkpoint(cmd: list[str], run: Path) -> int:
    """Start ``cmd``, SIGKILL it (its pid only) once a checkpoint exists; returns the checkpoint's step."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = run / "ck" / CHECKPOINT_FILE
    deadline = time.time() + 120
    while not ck.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished (or failed) before it could be killed"
    return read_checkpoint(ck).step


@pytest.mark.slow
def test_kill9_then_rerun_equals_an_uninterrupted_run(tiles64, tmp_path):
    """kill -9 the stage after a checkpoint (64x64, ngf 16, 2 threads), rerun it: final weights equal an uninterrupted run's."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": realistic_dict(iterations=16, checkpoint_every=4, log_every=8, sample_every=1000)}))
    run = tmp_path / "killed"
    killed_at = _kill_after_first_checkpoint(_stage_cmd(tiles64, run, params), run)
    assert 0 < killed_at < 16 and not (run / "model" / "model.json").exists()
    res = subprocess.run(_stage_cmd(tiles64, run, params), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"resuming from {run / 'ck' / CHECKPOINT_FILE} at step" in res.stderr
    ref = tmp_path / "ref"
    train(from_mapping(TrainParams, yaml.safe_load(params.read_text())["train"], "train"), tiles64, ref / "model", ref / "ck", None)
    assert_same_weights(run / "model", ref / "model")


@pytest.mark.slow
def test_ddp_two_cpu_processes_on_gloo(tiles, tmp_path):
    """torchrun --nproc_per_node=2 by hand trains with DDP on gloo; rank 0 writes the model with world_size 2.

    Rank 1 draws its own latents and batches: were it drawing rank 0's, DDP would average two
    identical gradients and the weights would equal a single process's bit for bit.
    """
    params = _write_params(tmp_path / "params.yaml", iterations=4)
    run = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(torchrun + _stage_cmd(tiles, run, params)[1:], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    card = json.loads((run / "model" / "model.json").read_text())
    assert card["world_size"] == 2 and card["step"] == 4
    assert res.stderr.count("x2 (DDP)") == 1  # the startup line, from rank 0 only
    single = tmp_path / "single"
    train(tiny_params(iterations=4), tiles, single / "model", single / "ck", None)
    ddp_w, single_w = weights(run / "model"), weights(single / "model")
    assert any(not torch.equal(ddp_w[k], single_w[k]) for k in ddp_w)


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


@pytest.mark.slow
def test_nproc_kill9_of_the_stage_kills_its_workers_and_a_rerun_resumes(tiles, tmp_path):
    """train.nproc=2: kill -9 of the stage (now torchrun) takes its workers down; a rerun resumes under DDP to the end."""
    params = _write_params(tmp_path / "params.yaml", iterations=60, checkpoint_every=5, log_every=20, sample_every=1000, nproc=2)
    run = tmp_path / "killed"
    killed_at = _kill_after_first_checkpoint(_stage_cmd(tiles, run, params), run)
    deadline = time.time() + 30
    while _processes_mentioning(str(run)) and time.time() < deadline:
        time.sleep(0.1)
    assert _processes_mentioning(str(run)) == [], "torchrun's workers outlived the killed stage"
    assert 0 < killed_at < 60 and not (run / "model" / "model.json").exists()
    res = subprocess.run(_stage_cmd(tiles, run, params), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "relaunching under torchrun" in res.stderr and "resuming from" in res.stderr
    card = json.loads((run / "model" / "model.json").read_text())
    assert card["world_size"] == 2 and card["step"] == 60 and card["resumed"]


@pytest.mark.slow
def test_dvc_repro_with_nproc_2_trains_with_ddp(tmp_path):
    """`dvc repro` of a tiny config with train.nproc=2 on a CPU: the train stage runs 2 gloo processes."""
    repo = make_repo_copy(tmp_path, {**TINY, "train.nproc": 2, "train.device": "cpu"})
    out = run(["dvc", "repro", "train"], repo)
    assert "relaunching under torchrun" in out.stdout + out.stderr
    card = json.loads((repo / "data" / "model" / "model.json").read_text())
    assert card["world_size"] == 2 and card["step"] == TINY["train.iterations"]


def test_g_learns_a_one_tile_dataset(rsscn7_files, tmp_path):
    """Trained on one (forest) tile, G's samples are much closer to it than the untrained G's, colour included."""
    tile_file = next(f for f in rsscn7_files if f.parent.name == "eForest")
    data = write_tiles(tmp_path / "one", [tile_file] * 8)
    tile = torch.from_numpy(np.load(data / "tiles.npy")[0].astype(np.float32))
    doc = tiny_params_dict(iterations=300, batch_size=8, ngf=8, ndf=8, lr_g=0.001, lr_d=0.0005, log_every=100, checkpoint_every=300)
    doc["hacks"]["dihedral_augment"] = False  # 8 rotated copies would be 8 targets
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


def test_sample_grids_with_dropout_at_sampling_leave_training_unchanged(tiles, tmp_path):
    """With g_dropout.at_sampling on, a sample grid every step trains the same weights as a grid only at the end."""
    hacks = {"g_dropout.enabled": True, "g_dropout.at_sampling": True}
    model, ck, live = run_dirs(tmp_path, "a")
    train(tiny_params(hacks, sample_every=1), tiles, model, ck, live)
    assert len(list((live / "plots" / "images" / "samples").iterdir())) == 6
    ref, ref_ck, _ = run_dirs(tmp_path, "ref")
    train(tiny_params(hacks, sample_every=6), tiles, ref, ref_ck, None)
    assert_same_weights(model, ref)


def test_d_view_images_land_in_the_live_images_folder_at_step_0_and_every_sample_every(tiles, tmp_path):
    """d_view logs plots/images/d_view/<step>.png (dvc.yaml's plots: folder) at 0 and every sample_every, reals | fakes."""
    model, ck, live = run_dirs(tmp_path, "a")
    train(tiny_params(), tiles, model, ck, live)  # 6 iterations, sample_every 3
    folder = live / "plots" / "images" / names.LIVE_D_VIEW
    assert sorted(p.name for p in folder.iterdir()) == ["0.png", "3.png"]
    sample = np.asarray(Image.open(live / "plots" / "images" / names.LIVE_SAMPLES / "3.png"))
    view = np.asarray(Image.open(folder / "0.png"))
    assert view.shape == (sample.shape[0], 2 * sample.shape[1] + 8, 3)  # 4 reals and 4 fakes, 2x2 grids like the samples'
    assert "${paths.live}/plots/images" in (REPO / "dvc.yaml").read_text()


def test_d_view_on_trains_bit_identical_weights_to_d_view_off(tiles, tmp_path):
    """Dumping D's view at every iteration (with default hacks and instance noise) leaves the trained weights unchanged."""
    hacks = {"instance_noise.enabled": True}
    model, ck, live = run_dirs(tmp_path, "on")
    train(tiny_params(hacks, sample_every=1, d_view=True), tiles, model, ck, live)
    assert len(list((live / "plots" / "images" / names.LIVE_D_VIEW).iterdir())) == 6
    ref, ref_ck, ref_live = run_dirs(tmp_path, "off")
    train(tiny_params(hacks, sample_every=1, d_view=False), tiles, ref, ref_ck, ref_live)
    assert not (ref_live / "plots" / "images" / names.LIVE_D_VIEW).exists()
    assert_same_weights(model, ref)


# ---------------------------------------------------------------- class-conditional training


def test_conditional_on_unlabelled_data_is_one_error_naming_the_key_and_folder(tiles, tmp_path):
    """train.conditional on prepared data without labels.npy: one DataError naming train.conditional and the folder."""
    model, ck, _ = run_dirs(tmp_path, "a")
    with pytest.raises(DataError) as info:
        train(tiny_params(conditional="projection"), tiles, model, ck, None)
    msg = str(info.value)
    assert "train.conditional is 'projection'" in msg and str(tiles) in msg and "labels.npy not found" in msg
    assert not (model / "model.json").exists()


def test_labelled_data_without_conditional_trains_as_before(tiles, labelled, tmp_path):
    """conditional none on labelled data: the same weights as on the same tiles without labels, and no classes."""
    a, a_ck, _ = run_dirs(tmp_path, "plain")
    b, b_ck, _ = run_dirs(tmp_path, "labelled")
    train(tiny_params(), tiles, a, a_ck, None)
    card = train(tiny_params(), labelled, b, b_ck, None)
    assert_same_weights(a, b)
    assert card["classes"] == [] and card["architecture"]["conditional"] == "none"


@pytest.mark.parametrize("conditional", CONDITIONALS)
def test_conditional_run_records_classes_logs_and_grids(labelled, tmp_path, conditional, capsys):
    """A conditional run: model.json has the mode, class count and names; acgan logs its class losses and accuracies."""
    model, ck, live = run_dirs(tmp_path, "a")
    card = train(tiny_params(conditional=conditional, n_samples=14), labelled, model, ck, live)
    classes = json.loads((labelled / "tiles.json").read_text())["classes"]
    assert (card["architecture"]["conditional"], card["architecture"]["n_classes"], card["classes"]) == (
        conditional, 7, classes)
    assert f"{conditional} on 7 classes" in capsys.readouterr().err
    metrics = json.loads((live / "metrics.json").read_text())["train"]
    cls_keys = {"loss_d_cls", "loss_g_cls", "cls_acc_real", "cls_acc_fake"}
    assert cls_keys <= set(metrics) if conditional == "acgan" else not cls_keys & set(metrics)
    from PIL import Image

    grid = Image.open(live / "plots" / "images" / "samples" / "6.png")
    assert grid.size == (2 * 34 + 2, 7 * 34 + 2)  # 7 rows (classes) of 2 tiles
    g, _ = load_generator(model)
    with torch.no_grad():
        assert g(torch.randn(2, 8, 1, 1), torch.tensor([0, 6])).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("conditional", CONDITIONALS)
def test_conditional_resume_with_every_hack_on_is_bit_identical(labelled, tmp_path, conditional):
    """Every hack on and a conditional model: 4 then 7 resumed equals 7 in one go (replay labels, EMA embedding...)."""
    model, ck, _ = run_dirs(tmp_path, "a")
    train(every_hack_on(iterations=4, conditional=conditional), labelled, model, ck, None)
    card = train(every_hack_on(iterations=7, conditional=conditional), labelled, model, ck, None)
    assert card["resumed"]
    ref, ref_ck, _ = run_dirs(tmp_path, "ref")
    train(every_hack_on(iterations=7, conditional=conditional), labelled, ref, ref_ck, None)
    assert_same_weights(model, ref)


def test_conditional_streamed_runs_are_deterministic_and_resume(labelled, tmp_path):
    """Streaming labelled batches from the memmap: two runs agree, and 3 then 6 resumed equals 6 in one go."""
    p = {"conditional": "acgan", "data_budget_mb": 0}
    model, ck, _ = run_dirs(tmp_path, "a")
    train(tiny_params(iterations=3, **p), labelled, model, ck, None)
    train(tiny_params(iterations=6, **p), labelled, model, ck, None)
    ref, ref_ck, _ = run_dirs(tmp_path, "ref")
    train(tiny_params(iterations=6, **p), labelled, ref, ref_ck, None)
    assert_same_weights(model, ref)


def test_changed_labels_start_fresh(labelled, tmp_path, capsys):
    """Same tiles, other labels: a conditional checkpoint is not resumed (the labels are part of its training data)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(labelled, data)
    model, ck, _ = run_dirs(tmp_path, "a")
    train(tiny_params(iterations=2, conditional="projection"), data, model, ck, None)
    labels = np.load(data / "labels.npy")
    np.save(data / "labels.npy", (labels + 1) % 7)
    card = train(tiny_params(iterations=4, conditional="projection"), data, model, ck, None)
    assert "training data changed" in capsys.readouterr().err and not card["resumed"]


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda d: np.save(d / "labels.npy", np.zeros(5, np.int64)), r"labels\.npy: expected \(24,\) int64 class indices"),
    (lambda d: np.save(d / "labels.npy", np.full(24, 9, np.int64)), r"labels\.npy: expected class indices in 0\.\.6"),
    (lambda d: np.save(d / "labels.npy", np.zeros(24, np.int32)), r"labels\.npy: expected \(24,\) int64 class indices"),
    (lambda d: (d / "tiles.json").write_text(json.dumps({**json.loads((d / "tiles.json").read_text()), "classes": "x"})),
     "its sidecar names no classes"),
])
def test_bad_labels_are_one_data_error(labelled, tmp_path, edit, fragment):
    """labels.npy that does not fit the tiles or the sidecar's classes: one DataError naming the file."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(labelled, data)
    edit(data)
    with pytest.raises(DataError, match=fragment):
        train(tiny_params(conditional="acgan"), data, tmp_path / "m", tmp_path / "ck", None)
