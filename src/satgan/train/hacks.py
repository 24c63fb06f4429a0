"""GAN training hacks: small device-side functions, and one object per hack that keeps state.

Every function here runs on whatever device its tensors live on and never reads a value
back to the host (no ``.item()``, no Python branching on tensor values), so the whole
training step can be captured in one CUDA graph. Randomness comes from torch's default
generator, which the trainer seeds and checkpoints.

The hacks that keep state across steps (:class:`ReplayBuffer`, :class:`HistoricalAverage`,
:class:`CheckpointSwap`, :class:`Ema`, :class:`LazyR1`, and DiffAugment's
:class:`~satgan.augment.AdaController`) each own that state and save and restore it with
``state_dict()`` / ``load_state_dict()`` (like ``nn.Module``, ``state_dict`` returns live tensors;
the checkpoint copies them to the CPU); the trainer registers each one as a checkpoint part,
so resuming restores every one of them without the checkpoint code naming them. A
``load_state_dict`` checks shapes and raises ``ValueError`` on a mismatch (a crafted or
foreign checkpoint), which the checkpoint code reports in one line.

What each hack is, its params key and its source: :mod:`satgan.train.registry`. Sources:

- DCGAN: Radford et al. 2016, arXiv:1511.06434
- ganhacks #N: Chintala et al., github.com/soumith/ganhacks, tip N
- Salimans et al. 2016: "Improved Techniques for Training GANs", arXiv:1606.03498
- Sønderby et al. 2017 / Arjovsky & Bottou 2017: instance noise
- Shrivastava et al. 2017: experience replay of past fakes (SimGAN)
- Yazıcı et al. 2019 / Karras et al. 2018: EMA of G's weights
- Zhao et al. 2020: DiffAugment; Karras et al. 2020: ADA (:mod:`satgan.augment`)
- Mescheder et al. 2018: R1; Karras et al. 2020 (StyleGAN2): lazy regularisation (:mod:`satgan.losses`)
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from satgan import augment_kernel
from satgan.augment import AdaController, FusedDiffAugment
from satgan.kernels import COMPILE_MIN_ELEMENTS
from satgan.train.runtime import say


def _tensor_like(name: str, value: Any, like: torch.Tensor) -> torch.Tensor:
    """``value`` if it is a tensor shaped like ``like``; else ValueError naming ``name``."""
    if not isinstance(value, torch.Tensor) or value.shape != like.shape:
        got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name}: expected a tensor of shape {list(like.shape)}, got {got}")
    return value


def label_targets(
    batch: int,
    real: bool,
    device: torch.device | str,
    soft_range: tuple[float, float] | None,
    flip_fraction: float,
) -> torch.Tensor:
    """D's per-sample BCE targets for an all-real (``real=True``) or all-fake batch, shape (batch,).

    ``soft_range``: targets drawn uniformly from ``[lo, hi]`` instead of the hard 1 or 0
    (Salimans et al. 2016, ganhacks #6); None keeps hard labels (one-sided smoothing passes
    None for the fakes). ``flip_fraction``: each label is swapped real<->fake with this
    probability (noisy labels, ganhacks #6); a flipped soft label is ``1 - target``.
    """
    if soft_range is None:
        t = torch.full((batch,), 1.0 if real else 0.0, device=device)
    else:
        lo, hi = soft_range
        t = torch.empty(batch, device=device).uniform_(lo, hi)
    if flip_fraction > 0:
        flip = torch.rand(batch, device=device) < flip_fraction
        t = torch.where(flip, 1.0 - t, t)
    return t


def instance_noise_std(step: torch.Tensor, std0: float, decay_iters: int) -> torch.Tensor:
    """Instance-noise std at ``step`` (a device tensor): ``std0`` decaying linearly to 0 at ``decay_iters``.

    Sønderby et al. 2017, ganhacks #13: noise on D's inputs makes real and fake
    distributions overlap early on, so D cannot be perfect and G's gradients stay useful.
    """
    frac = (1.0 - step.float() / max(decay_iters, 1)).clamp(min=0.0)
    return frac * std0


def set_layer_noise(layers: Sequence[nn.Module], std: torch.Tensor, active: bool) -> None:
    """Write ``std`` (a 0-dim device tensor) into each of G's noise layers (:class:`satgan.model.LayerNoise`).

    A device copy, no host sync (graph-safe). ``active`` False (host-side) makes them skip
    drawing the noise, for eager runs once the std has decayed to 0.
    """
    for m in layers:
        m.std.copy_(std)
        m.active = active


def _channels_last(x: torch.Tensor) -> bool:
    """True for a 4-d tensor laid out NHWC (channels_last) and not also plain contiguous."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def add_instance_noise(x: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``x + std * N(0, 1)``, same shape, dtype and layout as ``x``; ``std`` a 0-dim device tensor (0 leaves ``x`` unchanged).

    The noise is drawn into a contiguous buffer in ``x``'s layout: ``randn_like`` of a
    channels_last tensor takes torch's strided path, ~8x slower on a CPU. One fused
    ``addcmul`` then adds it, without a ``std * noise`` temporary.
    """
    b, c, h, w = x.shape
    if _channels_last(x):
        noise = torch.randn(b, h, w, c, dtype=x.dtype, device=x.device).permute(0, 3, 1, 2)
    else:
        noise = torch.randn(x.shape, dtype=x.dtype, device=x.device)
    return torch.addcmul(x, noise, std.to(x.dtype))


@functools.lru_cache(maxsize=16)
def _dihedral_sources(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(8, h*w) int64: for each element of D4, the flat source pixel of every output pixel (square images)."""
    grid = torch.arange(h * w, device=device).view(h, w)
    maps = [torch.rot90(m, k, (0, 1)) for m in (grid, grid.flip(1)) for k in range(4)]
    return torch.stack([m.reshape(-1) for m in maps])


@functools.lru_cache(maxsize=16)
def _dihedral_maps(h: int, w: int) -> torch.Tensor:
    """(8, 3) int32: each element of D4 as an affine map of pixels, source = base + i * si + j * sj, from
    :func:`_dihedral_sources` (so both paths apply the same element for the same draw)."""
    src = _dihedral_sources(h, w, torch.device("cpu"))
    zero = torch.zeros_like(src[:, 0])
    si = src[:, w] - src[:, 0] if h > 1 else zero  # a 1-pixel image: any step
    sj = src[:, 1] - src[:, 0] if w > 1 else zero
    return torch.stack([src[:, 0], si, sj], dim=1).to(torch.int32)


@functools.lru_cache(maxsize=4)
def _say_once(message: str) -> None:
    say(message)


def _dihedral_kernel(x: torch.Tensor) -> augment_kernel.Kernel | None:
    """The hand-written copy for a CPU batch of at least COMPILE_MIN_ELEMENTS 2- or 4-byte elements, where it builds."""
    if x.device.type != "cpu" or x.numel() < COMPILE_MIN_ELEMENTS or x.element_size() not in (2, 4):
        return None
    try:
        return augment_kernel.load(log=say)
    except augment_kernel.BuildError as exc:
        _say_once(f"dihedral flips: a gather, as the hand-written kernel could not be built ({exc})")
        return None


def dihedral_augment(x: torch.Tensor, memory_format: torch.memory_format | None = None) -> torch.Tensor:
    """Apply a random element of the dihedral group D4 (flips and 90-degree rotations) to each image.

    Valid for top-down imagery, which has no canonical "up" (practice). Each image draws one
    of the 8 elements uniformly; all are applied in one gather over a precomputed table of
    source pixels (no host sync, one pass over the batch). Images must be square. The output is in
    ``memory_format`` (``x``'s layout when None). On a CPU batch the gather is a hand-written copy
    (:mod:`satgan.augment_kernel`) that reads either layout and writes the one asked for, ~5x faster
    than torch's gather and a layout change; the same draw, the same bits.
    """
    b, c, h, w = x.shape
    element = torch.randint(0, 8, (b,), device=x.device)
    kernel = _dihedral_kernel(x)
    if kernel is not None:
        nhwc = _channels_last(x) if memory_format is None else memory_format == torch.channels_last
        return kernel.dihedral(x, _dihedral_maps(h, w)[element], nhwc)
    src = _dihedral_sources(h, w, x.device)[element]  # (b, h*w)
    if _channels_last(x):
        pixels = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view: NHWC memory
        out = pixels.gather(1, src[:, :, None].expand(b, h * w, c)).view(b, h, w, c).permute(0, 3, 1, 2)
    else:
        out = x.reshape(b, c, h * w).gather(2, src[:, None, :].expand(b, c, h * w)).view(b, c, h, w)
    return out if memory_format is None else out.contiguous(memory_format=memory_format)


class ReplayBuffer:
    """A fixed-size device tensor of past fakes (experience replay: Shrivastava et al. 2017, ganhacks #8).

    D also scores fakes from earlier G's, so it keeps penalising modes G has left, which
    discourages G from oscillating between them. Writes go to random slots (a random-replacement
    buffer) so that no host-side write pointer is needed; the slots of one push are distinct
    (see :meth:`push`). For a conditional model ``labels`` holds each stored fake's class, written
    and drawn with it (a past fake is scored as the class G drew it for).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        self.images = images  # (size, C, H, W), prefilled by the trainer
        self.labels = labels  # (size,) int64 or None (unconditional)
        if labels is not None and labels.shape != images.shape[:1]:
            raise ValueError(f"labels: expected shape {list(images.shape[:1])}, got {list(labels.shape)}")

    @property
    def size(self) -> int:
        return self.images.shape[0]

    def draw(self, n: int, dtype: torch.dtype) -> torch.Tensor:
        """``n`` random past fakes, (n, C, H, W) in ``dtype``."""
        return self.draw_labelled(n, dtype)[0]

    def draw_labelled(self, n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` random past fakes in ``dtype`` and their labels (None in an unconditional buffer)."""
        idx = torch.randint(0, self.size, (n,), device=self.images.device)
        labels = self.labels.index_select(0, idx) if self.labels is not None else None
        return self.images.index_select(0, idx).to(dtype), labels

    def push(self, fake: torch.Tensor, n_push: int, labels: torch.Tensor | None = None) -> None:
        """Store the first ``n_push`` rows of ``fake`` (detached), and of ``labels``, in ``n_push`` distinct random slots.

        At most ``size`` rows are stored (a push larger than the buffer fills every slot once).
        The slots must be distinct: ``index_copy_`` with a repeated index writes several rows to
        one slot in parallel, and which one lands depends on thread scheduling, so two runs with
        the same seed diverged (issue 14: at step 185 of a 2-thread default train). A prefix of
        ``randperm`` draws them on the device, without a host sync (graph-safe).
        """
        if (labels is None) != (self.labels is None):
            raise ValueError("push: labels are needed exactly when the buffer keeps them (a conditional model)")
        n = min(n_push, self.size)
        if n <= 0:
            return
        idx = torch.randperm(self.size, device=self.images.device)[:n]
        self.images.index_copy_(0, idx, fake[:n].detach().to(self.images.dtype))
        if self.labels is not None and labels is not None:
            self.labels.index_copy_(0, idx, labels[:n])

    def state_dict(self) -> dict[str, Any]:
        return {"images": self.images} if self.labels is None else {"images": self.images, "labels": self.labels}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        images = _tensor_like("images", state["images"], self.images)
        if self.labels is not None:
            if "labels" not in state:
                raise ValueError("labels: missing (the checkpoint's buffer holds no classes: an unconditional run)")
            self.labels.copy_(_tensor_like("labels", state["labels"], self.labels))
        elif "labels" in state:
            raise ValueError("labels: this run is unconditional but the checkpoint's buffer holds classes")
        self.images.copy_(images)


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Salimans et al. 2016: squared L2 distance between mean D features of real and fake batches."""
    return (real_features.detach().float().mean(0) - fake_features.float().mean(0)).pow(2).mean()


def l2_penalty(params: list[torch.Tensor]) -> torch.Tensor:
    """Sum of squared weights (an explicit L2 penalty, so its share of the loss can be logged; practice)."""
    return torch.stack([p.float().pow(2).sum() for p in params]).sum()


def add_weight_penalties(
    loss: torch.Tensor,
    params: list[torch.Tensor],
    l2_weight: float | None,
    history: HistoricalAverage | None,
    history_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss`` plus one network's weight penalties that are on; returns ``(loss, L2 term)``.

    The same for D and G: an explicit L2 penalty ``l2_weight * sum(w^2)`` (practice; None = off,
    its term is then 0 and still logged) and historical averaging ``history_weight *
    ||theta - mean of past theta||^2`` (Salimans et al. 2016; None = off).
    """
    l2 = torch.zeros((), device=loss.device)
    if l2_weight is not None:
        l2 = l2_weight * l2_penalty(params)
        loss = loss + l2
    if history is not None:
        loss = loss + history_weight * history.penalty()
    return loss, l2


class HistoricalAverage:
    """Running mean of a network's parameters over all past steps, and the penalty towards it.

    Salimans et al. 2016: adding ``||theta - mean_t(theta_t)||^2`` to a player's loss damps
    the oscillations of gradient descent on a game. Updates are in place on device tensors.
    """

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.params = params
        self.average = [p.detach().clone().float() for p in params]
        self.count = torch.zeros((), device=params[0].device)

    def penalty(self) -> torch.Tensor:
        return torch.stack([(p.float() - a).pow(2).sum() for p, a in zip(self.params, self.average)]).sum()

    @torch.no_grad()
    def update(self) -> None:
        self.count.add_(1.0)
        w = 1.0 / self.count  # running mean: avg += (theta - avg) / n
        for p, a in zip(self.params, self.average):
            a.add_((p.float() - a) * w)

    def state_dict(self) -> dict[str, Any]:
        return {"average": list(self.average), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        average = state["average"]
        if not isinstance(average, list) or len(average) != len(self.average):
            raise ValueError(f"average: expected a list of {len(self.average)} tensors")
        checked = [_tensor_like(f"average[{i}]", src, dst) for i, (dst, src) in enumerate(zip(self.average, average))]
        count = _tensor_like("count", state["count"], self.count)
        with torch.no_grad():
            for dst, src in zip(self.average, checked):
                dst.copy_(src)
            self.count.copy_(count)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: torch.Tensor) -> None:
    """EMA of G's weights (Yazıcı et al. 2019; Karras et al. 2018), used for sampling.

    The effective decay ramps up as ``min(decay, (1 + t) / (10 + t))`` (TensorFlow's
    ExponentialMovingAverage num_updates rule), so a short run is not dominated by the random
    init. Buffers (BatchNorm running statistics) are copied from G.

    One in-place foreach op per list and no temporaries: ``ema += (1 - d) * (model - ema)``
    is ``lerp_(ema, model, 1 - d)`` with the weight a device tensor (no host sync, graph-safe).
    """
    t = step.float()
    weight = 1.0 - torch.clamp((1.0 + t) / (10.0 + t), max=decay)
    e_params = list(ema.parameters())
    torch._foreach_lerp_(e_params, [p.detach() for p in model.parameters()], [weight] * len(e_params))
    buffers = list(ema.buffers())
    if buffers:  # none with instance norm
        torch._foreach_copy_(buffers, list(model.buffers()))


class Ema:
    """A frozen copy of G whose weights follow G's as an exponential moving average (see :func:`ema_update`).

    Yazıcı et al. 2019, Karras et al. 2018: the averaged G samples better than the raw one; it
    is saved with the model and used for sampling.
    """

    def __init__(self, g: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(g).eval().requires_grad_(False)
        self.decay = decay

    def update(self, g: nn.Module, step: torch.Tensor) -> None:
        ema_update(self.module, g, self.decay, step)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)


class Augmenter:
    """DiffAugment on every image batch D sees (Zhao et al. 2020), with a fixed or an adaptive probability.

    ``p`` is the per-image probability of each op; with an :class:`~satgan.augment.AdaController`
    (ADA, Karras et al. 2020) it is the controller's device tensor, which :meth:`observe_reals`
    and :meth:`end_iteration` move without a host sync. The controller is the stateful part
    (the trainer registers it); this object only holds the settings.

    ``uncut`` (``highpass_d.before_cutout``, with cutout the policy's last op): a call returns
    (N, 2C, H, W), the augmented images and behind them the same images before cutout, for D's
    high-pass channels (:class:`satgan.model.HighPass`): cutout's square has sharp edges that a
    high-pass filter would mostly see, so the residual reads the image without it, while D's main
    path still sees the cutout (Zhao et al. 2020). The ops and their random draws are those of one
    call without it: cutout last is cutout last.
    """

    def __init__(self, policy: Sequence[str], p: float, ada: AdaController | None, ada_every: int,
                 uncut: bool = False) -> None:
        self.policy, self.ada, self.ada_every = tuple(policy), ada, ada_every
        self.p: float | torch.Tensor = ada.p if ada is not None else p
        self.uncut = uncut and "cutout" in self.policy
        # On CPU: the default policy on a hand-written kernel, others compiled by inductor, the uncut copy packed in
        # the same pass (satgan.augment.FusedDiffAugment); it refuses uncut unless cutout is the policy's last op.
        self.fused = FusedDiffAugment(self.policy, log=say, uncut=self.uncut) if self.policy else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W): one fresh augmentation per image; ``uncut``: (N, 2C, H, W), see above."""
        return self.fused(x, self.p) if self.fused is not None else x

    def observe_reals(self, real_logits: torch.Tensor) -> None:
        """ADA's overfitting signal: accumulate sign(D) on the (augmented) reals D was trained on."""
        if self.ada is not None:
            self.ada.observe(real_logits)

    def end_iteration(self, step: torch.Tensor, host_step: int, all_reduce: Callable[[torch.Tensor], Any] | None) -> None:
        """After iteration ``step`` (device tensor): ADA moves p when ``step + 1`` is a multiple of ``ada_every``.

        ``all_reduce`` (DDP): first sums the pending counts over the processes, on the
        iterations that update (``host_step`` decides: DDP runs eager), so every rank keeps one p.
        """
        if self.ada is None:
            return
        if all_reduce is not None and (host_step + 1) % self.ada_every == 0:
            self.ada.all_reduce_(all_reduce)
        self.ada.update(when=torch.remainder(step + 1, self.ada_every) == 0)


class LazyR1:
    """When R1 is due and its last value (Mescheder et al. 2018; lazy: Karras et al. 2020, StyleGAN2).

    Due on iterations that are multiples of ``every``, where the penalty is scaled by ``every``
    so that its average strength does not depend on the interval. ``last`` holds the last
    penalty computed (logged as ``loss_d_r1`` between due iterations); it is saved, so a
    resumed run logs what an uninterrupted one does.
    """

    def __init__(self, gamma: float, every: int, device: torch.device) -> None:
        self.gamma, self.every = gamma, every
        self.last = torch.zeros((), device=device)

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def state_dict(self) -> dict[str, Any]:
        return {"last": self.last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last.copy_(_tensor_like("last", state["last"], self.last))


class CheckpointSwap:
    """Frozen snapshots of an earlier G and D that the live nets train against now and then (ganhacks #8).

    Every ``every`` steps the snapshots are refreshed from the live nets; for the next
    ``length`` steps D is trained on the old G's fakes and G against the old D. ``flag`` is a
    device tensor so the choice is a ``torch.where`` inside the step (graph-safe). The
    snapshots stay in train mode, as the live nets are, so their BatchNorm statistics move
    when they run; they are part of the saved state.
    """

    def __init__(self, g: nn.Module, d: nn.Module, every: int, length: int, device: torch.device) -> None:
        self.g, self.d, self.every, self.length = g, d, every, length
        self.g_old = copy.deepcopy(g).requires_grad_(False)
        self.d_old = copy.deepcopy(d).requires_grad_(False)
        self.flag = torch.zeros((), dtype=torch.bool, device=device)

    def before_step(self, step: int) -> None:
        """Host-side, before iteration ``step``: refresh the snapshots on schedule and set the flag."""
        if step > 0 and step % self.every == 0:
            # refresh the snapshots, then the next `length` steps play against them
            self.g_old.load_state_dict(self.g.state_dict())
            self.d_old.load_state_dict(self.d.state_dict())
        self.flag.fill_(swap_active(step, self.every, self.length))

    def state_dict(self) -> dict[str, Any]:
        return {"g_old": self.g_old.state_dict(), "d_old": self.d_old.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g_old.load_state_dict(state["g_old"])
        self.d_old.load_state_dict(state["d_old"])


def grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """Total L2 norm of the gradients of ``params`` (0-dim device tensor; ganhacks #10 tracks it)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())


def moderated_needs_more_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """True (0-dim bool) when D misclassifies at least half of the real or half of the fake batch.

    The "moderated" schedule (practice, cf. ganhacks #11/#14): train D harder only when it is
    actually losing, instead of a fixed D:G ratio. Reading it costs a host sync, so the
    trainer runs this schedule without graph capture.
    """
    real_wrong = (real_logits <= 0).float().mean()
    fake_wrong = (fake_logits >= 0).float().mean()
    return (real_wrong >= 0.5) | (fake_wrong >= 0.5)


def swap_active(step: int, every: int, length: int) -> bool:
    """Checkpoint swap schedule (ganhacks #8): in iterations ``[k*every, k*every + length)``, k >= 1."""
    return step >= every and (step % every) < length


def generator_adv_loss(fake_logits: torch.Tensor, non_saturating: bool) -> torch.Tensor:
    """G's adversarial loss from D's logits on fakes.

    Non-saturating (Goodfellow et al. 2014, ganhacks #2; "flipped labels"): minimise
    BCE(D(G(z)), 1) = -log D(G(z)), strong gradients while D rejects the fakes. Otherwise the
    original minimax loss log(1 - D(G(z))) = -BCE(D(G(z)), 0), which saturates early on.
    """
    logits = fake_logits.float()
    if non_saturating:
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    return -F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


class FailureTracker:
    """ganhacks #10, track failures early: D's loss stuck near 0, or a gradient norm above a limit."""

    def __init__(self, d_loss_floor: float, patience: int, grad_norm_limit: float) -> None:
        self.d_loss_floor, self.patience, self.grad_norm_limit = d_loss_floor, patience, grad_norm_limit
        self.low_d = 0

    def update(self, loss_d: float, grad_norm_d: float, grad_norm_g: float) -> tuple[list[str], dict[str, float]]:
        """Feed one log point; returns (warning messages, 0/1 warning metrics)."""
        self.low_d = self.low_d + 1 if loss_d < self.d_loss_floor else 0
        stuck = self.low_d >= self.patience
        big = max(grad_norm_d, grad_norm_g) > self.grad_norm_limit
        msgs = []
        if self.low_d == self.patience:
            msgs.append(f"D's loss has stayed below {self.d_loss_floor} for {self.low_d} log points (D is winning; G may have collapsed)")
        if big:
            msgs.append(f"gradient norm D {grad_norm_d:.1f} / G {grad_norm_g:.1f} exceeds {self.grad_norm_limit}")
        return msgs, {"warn_d_loss_near_zero": float(stuck), "warn_grad_norm": float(big)}
