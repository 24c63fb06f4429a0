"""Offline distribution metrics between real and generated tiles.

Every function takes image batches as (N, C, H, W) float arrays in [-1, 1] (numpy,
float16 or float32; memmaps are fine) and returns plain numbers or small dataclasses.

- :func:`sliced_wasserstein_pyramid`: sliced Wasserstein distance between local
  Laplacian-pyramid patches (Karras et al. 2018, "Progressive Growing of GANs", app. D).
- :func:`colour_histogram_distance`: per-channel 1 - histogram intersection
  (Swain & Ballard 1991), i.e. the total-variation distance of the value histograms.
- :func:`spectral_distance`: how far apart the radially averaged log power spectra of two sets
  are (Durall et al. 2020, "Watch your up-convolution": generators miss the real spectrum,
  most visibly at high frequencies); :func:`radial_log_spectrum` gives the spectra to plot.
- :func:`memorization`: nearest training tile of each sample by pixel L2 (chunked over a
  memmap), re-ranked by SSIM (Wang et al. 2004) on the top-k L2 candidates.
- :func:`ssim_pairs`: SSIM of many tile pairs at once, scikit-image's ``structural_similarity``
  (7x7 uniform window, sample covariances) vectorised over pairs.
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
from scipy import ndimage, stats

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


# ------------------------------------------------------------------ spectra


def radial_log_spectrum(images: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(C, R) float64: the radially averaged log10 power spectrum of (N, C, H, W) tiles, averaged over the tiles.

    Per tile and channel: the 2-D power |FFT|^2 / (H W) of the tile minus its mean, averaged
    over the ring of integer radius r = round(sqrt(fx^2 + fy^2)) (fx, fy in cycles per tile),
    r = 1 .. R = min(H, W) // 2 (the Nyquist radius; r = 0, the mean, is what the colour
    histograms measure); then log10 of each ring, then the mean over the tiles. A tile with
    little fine texture has low values at large r. Reads the input ``chunk`` tiles at a time.
    """
    _check_images("images", images)
    n, c, h, w = images.shape
    top = min(h, w) // 2
    if top < 1:
        raise ValueError(f"expected tiles of at least 2 px for a spectrum, got {h}x{w}")
    fy, fx = np.fft.fftfreq(h) * h, np.fft.fftfreq(w) * w
    radius = np.rint(np.hypot(fy[:, None], fx[None, :])).astype(np.int64).ravel()
    keep = (radius >= 1) & (radius <= top)
    ring = radius[keep] - 1
    counts = np.bincount(ring, minlength=top)
    total = np.zeros((c, top))
    for start in range(0, n, chunk):
        x = np.asarray(images[start:start + chunk], np.float64)
        x = x - x.mean(axis=(2, 3), keepdims=True)
        power = (np.abs(np.fft.fft2(x)) ** 2 / (h * w)).reshape(len(x) * c, -1)[:, keep]
        rings = np.stack([np.bincount(ring, weights=row, minlength=top) for row in power]) / counts
        total += np.log10(rings + 1e-12).reshape(len(x), c, top).sum(0)  # 1e-12: a flat tile stays finite
    return total / n


def spectral_distance(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """Mean absolute difference of the mean radial log10 power spectra (:func:`radial_log_spectrum`) of two sets.

    real (N, C, H, W), fake (M, C, H, W) in [-1, 1]. Per channel, the mean over radii 1 .. R
    of |S_real(r) - S_fake(r)| in decades (1.0 = a factor of 10 in power at every radius);
    returns ``{"ch0": d, ..., "mean": d}``. 0 for sets with the same mean spectrum, symmetric.
    Fakes with too much coarse contrast and too little fine texture (the up-convolution
    signature, Durall et al. 2020) show here even where SWD on patches is close.
    """
    _check_pair(real, fake)
    diff = np.abs(radial_log_spectrum(real) - radial_log_spectrum(fake)).mean(axis=1)
    out = {f"ch{c}": float(d) for c, d in enumerate(diff)}
    out["mean"] = float(diff.mean())
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


SSIM_K1, SSIM_K2 = 0.01, 0.03  # Wang et al. 2004's constants, as scikit-image's defaults


def ssim_window(h: int, w: int) -> int:
    """The SSIM window side for (H, W) tiles: 7 (scikit-image's default), or the largest odd side that fits."""
    return min(7, h - (1 - h % 2), w - (1 - w % 2))


def ssim_pairs(a: np.ndarray, b: np.ndarray, chunk: int = 64) -> np.ndarray:
    """(P,) float64 SSIM (Wang et al. 2004) of each pair (a[i], b[i]) of (P, C, H, W) tiles in [-1, 1], channels averaged.

    scikit-image's ``structural_similarity(..., channel_axis=0, data_range=2)`` for many pairs
    at once, with its arithmetic: float32 maps, local means, variances and covariance over a
    uniform :func:`ssim_window` window (``scipy.ndimage.uniform_filter``, sample covariances
    N / (N - 1)), K1 = 0.01, K2 = 0.03, averaged over the window positions that fit inside the
    tile (scikit-image crops the border its reflect padding touched). ``chunk`` pairs per
    filter call: one call filters the five maps of all of them, where scikit-image pays five
    calls and their set-up per pair (and a chunk stays in cache).
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"expected two (P, C, H, W) arrays of tile pairs of the same shape, got {a.shape} and {b.shape}")
    win = ssim_window(a.shape[2], a.shape[3])
    if win < 3:
        raise ValueError(f"expected tiles of at least 3x3 px for SSIM, got {a.shape[2]}x{a.shape[3]}")
    pad = (win - 1) // 2
    cov_norm = np.float32(win * win / (win * win - 1.0))
    c1, c2 = np.float32((SSIM_K1 * 2.0) ** 2), np.float32((SSIM_K2 * 2.0) ** 2)  # data range 2: tiles in [-1, 1]
    out = np.empty(len(a))
    for start in range(0, len(a), chunk):
        x = np.asarray(a[start:start + chunk], np.float32)
        y = np.asarray(b[start:start + chunk], np.float32)
        maps = ndimage.uniform_filter(np.concatenate([x, y, x * x, y * y, x * y], 1), size=(1, 1, win, win))
        ux, uy, uxx, uyy, uxy = np.split(maps[..., pad:maps.shape[2] - pad, pad:maps.shape[3] - pad], 5, axis=1)
        vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
        s_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        out[start:start + len(x)] = s_map.mean(axis=(2, 3), dtype=np.float64).mean(1)
    return out


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al. 2004) of two (C, H, W) tiles in [-1, 1], channels averaged (:func:`ssim_pairs` of one pair)."""
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"expected two (C, H, W) tiles of the same shape, got {a.shape} and {b.shape}")
    return float(ssim_pairs(np.asarray(a)[None], np.asarray(b)[None])[0])


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
    k = idx.shape[1]
    scores = np.empty(idx.shape)
    for start in range(0, len(samples), max(1, chunk // k)):  # about ``chunk`` pairs per batch bounds memory
        stop = min(start + max(1, chunk // k), len(samples))
        s = np.repeat(np.asarray(samples[start:stop], np.float32), k, axis=0)
        rows = idx[start:stop].ravel()
        order = np.argsort(rows, kind="stable")  # a memmap is read in index order
        t = np.empty_like(s)
        t[order] = np.asarray(train[rows[order]], np.float32)
        scores[start:stop] = ssim_pairs(s, t).reshape(stop - start, k)
    j = scores.argmax(1)  # the first of equal scores, as before
    pick = np.arange(len(samples))
    return Memorization(index=idx[pick, j].astype(np.int64), l2=dist[pick, j], ssim=scores[pick, j], threshold=threshold)


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
    i, j = np.array(pairs, np.int64).T
    x = np.asarray(images, np.float32)  # diversity sets are the held-out and generated tiles: small enough to hold
    return float(ssim_pairs(x[i], x[j]).mean())


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

    def summary(self) -> dict[str, float | int]:
        """metrics.json's ``diversity`` block (overall and per class)."""
        return {"fake_mean_ssim": self.fake_mean_ssim, "real_mean_ssim": self.real_mean_ssim,
                "collapsed": int(self.collapsed)}


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

    The quantiles of the beta distributions that bound a binomial proportion
    (``scipy.stats.beta.ppf``): Beta(k, n - k + 1) at alpha/2 for the lower bound (0 when
    k = 0) and Beta(k + 1, n - k) at 1 - alpha/2 for the upper (1 when k = n), alpha = 1 -
    confidence. Conservative: it covers the true proportion at least ``confidence`` of the
    time. 6 of 8 gives (0.349, 0.968).
    """
    if n < 1 or not 0 <= k <= n or not 0.0 < confidence < 1.0:
        raise ValueError(f"expected 0 <= k <= n, n >= 1 and 0 < confidence < 1, got k={k}, n={n}, confidence={confidence}")
    alpha = 1.0 - confidence
    lower = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2.0, k, n - k + 1))
    upper = 1.0 if k == n else float(stats.beta.ppf(1.0 - alpha / 2.0, k + 1, n - k))
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
