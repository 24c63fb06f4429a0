"""Tests for satgan.modelio: safetensors model files, model.json card, pickle refusal."""

from __future__ import annotations

import json
import pickle
import re

import pytest
import torch

from satgan.errors import ModelFileError
from satgan.model import ModelConfig, build_discriminator, build_generator
from satgan.modelio import CARD_FORMAT, load_discriminator, load_generator, save_model

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


def _card(tmp_path) -> dict:
    return json.loads((tmp_path / "model.json").read_text())


def _write_card(tmp_path, card: dict) -> None:
    (tmp_path / "model.json").write_text(json.dumps(card))


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda c: c["architecture"].update(nz="abc"), "model.json: architecture.nz: expected an integer, got str 'abc'"),
    (lambda c: c.update(nz="abc"), "model.json: nz: expected an integer, got str 'abc'"),
    (lambda c: c.update(nz=9), "model.json: nz: expected architecture.nz (8), got 9"),
    (lambda c: c["architecture"].update(ngf=10_000_000), "model.json: architecture.ngf: expected 1 <= ngf <= 256"),
    (lambda c: c.pop("step"), "model.json: step: missing key"),
    (lambda c: c["architecture"].pop("ndf"), "model.json: architecture.ndf: missing key"),
    (lambda c: c.update(ema="yes"), "model.json: ema: expected true or false"),
    (lambda c: c.update(step=-3), "model.json: step: expected >= 0, got -3"),
    (lambda c: c.update(format="satgan-dcgan/1"), "older satgan that did not record the latent distribution"),
])
def test_foreign_card_is_one_clear_error(tmp_path, edit, fragment):
    """A malformed, out-of-bounds or old model.json gives one ModelFileError line naming the file and field."""
    _save(tmp_path)
    card = _card(tmp_path)
    edit(card)
    _write_card(tmp_path, card)
    with pytest.raises(ModelFileError) as info:
        load_generator(tmp_path)
    assert fragment in str(info.value) and str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_card_that_is_not_json_is_a_model_file_error(tmp_path):
    """model.json holding garbage is reported as not valid JSON."""
    _save(tmp_path)
    (tmp_path / "model.json").write_bytes(b"\xff{nope")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_generator(tmp_path)


def test_architecture_disagreeing_with_the_weights_is_refused_before_building(tmp_path, monkeypatch):
    """nz in the card differing from the weights: refused from the safetensors header, no network built."""
    _save(tmp_path)
    card = _card(tmp_path)
    card["architecture"]["nz"] = card["nz"] = 200
    _write_card(tmp_path, card)
    import satgan.modelio

    def meta_only(cfg):
        net = build_generator(cfg)
        if not next(net.parameters()).is_meta:
            pytest.fail("allocated a generator for a card that disagrees with its weights")
        return net

    monkeypatch.setattr(satgan.modelio, "build_generator", meta_only)
    with pytest.raises(ModelFileError, match=r"tensor '0.weight' has shape \[8, 16, 4, 4\] but the architecture .* needs \[200, 16, 4, 4\]"):
        load_generator(tmp_path)


def test_missing_tensor_is_named(tmp_path):
    """A weights file lacking a tensor the architecture needs names that tensor."""
    g, _, _ = _save(tmp_path, ema=False)
    state = {k: v for k, v in g.state_dict().items() if k != "1.running_mean"}
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "generator.safetensors"))
    with pytest.raises(ModelFileError, match="missing tensor '1.running_mean'"):
        load_generator(tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, bad):
    """A generator holding NaN or infinity is refused with the file and tensor named."""
    g, _, _ = _save(tmp_path, ema=False)
    with torch.no_grad():
        g[0].weight[0, 0, 0, 0] = bad
    save_model(tmp_path, g, build_discriminator(CFG), CFG, params_hash="p", data_hash="h", step=7)
    with pytest.raises(ModelFileError, match=r"generator.safetensors: tensor '0.weight' holds NaN or infinite values"):
        load_generator(tmp_path)


def test_card_records_the_latent_distribution(tmp_path):
    """model.json's architecture says which latent distribution G was trained on."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, latent="uniform")
    save_model(tmp_path, build_generator(cfg), build_discriminator(cfg), cfg, params_hash="p", data_hash="h", step=1)
    assert _card(tmp_path)["architecture"]["latent"] == "uniform" and _card(tmp_path)["format"] == CARD_FORMAT
    _, card = load_generator(tmp_path)
    assert ModelConfig.from_dict(card["architecture"]).latent == "uniform"


# ----------------------------------------------------------------- which code trained the model


def _git(cwd, *args):
    import subprocess

    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    """A git repo with a committed params.yaml and dvc.lock."""
    for name in ("params.yaml", "dvc.lock"):
        (tmp_path / name).write_text("a: 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "base")
    return tmp_path


def test_git_rev_is_dirty_for_changed_code_but_not_for_dvc_lock(repo):
    """A rewritten dvc.lock (DVC does that mid-repro) keeps the rev clean; a changed params.yaml marks it dirty."""
    from satgan.modelio import git_revision, git_state

    (repo / "dvc.lock").write_text("a: 2\n")
    state = git_state(repo, env={})
    assert state["dirty_paths"] == [] and git_revision(repo, state=state) == state["rev"]
    (repo / "params.yaml").write_text("a: 2\n")
    state = git_state(repo, env={})
    assert state["dirty_paths"] == ["params.yaml"] and git_revision(state=state) == state["rev"] + "-dirty"


def test_under_dvc_exp_run_git_rev_names_the_experiments_ref(repo):
    """With DVC's DVC_EXP_NAME and DVC_EXP_BASELINE_REV, git_rev is refs/exps/<base[:2]>/<base[2:]>/<name>."""
    from satgan.modelio import git_revision, git_state

    (repo / "params.yaml").write_text("a: 2\n")
    base = git_state(repo, env={})["rev"]
    state = git_state(repo, env={"DVC_EXP_NAME": "lusty-pike", "DVC_EXP_BASELINE_REV": base})
    assert state["experiment"] == "lusty-pike" and state["rev"] == base and state["dirty_paths"] == ["params.yaml"]
    assert git_revision(state=state) == f"refs/exps/{base[:2]}/{base[2:]}/lusty-pike"


def test_save_model_writes_the_human_readable_card(tmp_path):
    """save_model writes MODEL_CARD.md next to model.json, 'not evaluated yet'."""
    _save(tmp_path)
    assert "not evaluated yet" in (tmp_path / "MODEL_CARD.md").read_text()


def test_spectral_norm_discriminator_round_trips_through_safetensors(tmp_path):
    """A spectrally normalized D (weights and power-iteration vectors) saves and loads back to the same outputs."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, spectral_norm=True)
    torch.manual_seed(0)
    d = build_discriminator(cfg)
    x = torch.randn(3, 3, 32, 32)
    d(x)  # a training-mode forward moves the power-iteration vectors away from their init
    save_model(tmp_path, build_generator(cfg), d, cfg, params_hash="p", data_hash="h", step=1)
    assert _card(tmp_path)["architecture"]["spectral_norm"] is True
    loaded, _ = load_discriminator(tmp_path)
    assert loaded.state_dict().keys() == d.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), d.state_dict().values()))
    assert torch.equal(loaded(x), d.eval()(x))


def test_format_2_card_loads_as_without_spectral_norm(tmp_path):
    """A satgan-dcgan/2 card (no architecture.spectral_norm) still loads: its D was built without it."""
    _, d, _ = _save(tmp_path)
    card = _card(tmp_path)
    card["format"] = "satgan-dcgan/2"
    del card["architecture"]["spectral_norm"]
    _write_card(tmp_path, card)
    loaded, loaded_card = load_discriminator(tmp_path)
    assert loaded_card["upgraded_from"] == "satgan-dcgan/2" and loaded_card["architecture"]["spectral_norm"] is False
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), d.eval()(x))


def test_format_3_card_loads_as_without_dropout_at_sampling(tmp_path):
    """A satgan-dcgan/3 card (no architecture.g_dropout_at_sampling) loads as false: its G dropped out in training only."""
    g, _, g_ema = _save(tmp_path)
    card = _card(tmp_path)
    card["format"] = "satgan-dcgan/3"
    del card["architecture"]["g_dropout_at_sampling"]
    _write_card(tmp_path, card)
    loaded, loaded_card = load_generator(tmp_path)
    assert loaded_card["upgraded_from"] == "satgan-dcgan/3"
    assert loaded_card["architecture"]["g_dropout_at_sampling"] is False
    z = torch.randn(2, 8, 1, 1)
    assert torch.equal(loaded(z), g_ema.eval()(z))


def test_avg_pool_d_and_g_layer_noise_round_trip_through_model_json(tmp_path):
    """model.json records downsample and g_layer_noise; G and D rebuilt from it load and match the saved nets."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, downsample="avg_pool", g_layer_noise=True)
    torch.manual_seed(0)
    g, d = build_generator(cfg), build_discriminator(cfg)
    save_model(tmp_path, g, d, cfg, params_hash="p", data_hash="h", step=3)
    arch = _card(tmp_path)["architecture"]
    assert (arch["downsample"], arch["g_layer_noise"]) == ("avg_pool", True)
    loaded_g, card = load_generator(tmp_path)
    loaded_d, _ = load_discriminator(tmp_path)
    assert ModelConfig.from_dict(card["architecture"]) == cfg
    z, x = torch.randn(2, 8, 1, 1), torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded_g(z), g.eval()(z)) and torch.equal(loaded_d(x), d.eval()(x))


def test_format_4_card_loads_as_strided_d_without_g_layer_noise(tmp_path):
    """A satgan-dcgan/4 card (no downsample, no g_layer_noise) loads as strided and false: its nets were built so."""
    g, d, g_ema = _save(tmp_path)
    card = _card(tmp_path)
    card["format"] = "satgan-dcgan/4"
    del card["architecture"]["downsample"], card["architecture"]["g_layer_noise"]
    _write_card(tmp_path, card)
    loaded_g, loaded_card = load_generator(tmp_path)
    loaded_d, _ = load_discriminator(tmp_path)
    assert loaded_card["upgraded_from"] == "satgan-dcgan/4" and loaded_card["format"] == CARD_FORMAT
    assert (loaded_card["architecture"]["downsample"], loaded_card["architecture"]["g_layer_noise"]) == ("strided", False)
    z, x = torch.randn(2, 8, 1, 1), torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded_g(z), g_ema.eval()(z)) and torch.equal(loaded_d(x), d.eval()(x))


def test_texture_switches_round_trip_through_model_json(tmp_path):
    """model.json records g_bilinear_top, g_pixel_noise and d_highpass; the rebuilt G (its noise scales) and D match."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, g_bilinear_top=2, g_pixel_noise=2, d_highpass=True)
    torch.manual_seed(0)
    g, d = build_generator(cfg), build_discriminator(cfg)
    with torch.no_grad():
        for q in g.parameters():
            if q.dim() == 4 and q.shape[0] == 1:  # the pixel-noise scales (1, C, 1, 1)
                q.uniform_(0.1, 1.0)
    save_model(tmp_path, g, d, cfg, params_hash="p", data_hash="h", step=3)
    arch = _card(tmp_path)["architecture"]
    assert (arch["g_bilinear_top"], arch["g_pixel_noise"], arch["d_highpass"]) == (2, 2, True)
    loaded_g, card = load_generator(tmp_path)
    loaded_d, _ = load_discriminator(tmp_path)
    assert ModelConfig.from_dict(card["architecture"]) == cfg
    z, x = torch.randn(2, 8, 1, 1), torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    expected = g.eval()(z)
    torch.manual_seed(1)
    assert torch.equal(loaded_g(z), expected) and torch.equal(loaded_d(x), d.eval()(x))


def test_format_5_card_loads_without_the_texture_switches(tmp_path):
    """A satgan-dcgan/5 card (before g_bilinear_top, g_pixel_noise, d_highpass) loads as 0, 0, false: its nets were built so."""
    g, d, g_ema = _save(tmp_path)
    card = _card(tmp_path)
    card["format"] = "satgan-dcgan/5"
    for key in ("g_bilinear_top", "g_pixel_noise", "d_highpass"):
        del card["architecture"][key]
    _write_card(tmp_path, card)
    loaded_g, loaded_card = load_generator(tmp_path)
    loaded_d, _ = load_discriminator(tmp_path)
    assert loaded_card["upgraded_from"] == "satgan-dcgan/5" and loaded_card["format"] == CARD_FORMAT
    arch = loaded_card["architecture"]
    assert (arch["g_bilinear_top"], arch["g_pixel_noise"], arch["d_highpass"]) == (0, 0, False)
    z, x = torch.randn(2, 8, 1, 1), torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded_g(z), g_ema.eval()(z)) and torch.equal(loaded_d(x), d.eval()(x))


# ----------------------------------------------------------------- class-conditional models

CLASSES = ["forest", "river", "town"]


def _save_conditional(tmp_path, conditional="projection", **kw):
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, conditional=conditional, n_classes=3, **kw)
    torch.manual_seed(0)
    g, d = build_generator(cfg), build_discriminator(cfg)
    save_model(tmp_path, g, d, cfg, params_hash="p", data_hash="h", step=2, classes=CLASSES)
    return cfg, g, d


@pytest.mark.parametrize("conditional", ["projection", "acgan"])
def test_conditional_model_round_trips_with_its_classes(tmp_path, conditional):
    """model.json records conditional, n_classes and the class names; G and D load back to the same outputs."""
    cfg, g, d = _save_conditional(tmp_path, conditional, spectral_norm=True)
    card = _card(tmp_path)
    assert (card["architecture"]["conditional"], card["architecture"]["n_classes"], card["classes"]) == (conditional, 3, CLASSES)
    loaded, loaded_card = load_generator(tmp_path)
    z, y = torch.randn(3, 8, 1, 1), torch.tensor([2, 0, 1])
    assert loaded_card["classes"] == CLASSES and torch.equal(loaded(z, y), g.eval()(z, y))
    loaded_d, _ = load_discriminator(tmp_path)
    x = torch.randn(3, 3, 32, 32)
    out, ref = loaded_d(x, y), d.eval()(x, y)
    assert all(torch.equal(a, b) for a, b in zip(out, ref)) if conditional == "acgan" else torch.equal(out, ref)


def test_unconditional_card_has_no_classes(tmp_path):
    """An unconditional model's card says conditional 'none', n_classes 0 and classes []."""
    _save(tmp_path)
    card = _card(tmp_path)
    assert (card["architecture"]["conditional"], card["architecture"]["n_classes"], card["classes"]) == ("none", 0, [])


def test_format_4_card_loads_as_unconditional(tmp_path):
    """A satgan-dcgan/4 card (before conditional models) loads as conditional 'none' with no classes."""
    g, _, g_ema = _save(tmp_path)
    card = _card(tmp_path)
    card["format"] = "satgan-dcgan/4"
    for key in ("conditional", "n_classes"):
        del card["architecture"][key]
    del card["classes"]
    _write_card(tmp_path, card)
    loaded, loaded_card = load_generator(tmp_path)
    assert loaded_card["upgraded_from"] == "satgan-dcgan/4" and loaded_card["classes"] == []
    assert (loaded_card["architecture"]["conditional"], loaded_card["architecture"]["n_classes"]) == ("none", 0)
    z = torch.randn(2, 8, 1, 1)
    assert torch.equal(loaded(z), g_ema.eval()(z))


@pytest.mark.parametrize("conditional", ["projection", "acgan"])
def test_class_count_disagreeing_with_the_weights_is_one_line(tmp_path, conditional):
    """A card claiming 5 classes for weights built for 3 is refused from the header, naming both counts."""
    _save_conditional(tmp_path, conditional)
    card = _card(tmp_path)
    card["architecture"]["n_classes"] = 5
    card["classes"] = CLASSES + ["field", "lake"]
    _write_card(tmp_path, card)
    for load in (load_generator, load_discriminator):
        with pytest.raises(ModelFileError) as info:
            load(tmp_path)
        msg = str(info.value)
        assert "the weights are for 3 classes" in msg and "n_classes=5" in msg and "\n" not in msg


def test_conditional_card_on_unconditional_weights_is_refused(tmp_path):
    """Weights without a class embedding under a card saying projection: one line saying the weights are unconditional."""
    _save(tmp_path)
    card = _card(tmp_path)
    card["architecture"].update(conditional="projection", n_classes=3)
    card["classes"] = CLASSES
    _write_card(tmp_path, card)
    with pytest.raises(ModelFileError, match="the weights are for an unconditional model .* n_classes=3"):
        load_generator(tmp_path)


@pytest.mark.parametrize(("classes", "fragment"), [
    (["forest", "river"], "model.json: classes: expected 3 class names (architecture.n_classes, conditional 'projection')"),
    (["forest", "river", "river"], "model.json: classes: expected distinct class names"),
    ("forest", "model.json: classes: expected a list"),
])
def test_card_classes_must_match_the_class_count(tmp_path, classes, fragment):
    """The card's class names must be n_classes distinct strings."""
    _save_conditional(tmp_path)
    card = _card(tmp_path)
    card["classes"] = classes
    _write_card(tmp_path, card)
    with pytest.raises(ModelFileError, match=re.escape(fragment)):
        load_generator(tmp_path)


def test_class_indices_resolve_names_and_refuse_unknown_ones():
    """Names -> label indices in the order given; an unknown name lists the model's classes; unconditional refuses."""
    from satgan.errors import SatganError
    from satgan.modelio import class_indices, spread_labels

    card = {"classes": CLASSES, "architecture": {"conditional": "acgan"}}
    assert class_indices(card, ["town", "forest"], "--class") == [2, 0] and class_indices(card, None, "--class") == [0, 1, 2]
    with pytest.raises(SatganError, match="--class: unknown class 'desert'; the model's classes are: forest, river, town"):
        class_indices(card, ["desert"], "--class")
    with pytest.raises(SatganError, match="named more than once"):
        class_indices(card, ["town", "town"], "--class")
    plain = {"classes": [], "architecture": {"conditional": "none"}}
    assert class_indices(plain, None, "generate.classes") == []
    with pytest.raises(SatganError, match="generate.classes: asks for classes .* this model is unconditional"):
        class_indices(plain, ["forest"], "generate.classes")
    assert spread_labels(7, [2, 0]).tolist() == [2, 0, 2, 0, 2, 0, 2]


def test_safetensors_files_follow_the_umask(tmp_path):
    """generator/discriminator .safetensors get 0666 minus the umask, like model.json, not a forced 0600."""
    import os

    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4)
    old = os.umask(0o022)
    try:
        save_model(tmp_path / "m", build_generator(cfg), build_discriminator(cfg), cfg, params_hash="p", data_hash="d", step=1)
    finally:
        os.umask(old)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "m").iterdir()}
    assert modes["generator.safetensors"] == modes["discriminator.safetensors"] == modes["model.json"] == "0o644"
    g, _ = load_generator(tmp_path / "m")  # the bytes path writes the same format
    assert isinstance(g, torch.nn.Module)


def test_saved_g_with_pixel_noise_samples_the_same_tiles_for_the_same_seed(tmp_path):
    """A loaded G with pixel noise (non-zero scales): satgan.sample gives the same tiles for a seed, others for another."""
    from satgan.sample import sample

    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, g_pixel_noise=2)
    torch.manual_seed(0)
    g = build_generator(cfg)
    with torch.no_grad():
        for q in g.parameters():
            if q.dim() == 4 and q.shape[0] == 1:  # the pixel-noise scales (1, C, 1, 1)
                q.fill_(0.5)
    save_model(tmp_path, g, build_discriminator(cfg), cfg, params_hash="p", data_hash="h", step=1)
    a, b, c = sample(tmp_path, 4, seed=3), sample(tmp_path, 4, seed=3), sample(tmp_path, 4, seed=4)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_git_state_has_exactly_the_keys_checkpoints_accept(repo):
    """git_state's dict has the keys GIT_STATE_KEYS names, in that order (train checkpoints refuse any other)."""
    from satgan.modelio import GIT_STATE_KEYS, git_state

    assert tuple(git_state(repo, env={})) == GIT_STATE_KEYS
