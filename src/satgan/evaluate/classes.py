"""Per-class evaluation (labelled data): the prepared data's classes, the samples' classes, GAN-test and per-class figures.

- :func:`read_prepared_classes`: the one reader of prepare's labels (``labels.npy`` of the
  training and the comparison split, checked against the sidecars' ``classes``);
- :func:`read_sample_classes`: generate's ``classes/classes.json`` (+ ``classes/labels.npy``);
- :func:`classifier_block`: metrics.json's ``classifier`` (real-test, GAN-test and GAN-train
  accuracy, Shmelkov et al. 2018; class shares for an unconditional model);
- :func:`per_class_block`: metrics.json's ``per_class`` (the judge, SWD and diversity per class);
- :func:`classifier_text`: its line on stdout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from satgan import names
from satgan.arrays import class_names, open_labels, sidecar_path
from satgan.errors import DataError
from satgan.evaluate import metrics
from satgan.evaluate.judge import classifier_subset, classify, judge, judge_summary, train_classifier
from satgan.evaluate.params import ClassifierParams, EvaluateParams
from satgan.fsutil import read_json


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
        info = read_json(info_path, "generate's classes.json")
    except DataError as exc:
        raise DataError(f"{exc} {rerun}") from None
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
                diversity=div.summary(),
            )
        out[name] = entry
    return out


def classifier_text(block: dict[str, Any]) -> str:
    """One line on the class classifier: real-test accuracy, and GAN-test accuracy or the class spread's distance."""
    real = block["real_test"]
    text = (f"class classifier on held-out reals {real['accuracy']:.3f} (95% CI {real['ci_low']:.2f}-{real['ci_high']:.2f}, "
            f"chance {block['chance']:.3f})")
    if "gan_test" in block:
        g = block["gan_test"]
        return f"GAN-test accuracy {g['accuracy']:.3f} (95% CI {g['ci_low']:.2f}-{g['ci_high']:.2f}); {text}"
    return f"class spread of the samples vs held-out reals: total variation {block['tv_distance']:.3f}; {text}"
