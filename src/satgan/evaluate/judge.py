"""The automatic judges: a classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017), and a class
classifier for GAN-test accuracy (Shmelkov et al., ECCV 2018), both the same small CNN.

Train a small CNN from scratch to tell held-out real tiles from generated ones on a
seeded half of a class-balanced set, then score it on the other half. If the two
distributions were the same, no classifier could beat chance on unseen tiles: the
held-out accuracy would be ~0.5, and the number of correct test predictions would be
Binomial(n_test, 1/2). The p-value is that binomial's upper tail at the observed count.
For the GAN, 0.5 accuracy (AUC 0.5, large p-value) is the perfect score.

Accuracy saturates: every run that the judge tells apart scores 0.98-1.0. The log-loss (mean
binary cross-entropy of the judge's predicted probabilities on the test half) and the Brier
score (mean squared error of those probabilities) are graded: they keep falling as the judge
grows surer, so such runs can still be ranked. An uninformed judge (p = 1/2 everywhere) has
log-loss ln 2 ~ 0.693 and Brier 0.25; a judge that cannot tell the sets apart but overfits its
training half scores worse than that. For the GAN, higher is better on both.

The class classifier (:func:`train_classifier`, :func:`classify`): the same CNN with one logit per
class, trained with cross-entropy on real labelled training tiles. Shmelkov et al. ("How good is
my GAN?", arXiv:1807.09499) score generated tiles with it against the class they were asked
for: GAN-test accuracy, read against the same classifier's accuracy on held-out real tiles
(the ceiling a perfect generator would reach). Far below that ceiling, the fakes do not look
like their class; near chance, the class conditioning does nothing.

Deterministic: the same inputs, params and seed give the same result bit for bit. The judge
draws every random number from seeded generators (the caller's global torch RNG is left as
it was) and trains on one intra-op thread under ``torch.use_deterministic_algorithms``, so no
parallel reduction can reorder a sum.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from satgan.params import check


@dataclass(frozen=True)
class JudgeParams:
    """params.yaml ``evaluate.judge``: the classifier two-sample test."""

    test_fraction: float
    epochs: int
    batch_size: int
    lr: float
    width: int

    def __post_init__(self) -> None:
        check("test_fraction", 0.0 < self.test_fraction < 1.0, "a fraction in (0, 1)", self.test_fraction)
        check("epochs", self.epochs >= 1, "an integer >= 1", self.epochs)
        check("batch_size", self.batch_size >= 1, "an integer >= 1", self.batch_size)
        check("lr", self.lr > 0, "a positive learning rate", self.lr)
        check("width", self.width >= 1, "an integer >= 1", self.width)


@dataclass(frozen=True)
class ClassifierParams:
    """params.yaml ``evaluate.classifier``: the class classifier behind GAN-test accuracy."""

    epochs: int
    batch_size: int
    lr: float
    width: int
    max_train_tiles: int

    def __post_init__(self) -> None:
        check("epochs", self.epochs >= 1, "an integer >= 1", self.epochs)
        check("batch_size", self.batch_size >= 1, "an integer >= 1", self.batch_size)
        check("lr", self.lr > 0, "a positive learning rate", self.lr)
        check("width", self.width >= 1, "an integer >= 1", self.width)
        check("max_train_tiles", self.max_train_tiles >= 2, "an integer >= 2", self.max_train_tiles)


@dataclass(frozen=True)
class JudgeResult:
    """Held-out accuracy, ROC AUC, log-loss, Brier score and the one-sided binomial p-value against chance."""

    accuracy: float
    auc: float
    log_loss: float
    brier: float
    p_value: float
    log10_p_value: float
    n_train: int
    n_test: int
    n_per_class: int


def binomial_log_sf(k: int, n: int, p: float = 0.5) -> float:
    """ln P(X >= k) for X ~ Binomial(n, p), exact up to float rounding, in log space.

    Sums ln C(n, i) + i ln p + (n-i) ln(1-p) for i = k..n with the log-sum-exp trick, so
    tails as small as 1e-300 and beyond stay finite (no scipy needed).
    """
    if n < 0 or not 0.0 < p < 1.0:
        raise ValueError(f"expected n >= 0 and 0 < p < 1, got n={n}, p={p}")
    if k <= 0:
        return 0.0
    if k > n:
        return -math.inf
    terms = [math.log(math.comb(n, i)) + i * math.log(p) + (n - i) * math.log1p(-p) for i in range(k, n + 1)]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


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
    """ROC AUC of ``scores`` (N,) for binary ``labels`` (N,) in {0, 1}, via the Mann-Whitney U statistic (ties count 1/2)."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels).astype(bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"expected scores and labels of the same 1-D shape, got {scores.shape} and {labels.shape}")
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"expected both classes among the labels, got {n_pos} positive and {n_neg} negative")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
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


def judge(real: np.ndarray, fake: np.ndarray, cfg: JudgeParams, seed: int) -> JudgeResult:
    """Classifier two-sample test between real (N, C, H, W) and fake (M, C, H, W) tiles in [-1, 1].

    Classes are balanced by subsampling both to min(N, M) (seeded); each class is split
    into train/test by ``cfg.test_fraction``. Augmentation is horizontal/vertical flips
    only (map tiles have no canonical orientation), which cannot create a real/fake cue.
    """
    if real.ndim != 4 or fake.ndim != 4 or real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"expected real and fake (N, C, H, W) tiles of the same (C, H, W), got {real.shape} and {fake.shape}")
    rng = np.random.default_rng(seed)
    n = min(len(real), len(fake))
    n_test = int(round(n * cfg.test_fraction))
    if n_test < 1 or n - n_test < 1:
        raise ValueError(f"expected enough tiles for a train and a test split, got {n} per class with test_fraction={cfg.test_fraction}")
    # Sorted indices read a memmap sequentially; the second permutation makes the split random.
    r = torch.from_numpy(np.asarray(real[np.sort(rng.choice(len(real), n, replace=False))], np.float32)[rng.permutation(n)])
    f = torch.from_numpy(np.asarray(fake[np.sort(rng.choice(len(fake), n, replace=False))], np.float32)[rng.permutation(n)])
    x_train = torch.cat([r[n_test:], f[n_test:]])
    y_train = torch.cat([torch.zeros(n - n_test), torch.ones(n - n_test)])
    x_test = torch.cat([r[:n_test], f[:n_test]])
    y_test = np.concatenate([np.zeros(n_test), np.ones(n_test)])

    with _deterministic_cpu():
        return _train_and_test(x_train, y_train, x_test, y_test, n, cfg, seed)


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
            loss_fn(net(xb), y_train[b]).backward()
            opt.step()
    net.eval()


def _predict(net: nn.Module, x: np.ndarray | torch.Tensor, chunk: int = 256) -> np.ndarray:
    """The net's outputs on ``x`` (N, C, H, W), ``chunk`` tiles at a time (a memmap is read chunk by chunk)."""
    def batch(s: int) -> torch.Tensor:
        part = x[s:s + chunk]
        return part if isinstance(part, torch.Tensor) else torch.from_numpy(np.array(part, np.float32))

    with torch.no_grad():
        return torch.cat([net(batch(s)) for s in range(0, len(x), chunk)]).numpy()


def _seeded_net(channels: int, width: int, n_outputs: int, seed: int) -> nn.Sequential:
    """:func:`build_judge` with its weights drawn from ``seed``; the caller's global RNG stream is left untouched."""
    # The weight init draws from the global RNG: seed it inside a fork so the caller's stream is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_judge(channels, width, n_outputs)


def _train_and_test(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: np.ndarray, n: int, cfg: JudgeParams, seed: int
) -> JudgeResult:
    """Fit the judge on (x_train, y_train) and score it on the held-out (x_test, y_test); 1 = fake."""
    gen = torch.Generator().manual_seed(seed)
    net = _seeded_net(x_train.shape[1], cfg.width, 1, seed)
    _fit(net, x_train, y_train, nn.BCEWithLogitsLoss(), cfg.epochs, cfg.batch_size, cfg.lr, gen)
    scores = _predict(net, x_test)
    correct = int(((scores > 0) == (y_test == 1)).sum())
    total = len(y_test)
    log_p = binomial_log_sf(correct, total)
    return JudgeResult(
        accuracy=correct / total,
        auc=roc_auc(scores, y_test),
        log_loss=log_loss(scores, y_test),
        brier=brier_score(scores, y_test),
        p_value=binomial_p_value(correct, total),
        log10_p_value=log_p / math.log(10),
        n_train=len(x_train),
        n_test=total,
        n_per_class=n,
    )


# ----------------------------------------------------------------- the class classifier (GAN-test)


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
