"""Tests for satgan.ablate: one queued experiment per hack that is on, derived from the hack registry."""

from __future__ import annotations

import pytest
import yaml

from satgan.ablate import ablated_hacks, ablation_commands
from satgan.errors import ParamsError
from satgan.train.registry import HACKS


def _params(tmp_path, repo_root, edit=None):
    doc = yaml.safe_load((repo_root / "params.yaml").read_text())
    if edit is not None:
        edit(doc["train"]["hacks"])
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_ablated_hacks_are_the_ones_switched_on(tmp_path, repo_root):
    """Both `x: true` and `x: {enabled: true}` hacks are ablated; off ones are not."""
    def edit(h):
        h["diffaugment"]["enabled"] = False  # on by default: now skipped
        h["minibatch_stddev"] = True  # off by default: now ablated
        h["l2_penalty"]["enabled"] = True
    names = [h.name for h in ablated_hacks(_params(tmp_path, repo_root, edit))]
    assert "diffaugment" not in names and {"minibatch_stddev", "l2_penalty", "gaussian_latent", "dihedral_augment"} <= set(names)


def test_params_errors_name_the_key(tmp_path, repo_root):
    """Ablation reads the typed train section: a bad value stops it with the key named."""
    path = _params(tmp_path, repo_root, lambda h: h["replay"].update(enabled="yes"))
    with pytest.raises(ParamsError, match="train.hacks.replay.enabled"):
        ablated_hacks(path)


def test_commands_queue_each_ablation_then_run_the_queue(tmp_path, repo_root):
    """Every hack that is on becomes a `dvc exp run --queue -S <its registry key>=false`, then --run-all."""
    cmds = ablation_commands(_params(tmp_path, repo_root), ["train.iterations=5"])
    queued = [c for c in cmds if "--queue" in c]
    on = [h for h in HACKS if h.default_on]
    assert [c[5] for c in queued[:-1]] == ["no-" + h.name.replace("_", "-") for h in on]
    assert [c[7] for c in queued[:-1]] == [f"{h.params_key}=false" for h in on]
    assert all(c[-2:] == ["-S", "train.iterations=5"] for c in queued) and queued[-1][5] == "baseline"
    assert cmds[-2][:4] == ["dvc", "exp", "run", "--run-all"]


def test_real_params_have_default_on_hacks(repo_root):
    """The shipped params.yaml has default-on hacks for `make ablate` to ablate."""
    assert len(ablated_hacks(repo_root / "params.yaml")) >= 5
