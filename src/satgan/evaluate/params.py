"""params.yaml ``evaluate:``, typed and checked: every key of the evaluate stage, with its bounds.

One frozen dataclass per sub-section, each validated by :func:`satgan.params.check` so a bad
value is one line naming the key and the file. Bounds are what the stage can run, not taste:
``seed`` feeds numpy's and torch's generators (0 <= seed < 2**63); epoch counts are capped at
:data:`MAX_EPOCHS` so a typo (``epochs: 1000000000``) is refused instead of running for ever.
"""

from __future__ import annotations

from dataclasses import dataclass

from satgan.params import check

MAX_WORKERS = 64  # judge fits trained at once, one thread each: more than the machine's cores only slices them finer
MAX_SEED = 2**63  # torch.manual_seed and numpy's SeedSequence take a 64-bit seed; torch refuses >= 2**63 on some paths
MAX_EPOCHS = 10_000  # judge and classifier passes: the defaults are 8 and 40; this bound only catches typos


@dataclass(frozen=True)
class JudgeParams:
    """params.yaml ``evaluate.judge``: the classifier two-sample test, grouped k-fold cross-validation over seeds."""

    folds: int
    seeds: int
    epochs: int
    batch_size: int
    lr: float
    width: int
    workers: int

    def __post_init__(self) -> None:
        check("folds", self.folds >= 2, "an integer >= 2", self.folds)
        check("seeds", self.seeds >= 1, "an integer >= 1", self.seeds)
        check("epochs", 1 <= self.epochs <= MAX_EPOCHS, f"an integer in 1..{MAX_EPOCHS}", self.epochs)
        check("batch_size", self.batch_size >= 1, "an integer >= 1", self.batch_size)
        check("lr", self.lr > 0, "a positive learning rate", self.lr)
        check("width", self.width >= 1, "an integer >= 1", self.width)
        check("workers", 1 <= self.workers <= MAX_WORKERS, f"an integer in 1..{MAX_WORKERS}", self.workers)


@dataclass(frozen=True)
class ClassifierParams:
    """params.yaml ``evaluate.classifier``: the class classifier behind GAN-test accuracy."""

    epochs: int
    batch_size: int
    lr: float
    width: int
    max_train_tiles: int

    def __post_init__(self) -> None:
        check("epochs", 1 <= self.epochs <= MAX_EPOCHS, f"an integer in 1..{MAX_EPOCHS}", self.epochs)
        check("batch_size", self.batch_size >= 1, "an integer >= 1", self.batch_size)
        check("lr", self.lr > 0, "a positive learning rate", self.lr)
        check("width", self.width >= 1, "an integer >= 1", self.width)
        check("max_train_tiles", self.max_train_tiles >= 2, "an integer >= 2", self.max_train_tiles)


@dataclass(frozen=True)
class TuringParams:
    """``evaluate.turing``: the mixed grid and quiz."""

    n_real: int
    n_fake: int
    nrow: int

    def __post_init__(self) -> None:
        check("n_real", self.n_real >= 1, "an integer >= 1", self.n_real)
        check("n_fake", self.n_fake >= 1, "an integer >= 1", self.n_fake)
        check("nrow", self.nrow >= 1, "an integer >= 1", self.nrow)


@dataclass(frozen=True)
class SwdParams:
    """``evaluate.swd``: sliced Wasserstein distance on Laplacian-pyramid patches."""

    patches_per_image: int
    patch_size: int
    n_projections: int
    repeats: int

    def __post_init__(self) -> None:
        check("patches_per_image", self.patches_per_image >= 1, "an integer >= 1", self.patches_per_image)
        check("patch_size", 1 <= self.patch_size <= 16, "1..16 (the coarsest level is 16 px)", self.patch_size)
        check("n_projections", self.n_projections >= 1, "an integer >= 1", self.n_projections)
        check("repeats", self.repeats >= 1, "an integer >= 1", self.repeats)


@dataclass(frozen=True)
class MemorizationParams:
    """``evaluate.memorization``: nearest training tile of each sample."""

    top_k: int
    chunk_size: int
    ssim_threshold: float
    n_pairs_image: int

    def __post_init__(self) -> None:
        check("top_k", self.top_k >= 1, "an integer >= 1", self.top_k)
        check("chunk_size", self.chunk_size >= 1, "an integer >= 1", self.chunk_size)
        check("ssim_threshold", -1.0 < self.ssim_threshold < 1.0, "an SSIM in (-1, 1)", self.ssim_threshold)
        check("n_pairs_image", self.n_pairs_image >= 1, "an integer >= 1", self.n_pairs_image)


@dataclass(frozen=True)
class DiversityParams:
    """``evaluate.diversity``: mean pairwise SSIM within fake against within real tiles."""

    max_pairs: int
    margin: float

    def __post_init__(self) -> None:
        check("max_pairs", self.max_pairs >= 1, "an integer >= 1", self.max_pairs)
        check("margin", 0.0 <= self.margin < 2.0, "an SSIM difference in [0, 2)", self.margin)


@dataclass(frozen=True)
class EvaluateParams:
    """params.yaml ``evaluate:``."""

    seed: int
    against: str
    turing: TuringParams
    judge: JudgeParams
    classifier: ClassifierParams
    per_class: bool
    swd: SwdParams
    histogram_bins: int
    memorization: MemorizationParams
    diversity: DiversityParams
    inception_weights: str

    def __post_init__(self) -> None:
        check("seed", isinstance(self.seed, int) and 0 <= self.seed < MAX_SEED, "an integer in 0..2**63-1", self.seed)
        check("against", self.against in AGAINST, f"one of {', '.join(AGAINST)}", self.against)
        check("histogram_bins", self.histogram_bins >= 2, "an integer >= 2", self.histogram_bins)


# evaluate.against: which real split the fakes are compared with. holdout.npy certifies a model;
# validation.npy (prepare.validation_fraction > 0) is for choosing between recipes, so that the
# choice does not tune the recipe to the tiles that then certify it.
AGAINST = ("holdout", "validation")
