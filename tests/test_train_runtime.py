"""Tests for satgan.train.runtime: device choice, CPU threads, ranks from torchrun's environment, RNG state."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from satgan.errors import TrainingError
from satgan.train.runtime import Dist, RngState, cpu_threads, dist_from_env, pick_device, seed_everything


def test_cpu_threads_explicit_or_all_cores_but_one(monkeypatch):
    """threads > 0 is taken as is; 0 uses all cores but one on >2-core machines, split between local ranks."""
    assert cpu_threads(3, 1) == 3
    monkeypatch.setattr("os.cpu_count", lambda: 9)
    assert cpu_threads(0, 1) == 8 and cpu_threads(0, 2) == 4
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert cpu_threads(0, 1) == 2


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
