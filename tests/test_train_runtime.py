"""Tests for satgan.train.runtime: device choice, CPU threads, ranks from torchrun's environment, RNG state."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
import torch

from satgan.errors import TrainingError
from satgan.train.runtime import (
    Dist,
    RngState,
    any_rank,
    determinism,
    dist_from_env,
    pick_device,
    say,
    seed_everything,
    torchrun_command,
)
from train_helpers import every_hack_on, trainer


def test_pick_device_cpu_and_missing_cuda(monkeypatch):
    """device=cpu is the CPU; device=cuda without CUDA is a TrainingError naming the key."""
    assert pick_device("cpu", 0) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto", 0) == torch.device("cpu")
    with pytest.raises(TrainingError, match="train.device is 'cuda'"):
        pick_device("cuda", 0)


def test_dist_from_env(monkeypatch):
    """Without WORLD_SIZE a single process; under torchrun the ranks it sets."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist_from_env() == Dist() and not Dist().enabled and Dist().main
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    d = dist_from_env()
    assert (d.rank, d.world, d.local_rank, d.enabled, d.main) == (1, 2, 1, True, False)


def test_rng_state_round_trips_every_stream():
    """Restoring RngState's state_dict replays Python, numpy and torch draws exactly."""
    seed_everything(3)
    rng = RngState()
    state = rng.state_dict()
    first = (random.random(), np.random.random(), torch.rand(3))
    rng.load_state_dict(state)
    again = (random.random(), np.random.random(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_malformed_rng_state_raises_a_plain_error():
    """A malformed RNG state raises a ValueError/TypeError/RuntimeError/KeyError (reported by the checkpoint code)."""
    state = RngState().state_dict()
    state["torch"] = torch.zeros(3)
    with pytest.raises((ValueError, TypeError, RuntimeError, KeyError)):
        RngState().load_state_dict(state)


def test_determinism_sets_the_mode_and_restores_the_previous_one():
    """deterministic=True: deterministic algorithms on, no NaN-filling of fresh memory, the mode named; the old state returns."""
    import torch.utils.deterministic as tud

    before = torch.are_deterministic_algorithms_enabled(), tud.fill_uninitialized_memory
    with determinism(True, torch.device("cpu")) as mode:
        assert mode == "deterministic" and torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.benchmark and not tud.fill_uninitialized_memory
    assert (torch.are_deterministic_algorithms_enabled(), tud.fill_uninitialized_memory) == before
    with determinism(False, torch.device("cpu")) as mode:
        assert mode == "non-deterministic" and not torch.are_deterministic_algorithms_enabled()


def test_every_hack_runs_under_deterministic_algorithms_on_a_cpu():
    """With every hack on, no op of the step lacks a deterministic CPU kernel (torch would raise)."""
    with determinism(True, torch.device("cpu")):
        tr = trainer(every_hack_on())
        for _ in range(3):
            out = tr.run_step()
    assert all(torch.isfinite(v).all() for v in out.values())


def test_torchrun_command_runs_this_python_standalone():
    """train.nproc's relaunch: this interpreter, torch.distributed.run, one machine, that many processes."""
    cmd = torchrun_command(3, ["stages/train.py", "--data", "d"])
    assert cmd[0] == sys.executable and cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert cmd[4:] == ["--nproc_per_node=3", "stages/train.py", "--data", "d"]


def test_any_rank_is_the_flag_itself_in_one_process():
    """Without DDP, any_rank returns this process's flag (no collective)."""
    assert any_rank(True, torch.device("cpu"), Dist()) and not any_rank(False, torch.device("cpu"), Dist())


def test_nproc_beyond_the_gpu_count_is_refused_before_relaunching(monkeypatch):
    """train.nproc > the CUDA devices on a GPU machine: a TrainingError naming both, not a crash in torchrun."""
    from satgan.train.runtime import relaunch_under_torchrun

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr("os.execv", lambda *a: pytest.fail("relaunched"))
    with pytest.raises(TrainingError, match="train.nproc is 2 but this machine has 1 CUDA device"):
        relaunch_under_torchrun(2, "auto")


def test_only_rank_0_says_progress_lines_under_torchrun(monkeypatch, capsys):
    """Under torchrun rank 1 prints nothing for a progress line, rank 0 prints it once, a single process prints it."""
    for rank, expected in (("1", ""), ("0", "train: wrote data/model at step 5\n")):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("LOCAL_RANK", rank)
        say("wrote data/model at step 5")
        assert capsys.readouterr().err == expected, rank
    monkeypatch.delenv("WORLD_SIZE")
    say("no checkpoint: starting fresh")
    assert capsys.readouterr().err == "train: no checkpoint: starting fresh\n"

