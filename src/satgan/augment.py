"""Differentiable augmentation for data-efficient GAN training, and its adaptive probability.

DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training",
NeurIPS): with a few hundred training tiles D memorises them within minutes and its feedback
to G degrades. Augmenting every image D sees, reals and fakes alike, in D's step and in G's,
keeps D from memorising while G still learns the un-augmented distribution, because the ops
are differentiable and applied to both sides (augmenting reals only would teach G to make
augmented-looking images). The three policies of the paper:

- ``color``: :func:`brightness` (add U(-0.5, 0.5)), :func:`saturation` (scale the distance from
  the per-pixel channel mean by U(0, 2)) and :func:`contrast` (scale the distance from the image
  mean by U(0.5, 1.5)), in that order;
- ``translation``: :func:`translation` by up to 1/8 of the image in each axis, zero padded;
- ``cutout``: :func:`cutout`, a zeroed square of 1/2 the image side at a random centre.

Each op is applied to each image with probability ``p`` (a float or a 0-d tensor), drawn per
image, as in ADA (Karras et al. 2020, "Training Generative Adversarial Networks with Limited
Data", NeurIPS), whose controller (:class:`AdaController`) tunes ``p`` from how sure D is on
reals. DiffAugment's own setting is p = 1.

Every function takes (N, C, H, W) float tensors in [-1, 1] and returns a tensor of the same
shape, dtype and device. Randomness comes only from torch's RNG (the default generator of the
tensor's device, or ``generator``), shapes never depend on data, and nothing reads a value back
to the host, so the ops can be captured in a CUDA graph, and the same seed gives the same output.
The colour ops can leave [-1, 1] (as in the paper: D sees what the ops make); translation and
cutout only move or zero pixels, so they keep the input's range.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Prob = float | Tensor


def _uniform(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """One U(0, 1) draw per image, shaped (N, 1, 1, 1) in x's dtype and device."""
    return torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=x.device, dtype=x.dtype)


def _applied(x: Tensor, p: Prob, generator: torch.Generator | None) -> Tensor:
    """Per image, True with probability ``p``: (N, 1, 1, 1) bool. A comparison on the device (no host sync)."""
    return torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=x.device) < p


def brightness(x: Tensor, p: Prob = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Add one U(-0.5, 0.5) offset per image (Zhao et al. 2020 ``rand_brightness``), with probability p."""
    offset = _uniform(x, generator) - 0.5
    return x + offset * _applied(x, p, generator)


def saturation(x: Tensor, p: Prob = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Scale each pixel's distance from its channel mean by U(0, 2) per image (``rand_saturation``), with probability p."""
    # (x - mean) * f + mean written as x + (x - mean) * (f - 1), so an image left alone (f - 1 = 0) stays bit-exact.
    change = _uniform(x, generator) * 2.0 - 1.0
    return x + (x - x.mean(dim=1, keepdim=True)) * (change * _applied(x, p, generator))


def contrast(x: Tensor, p: Prob = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Scale each image's distance from its mean by U(0.5, 1.5) (``rand_contrast``), with probability p."""
    change = _uniform(x, generator) - 0.5  # factor - 1, as in saturation
    return x + (x - x.mean(dim=(1, 2, 3), keepdim=True)) * (change * _applied(x, p, generator))


def translation(x: Tensor, p: Prob = 1.0, ratio: float = 0.125, generator: torch.Generator | None = None) -> Tensor:
    """Shift each image by whole pixels, up to ``ratio`` of its size per axis, filling with zeros (``rand_translation``).

    With probability 1 - p an image's shift is (0, 0). Implemented as two gathers over a
    1-pixel zero border (indices past the image land on it), so the shapes are fixed and
    the gradient reaches every pixel that stays in view.
    """
    n, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1), generator=generator, device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1), generator=generator, device=x.device)
    keep = _applied(x, p, generator).view(n, 1)
    dy, dx = dy * keep, dx * keep
    padded = F.pad(x, (1, 1, 1, 1))  # zero border: row/col 0 and h+1/w+1
    rows = (torch.arange(h, device=x.device) + 1 - dy).clamp(0, h + 1)  # out[i] = x[i - dy]
    cols = (torch.arange(w, device=x.device) + 1 - dx).clamp(0, w + 1)
    out = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2))
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def cutout(x: Tensor, p: Prob = 1.0, ratio: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Zero a square of ``ratio`` of the image side at a random centre, per image (``rand_cutout``), with probability p.

    The square may be clipped by the image border, as in the paper. The mask comes from
    comparisons with the drawn offsets (no scatter), so its shape never depends on them.
    """
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # Centres as in the reference: a square of side s spans [centre - s // 2, centre - s // 2 + s).
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1, 1), generator=generator, device=x.device) - ch // 2
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1, 1), generator=generator, device=x.device) - cw // 2
    i = torch.arange(h, device=x.device).view(1, 1, h, 1)
    j = torch.arange(w, device=x.device).view(1, 1, 1, w)
    inside = (i >= cy) & (i < cy + ch) & (j >= cx) & (j < cx + cw) & _applied(x, p, generator)
    return x * (~inside).to(x.dtype)


Op = Callable[..., Tensor]
POLICIES: dict[str, tuple[Op, ...]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


def diff_augment(x: Tensor, p: Prob = 1.0, policy: Sequence[str] = ("color", "translation", "cutout"),
                 generator: torch.Generator | None = None) -> Tensor:
    """DiffAugment: the ops of each named policy in order, each applied per image with probability ``p``.

    (N, C, H, W) -> (N, C, H, W). Call it on every batch D sees, real and fake, in D's and
    in G's step (Zhao et al. 2020); ``("color", "translation", "cutout")`` is the paper's
    choice for small data sets.
    """
    unknown = [name for name in policy if name not in POLICIES]
    if unknown:
        raise ValueError(f"expected DiffAugment policies from {sorted(POLICIES)}, got {unknown}")
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {tuple(x.shape)}")
    for name in policy:
        for op in POLICIES[name]:
            x = op(x, p, generator=generator)
    return x


class AdaController:
    """ADA's augmentation probability (Karras et al. 2020, sec. 3): raise p while D is too sure of the reals.

    The overfitting heuristic r_t = E[sign(D(x_real))] is 0 when D cannot tell reals from
    fakes and approaches 1 as D memorises the reals. Every update moves p by
    ``sign(r_t - target) * images / (speed_kimg * 1000)``, where ``images`` is the number of
    real images observed since the last update, then clamps it to [0, 1]: with the paper's
    ``speed_kimg`` = 500, p can go from 0 to 1 in 500k images. The paper uses target 0.6 and
    an update every 4 minibatches.

    ``p`` is a 0-d tensor on ``device`` that is updated in place, so augmentation ops that read
    it inside a captured CUDA graph see each new value. :meth:`observe` and :meth:`update` are
    device ops only (no host sync); the caller calls :meth:`observe` on every real batch's D
    outputs and :meth:`update` every few steps, or every step with a device-side ``when`` flag
    (what a captured graph needs: the schedule then lives on the device too).
    """

    def __init__(self, target: float = 0.6, speed_kimg: float = 500.0, p_init: float = 0.0,
                 device: torch.device | str = "cpu") -> None:
        if not 0.0 <= target < 1.0 or speed_kimg <= 0 or not 0.0 <= p_init <= 1.0:
            raise ValueError(f"expected 0 <= target < 1, speed_kimg > 0 and 0 <= p_init <= 1, "
                             f"got {target}, {speed_kimg}, {p_init}")
        self.target = target
        self.speed_kimg = speed_kimg
        self.p = torch.full((), p_init, dtype=torch.float32, device=device)
        self.r_t = torch.zeros((), dtype=torch.float32, device=device)  # the last update's heuristic (for logging)
        self._sign_sum = torch.zeros((), dtype=torch.float32, device=device)
        self._count = torch.zeros((), dtype=torch.float32, device=device)

    @torch.no_grad()
    def observe(self, d_real: Tensor) -> None:
        """Accumulate the signs of D's raw outputs (logits) on a batch of reals, one per image."""
        self._sign_sum.add_(torch.sign(d_real.detach().float()).sum())
        self._count.add_(float(d_real.numel()))

    @torch.no_grad()
    def update(self, when: Tensor | None = None) -> None:
        """Move p by the sign of (r_t - target) times the images seen since the last update; a no-op when none were.

        ``when`` (a 0-d bool device tensor): update only where it is true, else keep
        accumulating; the choice is a ``torch.where``, so the same ops run either way.
        """
        seen = self._count
        r_t = self._sign_sum / seen.clamp_min(1.0)
        step = torch.sign(r_t - self.target) * seen / (self.speed_kimg * 1000.0)
        now = torch.ones((), dtype=torch.bool, device=seen.device) if when is None else when
        self.p.copy_(torch.where(now, (self.p + step).clamp(0.0, 1.0), self.p))
        self.r_t.copy_(torch.where(now & (seen > 0), r_t, self.r_t))
        self._sign_sum.masked_fill_(now, 0.0)
        self._count.masked_fill_(now, 0.0)

    @torch.no_grad()
    def all_reduce_(self, all_reduce: Callable[[Tensor], Any]) -> None:
        """Sum the pending sign counts over data-parallel processes (``all_reduce`` sums a tensor in place, e.g.
        ``torch.distributed.all_reduce``), so every process then moves p by the same step, as in ADA's reference code."""
        pending = torch.stack([self._sign_sum, self._count])
        all_reduce(pending)
        self._sign_sum.copy_(pending[0])
        self._count.copy_(pending[1])

    def state_dict(self) -> dict[str, Any]:
        """The live device tensors (like ``nn.Module``; a checkpoint copies them). target and speed are params, not state."""
        return {"p": self.p, "r_t": self.r_t, "sign_sum": self._sign_sum, "count": self._count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` in place (the tensors a captured graph holds stay the same objects).

        Every entry must be a 0-d tensor (ValueError naming it otherwise), so a foreign checkpoint
        cannot resize the state.
        """
        own = self.state_dict()
        for key, dst in own.items():
            src = state[key]
            if not isinstance(src, Tensor) or src.shape != ():
                got = list(src.shape) if isinstance(src, Tensor) else type(src).__name__
                raise ValueError(f"{key}: expected a 0-d tensor, got {got}")
        with torch.no_grad():
            for key, dst in own.items():
                dst.copy_(state[key])
