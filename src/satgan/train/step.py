"""The GAN step: :class:`Trainer` holds the nets, optimizers and hack state; one iteration is
(1) update D, (2) update G.

Speed (the GPU path; a CPU runs eager in channels_last, in bf16 where it has native bf16,
see :mod:`satgan.train.precision`):
- bf16 autocast (``amp``; ``cpu_bf16`` on a CPU), channels_last (``channels_last``; always on a CPU), fused Adam;
- no host sync inside the step: it returns metric *tensors*; the loop reads them as floats
  only every ``log_every`` steps (that is also when NaN/inf is detected);
- ``compile: cuda_graph`` captures the whole D+G step in one CUDA graph (randomness
  included: noise, labels, augmentation and replay indices are drawn inside it);
  ``torch_compile`` compiles G and D instead. Either is used only once it has agreed with
  eager steps from the same state, else training goes on eagerly. That check is
  :mod:`satgan.train.fastpath`'s runner, which the loop builds around :meth:`Trainer.iteration`
  and hands to :meth:`Trainer.run_step` (this module does not import it).

Resumable state: every object whose state a resumed run needs is registered once, in
``__init__``, as a named checkpoint part (:attr:`Trainer.parts`: the nets, the optimizers,
each stateful hack, the data feed, the step counter and the RNG streams).
:mod:`satgan.train.checkpoint` saves and restores exactly those parts, so a new stateful hack
is saved by registering it where it is created.

Class-conditional training (``train.conditional``, :class:`~satgan.model.ModelConfig`'s
``conditional``): real labels come with the real batches from the data feed; fake labels are
drawn inside the step, on the device, as the labels of random training tiles (so they follow
the training label distribution; see :meth:`Trainer.fake_labels`). ``projection`` conditions D
and G and changes no loss; ``acgan`` adds ``acgan_weight`` x the class cross-entropy of D's
auxiliary classifier: on reals and fakes in (1) update D, on fakes in (2) update G. An
unconditional trainer draws exactly the random numbers it drew before conditional models
existed, labelled data or not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from satgan import losses as L
from satgan.augment import AdaController
from satgan.model import (
    HighPass,
    LayerNoise,
    ModelConfig,
    build_discriminator,
    build_generator,
    discriminator_features,
    discriminator_outputs,
    features_and_outputs,
    sample_latent,
    sampling_rng,
)
from satgan.train import hacks as H
from satgan.train.checkpoint import PROGRESS_PART, Stateful
from satgan.train.data import RealFeed, labels_tensor
from satgan.train.params import TrainParams
from satgan.train.precision import choose_precision
from satgan.train.runtime import Dist, RngState, say, seed_everything

P = TypeVar("P", bound=Stateful)
Metrics = dict[str, torch.Tensor]  # one step's metrics, device tensors: the loop reads them every log_every steps


class Sides(NamedTuple):
    """One value per batch D scores in an update: the reals, the fresh fakes and the replayed past fakes.

    A field is None where there is nothing: ``old`` without replay, every field for the class
    logits of a D without a classifier or the labels of an unconditional model.
    """

    real: torch.Tensor | None
    fake: torch.Tensor | None
    old: torch.Tensor | None


@dataclass(frozen=True)
class DFakes:
    """D's fake side of one update (:meth:`Trainer.d_fakes`), before augmentation and noise.

    ``fake``: the batch D scores as this iteration's fakes (G's, or the older G's during a
    checkpoint swap), which the replay buffer then keeps; ``old``: past fakes drawn from the
    replay buffer (None without replay); ``y_*``: their classes (None when unconditional).
    """

    fake: torch.Tensor
    y_fake: torch.Tensor | None
    old: torch.Tensor | None = None
    y_old: torch.Tensor | None = None


@dataclass(frozen=True)
class DLogits:
    """D's logits on one update's reals and fresh fakes, as D trained on them; :meth:`Trainer.update_d` returns them."""

    real: torch.Tensor
    fake: torch.Tensor


@dataclass(frozen=True)
class DScore:
    """D's scoring of one update's batches (:meth:`Trainer.score_d`), still in the autograd graph.

    ``adv``: the adversarial loss (past fakes weighted in); ``cls_loss``: acgan's class
    cross-entropy before ``acgan_weight`` (None otherwise); ``cls``: the class logits.
    """

    adv: torch.Tensor
    cls_loss: torch.Tensor | None
    logits: DLogits
    cls: Sides


def d_accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> Metrics:
    """D's accuracy on reals (share with sigmoid > 0.5, i.e. logit > 0) and on fakes (share with logit <= 0).

    Thresholded at 0.5 whatever the soft-label targets: D "says real" when its probability is
    above one half. Device tensors (no host sync), like every other metric of the step. Their
    keys are :data:`satgan.train.fastpath.ACCURACY_METRICS` (checked with an absolute tolerance there).
    """
    return {"d_acc_real": (real_logits.float() > 0).float().mean(),
            "d_acc_fake": (fake_logits.float() <= 0).float().mean()}


def model_config(p: TrainParams, image_size: int, channels: int, n_classes: int = 0) -> ModelConfig:
    """The architecture (and latent distribution) implied by the params and the data's sidecar.

    ``n_classes``: the classes of labelled data (its sidecar's ``classes``); used only when
    ``train.conditional`` is not ``none`` (labelled data trains unconditionally then).
    """
    h = p.hacks
    conditional = p.conditional != "none"
    return ModelConfig(
        image_size=image_size,
        channels=channels,
        nz=p.nz,
        ngf=p.ngf,
        ndf=p.ndf,
        g_activation="leaky_relu" if h.leaky_relu_g else "relu",
        norm="instance" if h.instance_norm else "batch",
        g_dropout=h.g_dropout.p if h.g_dropout.enabled else 0.0,
        g_dropout_at_sampling=h.g_dropout.enabled and h.g_dropout.at_sampling,
        upsample=h.checkerboard.mode if h.checkerboard.enabled else "deconv",
        downsample="avg_pool" if h.avg_pool_d else "strided",
        g_layer_noise=h.g_layer_noise.enabled,
        minibatch_stddev=h.minibatch_stddev,
        spectral_norm=h.spectral_norm,
        init=p.init,
        latent="gaussian" if h.gaussian_latent else "uniform",
        conditional=p.conditional,
        n_classes=n_classes if conditional else 0,
        g_bilinear_top=h.bilinear_g.blocks if h.bilinear_g.enabled else 0,
        g_pixel_noise=h.g_pixel_noise.blocks if h.g_pixel_noise.enabled else 0,
        d_highpass=h.highpass_d.enabled,
    )


class Progress:
    """Iterations done, on the host (``step``) and on the device (``step_t``, read by the decay schedules)."""

    def __init__(self, device: torch.device) -> None:
        self.step = 0
        self.step_t = torch.zeros((), dtype=torch.int64, device=device)

    def advance(self) -> None:
        self.step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        step = state["step"]
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step: expected an integer >= 0, got {step!r}")
        self.step = step
        self.step_t.fill_(step)


class DView:
    """The real and fake batch exactly as (1) update D handed them to D, kept for the log (``train.d_view``).

    With several D updates in an iteration (``extra_steps``, ``moderated``) the last one's batches are kept.

    Karpathy 2019, "A Recipe for Training Neural Networks": visualize just before the net. The
    step copies the first ``n`` images of each into fixed buffers (no random draw, nothing the
    step reads back, so training is bit-identical with it on or off). Eager steps copy only on
    the iterations :meth:`due` names (``armed``, set on the host before each iteration); a CUDA
    graph replays one fixed schedule, so with ``always`` the copy is captured and runs every step,
    and the buffers hold the last iteration's batches whenever the loop reads them.
    """

    def __init__(self, n: int, channels: int, size: int, every: int, device: torch.device, always: bool) -> None:
        self.real = torch.zeros(n, channels, size, size, device=device)
        self.fake = torch.zeros(n, channels, size, size, device=device)
        self.every, self.always = every, always
        self.armed = False

    def due(self, step: int) -> bool:
        """Whether iteration ``step`` (0-based: it starts with ``step`` iterations done) is logged: 0 and every ``every``."""
        return step % self.every == 0

    @torch.no_grad()
    def capture(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        """Copy D's inputs (after augmentation and noise) into the buffers when armed (always under a CUDA graph)."""
        if self.always or self.armed:
            n, c = self.real.shape[:2]  # highpass_d may pack the uncut image behind the C channels D sees: not shown
            self.real.copy_(real[:n, :c].detach())
            self.fake.copy_(fake[:n, :c].detach())

    def grid(self) -> np.ndarray:
        """uint8 (H, W, C) image: the real batch's grid, a white gap, the fake batch's grid (host sync)."""
        from satgan.imageops import make_grid, side_by_side

        nrow = int(math.ceil(math.sqrt(self.real.shape[0])))
        # NaN inputs (a broken dataset: the loop stops on them at its next metric read) are shown as 0, not cast
        real, fake = (make_grid(torch.nan_to_num(t.float()).cpu().numpy(), nrow=nrow) for t in (self.real, self.fake))
        both = side_by_side(real, fake, gap=8)
        return both[..., 0] if both.shape[-1] == 1 else both


class Trainer:
    """The nets, optimizers and hack state; :meth:`run_step` is one D+G iteration.

    Public pieces of an iteration, in order: :meth:`real_batch` and :meth:`latent` (inputs;
    :meth:`labelled_real_batch` and :meth:`fake_labels` add the classes of a conditional model),
    :meth:`update_d` (phase 1: :meth:`d_fakes`, D's fake side, then :meth:`score_d`, D's scoring,
    then D's optimizer step), :meth:`update_g` (phase 2), :meth:`iteration` (both phases,
    device-side only) and :meth:`run_step` (one iteration with its host-side bookkeeping, through
    the loop's checked fast path when it passes one).

    ``labels``: the tiles' int64 class indices, needed when ``cfg`` is conditional (ignored otherwise).
    """

    def __init__(self, p: TrainParams, cfg: ModelConfig, array: np.ndarray, device: torch.device, dist: Dist,
                 labels: np.ndarray | None = None) -> None:
        self.p, self.h, self.cfg, self.device, self.dist = p, p.hacks, cfg, device, dist
        self.parts: dict[str, Stateful] = {}
        h = self.h
        self.conditional, self.acgan = cfg.is_conditional, cfg.conditional == "acgan"
        if self.conditional and labels is None:
            raise ValueError(f"conditional {cfg.conditional!r} training needs the tiles' labels")
        labels = labels if self.conditional else None
        # every training tile's label on the device: real batches carry theirs, fake labels are drawn from it
        self.class_labels = labels_tensor(labels, device)
        cuda = device.type == "cuda"
        self.batch = p.batch_size
        self.d_steps = h.extra_steps.d_steps if h.extra_steps.enabled else 1
        self.g_steps = h.extra_steps.g_steps if h.extra_steps.enabled else 1
        self.n_replay = round(h.replay.fraction * self.batch) if h.replay.enabled else 0
        # D's output for an image depends on the rest of its batch only through BatchNorm's batch
        # statistics or the minibatch-stddev layer; without them one concatenated forward is exact.
        self.d_mixes_batch = (cfg.norm == "batch" and not cfg.spectral_norm) or cfg.minibatch_stddev
        self.precision = choose_precision(device, p.amp, p.cpu_bf16, p.channels_last)
        self.channels_last = self.precision.channels_last
        self.amp = self.precision.autocast()
        say(f"precision: {self.precision.describe()}")

        # Same seed on every rank so the initial weights agree; ranks then diverge in their noise.
        seed_everything(p.seed)
        self.g = self._own("g", build_generator(cfg).to(device))
        self.d = self._own("d", build_discriminator(cfg).to(device))
        if self.channels_last:
            self.g.to(memory_format=torch.channels_last)
            self.d.to(memory_format=torch.channels_last)
        for m in self.d.modules():
            if isinstance(m, HighPass):
                m.fused.log = say  # its compiled kernels say what they compiled, and how long it took (issue 20)
        self.ema = self._own("ema", H.Ema(self.g, h.ema.decay)) if h.ema.enabled else None
        self.swap = (self._own("checkpoint_swap", H.CheckpointSwap(self.g, self.d, h.checkpoint_swap.every,
                                                                   h.checkpoint_swap.length, device))
                     if h.checkpoint_swap.enabled else None)
        # ganhacks #13: G's noise layers (the swap's old G trains with them too); their std is set each iteration
        self.g_noise = [m for net in [self.g] + ([self.swap.g_old] if self.swap is not None else [])
                        for m in net.modules() if isinstance(m, LayerNoise)]

        lazy_r1 = h.r1.enabled and h.r1.every > 1
        # the graph replays one fixed schedule: DDP, the moderated schedule and lazy R1 decide on the host
        self.graph_mode = (p.compile == "cuda_graph" and cuda and not dist.enabled and not h.moderated.enabled
                           and not lazy_r1)
        fused = True  # fused Adam: one kernel per step on CUDA and on CPUs (torch >= 2.4), ~5x less than foreach on 2 CPU cores
        self.opt_g = self._own("opt_g", torch.optim.Adam(self.g.parameters(), lr=p.lr_g, betas=(p.beta1, p.beta2),
                                                         fused=fused, capturable=self.graph_mode))
        if h.sgd_discriminator.enabled:
            # ganhacks #9: SGD for D, Adam for G
            opt_d: torch.optim.Optimizer = torch.optim.SGD(self.d.parameters(), lr=h.sgd_discriminator.lr,
                                                           momentum=h.sgd_discriminator.momentum)
        else:
            opt_d = torch.optim.Adam(self.d.parameters(), lr=p.lr_d, betas=(p.beta1, p.beta2), fused=fused,
                                     capturable=self.graph_mode)
        self.opt_d = self._own("opt_d", opt_d)
        hist = h.historical_averaging.enabled
        self.hist_g = self._own("historical_average_g", H.HistoricalAverage(list(self.g.parameters()))) if hist else None
        self.hist_d = self._own("historical_average_d", H.HistoricalAverage(list(self.d.parameters()))) if hist else None
        self.progress = self._own(PROGRESS_PART, Progress(device))
        # DiffAugment (Zhao et al. 2020), its ADA controller (Karras et al. 2020) a stateful part
        da = h.diffaugment
        self.ada = (self._own("ada", AdaController(da.ada.target, da.ada.speed_kimg, da.p, device))
                    if da.enabled and da.ada.enabled else None)
        self.augment = (H.Augmenter(da.policy, da.p, self.ada, da.ada.every,
                                    uncut=h.highpass_d.enabled and h.highpass_d.before_cutout) if da.enabled else None)
        # What D receives, for the log (Karpathy 2019); not a checkpoint part: it holds no training state
        self.view = (DView(min(self.batch, p.n_samples), cfg.channels, cfg.image_size, p.sample_every, device,
                           always=self.graph_mode) if p.d_view else None)
        self.r1 = self._own("r1", H.LazyR1(h.r1.gamma, h.r1.every, device)) if h.r1.enabled else None

        # Replay buffer prefilled from the initial G (eval mode: no BN statistics are touched).
        self.replay: H.ReplayBuffer | None = None
        if h.replay.enabled:
            with torch.no_grad():
                self.g.eval()
                z = sample_latent(cfg, h.replay.size, device=device)
                y = self.fake_labels(h.replay.size)
                self.replay = self._own("replay", H.ReplayBuffer(self.generate(self.g, z, y).float().contiguous(), y))
                self.g.train()

        # Fixed noise for the sample grid, from its own generator so it never shifts the training RNG.
        # Conditional: one row per class, the same latents in every row (a column is one latent).
        noise = torch.Generator().manual_seed(p.seed)
        self.fixed_labels: torch.Tensor | None = None
        if self.conditional:
            self.grid_nrow = max(1, p.n_samples // cfg.n_classes)
            self.fixed_noise = sample_latent(cfg, self.grid_nrow, noise).repeat(cfg.n_classes, 1, 1, 1).to(device)
            self.fixed_labels = torch.arange(cfg.n_classes).repeat_interleave(self.grid_nrow).to(device)
        else:
            self.grid_nrow = int(math.ceil(math.sqrt(p.n_samples)))
            self.fixed_noise = sample_latent(cfg, p.n_samples, noise).to(device)

        self.feed = self._own("data", RealFeed(array, device, self.batch, self.d_steps, p.data_budget_mb,
                                               self.channels_last, p.seed, dist.rank, labels))
        self.rng = self._own("rng", RngState())  # last: restored after every part that might draw

        self.g_run: nn.Module = self.g
        self.d_run: nn.Module = self.d
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if cuda else None
            # broadcast_buffers=False: D runs several forwards per backward and BN buffers are
            # updated in place; broadcasting them would break autograd (and rank 0 checkpoints anyway).
            self.g_run = DDP(self.g, device_ids=ids, broadcast_buffers=False)
            self.d_run = DDP(self.d, device_ids=ids, broadcast_buffers=False)
        self.d_fwd: nn.Module = self.d  # raw D for G's step: D's gradients are not wanted there

    @staticmethod
    def _all_reduce(t: torch.Tensor) -> None:
        import torch.distributed as tdist

        tdist.all_reduce(t)

    def _own(self, name: str, part: P) -> P:
        """Register ``part`` as checkpoint part ``name`` (saved and restored by name) and return it."""
        assert name not in self.parts, name
        self.parts[name] = part
        return part

    @property
    def step(self) -> int:
        """Iterations done."""
        return self.progress.step

    @property
    def resident(self) -> bool:
        return self.feed.resident

    def seed_rank_streams(self) -> None:
        """Before the first step, fresh or restored: DDP ranks > 0 draw their own noise and batches.

        Every rank builds the trainer from the same seed (so the initial weights agree) and a
        resumed run restores rank 0's RNG everywhere; without a stream of its own, each rank
        would draw rank 0's latents and batches and DDP would average identical gradients.
        Derived from (seed, rank, step), so a resume gives each rank a stream again.
        """
        if self.dist.rank > 0:
            torch.manual_seed(hash((self.p.seed, self.dist.rank, self.step)) % 2**63)

    # ---------------------------------------------------------------- inputs

    def real_batch(self, i: int) -> torch.Tensor:
        """The i-th real batch of this iteration, augmented (dihedral flips/rotations when on)."""
        return self.labelled_real_batch(i)[0]

    def labelled_real_batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`real_batch` and its tiles' labels ((batch,) int64 on the device; None when unconditional).

        Flips and rotations leave a tile's class as it is.
        """
        x, y = self.feed.labelled_batch(i)
        if self.h.dihedral_augment:
            x = H.dihedral_augment(x, torch.channels_last if self.channels_last else None)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def latent(self) -> torch.Tensor:
        """A batch of latents from the model's latent distribution, on the device (torch's default generator)."""
        return sample_latent(self.cfg, self.batch, device=self.device)

    def fake_labels(self, n: int | None = None) -> torch.Tensor | None:
        """``n`` (default: a batch of) class labels for fakes, on the device; None for an unconditional model.

        The labels of random training tiles, so fakes follow the training label distribution: D
        sees the same class mix among fakes as among reals and can tell them apart only by how
        they look (uniform labels on imbalanced data would let it learn the class frequencies
        instead, which gives G nothing to learn), and each class is trained in proportion to the
        real tiles D has of it. On balanced data this is uniform. An index draw: no host sync,
        captured inside the CUDA graph like the latents.
        """
        if self.class_labels is None:
            return None
        n = self.batch if n is None else n
        idx = torch.randint(0, self.class_labels.shape[0], (n,), device=self.device)
        return self.class_labels.index_select(0, idx)

    def fake_inputs(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A batch of latents and, for a conditional model, the classes to make (None otherwise)."""
        return self.latent(), self.fake_labels()

    def generate(self, g: nn.Module, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """``g(z)``, or ``g(z, y)`` for a conditional G (``g`` may be G, its EMA, its snapshot or its DDP wrapper)."""
        return g(z) if y is None else g(z, y)

    def discriminate(self, d: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits, class logits or None)`` of ``d`` on ``x`` (with labels ``y`` for a conditional D)."""
        return discriminator_outputs(d(x) if not self.conditional else d(x, y))

    def _class_loss(self, class_logits: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor:
        """The AC-GAN class cross-entropy (0 without class logits)."""
        if class_logits is None or labels is None:
            return torch.zeros((), device=self.device)
        return L.class_cross_entropy(class_logits, labels)

    # ---------------------------------------------------------------- (1) update D

    def d_view(self, x: torch.Tensor, noise_std: torch.Tensor | None) -> torch.Tensor:
        """What D sees of an image batch: DiffAugment (when on; a fresh draw per call), then instance noise (when on).

        Every batch D scores goes through here, reals and fakes, in D's step and in G's
        (Zhao et al. 2020: augmenting both sides in both steps keeps G from learning the
        augmentations). ``noise_std`` None: no instance noise this iteration.
        """
        if self.augment is not None:
            x = self.augment(x)
        if noise_std is not None:
            x = H.add_instance_noise(x, noise_std)
        return x

    def d_fakes(self, fake: torch.Tensor, y_fake: torch.Tensor | None) -> DFakes:
        """D's fake side of one update: ``fake`` (detached; the older G's instead while a checkpoint swap is on) and
        past fakes from the replay buffer (when on), with their classes (conditional)."""
        if self.swap is not None:
            with torch.no_grad(), self.amp():
                old = self.generate(self.swap.g_old, self.latent(), y_fake)  # the older G makes the same classes
            fake = torch.where(self.swap.flag, old.to(fake.dtype), fake)  # ganhacks #8: D vs an older G
        if self.replay is None:
            return DFakes(fake, y_fake)
        past, y_past = self.replay.draw_labelled(self.n_replay, fake.dtype)
        return DFakes(fake, y_fake, past, y_past)

    def score_d(self, real: torch.Tensor, y_real: torch.Tensor | None, fakes: DFakes,
                noise_std: torch.Tensor | None) -> DScore:
        """D's scoring of the reals and ``fakes``: what D sees of each (:meth:`d_view`), its targets, its forward(s)
        and its losses, still in the autograd graph (augmentation and noise are drawn afresh for replayed fakes)."""
        x = Sides(self.d_view(real, noise_std), self.d_view(fakes.fake, noise_std),
                  self.d_view(fakes.old, noise_std) if fakes.old is not None else None)
        if self.view is not None:
            self.view.capture(x.real, x.fake)  # train.d_view: exactly these tensors go into D below
        y = Sides(y_real, fakes.y_fake, fakes.y_old)
        t_real, t_fake = self._d_targets(self.batch, True), self._d_targets(self.batch, False)
        with self.amp():
            logits, cls = self._d_forward(x, y)
            adv, cls_loss = self._d_loss(logits, cls, y, t_real, t_fake)
        assert logits.real is not None and logits.fake is not None
        return DScore(adv, cls_loss, DLogits(logits.real, logits.fake), cls)

    def _d_targets(self, n: int, real: bool) -> torch.Tensor:
        """D's targets for ``n`` reals or fakes: hard, soft (``soft_labels``; one-sided: reals only) and/or noisy."""
        soft = self.h.soft_labels
        flip = self.h.noisy_labels.fraction if self.h.noisy_labels.enabled else 0.0
        soft_range = (soft.real if real else soft.fake) if soft.enabled and (real or not soft.one_sided) else None
        return H.label_targets(n, real, self.device, soft_range, flip)

    def _d_forward(self, x: Sides, y: Sides) -> tuple[Sides, Sides]:
        """D's logits and class logits (fields None without them) on the real, fresh-fake and past-fake batches."""
        if self.h.separate_batches and self.d_mixes_batch:
            # ganhacks #4: all-real and all-fake batches, so BN statistics never mix the two.
            # Replayed fakes get a forward of their own for the same reason: mixed into the
            # fresh batch, their statistics made D's view of fresh fakes differ from the
            # all-fresh batch G is scored on, and once G collapsed that batch normalised its
            # sameness away, D called it real in G's step and G stalled (docs/experiments.md).
            outs = [self.discriminate(self.d_run, xi, yi) if xi is not None else (None, None) for xi, yi in zip(x, y)]
            return Sides(*(o[0] for o in outs)), Sides(*(o[1] for o in outs))
        # One forward: asked for, or D scores each image on its own (no BatchNorm, no
        # batch-stddev layer), where separate batches would give the same logits at more cost.
        labels = torch.cat([t for t in y if t is not None]) if self.conditional else None
        logits, cls = self.discriminate(self.d_run, torch.cat([t for t in x if t is not None]), labels)
        return self._split(logits, x.old is not None), self._split(cls, x.old is not None)

    def _split(self, t: torch.Tensor | None, has_old: bool) -> Sides:
        """One forward's output over real, fresh-fake (and past-fake) rows cut back into its batches."""
        if t is None:
            return Sides(None, None, None)
        b = self.batch
        return Sides(t[:b], t[b:2 * b], t[2 * b:] if has_old else None)

    def _d_loss(self, logits: Sides, cls: Sides, y: Sides, t_real: torch.Tensor,
                t_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's adversarial loss and, for acgan, its class loss (before ``acgan_weight``; None otherwise)."""
        assert logits.real is not None and logits.fake is not None
        frac = self.n_replay / self.batch
        loss_fake = self._d_term(logits.fake.float(), t_fake)
        if logits.old is not None:
            # past fakes carry `replay.fraction` of the fake term, as when they filled that share of the batch
            t_old = self._d_targets(self.n_replay, False)
            loss_fake = (1 - frac) * loss_fake + frac * self._d_term(logits.old.float(), t_old)
        adv = self._d_term(logits.real.float(), t_real) + loss_fake
        if not self.acgan:
            return adv, None
        # Odena et al. 2017: D's classifier learns the class of reals and of fakes (past fakes weighted as above)
        cls_fake = self._class_loss(cls.fake, y.fake)
        if cls.old is not None:
            cls_fake = (1 - frac) * cls_fake + frac * self._class_loss(cls.old, y.old)
        return adv, self._class_loss(cls.real, y.real) + cls_fake

    def _d_term(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One side of D's loss toward per-sample ``targets``: BCE, or with ``hinge_loss`` the hinge with sign 2t - 1."""
        if self.h.hinge_loss:
            return L.hinge(logits, targets * 2.0 - 1.0)  # targets are hard 0/1 here (soft labels are refused)
        return F.binary_cross_entropy_with_logits(logits, targets)

    def update_d(self, real: torch.Tensor, fake: torch.Tensor, noise_std: torch.Tensor | None,
                 r1: bool = False, y_real: torch.Tensor | None = None,
                 y_fake: torch.Tensor | None = None) -> tuple[Metrics, DLogits]:
        """One D update on an all-real and an all-fake batch (``fake`` already detached); with ``r1`` the R1 penalty too.

        ``y_real``, ``y_fake``: the batches' class labels, required for a conditional model.
        Returns the metric tensors and D's logits on the reals and the fresh fakes (the moderated schedule reads them).
        """
        if self.conditional and (y_real is None or y_fake is None):
            raise ValueError("a conditional model's D update needs y_real and y_fake")
        fakes = self.d_fakes(fake, y_fake)
        real_in = real.detach().requires_grad_(True) if r1 else real  # R1 differentiates D(view(real)) w.r.t. it
        score = self.score_d(real_in, y_real, fakes, noise_std)
        if self.augment is not None:
            self.augment.observe_reals(score.logits.real.detach())  # ADA's sign statistic, on what D was trained on
        loss = score.adv if score.cls_loss is None else score.adv + self.p.acgan_weight * score.cls_loss
        if r1 and self.r1 is not None:
            # Mescheder et al. 2018, from this forward (no extra D pass); lazy: scaled by the interval (StyleGAN2)
            penalty = L.r1_from_logits(score.logits.real, real_in, self.r1.gamma)
            self.r1.last.copy_(penalty.detach())
            loss = loss + self.r1.every * penalty
        loss, l2 = self._penalised(loss, self.d, self.h.l2_penalty.d, self.hist_d)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = H.grad_norm(list(self.d.parameters()))
        self.opt_d.step()
        if self.replay is not None:
            self.replay.push(fakes.fake, self.n_replay, fakes.y_fake)  # as G made them: views are drawn afresh on replay
        return self._d_metrics(loss, l2, gnorm, score, y_real, fakes.y_fake), score.logits

    def _d_metrics(self, loss: torch.Tensor, l2: torch.Tensor, gnorm: torch.Tensor, score: DScore,
                   y_real: torch.Tensor | None, y_fake: torch.Tensor | None) -> Metrics:
        """(1)'s metric tensors: D's losses, mean outputs, accuracies and gradient norm (acgan: its classifier's too)."""
        real_logits, fake_logits = score.logits.real.detach(), score.logits.fake.detach()
        out = {
            "loss_d": loss.detach(), "loss_d_adv": score.adv.detach(), "loss_d_l2": l2.detach(),
            "d_real": torch.sigmoid(real_logits.float()).mean(),
            "d_fake": torch.sigmoid(fake_logits.float()).mean(),
            # D's accuracy at sigmoid 0.5 (logit 0), whatever the (soft, noisy, hinge) targets it trained on
            **d_accuracy(real_logits, fake_logits),
            "grad_norm_d": gnorm,
        }
        if self.r1 is not None:
            out["loss_d_r1"] = self.r1.last.clone()
        if score.cls_loss is not None:
            # the classifier's loss (before acgan_weight) and its accuracy on reals and on fresh fakes
            out["loss_d_cls"] = score.cls_loss.detach()
            out["cls_acc_real"] = L.class_accuracy(score.cls.real.detach(), y_real)  # type: ignore[union-attr, arg-type]
            out["cls_acc_fake"] = L.class_accuracy(score.cls.fake.detach(), y_fake)  # type: ignore[union-attr, arg-type]
        return out

    # ---------------------------------------------------------------- (2) update G

    def update_g(self, fake: torch.Tensor, real: torch.Tensor, noise_std: torch.Tensor | None,
                 y_fake: torch.Tensor | None = None) -> Metrics:
        """One G update through the raw D (D's parameters frozen for this backward); ``y_fake``: the fakes' classes (conditional)."""
        h = self.h
        if self.conditional and y_fake is None:
            raise ValueError("a conditional model's G update needs y_fake")
        d_params = list(self.d.parameters())
        for q in d_params:
            q.requires_grad_(False)
        d_in = self.d_view(fake, noise_std)  # DiffAugment in G's step too: G's gradient flows through it
        with self.amp():
            fm = torch.zeros((), device=self.device)
            if h.feature_matching.enabled:
                # Salimans et al. 2016: the fakes' features and logits from one D forward
                hidden, logits, cls = features_and_outputs(self.d, d_in, y_fake)
                logits = logits.float()
                with torch.no_grad():
                    f_real = discriminator_features(self.d, self.augment(real) if self.augment is not None else real)
                fm = H.feature_matching_loss(f_real, hidden.flatten(1))
            else:
                logits, cls = self.discriminate(self.d_fwd, d_in, y_fake)
                logits = logits.float()
            if self.swap is not None:
                # ganhacks #8: G vs an older D (its class head too)
                old_logits, old_cls = self.discriminate(self.swap.d_old, d_in, y_fake)
                logits = torch.where(self.swap.flag, old_logits.float(), logits)
                if cls is not None and old_cls is not None:
                    cls = torch.where(self.swap.flag, old_cls, cls)
            if h.hinge_loss:
                adv = L.g_hinge(logits)  # Lim & Ye 2017; Miyato et al. 2018
            else:
                adv = H.generator_adv_loss(logits, h.non_saturating)  # ganhacks #2 when non_saturating
            # Odena et al. 2017: G also makes D's classifier recognise the class it drew
            cls_loss = self._class_loss(cls, y_fake) if self.acgan else None
        loss = adv + h.feature_matching.weight * fm if h.feature_matching.enabled else adv
        if cls_loss is not None:
            loss = loss + self.p.acgan_weight * cls_loss
        loss, l2 = self._penalised(loss, self.g, h.l2_penalty.g, self.hist_g)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        for q in d_params:
            q.requires_grad_(True)
        gnorm = H.grad_norm(list(self.g.parameters()))
        self.opt_g.step()
        out = {"loss_g": loss.detach(), "loss_g_adv": adv.detach(), "loss_g_l2": l2.detach(), "loss_g_fm": fm.detach(),
               "d_fake_g": torch.sigmoid(logits.detach()).mean(), "grad_norm_g": gnorm}
        if cls_loss is not None:
            out["loss_g_cls"] = cls_loss.detach()
        return out

    def _penalised(self, loss: torch.Tensor, net: nn.Module, l2_weight: float,
                   history: H.HistoricalAverage | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``loss`` plus ``net``'s L2 and historical-averaging penalties, when on (the same for D and G)."""
        h = self.h
        return H.add_weight_penalties(loss, list(net.parameters()), l2_weight if h.l2_penalty.enabled else None,
                                      history, h.historical_averaging.weight)

    # ---------------------------------------------------------------- one iteration

    def iteration(self) -> Metrics:
        """One iteration, device-side only: (1) update D, (2) update G. Returns metric tensors."""
        h = self.h
        step_t = self.progress.step_t
        # Instance noise until its std has decayed to 0; after that the eager path skips drawing
        # it (a captured graph keeps its ops, with std 0).
        noise_on = h.instance_noise.enabled and (self.graph_mode or self.step < h.instance_noise.decay_iters)
        noise_std = (H.instance_noise_std(step_t, h.instance_noise.std, h.instance_noise.decay_iters)
                     if noise_on else None)
        r1 = self.r1 is not None and self.r1.due(self.step)
        gn = h.g_layer_noise
        if gn.enabled:
            # ganhacks #13 (second form): the same linear decay as instance noise, computed on the device from the
            # step (a captured graph reads the current std); eager runs stop drawing it once it has reached 0
            H.set_layer_noise(self.g_noise, H.instance_noise_std(step_t, gn.std, gn.decay_iters),
                              active=self.graph_mode or self.step < gn.decay_iters)
        # (1) update D: d_steps times; the last one keeps G's graph so step (2) reuses its fakes
        for i in range(self.d_steps):
            real, y_real = self.labelled_real_batch(i)
            last = i == self.d_steps - 1
            with torch.set_grad_enabled(last), self.amp():
                z, y_fake = self.fake_inputs()
                fake = self.generate(self.g_run, z, y_fake)
            out_d, logits = self.update_d(real, fake.detach(), noise_std, r1, y_real, y_fake)
        if h.moderated.enabled:
            # Moderated schedule: extra D steps only while D misclassifies half of a class (host sync).
            for j in range(h.moderated.max_extra_d_steps):
                if not bool(H.moderated_needs_more_d(logits.real, logits.fake)):
                    break
                with torch.no_grad(), self.amp():
                    z_extra, y_extra = self.fake_inputs()
                    extra_fake = self.generate(self.g_run, z_extra, y_extra)
                extra_real, y_extra_real = self.labelled_real_batch(self.d_steps + j)
                out_d, logits = self.update_d(extra_real, extra_fake, noise_std, r1, y_extra_real, y_extra)
        # (2) update G: g_steps times, fresh fakes (and classes) after the first
        for j in range(self.g_steps):
            if j > 0:
                with self.amp():
                    z, y_fake = self.fake_inputs()
                    fake = self.generate(self.g_run, z, y_fake)
            out_g = self.update_g(fake, real, noise_std, y_fake)
        if self.ema is not None:
            self.ema.update(self.g, step_t)
        if self.hist_g is not None and self.hist_d is not None:
            self.hist_g.update()
            self.hist_d.update()
        if self.augment is not None:
            # ADA: move p every `ada.every` iterations (device-side schedule), one p for all DDP ranks
            self.augment.end_iteration(step_t, self.step, self._all_reduce if self.dist.enabled else None)
        step_t.add_(1)  # in place: progress.step_t is read by the next iteration (and captured graphs)
        out = {**out_d, **out_g}
        out["instance_noise_std"] = (noise_std.detach().float() if noise_std is not None
                                     else torch.zeros((), device=self.device))
        if gn.enabled:
            out["g_layer_noise_std"] = self.g_noise[0].std.clone()
        if self.ada is not None:
            out["ada_p"], out["ada_r_t"] = self.ada.p.clone(), self.ada.r_t.clone()
        return out

    def run_step(self, iterate: Callable[[], Metrics] | None = None) -> Metrics:
        """One training iteration: host-side preparation, then ``iterate`` (default: :meth:`iteration`, eager).

        The stage passes its fast-path runner's ``step`` (:func:`satgan.train.fastpath.checked_runner`,
        built by the loop): it warms the fast path up (``compile``: a CUDA graph or torch.compile),
        checks its first steps against eager ones from the same state and falls back to eager on
        an error or a disagreement; without a fast path it just runs :meth:`iteration`.
        """
        if self.swap is not None:
            self.swap.before_step(self.step)
        if self.view is not None:
            self.view.armed = self.view.due(self.step)
        self.feed.begin_iteration()
        out = (iterate or self.iteration)()
        self.progress.advance()
        return out

    # ---------------------------------------------------------------- sampling

    @property
    def sampling_generator(self) -> nn.Module:
        """The G used for samples and saved for sampling: the EMA copy when on, else G."""
        return self.ema.module if self.ema is not None else self.g

    @torch.no_grad()
    def sample_grid(self) -> np.ndarray:
        """uint8 (H, W, C) grid of the sampling G (EMA when on) on the fixed noise; conditional: one row per class."""
        from satgan.imageops import make_grid

        g = self.sampling_generator
        was_training = g.training
        g.eval()
        with sampling_rng(self.cfg, self.p.seed, self.device):  # the same masks every grid; training's RNG untouched
            images = self.generate(g, self.fixed_noise, self.fixed_labels).float().cpu().numpy()
        g.train(was_training)
        grid = make_grid(images, nrow=self.grid_nrow)
        return grid[..., 0] if grid.shape[-1] == 1 else grid
