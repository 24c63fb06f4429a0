"""Tests for satgan.sample: sampling a shared model without DVC, never unpickling."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from satgan.errors import ModelFileError
from satgan.model import ModelConfig, build_discriminator, build_generator
from satgan.modelio import save_model
from satgan.sample import sample


@pytest.fixture()
def model_dir(tmp_path):
    """A tiny saved model folder (model.json + safetensors, with EMA weights)."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4)
    torch.manual_seed(0)
    g, d, ema = build_generator(cfg), build_discriminator(cfg), build_generator(cfg)
    save_model(tmp_path / "model", g, d, cfg, generator_ema=ema, params_hash="p", data_hash="d", step=1)
    return tmp_path / "model"


class _Evil:
    """A pickle payload that would create a marker file if it were ever unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_sample_is_seeded_and_batch_independent(model_dir):
    """Same seed gives the same tiles, and tile i does not depend on how many are drawn."""
    a = sample(model_dir, n=6, seed=3)
    b = sample(model_dir, n=6, seed=3)
    c = sample(model_dir, n=2, seed=3)
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b)
    torch.testing.assert_close(a[:2], c)
    assert float(a.min()) >= -1 and float(a.max()) <= 1


def test_cli_writes_a_grid_png(model_dir, tmp_path):
    """`python -m satgan.sample` writes an RGB grid of n tiles."""
    out = tmp_path / "grid.png"
    proc = subprocess.run(
        [sys.executable, "-m", "satgan.sample", "--model", str(model_dir), "--n", "8", "--nrow", "4", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    grid = np.asarray(Image.open(out))
    assert grid.ndim == 3 and grid.shape[2] == 3 and grid.shape[1] >= 4 * 32 and grid.shape[0] >= 2 * 32


def test_pickle_model_is_refused_without_unpickling(tmp_path):
    """A pickle-based .pt passed as --model exits 2 with a clear message and never runs its payload."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps(_Evil(marker)))
    proc = subprocess.run(
        [sys.executable, "-m", "satgan.sample", "--model", str(evil), "--out", str(tmp_path / "g.png")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "refusing to load a pickle-based file" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
    with pytest.raises(ModelFileError):
        sample(evil, n=1, seed=0)


def test_uniform_latent_model_is_sampled_from_u_minus1_1(tmp_path, monkeypatch):
    """A model card saying latent=uniform makes sample() draw U(-1, 1) latents, not N(0, 1)."""
    import satgan.sample as sample_module
    from satgan.model import sample_latent

    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, latent="uniform")
    save_model(tmp_path / "m", build_generator(cfg), build_discriminator(cfg), cfg, params_hash="p", data_hash="d", step=1)
    drawn = []
    monkeypatch.setattr(sample_module, "sample_latent", lambda *a, **k: drawn.append(sample_latent(*a, **k)) or drawn[-1])
    sample(tmp_path / "m", n=200, seed=0)
    assert drawn[0].min() >= -1 and drawn[0].max() <= 1 and abs(drawn[0].std().item() - 3**-0.5) < 0.05


def test_nan_weights_are_refused_in_one_line(model_dir, tmp_path):
    """`python -m satgan.sample` on a generator holding NaN exits 2 with one line naming the file, writing no grid."""
    from safetensors.torch import load_file, save_file

    for name in ("generator.safetensors", "generator_ema.safetensors"):
        state = load_file(model_dir / name)
        state["0.weight"][0, 0, 0, 0] = float("nan")
        save_file(state, str(model_dir / name))
    out = tmp_path / "g.png"
    proc = subprocess.run([sys.executable, "-m", "satgan.sample", "--model", str(model_dir), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "holds NaN or infinite values" in proc.stderr and not out.exists()


@pytest.fixture()
def conditional_dir(tmp_path):
    """A tiny acgan model folder with three classes."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, conditional="acgan", n_classes=3)
    torch.manual_seed(0)
    save_model(tmp_path / "cm", build_generator(cfg), build_discriminator(cfg), cfg, params_hash="p", data_hash="d",
               step=1, classes=["aGrass", "eForest", "dRiverLake"])
    return tmp_path / "cm"


def test_sample_makes_only_the_asked_class(conditional_dir):
    """classes=[eForest]: every tile is G(z, eForest); two classes alternate; none: every class in turn."""
    from satgan.model import sample_latent
    from satgan.modelio import load_generator

    g, card = load_generator(conditional_dir)
    z = sample_latent(ModelConfig.from_dict(card["architecture"]), 4, torch.Generator().manual_seed(3))
    with torch.no_grad():
        forest = g(z, torch.full((4,), 1)).clamp(-1, 1)
        mixed = g(z, torch.tensor([2, 0, 2, 0])).clamp(-1, 1)
        every = g(z, torch.tensor([0, 1, 2, 0])).clamp(-1, 1)
    assert torch.equal(sample(conditional_dir, 4, 3, classes=["eForest"]), forest)
    assert torch.equal(sample(conditional_dir, 4, 3, classes=["dRiverLake", "aGrass"]), mixed)
    assert torch.equal(sample(conditional_dir, 4, 3), every)


def test_cli_class_flag_writes_a_grid_and_refuses_unknown_classes(conditional_dir, tmp_path):
    """`satgan.sample --class eForest` writes a grid; an unknown class exits 2 with one line listing the model's classes."""
    out = tmp_path / "forest.png"
    cmd = [sys.executable, "-m", "satgan.sample", "--model", str(conditional_dir), "--n", "4", "--out", str(out)]
    proc = subprocess.run(cmd + ["--class", "eForest"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "of class eForest" in proc.stdout and out.is_file(), proc.stderr
    bad = subprocess.run(cmd + ["--class", "desert"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "--class: unknown class 'desert'; the model's classes are: aGrass, eForest, dRiverLake" in bad.stderr


def test_class_flag_on_an_unconditional_model_is_one_error(model_dir, tmp_path):
    """--class on an unconditional model: exit 2, one line saying the model has no classes, no grid written."""
    out = tmp_path / "g.png"
    proc = subprocess.run([sys.executable, "-m", "satgan.sample", "--model", str(model_dir), "--class", "eForest",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "--class: asks for classes ['eForest'], but this model is unconditional" in proc.stderr and not out.exists()


# ----------------------------------------------------------------- --out, --n, --nrow, --seed: one line each


def _run(argv, capsys):
    """Run `satgan sample argv` in-process as the console script does: (exit status, stderr lines)."""
    from satgan.cli import run_main
    from satgan.sample import main

    with pytest.raises(SystemExit) as info:
        run_main(lambda: main(argv), "satgan sample")
        raise SystemExit(0)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return info.value.code, err.strip().splitlines()


@pytest.fixture()
def repo(tmp_path, monkeypatch, model_dir, repo_root):
    """tmp_path as a repository root with the default `paths` section and a model in data/model."""
    import shutil

    import yaml

    doc = yaml.safe_load((repo_root / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"paths": doc["paths"]}))
    shutil.copytree(model_dir, tmp_path / "data" / "model")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("out", ["data/model/generator.safetensors", "grid.jpg", "grid", "grid.PNG.txt"])
def test_out_without_png_suffix_is_refused(repo, capsys, out):
    """--out must end in .png: the model file and a .jpg name are refused, nothing is written."""
    before = (repo / "data/model/generator.safetensors").read_bytes()
    code, err = _run(["--model", "data/model", "--n", "2", "--out", out], capsys)
    assert code == 2 and len(err) == 1 and "expected a file name ending in .png" in err[0]
    assert (repo / "data/model/generator.safetensors").read_bytes() == before
    assert not (repo / "grid.jpg").exists()


@pytest.mark.parametrize("out", ["data/model/grid.png", "data/eval/grid.png", "data/raw/tiles/x.PNG",
                                 "data/./samples/../eval/q.png"])
def test_out_inside_a_pipeline_output_folder_is_refused(repo, capsys, out):
    """--out inside any params.yaml `paths` folder (DVC outputs) is one line naming the folder."""
    code, err = _run(["--model", "data/model", "--n", "2", "--out", out], capsys)
    assert code == 2 and len(err) == 1 and "a DVC output" in err[0] and "paths." in err[0]
    assert not (repo / out).exists()


def test_out_inside_the_model_folder_is_refused_without_params(model_dir, tmp_path, monkeypatch, capsys):
    """Without a params.yaml the --model folder itself is still refused."""
    monkeypatch.chdir(tmp_path)
    code, err = _run(["--model", str(model_dir), "--n", "2", "--out", str(model_dir / "g.png")], capsys)
    assert code == 2 and len(err) == 1 and "the --model folder" in err[0]


def test_existing_non_png_is_not_overwritten(repo, capsys):
    """An existing file named .png that is not a PNG is refused and kept."""
    (repo / "notes.png").write_text("my notes")
    code, err = _run(["--model", "data/model", "--n", "2", "--out", "notes.png"], capsys)
    assert code == 2 and len(err) == 1 and "not a PNG; refusing to overwrite" in err[0]
    assert (repo / "notes.png").read_text() == "my notes"


def test_existing_png_is_replaced(repo, capsys):
    """An existing PNG is replaced by the new grid (atomically, no temp file left)."""
    Image.new("RGB", (3, 3)).save(repo / "old.png")
    code, _ = _run(["--model", "data/model", "--n", "2", "--nrow", "2", "--out", "old.png"], capsys)
    assert code == 0 and Image.open(repo / "old.png").size[0] > 3
    assert [p.name for p in repo.iterdir() if p.name.startswith(".old.png")] == []


def test_directory_out_is_one_line(repo, capsys):
    """--out naming a directory is one line."""
    (repo / "d.png").mkdir()
    code, err = _run(["--model", "data/model", "--n", "2", "--out", "d.png"], capsys)
    assert code == 2 and len(err) == 1 and "a directory" in err[0]


def test_unwritable_out_is_one_line(repo, capsys):
    """An --out in a folder that cannot be written is one line naming it."""
    import os

    locked = repo / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        code, err = _run(["--model", "data/model", "--n", "2", "--out", "locked/g.png"], capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2 and len(err) == 1 and "locked/g.png: cannot write" in err[0]


@pytest.mark.parametrize("flag, value", [("--seed", "100000000000000000000000"), ("--seed", "-1"), ("--nrow", "0"),
                                         ("--n", "100000000"), ("--n", "0"), ("--nrow", "x")])
def test_out_of_range_numbers_are_usage_errors(repo, capsys, flag, value):
    """--seed 10**23, --nrow 0, --n 100000000: argparse's usage error naming the flag, no traceback."""
    code, err = _run(["--model", "data/model", "--out", "g.png", flag, value], capsys)
    assert code == 2 and f"argument {flag}: expected an integer" in err[-1] and value[:20] in err[-1]
    assert not (repo / "g.png").exists()


def test_out_under_a_file_is_one_line(repo, capsys):
    """--out whose folder is a file is one line naming it."""
    (repo / "afile").write_text("x")
    code, err = _run(["--model", "data/model", "--n", "2", "--out", "afile/g.png"], capsys)
    assert code == 2 and len(err) == 1 and "afile is not a directory" in err[0]
