"""The ``train`` section of params.yaml as typed, frozen, validated dataclasses.

Every GAN hack is one key under ``train.hacks``: a bare boolean, or a mapping with an
``enabled`` boolean plus its settings (so ``dvc exp run -S train.hacks.X.enabled=false``
ablates it). What each hack is and where it comes from is listed once, in
:mod:`satgan.train.registry`; README's hack table is generated from that list.

Every ``__post_init__`` validates with :func:`satgan.params.check`, one call per field, so a
bad value is reported under its own key (``train.hacks.l2_penalty.d: expected >= 0, got -1``).
Upper bounds exist only where a larger value could not run anyway (nets and buffers that would
not fit in memory), so that it fails at load time with the key named instead of at the first
allocation with a traceback.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from satgan.augment import POLICIES
from satgan.model import MAX_NZ, MAX_WIDTH
from satgan.params import check, params_hash

# Keys that change how often things happen (or what is logged), not what is trained: a checkpoint written under
# other values resumes. ``iterations`` is here so that raising it continues a finished run.
RESUME_IGNORED_KEYS = ("iterations", "checkpoint_every", "log_every", "sample_every", "d_view")

MAX_BATCH = 65536  # per process; far above what fits a GPU at 32x32
MAX_SAMPLE_GRID = 1024  # images in one dvclive sample grid
MAX_REPLAY = 65536  # past fakes kept on the device (65536 x 3 x 64 x 64 fp32 = 3 GiB)
MAX_STEPS_PER_ITERATION = 100  # extra D/G updates per iteration
AugmentPolicy = Literal["color", "translation", "cutout"]  # satgan.augment.POLICIES (a test keeps them equal)
MAX_NPROC = 1024  # train processes launched on one machine (train.nproc)
# G's upsampling layers at the largest image size (128 px: 4 -> 128 is 5 doublings); the hidden ones are one fewer.
# ModelConfig checks the bound of the data's actual image size.
MAX_UP_LAYERS = 5


def _unit_range(lo_hi: tuple[float, float]) -> bool:
    lo, hi = lo_hi
    return 0.0 <= lo <= hi <= 1.0


@dataclass(frozen=True)
class SoftLabels:
    enabled: bool
    real: tuple[float, float]
    fake: tuple[float, float]
    one_sided: bool

    def __post_init__(self) -> None:
        check("real", _unit_range(self.real), "[lo, hi] with 0 <= lo <= hi <= 1", list(self.real))
        check("fake", _unit_range(self.fake), "[lo, hi] with 0 <= lo <= hi <= 1", list(self.fake))


@dataclass(frozen=True)
class NoisyLabels:
    enabled: bool
    fraction: float

    def __post_init__(self) -> None:
        check("fraction", 0.0 <= self.fraction < 0.5, "0 <= fraction < 0.5", self.fraction)


@dataclass(frozen=True)
class InstanceNoise:
    enabled: bool
    std: float
    decay_iters: int

    def __post_init__(self) -> None:
        check("std", self.std >= 0, ">= 0", self.std)
        check("decay_iters", self.decay_iters >= 1, ">= 1", self.decay_iters)


@dataclass(frozen=True)
class Replay:
    enabled: bool
    size: int
    fraction: float

    def __post_init__(self) -> None:
        check("size", 1 <= self.size <= MAX_REPLAY, f"1 <= size <= {MAX_REPLAY}", self.size)
        check("fraction", 0.0 <= self.fraction < 1.0, "0 <= fraction < 1", self.fraction)


@dataclass(frozen=True)
class Weighted:
    enabled: bool
    weight: float

    def __post_init__(self) -> None:
        check("weight", self.weight >= 0, ">= 0", self.weight)


@dataclass(frozen=True)
class GDropout:
    enabled: bool
    p: float
    at_sampling: bool  # keep the dropout on when sampling too (ganhacks #17, pix2pix); recorded in model.json

    def __post_init__(self) -> None:
        check("p", 0.0 < self.p < 1.0, "0 < p < 1", self.p)


@dataclass(frozen=True)
class GLayerNoise:
    enabled: bool
    std: float
    decay_iters: int

    def __post_init__(self) -> None:
        check("std", self.std > 0, "> 0", self.std)
        check("decay_iters", self.decay_iters >= 1, ">= 1", self.decay_iters)


@dataclass(frozen=True)
class Checkerboard:
    enabled: bool
    mode: Literal["deconv_conv", "resize_conv", "pixel_shuffle"]


@dataclass(frozen=True)
class ExtraSteps:
    enabled: bool
    d_steps: int
    g_steps: int

    def __post_init__(self) -> None:
        top = MAX_STEPS_PER_ITERATION
        check("d_steps", 1 <= self.d_steps <= top, f"1 <= d_steps <= {top}", self.d_steps)
        check("g_steps", 1 <= self.g_steps <= top, f"1 <= g_steps <= {top}", self.g_steps)


@dataclass(frozen=True)
class Moderated:
    enabled: bool
    max_extra_d_steps: int

    def __post_init__(self) -> None:
        top = MAX_STEPS_PER_ITERATION
        check("max_extra_d_steps", 1 <= self.max_extra_d_steps <= top, f"1 <= max_extra_d_steps <= {top}", self.max_extra_d_steps)


@dataclass(frozen=True)
class L2Penalty:
    enabled: bool
    g: float
    d: float

    def __post_init__(self) -> None:
        check("g", self.g >= 0, ">= 0", self.g)
        check("d", self.d >= 0, ">= 0", self.d)


@dataclass(frozen=True)
class SgdDiscriminator:
    enabled: bool
    lr: float
    momentum: float

    def __post_init__(self) -> None:
        check("lr", self.lr > 0, "> 0", self.lr)
        check("momentum", 0 <= self.momentum < 1, "0 <= momentum < 1", self.momentum)


@dataclass(frozen=True)
class CheckpointSwap:
    enabled: bool
    every: int
    length: int

    def __post_init__(self) -> None:
        check("every", self.every >= 2, ">= 2 (length >= 1 steps must fit before the next snapshot)", self.every)
        check("length", 1 <= self.length < self.every, f"1 <= length < every ({self.every})", self.length)


@dataclass(frozen=True)
class R1:
    enabled: bool
    gamma: float
    every: int

    def __post_init__(self) -> None:
        check("gamma", self.gamma > 0, "> 0", self.gamma)
        check("every", 1 <= self.every <= 10_000, "1 <= every <= 10000 (1 = every D step)", self.every)


@dataclass(frozen=True)
class Ada:
    enabled: bool
    target: float
    speed_kimg: float
    every: int

    def __post_init__(self) -> None:
        check("target", 0.0 <= self.target < 1.0, "0 <= target < 1", self.target)
        check("speed_kimg", self.speed_kimg > 0, "> 0", self.speed_kimg)
        check("every", 1 <= self.every <= 10_000, "1 <= every <= 10000", self.every)


@dataclass(frozen=True)
class DiffAugment:
    enabled: bool
    policy: tuple[AugmentPolicy, ...]
    p: float
    ada: Ada

    def __post_init__(self) -> None:
        check("policy", len(self.policy) > 0 and len(set(self.policy)) == len(self.policy),
              f"a non-empty list of distinct policies from {sorted(POLICIES)}", list(self.policy))
        check("p", 0.0 <= self.p <= 1.0, "0 <= p <= 1", self.p)


@dataclass(frozen=True)
class Ema:
    enabled: bool
    decay: float

    def __post_init__(self) -> None:
        check("decay", 0.0 < self.decay < 1.0, "0 < decay < 1", self.decay)


@dataclass(frozen=True)
class FailureTracking:
    enabled: bool
    d_loss_floor: float
    patience: int
    grad_norm_limit: float

    def __post_init__(self) -> None:
        check("d_loss_floor", self.d_loss_floor >= 0, ">= 0", self.d_loss_floor)
        check("patience", self.patience >= 1, ">= 1", self.patience)
        check("grad_norm_limit", self.grad_norm_limit > 0, "> 0", self.grad_norm_limit)


@dataclass(frozen=True)
class BilinearG:
    enabled: bool
    blocks: int  # G's last upsampling layers (the output layer first) made bilinear resize + conv; recorded in model.json

    def __post_init__(self) -> None:
        check("blocks", 1 <= self.blocks <= MAX_UP_LAYERS,
              f"1 <= blocks <= {MAX_UP_LAYERS} (and at most G's upsampling layers: 3 at 32 px, 4 at 64, 5 at 128)",
              self.blocks)


@dataclass(frozen=True)
class GPixelNoise:
    enabled: bool
    blocks: int  # G's last hidden blocks with a pixel-noise input; recorded in model.json

    def __post_init__(self) -> None:
        top = MAX_UP_LAYERS - 1
        check("blocks", 1 <= self.blocks <= top,
              f"1 <= blocks <= {top} (and at most G's hidden blocks: 2 at 32 px, 3 at 64, 4 at 128)", self.blocks)


@dataclass(frozen=True)
class HighpassD:
    enabled: bool
    before_cutout: bool  # the residual reads DiffAugment's result before cutout (cutout must then be the last op)


@dataclass(frozen=True)
class TrainHacks:
    """``train.hacks``: one field per entry of :data:`satgan.train.registry.HACKS`, in the same order."""

    non_saturating: bool
    hinge_loss: bool
    feature_matching: Weighted
    historical_averaging: Weighted
    l2_penalty: L2Penalty
    r1: R1
    soft_labels: SoftLabels
    noisy_labels: NoisyLabels
    gaussian_latent: bool
    instance_noise: InstanceNoise
    g_layer_noise: GLayerNoise
    g_dropout: GDropout
    minibatch_stddev: bool
    checkerboard: Checkerboard
    avg_pool_d: bool
    spectral_norm: bool
    instance_norm: bool
    leaky_relu_g: bool
    bilinear_g: BilinearG
    g_pixel_noise: GPixelNoise
    highpass_d: HighpassD
    separate_batches: bool
    extra_steps: ExtraSteps
    moderated: Moderated
    sgd_discriminator: SgdDiscriminator
    replay: Replay
    checkpoint_swap: CheckpointSwap
    ema: Ema
    dihedral_augment: bool
    diffaugment: DiffAugment
    failure_tracking: FailureTracking

    def __post_init__(self) -> None:
        # The hinge loss (Lim & Ye 2017) scores D's raw outputs against a margin of 1 with labels
        # of sign +-1: there is no target value for soft labels to soften (noisy labels still
        # apply: a flipped label flips its sign), and its G loss -E[D(G(z))] is already the
        # non-saturating form (Miyato et al. 2018), with no minimax variant to fall back to.
        check("hinge_loss", not (self.hinge_loss and self.soft_labels.enabled),
              "false while soft_labels.enabled is true (a hinge has no target value to soften; turn one of them off)",
              self.hinge_loss)
        check("hinge_loss", not (self.hinge_loss and not self.non_saturating),
              "false while non_saturating is false (the hinge G loss -E[D(G(z))] has no minimax form; "
              "set non_saturating: true)", self.hinge_loss)
        # Before cutout = after every other op of the policy: with cutout last that is the policy's own order, so the
        # main path's image is exactly what it is with the switch off; elsewhere in the list there is no such image.
        da, hp = self.diffaugment, self.highpass_d
        check("highpass_d.before_cutout",
              not (hp.enabled and hp.before_cutout and da.enabled and "cutout" in da.policy and da.policy[-1] != "cutout"),
              f"false unless cutout is the last op of diffaugment.policy (got {list(da.policy)}; move cutout last)",
              hp.before_cutout)


@dataclass(frozen=True)
class TrainParams:
    """params.yaml ``train:``."""

    iterations: int
    batch_size: int
    seed: int
    device: Literal["auto", "cpu", "cuda"]
    checkpoint_every: int
    log_every: int
    sample_every: int
    n_samples: int
    d_view: bool
    nz: int
    ngf: int
    ndf: int
    init: Literal["normal", "xavier"]
    conditional: Literal["none", "projection", "acgan"]  # class-conditional G and D (needs labels.npy); model.json records it
    acgan_weight: float  # acgan: weight of the auxiliary class cross-entropy in D's and G's losses
    lr_g: float
    lr_d: float
    beta1: float
    beta2: float
    data_budget_mb: int
    compile: Literal["none", "cuda_graph", "torch_compile"]
    amp: bool
    cpu_bf16: Literal["auto", "on", "off"]
    channels_last: bool
    threads: int
    deterministic: bool
    nproc: int
    hacks: TrainHacks

    def __post_init__(self) -> None:
        check("iterations", self.iterations >= 1, ">= 1", self.iterations)
        check("batch_size", 2 <= self.batch_size <= MAX_BATCH, f"2 <= batch_size <= {MAX_BATCH} (BatchNorm needs a batch)", self.batch_size)
        check("seed", 0 <= self.seed < 2**63, "0 <= seed < 2**63", self.seed)
        check("checkpoint_every", self.checkpoint_every >= 1, ">= 1", self.checkpoint_every)
        check("log_every", self.log_every >= 1, ">= 1", self.log_every)
        check("sample_every", self.sample_every >= 1, ">= 1", self.sample_every)
        check("n_samples", 1 <= self.n_samples <= MAX_SAMPLE_GRID, f"1 <= n_samples <= {MAX_SAMPLE_GRID}", self.n_samples)
        check("nz", 1 <= self.nz <= MAX_NZ, f"1 <= nz <= {MAX_NZ}", self.nz)
        check("ngf", 1 <= self.ngf <= MAX_WIDTH, f"1 <= ngf <= {MAX_WIDTH}", self.ngf)
        check("ndf", 1 <= self.ndf <= MAX_WIDTH, f"1 <= ndf <= {MAX_WIDTH}", self.ndf)
        check("acgan_weight", self.acgan_weight >= 0, ">= 0", self.acgan_weight)
        check("lr_g", self.lr_g > 0, "> 0", self.lr_g)
        check("lr_d", self.lr_d > 0, "> 0", self.lr_d)
        check("beta1", 0 <= self.beta1 < 1, "0 <= beta1 < 1", self.beta1)
        check("beta2", 0 <= self.beta2 < 1, "0 <= beta2 < 1", self.beta2)
        check("data_budget_mb", self.data_budget_mb >= 0, ">= 0", self.data_budget_mb)
        check("threads", 0 <= self.threads <= 4096, "0 <= threads <= 4096 (0 = automatic)", self.threads)
        check("nproc", 1 <= self.nproc <= MAX_NPROC, f"1 <= nproc <= {MAX_NPROC} (processes on this machine)", self.nproc)
        r = self.hacks.replay
        n_replay = round(r.fraction * self.batch_size)
        check("hacks.replay.fraction", not r.enabled or n_replay < self.batch_size,
              f"a fraction that leaves fresh fakes in D's batch of {self.batch_size}", r.fraction)

    def resume_hash(self) -> str:
        """Hash of the section minus :data:`RESUME_IGNORED_KEYS`: a checkpoint resumes only under the same value."""
        plain = dataclasses.asdict(self)
        for key in RESUME_IGNORED_KEYS:
            plain.pop(key)
        return params_hash(plain)
