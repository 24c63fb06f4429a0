"""Tests for satgan.evaluate.judge: the classifier two-sample test and the GAN-test class classifier against known answers."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from satgan.evaluate.judge import (
    area_equivalent,
    assign_folds,
    binomial_p_value,
    box_groups,
    brier_score,
    classifier_subset,
    classify,
    judge,
    log_loss,
    roc_auc,
    train_classifier,
)
from satgan.evaluate.params import ClassifierParams, JudgeParams
from satgan.params import InvalidParam
from tiles import load_tiles

CFG = JudgeParams(folds=3, seeds=1, epochs=10, batch_size=16, lr=2e-3, width=16, workers=1)




@pytest.fixture(scope="module")
def halves(rsscn7_files):
    """Two disjoint random halves of the 280 real tiles (same distribution), and the second half blurred."""
    order = np.random.default_rng(0).permutation(len(rsscn7_files))
    a = [rsscn7_files[i] for i in order[:140]]
    b = [rsscn7_files[i] for i in order[140:]]
    return load_tiles(a), load_tiles(b), load_tiles(b, blur=1.0)


def test_real_vs_real_is_chance(halves):
    """Two samples of the same real distribution: accuracy near 0.5 and a large p-value."""
    res = judge(halves[0], halves[1], CFG, seed=0)
    assert 0.35 <= res.accuracy <= 0.65 and res.p_value > 0.05


def test_real_vs_noise_is_caught(halves):
    """Real tiles against Gaussian noise: accuracy ~1, a vanishing p-value, log-loss far below chance's ln 2."""
    noise = np.clip(np.random.default_rng(1).normal(0, 0.5, halves[1].shape), -1, 1).astype(np.float32)
    res = judge(halves[0], noise, CFG, seed=0)
    assert res.accuracy >= 0.95 and res.auc >= 0.95 and res.p_value < 1e-20
    assert res.log_loss < 0.2 and res.brier < 0.05


def test_real_vs_blurred_real_is_caught(halves):
    """Real tiles against blurred real tiles: accuracy near 1 and a tiny p-value."""
    res = judge(halves[0], halves[2], CFG, seed=0)
    assert res.accuracy >= 0.85 and res.p_value < 1e-8


def test_judge_scores_every_tile_of_the_balanced_sets(halves):
    """With 140 real and 30 fake tiles, both sets are cut to 30 and all 60 are scored, each fold training on the rest."""
    res = judge(halves[0], halves[1][:30], JudgeParams(3, 1, 1, 16, 2e-3, 4, 1), seed=0)
    assert res.n_per_class == 30 and res.n_test == 60 and res.n_train == 40 and res.folds == 3


def test_judge_reports_each_seed(halves):
    """Two seeds give two per-seed results, each with accuracy, AUC, log-loss and Brier score."""
    res = judge(halves[0][:12], halves[2][:12], JudgeParams(2, 2, 1, 16, 2e-3, 4, 1), seed=0)
    assert res.seeds == 2 and len(res.per_seed) == 2
    assert all(set(d) == {"accuracy", "auc", "log_loss", "brier"} for d in res.per_seed)


def test_judge_folds_shrink_to_the_groups(halves):
    """Real tiles in 2 groups allow 2 folds, whatever the params ask; the result says the groups were known."""
    groups = np.repeat([0, 1], 6)
    res = judge(halves[0][:12], halves[2][:12], JudgeParams(5, 1, 1, 16, 2e-3, 4, 1), seed=0, real_groups=groups)
    assert res.folds == 2 and res.groups == 2 and res.groups_known


def test_judge_refuses_a_single_group(halves):
    """Real tiles that all share pixels (one group) cannot be cross-validated: a ValueError says so."""
    with pytest.raises(ValueError, match="at least 2 groups"):
        judge(halves[0][:8], halves[2][:8], JudgeParams(2, 1, 1, 16, 2e-3, 4, 1), seed=0, real_groups=np.zeros(8, int))


def test_two_runs_are_identical_and_leave_the_caller_alone(halves):
    """Two judge runs on 2 threads give the same result bit for bit; threads and global RNG come back as they were."""
    small = JudgeParams(2, 2, 2, 16, 2e-3, 8, 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(123)
        before = torch.random.get_rng_state()
        a = judge(halves[0][:20], halves[2][:20], small, seed=4)
        assert torch.equal(torch.random.get_rng_state(), before) and torch.get_num_threads() == 2
        b = judge(halves[0][:20], halves[2][:20], small, seed=4)
    finally:
        torch.set_num_threads(threads)
    assert a == b and not torch.are_deterministic_algorithms_enabled()


def test_judge_result_is_the_same_for_any_worker_count(halves):
    """Fits trained 3 at a time give the judge's result bit for bit as one at a time (issue 20)."""
    one = judge(halves[0][:20], halves[2][:20], JudgeParams(2, 2, 2, 16, 2e-3, 8, 1), seed=5)
    three = judge(halves[0][:20], halves[2][:20], JudgeParams(2, 2, 2, 16, 2e-3, 8, 3), seed=5)
    assert one == three


@given(st.one_of(st.integers(-3, 0), st.integers(65, 10**6)))
def test_judge_workers_out_of_range_name_their_key(value):
    """evaluate.judge.workers outside 1..64 is refused naming that key."""
    with pytest.raises(InvalidParam, match="^workers: expected an integer in 1\\.\\.64"):
        JudgeParams(folds=2, seeds=1, epochs=1, batch_size=16, lr=2e-3, width=4, workers=value)


def test_box_groups_join_tiles_that_share_pixels():
    """A chain of overlapping tiles is one group; a tile that only touches an edge, or lies in another scene, is not."""
    boxes = [["a", 0, 0, 128, 128], ["a", 64, 0, 192, 128], ["a", 128, 0, 256, 128],  # a chain of overlaps
             ["a", 256, 0, 384, 128],  # touches the chain's right edge only: no shared pixel
             ["b", 0, 0, 128, 128]]  # same rectangle, other scene
    g = box_groups(boxes)
    assert g[0] == g[1] == g[2] and len({g[0], g[3], g[4]}) == 3


@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=30))
@settings(max_examples=50, deadline=None)
def test_tiles_of_different_groups_share_no_pixel(corners):
    """Property: any two tiles in different groups are in different scenes or have disjoint rectangles."""
    boxes = [[s, x, y, x + 8, y + 8] for s, x, y in corners]
    g = box_groups(boxes)
    for i, a in enumerate(boxes):
        for j, b in enumerate(boxes):
            if g[i] != g[j]:
                assert a[0] != b[0] or a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2]


def test_area_equivalent_counts_overlap_once():
    """Two disjoint tiles cover 2 tiles' area; two tiles overlapping by half cover 1.5."""
    assert area_equivalent([["a", 0, 0, 10, 10], ["a", 20, 0, 30, 10]]) == 2.0
    assert area_equivalent([["a", 0, 0, 10, 10], ["a", 5, 0, 15, 10]]) == 1.5


def test_box_groups_name_a_malformed_box():
    """A box with x1 <= x0 is a ValueError naming its row."""
    with pytest.raises(ValueError, match="box 1"):
        box_groups([["a", 0, 0, 10, 10], ["a", 10, 0, 10, 10]])


@given(st.lists(st.integers(0, 9), min_size=4, max_size=60), st.integers(2, 4), st.integers(0, 2**16))
@settings(max_examples=60, deadline=None)
def test_folds_keep_groups_whole_and_balanced(groups, folds, seed):
    """Property: each group lies in one fold, every fold is used, and fold sizes differ by at most the largest group."""
    g = np.array(groups)
    if len(np.unique(g)) < folds:
        return
    f = assign_folds(g, folds, np.random.default_rng(seed))
    assert all(len(np.unique(f[g == k])) == 1 for k in np.unique(g))
    sizes = np.bincount(f, minlength=folds)
    assert sizes.min() >= 1 and sizes.max() - sizes.min() <= np.bincount(g).max()


def test_log_loss_and_brier_on_known_logits():
    """log-loss and Brier equal their textbook values: ln 2 and 1/4 at logit 0, -ln(sigmoid) for confident hits."""
    labels = np.array([1, 0, 1, 0])
    assert log_loss(np.zeros(4), labels) == pytest.approx(math.log(2))
    assert brier_score(np.zeros(4), labels) == pytest.approx(0.25)
    z = np.array([2.0, -3.0, -1.0, 800.0])  # the last is a confident mistake: large but finite
    sig = 1 / (1 + np.exp(-z[:3]))
    expected_ll = (-math.log(sig[0]) - math.log(1 - sig[1]) - math.log(sig[2]) + 800.0) / 4
    assert log_loss(z, labels) == pytest.approx(expected_ll)
    assert brier_score(z, labels) == pytest.approx(((sig - labels[:3]) ** 2).sum() / 4 + 0.25)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-30, 30), st.booleans()), min_size=1, max_size=20))
def test_log_loss_grows_as_predictions_worsen(pairs):
    """Pushing every logit away from its label raises the log-loss and the Brier score (never lowers them)."""
    z = np.array([v for v, _ in pairs])
    y = np.array([lab for _, lab in pairs])
    worse = z - np.where(y, 1.0, -1.0)
    assert log_loss(worse, y) >= log_loss(z, y) and brier_score(worse, y) >= brier_score(z, y)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40).flatmap(lambda n: st.tuples(st.integers(0, n + 1), st.just(n))))
def test_binomial_tail_matches_exact_fractions(kn):
    """P(X >= k) equals the exact rational sum of C(n, i) / 2^n, and lies in [0, 1]."""
    k, n = kn
    exact = sum(Fraction(math.comb(n, i), 2**n) for i in range(k, n + 1))
    p = binomial_p_value(k, n)
    assert 0.0 <= p <= 1.0 and p == pytest.approx(float(exact), rel=1e-9, abs=1e-300)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 2000))
def test_binomial_tail_decreases_in_k(n):
    """More correct answers can only make the p-value smaller, and huge n stays finite."""
    ps = [binomial_p_value(k, n) for k in (n // 2, 3 * n // 4, n)]
    assert ps[0] >= ps[1] >= ps[2] >= 0.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=30))
def test_auc_matches_pairwise_count(pairs):
    """AUC equals the share of (positive, negative) pairs ranked correctly, ties counting 1/2."""
    scores = np.array([s for s, _ in pairs], float)
    labels = np.array([lab for _, lab in pairs])
    if labels.all() or not labels.any():
        return
    pos, neg = scores[labels], scores[~labels]
    brute = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert roc_auc(scores, labels) == pytest.approx(brute)


# ----------------------------------------------------------------- the class classifier (GAN-test)

CLS = ClassifierParams(epochs=40, batch_size=16, lr=2e-3, width=16, max_train_tiles=4000)


@pytest.fixture(scope="module")
def classes(rsscn7_files):
    """RSSCN7's 7 land-use classes: 24 training and 6 held-out tiles of each, with their class indices."""
    names = sorted({f.parent.name for f in rsscn7_files})
    by_class = [[f for f in rsscn7_files if f.parent.name == c] for c in names]
    train = load_tiles([f for files in by_class for f in files[:24]])
    held = load_tiles([f for files in by_class for f in files[24:30]])
    return train, np.repeat(np.arange(7), 24), held, np.repeat(np.arange(7), 6)


def test_classifier_learns_land_use_classes(classes):
    """Trained on 168 labelled real tiles, it names the class of 42 unseen ones far above chance (1/7)."""
    train, y_train, held, y_held = classes
    net = train_classifier(train, y_train, 7, CLS, seed=0)
    assert (classify(net, held) == y_held).mean() >= 0.5


def test_classifier_is_deterministic_and_leaves_the_caller_alone(classes):
    """Two trainings on 2 threads predict the same classes; threads and the global RNG come back as they were."""
    train, y_train, held, _ = classes
    small = ClassifierParams(epochs=2, batch_size=16, lr=2e-3, width=4, max_train_tiles=60)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(123)
        before = torch.random.get_rng_state()
        a = classify(train_classifier(train, y_train, 7, small, seed=3), held)
        assert torch.equal(torch.random.get_rng_state(), before) and torch.get_num_threads() == 2
        b = classify(train_classifier(train, y_train, 7, small, seed=3), held)
    finally:
        torch.set_num_threads(threads)
    assert a.dtype == np.int64 and np.array_equal(a, b) and not torch.are_deterministic_algorithms_enabled()


def test_classifier_refuses_labels_that_do_not_match_the_tiles(classes):
    """Labels of another length than the tiles are a ValueError, not a silent misalignment."""
    train, y_train, _, _ = classes
    with pytest.raises(ValueError, match="labels"):
        train_classifier(train, y_train[:-1], 7, CLS, seed=0)


@given(st.integers(1, 5000), st.integers(2, 3000), st.integers(0, 2**32 - 1))
def test_classifier_subset_is_sorted_distinct_and_capped(n, cap, seed):
    """At most cap distinct sorted row indices of n, all of them when they fit, the same for the same seed."""
    rows = classifier_subset(n, cap, seed)
    assert len(rows) == min(n, cap) and np.all(np.diff(rows) > 0) and 0 <= rows[0] and rows[-1] < n
    assert np.array_equal(rows, classifier_subset(n, cap, seed))


@given(st.sampled_from(["epochs", "batch_size", "width"]), st.integers(-5, 0))
def test_classifier_params_below_one_name_their_key(field, value):
    """epochs, batch_size or width below 1 is refused naming that key."""
    ok = {"epochs": 1, "batch_size": 1, "lr": 1e-3, "width": 1, "max_train_tiles": 2}
    with pytest.raises(InvalidParam, match=f"^{field}: expected an integer (>= 1|in 1\\.\\.)"):
        ClassifierParams(**{**ok, field: value})


def test_judge_params_need_two_folds():
    """evaluate.judge.folds below 2 names its key (one fold leaves nothing to train on)."""
    with pytest.raises(InvalidParam, match="^folds: expected an integer >= 2"):
        JudgeParams(folds=1, seeds=1, epochs=1, batch_size=16, lr=2e-3, width=4, workers=1)


def test_disjoint_rows_keep_tiles_that_share_no_pixel():
    """disjoint_rows on 64 px windows cut every 32 px keeps every other window per axis, none overlapping another."""
    from satgan.evaluate.judge import disjoint_rows

    boxes = [["s", x, y, x + 64, y + 64] for y in range(0, 193, 32) for x in range(0, 193, 32)]
    rows = disjoint_rows(boxes)
    kept = [boxes[i] for i in rows]
    assert len(kept) == 16
    assert all(max(a[1] - b[3], b[1] - a[3], a[2] - b[4], b[2] - a[4]) >= 0 for i, a in enumerate(kept) for b in kept[i + 1:])
