"""Tests for satgan.evaluate.metrics: SWD, colour histograms, memorization and diversity on known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from satgan.evaluate import metrics as M
from satgan.evaluate.judge import binomial_log_sf
from satgan.evaluate.metrics import clopper_pearson
from tiles import load_tiles


@pytest.fixture(scope="module")
def real(rsscn7_files):
    """Three disjoint random sets of real tiles: a, b, and b blurred."""
    order = np.random.default_rng(0).permutation(len(rsscn7_files))
    a = [rsscn7_files[i] for i in order[:100]]
    b = [rsscn7_files[i] for i in order[100:200]]
    return load_tiles(a), load_tiles(b), load_tiles(b, blur=1.0)


point_sets = st.integers(2, 12).flatmap(
    lambda d: st.tuples(
        arrays(np.float64, (20, d), elements=st.floats(-5, 5)),
        arrays(np.float64, (20, d), elements=st.floats(-5, 5)),
    )
)


@settings(max_examples=40, deadline=None)
@given(point_sets)
def test_sliced_wasserstein_is_symmetric_and_zero_on_identical_sets(ab):
    """SW(a, b) == SW(b, a) >= 0 and SW(a, a) == 0."""
    a, b = ab
    assert M.sliced_wasserstein(a, b, 16, 0) == pytest.approx(M.sliced_wasserstein(b, a, 16, 0))
    assert M.sliced_wasserstein(a, b, 16, 0) >= 0.0
    assert M.sliced_wasserstein(a, a, 16, 0) == 0.0


def test_swd_real_vs_real_far_below_real_vs_blurred(real):
    """SWD between two real samples is far below SWD between real and blurred real (finest level)."""
    a, b, blurred = real
    same = M.sliced_wasserstein_pyramid(a, b, 64, 7, 128, 2, seed=0)
    blur = M.sliced_wasserstein_pyramid(a, blurred, 64, 7, 128, 2, seed=0)
    assert set(same) == {"32px", "16px", "mean"}
    assert same["32px"] * 4 < blur["32px"] and same["mean"] < blur["mean"]


def test_laplacian_pyramid_levels():
    """A 64 px tile gives band-pass levels at 64 and 32 px and a 16 px low-pass level."""
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    assert [lvl.shape[-1] for lvl in M.laplacian_pyramid(x)] == [64, 32, 16]


def test_colour_histograms_separate_noise_from_real(real):
    """Identical sets have distance 0; real vs uniform noise is far larger than real vs real."""
    a, b, _ = real
    noise = np.random.default_rng(0).uniform(-1, 1, b.shape).astype(np.float32)
    assert M.colour_histogram_distance(a, a, 32)["mean"] == pytest.approx(0.0, abs=1e-12)
    assert M.colour_histogram_distance(a, b, 32)["mean"] * 3 < M.colour_histogram_distance(a, noise, 32)["mean"]


def test_nearest_l2_chunks_agree_with_brute_force(real):
    """Chunked nearest-neighbour search returns the brute-force nearest, whatever the chunk size."""
    a, b, _ = real
    brute = ((b[:10, None] - a[None]) ** 2).reshape(10, len(a), -1).sum(-1).argmin(1)
    idx, dist = M.nearest_l2(b[:10], a, k=3, chunk=7)
    assert np.array_equal(idx[:, 0], brute) and np.all(np.diff(dist, axis=1) >= 0)


def test_generator_returning_training_tiles_is_flagged(real):
    """Samples copied from the training set have SSIM 1 to a training tile; fresh real tiles do not."""
    train, fresh, _ = real
    copies = train[[3, 50, 77, 99]] + 0.0
    mem = M.memorization(copies, train, top_k=3, chunk=32, threshold=0.9)
    assert mem.fraction_above == 1.0 and list(mem.index) == [3, 50, 77, 99]
    assert M.memorization(fresh[:20], train, top_k=3, chunk=32, threshold=0.9).fraction_above < 0.2


def test_collapsed_generator_is_flagged(real):
    """One image repeated is flagged as collapsed; a second real sample is not."""
    a, b, _ = real
    collapsed = np.repeat(b[:1], 40, axis=0)
    assert M.diversity(a, collapsed, max_pairs=200, margin=0.2, seed=0).collapsed
    assert not M.diversity(a, b, max_pairs=200, margin=0.2, seed=0).collapsed


@given(st.integers(1, 300), st.data())
def test_clopper_pearson_brackets_the_proportion_symmetrically(n, data):
    """The interval holds k/n, mirrors for n-k, and its bounds put exactly alpha/2 in the binomial tails."""
    k = data.draw(st.integers(0, n))
    lo, hi = clopper_pearson(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    lo2, hi2 = clopper_pearson(n - k, n)
    assert math.isclose(lo, 1 - hi2, abs_tol=1e-9) and math.isclose(hi, 1 - lo2, abs_tol=1e-9)
    if k > 0:
        assert math.isclose(math.exp(binomial_log_sf(k, n, lo)), 0.025, rel_tol=1e-6)
    if k == 0:
        assert math.isclose(hi, 1 - 0.025 ** (1 / n), rel_tol=1e-9)


def test_clopper_pearson_of_six_of_eight():
    """6 correct of 8 (the judge on a 9-tile holdout) is 0.349-0.968: nothing can be concluded from it."""
    lo, hi = clopper_pearson(6, 8)
    assert (round(lo, 3), round(hi, 3)) == (0.349, 0.968)


# ------------------------------------------------------------------ class spreads

class_lists = st.integers(1, 8).flatmap(lambda k: st.tuples(st.just(k), st.lists(st.integers(0, k - 1), min_size=1, max_size=50)))


@given(class_lists)
def test_class_shares_count_each_class(case):
    """Shares are the class counts over the total: non-negative, summing to 1, one per class."""
    k, predicted = case
    shares = M.class_shares(np.array(predicted), k)
    assert shares.shape == (k,) and shares.sum() == pytest.approx(1.0)
    assert all(shares[c] == predicted.count(c) / len(predicted) for c in range(k))


@given(class_lists, class_lists)
def test_total_variation_is_a_bounded_symmetric_distance(a, b):
    """TV is in [0, 1], symmetric, 0 for a distribution against itself."""
    k = max(a[0], b[0])
    p, q = M.class_shares(np.array(a[1]), k), M.class_shares(np.array(b[1]), k)
    tv = M.total_variation(p, q)
    assert 0.0 <= tv <= 1.0 + 1e-12 and tv == pytest.approx(M.total_variation(q, p)) and M.total_variation(p, p) == 0.0


def test_total_variation_of_disjoint_classes_is_one():
    """All of one class against all of another: distance 1."""
    assert M.total_variation(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 1.0


def test_tv_sampling_noise_matches_simulated_samples():
    """The expected TV of two multinomial samples (n = 40 and 500 of 7 classes) agrees with 2000 simulated pairs within 10%."""
    p = np.array([0.3, 0.2, 0.15, 0.15, 0.1, 0.05, 0.05])
    rng = np.random.default_rng(0)
    sim = np.mean([M.total_variation(rng.multinomial(40, p) / 40, rng.multinomial(500, p) / 500) for _ in range(2000)])
    assert M.tv_sampling_noise(p, 40, 500) == pytest.approx(sim, rel=0.1)


tile_sets = st.integers(1, 4).flatmap(lambda n: st.tuples(
    arrays(np.float32, (n, 3, 16, 16), elements=st.floats(-1, 1, width=32)),
    arrays(np.float32, (n + 1, 3, 16, 16), elements=st.floats(-1, 1, width=32)),
))


@settings(max_examples=30, deadline=None)
@given(tile_sets)
def test_spectral_distance_is_symmetric_and_zero_on_identical_sets(ab):
    """Property: d(a, a) = 0 and d(a, b) = d(b, a) >= 0, per channel and on average."""
    a, b = ab
    assert M.spectral_distance(a, a)["mean"] == 0.0
    ab_, ba = M.spectral_distance(a, b), M.spectral_distance(b, a)
    assert ab_ == pytest.approx(ba) and ab_["mean"] >= 0.0


def test_radial_spectrum_has_one_value_per_channel_and_radius(real):
    """(N, 3, H, W) tiles give a (3, min(H, W) // 2) float64 spectrum."""
    spec = M.radial_log_spectrum(real[0][:5])
    assert spec.shape == (3, min(real[0].shape[-2:]) // 2) and spec.dtype == np.float64


def test_blurred_tiles_have_less_fine_texture(real):
    """Blurring lowers the power at the highest radii (fine texture) more than at the lowest (coarse layout)."""
    sharp, blurred = M.radial_log_spectrum(real[1]).mean(0), M.radial_log_spectrum(real[2]).mean(0)
    drop = sharp - blurred
    assert drop[-4:].mean() > 0.5 and drop[-4:].mean() > 5 * abs(drop[:2].mean())


def test_spectral_distance_real_vs_real_far_below_real_vs_blurred(real):
    """Two real sets are much closer in spectrum than a real set and a blurred one."""
    a, b, blurred = real
    assert M.spectral_distance(a, blurred)["mean"] > 4 * M.spectral_distance(a, b)["mean"]


def test_ssim_pairs_equal_scikit_image(real):
    """The batched SSIM equals scikit-image's structural_similarity pair by pair within 1e-6."""
    from skimage.metrics import structural_similarity

    a, b, blurred = real
    x, y = np.concatenate([a[:20], a[:20]]), np.concatenate([b[:20], blurred[:20]])
    ref = [structural_similarity(p, q, channel_axis=0, data_range=2.0, win_size=7) for p, q in zip(x, y)]
    assert np.abs(M.ssim_pairs(x, y) - np.array(ref)).max() < 1e-6


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 12).flatmap(lambda s: arrays(np.float32, (2, 2, 3, s, s), elements=st.floats(-1, 1, width=32))))
def test_ssim_pairs_equal_scikit_image_on_any_tiles(pair):
    """Property: on any tiles of 3 px or more (smaller windows included), the batched SSIM is scikit-image's within 1e-6."""
    from skimage.metrics import structural_similarity

    x, y = pair
    win = M.ssim_window(x.shape[2], x.shape[3])
    ref = [structural_similarity(p, q, channel_axis=0, data_range=2.0, win_size=win) for p, q in zip(x, y)]
    assert np.abs(M.ssim_pairs(x, y) - np.array(ref)).max() < 1e-6


def test_memorization_picks_the_best_ssim_of_the_l2_candidates(real):
    """memorization's batched re-ranking returns, per sample, the SSIM-best of its top-k L2 candidates."""
    a, b, _ = real
    mem = M.memorization(b[:10], a, top_k=4, chunk=7, threshold=0.9)
    idx, _ = M.nearest_l2(b[:10], a, 4, 7)
    for n in range(10):
        scores = [M.ssim(b[n], a[j]) for j in idx[n]]
        assert mem.index[n] == idx[n, int(np.argmax(scores))] and mem.ssim[n] == pytest.approx(max(scores), abs=1e-12)


def test_diversity_summary_is_the_metrics_json_block():
    """Diversity.summary() gives both mean SSIMs and the collapse flag as 0/1, as metrics.json records them."""
    assert M.Diversity(0.9, 0.2, 0.2).summary() == {"fake_mean_ssim": 0.9, "real_mean_ssim": 0.2, "collapsed": 1}
    assert M.Diversity(0.3, 0.2, 0.2).summary()["collapsed"] == 0
