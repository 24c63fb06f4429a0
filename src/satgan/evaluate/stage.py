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
- ``floor_cache.json``: the floor and the key of everything it depends on (the tiles, params, the
  code that computes it, torch/numpy/scipy and the CPU's kernel level); the next run reuses it when
  its key matches (:func:`floor_key`). The floor is over a third of evaluate's time (13 of 32-35 s
  at the defaults on 2 cores) and depends only on the data, so a run that changed only the model,
  as every `dvc exp run` of a train param does, skips it. dvc.yaml keeps it (``persist``) between runs;
- ``MODEL_CARD.md`` (with ``model_dir``): the model card with this evaluation (:mod:`satgan.modelcard`);
- ``model/`` (with ``model_dir``): dvc.yaml's ``generator`` artifact, the evaluated model's
  model.json and weights (copied from train's folder) with the evaluated MODEL_CARD.md;
- ``report.html`` + ``headline.json`` (with ``live_dir``): :mod:`satgan.evaluate.report`.

Every output is written into ``.<eval>.staging`` beside the eval folder, which replaces it as one
step at the end (:func:`staged_outputs`): a failed or killed run leaves the previous outputs.

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
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import torch

from satgan import modelcard, names
from satgan.arrays import open_prepared, sidecar_path
from satgan.errors import DataError
from satgan.evaluate import judge as judge_module
from satgan.evaluate import metrics
from satgan.evaluate.classes import (
    COMPARISON,
    PreparedClasses,
    SampleClasses,
    check_same_classes,
    classifier_block,
    classifier_text,
    per_class_block,
    read_prepared_classes,
    read_sample_classes,
)
from satgan.evaluate.fid import fid_kid
from satgan.evaluate.judge import (
    JudgeResult,
    area_equivalent,
    box_groups,
    classifier_subset,
    disjoint_rows,
    judge,
    judge_summary,
)
from satgan.evaluate.params import EvaluateParams, JudgeParams
from satgan.evaluate.readings import rate_metrics
from satgan.evaluate.report import REPORT, SPECTRA, write_report
from satgan.evaluate.turing import write_turing_test
from satgan.fsutil import sha256_file, write_json_atomic
from satgan.imageops import save_grid
from satgan.modelio import read_card


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


def tile_groups(meta: dict[str, Any], sidecar: Path, n: int) -> np.ndarray | None:
    """(n,) group of each tile from the sidecar's per-tile ``boxes`` (:func:`satgan.evaluate.judge.box_groups`), or
    None when the sidecar has no boxes (positions unknown: every tile is its own group). The boxes' count and
    shape were checked when the sidecar was read (:func:`satgan.arrays.open_prepared`).
    """
    boxes = meta.get(names.SIDECAR_BOXES)
    if boxes is None:
        return None
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


# ----------------------------------------------------------------- the outputs, replaced as one


def _staging_names(out: Path) -> tuple[Path, Path]:
    """The staging folder and the previous outputs' parking place, hidden beside ``out`` (same filesystem: renames)."""
    return out.parent / f".{out.name}.staging", out.parent / f".{out.name}.previous"


def recover_outputs(out: Path) -> None:
    """Undo what a killed run left beside ``out``: a staging folder is removed; outputs parked by a run killed
    between its two renames are put back (``out`` missing) or removed (``out`` already the new ones).
    """
    staging, previous = _staging_names(out)
    shutil.rmtree(staging, ignore_errors=True)
    if previous.exists():
        if out.exists():
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(previous, out)


@contextlib.contextmanager
def staged_outputs(out: Path) -> Iterator[Path]:
    """Yield an empty staging folder for every output; on success it replaces ``out`` whole, on failure it is removed.

    Two renames (``out`` aside, staging in) and then the old folder's removal: a run killed at any point
    leaves either the previous outputs or the new ones, never a mix (issue 21: a run killed after its
    Turing phase had replaced the quiz's answer key while metrics.json still belonged to the run before);
    :func:`recover_outputs` tidies what a kill -9 leaves beside ``out`` at the next run. Of what ``out``
    held before, only hidden files are carried over (the ``.gitignore`` DVC writes there is tracked by
    git); every other file is this run's, so no output of an earlier run survives beside them.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_outputs(out)
    staging, previous = _staging_names(out)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        for kept in out.iterdir():
            if kept.name.startswith(".") and kept.is_file() and not (staging / kept.name).exists():
                shutil.copy2(kept, staging / kept.name)
        os.replace(out, previous)
    os.replace(staging, out)
    shutil.rmtree(previous, ignore_errors=True)


# ----------------------------------------------------------------- the inputs


@dataclass(frozen=True)
class Inputs:
    """Everything evaluate reads, loaded and checked: tiles, sidecars, classes, groups of overlapping tiles."""

    prepared: Path
    samples_dir: Path
    train: np.ndarray  # memory-mapped: only the rows a phase needs are read
    train_meta: dict[str, Any]
    holdout: np.ndarray  # the comparison reals (evaluate.against), float32
    holdout_meta: dict[str, Any]
    fake: np.ndarray  # float32
    fake_meta: dict[str, Any]
    data_classes: PreparedClasses | None
    sample_classes: SampleClasses
    real_groups: np.ndarray | None
    train_disjoint: np.ndarray | None  # rows of training tiles that share no pixel (None: positions unknown)

    @property
    def n_groups(self) -> int | None:
        return None if self.real_groups is None else len(np.unique(self.real_groups))

    @property
    def classifier_on(self) -> bool:
        """A classifier needs two classes to choose between."""
        return self.data_classes is not None and len(self.data_classes.names) >= 2

    def per_class_on(self, params: EvaluateParams) -> bool:
        """Per-class figures need the class of every sample, which only a conditional model's samples carry."""
        return self.classifier_on and self.sample_classes.labels is not None and params.per_class


def load_inputs(prepared: Path, samples_dir: Path, params: EvaluateParams) -> Inputs:
    """Read and check every input; a :class:`DataError` naming the file (and the stage to rerun) for anything wrong."""
    train, train_meta = _load(prepared / names.TRAIN_TILES, "training")
    cmp_path = prepared / COMPARISON[params.against][0]
    if not cmp_path.exists() and params.against == "validation":
        raise DataError(f"{cmp_path}: not found; evaluate.against is validation: run prepare with "
                        "prepare.validation_fraction > 0")
    holdout_arr, holdout_meta = _load(cmp_path, f"{params.against} real")
    holdout = np.asarray(holdout_arr, np.float32)
    samples_npy = samples_dir / names.SAMPLES
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
    sample_classes = read_sample_classes(samples_dir, len(fake))
    check_same_classes(prepared, data_classes, samples_dir, sample_classes)
    return Inputs(prepared, samples_dir, train, train_meta, holdout, holdout_meta, fake, fake_meta, data_classes,
                  sample_classes, tile_groups(holdout_meta, sidecar_path(cmp_path), len(holdout)),
                  None if train_meta.get(names.SIDECAR_BOXES) is None else disjoint_rows(train_meta[names.SIDECAR_BOXES]))


# ----------------------------------------------------------------- the phases


def judge_phase(x: Inputs, params: EvaluateParams, used: dict[str, int], phase: Phases) -> tuple[JudgeParams, JudgeResult]:
    """The judge (classifier two-sample test) on the comparison reals against the fakes, cross-validated."""
    per_class = min(len(x.holdout), len(x.fake))
    jp = dataclasses.replace(params.judge, folds=used["judge_folds"])
    groups_text = (f"{x.n_groups} groups sharing no pixels" if x.n_groups is not None
                   else "positions unknown: each tile its own group")
    with phase("judge", f"classifier two-sample test, {jp.folds}-fold cross-validation x {jp.seeds} seeds, "
                        f"{jp.epochs} epochs, on {per_class} {params.against} reals ({groups_text}) + {per_class} fakes"):
        return jp, judge(x.holdout, x.fake, jp, params.seed, real_groups=x.real_groups)


def distances_phase(x: Inputs, params: EvaluateParams, used: dict[str, int], phase: Phases) -> dict[str, Any]:
    """SWD, colour-histogram and spectral distance between the comparison reals and the fakes."""
    s = params.swd
    with phase("distances", f"SWD on {min(len(x.holdout), len(x.fake))} tiles per set "
                            f"({used['swd_patches_per_image']} patches per tile, {s.repeats} repeats), colour histograms "
                            "and radial power spectra"):
        return {"swd": metrics.sliced_wasserstein_pyramid(x.holdout, x.fake, used["swd_patches_per_image"], s.patch_size,
                                                          s.n_projections, s.repeats, params.seed),
                "colour_hist": metrics.colour_histogram_distance(x.holdout, x.fake, params.histogram_bins),
                "spectral": metrics.spectral_distance(x.holdout, x.fake)}


FLOOR_CACHE_FORMAT = "satgan-floor-cache/1"
MAX_FLOOR_CACHE_BYTES = 1 << 20
# The modules whose code computes the floor (the judge, the distances, and this module's choice of tiles): a change
# to any of them is a new key. Conservative: an edit elsewhere in them also recomputes the floor once.
FLOOR_CODE = (judge_module, metrics, sys.modules[__name__])


def floor_key(holdout: np.ndarray, train_real: np.ndarray, real_groups: np.ndarray | None, jp: JudgeParams,
              params: EvaluateParams, used: dict[str, int]) -> str:
    """sha256 (hex) of everything :func:`floor_phase`'s numbers depend on.

    The comparison reals (N, C, H, W) and the training reals drawn for the floor (M, C, H, W) as
    float32 bytes with their shapes, the groups of the comparison reals (N,) or None, the judge's
    params (folds as used), ``evaluate.seed``, the SWD settings and patches used, the histogram
    bins, the source of :data:`FLOOR_CODE`, the torch / numpy / scipy versions and the CPU kernel
    level torch dispatches to (oneDNN's AVX2 and AVX-512 kernels round differently).
    """
    h = hashlib.sha256()
    for a in (holdout, train_real, np.zeros(0, np.int64) if real_groups is None else real_groups):
        arr = np.ascontiguousarray(a)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    settings = {
        "judge": dataclasses.asdict(jp), "seed": params.seed, "swd": dataclasses.asdict(params.swd),
        "swd_patches_per_image": used["swd_patches_per_image"], "histogram_bins": params.histogram_bins,
        "groups_known": real_groups is not None,
        "versions": [torch.__version__, np.__version__, scipy.__version__, torch.backends.cpu.get_cpu_capability()],
    }
    h.update(json.dumps(settings, sort_keys=True).encode())
    for module in FLOOR_CODE:
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()


def read_floor_cache(path: Path, key: str) -> tuple[dict[str, Any] | None, str]:
    """The floor kept at ``path`` when it was made under ``key``, else None and why it is recomputed.

    Anything unexpected (a missing, oversized, foreign or malformed file, another key) means recomputing:
    the cache can only save time, never change a figure.
    """
    if not path.is_file():
        return None, "no floor kept from an earlier run"
    if path.stat().st_size > MAX_FLOOR_CACHE_BYTES:
        return None, f"{path} is too large for a floor cache: ignored"
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path} is unreadable ({type(exc).__name__}): ignored"
    if not (isinstance(kept, dict) and kept.keys() == {"format", "key", "floor"} and kept["format"] == FLOOR_CACHE_FORMAT
            and isinstance(kept["floor"], dict)):
        return None, f"{path} is not a {FLOOR_CACHE_FORMAT} file: ignored"
    if kept["key"] != key:
        return None, "the tiles, params or code changed since the floor was kept"
    return kept["floor"], ""


def floor_phase(x: Inputs, params: EvaluateParams, used: dict[str, int], jp: JudgeParams, previous: Path,
                staging: Path, phase: Phases) -> tuple[dict[str, Any], dict[str, Any]]:
    """The floor of every figure and the mean radial spectra (``spectra.json``).

    The same measurement between two disjoint sets of real tiles (the comparison reals against as
    many training reals): what a generator that sampled the real distribution would score. It is
    reused from ``previous`` (the last run's ``floor_cache.json``) when :func:`floor_key` matches, and
    written to ``staging`` either way.
    """
    seed, s = params.seed, params.swd
    # Training reals that share no pixel with each other (each its own group: see judge.disjoint_rows).
    pool = np.arange(len(x.train)) if x.train_disjoint is None else x.train_disjoint
    rows = np.sort(np.random.default_rng([seed, 1]).choice(pool, min(len(pool), len(x.holdout)), replace=False))
    train_real = np.asarray(x.train[rows], np.float32)
    key = floor_key(x.holdout, train_real, x.real_groups, jp, params, used)
    floor, why_not = read_floor_cache(previous, key)
    what = (f"reused from {previous} (the same tiles, params and code)" if floor is not None else
            f"the judge, SWD, colour and spectral distances between the {len(x.holdout)} {params.against} reals and "
            f"{len(train_real)} training reals ({why_not})")
    with phase("floor", what):
        if floor is None:
            floor_verdict = judge(x.holdout, train_real, jp, seed, real_groups=x.real_groups)
            computed = {
                "n": int(len(train_real)),
                "judge": judge_summary(floor_verdict),
                "swd": metrics.sliced_wasserstein_pyramid(x.holdout, train_real, used["swd_patches_per_image"],
                                                          s.patch_size, s.n_projections, s.repeats, seed),
                "colour_hist": metrics.colour_histogram_distance(x.holdout, train_real, params.histogram_bins),
                "spectral": metrics.spectral_distance(x.holdout, train_real),
            }
            # Through JSON as a reused floor comes back (tuples become lists): metrics.json is the same either way.
            floor = json.loads(json.dumps(computed))
        write_json_atomic(staging / names.FLOOR_CACHE, {"format": FLOOR_CACHE_FORMAT, "key": key, "floor": floor})
        spectra = {"radius": list(range(1, min(x.fake.shape[-2:]) // 2 + 1)),
                   **{name: metrics.radial_log_spectrum(a).mean(0).tolist()
                      for name, a in (("fakes", x.fake), (f"{params.against} reals", x.holdout),
                                      ("training reals", train_real))}}
    return floor, spectra


def memorization_phase(x: Inputs, params: EvaluateParams, used: dict[str, int], out: Path,
                       phase: Phases) -> tuple[metrics.Memorization, dict[str, Any]]:
    """The nearest training tile of each sample (and of each held-out real: how close an honest new tile gets);
    writes ``closest_pairs.png``.
    """
    m = params.memorization
    with phase("memorization", f"nearest of {len(x.train)} training tiles for {len(x.fake)} samples and "
                               f"{len(x.holdout)} held-out tiles (top {used['memorization_top_k']} by L2, then SSIM)"):
        mem = metrics.memorization(x.fake, x.train, used["memorization_top_k"], m.chunk_size, m.ssim_threshold)
        mem_real = metrics.memorization(x.holdout, x.train, used["memorization_top_k"], m.chunk_size, m.ssim_threshold)
        worst = np.argsort(-mem.ssim)[: used["memorization_n_pairs_image"]]
        pairs = np.stack([a for i in worst for a in (x.fake[i], np.asarray(x.train[mem.index[i]], np.float32))])
        save_grid(pairs, out / names.CLOSEST_PAIRS, nrow=2)
    return mem, {**mem.summary(), "holdout_frac_above_threshold": mem_real.fraction_above,
                 "holdout_ssim_median": float(np.median(mem_real.ssim))}


def diversity_phase(x: Inputs, params: EvaluateParams, used: dict[str, int], phase: Phases) -> dict[str, Any]:
    """Mean pairwise SSIM within the fakes against within the comparison reals, and the collapse flag."""
    d = params.diversity
    with phase("diversity", f"mean SSIM of {used['diversity_pairs_fake']} generated and "
                            f"{used['diversity_pairs_real']} held-out pairs"):
        div = metrics.diversity(x.holdout, x.fake, d.max_pairs, d.margin, params.seed)
    return div.summary()


def classes_phase(x: Inputs, params: EvaluateParams, used: dict[str, int], phase: Phases) -> dict[str, Any]:
    """metrics.json's ``classifier`` and ``per_class`` (labelled data; :mod:`satgan.evaluate.classes`); {} unlabelled."""
    data, sample, seed = x.data_classes, x.sample_classes, params.seed
    if data is None:
        return {}
    if not x.classifier_on:
        why = f"not computed: the prepared data have one class ({data.names[0]}); a classifier needs at least 2"
        return {"classifier": why, "per_class": why}
    out: dict[str, Any] = {}
    c = params.classifier
    n_cls = len(classifier_subset(len(x.train), c.max_train_tiles, seed))
    scored = (f"{len(x.fake)} samples against their intended class" if sample.labels is not None
              else f"the class spread of {len(x.fake)} samples (unconditional model)")
    with phase("classifier", f"GAN-test: a {len(data.names)}-class CNN, {c.epochs} epochs on {n_cls} of "
                             f"{len(x.train)} labelled training tiles, scored on {len(x.holdout)} held-out reals and {scored}"):
        out["classifier"] = classifier_block(data, x.train, x.holdout, x.fake, sample, c, seed)
    if x.per_class_on(params):
        with phase("per class", f"judge, SWD and diversity on the held-out reals and samples of each of "
                                f"{len(data.names)} classes"):
            out["per_class"] = per_class_block(x.holdout, data.holdout, x.fake, sample.labels, data.names, params,
                                               used["swd_patches_per_image"], seed)
    elif sample.labels is None:
        out["per_class"] = "not computed: the samples carry no class (an unconditional model)"
    else:
        out["per_class"] = "not computed: evaluate.per_class is false"
    return out


def plan_phases(x: Inputs, params: EvaluateParams, model_dir: Path | None, live_dir: Path | None) -> list[str]:
    """The phases this run goes through, in order (the progress lines number them)."""
    steps = ["Turing test", "judge", "distances", "floor", "memorization", "diversity"]
    steps += ["classifier"] if x.classifier_on else []
    steps += ["per class"] if x.per_class_on(params) else []
    steps += ["FID/KID"]
    steps += ["model card"] if model_dir is not None else []
    steps += ["report"] if live_dir is not None else []
    return steps


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
    stderr line per phase. Every output is written into a staging folder that replaces
    ``out_dir`` whole at the end (:func:`staged_outputs`): a failed or killed run leaves the
    previous outputs as they were.
    """
    out = Path(out_dir)
    model = None if model_dir is None else Path(model_dir)
    live = None if live_dir is None else Path(live_dir)
    x = load_inputs(Path(prepared_dir), Path(samples_dir), params)
    phase = Phases(plan_phases(x, params, model, live), progress)
    adapted = adapt_counts(params, len(x.train), len(x.holdout), len(x.fake), int(x.fake.shape[-1]), x.n_groups)
    for a in adapted:
        if a.changed:
            phase.say(f"adapted {a.key}: {a.asked} -> {a.used} ({a.why})")
    with staged_outputs(out) as staging:
        result = _measure(x, params, adapted, staging, out, model, live, phase)
    phase.done()
    return result


def _measure(x: Inputs, params: EvaluateParams, adapted: list[Adapted], staging: Path, out: Path,
             model_dir: Path | None, live_dir: Path | None, phase: Phases) -> dict[str, Any]:
    """Every phase, each output written into ``staging`` (paths shown to people name ``out``); returns metrics.json."""
    used = {a.name: a.used for a in adapted}
    t = params.turing
    with phase("Turing test", f"{used['turing_n_real']} real + {used['turing_n_fake']} generated tiles"):
        write_turing_test(x.holdout, x.fake, staging, used["turing_n_real"], used["turing_n_fake"], t.nrow, params.seed)
    jp, verdict = judge_phase(x, params, used, phase)
    distances = distances_phase(x, params, used, phase)
    floor, spectra = floor_phase(x, params, used, jp, out / names.FLOOR_CACHE, staging, phase)
    write_json_atomic(staging / SPECTRA, spectra)
    mem, memorization = memorization_phase(x, params, used, staging, phase)
    diversity = diversity_phase(x, params, used, phase)
    class_sections = classes_phase(x, params, used, phase)
    with phase("FID/KID", _fid_detail(params.inception_weights)):
        extra = fid_kid(x.holdout, x.fake, params.inception_weights, params.seed, say=phase.say,
                        warn=lambda text: phase.say(f"warning: {text}"))
    write_json_atomic(staging / names.FID_KID, extra)
    result: dict[str, Any] = {
        "against": params.against,
        "n": {"train": int(len(x.train)), "holdout": int(len(x.holdout)), "fake": int(len(x.fake))},
        "independent": independence(x.holdout_meta, x.real_groups),
        "judge": judge_summary(verdict),
        **distances,
        "floor": floor,
        "memorization": memorization,
        "diversity": diversity,
        # Asked (params) and used (what the data allowed) for every count that depends on the data size.
        "adapted": {a.name: {"asked": a.asked, "used": a.used} for a in adapted},
        **class_sections,
    }
    if isinstance(extra["fid"], float):
        result["fid"], result["kid"] = extra["fid"], extra["kid"]
    write_json_atomic(staging / names.METRICS, result)
    # The model card with its evaluation: data/model/model.json cannot hold these numbers (train
    # runs before evaluate), so this card joins the evaluated model's identity, from the samples'
    # sidecar, with the metrics; `dvc get <repo> data/eval/model_card.json --rev <tag>` fetches it.
    write_json_atomic(staging / names.EVAL_MODEL_CARD, {
        "model": x.fake_meta["model"], "architecture": x.fake_meta["architecture"], "metrics": result,
        **({"run": run_block(model_dir)} if model_dir is not None else {}),
    })
    card_md = None
    if model_dir is not None:
        with phase("model card", f"{out / names.MODEL_CARD_MD}, from {model_dir / names.MODEL_CARD}"):
            card_md = _write_card(model_dir, x.prepared, x.train_meta, staging, out, x.fake_meta, result, extra, phase.say)
    print(f"evaluate: {result_text(result, params)}; quiz: {out / names.QUIZ}")
    if isinstance(class_sections.get("classifier"), dict):
        print(f"evaluate: {classifier_text(class_sections['classifier'])}")
    if live_dir is not None:
        with phase("report", "report.html and headline.json"):
            write_report(staging, x.samples_dir, live_dir, model_card_md=card_md, shown_dir=out)
        print(f"evaluate: report: {out / REPORT}")
    return result


def run_block(model_dir: Path) -> dict[str, Any]:
    """model_card.json's ``run``: the trained model's git revision, experiment name and the hacks that were on
    (model.json's ``git_rev``, ``git.experiment``, ``recipe.hacks_on``), for the report's identity line."""
    card, _ = read_card(model_dir)
    git = card.get("git") if isinstance(card.get("git"), dict) else {}
    rec = card.get("recipe") if isinstance(card.get("recipe"), dict) else {}
    hacks = rec.get("hacks_on")
    return {"git_rev": card.get("git_rev"), "experiment": git.get("experiment"),
            "hacks_on": sorted(hacks) if isinstance(hacks, dict) else None, "step": card.get("step")}


def result_text(result: dict[str, Any], params: EvaluateParams) -> str:
    """The stage's one line on stdout: the judge (or that it is inconclusive), the distances against their floors,
    copies and diversity.
    """
    j, floor = result["judge"], result["floor"]
    ci = f"95% CI {j['accuracy_ci_low']:.2f}-{j['accuracy_ci_high']:.2f}"
    judge_text = (f"judge accuracy {j['accuracy']:.3f} ({ci}, AUC {j['auc']:.3f}, log-loss {j['log_loss']:.3f}, "
                  f"p={j['p_value']:.2g})" if j["conclusive"] else
                  f"judge inconclusive on {j['n_test']} test tiles (accuracy {j['accuracy']:.3f}, {ci}, p={j['p_value']:.2g})")
    mem, div = result["memorization"], result["diversity"]
    return (f"{judge_text}; SWD {result['swd']['mean']:.4f} (floor {floor['swd']['mean']:.4f}); spectral distance "
            f"{result['spectral']['mean']:.3f} (floor {floor['spectral']['mean']:.3f}); memorized "
            f"{mem['frac_above_threshold']:.1%} > SSIM {params.memorization.ssim_threshold}; diversity SSIM fake "
            f"{div['fake_mean_ssim']:.3f} vs real {div['real_mean_ssim']:.3f}")


def _fid_detail(setting: str) -> str:
    if setting == "":
        return "off (evaluate.inception_weights is \"\")"
    if setting == "auto":
        return "Inception features with the standard weights (auto: fetched once, then cached)"
    return f"Inception features with {setting}"


def _write_card(model_dir: Path, prepared: Path, train_meta: dict[str, Any], out: Path, shown: Path,
                fake_meta: dict[str, Any], result: dict[str, Any], fid: dict[str, Any], say: Any) -> Path | None:
    """Write ``<out>/MODEL_CARD.md``: the model's card with this evaluation; None (one warning line) when the
    model folder holds a different model than the one whose samples were evaluated. ``shown``: the folder
    the card names (the final eval folder; ``out`` is its staging folder).
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
    source = (f"From `{shown / names.METRICS}` ({result['n']['holdout']} held-out real tiles, {result['n']['fake']} "
              f"samples of `{sampled.get('loaded_weights', 'the generator')}`); report.html shows it with the images.")
    card_md = modelcard.write(out, card, provenance=provenance, data=data, evaluation=rows, evaluation_source=source,
                              written_by="the evaluate stage")
    write_artifact(model_dir, card, card_md, out / ARTIFACT_DIR)
    return card_md


# dvc.yaml's `generator` artifact: evaluate's own output folder holding the evaluated model, so the artifact
# carries the card *with* its evaluation. A stage writes only its outputs, so the weights are copied from
# train's data/model (DVC's cache stores a file once by content hash: the copy costs no cache or remote space).
ARTIFACT_DIR = "model"


def write_artifact(model_dir: Path, card: dict[str, Any], card_md: Path, folder: Path) -> Path:
    """Fill ``folder`` with the evaluated model: model.json, its weight files (``card["files"]``) and the evaluated
    MODEL_CARD.md (``card_md``); what `satgan sample --model <folder>` and `dvc artifacts get` need.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = [names.MODEL_CARD, *(f for f in card.get("files", {}).values() if isinstance(f, str))]
    for name in files:
        shutil.copyfile(model_dir / name, folder / name)
    shutil.copyfile(card_md, folder / names.MODEL_CARD_MD)
    return folder
