"""Tests for satgan.modelio: safetensors model files, model.json card, pickle refusal."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from satgan.errors import ModelFileError
from satgan.model import ModelConfig, build_discriminator, build_generator
from satgan.modelio import load_discriminator, load_generator, save_model

CFG = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4)


def _save(tmp_path, ema=True):
    torch.manual_seed(0)
    g, d = build_generator(CFG), build_discriminator(CFG)
    g_ema = build_generator(CFG) if ema else None
    save_model(tmp_path, g, d, CFG, generator_ema=g_ema, params_hash="p", data_hash="h", step=7)
    return g, d, g_ema


def test_save_writes_safetensors_and_card(tmp_path):
    """save_model writes G, EMA, D safetensors and a card with the required keys."""
    _save(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"generator.safetensors", "generator_ema.safetensors", "discriminator.safetensors", "model.json"} <= names
    card = json.loads((tmp_path / "model.json").read_text())
    assert card["architecture"] == CFG.to_dict()
    assert (card["params_hash"], card["data_hash"], card["step"], card["nz"]) == ("p", "h", 7, 8)
    assert "git_rev" in card


def test_load_generator_uses_ema_weights(tmp_path):
    """load_generator returns the EMA G in eval mode by default and raw G on request."""
    g, _, g_ema = _save(tmp_path)
    z = torch.randn(2, 8, 1, 1)
    loaded, card = load_generator(tmp_path)
    assert not loaded.training and card["loaded_weights"] == "generator_ema.safetensors"
    assert torch.equal(loaded(z), g_ema.eval()(z))
    raw, _ = load_generator(tmp_path, use_ema=False)
    assert torch.equal(raw(z), g.eval()(z))


def test_load_generator_without_ema_falls_back_to_raw(tmp_path):
    """When EMA was off, use_ema=True loads generator.safetensors."""
    _save(tmp_path, ema=False)
    _, card = load_generator(tmp_path)
    assert card["loaded_weights"] == "generator.safetensors"
    assert not (tmp_path / "generator_ema.safetensors").exists()


def test_load_discriminator_round_trips(tmp_path):
    """D's weights (incl. BN running stats) load back exactly."""
    _, d, _ = _save(tmp_path)
    loaded, _ = load_discriminator(tmp_path)
    for (k, a), (_, b) in zip(d.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("name", ("generator.pt", "model.pth"))
def test_pickle_paths_are_refused_unopened(tmp_path, name):
    """A .pt/.pth path is refused with ModelFileError before it is read."""
    path = tmp_path / name
    path.write_bytes(pickle.dumps({"boom": 1}))
    with pytest.raises(ModelFileError, match="pickle"):
        load_generator(path)


def test_folder_with_only_a_pickle_is_refused(tmp_path):
    """A folder holding only generator.pt names the pickle in its error."""
    (tmp_path / "generator.pt").write_bytes(b"\x80\x04")
    with pytest.raises(ModelFileError, match="generator.pt"):
        load_generator(tmp_path)


def test_corrupt_safetensors_is_a_model_file_error(tmp_path):
    """Garbage in generator.safetensors is reported, not a crash."""
    _save(tmp_path, ema=False)
    (tmp_path / "generator.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelFileError, match="safetensors"):
        load_generator(tmp_path)
