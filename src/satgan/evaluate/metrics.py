"""Offline distribution metrics between real and generated tiles.

Every function takes image batches as (N, C, H, W) float arrays in [-1, 1] (numpy,
float16 or float32; memmaps are fine) and returns plain numbers or small dataclasses.

- :func:`sliced_wasserstein_pyramid`: sliced Wasserstein distance between local
  Laplacian-pyramid patches (Karras et al. 2018, "Progressive Growing of GANs", app. D).
- :func:`colour_histogram_distance`: per-channel 1 - histogram intersection
  (Swain & Ballard 1991), i.e. the total-variation distance of the value histograms.
- :func:`memorization`: nearest training tile of each sample by pixel L2 (chunked over a
  memmap), re-ranked by SSIM (Wang et al. 2004) on the top-k L2 candidates.
- :func:`mean_pairwise_ssim`: diversity within a set; a collapsed generator makes
  near-identical tiles, so its mean pairwise SSIM rises far above the real tiles'
  (the MS-SSIM diversity check of Odena et al. 2017, with single-scale SSIM because
  5-scale MS-SSIM needs tiles of at least 161 px).
- :func:`clopper_pearson`: the exact confidence interval of a proportion (the judge's
  accuracy on its test tiles), so a figure from a handful of tiles shows how little it says.
- :func:`class_shares` and :func:`total_variation`: how a class classifier spreads a set of
  tiles over the classes, and how far two such spreads are apart (does an unconditional model
  make every class as often as the real tiles have it?).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from satgan.evaluate.judge import binomial_log_sf

# 5-tap binomial kernel: the Gaussian of Burt & Adelson's Laplacian pyramid, as in Karras et al.
_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _check_images(name: str, x: np.ndarray) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name}: expected (N, C, H, W) images, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one image, got 0")


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    _check_images("real", a)
    _check_images("fake", b)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"expected real and fake tiles of the same (C, H, W), got {tuple(a.shape[1:])} and {tuple(b.shape[1:])}")


# --------------------------------------------------------------------------- SWD


def _blur(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> same shape, separable binomial blur with reflect padding."""
    c = x.shape[1]
    k = torch.tensor(_BINOMIAL, dtype=x.dtype)
    kx = k.view(1, 1, 1, 5).repeat(c, 1, 1, 1)
    ky = k.view(1, 1, 5, 1).repeat(c, 1, 1, 1)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="reflect"), kx, groups=c)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="reflect"), ky, groups=c)


def laplacian_pyramid(images: np.ndarray, min_size: int = 16) -> list[np.ndarray]:
    """Laplacian pyramid of (N, C, H, W) images, finest level first, down to ``min_size``.

    Returns float32 arrays (N, C, H/2^i, W/2^i); the last one is the coarsest Gaussian
    level itself (low-pass), the others are band-pass differences G_i - up(G_{i+1}).
    """
    _check_images("images", images)
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))
    if x.shape[-1] < min_size:
        raise ValueError(f"expected tiles of at least {min_size} px for the pyramid, got {x.shape[-1]}")
    levels = []
    while x.shape[-1] // 2 >= min_size:
        down = _blur(x)[..., ::2, ::2]
        up = F.interpolate(down, size=x.shape[-2:], mode="bilinear", align_corners=False)
        levels.append((x - _blur(up)).numpy())
        x = down
    levels.append(x.numpy())
    return levels


def _patches(level: np.ndarray, per_image: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``per_image`` random size x size patches per image -> (N * per_image, C * size * size)."""
    n, c, h, w = level.shape
    if h < size or w < size:
        raise ValueError(f"expected pyramid levels of at least {size} px for {size}x{size} patches, got {h}x{w}")
    ys = rng.integers(0, h - size + 1, size=(n, per_image))
    xs = rng.integers(0, w - size + 1, size=(n, per_image))
    dy, dx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    rows = ys[..., None, None] + dy  # (n, p, size, size)
    cols = xs[..., None, None] + dx
    idx = np.arange(n)[:, None, None, None]
    out = level.transpose(0, 2, 3, 1)[idx, rows, cols]  # (n, p, size, size, c)
    return out.transpose(0, 1, 4, 2, 3).reshape(n * per_image, c * size * size)


def _normalize_descriptors(a: np.ndarray, b: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero mean, unit std per colour channel, with statistics pooled over both sets.

    Karras et al. normalize each set by its own statistics, which hides a uniform loss of
    contrast (blur flattens the band-pass levels, then the division scales it back up);
    pooled statistics keep it visible and keep the distance symmetric in (a, b).
    """
    both = np.concatenate([a, b]).reshape(len(a) + len(b), channels, -1)
    mean = both.mean(axis=(0, 2), keepdims=True)
    std = both.std(axis=(0, 2), keepdims=True) + 1e-8

    def norm(d: np.ndarray) -> np.ndarray:
        return ((d.reshape(len(d), channels, -1) - mean) / std).reshape(len(d), -1)

    return norm(a), norm(b)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_projections: int, seed: int) -> float:
    """Sliced Wasserstein-1 distance between point sets a (N, D) and b (N, D) of equal size.

    Projects both onto ``n_projections`` seeded random unit directions and averages the
    1-D Wasserstein-1 distances (mean absolute difference of sorted projections).
    Symmetric, and 0 for identical sets.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"expected two (N, D) point sets of the same shape, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((a.shape[1], n_projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa = np.sort(a.astype(np.float64) @ dirs, axis=0)
    pb = np.sort(b.astype(np.float64) @ dirs, axis=0)
    return float(np.abs(pa - pb).mean())


def sliced_wasserstein_pyramid(
    real: np.ndarray,
    fake: np.ndarray,
    patches_per_image: int,
    patch_size: int,
    n_projections: int,
    repeats: int,
    seed: int,
) -> dict[str, float]:
    """SWD between real and fake tiles at each Laplacian-pyramid level (Karras et al. 2018).

    real (N, C, H, W), fake (M, C, H, W) in [-1, 1]. Both sets are subsampled (seeded) to
    min(N, M) images so the patch sets have equal size. Returns ``{"<size>px": swd, ...,
    "mean": mean over levels}``: the finest level measures texture/sharpness, the coarsest
    the large-scale colour layout. Not scaled by 1e3 (Karras et al. report SWD x 1e3).
    """
    _check_pair(real, fake)
    rng = np.random.default_rng(seed)
    n = min(len(real), len(fake))
    ri = np.sort(rng.choice(len(real), n, replace=False))
    fi = np.sort(rng.choice(len(fake), n, replace=False))
    real_pyr = laplacian_pyramid(np.asarray(real[ri]), min_size=max(16, patch_size))
    fake_pyr = laplacian_pyramid(np.asarray(fake[fi]), min_size=max(16, patch_size))
    out: dict[str, float] = {}
    channels = real.shape[1]
    for level_r, level_f in zip(real_pyr, fake_pyr):
        values = []
        for rep in range(repeats):
            da, db = _normalize_descriptors(
                _patches(level_r, patches_per_image, patch_size, rng),
                _patches(level_f, patches_per_image, patch_size, rng),
                channels,
            )
            values.append(sliced_wasserstein(da, db, n_projections, seed + 1000 * rep))
        out[f"{level_r.shape[-1]}px"] = float(np.mean(values))
    out["mean"] = float(np.mean(list(out.values())))
    return out


# ------------------------------------------------------------------ histograms


def colour_histogram_distance(real: np.ndarray, fake: np.ndarray, bins: int) -> dict[str, float]:
    """Per-channel 1 - histogram intersection (Swain & Ballard 1991) of pixel values in [-1, 1].

    Equal to the total-variation distance between the normalized histograms: 0 for the
    same colour distribution, 1 for disjoint ones. Returns ``{"ch0": d, ..., "mean": d}``.
    Reads the inputs in chunks, so memmaps of any size are fine.
    """
    _check_pair(real, fake)
    if bins < 2:
        raise ValueError(f"expected at least 2 histogram bins, got {bins}")
    edges = np.linspace(-1.0, 1.0, bins + 1)

    def hist(x: np.ndarray) -> np.ndarray:
        counts = np.zeros((x.shape[1], bins))
        for start in range(0, len(x), 256):
            chunk = np.clip(np.asarray(x[start:start + 256], dtype=np.float32), -1, 1)
            for c in range(x.shape[1]):
                counts[c] += np.histogram(chunk[:, c], bins=edges)[0]
        return counts / counts.sum(axis=1, keepdims=True)

    hr, hf = hist(real), hist(fake)
    dist = 1.0 - np.minimum(hr, hf).sum(axis=1)
    out = {f"ch{c}": float(d) for c, d in enumerate(dist)}
    out["mean"] = float(dist.mean())
    return out


# --------------------------------------------------------------- memorization


def nearest_l2(queries: np.ndarray, bank: np.ndarray, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``bank`` to each query by pixel L2 distance.

    queries (N, C, H, W), bank (M, C, H, W) (a memmap is read ``chunk`` tiles at a time, so
    memory is O(N * chunk), not O(M)). Returns ``(indices (N, k) int64, distances (N, k)
    float64)``, nearest first; distances are RMS per pixel value (L2 / sqrt(C*H*W)).
    """
    _check_pair(bank, queries)
    k = min(k, len(bank))
    q = torch.from_numpy(np.array(queries, dtype=np.float32).reshape(len(queries), -1)).double()
    q2 = (q * q).sum(1, keepdim=True)
    best_d = torch.full((len(q), k), float("inf"), dtype=torch.float64)
    best_i = torch.zeros((len(q), k), dtype=torch.int64)
    for start in range(0, len(bank), chunk):
        b = torch.from_numpy(np.array(bank[start:start + chunk], dtype=np.float32).reshape(-1, q.shape[1])).double()
        d2 = (q2 + (b * b).sum(1)[None, :] - 2.0 * q @ b.T).clamp_min(0.0)
        idx = torch.arange(start, start + len(b)).expand(len(q), -1)
        all_d = torch.cat([best_d, d2], 1)
        all_i = torch.cat([best_i, idx], 1)
        best_d, order = all_d.topk(k, dim=1, largest=False)
        best_i = all_i.gather(1, order)
    return best_i.numpy(), np.sqrt(best_d.numpy() / q.shape[1])


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al. 2004) of two (C, H, W) tiles in [-1, 1], channels averaged."""
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"expected two (C, H, W) tiles of the same shape, got {a.shape} and {b.shape}")
    win = min(7, a.shape[1] - (1 - a.shape[1] % 2), a.shape[2] - (1 - a.shape[2] % 2))
    return float(structural_similarity(
        np.asarray(a, np.float32), np.asarray(b, np.float32), channel_axis=0, data_range=2.0, win_size=win,
    ))


@dataclass(frozen=True)
class Memorization:
    """Per-sample nearest training tile: ``index`` (N,), ``l2`` (N,) RMS distance, ``ssim`` (N,)."""

    index: np.ndarray
    l2: np.ndarray
    ssim: np.ndarray
    threshold: float

    @property
    def fraction_above(self) -> float:
        """Fraction of samples whose nearest training tile has SSIM above the threshold."""
        return float((self.ssim > self.threshold).mean())

    def summary(self) -> dict[str, float]:
        """The distribution as plain numbers for metrics.json."""
        return {
            "ssim_max": float(self.ssim.max()),
            "ssim_p95": float(np.quantile(self.ssim, 0.95)),
            "ssim_median": float(np.median(self.ssim)),
            "l2_min": float(self.l2.min()),
            "l2_median": float(np.median(self.l2)),
            "frac_above_threshold": self.fraction_above,
        }


def memorization(samples: np.ndarray, train: np.ndarray, top_k: int, chunk: int, threshold: float) -> Memorization:
    """For each sample (N, C, H, W), its closest training tile (M, C, H, W) by SSIM among the top-k by L2.

    L2 over pixels is cheap and scales (chunked matmuls over the memmap); SSIM is the
    perceptual check but costs a window filter per pair, so it only re-ranks the ``top_k``
    L2 candidates. A copied training tile has SSIM ~1 and L2 ~0.
    """
    idx, dist = nearest_l2(samples, train, top_k, chunk)
    best_i = np.zeros(len(samples), np.int64)
    best_s = np.zeros(len(samples))
    best_l2 = np.zeros(len(samples))
    for n in range(len(samples)):
        s = np.asarray(samples[n], np.float32)
        scores = [ssim(s, np.asarray(train[j], np.float32)) for j in idx[n]]
        j = int(np.argmax(scores))
        best_i[n], best_s[n], best_l2[n] = idx[n, j], scores[j], dist[n, j]
    return Memorization(index=best_i, l2=best_l2, ssim=best_s, threshold=threshold)


# ------------------------------------------------------------------ diversity


def mean_pairwise_ssim(images: np.ndarray, max_pairs: int, seed: int) -> float:
    """Mean SSIM over up to ``max_pairs`` seeded random distinct pairs of (N, C, H, W) tiles.

    Higher means less diverse: ~1 for a collapsed generator. Compare against the same
    number on real tiles, never in isolation (Odena et al. 2017).
    """
    _check_images("images", images)
    if len(images) < 2:
        raise ValueError(f"expected at least 2 tiles for pairwise SSIM, got {len(images)}")
    rng = np.random.default_rng(seed)
    n = len(images)
    all_pairs = n * (n - 1) // 2
    if all_pairs <= max_pairs:
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    else:
        i = rng.integers(0, n, size=max_pairs)
        j = (i + rng.integers(1, n, size=max_pairs)) % n  # j != i by construction
        pairs = list(zip(i.tolist(), j.tolist()))
    return float(np.mean([ssim(np.asarray(images[i]), np.asarray(images[j])) for i, j in pairs]))


@dataclass(frozen=True)
class Diversity:
    """Mean pairwise SSIM within fake and within real tiles; ``collapsed`` when fake exceeds real by ``margin``."""

    fake_mean_ssim: float
    real_mean_ssim: float
    margin: float

    @property
    def collapsed(self) -> bool:
        """True when the generated tiles are much more alike than real tiles are."""
        return self.fake_mean_ssim - self.real_mean_ssim > self.margin


def diversity(real: np.ndarray, fake: np.ndarray, max_pairs: int, margin: float, seed: int) -> Diversity:
    """Mode-collapse check: mean pairwise SSIM of fake (M, C, H, W) against real (N, C, H, W)."""
    _check_pair(real, fake)
    return Diversity(
        fake_mean_ssim=mean_pairwise_ssim(fake, max_pairs, seed),
        real_mean_ssim=mean_pairwise_ssim(real, max_pairs, seed),
        margin=margin,
    )


# ------------------------------------------------------------------ proportions


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper & Pearson 1934) two-sided confidence interval for a proportion, ``k`` successes of ``n``.

    The lower bound is the p at which P(X >= k) = alpha/2 (0 when k = 0), the upper the p at
    which P(X <= k) = alpha/2 (1 when k = n), for X ~ Binomial(n, p), alpha = 1 - confidence;
    found by bisection on the exact binomial tails (no scipy). Conservative: it covers the
    true proportion at least ``confidence`` of the time. 6 of 8 gives (0.349, 0.968).
    """
    if n < 1 or not 0 <= k <= n or not 0.0 < confidence < 1.0:
        raise ValueError(f"expected 0 <= k <= n, n >= 1 and 0 < confidence < 1, got k={k}, n={n}, confidence={confidence}")
    log_tail = np.log((1.0 - confidence) / 2.0)

    def solve(tail_above: bool) -> float:
        # tail_above: P(X >= k | p), increasing in p; else P(X <= k | p) = P(n - X >= n - k | 1 - p), decreasing.
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2.0
            if mid <= 0.0 or mid >= 1.0:
                break
            t = binomial_log_sf(k, n, mid) if tail_above else binomial_log_sf(n - k, n, 1.0 - mid)
            if (t < log_tail) == tail_above:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2.0

    lower = 0.0 if k == 0 else solve(True)
    upper = 1.0 if k == n else solve(False)
    return lower, upper


# ------------------------------------------------------------------ class spreads


def class_shares(predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes,) float64 share of each class among ``predicted`` (N,) class indices in [0, n_classes); sums to 1."""
    predicted = np.asarray(predicted)
    if predicted.ndim != 1 or len(predicted) == 0 or n_classes < 1:
        raise ValueError(f"expected a non-empty (N,) array of class indices and n_classes >= 1, got {predicted.shape}, {n_classes}")
    if predicted.min() < 0 or predicted.max() >= n_classes:
        raise ValueError(f"expected class indices in 0..{n_classes - 1}, got {predicted.min()}..{predicted.max()}")
    return np.bincount(predicted, minlength=n_classes) / len(predicted)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Total-variation distance 1/2 sum |p - q| of two (K,) distributions: 0 the same, 1 disjoint."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"expected two (K,) distributions of the same shape, got {p.shape} and {q.shape}")
    return float(0.5 * np.abs(p - q).sum())


def tv_sampling_noise(p: np.ndarray, n_a: int, n_b: int) -> float:
    """The total-variation distance two samples of ``n_a`` and ``n_b`` tiles from one class distribution ``p`` (K,) show by chance.

    Each share's difference is about normal with variance p(1-p)(1/n_a + 1/n_b) (the normal
    approximation of the multinomial), whose mean absolute value is sqrt(2/pi) times its
    standard deviation; half their sum is the expected distance. A class spread of the samples
    within about twice this of the held-out reals' cannot be told from theirs.
    """
    p = np.asarray(p, np.float64)
    if p.ndim != 1 or n_a < 1 or n_b < 1:
        raise ValueError(f"expected a (K,) distribution and two sample sizes >= 1, got {p.shape}, {n_a}, {n_b}")
    return float(0.5 * np.sqrt(2.0 / np.pi * p * (1.0 - p) * (1.0 / n_a + 1.0 / n_b)).sum())
