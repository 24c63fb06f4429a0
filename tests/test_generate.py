"""Tests for satgan.generate: slerp, batch-size independence, and the stage's outputs."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from satgan.arrays import open_prepared
from satgan.errors import ParamsError
from satgan.generate import GenerateParams, generate, interpolation_latents, run_generator, slerp
from satgan.model import ModelConfig, build_discriminator, build_generator, sample_latent
from satgan.modelio import save_model
from satgan.params import InvalidParam, from_mapping

CFG = ModelConfig(image_size=32, channels=3, nz=8, ngf=8, ndf=8)
PARAMS = GenerateParams(seed=5, n_samples=10, batch_size=4, use_ema=True, grid_tiles=8, grid_nrow=4,
                        interp_rows=2, interp_steps=5, classes="all")

vectors = st.tuples(st.integers(0, 2**31 - 1), st.integers(2, 64))  # (seed, latent dimension)


def _generator(seed: int) -> torch.nn.Module:
    """A tiny DCGAN generator with non-trivial BatchNorm running statistics."""
    torch.manual_seed(seed)
    g = build_generator(CFG)
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return g


@pytest.fixture()
def model_dir(tmp_path):
    """A saved model folder with both plain and EMA generator weights."""
    save_model(tmp_path / "model", _generator(0), build_discriminator(CFG), CFG, generator_ema=_generator(1),
               params_hash="p", data_hash="d", step=3)
    return tmp_path / "model"


@settings(max_examples=40, deadline=None)
@given(vectors)
def test_slerp_hits_endpoints(spec):
    """slerp at t=0 and t=1 returns the endpoints."""
    seed, d = spec
    gen = torch.Generator().manual_seed(seed)
    z0, z1 = torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
    out = slerp(z0, z1, torch.tensor([0.0, 1.0]))
    assert torch.allclose(out[0], z0, atol=1e-9) and torch.allclose(out[1], z1, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(vectors, st.floats(0.0, 1.0))
def test_slerp_keeps_the_norm_of_equal_norm_endpoints(spec, t):
    """Between two latents on the same sphere, slerp stays on that sphere (lerp would not)."""
    seed, d = spec
    gen = torch.Generator().manual_seed(seed)
    z0, z1 = torch.randn(2, d, generator=gen, dtype=torch.float64)
    z1 = z1 / z1.norm() * z0.norm()
    out = slerp(z0, z1, torch.tensor([t]))[0]
    assert out.norm().item() == pytest.approx(z0.norm().item(), rel=1e-6)


def test_batch_size_does_not_change_the_images():
    """In eval mode a sample depends on its latent only: batch size 1 and 7 give the same tiles."""
    g = _generator(0)
    z = sample_latent(CFG, 7, torch.Generator().manual_seed(2))
    assert np.allclose(run_generator(g, z, 1), run_generator(g, z, 7), atol=1e-5)


def test_generate_writes_contract_arrays_pngs_and_grids(model_dir, tmp_path):
    """generate writes N PNGs, a sidecar'd samples.npy in [-1, 1], a grid and an interpolation strip."""
    out = tmp_path / "samples"
    generate(model_dir, out, PARAMS)
    arr, meta = open_prepared(out / "samples.npy")
    assert arr.shape == (10, 3, 32, 32) and arr.dtype == np.float32 and -1 <= arr.min() and arr.max() <= 1
    assert len(list((out / "png").glob("*.png"))) == 10
    png = np.asarray(Image.open(out / "png" / "000003.png"), np.float32) / 127.5 - 1
    assert np.abs(png.transpose(2, 0, 1) - arr[3]).max() <= 1 / 127.5 + 1e-6
    assert Image.open(out / "interpolation.png").size == (5 * 34 + 2, 2 * 34 + 2)
    assert (out / "grid.png").is_file() and meta["model"]["loaded_weights"] == "generator_ema.safetensors"


def test_generate_is_seeded_and_respects_use_ema(model_dir, tmp_path):
    """Same seed twice gives identical samples; use_ema=false loads the plain weights instead."""
    generate(model_dir, tmp_path / "a", PARAMS)
    generate(model_dir, tmp_path / "b", PARAMS)
    plain = dataclasses.replace(PARAMS, use_ema=False)
    generate(model_dir, tmp_path / "c", plain)
    a, b, c = (np.load(tmp_path / x / "samples.npy") for x in "abc")
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert json.loads((tmp_path / "c" / "samples.json").read_text())["model"]["loaded_weights"] == "generator.safetensors"


def test_params_reject_grid_larger_than_samples():
    """A grid with more tiles than samples is refused, naming the key."""
    bad = {**PARAMS.__dict__, "grid_tiles": 11}
    with pytest.raises(ParamsError, match="generate.grid_tiles"):
        from_mapping(GenerateParams, bad, key="generate")


def test_uniform_interpolation_stays_inside_the_cube():
    """For a uniform-latent model the interpolation is a straight line, so every latent stays in [-1, 1]."""
    z = interpolation_latents(dataclasses.replace(CFG, latent="uniform"), rows=4, steps=7, seed=3)
    assert z.shape == (28, CFG.nz, 1, 1) and z.min() >= -1 and z.max() <= 1


def test_gaussian_interpolation_ends_at_two_drawn_latents():
    """Each Gaussian interpolation row runs by slerp between two latents drawn from the seed."""
    z = interpolation_latents(CFG, rows=2, steps=5, seed=3).reshape(2, 5, CFG.nz)
    ends = sample_latent(CFG, 4, torch.Generator().manual_seed(3)).reshape(2, 2, CFG.nz)
    assert torch.allclose(z[:, 0], ends[:, 0]) and torch.allclose(z[:, -1], ends[:, 1])


def test_nan_generator_is_refused(model_dir, tmp_path):
    """generate on a generator holding NaN raises one ModelFileError naming the file and writes no samples."""
    from safetensors.torch import load_file, save_file

    from satgan.errors import ModelFileError

    state = load_file(model_dir / "generator_ema.safetensors")
    state["0.weight"].fill_(float("inf"))
    save_file(state, str(model_dir / "generator_ema.safetensors"))
    with pytest.raises(ModelFileError, match="generator_ema.safetensors: tensor '0.weight' holds NaN or infinite"):
        generate(model_dir, tmp_path / "out", PARAMS)
    assert not (tmp_path / "out" / "samples.npy").exists()


GENERATE_NUMERIC = ["seed", "n_samples", "batch_size", "grid_tiles", "grid_nrow", "interp_rows", "interp_steps"]


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(GENERATE_NUMERIC),
       value=st.one_of(st.integers(-(10**30), 10**30), st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from([None, True, "3", []])))
def test_any_value_of_any_generate_key_loads_or_names_that_key(key, value):
    """Huge, negative, non-finite or mistyped values: accepted, or refused in one line naming that key."""
    doc = {**PARAMS.__dict__, key: value}
    try:
        from_mapping(GenerateParams, doc, key="generate", file="params.yaml")
    except ParamsError as exc:
        msg = str(exc)
        named = msg.removeprefix("params.yaml: generate.").split(":")[0]
        # grid_tiles is checked against n_samples: a small n_samples is reported under grid_tiles, with its value
        assert "\n" not in msg and (named == key or (key == "n_samples" and named == "grid_tiles" and f"({value})" in msg)), msg


def test_generate_with_dropout_at_sampling_is_seeded(tmp_path):
    """A model that keeps its dropout at sampling gives the same samples for the same seed, others for another."""
    cfg = dataclasses.replace(CFG, g_dropout=0.5, g_dropout_at_sampling=True)
    torch.manual_seed(0)
    save_model(tmp_path / "m", build_generator(cfg), build_discriminator(cfg), cfg, params_hash="p", data_hash="d", step=1)
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate(tmp_path / "m", tmp_path / name, dataclasses.replace(PARAMS, seed=seed))
    a, b, c = (np.load(tmp_path / x / "samples.npy") for x in "abc")
    assert np.array_equal(a, b) and not np.allclose(a, c)


# ----------------------------------------------------------------- class-conditional models

CLASSES = ["aGrass", "eForest", "dRiverLake"]


def _conditional_dir(tmp_path, conditional="projection"):
    cfg = dataclasses.replace(CFG, conditional=conditional, n_classes=3)
    torch.manual_seed(0)
    save_model(tmp_path / "cm", build_generator(cfg), build_discriminator(cfg), cfg, params_hash="p", data_hash="d",
               step=1, classes=CLASSES)
    return tmp_path / "cm"


@pytest.mark.parametrize("conditional", ["projection", "acgan"])
def test_conditional_generate_writes_labels_and_per_class_grids(tmp_path, conditional):
    """classes/: classes.json, labels.npy (round robin over every class), a row per class in grid.png and interpolation.png."""
    from satgan.modelio import load_generator

    out = tmp_path / "s"
    generate(_conditional_dir(tmp_path, conditional), out, PARAMS)  # 10 samples over 3 classes: 4, 3, 3
    folder = out / "classes"
    assert json.loads((folder / "classes.json").read_text()) == {"conditional": conditional, "classes": CLASSES}
    labels = np.load(folder / "labels.npy")
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert Image.open(folder / "grid.png").size == (4 * 34 + 2, 3 * 34 + 2)  # grid_nrow latents x 3 classes
    assert Image.open(folder / "interpolation.png").size == (5 * 34 + 2, 3 * 34 + 2)  # interp_steps x 3 classes
    g, _ = load_generator(tmp_path / "cm")
    z = sample_latent(CFG, 10, torch.Generator().manual_seed(int(np.random.SeedSequence(5).generate_state(1)[0])))
    expected = run_generator(g, z, 10, torch.from_numpy(labels))
    assert np.allclose(np.load(out / "samples.npy"), expected, atol=1e-6)  # sample i is class labels[i]


def test_class_grid_rows_share_their_latents(tmp_path):
    """classes/grid.png: the same latents in every row, only the class changes (checked against G itself)."""
    from satgan.generate import _seeds
    from satgan.imageops import make_grid
    from satgan.modelio import load_generator

    params = dataclasses.replace(PARAMS, classes=("dRiverLake", "aGrass"))
    generate(_conditional_dir(tmp_path), tmp_path / "s", params)
    g, _ = load_generator(tmp_path / "cm")
    z = sample_latent(CFG, 4, torch.Generator().manual_seed(_seeds(5)[2])).repeat(2, 1, 1, 1)
    expected = make_grid(run_generator(g, z, 8, torch.tensor([2] * 4 + [0] * 4)), nrow=4)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s" / "classes" / "grid.png")), expected)


def test_chosen_classes_spread_evenly_and_label_into_the_full_list(tmp_path):
    """generate.classes [eForest, dRiverLake]: labels index the model's full class list; the remainder goes to the first."""
    params = dataclasses.replace(PARAMS, n_samples=9, grid_tiles=8, classes=("eForest", "dRiverLake"))
    generate(_conditional_dir(tmp_path), tmp_path / "s", params)
    labels = np.load(tmp_path / "s" / "classes" / "labels.npy")
    assert labels.tolist() == [1, 2, 1, 2, 1, 2, 1, 2, 1] and np.bincount(labels).tolist() == [0, 5, 4]
    info = json.loads((tmp_path / "s" / "classes" / "classes.json").read_text())
    assert info["classes"] == CLASSES  # the model's classes, in label order
    assert Image.open(tmp_path / "s" / "classes" / "grid.png").size[1] == 2 * 34 + 2


def test_conditional_generate_is_seeded(tmp_path):
    """Same model and seed, same samples and class grid; another seed, other samples."""
    model = _conditional_dir(tmp_path)
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate(model, tmp_path / name, dataclasses.replace(PARAMS, seed=seed))
    a, b, c = (np.load(tmp_path / x / "samples.npy") for x in "abc")
    assert np.array_equal(a, b) and not np.allclose(a, c)
    grids = [(tmp_path / x / "classes" / "grid.png").read_bytes() for x in "ab"]
    assert grids[0] == grids[1]


def test_unknown_class_is_one_error_listing_the_models_classes(tmp_path):
    """A class the model does not have: one ParamsError naming generate.classes and listing the model's classes."""
    with pytest.raises(ParamsError, match="generate.classes: unknown class 'desert'; the model's classes are: aGrass, eForest, dRiverLake"):
        generate(_conditional_dir(tmp_path), tmp_path / "s", dataclasses.replace(PARAMS, classes=("eForest", "desert")))
    assert not (tmp_path / "s" / "samples.npy").exists()


def test_unconditional_model_with_chosen_classes_is_one_error(model_dir, tmp_path):
    """generate.classes other than all on an unconditional model: one error naming the key, nothing written."""
    with pytest.raises(ParamsError, match="generate.classes: asks for classes \\['eForest'\\], but this model is unconditional"):
        generate(model_dir, tmp_path / "s", dataclasses.replace(PARAMS, classes=("eForest",)))
    assert not (tmp_path / "s").exists()


def test_unconditional_generate_writes_only_classes_json_and_clears_stale_class_files(model_dir, tmp_path):
    """classes/ is always written: an unconditional model gets classes.json with no classes, and earlier per-class files go."""
    out = tmp_path / "s"
    generate(_conditional_dir(tmp_path), out, PARAMS)
    generate(model_dir, out, PARAMS)
    assert sorted(p.name for p in (out / "classes").iterdir()) == ["classes.json"]
    assert json.loads((out / "classes" / "classes.json").read_text()) == {"conditional": "none", "classes": []}


def test_every_chosen_class_needs_a_sample(tmp_path):
    """More classes than samples is refused: per-class outputs need at least one sample of each."""
    with pytest.raises(ParamsError, match="generate.n_samples: expected at least one sample per class \\(3 classes\\), got 2"):
        generate(_conditional_dir(tmp_path), tmp_path / "s", dataclasses.replace(PARAMS, n_samples=2, grid_tiles=2))


@pytest.mark.parametrize(("value", "fragment"), [
    ([], "generate.classes: expected 'all' or a non-empty list of class names"),
    (["a", "a"], "generate.classes: expected distinct class names"),
    ("some", "generate.classes: expected one of 'all' or a list"),
    ([1], "generate.classes"),
    ([f"c{i}" for i in range(11)], "generate.classes: expected at most n_samples (10) classes"),
])
def test_generate_classes_param_is_checked(value, fragment):
    """generate.classes is 'all' or a non-empty list of distinct names, at most n_samples of them."""
    with pytest.raises(ParamsError, match=re.escape(fragment)):
        from_mapping(GenerateParams, {**PARAMS.__dict__, "classes": value}, key="generate")
    assert from_mapping(GenerateParams, {**PARAMS.__dict__, "classes": ["x", "y"]}, key="generate").classes == ("x", "y")


@pytest.mark.parametrize("seed", [-1, 2**63, 10**23])
def test_seed_outside_the_seed_range_is_refused(seed):
    """generate.seed outside 0..2**63-1 (e.g. 10**23, what `1e23` once meant) is refused naming the key."""
    with pytest.raises(InvalidParam, match=r"seed: expected an integer seed in 0\.\.2\*\*63-1"):
        dataclasses.replace(PARAMS, seed=seed)
