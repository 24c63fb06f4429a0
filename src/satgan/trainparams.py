"""The ``train`` section of params.yaml as typed, frozen, validated dataclasses.

Every GAN hack is one key under ``train.hacks``: a bare boolean, or a mapping with an
``enabled`` boolean plus its settings (so ``dvc exp run -S train.hacks.X.enabled=false``
ablates it). Sources are cited next to each key in params.yaml and in README's hack table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from satgan.params import InvalidParam, params_hash

# Keys that change how often things happen, not what is trained: a checkpoint written under
# other values resumes. ``iterations`` is here so that raising it continues a finished run.
RESUME_IGNORED_KEYS = ("iterations", "checkpoint_every", "log_every", "sample_every")


def _range(name: str, lo_hi: tuple[float, float]) -> None:
    lo, hi = lo_hi
    if not 0.0 <= lo <= hi <= 1.0:
        raise InvalidParam(name, f"expected 0 <= lo <= hi <= 1, got [{lo}, {hi}]")


@dataclass(frozen=True)
class SoftLabels:
    enabled: bool
    real: tuple[float, float]
    fake: tuple[float, float]
    one_sided: bool

    def __post_init__(self) -> None:
        _range("real", self.real)
        _range("fake", self.fake)


@dataclass(frozen=True)
class NoisyLabels:
    enabled: bool
    fraction: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 0.5:
            raise InvalidParam("fraction", f"expected 0 <= fraction < 0.5, got {self.fraction}")


@dataclass(frozen=True)
class InstanceNoise:
    enabled: bool
    std: float
    decay_iters: int

    def __post_init__(self) -> None:
        if self.std < 0 or self.decay_iters < 1:
            raise InvalidParam("std", f"expected std >= 0 and decay_iters >= 1, got {self.std}, {self.decay_iters}")


@dataclass(frozen=True)
class Replay:
    enabled: bool
    size: int
    fraction: float

    def __post_init__(self) -> None:
        if self.size < 1:
            raise InvalidParam("size", f"expected >= 1, got {self.size}")
        if not 0.0 <= self.fraction < 1.0:
            raise InvalidParam("fraction", f"expected 0 <= fraction < 1, got {self.fraction}")


@dataclass(frozen=True)
class Weighted:
    enabled: bool
    weight: float

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise InvalidParam("weight", f"expected >= 0, got {self.weight}")


@dataclass(frozen=True)
class GDropout:
    enabled: bool
    p: float

    def __post_init__(self) -> None:
        if not 0.0 < self.p < 1.0:
            raise InvalidParam("p", f"expected 0 < p < 1, got {self.p}")


@dataclass(frozen=True)
class Checkerboard:
    enabled: bool
    mode: Literal["deconv_conv", "resize_conv"]


@dataclass(frozen=True)
class ExtraSteps:
    enabled: bool
    d_steps: int
    g_steps: int

    def __post_init__(self) -> None:
        if self.d_steps < 1 or self.g_steps < 1:
            raise InvalidParam("d_steps", f"expected d_steps, g_steps >= 1, got {self.d_steps}, {self.g_steps}")


@dataclass(frozen=True)
class Moderated:
    enabled: bool
    max_extra_d_steps: int

    def __post_init__(self) -> None:
        if self.max_extra_d_steps < 1:
            raise InvalidParam("max_extra_d_steps", f"expected >= 1, got {self.max_extra_d_steps}")


@dataclass(frozen=True)
class L2Penalty:
    enabled: bool
    g: float
    d: float

    def __post_init__(self) -> None:
        if self.g < 0 or self.d < 0:
            raise InvalidParam("g", f"expected g, d >= 0, got {self.g}, {self.d}")


@dataclass(frozen=True)
class SgdDiscriminator:
    enabled: bool
    lr: float
    momentum: float

    def __post_init__(self) -> None:
        if self.lr <= 0 or not 0 <= self.momentum < 1:
            raise InvalidParam("lr", f"expected lr > 0 and 0 <= momentum < 1, got {self.lr}, {self.momentum}")


@dataclass(frozen=True)
class CheckpointSwap:
    enabled: bool
    every: int
    length: int

    def __post_init__(self) -> None:
        if not 1 <= self.length < self.every:
            raise InvalidParam("length", f"expected 1 <= length < every, got length {self.length}, every {self.every}")


@dataclass(frozen=True)
class Ema:
    enabled: bool
    decay: float

    def __post_init__(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise InvalidParam("decay", f"expected 0 < decay < 1, got {self.decay}")


@dataclass(frozen=True)
class FailureTracking:
    enabled: bool
    d_loss_floor: float
    patience: int
    grad_norm_limit: float

    def __post_init__(self) -> None:
        if self.patience < 1 or self.grad_norm_limit <= 0:
            raise InvalidParam("patience", "expected patience >= 1 and grad_norm_limit > 0")


@dataclass(frozen=True)
class TrainHacks:
    gaussian_latent: bool
    separate_batches: bool
    non_saturating: bool
    soft_labels: SoftLabels
    noisy_labels: NoisyLabels
    instance_noise: InstanceNoise
    replay: Replay
    feature_matching: Weighted
    minibatch_stddev: bool
    historical_averaging: Weighted
    g_dropout: GDropout
    checkerboard: Checkerboard
    extra_steps: ExtraSteps
    moderated: Moderated
    l2_penalty: L2Penalty
    sgd_discriminator: SgdDiscriminator
    checkpoint_swap: CheckpointSwap
    instance_norm: bool
    leaky_relu_g: bool
    ema: Ema
    dihedral_augment: bool
    failure_tracking: FailureTracking


@dataclass(frozen=True)
class TrainParams:
    iterations: int
    batch_size: int
    seed: int
    device: Literal["auto", "cpu", "cuda"]
    checkpoint_every: int
    log_every: int
    sample_every: int
    n_samples: int
    nz: int
    ngf: int
    ndf: int
    init: Literal["normal", "xavier"]
    lr_g: float
    lr_d: float
    beta1: float
    beta2: float
    data_budget_mb: int
    compile: Literal["none", "cuda_graph", "torch_compile"]
    amp: bool
    channels_last: bool
    threads: int
    hacks: TrainHacks

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "checkpoint_every", "log_every", "sample_every", "n_samples", "nz", "ngf", "ndf"):
            if getattr(self, name) < 1:
                raise InvalidParam(name, f"expected >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise InvalidParam("batch_size", f"expected >= 2 (BatchNorm needs a batch), got {self.batch_size}")
        for name in ("lr_g", "lr_d"):
            if getattr(self, name) <= 0:
                raise InvalidParam(name, f"expected > 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise InvalidParam(name, f"expected 0 <= beta < 1, got {getattr(self, name)}")
        if self.threads < 0 or self.data_budget_mb < 0:
            raise InvalidParam("threads", "threads and data_budget_mb must be >= 0")
        r = self.hacks.replay
        if r.enabled and round(r.fraction * self.batch_size) >= self.batch_size:
            raise InvalidParam("hacks.replay.fraction", "leaves no fresh fakes in D's batch")

    def resume_hash(self) -> str:
        """Hash of the section minus :data:`RESUME_IGNORED_KEYS`: a checkpoint resumes only under the same value."""
        plain = dataclasses.asdict(self)
        for key in RESUME_IGNORED_KEYS:
            plain.pop(key)
        return params_hash(plain)
