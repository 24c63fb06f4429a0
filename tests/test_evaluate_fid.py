"""Tests for satgan.evaluate.fid: FID/KID math, and the whole path offline with a locally built InceptionV3 weights file."""

from __future__ import annotations

import math
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from satgan.errors import DataError, ParamsError
from satgan.evaluate import fid


def reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    """torch-fidelity 0.4's fid_statistics_to_metric, written out (its module imports torchvision)."""
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    diff = a.mean(0) - b.mean(0)
    tr_covmean = np.sum(np.sqrt(np.linalg.eigvals(s1.dot(s2)).astype("complex128")).real)
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 40), st.integers(2, 40), st.integers(2, 12), st.integers(0, 2**32 - 1))
def test_frechet_distance_matches_torch_fidelity(n, m, d, seed):
    """FID equals torch-fidelity's formula on random feature sets, whichever of its two forms is used."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, d)), rng.normal(size=(m, d)) * 1.3 + 0.2
    assert math.isclose(fid.frechet_distance(a, b), reference_fid(a, b), rel_tol=1e-6, abs_tol=1e-6)


def test_frechet_distance_of_a_set_with_itself_is_zero_with_fewer_tiles_than_features():
    """FID(x, x) is 0 up to rounding for 8 points in 2048 dimensions (a rank-deficient covariance)."""
    x = np.random.default_rng(0).normal(size=(8, 2048))
    assert abs(fid.frechet_distance(x, x)) < 1e-9 * np.trace(np.cov(x, rowvar=False))


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    """KID of two draws from one Gaussian is near 0 (unbiased), and clearly positive for a shifted one."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    same, _ = fid.kernel_inception_distance(a, b, 20, 100, seed=0)
    shifted, _ = fid.kernel_inception_distance(a, b + 1.0, 20, 100, seed=0)
    assert abs(same) < 0.05 < shifted


def test_kid_refuses_a_subset_larger_than_a_set():
    """A subset size above the smaller set (or below 2) is a ValueError."""
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match="subset_size"):
        fid.kernel_inception_distance(x, x, 2, 4, 0)


# ----------------------------------------------------------------- the extractor, offline


def _has_torch_fidelity() -> bool:
    try:
        fid.inception_module()
    except ModuleNotFoundError:
        return False
    return True


# FID is opt-in (requirements.txt installs nothing that cannot be imported): what needs torch-fidelity's InceptionV3
# runs where it is installed and is skipped, saying how to add it, where it is not.
needs_torch_fidelity = pytest.mark.skipif(not _has_torch_fidelity(),
                                          reason=f"FID is opt-in and torch-fidelity is not installed ({fid.INSTALL_HINT})")


class _Opaque:
    """An object torch's weights-only unpickler refuses."""


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """torch-fidelity's InceptionV3 with random weights, saved as the state-dict .pth the library loads (skipped without
    torch-fidelity, :data:`needs_torch_fidelity`).

    BatchNorm running statistics are set from one batch, so activations keep a usable scale
    through the ~90 layers (with the stock statistics the 2048-d features shrink to ~1e-7).
    """
    if not _has_torch_fidelity():
        pytest.skip(f"FID is opt-in and torch-fidelity is not installed ({fid.INSTALL_HINT})")
    root = tmp_path_factory.mktemp("inception")
    cls = fid.inception_module().FeatureExtractorInceptionV3

    class Random(cls):
        def load_state_dict(self, *args, **kwargs):  # keep the random initialisation
            return None

    torch.save({}, root / "empty.pth")
    net = Random("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(root / "empty.pth"))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average: after one batch, that batch's statistics
            m.reset_running_stats()
    net.train()
    with torch.no_grad():
        net(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
    path = root / "inception-random.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tiles() -> tuple[np.ndarray, np.ndarray]:
    """3 'real' and 3 'fake' 32 px tiles in [-1, 1] (two different textures)."""
    rng = np.random.default_rng(0)
    real = np.tanh(rng.normal(size=(3, 3, 32, 32))).astype(np.float32)
    fake = (0.5 * rng.uniform(-1, 1, size=(3, 3, 32, 32)) + 0.3).astype(np.float32)
    return real, fake


def test_a_local_weights_file_gives_finite_fid_kid_and_zero_for_identical_sets(weights, tiles):
    """With a weights file of the right architecture FID/KID are finite numbers, FID(x, x) ~ 0 << FID(x, y)."""
    real, fake = tiles
    extractor = fid.load_extractor(weights)
    fr, ff = fid.inception_features(real, extractor), fid.inception_features(fake, extractor)
    assert fr.shape == (3, 2048) and np.isfinite(fr).all() and fr.std() > 1e-3
    between = fid.frechet_distance(fr, ff)
    kid, _ = fid.kernel_inception_distance(fr, ff, fid.KID_SUBSETS, 3, seed=0)
    assert math.isfinite(between) and between > 0 and math.isfinite(kid)
    assert abs(fid.frechet_distance(fr, fr)) < 1e-6 * between


def test_a_weights_path_runs_the_whole_computation(weights, tiles):
    """fid_kid with a path records finite FID and KID, the subset size and the weights used."""
    got = fid.fid_kid(*tiles, str(weights), seed=0)
    assert isinstance(got["fid"], float) and isinstance(got["kid"], float) and math.isfinite(got["fid"] + got["kid"])
    assert got["kid_subset_size"] == 3 and got["n_real"] == got["n_fake"] == 3 and got["weights"] == str(weights)


def test_auto_reads_the_hub_cache_without_fetching(weights, tmp_path, monkeypatch):
    """auto finds the weights where torch's hub cache keeps torch-fidelity's file, and never opens a connection."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = fid.cached_weights_path(fid.weights_url())
    cached.parent.mkdir(parents=True)
    shutil.copy(weights, cached)

    def refuse(*args, **kwargs):
        raise AssertionError("auto opened a connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert fid.resolve_weights("auto") == cached
    assert cached.name == "weights-inception-2015-12-05-6726825d.pth"


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/weights-inception-2015-12-05-6726825d.pth"
@needs_torch_fidelity
def test_auto_without_a_network_records_not_computed_with_the_reason(tiles, tmp_path, monkeypatch):
    """auto with nothing cached and no server: not computed, the reason names the URL, one warning, no file left."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = _closed_port_url()
    monkeypatch.setattr(fid, "weights_url", lambda: url)
    warnings = []
    got = fid.fid_kid(*tiles, "auto", seed=0, warn=warnings.append)
    assert got["fid"] == got["kid"] == "not computed" and f"cannot fetch the Inception weights from {url}" in got["reason"]
    assert len(warnings) == 1 and not list((tmp_path / "torch").rglob("*.pth"))
@needs_torch_fidelity
def test_stage_without_a_network_exits_0_with_one_warning(repo_root, tmp_path):
    """stages/evaluate.py with inception_weights auto and no server: exit 0, one warning line, fid_kid.json says why."""
    import json

    import yaml

    sys.path.insert(0, str(repo_root / "tests"))
    from class_helpers import write_sample_classes  # noqa: E402
    from satgan.arrays import save_array_with_sidecar
    from test_evaluate_stage import _params  # noqa: E402 (the small evaluate params of the evaluate tests)
    from tiles import load_tiles  # noqa: E402

    files = sorted((repo_root.parent / "shared" / "data" / "rsscn7").rglob("*.jpg"))
    if not files:
        pytest.skip("real imagery not found in ../shared/data")
    t = load_tiles(files[::9][:30])
    for name, arr in (("prepared/tiles.npy", t[:12]), ("prepared/holdout.npy", t[12:21])):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        save_array_with_sidecar(tmp_path / name, arr, {})
    (tmp_path / "samples").mkdir()
    save_array_with_sidecar(tmp_path / "samples" / "samples.npy", t[21:],
                            {"model": {"step": 1}, "architecture": {"image_size": 32}})
    write_sample_classes(tmp_path / "samples")
    params = _params(repo_root, tmp_path, inception_weights="auto")
    code = (f"import runpy, sys; import satgan.evaluate.fid as f; f.weights_url = lambda: {_closed_port_url()!r}; "
            f"sys.argv = ['evaluate.py', '--prepared', {str(tmp_path / 'prepared')!r}, '--samples', "
            f"{str(tmp_path / 'samples')!r}, '--out', {str(tmp_path / 'eval')!r}, '--params', {str(params)!r}]; "
            f"runpy.run_path({str(repo_root / 'stages' / 'evaluate.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "TORCH_HOME": str(tmp_path / "torch")})
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("evaluate: warning: FID/KID not computed: cannot fetch")
    record = json.loads((tmp_path / "eval" / "fid_kid.json").read_text())
    assert record["fid"] == "not computed" and "fid" not in json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert yaml.safe_load(params.read_text())["evaluate"]["inception_weights"] == "auto"


def test_off_is_recorded_with_the_reason(tiles):
    """inception_weights "" records not computed and says how to turn it on, without loading anything."""
    got = fid.fid_kid(*tiles, "", seed=0)
    assert got["fid"] == "not computed" and "auto" in got["reason"]
def test_without_torch_fidelity_a_set_weights_key_says_how_to_add_it(tmp_path, monkeypatch):
    """FID is opt-in: without torch-fidelity a weights path is one ParamsError naming the key and the install line,
    and auto is 'not available' with the same line."""
    def absent():
        raise ModuleNotFoundError("torch_fidelity")

    monkeypatch.setattr(fid, "inception_module", absent)
    with pytest.raises(ParamsError, match=f"{fid.KEY} is set .* torch-fidelity is not installed: {re.escape(fid.INSTALL_HINT)}"):
        fid.resolve_weights(str(tmp_path / "w.pth"))
    with pytest.raises(fid.WeightsUnavailable, match=re.escape(fid.INSTALL_HINT)):
        fid.resolve_weights(fid.AUTO)


@needs_torch_fidelity
def test_a_missing_path_names_the_key(tmp_path, tiles):
    """A set but missing inception_weights path is a ParamsError naming evaluate.inception_weights."""
    with pytest.raises(ParamsError, match="evaluate.inception_weights: .*nope.pth: file not found"):
        fid.fid_kid(*tiles, str(tmp_path / "nope.pth"), seed=0)
@needs_torch_fidelity
def test_a_file_holding_more_than_tensors_is_refused_unpickled(tmp_path, tiles):
    """A .pth with an arbitrary object is refused by the weights-only unpickler, naming the file."""
    path = tmp_path / "evil.pth"
    torch.save({"x": _Opaque()}, path)
    with pytest.raises(DataError, match="evil.pth: not torch-fidelity's InceptionV3 weights"):
        fid.fid_kid(*tiles, str(path), seed=0)
@needs_torch_fidelity
def test_weights_of_another_network_are_refused(tmp_path, tiles):
    """A state dict of another architecture is a DataError naming the file."""
    path = tmp_path / "other.pth"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(DataError, match="other.pth: not torch-fidelity's InceptionV3 weights"):
        fid.fid_kid(*tiles, str(path), seed=0)
@needs_torch_fidelity
def test_a_text_file_is_refused_naming_it(tmp_path, tiles):
    """inception_weights pointing at a text file is one DataError naming the key, the file and its first bytes."""
    path = tmp_path / "notes.txt"
    path.write_text("hello, these are not weights\n")
    with pytest.raises(DataError, match=r"evaluate\.inception_weights: .*notes\.txt: not a weights file: .*b'hello, t'"):
        fid.fid_kid(*tiles, str(path), seed=0)
@needs_torch_fidelity
def test_a_pickle_named_safetensors_is_refused_without_unpickling(tmp_path, tiles):
    """A pickle renamed .safetensors fails the safetensors header check; its payload never runs."""
    import pickle

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "inception.safetensors"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DataError, match=r"evaluate\.inception_weights: .*inception\.safetensors: not a safetensors file"):
        fid.fid_kid(*tiles, str(path), seed=0)
    assert not marker.exists()


def test_a_fifo_weights_path_is_refused_not_waited_on(tmp_path, tiles):
    """A FIFO given as the weights is refused at once, naming it."""
    import os

    path = tmp_path / "w.pth"
    os.mkfifo(path)
    with pytest.raises((DataError, ParamsError), match="w.pth"):
        fid.fid_kid(*tiles, str(path), seed=0)
