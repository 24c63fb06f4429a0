"""The automatic judges: a classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017), and a class
classifier for GAN-test and GAN-train accuracy (Shmelkov et al., ECCV 2018), both the same small CNN.

The judge (:func:`judge`) trains a small CNN from scratch to tell held-out real tiles from
generated ones and scores it on tiles it did not train on. If the two distributions were the
same, no classifier could beat chance on unseen tiles: accuracy ~0.5, AUC ~0.5. For the GAN,
0.5 is the perfect score.

One split into a train and a test half ranks recipes badly: on the same fakes, changing only
the judge's seed moved its log-loss 40x (issue 19). So the judge is grouped k-fold
cross-validation, repeated over seeds: every real tile and as many fakes are scored exactly
once per seed by a judge that never trained on them, the predicted probabilities are averaged
per tile over the seeds, and accuracy, AUC, log-loss and Brier score are computed on those
pooled out-of-fold predictions (the spread between seeds is reported beside them).
Overlapping tiles (cut with a stride below their size) share pixels: a judge that trained on
one recognises the other by its content, not by what makes it real. Tiles whose boxes
intersect are therefore one group (:func:`box_groups`, connected components) and a group
never straddles a fold (Roberts et al. 2017, "Cross-validation strategies for data with
temporal, spatial, hierarchical, or phylogenetic structure", Ecography 40).

Accuracy saturates: every run that the judge tells apart scores 0.98-1.0. The log-loss (mean
binary cross-entropy of the predicted probabilities) and the Brier score (their mean squared
error) are graded: they keep falling as the judge grows surer, so such runs can still be
ranked. An uninformed judge (p = 1/2 everywhere) has log-loss ln 2 ~ 0.693 and Brier 0.25; a
judge that cannot tell the sets apart but overfits its training folds scores worse than that.
For the GAN, higher is better on both.

The class classifier (:func:`train_classifier`, :func:`classify`): the same CNN with one logit per
class. Shmelkov et al. ("How good is my GAN?", arXiv:1807.09499) train it on real labelled
tiles and score generated tiles against the class they were asked for (GAN-test: do the fakes
look like their class?), and train it on the fakes with their classes and score held-out reals
(GAN-train: do the fakes cover what the class looks like?).

Deterministic: the same inputs, params and seed give the same result bit for bit. The judge
draws every random number from seeded generators (the caller's global torch RNG is left as
it was) and trains on one intra-op thread under ``torch.use_deterministic_algorithms``, so no
parallel reduction can reorder a sum.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import sparse, stats
from scipy.sparse.csgraph import connected_components
from torch import nn

from satgan.evaluate.metrics import clopper_pearson
from satgan.evaluate.params import ClassifierParams, JudgeParams
from satgan.evaluate.readings import judge_conclusive
from satgan.split import disjoint_subset


@dataclass(frozen=True)
class JudgeResult:
    """Out-of-fold accuracy, ROC AUC, log-loss, Brier score and the one-sided binomial p-value against chance.

    On the per-tile probabilities averaged over ``seeds`` repeats of ``folds``-fold
    cross-validation; ``per_seed`` holds each repeat's own accuracy, AUC and log-loss (their
    spread is the judge's own noise). ``n_test``: tiles scored (real + fake, each once per
    seed); ``n_train``: the mean number a fold's judge trained on; ``groups``: the groups the
    real tiles fell into (tiles sharing pixels), ``groups_known`` False when every real tile had
    to be its own group.
    """

    accuracy: float
    auc: float
    log_loss: float
    brier: float
    p_value: float
    log10_p_value: float
    n_train: int
    n_test: int
    n_per_class: int
    folds: int
    seeds: int
    groups: int
    groups_known: bool
    per_seed: tuple[dict[str, float], ...]


def binomial_log_sf(k: int, n: int, p: float = 0.5) -> float:
    """ln P(X >= k) for X ~ Binomial(n, p), in log space (``scipy.stats.binom.logsf``), so tails as small
    as 1e-300 and beyond stay finite.
    """
    if n < 0 or not 0.0 < p < 1.0:
        raise ValueError(f"expected n >= 0 and 0 < p < 1, got n={n}, p={p}")
    if k <= 0:
        return 0.0
    if k > n:
        return -math.inf
    return float(stats.binom.logsf(k - 1, n, p))


def binomial_p_value(k: int, n: int, p: float = 0.5) -> float:
    """P(X >= k) for X ~ Binomial(n, p): the one-sided p-value of ``k`` correct out of ``n``."""
    return min(1.0, math.exp(binomial_log_sf(k, n, p)))


def log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy (nats) of sigmoid(``logits``) (N,) against ``labels`` (N,) in {0, 1}.

    Computed from the logits as softplus(-z) for label 1 and softplus(z) for label 0, in
    float64, so confident mistakes give large finite values instead of log(0).
    """
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels).astype(bool)
    if z.shape != y.shape or z.ndim != 1 or len(z) == 0:
        raise ValueError(f"expected non-empty logits and labels of the same 1-D shape, got {z.shape} and {y.shape}")
    return float(np.where(y, np.logaddexp(0.0, -z), np.logaddexp(0.0, z)).mean())


def brier_score(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error of sigmoid(``logits``) (N,) against ``labels`` (N,) in {0, 1} (Brier 1950)."""
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels).astype(np.float64)
    if z.shape != y.shape or z.ndim != 1 or len(z) == 0:
        raise ValueError(f"expected non-empty logits and labels of the same 1-D shape, got {z.shape} and {y.shape}")
    return float(((0.5 * (1.0 + np.tanh(0.5 * z)) - y) ** 2).mean())  # tanh form: sigmoid without overflow


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` (N,) for binary ``labels`` (N,) in {0, 1}: the Mann-Whitney U statistic of the
    positives over the negatives (``scipy.stats.mannwhitneyu``; ties count 1/2) divided by their pair count.
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels).astype(bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"expected scores and labels of the same 1-D shape, got {scores.shape} and {labels.shape}")
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"expected both classes among the labels, got {n_pos} positive and {n_neg} negative")
    u = stats.mannwhitneyu(scores[labels], scores[~labels], method="asymptotic").statistic
    return float(u / (n_pos * n_neg))


class HighPass(nn.Module):
    """(B, C, H, W) -> (B, 2C, H, W): the tile and its fixed 3x3 Laplacian residual.

    The residual is where generators leave their fingerprints (checkerboard from
    transposed convolutions, missing fine texture, Durall et al. 2020); handing it to the
    net directly lets a from-scratch judge with ~100 training tiles find them.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
        self.register_buffer("kernel", k.view(1, 1, 3, 3).repeat(channels, 1, 1, 1))
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel, groups=self.channels)
        return torch.cat([x, res], 1)


def build_judge(channels: int, width: int, n_outputs: int = 1) -> nn.Sequential:
    """A small from-scratch CNN: (B, C, H, W) -> (B,) logit of "fake", or (B, n_outputs) class logits when
    ``n_outputs`` > 1. Any H, W >= 8 (global pooling).
    """
    # Layers are built in argument order, so the weight init draws from the RNG in the same order as before
    # the class head existed: a judge with one output is the same net, bit for bit.
    return nn.Sequential(
        HighPass(channels),
        nn.Conv2d(2 * channels, width, 3, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(4 * width, 4 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, n_outputs),
        *([nn.Flatten(0)] if n_outputs == 1 else []),
    )


# ----------------------------------------------------------------- groups and folds


def box_groups(boxes: Sequence[Sequence[Any]]) -> np.ndarray:
    """(N,) int64 group of each tile: connected components of tiles that share pixels.

    ``boxes``: per tile ``[scene, x0, y0, x1, y1]`` in source pixels (x1, y1 exclusive; the
    sidecar's ``boxes``). Two tiles touch when they come from the same scene and their
    rectangles intersect in at least one pixel; a group is a chain of touching tiles
    (``scipy.sparse.csgraph.connected_components``), so no two groups share a pixel.
    """
    scenes, rects = _parse_boxes(boxes)
    x0, y0, x1, y1 = rects.T
    touch = ((scenes[:, None] == scenes[None, :]) & (x0[:, None] < x1[None, :]) & (x0[None, :] < x1[:, None])
             & (y0[:, None] < y1[None, :]) & (y0[None, :] < y1[:, None]))
    _, labels = connected_components(sparse.csr_matrix(touch), directed=False)
    return labels.astype(np.int64)


def area_equivalent(boxes: Sequence[Sequence[Any]]) -> float:
    """The union area of the tiles' ``boxes`` (as :func:`box_groups`) in units of one tile's area (the median box).

    N tiles that share no pixels give N; tiles cut every half tile overlap, so they cover the
    area of fewer independent tiles. Exact: per scene, the rectangles are rasterised on the grid
    of their own edges.
    """
    scenes, rects = _parse_boxes(boxes)
    total = 0.0
    for scene in np.unique(scenes):
        r = rects[scenes == scene]
        xs, ys = np.unique(r[:, [0, 2]]), np.unique(r[:, [1, 3]])
        covered = np.zeros((len(ys) - 1, len(xs) - 1), bool)
        for bx0, by0, bx1, by1 in r:
            covered[np.searchsorted(ys, by0):np.searchsorted(ys, by1), np.searchsorted(xs, bx0):np.searchsorted(xs, bx1)] = True
        total += float((np.diff(ys)[:, None] * np.diff(xs)[None, :] * covered).sum())
    tile = float(np.median((rects[:, 2] - rects[:, 0]) * (rects[:, 3] - rects[:, 1])))
    return total / tile


def _parse_boxes(boxes: Sequence[Sequence[Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Scenes (N,) str and rectangles (N, 4) float64 of ``boxes``; ValueError naming the first malformed row."""
    if len(boxes) == 0:
        raise ValueError("expected at least one box, got none")
    scenes, rects = [], []
    for i, b in enumerate(boxes):
        ok = isinstance(b, (list, tuple)) and len(b) == 5 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in b[1:])
        if not ok or not (b[3] > b[1] and b[4] > b[2]):
            raise ValueError(f"box {i}: expected [scene, x0, y0, x1, y1] with x1 > x0 and y1 > y0, got {b!r}")
        scenes.append(str(b[0]))
        rects.append([float(v) for v in b[1:]])
    return np.array(scenes), np.array(rects, np.float64)


def disjoint_rows(boxes: Sequence[Sequence[Any]]) -> np.ndarray:
    """Sorted indices of a maximal set of tiles that share no pixel with each other (:func:`satgan.split.disjoint_subset`).

    ``boxes`` as :func:`box_groups` takes them. The floor's training reals are drawn from these: training tiles cut
    every 32 px overlap their neighbours in one connected group, and a judge whose folds must keep a group whole
    then sees one class's tiles piled into one fold, which pushes its held-out guesses to the other class.
    """
    scenes, rects = _parse_boxes(boxes)
    _, scene_ids = np.unique(scenes, return_inverse=True)
    return disjoint_subset(np.round(rects).astype(np.int64), scene_ids.reshape(-1))


def assign_folds(groups: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """(N,) fold in [0, folds) of each tile of ``groups`` (N,): a whole group per fold, folds as equal as whole groups allow.

    Groups go largest first (ties in a seeded random order) to the fold holding the fewest
    tiles so far. Needs at least ``folds`` groups, so that every fold gets one.
    """
    ids, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    if len(ids) < folds:
        raise ValueError(f"expected at least {folds} groups for {folds} folds, got {len(ids)}")
    order = rng.permutation(len(ids))
    order = order[np.argsort(-sizes[order], kind="stable")]
    load = np.zeros(folds, np.int64)
    fold_of = np.empty(len(ids), np.int64)
    for g in order:
        f = int(np.argmin(load))
        fold_of[g], load[f] = f, load[f] + sizes[g]
    return fold_of[inverse.reshape(-1)]


# ----------------------------------------------------------------- the judge


def judge(real: np.ndarray, fake: np.ndarray, cfg: JudgeParams, seed: int,
          real_groups: np.ndarray | None = None, fake_groups: np.ndarray | None = None) -> JudgeResult:
    """Classifier two-sample test between real (N, C, H, W) and fake (M, C, H, W) tiles in [-1, 1], by grouped
    k-fold cross-validation repeated over ``cfg.seeds`` seeds.

    Both sets are balanced to min(N, M) tiles (a seeded subset of the larger). ``real_groups``
    / ``fake_groups`` (N,) / (M,): tiles of one group (they share pixels, :func:`box_groups`)
    always land in one fold; None: every tile is its own group. Each seed draws its own fold
    assignment and judge weights; each fold's judge trains on the other folds and scores its
    own, so every tile is scored once per seed. The metrics are computed on the per-tile
    probabilities averaged over the seeds. Augmentation is horizontal/vertical flips only (map
    tiles have no canonical orientation), which cannot create a real/fake cue.
    """
    if real.ndim != 4 or fake.ndim != 4 or real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"expected real and fake (N, C, H, W) tiles of the same (C, H, W), got {real.shape} and {fake.shape}")
    rg = np.arange(len(real)) if real_groups is None else np.asarray(real_groups)
    fg = np.arange(len(fake)) if fake_groups is None else np.asarray(fake_groups)
    if rg.shape != (len(real),) or fg.shape != (len(fake),):
        raise ValueError(f"expected one group per tile, got {rg.shape} groups for {len(real)} real and "
                         f"{fg.shape} for {len(fake)} fake tiles")
    rng = np.random.default_rng(seed)
    n = min(len(real), len(fake))
    # Sorted indices read a memmap front to back.
    ri, fi = np.sort(rng.choice(len(real), n, replace=False)), np.sort(rng.choice(len(fake), n, replace=False))
    rg, fg = rg[ri], fg[fi]
    folds = min(cfg.folds, len(np.unique(rg)), len(np.unique(fg)))
    if folds < 2:
        raise ValueError(f"expected at least 2 groups of each set for a cross-validated judge, got "
                         f"{len(np.unique(rg))} real and {len(np.unique(fg))} fake groups")
    x = torch.from_numpy(np.concatenate([np.asarray(real[ri], np.float32), np.asarray(fake[fi], np.float32)]))
    y = np.concatenate([np.zeros(n), np.ones(n)])
    # One fit per (seed, fold): its test mask and its weight/batch seed, all drawn before any fit runs.
    fits = []
    for s in range(cfg.seeds):
        fold_rng = np.random.default_rng([seed, s])
        fold = np.concatenate([assign_folds(rg, folds, fold_rng), assign_folds(fg, folds, fold_rng)])
        fits += [(s, fold == k, seed + 1000 * s + k) for k in range(folds)]
    tests, net_seeds = [test for _, test, _ in fits], [net_seed for _, _, net_seed in fits]
    y_t = torch.from_numpy(y).float()

    def fit(test: np.ndarray, net_seed: int, net: nn.Sequential) -> np.ndarray:
        return _train_and_predict(net, x[~test], y_t[~test], x[test], cfg, net_seed)

    probs = np.zeros((cfg.seeds, 2 * n))
    with _deterministic_cpu():
        # The weight init draws from the global RNG, so the nets are built here, one after another; the fits are
        # independent and each runs on one intra-op thread, so ``cfg.workers`` of them run at once (torch releases
        # the GIL inside its ops) and every fit computes exactly what it would alone: same result for any count.
        nets = [_seeded_net(x.shape[1], cfg.width, 1, net_seed) for net_seed in net_seeds]
        with ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="judge") as pool:
            logits = list(pool.map(fit, tests, net_seeds, nets))
    for (s, test, _), z in zip(fits, logits, strict=True):
        probs[s, test] = _sigmoid(z)
    trained = [int((~test).sum()) for test in tests]
    mean_p = probs.mean(0)
    per_seed = tuple(_scores(p, y) for p in probs)
    pooled = _scores(mean_p, y)
    correct = int(((mean_p > 0.5) == (y == 1)).sum())
    return JudgeResult(
        accuracy=pooled["accuracy"], auc=pooled["auc"], log_loss=pooled["log_loss"], brier=pooled["brier"],
        p_value=binomial_p_value(correct, 2 * n), log10_p_value=binomial_log_sf(correct, 2 * n) / math.log(10),
        n_train=round(float(np.mean(trained))), n_test=2 * n, n_per_class=n, folds=folds, seeds=cfg.seeds,
        groups=int(len(np.unique(rg))), groups_known=real_groups is not None, per_seed=per_seed,
    )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, np.float64)))  # tanh form: no overflow


def _scores(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy, AUC, log-loss and Brier score of probabilities of "fake" ``p`` (N,) against ``y`` (N,) in {0, 1}."""
    q = np.clip(p, 1e-12, 1.0 - 1e-12)  # a sure mistake costs ln(1e12) ~ 27.6 nats, not infinity
    z = np.log(q) - np.log1p(-q)
    return {"accuracy": float(((p > 0.5) == (y == 1)).mean()), "auc": roc_auc(p, y),
            "log_loss": log_loss(z, y), "brier": float(((p - y) ** 2).mean())}


@contextlib.contextmanager
def _deterministic_cpu() -> Iterator[None]:
    """One intra-op thread and deterministic algorithms for the block; the caller's settings restored after.

    One thread: a sum split over threads is added in an order that depends on the split, so
    results could differ in the last bits between machines or thread counts; and the judge's
    convs are too small to gain from more (on a shared 2-core machine OpenMP workers spinning
    against other processes made training 5-10x slower). ``use_deterministic_algorithms``
    makes any op without a deterministic implementation raise instead of silently varying.
    """
    threads = torch.get_num_threads()
    was_det = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_det, warn_only=was_warn)
        torch.set_num_threads(threads)


def _fit(net: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, loss_fn: nn.Module, epochs: int,
         batch_size: int, lr: float, gen: torch.Generator) -> None:
    """Adam on (x_train, y_train) for ``epochs`` seeded passes; each batch flipped at random (``gen``)."""
    # channels_last: oneDNN's convolutions run ~1.2-1.5x faster in it on this small net (single thread, fp32;
    # docs/benchmarks.md); the layout changes no result beyond float rounding, and reruns stay bit-identical.
    net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x_train), generator=gen)
        for start in range(0, len(perm), batch_size):
            b = perm[start:start + batch_size]
            xb = x_train[b]
            flips = torch.rand(2, generator=gen)
            if flips[0] < 0.5:
                xb = xb.flip(-1)
            if flips[1] < 0.5:
                xb = xb.flip(-2)
            opt.zero_grad()
            loss_fn(net(xb.contiguous(memory_format=torch.channels_last)), y_train[b]).backward()
            opt.step()
    net.eval()


def _predict(net: nn.Module, x: np.ndarray | torch.Tensor, chunk: int = 256) -> np.ndarray:
    """The net's outputs on ``x`` (N, C, H, W), ``chunk`` tiles at a time (a memmap is read chunk by chunk)."""
    def batch(s: int) -> torch.Tensor:
        part = x[s:s + chunk]
        part = part if isinstance(part, torch.Tensor) else torch.from_numpy(np.array(part, np.float32))
        return part.contiguous(memory_format=torch.channels_last)

    with torch.no_grad():
        return torch.cat([net(batch(s)) for s in range(0, len(x), chunk)]).numpy()


def _seeded_net(channels: int, width: int, n_outputs: int, seed: int) -> nn.Sequential:
    """:func:`build_judge` with its weights drawn from ``seed``; the caller's global RNG stream is left untouched."""
    # The weight init draws from the global RNG: seed it inside a fork so the caller's stream is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_judge(channels, width, n_outputs)


def _train_and_predict(net: nn.Sequential, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                       cfg: JudgeParams, seed: int) -> np.ndarray:
    """Fit ``net`` (a :func:`_seeded_net`; batches and flips from ``seed``) on (x_train, y_train), 1 = fake; its
    logits on ``x_test``."""
    gen = torch.Generator().manual_seed(seed)
    _fit(net, x_train, y_train, nn.BCEWithLogitsLoss(), cfg.epochs, cfg.batch_size, cfg.lr, gen)
    return _predict(net, x_test)


# ----------------------------------------------------------------- the class classifier (GAN-test, GAN-train)


def classifier_subset(n: int, cap: int, seed: int) -> np.ndarray:
    """Sorted row indices of at most ``cap`` of ``n`` training tiles: all of them when they fit, else a seeded subset.

    Sorted so a memmap is read front to back; the cap bounds the memory the classifier's
    training set takes (``cap`` x C x H x W float32), whatever the dataset's size.
    """
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def train_classifier(tiles: np.ndarray, labels: np.ndarray, n_classes: int, cfg: ClassifierParams,
                     seed: int) -> nn.Sequential:
    """The class classifier: :func:`build_judge` with ``n_classes`` logits, fitted with cross-entropy.

    ``tiles`` (N, C, H, W) in [-1, 1] (a memmap is fine: at most ``cfg.max_train_tiles`` rows, a
    seeded subset, are read), ``labels`` (N,) int class indices in [0, n_classes). Flips as the
    judge's (a land-use class has no orientation). Trained on one thread under deterministic
    algorithms, so the same inputs and seed give the same weights. Returns the net in eval mode.
    """
    if tiles.ndim != 4 or labels.shape != (len(tiles),) or n_classes < 2:
        raise ValueError(f"expected (N, C, H, W) tiles, (N,) labels and at least 2 classes, got {tiles.shape}, "
                         f"{labels.shape} and {n_classes}")
    rows = classifier_subset(len(tiles), cfg.max_train_tiles, seed)
    x = torch.from_numpy(np.asarray(tiles[rows], np.float32))
    y = torch.from_numpy(np.asarray(labels, np.int64)[rows])
    with _deterministic_cpu():
        gen = torch.Generator().manual_seed(seed)
        net = _seeded_net(x.shape[1], cfg.width, n_classes, seed)
        _fit(net, x, y, nn.CrossEntropyLoss(), cfg.epochs, cfg.batch_size, cfg.lr, gen)
    return net


def classify(net: nn.Module, tiles: np.ndarray) -> np.ndarray:
    """(N,) int64 predicted class of each of ``tiles`` (N, C, H, W) in [-1, 1] (a memmap is read in chunks)."""
    with _deterministic_cpu():
        return _predict(net, tiles).argmax(1).astype(np.int64)


def judge_summary(verdict: JudgeResult) -> dict[str, Any]:
    """metrics.json's judge block: the pooled out-of-fold result, its exact 95% interval, whether it says anything
    (:func:`judge_conclusive`), the cross-validation's shape and each seed's own figures (their spread).
    """
    correct = round(verdict.accuracy * verdict.n_test)
    ci_low, ci_high = clopper_pearson(correct, verdict.n_test)
    seeds = verdict.per_seed
    spread = {f"{key}_{fn.__name__}": float(fn([d[key] for d in seeds]))
              for key in ("accuracy", "auc", "log_loss") for fn in (min, max)}
    return {"accuracy": verdict.accuracy, "accuracy_ci_low": ci_low, "accuracy_ci_high": ci_high,
            "conclusive": int(judge_conclusive(verdict.p_value, ci_high)), "auc": verdict.auc,
            "log_loss": verdict.log_loss, "brier": verdict.brier, "p_value": verdict.p_value,
            "log10_p_value": verdict.log10_p_value, "n_test": verdict.n_test, "n_train": verdict.n_train,
            "folds": verdict.folds, "seeds": verdict.seeds, "groups": verdict.groups,
            "groups_known": int(verdict.groups_known), "per_seed": spread}
