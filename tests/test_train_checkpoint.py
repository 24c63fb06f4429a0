"""Tests for satgan.train.checkpoint: every trainer part saved and restored by name; unusable checkpoints start fresh."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from satgan.train import train
from satgan.train.checkpoint import (
    CHECKPOINT_FILE,
    TrainedBy,
    UnusableCheckpoint,
    checkpoint_state,
    read_checkpoint,
    restore,
    save_checkpoint,
)
from train_helpers import (
    CONDITIONALS,
    assert_same_weights,
    every_hack_on,
    run_dirs,
    tiny_params,
    trainer,
    write_labelled_tiles,
    write_tiles,
)

# Trainer attributes that hold tensors or modules but are not resume state, and why.
DERIVED = {
    "g_run": "G itself, or its DDP/compiled wrapper",
    "d_run": "D itself, or its DDP/compiled wrapper",
    "d_fwd": "D itself, or its compiled form",
    "fixed_noise": "redrawn from the seed by every trainer",
    "fixed_labels": "the sample grid's classes, one row each (conditional)",
    "class_labels": "the training tiles' labels, read from labels.npy by every trainer (conditional)",
}


FRESH = TrainedBy(seconds=0.0, untimed_steps=0, git=None)  # what in-memory checkpoints record: no time, outside git


def _holds_state(value: object) -> bool:
    return isinstance(value, (torch.Tensor, nn.Module, torch.optim.Optimizer)) or hasattr(value, "state_dict")


def _states_equal(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_states_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_states_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture(scope="module")
def tiles(tmp_path_factory, rsscn7_files) -> Path:
    """12 real RSSCN7 tiles at 32x32."""
    return write_tiles(tmp_path_factory.mktemp("prepared"), rsscn7_files[::24][:12])


@pytest.mark.parametrize("conditional", ["none", *CONDITIONALS])
def test_every_stateful_trainer_attribute_is_a_checkpoint_part(conditional):
    """With every hack on, each trainer attribute holding state is a registered part (or declared derived)."""
    tr = trainer(every_hack_on(conditional=conditional))
    registered = {id(p) for p in tr.parts.values()}
    forgotten = [name for name, value in vars(tr).items()
                 if _holds_state(value) and id(value) not in registered and name not in DERIVED]
    assert forgotten == []
    assert {"ema", "checkpoint_swap", "replay", "historical_average_g", "historical_average_d", "rng"} <= set(tr.parts)


@pytest.mark.parametrize("conditional", ["none", *CONDITIONALS])
def test_restored_trainer_continues_bit_identically_with_every_hack_on(conditional):
    """Trainer B restored from A's state after 3 steps matches A in every part after 2 more steps each."""
    p = every_hack_on(conditional=conditional)
    a = trainer(p)
    for _ in range(3):
        a.run_step()
    state = checkpoint_state(a.parts, "r", "d", FRESH)
    for _ in range(2):
        a.run_step()
    expected = checkpoint_state(a.parts, "r", "d", FRESH)["parts"]  # before b exists: the global RNG is shared
    b = trainer(p)
    restore(b.parts, read_checkpoint_from(state))
    for _ in range(2):
        b.run_step()
    got = checkpoint_state(b.parts, "r", "d", FRESH)["parts"]
    assert expected.keys() == got.keys()
    for name in expected:
        assert _states_equal(expected[name], got[name]), name


def test_restored_trainer_sets_the_g_layer_noise_std_of_the_step_it_resumes_at():
    """G's noise std is not saved but recomputed from the restored step: B resumed at step 3 logs what A logs at step 3."""
    p = tiny_params({"g_layer_noise.enabled": True, "g_layer_noise.std": 0.3, "g_layer_noise.decay_iters": 10})
    a = trainer(p)
    for _ in range(3):
        a.run_step()
    state = checkpoint_state(a.parts, "r", "d", FRESH)
    assert all(not k.endswith("std") for k in state["parts"]["g"])
    expected = a.run_step()["g_layer_noise_std"]
    b = trainer(p)
    restore(b.parts, read_checkpoint_from(state))
    got = b.run_step()["g_layer_noise_std"]
    assert got.item() == expected.item() == pytest.approx(0.3 * (1 - 3 / 10))


def read_checkpoint_from(state: dict) -> object:
    """A Checkpoint from an in-memory state, through the same validation as a file."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CHECKPOINT_FILE
        save_checkpoint(path, state)
        return read_checkpoint(path)


REPLAY = {"replay.enabled": True}  # the crafted checkpoints edit the replay part: the run must have one


def _crafted(tiles: Path, tmp_path: Path, edit) -> tuple[Path, Path]:
    """A real 2-step checkpoint edited by ``edit(state)`` and saved back; returns (model dir, checkpoint dir)."""
    model, ck, _ = run_dirs(tmp_path, "crafted")
    train(tiny_params(REPLAY, iterations=2), tiles, model, ck, None)
    state = torch.load(ck / CHECKPOINT_FILE, weights_only=True)
    torch.save(edit(state), ck / CHECKPOINT_FILE)
    return model, ck


def _edited(fn):
    """An edit that mutates the loaded state in place and returns it."""
    return lambda s: (fn(s), s)[1]


@pytest.mark.parametrize(("edit", "reason"), [
    (_edited(lambda s: s.pop("parts")), "checkpoint has no 'parts'"),
    (_edited(lambda s: s.pop("resume_hash")), "checkpoint has no 'resume_hash'"),
    (_edited(lambda s: s["parts"]["progress"].pop("step")), "no valid progress.step"),
    (_edited(lambda s: s["parts"].pop("replay")), "checkpoint has no 'replay' state"),
    (_edited(lambda s: s["parts"]["replay"].update(images=torch.zeros(3, 3, 32, 32))), "replay: images: expected a tensor of shape"),
    (_edited(lambda s: s["parts"]["g"].update({"0.weight": torch.zeros(2, 2)})), "g: Error(s) in loading state_dict"),
    (_edited(lambda s: s["parts"]["g"].pop("0.weight")), "g: Error(s) in loading state_dict"),
    (_edited(lambda s: s["parts"]["opt_g"]["state"][0].update(exp_avg=torch.zeros(5))), "opt_g: state 'exp_avg' has shape [5]"),
    (_edited(lambda s: s["parts"]["rng"].update(torch=torch.zeros(3))), "rng:"),
    (_edited(lambda s: s.update(format="satgan-train-checkpoint/1")), "checkpoint format 'satgan-train-checkpoint/1'"),
    (_edited(lambda s: s.pop("train_seconds")), "checkpoint has no 'train_seconds'"),
    (_edited(lambda s: s.update(untimed_steps=3)), "'untimed_steps' must be an int from 0 to the step 2"),
    (lambda s: [1, 2], "not a satgan checkpoint"),
    (_edited(lambda s: s["parts"]["g"]["0.weight"].select(0, 0).fill_(float("nan"))),  # a view: weights are channels_last
     "checkpoint holds NaN or Inf values in g.0.weight"),
    (_edited(lambda s: s["parts"]["opt_d"]["state"][0]["exp_avg_sq"].fill_(float("inf"))),
     "checkpoint holds NaN or Inf values in opt_d.state.0.exp_avg_sq"),
])
def test_crafted_checkpoint_starts_fresh_with_one_line_reason(tiles, tmp_path, capsys, edit, reason):
    """A checkpoint missing fields or parts, or with wrong shapes, is reported in one line and training starts fresh."""
    model, ck = _crafted(tiles, tmp_path, edit)
    capsys.readouterr()
    card = train(tiny_params(REPLAY, iterations=3), tiles, model, ck, None)
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if "starting fresh" in ln)
    assert reason in line and str(ck / CHECKPOINT_FILE) in line and not card["resumed"]
    ref, ref_ck, _ = run_dirs(tmp_path, "ref")
    train(tiny_params(REPLAY, iterations=3), tiles, ref, ref_ck, None)
    assert_same_weights(model, ref)  # a partly loaded trainer was rebuilt: exactly a fresh run


def test_garbage_checkpoint_file_starts_fresh(tiles, tmp_path, capsys):
    """Random bytes in checkpoint.pt: 'unreadable checkpoint', then a fresh run."""
    model, ck, _ = run_dirs(tmp_path, "a")
    ck.mkdir(parents=True)
    (ck / CHECKPOINT_FILE).write_bytes(np.random.default_rng(0).bytes(500))
    card = train(tiny_params(iterations=2), tiles, model, ck, None)
    assert "unreadable checkpoint" in capsys.readouterr().err and card["step"] == 2 and not card["resumed"]


def test_checkpoint_records_the_time_and_code_it_was_given(tmp_path):
    """checkpoint_state's TrainedBy (time so far, untimed steps, git state) reads back whole from the file."""
    git = {"rev": "a" * 40, "dirty_paths": ["params.yaml"], "dirty_count": 1, "experiment": None, "exp_ref": None}
    given = TrainedBy(seconds=123.25, untimed_steps=0, git=git)
    assert read_checkpoint_from(checkpoint_state(trainer().parts, "r", "d", given)).trained_by == given


def test_a_format_2_checkpoint_loads_with_its_time_and_code_unknown():
    """A /2 checkpoint (before the time was recorded) still loads: every step untimed, the code not recorded."""
    tr = trainer()
    tr.run_step()
    state = checkpoint_state(tr.parts, "r", "d", FRESH)
    for key in ("train_seconds", "untimed_steps", "git"):
        del state[key]
    ck = read_checkpoint_from({**state, "format": "satgan-train-checkpoint/2"})
    assert ck.step == 1 and ck.trained_by == TrainedBy(seconds=0.0, untimed_steps=1, git=None)
    restore(trainer().parts, ck)


def test_read_checkpoint_is_none_without_a_file(tmp_path):
    """No checkpoint file: None (a fresh start, not an error)."""
    assert read_checkpoint(tmp_path / CHECKPOINT_FILE) is None


def test_restore_refuses_a_part_this_run_does_not_have():
    """A checkpoint holding state for a part the trainer lacks is unusable (it was written under other switches)."""
    tr = trainer()
    state = checkpoint_state(tr.parts, "r", "d", FRESH)
    state["parts"]["checkpoint_swap"] = {}
    with pytest.raises(UnusableCheckpoint, match="holds 'checkpoint_swap' state this run does not have"):
        restore(trainer().parts, read_checkpoint_from(state))


def test_conditional_checkpoint_without_replay_labels_starts_fresh(rsscn7_files, tmp_path, capsys):
    """A conditional run's checkpoint whose replay buffer lost its labels is unusable: one line, then a fresh start."""
    tiles = write_labelled_tiles(tmp_path / "prepared", rsscn7_files[::24][:12])
    p = tiny_params(REPLAY, iterations=2, conditional="projection")
    model, ck, _ = run_dirs(tmp_path, "a")
    train(p, tiles, model, ck, None)
    state = torch.load(ck / CHECKPOINT_FILE, weights_only=True)
    assert state["parts"]["replay"]["labels"].dtype == torch.int64
    del state["parts"]["replay"]["labels"]
    torch.save(state, ck / CHECKPOINT_FILE)
    capsys.readouterr()
    card = train(tiny_params(REPLAY, iterations=3, conditional="projection"), tiles, model, ck, None)
    assert "replay: labels: missing" in capsys.readouterr().err and not card["resumed"]


def test_full_disk_keeps_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    """A checkpoint write failing with ENOSPC is one TrainingError line; the old checkpoint is intact, no temp file."""
    import errno

    from satgan.errors import TrainingError
    from satgan.train import checkpoint as ckmod

    path = tmp_path / CHECKPOINT_FILE
    save_checkpoint(path, {"format": "x", "w": torch.ones(4)})
    before = path.read_bytes()

    def full_disk(obj, fh):
        fh.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckmod.torch, "save", full_disk)
    with pytest.raises(TrainingError) as info:
        save_checkpoint(path, {"format": "x", "w": torch.zeros(4)})
    assert str(info.value) == (f"{path}: cannot write the checkpoint (No space left on device); the previous "
                               "checkpoint is kept: free space and rerun to resume from it")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]


def test_full_disk_on_a_real_device_is_one_line(tmp_path, monkeypatch):
    """torch.save's own write to a full device (/dev/full) surfaces as ENOSPC, not an opaque RuntimeError."""
    from satgan.errors import TrainingError
    from satgan.train import checkpoint as ckmod

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, mode="r", *a, **k: real_open("/dev/full", mode) if mode == "wb"
                        else real_open(f, mode, *a, **k))
    with pytest.raises(TrainingError, match="No space left on device"):
        ckmod.save_checkpoint(tmp_path / CHECKPOINT_FILE, {"w": torch.zeros(100_000)})
    assert list(tmp_path.iterdir()) == []
