"""Stage 6, evaluate: are the fake tiles convincing, and is the model copying its training set?

Inputs (all through the :mod:`satgan.arrays` contract, memory-mapped): the training tiles
``tiles.npy``, the held-out real tiles ``holdout.npy`` (never trained on; ``validation.npy``
instead with ``evaluate.against: validation``) and the generated ``samples.npy``. Outputs in
the eval folder:

- ``metrics.json``: every number (judge, SWD, colour histograms, spectral distance,
  memorization, diversity; FID/KID only when computed), and ``floor``: the judge and the
  distances between the comparison reals and as many training reals, what real tiles score
  against real tiles. Numeric but for ``against`` (the comparison split); with
  labelled data also ``classifier`` (GAN-test) and ``per_class``, where a figure the data
  cannot give reads ``"not computed: <why>"`` (as fid_kid.json's FID does);
- ``fid_kid.json``: FID/KID, or ``"not computed"`` with the reason;
- ``spectra.json``: the mean radial log power spectra of the fakes, the comparison reals and
  the floor's training reals (report.html charts them);
- ``turing_grid.png`` + ``turing_key.json`` + ``quiz.html``: the Turing test (:mod:`satgan.evaluate.turing`);
- ``closest_pairs.png``: the samples most similar to a training tile, each beside that tile;
- ``MODEL_CARD.md`` (with ``model_dir``): the model card with this evaluation (:mod:`satgan.modelcard`);
- ``report.html`` + ``headline.json`` (with ``live_dir``): :mod:`satgan.evaluate.report`.

Labelled data (prepare's ``labels.npy``; classes named in the sidecars): a class classifier
trained on the real labelled training tiles (:func:`satgan.evaluate.judge.train_classifier`) scores the
held-out reals (``real_test``: the ceiling) and, for a conditional model (generate's
``classes/labels.npy``), the samples against the class they were asked for (``gan_test``,
Shmelkov et al. 2018); for an unconditional one, how it spreads the samples over the classes
against the held-out reals (``shares``, ``tv_distance``). A conditional model's samples also get
the judge, SWD and diversity per class (``per_class``, with ``evaluate.per_class``). Every
accuracy carries its exact 95% interval; a class has only its share of the held-out tiles
(RSSCN7: about 4), so a per-class judge is mostly inconclusive and says so. Unlabelled data
give neither section: metrics.json as before.

Small data: every count that depends on the data size (Turing tiles, the judge's folds, SWD
patches, memorization pairs shown, diversity pairs) is fitted to what exists
(:func:`adapt_counts`), recorded as asked/used in metrics.json's ``adapted`` block and said in
one stderr line each. The judge is cross-validated over every comparison real; tiles that share
pixels (the sidecar's ``boxes``) stay in one fold (:func:`tile_groups`), and ``independent``
says how many independent areas the comparison tiles hold. Its accuracy carries its exact 95% interval; a result that can
neither show a difference nor rule out an easy one is ``conclusive: 0`` and is never shown as a
headline (:func:`judge_conclusive`). Each phase prints one line to stderr as it starts.

Deterministic: every random choice is drawn from ``evaluate.seed`` and the judge trains on one
thread under deterministic algorithms (:mod:`satgan.evaluate.judge`), so two runs on the same samples
and held-out tiles write the same metrics.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from satgan import modelcard, names
from satgan.evaluate import metrics
from satgan.arrays import class_names, open_labels, open_prepared, sidecar_path
from satgan.errors import DataError
from satgan.evaluate.fid import fid_kid
from satgan.fsutil import sha256_file, write_json_atomic
from satgan.imageops import save_grid
from satgan.evaluate.judge import (ClassifierParams, JudgeParams, JudgeResult, area_equivalent, box_groups, classify,
                                   classifier_subset, judge, train_classifier)
from satgan.modelio import read_card
from satgan.params import check
from satgan.evaluate.readings import judge_conclusive, rate_metrics
from satgan.evaluate.report import SPECTRA, write_report
from satgan.evaluate.turing import write_turing_test


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
        check("against", self.against in AGAINST, f"one of {', '.join(AGAINST)}", self.against)
        check("histogram_bins", self.histogram_bins >= 2, "an integer >= 2", self.histogram_bins)


# evaluate.against: which real split the fakes are compared with. holdout.npy certifies a model;
# validation.npy (prepare.validation_fraction > 0) is for choosing between recipes, so that the
# choice does not tune the recipe to the tiles that then certify it.
AGAINST = ("holdout", "validation")


def _load(path: Path, what: str) -> tuple[np.ndarray, dict[str, Any]]:
    """A prepared-contract array (memory-mapped) with at least 2 tiles, and its sidecar."""
    arr, meta = open_prepared(path)
    if len(arr) < 2:
        raise DataError(f"{path}: expected at least 2 {what} tiles, got {len(arr)}")
    return arr, meta



# ----------------------------------------------------------------- counts that depend on the data size


@dataclass(frozen=True)
class Adapted:
    """One count evaluate uses: ``asked`` by ``key`` (evaluate params), ``used`` given the data; ``why`` when they differ."""

    key: str  # the evaluate params key, e.g. "turing.n_real"
    name: str  # its entry in metrics.json's ``adapted`` block
    asked: int
    used: int
    why: str

    @property
    def changed(self) -> bool:
        return self.used != self.asked


def coarsest_level(tile: int, patch_size: int) -> int:
    """Side in px of the coarsest Laplacian-pyramid level SWD uses for ``tile`` px tiles (as metrics.laplacian_pyramid)."""
    min_size = max(16, patch_size)
    size = tile
    while size // 2 >= min_size:
        size //= 2
    return size


def adapt_counts(params: EvaluateParams, n_train: int, n_holdout: int, n_fake: int, tile: int,
                 n_groups: int | None = None) -> list[Adapted]:
    """Every count evaluate draws, fitted to what exists: never more tiles, pairs or patches than there are.

    ``n_train``, ``n_holdout``, ``n_fake`` >= 2 tiles of ``tile`` px. A small region (about
    100 tiles, so about 10 held out) runs through every check with the default params this
    way instead of stopping after the whole training (the pipeline stops earlier only below
    prepare's minimum). ``n_groups``: the groups of held-out tiles that share no pixels (each
    tile its own when None); the judge needs one per fold. Pure: the same sizes and params
    give the same list.
    """
    t, m, d, s = params.turing, params.memorization, params.diversity, params.swd
    per_class = min(n_holdout, n_fake)  # the judge balances its classes to the smaller one
    groups = min(n_holdout if n_groups is None else n_groups, per_class)
    level = coarsest_level(tile, s.patch_size)
    positions = (level - s.patch_size + 1) ** 2
    pairs_real, pairs_fake = n_holdout * (n_holdout - 1) // 2, n_fake * (n_fake - 1) // 2
    return [
        Adapted("turing.n_real", "turing_n_real", t.n_real, min(t.n_real, n_holdout),
                f"only {n_holdout} held-out real tiles"),
        Adapted("turing.n_fake", "turing_n_fake", t.n_fake, min(t.n_fake, n_fake), f"only {n_fake} generated tiles"),
        Adapted("judge.folds", "judge_folds", params.judge.folds, judge_folds(params.judge.folds, groups, per_class),
                f"the judge's {per_class} tiles per set fall into {groups} groups that share no pixels: one per fold at least"),
        Adapted("swd.patches_per_image", "swd_patches_per_image", s.patches_per_image, min(s.patches_per_image, positions),
                f"a {level} px pyramid level has only {positions} distinct {s.patch_size}x{s.patch_size} patches"),
        Adapted("memorization.top_k", "memorization_top_k", m.top_k, min(m.top_k, n_train), f"only {n_train} training tiles"),
        Adapted("memorization.n_pairs_image", "memorization_n_pairs_image", m.n_pairs_image, min(m.n_pairs_image, n_fake),
                f"only {n_fake} generated tiles"),
        Adapted("diversity.max_pairs", "diversity_pairs_real", d.max_pairs, min(d.max_pairs, pairs_real),
                f"{n_holdout} held-out real tiles make only {pairs_real} pairs"),
        Adapted("diversity.max_pairs", "diversity_pairs_fake", d.max_pairs, min(d.max_pairs, pairs_fake),
                f"{n_fake} generated tiles make only {pairs_fake} pairs"),
    ]


def judge_folds(asked: int, real_groups: int, fake_tiles: int) -> int:
    """The judge's folds: ``asked``, but no more than the groups of real tiles or the fake tiles (one of each per fold)."""
    return max(2, min(asked, real_groups, fake_tiles))


# ----------------------------------------------------------------- the judge's reading

def judge_summary(verdict: JudgeResult) -> dict[str, Any]:
    """metrics.json's judge block: the pooled out-of-fold result, its exact 95% interval, whether it says anything
    (:func:`judge_conclusive`), the cross-validation's shape and each seed's own figures (their spread).
    """
    correct = round(verdict.accuracy * verdict.n_test)
    ci_low, ci_high = metrics.clopper_pearson(correct, verdict.n_test)
    seeds = verdict.per_seed
    spread = {f"{key}_{fn.__name__}": float(fn([d[key] for d in seeds]))
              for key in ("accuracy", "auc", "log_loss") for fn in (min, max)}
    return {"accuracy": verdict.accuracy, "accuracy_ci_low": ci_low, "accuracy_ci_high": ci_high,
            "conclusive": int(judge_conclusive(verdict.p_value, ci_high)), "auc": verdict.auc,
            "log_loss": verdict.log_loss, "brier": verdict.brier, "p_value": verdict.p_value,
            "log10_p_value": verdict.log10_p_value, "n_test": verdict.n_test, "n_train": verdict.n_train,
            "folds": verdict.folds, "seeds": verdict.seeds, "groups": verdict.groups,
            "groups_known": int(verdict.groups_known), "per_seed": spread}


def tile_groups(meta: dict[str, Any], sidecar: Path, n: int) -> np.ndarray | None:
    """(n,) group of each tile from the sidecar's per-tile ``boxes`` (:func:`satgan.evaluate.judge.box_groups`), or
    None when the sidecar has no boxes (positions unknown: every tile is its own group).
    """
    boxes = meta.get(names.SIDECAR_BOXES)
    if boxes is None:
        return None
    if not isinstance(boxes, list) or len(boxes) != n:
        got = f"{len(boxes)} entries" if isinstance(boxes, list) else type(boxes).__name__
        raise DataError(f"{sidecar}: {names.SIDECAR_BOXES}: expected one [scene, x0, y0, x1, y1] per tile ({n}), "
                        f"got {got} (rerun prepare)")
    try:
        return box_groups(boxes)
    except ValueError as exc:
        raise DataError(f"{sidecar}: {names.SIDECAR_BOXES}: {exc} (rerun prepare)") from None


def independence(meta: dict[str, Any], groups: np.ndarray | None) -> dict[str, Any]:
    """metrics.json's ``independent``: how many independent areas the comparison tiles hold.

    ``groups``: groups of tiles sharing pixels (each tile its own when positions are unknown);
    ``area_equivalent``: their union area in tiles (:func:`satgan.evaluate.judge.area_equivalent`).
    Without boxes only ``groups_known: 0``.
    """
    if groups is None:  # positions unknown: every tile counts as its own area, which overstates them if tiles overlap
        return {"groups_known": 0}
    return {"groups_known": 1, "groups": int(len(np.unique(groups))),
            "area_equivalent": area_equivalent(meta[names.SIDECAR_BOXES])}


# ----------------------------------------------------------------- classes


@dataclass(frozen=True)
class PreparedClasses:
    """The prepared data's classes (sidecar ``classes``, index order) and the labels of each split."""

    names: tuple[str, ...]
    train: np.ndarray  # (N_train,) int64
    holdout: np.ndarray  # (N_holdout,) int64


@dataclass(frozen=True)
class SampleClasses:
    """generate's ``classes/classes.json`` and, for a conditional model, the class each sample was asked for."""

    conditional: str  # "none" | "projection" | "acgan"
    names: tuple[str, ...]  # () for an unconditional model
    labels: np.ndarray | None  # (N_fake,) int64, None for an unconditional model


CONDITIONAL_KINDS = ("none", "projection", "acgan")
# evaluate.against -> the prepared tiles and labels of that split.
COMPARISON = {"holdout": (names.HOLDOUT_TILES, names.HOLDOUT_LABELS),
              "validation": (names.VALIDATION_TILES, names.VALIDATION_LABELS)}


def read_prepared_classes(prepared: Path, train_meta: dict[str, Any], holdout_meta: dict[str, Any],
                          n_train: int, n_holdout: int, against: str = "holdout") -> PreparedClasses | None:
    """The prepared data's classes and labels, or None for unlabelled data (no ``labels.npy``).

    Labelled data have both label files and both sidecars name the same classes; anything else
    is a :class:`DataError` naming the file (rerun prepare). ``against``: the comparison split
    (``evaluate.against``), whose labels stand in ``holdout``.
    """
    tiles_name, labels_name = COMPARISON[against]
    train_labels, holdout_labels = prepared / names.TRAIN_LABELS, prepared / labels_name
    if not train_labels.exists() and not holdout_labels.exists():
        return None
    tiles_json, holdout_json = sidecar_path(prepared / names.TRAIN_TILES), sidecar_path(prepared / tiles_name)
    train_classes = class_names(train_meta["classes"]) if "classes" in train_meta else None
    if train_classes is None:
        raise DataError(f"{tiles_json}: expected 'classes', a list of distinct class names, beside "
                        f"{train_labels.name} (rerun prepare)")
    if ("classes" not in holdout_meta) or class_names(holdout_meta["classes"]) != train_classes:
        raise DataError(f"{holdout_json}: expected the classes {list(train_classes)} of {tiles_json.name}, got "
                        f"{holdout_meta['classes'] if 'classes' in holdout_meta else 'none'} (rerun prepare)")
    k = len(train_classes)
    return PreparedClasses(
        names=train_classes,
        train=open_labels(train_labels, n_train, k, names.TRAIN_TILES),
        holdout=open_labels(holdout_labels, n_holdout, k, tiles_name),
    )


def read_sample_classes(samples_dir: Path, n_fake: int) -> SampleClasses:
    """generate's ``classes/classes.json`` (and ``classes/labels.npy`` for a conditional model), checked.

    A missing or malformed file is a :class:`DataError` naming it and saying to rerun generate.
    """
    folder = samples_dir / names.SAMPLES_CLASSES_DIR
    info_path = folder / names.CLASSES_INFO
    rerun = "(rerun generate)"
    if not info_path.is_file():
        raise DataError(f"{info_path}: not found; the generate stage writes it for every model {rerun}")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{info_path}: not valid JSON: {exc} {rerun}") from None
    if not isinstance(info, dict) or not {"conditional", "classes"} <= set(info):
        got = sorted(info) if isinstance(info, dict) else type(info).__name__
        raise DataError(f"{info_path}: expected an object with the keys 'conditional' and 'classes', got {got} {rerun}")
    conditional, classes = info["conditional"], class_names(info["classes"])
    if conditional not in CONDITIONAL_KINDS:
        raise DataError(f"{info_path}: conditional: expected one of {', '.join(CONDITIONAL_KINDS)}, got {conditional!r} {rerun}")
    if classes is None or (conditional == "none") != (len(classes) == 0):
        raise DataError(f"{info_path}: classes: expected a list of distinct class names, empty exactly when "
                        f"conditional is 'none', got {info['classes']!r} with conditional {conditional!r} {rerun}")
    if not classes:
        return SampleClasses(conditional, (), None)
    labels = open_labels(folder / names.SAMPLE_LABELS, n_fake, len(classes), f"{names.SAMPLES} {rerun}")
    return SampleClasses(conditional, classes, labels)


def check_same_classes(prepared: Path, data: PreparedClasses | None, samples_dir: Path, sample: SampleClasses) -> None:
    """A conditional model's classes must be the prepared data's (same names, same order): else one line naming both files."""
    if not sample.names:
        return
    info_path = samples_dir / names.SAMPLES_CLASSES_DIR / names.CLASSES_INFO
    tiles_json = sidecar_path(prepared / names.TRAIN_TILES)
    if data is None:
        raise DataError(f"{info_path} names the classes {list(sample.names)} but {tiles_json} names none (the prepared "
                        "data have no labels): the model was trained on other data (rerun train and generate)")
    if sample.names != data.names:
        raise DataError(f"{info_path} names the classes {list(sample.names)} but {tiles_json} names {list(data.names)} "
                        "(same names in the same order expected): rerun train and generate on these data")


# ----------------------------------------------------------------- the class classifier (GAN-test) and per-class figures


def accuracy_block(predicted: np.ndarray, truth: np.ndarray, class_names: tuple[str, ...]) -> dict[str, Any]:
    """Accuracy of ``predicted`` against ``truth`` (both (N,) int64, N >= 1) with its exact 95% interval, overall and per class.

    A class with no tile in ``truth`` reads "not computed" there instead of a figure.
    """
    def one(hit: np.ndarray) -> dict[str, Any]:
        k, n = int(hit.sum()), len(hit)
        lo, hi = metrics.clopper_pearson(k, n)
        return {"accuracy": k / n, "ci_low": lo, "ci_high": hi, "n": n}

    hits = predicted == truth
    per_class: dict[str, Any] = {
        name: one(hits[truth == i]) if (truth == i).any() else "not computed: no tiles of this class"
        for i, name in enumerate(class_names)
    }
    return {**one(hits), "per_class": per_class}


def classifier_block(data: PreparedClasses, train: np.ndarray, holdout: np.ndarray, fake: np.ndarray,
                     sample: SampleClasses, cfg: ClassifierParams, seed: int) -> dict[str, Any]:
    """metrics.json's ``classifier``: real-test accuracy, and GAN-test accuracy (conditional) or class shares (unconditional).

    The classifier learns the classes from the real labelled training tiles (a seeded subset of
    at most ``cfg.max_train_tiles``). ``real_test``: its accuracy on the held-out reals, the
    ceiling of ``gan_test``: its accuracy on the samples against the class they were asked for
    (Shmelkov et al. 2018); ``gan_train``: a classifier trained on the samples (with those
    classes) scored on the held-out reals, read against the same ceiling. For an unconditional model, ``shares``: the classes it predicts for
    the samples against those it predicts for the held-out reals (the same classifier on both, so
    its own mistakes cancel), their total-variation distance, and ``tv_noise``, the distance
    sampling alone gives (:func:`satgan.evaluate.metrics.tv_sampling_noise`): a class the model never
    makes has a fake share near 0.
    """
    k = len(data.names)
    net = train_classifier(train, data.train, k, cfg, seed)
    on_holdout = classify(net, holdout)
    out: dict[str, Any] = {
        "n_classes": k, "chance": 1.0 / k, "n_train": int(len(classifier_subset(len(train), cfg.max_train_tiles, seed))),
        "real_test": accuracy_block(on_holdout, data.holdout, data.names),
    }
    on_fake = classify(net, fake)
    if sample.labels is not None:
        out["gan_test"] = accuracy_block(on_fake, sample.labels, data.names)
        # GAN-train (Shmelkov et al. 2018): the same classifier trained on the samples with the classes they
        # were asked for, scored on the held-out reals. Far below real_test, the samples miss part of what
        # each class looks like (too little variety), even when every sample looks like its class (GAN-test).
        if len(np.unique(sample.labels)) >= 2:
            on_real = classify(train_classifier(fake, sample.labels, k, cfg, seed), holdout)
            out["gan_train"] = accuracy_block(on_real, data.holdout, data.names)
        else:
            out["gan_train"] = "not computed: the samples hold one class; a classifier needs at least 2"
    else:
        fake_shares, real_shares = metrics.class_shares(on_fake, k), metrics.class_shares(on_holdout, k)
        out["shares"] = {name: {"fake": float(f), "holdout": float(r)}
                         for name, f, r in zip(data.names, fake_shares, real_shares)}
        out["tv_distance"] = metrics.total_variation(fake_shares, real_shares)
        out["tv_noise"] = metrics.tv_sampling_noise(real_shares, len(holdout), len(fake))
    return out


def per_class_block(holdout: np.ndarray, holdout_labels: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray,
                    class_names: tuple[str, ...], params: EvaluateParams, swd_patches: int, seed: int) -> dict[str, Any]:
    """metrics.json's ``per_class``: for each class, the judge, SWD and diversity on that class's held-out reals and samples.

    The overall functions on the per-class subsets. A class needs at least 2 held-out and 2
    generated tiles (two folds of the judge's cross-validation; a pair for diversity); with
    fewer, each figure reads "not computed: <why>". The judge's folds are fitted to the tiles
    (at most one per tile) and it carries its interval and ``conclusive``, so a judge on 4
    tiles reads inconclusive, never a result. Its tiles are treated as independent (the per-class
    subsets are small; the overall judge keeps overlapping tiles together). Runtime: each class's
    judge balances to that class's held-out tiles, so all of them together train on no more
    tiles than the overall judge; SWD and diversity likewise.
    """
    s, d = params.swd, params.diversity
    out: dict[str, Any] = {}
    for i, name in enumerate(class_names):
        real, gen = holdout[holdout_labels == i], fake[fake_labels == i]
        entry: dict[str, Any] = {"n_holdout": int(len(real)), "n_fake": int(len(gen))}
        if len(real) < 2 or len(gen) < 2:
            why = (f"not computed: {len(real)} held-out real and {len(gen)} generated tiles of this class; "
                   "a per-class figure needs at least 2 of each")
            entry.update(judge=why, swd=why, diversity=why)
        else:
            verdict = judge(real, gen, params.judge, seed)
            div = metrics.diversity(real, gen, d.max_pairs, d.margin, seed)
            entry.update(
                judge=judge_summary(verdict),
                swd=metrics.sliced_wasserstein_pyramid(real, gen, swd_patches, s.patch_size, s.n_projections, s.repeats, seed),
                diversity={"fake_mean_ssim": div.fake_mean_ssim, "real_mean_ssim": div.real_mean_ssim,
                           "collapsed": int(div.collapsed)},
            )
        out[name] = entry
    return out


# ----------------------------------------------------------------- progress


class Phases:
    """One stderr line as each phase of evaluate starts, and a closing line with the time of each."""

    def __init__(self, names: list[str], enabled: bool = True) -> None:
        self.names, self.enabled = names, enabled
        self.times: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def say(self, text: str) -> None:
        if self.enabled:
            print(f"evaluate: {text}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def __call__(self, name: str, detail: str) -> Iterator[None]:
        self.say(f"[{self.names.index(name) + 1}/{len(self.names)}] {name}: {detail}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = time.perf_counter() - start

    def done(self) -> None:
        parts = ", ".join(f"{n} {t:.1f} s" for n, t in self.times.items())
        self.say(f"done in {time.perf_counter() - self.t0:.1f} s ({parts})")


# ----------------------------------------------------------------- the stage


def evaluate(prepared_dir: str | Path, samples_dir: str | Path, out_dir: str | Path, params: EvaluateParams,
             live_dir: str | Path | None = None, model_dir: str | Path | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Run every check and write metrics.json, fid_kid.json, the Turing test and closest_pairs.png; returns the metrics.

    Counts the data cannot fill (a small region) are reduced to what exists
    (:func:`adapt_counts`), recorded in metrics.json's ``adapted`` block and said on stderr, one
    line each. With ``model_dir`` (train's output) it writes ``MODEL_CARD.md``: the model card
    with this evaluation. With ``live_dir`` (train's dvclive folder) it ends by writing
    ``report.html`` and ``headline.json`` (:func:`satgan.evaluate.report.write_report`); a missing live
    folder only makes the report's training sections read "not available". ``progress``: one
    stderr line per phase.
    """
    prepared, out = Path(prepared_dir), Path(out_dir)
    train, train_meta = _load(prepared / names.TRAIN_TILES, "training")
    cmp_path = prepared / COMPARISON[params.against][0]
    if not cmp_path.exists() and params.against == "validation":
        raise DataError(f"{cmp_path}: not found; evaluate.against is validation: run prepare with "
                        "prepare.validation_fraction > 0")
    holdout_arr, holdout_meta = _load(cmp_path, f"{params.against} real")
    holdout = np.asarray(holdout_arr, np.float32)
    samples_npy = Path(samples_dir) / names.SAMPLES
    fake_arr, fake_meta = _load(samples_npy, "generated")
    if not {"model", "architecture"} <= set(fake_meta):
        raise DataError(f"{samples_npy.with_suffix('.json')}: expected the 'model' and 'architecture' keys the "
                        f"generate stage writes, got {sorted(fake_meta)}")
    fake = np.asarray(fake_arr, np.float32)
    if not train.shape[1:] == holdout.shape[1:] == fake.shape[1:]:
        raise DataError(
            f"expected training, held-out and generated tiles of one (C, H, W), got {tuple(train.shape[1:])}, "
            f"{tuple(holdout.shape[1:])} and {tuple(fake.shape[1:])} (re-run generate after changing prepare.image_size)"
        )
    data_classes = read_prepared_classes(prepared, train_meta, holdout_meta, len(train), len(holdout), params.against)
    sample_classes = read_sample_classes(Path(samples_dir), len(fake))
    check_same_classes(prepared, data_classes, Path(samples_dir), sample_classes)
    # A classifier needs two classes to choose between; per-class figures need the class of every sample,
    # which only a conditional model's samples carry.
    classifier_on = data_classes is not None and len(data_classes.names) >= 2
    per_class_on = classifier_on and sample_classes.labels is not None and params.per_class
    out.mkdir(parents=True, exist_ok=True)
    steps = ["Turing test", "judge", "distances", "floor", "memorization", "diversity"]
    steps += ["classifier"] if classifier_on else []
    steps += ["per class"] if per_class_on else []
    steps += ["FID/KID"]
    steps += ["model card"] if model_dir is not None else []
    steps += ["report"] if live_dir is not None else []
    phase = Phases(steps, progress)
    seed = params.seed
    real_groups = tile_groups(holdout_meta, sidecar_path(cmp_path), len(holdout))
    train_groups = tile_groups(train_meta, sidecar_path(prepared / names.TRAIN_TILES), len(train))
    n_groups = None if real_groups is None else len(np.unique(real_groups))
    adapted = adapt_counts(params, len(train), len(holdout), len(fake), int(fake.shape[-1]), n_groups)
    for a in adapted:
        if a.changed:
            phase.say(f"adapted {a.key}: {a.asked} -> {a.used} ({a.why})")
    used = {a.name: a.used for a in adapted}
    t = params.turing

    with phase("Turing test", f"{used['turing_n_real']} real + {used['turing_n_fake']} generated tiles"):
        turing_paths = write_turing_test(holdout, fake, out, used["turing_n_real"], used["turing_n_fake"], t.nrow, seed)

    per_class = min(len(holdout), len(fake))
    jp = dataclasses.replace(params.judge, folds=used["judge_folds"])
    groups_text = f"{n_groups} groups sharing no pixels" if n_groups is not None else "positions unknown: each tile its own group"
    with phase("judge", f"classifier two-sample test, {jp.folds}-fold cross-validation x {jp.seeds} seeds, "
                        f"{jp.epochs} epochs, on {per_class} {params.against} reals ({groups_text}) + {per_class} fakes"):
        verdict = judge(holdout, fake, jp, seed, real_groups=real_groups)
    judged = judge_summary(verdict)
    ci_low, ci_high, conclusive = judged["accuracy_ci_low"], judged["accuracy_ci_high"], bool(judged["conclusive"])

    s = params.swd
    with phase("distances", f"SWD on {min(len(holdout), len(fake))} tiles per set "
                            f"({used['swd_patches_per_image']} patches per tile, {s.repeats} repeats), colour histograms "
                            "and radial power spectra"):
        swd = metrics.sliced_wasserstein_pyramid(holdout, fake, used["swd_patches_per_image"], s.patch_size,
                                                 s.n_projections, s.repeats, seed)
        hist = metrics.colour_histogram_distance(holdout, fake, params.histogram_bins)
        spectral = metrics.spectral_distance(holdout, fake)

    # The floor of every figure: the same measurement between two disjoint sets of real tiles (the comparison
    # reals against as many training reals), what a generator that sampled the real distribution would score.
    floor_rows = np.sort(np.random.default_rng([seed, 1]).choice(len(train), min(len(train), len(holdout)), replace=False))
    train_real = np.asarray(train[floor_rows], np.float32)
    floor_groups = None if train_groups is None else train_groups[floor_rows]
    with phase("floor", f"the judge, SWD, colour and spectral distances between the {len(holdout)} {params.against} "
                        f"reals and {len(train_real)} training reals"):
        floor_verdict = judge(holdout, train_real, jp, seed, real_groups=real_groups, fake_groups=floor_groups)
        floor = {
            "n": int(len(train_real)),
            "judge": judge_summary(floor_verdict),
            "swd": metrics.sliced_wasserstein_pyramid(holdout, train_real, used["swd_patches_per_image"], s.patch_size,
                                                      s.n_projections, s.repeats, seed),
            "colour_hist": metrics.colour_histogram_distance(holdout, train_real, params.histogram_bins),
            "spectral": metrics.spectral_distance(holdout, train_real),
        }
        spectra = {"radius": list(range(1, min(fake.shape[-2:]) // 2 + 1)),
                   **{name: metrics.radial_log_spectrum(x).mean(0).tolist()
                      for name, x in (("fakes", fake), (f"{params.against} reals", holdout), ("training reals", train_real))}}
    write_json_atomic(out / SPECTRA, spectra)

    m = params.memorization
    with phase("memorization", f"nearest of {len(train)} training tiles for {len(fake)} samples and "
                               f"{len(holdout)} held-out tiles (top {used['memorization_top_k']} by L2, then SSIM)"):
        mem = metrics.memorization(fake, train, used["memorization_top_k"], m.chunk_size, m.ssim_threshold)
        # The same check on real tiles training never saw: how close an honest new tile gets.
        mem_real = metrics.memorization(holdout, train, used["memorization_top_k"], m.chunk_size, m.ssim_threshold)
        worst = np.argsort(-mem.ssim)[: used["memorization_n_pairs_image"]]
        pairs = np.stack([x for i in worst for x in (fake[i], np.asarray(train[mem.index[i]], np.float32))])
        save_grid(pairs, out / names.CLOSEST_PAIRS, nrow=2)

    d = params.diversity
    with phase("diversity", f"mean SSIM of {used['diversity_pairs_fake']} generated and "
                            f"{used['diversity_pairs_real']} held-out pairs"):
        div = metrics.diversity(holdout, fake, d.max_pairs, d.margin, seed)

    class_sections: dict[str, Any] = {}
    if data_classes is not None and not classifier_on:
        class_sections["classifier"] = class_sections["per_class"] = (
            f"not computed: the prepared data have one class ({data_classes.names[0]}); a classifier needs at least 2")
    if data_classes is not None and classifier_on:
        c = params.classifier
        n_cls = len(classifier_subset(len(train), c.max_train_tiles, seed))
        scored = (f"{len(fake)} samples against their intended class" if sample_classes.labels is not None
                  else f"the class spread of {len(fake)} samples (unconditional model)")
        with phase("classifier", f"GAN-test: a {len(data_classes.names)}-class CNN, {c.epochs} epochs on {n_cls} of "
                                 f"{len(train)} labelled training tiles, scored on {len(holdout)} held-out reals and {scored}"):
            class_sections["classifier"] = classifier_block(data_classes, train, holdout, fake, sample_classes, c, seed)
        if per_class_on:
            with phase("per class", f"judge, SWD and diversity on the held-out reals and samples of each of "
                                    f"{len(data_classes.names)} classes"):
                class_sections["per_class"] = per_class_block(
                    holdout, data_classes.holdout, fake, sample_classes.labels, data_classes.names, params,
                    used["swd_patches_per_image"], seed)
        elif sample_classes.labels is None:
            class_sections["per_class"] = "not computed: the samples carry no class (an unconditional model)"
        else:
            class_sections["per_class"] = "not computed: evaluate.per_class is false"

    with phase("FID/KID", _fid_detail(params.inception_weights)):
        extra = fid_kid(holdout, fake, params.inception_weights, seed, say=phase.say,
                        warn=lambda text: phase.say(f"warning: {text}"))
    write_json_atomic(out / names.FID_KID, extra)
    result: dict[str, Any] = {
        "against": params.against,
        "n": {"train": int(len(train)), "holdout": int(len(holdout)), "fake": int(len(fake))},
        "independent": independence(holdout_meta, real_groups),
        "judge": judged,
        "swd": swd,
        "colour_hist": hist,
        "spectral": spectral,
        "floor": floor,
        "memorization": {**mem.summary(), "holdout_frac_above_threshold": mem_real.fraction_above,
                         "holdout_ssim_median": float(np.median(mem_real.ssim))},
        "diversity": {"fake_mean_ssim": div.fake_mean_ssim, "real_mean_ssim": div.real_mean_ssim,
                      "collapsed": int(div.collapsed)},
        # Asked (params) and used (what the data allowed) for every count that depends on the data size.
        "adapted": {a.name: {"asked": a.asked, "used": a.used} for a in adapted},
        **class_sections,
    }
    if isinstance(extra["fid"], float):
        result["fid"], result["kid"] = extra["fid"], extra["kid"]
    write_json_atomic(out / names.METRICS, result)
    # The model card with its evaluation: data/model/model.json cannot hold these numbers (train
    # runs before evaluate), so this card joins the evaluated model's identity, from the samples'
    # sidecar, with the metrics; `dvc get <repo> data/eval/model_card.json --rev <tag>` fetches it.
    write_json_atomic(out / names.EVAL_MODEL_CARD, {
        "model": fake_meta["model"], "architecture": fake_meta["architecture"], "metrics": result,
    })
    card_md = None
    if model_dir is not None:
        with phase("model card", f"{out / names.MODEL_CARD_MD}, from {Path(model_dir) / names.MODEL_CARD}"):
            card_md = _write_card(Path(model_dir), prepared, train_meta, out, fake_meta, result, extra, phase.say)
    judge_text = (f"judge accuracy {verdict.accuracy:.3f} (95% CI {ci_low:.2f}-{ci_high:.2f}, AUC {verdict.auc:.3f}, "
                  f"log-loss {verdict.log_loss:.3f}, p={verdict.p_value:.2g})" if conclusive else
                  f"judge inconclusive on {verdict.n_test} test tiles (accuracy {verdict.accuracy:.3f}, "
                  f"95% CI {ci_low:.2f}-{ci_high:.2f}, p={verdict.p_value:.2g})")
    print(
        f"evaluate: {judge_text}; "
        f"SWD {swd['mean']:.4f} (floor {floor['swd']['mean']:.4f}); spectral distance {spectral['mean']:.3f} "
        f"(floor {floor['spectral']['mean']:.3f}); memorized {mem.fraction_above:.1%} > SSIM {m.ssim_threshold}; "
        f"diversity SSIM fake {div.fake_mean_ssim:.3f} vs real {div.real_mean_ssim:.3f}; quiz: {turing_paths['quiz']}"
    )
    if classifier_on:
        print(f"evaluate: {classifier_text(class_sections['classifier'])}")
    if live_dir is not None:
        with phase("report", "report.html and headline.json"):
            report = write_report(out, samples_dir, live_dir, model_card_md=card_md)["report"]
        print(f"evaluate: report: {report}")
    phase.done()
    return result


def classifier_text(block: dict[str, Any]) -> str:
    """One line on the class classifier: real-test accuracy, and GAN-test accuracy or the class spread's distance."""
    real = block["real_test"]
    text = (f"class classifier on held-out reals {real['accuracy']:.3f} (95% CI {real['ci_low']:.2f}-{real['ci_high']:.2f}, "
            f"chance {block['chance']:.3f})")
    if "gan_test" in block:
        g = block["gan_test"]
        return f"GAN-test accuracy {g['accuracy']:.3f} (95% CI {g['ci_low']:.2f}-{g['ci_high']:.2f}); {text}"
    return f"class spread of the samples vs held-out reals: total variation {block['tv_distance']:.3f}; {text}"


def _fid_detail(setting: str) -> str:
    if setting == "":
        return "off (evaluate.inception_weights is \"\")"
    if setting == "auto":
        return "Inception features with the standard weights (auto: fetched once, then cached)"
    return f"Inception features with {setting}"


def _write_card(model_dir: Path, prepared: Path, train_meta: dict[str, Any], out: Path, fake_meta: dict[str, Any],
                result: dict[str, Any], fid: dict[str, Any], say: Any) -> Path | None:
    """Write ``<out>/MODEL_CARD.md``: the model's card with this evaluation; None (one warning line) when the
    model folder holds a different model than the one whose samples were evaluated.
    """
    card, _ = read_card(model_dir)
    sampled = fake_meta["model"]
    keys = ("step", "params_hash", "data_hash")
    if any(k in sampled and sampled[k] != card[k] for k in keys):
        say(f"warning: {model_dir / names.MODEL_CARD} is not the model whose samples were evaluated "
            f"({', '.join(f'{k} {card[k]} vs {sampled[k]}' for k in keys if k in sampled and sampled[k] != card[k])}); "
            "no model card written (rerun generate)")
        (out / names.MODEL_CARD_MD).unlink(missing_ok=True)
        return None
    provenance, data = None, None
    if sha256_file(prepared / names.TRAIN_TILES) == card["data_hash"]:  # the tiles this model trained on
        data = {"train_tiles": result["n"]["train"], "image_size": train_meta["image_size"],
                "holdout_tiles": result["n"]["holdout"]}
        if "provenance" in train_meta:
            provenance = train_meta["provenance"]
    rows = [(r.name, r.value, r.reading) for r in rate_metrics(result, fid)]
    source = (f"From `{out / names.METRICS}` ({result['n']['holdout']} held-out real tiles, {result['n']['fake']} "
              f"samples of `{sampled.get('loaded_weights', 'the generator')}`); report.html shows it with the images.")
    return modelcard.write(out, card, provenance=provenance, data=data, evaluation=rows, evaluation_source=source,
                           written_by="the evaluate stage")
