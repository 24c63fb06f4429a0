"""Tests for satgan.ablate: one queued experiment per default-on hack."""

from __future__ import annotations

import pytest
import yaml

from satgan.ablate import ablation_commands, default_on_hacks
from satgan.errors import SatganError


def test_default_on_hacks_finds_bool_and_enabled_switches():
    """Both `x: true` and `x: {enabled: true}` hacks are ablated; off ones are not."""
    params = {"train": {"hacks": {"ema": True, "dropout": False,
                                  "soft_labels": {"enabled": True, "real": [0.9, 1.0]},
                                  "replay": {"enabled": False}}}}
    assert default_on_hacks(params) == ["train.hacks.ema", "train.hacks.soft_labels.enabled"]


def test_missing_hacks_section_is_a_clear_error():
    """Without train.hacks there is nothing to ablate, and the error says so."""
    with pytest.raises(SatganError, match="train.hacks"):
        default_on_hacks({"train": {}})


def test_commands_queue_each_ablation_then_run_the_queue(tmp_path):
    """Every default-on hack becomes a `dvc exp run --queue -S key=false`, then --run-all."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"hacks": {"ema": True, "gaussian_latent": True}}}))
    cmds = ablation_commands(path, ["train.iterations=5"])
    queued = [c for c in cmds if "--queue" in c]
    assert ["-S", "train.hacks.ema=false"] == queued[0][6:8]
    assert all(c[-2:] == ["-S", "train.iterations=5"] for c in queued)
    assert [c[-1] for c in queued][-1] == "train.iterations=5" and len(queued) == 3
    assert cmds[-2][:4] == ["dvc", "exp", "run", "--run-all"]


def test_real_params_have_default_on_hacks(repo_root):
    """The shipped params.yaml has default-on hacks for `make ablate` to ablate."""
    from satgan.params import read_params_file

    assert len(default_on_hacks(read_params_file(repo_root / "params.yaml"))) >= 5
