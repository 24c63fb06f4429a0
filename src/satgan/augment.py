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

:class:`FusedDiffAugment` is :func:`diff_augment` with the same draws and its arithmetic on fused
CPU kernels (the trainer uses it; issue 20): for the default policy a hand-written kernel
(:mod:`satgan.augment_kernel`), for others kernels compiled by inductor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from satgan import augment_kernel
from satgan.kernels import COMPILE_MIN_ELEMENTS, cpp_compiler

Tensor = torch.Tensor
Prob = float | Tensor
CUTOUT_RATIO = 0.5  # cutout's square: half the image side (Zhao et al. 2020)


def _uniform(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """One U(0, 1) draw per image, shaped (N, 1, 1, 1) in x's dtype and device."""
    return torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=x.device, dtype=x.dtype)


def _applied(x: Tensor, p: Prob, generator: torch.Generator | None) -> Tensor:
    """Per image, True with probability ``p``: (N, 1, 1, 1) bool. A comparison on the device (no host sync)."""
    return torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=x.device) < p


# Each op is a draw (its random numbers, from torch's RNG, in a fixed order) and an apply (a pure
# function of the image and the draws), so that the applies of a whole policy can be compiled
# into a few fused passes (:class:`FusedDiffAugment`) while the random stream stays the eager one.


def _draw_brightness(x: Tensor, p: Prob, generator: torch.Generator | None) -> tuple[Tensor, ...]:
    return _uniform(x, generator), _applied(x, p, generator)


def _apply_brightness(x: Tensor, u: Tensor, applied: Tensor) -> Tensor:
    return x + (u - 0.5) * applied


def _draw_saturation(x: Tensor, p: Prob, generator: torch.Generator | None) -> tuple[Tensor, ...]:
    return _uniform(x, generator), _applied(x, p, generator)


def _apply_saturation(x: Tensor, u: Tensor, applied: Tensor) -> Tensor:
    # (x - mean) * f + mean written as x + (x - mean) * (f - 1), so an image left alone (f - 1 = 0) stays bit-exact.
    return x + (x - x.mean(dim=1, keepdim=True)) * ((u * 2.0 - 1.0) * applied)


def _draw_contrast(x: Tensor, p: Prob, generator: torch.Generator | None) -> tuple[Tensor, ...]:
    return _uniform(x, generator), _applied(x, p, generator)


def _apply_contrast(x: Tensor, u: Tensor, applied: Tensor) -> Tensor:
    return x + (x - x.mean(dim=(1, 2, 3), keepdim=True)) * ((u - 0.5) * applied)  # u - 0.5: factor - 1


def _translation_shift(x: Tensor, ratio: float) -> tuple[int, int]:
    return int(x.shape[2] * ratio + 0.5), int(x.shape[3] * ratio + 0.5)


def _draw_translation(x: Tensor, p: Prob, generator: torch.Generator | None, ratio: float = 0.125) -> tuple[Tensor, ...]:
    n = x.shape[0]
    sh, sw = _translation_shift(x, ratio)
    dy = torch.randint(-sh, sh + 1, (n, 1), generator=generator, device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1), generator=generator, device=x.device)
    keep = _applied(x, p, generator).view(n, 1)
    return dy * keep, dx * keep


def _shift(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, H, W): out[n, :, i, j] = x[n, :, i - dy[n], j - dx[n]], zero where that is off the image."""
    n, c, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1))  # zero border: row/col 0 and h+1/w+1
    rows = (torch.arange(h, device=x.device) + 1 - dy).clamp(0, h + 1)  # out[i] = x[i - dy]
    cols = (torch.arange(w, device=x.device) + 1 - dx).clamp(0, w + 1)
    out = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2))
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


class _Translate(torch.autograd.Function):
    """:func:`_shift` whose gradient is the shift back, a gather like the forward.

    A zero-filled shift maps each pixel in view to one place, so its transpose is the shift by
    (-dy, -dx): the same numbers autograd's gather backward gives, without its scatter-add into
    a zeroed buffer (the slower pass, in eager and in inductor's kernels). The gradient is this
    Function again, so a double backward (R1) also stays on gathers.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(dy, dx)
        return _shift(x, dy, dx)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        dy, dx = ctx.saved_tensors
        return _Translate.apply(g, -dy, -dx), None, None


def _apply_translation(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    return _Translate.apply(x, dy, dx)


def _cutout_size(h: int, w: int, ratio: float) -> tuple[int, int]:
    """The side of cutout's square in rows and columns: ``ratio`` of the image's, rounded."""
    return int(h * ratio + 0.5), int(w * ratio + 0.5)


def _draw_cutout(x: Tensor, p: Prob, generator: torch.Generator | None, ratio: float = CUTOUT_RATIO) -> tuple[Tensor, ...]:
    n, _, h, w = x.shape
    ch, cw = _cutout_size(h, w, ratio)
    # Centres as in the reference: a square of side s spans [centre - s // 2, centre - s // 2 + s).
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1, 1), generator=generator, device=x.device) - ch // 2
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1, 1), generator=generator, device=x.device) - cw // 2
    return cy, cx, _applied(x, p, generator)


def _apply_cutout(x: Tensor, cy: Tensor, cx: Tensor, applied: Tensor, ratio: float = CUTOUT_RATIO) -> Tensor:
    _, _, h, w = x.shape
    ch, cw = _cutout_size(h, w, ratio)
    i = torch.arange(h, device=x.device).view(1, 1, h, 1)
    j = torch.arange(w, device=x.device).view(1, 1, 1, w)
    inside = (i >= cy) & (i < cy + ch) & (j >= cx) & (j < cx + cw) & applied
    return x * (~inside).to(x.dtype)


def brightness(x: Tensor, p: Prob = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Add one U(-0.5, 0.5) offset per image (Zhao et al. 2020 ``rand_brightness``), with probability p."""
    return _apply_brightness(x, *_draw_brightness(x, p, generator))


def saturation(x: Tensor, p: Prob = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Scale each pixel's distance from its channel mean by U(0, 2) per image (``rand_saturation``), with probability p."""
    return _apply_saturation(x, *_draw_saturation(x, p, generator))


def contrast(x: Tensor, p: Prob = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Scale each image's distance from its mean by U(0.5, 1.5) (``rand_contrast``), with probability p."""
    return _apply_contrast(x, *_draw_contrast(x, p, generator))


def translation(x: Tensor, p: Prob = 1.0, ratio: float = 0.125, generator: torch.Generator | None = None) -> Tensor:
    """Shift each image by whole pixels, up to ``ratio`` of its size per axis, filling with zeros (``rand_translation``).

    With probability 1 - p an image's shift is (0, 0). Implemented as two gathers over a
    1-pixel zero border (indices past the image land on it), so the shapes are fixed and
    the gradient reaches every pixel that stays in view.
    """
    return _apply_translation(x, *_draw_translation(x, p, generator, ratio))


def cutout(x: Tensor, p: Prob = 1.0, ratio: float = CUTOUT_RATIO, generator: torch.Generator | None = None) -> Tensor:
    """Zero a square of ``ratio`` of the image side at a random centre, per image (``rand_cutout``), with probability p.

    The square may be clipped by the image border, as in the paper. The mask comes from
    comparisons with the drawn offsets (no scatter), so its shape never depends on them.
    """
    return _apply_cutout(x, *_draw_cutout(x, p, generator, ratio), ratio=ratio)


Op = Callable[..., Tensor]
POLICIES: dict[str, tuple[Op, ...]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}
# The same ops as (draw, apply) pairs, for FusedDiffAugment.
_PARTS: dict[Op, tuple[Callable[..., tuple[Tensor, ...]], Callable[..., Tensor]]] = {
    brightness: (_draw_brightness, _apply_brightness),
    saturation: (_draw_saturation, _apply_saturation),
    contrast: (_draw_contrast, _apply_contrast),
    translation: (_draw_translation, _apply_translation),
    cutout: (_draw_cutout, _apply_cutout),
}


def _check(x: Tensor, policy: Sequence[str]) -> None:
    unknown = [name for name in policy if name not in POLICIES]
    if unknown:
        raise ValueError(f"expected DiffAugment policies from {sorted(POLICIES)}, got {unknown}")
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {tuple(x.shape)}")


def diff_augment(x: Tensor, p: Prob = 1.0, policy: Sequence[str] = ("color", "translation", "cutout"),
                 generator: torch.Generator | None = None) -> Tensor:
    """DiffAugment: the ops of each named policy in order, each applied per image with probability ``p``.

    (N, C, H, W) -> (N, C, H, W). Call it on every batch D sees, real and fake, in D's and
    in G's step (Zhao et al. 2020); ``("color", "translation", "cutout")`` is the paper's
    choice for small data sets.
    """
    _check(x, policy)
    for name in policy:
        for op in POLICIES[name]:
            x = op(x, p, generator=generator)
    return x


def _apply_policy(x: Tensor, policy: tuple[str, ...], draws: tuple[Tensor, ...], uncut: bool = False) -> Tensor:
    """Every op of ``policy`` applied with its draws (in :func:`_draw_policy`'s order): a pure function, to compile.

    ``uncut`` (``policy`` ends with cutout): (N, 2C, H, W), the result and behind it the image before cutout.
    """
    i = 0
    before = x
    for name in policy:
        for op in POLICIES[name]:
            apply = _PARTS[op][1]
            n = 3 if op is cutout else 2
            before = x
            x = apply(x, *draws[i:i + n])
            i += n
    return torch.cat([x, before], dim=1) if uncut else x


def _draw_policy(x: Tensor, p: Prob, policy: tuple[str, ...], generator: torch.Generator | None) -> tuple[Tensor, ...]:
    """The random numbers of every op of ``policy``, drawn in :func:`diff_augment`'s order."""
    draws: list[Tensor] = []
    for name in policy:
        for op in POLICIES[name]:
            draws.extend(_PARTS[op][0](x, p, generator))
    return tuple(draws)


# ---------------------------------------------------------------- the default policy's hand-written kernel

KERNEL_POLICY = ("color", "translation", "cutout")  # what satgan.augment_kernel runs (the paper's small-data policy)


def _kernel_draws(x: Tensor, draws: tuple[Tensor, ...]) -> augment_kernel.Draws:
    """:func:`_draw_policy`'s draws for :data:`KERNEL_POLICY` as the kernel reads them; each factor is computed as its
    eager apply computes it (in the draws' dtype), so an image an op leaves alone gets exactly 0."""
    u_b, a_b, u_s, a_s, u_c, a_c, dy, dx, cy, cx, a_cut = draws

    def per_image(t: Tensor, dtype: torch.dtype) -> Tensor:
        return t.reshape(-1).to(dtype).contiguous()

    f, i = torch.float32, torch.int32
    return augment_kernel.Draws(
        per_image((u_b - 0.5) * a_b, f), per_image((u_s * 2.0 - 1.0) * a_s, f), per_image((u_c - 0.5) * a_c, f),
        per_image(dy, i), per_image(dx, i), per_image(cy, i), per_image(cx, i), per_image(a_cut, i),
        *_cutout_size(x.shape[2], x.shape[3], CUTOUT_RATIO))


def _kernel_transpose_eager(g: Tensor, d: augment_kernel.Draws) -> Tensor:
    """The kernel's gradient pass as differentiable torch ops (satgan.augment_kernel's formulas), in ``g``'s dtype."""
    n = g.shape[0]

    def per_image(t: Tensor) -> Tensor:
        return t.view(n, 1, 1, 1)

    kappa, sigma = per_image(d.kappa), per_image(d.sigma)
    g_cut = _apply_cutout(g, per_image(d.cy), per_image(d.cx), per_image(d.cut).bool())
    g_k = _Translate.apply(g_cut, -d.dy.view(n, 1).long(), -d.dx.view(n, 1).long())
    g_s = (1.0 + kappa) * g_k - kappa * g_k.mean(dim=(1, 2, 3), keepdim=True)
    return ((1.0 + sigma) * g_s - sigma * g_s.mean(dim=1, keepdim=True)).to(g.dtype)


class _KernelApply(torch.autograd.Function):
    """:data:`KERNEL_POLICY` on the kernel; its gradient is the kernel's gradient pass, or the same as eager torch ops
    when the gradient must itself be differentiable (``create_graph``: R1's double backward)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, kernel: augment_kernel.Kernel, d: augment_kernel.Draws) -> Tensor:  # type: ignore[override]
        ctx.kernel, ctx.d = kernel, d
        return kernel.forward(x, d)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        if torch.is_grad_enabled():
            return _kernel_transpose_eager(g, ctx.d), None, None
        return ctx.kernel.backward(g, ctx.d), None, None


# One compiled function per process, shared by every FusedDiffAugment (dynamo recompiles per input
# signature; a bound method per instance would recompile per instance and reach its recompile limit).
_compiled_apply: Callable[..., Tensor] | None = None
_compiled_for: set[tuple[Any, ...]] = set()  # the input signatures compiled so far (each logged once per process)


class FusedDiffAugment:
    """:func:`diff_augment` with its applies compiled by inductor into a few fused CPU kernels.

    Eager DiffAugment is ~260 small ops per call, most of them full passes over the batch
    (issue 20 measured its three calls per iteration at 29% of a default CPU step). Here the
    random draws run eagerly, in :func:`diff_augment`'s order from the same generator (so a
    seed draws the same augmentation), and one compiled function applies them all, forward
    and backward. Inductor's kernels are fixed code for a fixed shape and thread count, so a
    rerun is bit-identical; they equal eager's within float rounding (fused reductions sum
    in another order).

    Compiled only on CPU tensors of at least ``min_elements`` elements and where a C++
    compiler exists (:func:`cpp_compiler`); otherwise eager. ``log`` gets one line where it
    stays eager, and one per input signature compiled (once per process) with the seconds it
    took (inductor caches kernels on disk, so a rerun pays much less). A compile error falls back to eager for
    the rest of the run, saying why.

    ``uncut`` (the policy must end with cutout): a call returns (N, 2C, H, W), the augmented images and behind
    them the same images before cutout, from the same draws, in one compiled pass (for D's high-pass input:
    :class:`satgan.train.hacks.Augmenter`).

    :data:`KERNEL_POLICY` (the default) on float32 or bfloat16, not ``uncut``, runs on a hand-written
    kernel instead (:mod:`satgan.augment_kernel`: two passes per image, forward and backward ~3x
    faster than inductor's, docs/benchmarks.md), built on the first call that needs it and said in
    the log; where it cannot be built, inductor as above, saying why.
    """

    def __init__(self, policy: Sequence[str] = ("color", "translation", "cutout"), compile: bool = True,
                 log: Callable[[str], None] | None = None, min_elements: int = COMPILE_MIN_ELEMENTS,
                 uncut: bool = False) -> None:
        _check(torch.zeros(1, 1, 1, 1), policy)
        if uncut and tuple(policy)[-1:] != ("cutout",):
            raise ValueError(f"uncut: cutout must be the policy's last op, got {list(policy)}")
        self.policy = tuple(policy)
        self.uncut = uncut
        self.log = log or (lambda msg: None)
        self.min_elements = min_elements
        self.compiler = cpp_compiler() if compile else None
        self.why_eager: str | None = None
        # the hand-written kernel: None until a call needs it, then the kernel, or False where it could not be built
        self.kernel: augment_kernel.Kernel | None | bool = None if self.policy == KERNEL_POLICY and not uncut else False
        if not compile:
            self.why_eager = "compile off"
        elif self.compiler is None:
            self.why_eager = "no C++ compiler found (g++/c++/clang++ or $CXX) for inductor"
            self.log(f"DiffAugment: eager ({self.why_eager})")

    def compiles(self, x: Tensor) -> bool:
        """Whether a call on ``x`` runs the compiled applies (a function of the shape, device and settings only)."""
        return self.why_eager is None and x.device.type == "cpu" and x.numel() >= self.min_elements

    def __call__(self, x: Tensor, p: Prob = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W), one fresh augmentation per image; ``uncut``: (N, 2C, H, W), the result and
        behind it the same images before cutout (the ops and draws of one call without it)."""
        _check(x, self.policy)
        if not self.compiles(x):
            if not self.uncut:
                return diff_augment(x, p, self.policy, generator)
            return _apply_policy(x, self.policy, _draw_policy(x, p, self.policy, generator), uncut=True)
        global _compiled_apply
        draws = _draw_policy(x, p, self.policy, generator)
        kernel = self._kernel(x)
        if kernel is not None:
            return _KernelApply.apply(x, kernel, _kernel_draws(x, draws))
        if _compiled_apply is None:
            # translation's gathers read indices clamped into range by construction, so inductor's per-load bounds
            # check is dropped (it cost ~40% of the gather in a micro-benchmark)
            _compiled_apply = torch.compile(_apply_policy, dynamic=False, options={"assert_indirect_indexing": False})
        # Inductor's CPU kernels vectorise along the innermost dimension, which a channels_last batch makes its 3
        # channels: its kernels ran 1.2-1.4x slower than on an NCHW copy (one pass), so the ops read and write NCHW.
        x = x.contiguous()
        key = (tuple(x.shape), x.dtype, x.requires_grad, torch.is_grad_enabled(), self.uncut,
               torch.is_autocast_enabled("cpu"))
        first = (self.policy, *key) not in _compiled_for
        t0 = time.perf_counter()
        try:
            out = _compiled_apply(x, self.policy, draws, self.uncut)
        except Exception as exc:  # noqa: BLE001 - any inductor failure: stay correct, run eager
            self.why_eager = f"compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            self.log(f"DiffAugment: eager from now on: {self.why_eager}")
            return _apply_policy(x, self.policy, draws, self.uncut)
        if first:
            _compiled_for.add((self.policy, *key))
            self.log(f"DiffAugment: compiled with inductor for {list(x.shape)} {str(x.dtype).removeprefix('torch.')}"
                     f"{' with grad' if x.requires_grad and torch.is_grad_enabled() else ''} "
                     f"in {time.perf_counter() - t0:.1f} s ({self.compiler})")
        return out


    def _kernel(self, x: Tensor) -> augment_kernel.Kernel | None:
        """The hand-written kernel where it runs ``x`` (built on first need, said once), else None."""
        if self.kernel is False or x.dtype not in augment_kernel.DTYPES:
            return None
        if self.kernel is None:
            try:
                self.kernel = augment_kernel.load(self.compiler, self.log)
            except augment_kernel.BuildError as exc:
                self.kernel = False
                self.log(f"DiffAugment: inductor, as the hand-written kernel could not be built ({exc})")
                return None
            self.log(f"DiffAugment: hand-written CPU kernel for {', '.join(self.policy)} ({self.compiler})")
        return self.kernel if isinstance(self.kernel, augment_kernel.Kernel) else None


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
        for key in own:
            src = state[key]
            if not isinstance(src, Tensor) or src.shape != ():
                got = list(src.shape) if isinstance(src, Tensor) else type(src).__name__
                raise ValueError(f"{key}: expected a 0-d tensor, got {got}")
        with torch.no_grad():
            for key, dst in own.items():
                dst.copy_(state[key])
