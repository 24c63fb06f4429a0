"""Stage 6, evaluate: are the fake tiles convincing, and is the model copying its training set?

Inputs (all through the :mod:`satgan.arrays` contract, memory-mapped): the training tiles
``tiles.npy``, the held-out real tiles ``holdout.npy`` (never trained on) and the generated
``samples.npy``. Outputs in the eval folder:

- ``metrics.json``: every number (judge, SWD, colour histograms, memorization, diversity;
  FID/KID only when computed), numeric only, so ``dvc metrics diff`` compares runs;
- ``fid_kid.json``: FID/KID, or ``"not computed"`` with the reason;
- ``turing_grid.png`` + ``turing_key.json`` + ``quiz.html``: the Turing test (:mod:`satgan.turing`);
- ``closest_pairs.png``: the samples most similar to a training tile, each beside that tile;
- ``MODEL_CARD.md`` (with ``model_dir``): the model card with this evaluation (:mod:`satgan.modelcard`);
- ``report.html`` + ``headline.json`` (with ``live_dir``): :mod:`satgan.report`.

Small data: every count that depends on the data size (Turing tiles, the judge's split, SWD
patches, memorization pairs shown, diversity pairs) is fitted to what exists
(:func:`adapt_counts`), recorded as asked/used in metrics.json's ``adapted`` block and said in
one stderr line each. The judge's accuracy carries its exact 95% interval; a result that can
neither show a difference nor rule out an easy one is ``conclusive: 0`` and is never shown as a
headline (:func:`judge_conclusive`). Each phase prints one line to stderr as it starts.

Deterministic: every random choice is drawn from ``evaluate.seed`` and the judge trains on one
thread under deterministic algorithms (:mod:`satgan.judge`), so two runs on the same samples
and held-out tiles write the same metrics.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from satgan import metrics, modelcard, names
from satgan.arrays import open_prepared
from satgan.errors import DataError
from satgan.fid import fid_kid
from satgan.fsutil import sha256_file, write_json_atomic
from satgan.imageops import save_grid
from satgan.judge import JudgeParams, judge
from satgan.modelio import read_card
from satgan.params import check
from satgan.report import rate_metrics, write_report
from satgan.turing import write_turing_test


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
    turing: TuringParams
    judge: JudgeParams
    swd: SwdParams
    histogram_bins: int
    memorization: MemorizationParams
    diversity: DiversityParams
    inception_weights: str

    def __post_init__(self) -> None:
        check("histogram_bins", self.histogram_bins >= 2, "an integer >= 2", self.histogram_bins)


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


def adapt_counts(params: EvaluateParams, n_train: int, n_holdout: int, n_fake: int, tile: int) -> list[Adapted]:
    """Every count evaluate draws, fitted to what exists: never more tiles, pairs or patches than there are.

    ``n_train``, ``n_holdout``, ``n_fake`` >= 2 tiles of ``tile`` px. A small region (about
    100 tiles, so about 10 held out) runs through every check with the default params this
    way instead of stopping after the whole training (the pipeline stops earlier only below
    prepare's minimum). Pure: the same sizes and params give the same list.
    """
    t, m, d, s = params.turing, params.memorization, params.diversity, params.swd
    per_class = min(n_holdout, n_fake)  # the judge balances its classes to the smaller one
    test_asked = round(per_class * params.judge.test_fraction)
    level = coarsest_level(tile, s.patch_size)
    positions = (level - s.patch_size + 1) ** 2
    pairs_real, pairs_fake = n_holdout * (n_holdout - 1) // 2, n_fake * (n_fake - 1) // 2
    return [
        Adapted("turing.n_real", "turing_n_real", t.n_real, min(t.n_real, n_holdout),
                f"only {n_holdout} held-out real tiles"),
        Adapted("turing.n_fake", "turing_n_fake", t.n_fake, min(t.n_fake, n_fake), f"only {n_fake} generated tiles"),
        Adapted("judge.test_fraction", "judge_test_per_class", test_asked, min(max(test_asked, 1), per_class - 1),
                f"with {per_class} tiles per class the judge needs at least one to train on and one to test on"),
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


# ----------------------------------------------------------------- the judge's reading

JUDGE_ALPHA = 0.05  # the judge "finds a difference" below this p-value
JUDGE_EASY = 0.75  # accuracy at which a difference counts as easy (report.py marks it red)


def judge_conclusive(p_value: float, ci_high: float) -> bool:
    """Whether the judge's result says something: it found a difference (p < 0.05), or its 95% interval
    rules out an easy one (upper bound < 0.75). A judge scored on 8 tiles at accuracy 0.75 (p = 0.14,
    interval 0.35-0.97) says neither, so it is inconclusive and never a headline.
    """
    return p_value < JUDGE_ALPHA or ci_high < JUDGE_EASY


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
    ``report.html`` and ``headline.json`` (:func:`satgan.report.write_report`); a missing live
    folder only makes the report's training sections read "not available". ``progress``: one
    stderr line per phase.
    """
    prepared, out = Path(prepared_dir), Path(out_dir)
    train, train_meta = _load(prepared / names.TRAIN_TILES, "training")
    holdout = np.asarray(_load(prepared / names.HOLDOUT_TILES, "held-out real")[0], np.float32)
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
    out.mkdir(parents=True, exist_ok=True)
    steps = ["Turing test", "judge", "distances", "memorization", "diversity", "FID/KID"]
    steps += ["model card"] if model_dir is not None else []
    steps += ["report"] if live_dir is not None else []
    phase = Phases(steps, progress)
    seed = params.seed
    adapted = adapt_counts(params, len(train), len(holdout), len(fake), int(fake.shape[-1]))
    for a in adapted:
        if a.changed:
            phase.say(f"adapted {a.key}: {a.asked} -> {a.used} ({a.why})")
    used = {a.name: a.used for a in adapted}
    t = params.turing

    with phase("Turing test", f"{used['turing_n_real']} real + {used['turing_n_fake']} generated tiles"):
        turing_paths = write_turing_test(holdout, fake, out, used["turing_n_real"], used["turing_n_fake"], t.nrow, seed)

    per_class = min(len(holdout), len(fake))
    n_test = used["judge_test_per_class"]
    # judge.judge splits round(n * test_fraction) per class; n_test / n reproduces exactly n_test.
    judge_params = (params.judge if n_test == round(per_class * params.judge.test_fraction)
                    else dataclasses.replace(params.judge, test_fraction=n_test / per_class))
    with phase("judge", f"classifier two-sample test, {params.judge.epochs} epochs on {per_class - n_test} + "
                        f"{per_class - n_test} tiles, scored on {n_test} + {n_test}"):
        verdict = judge(holdout, fake, judge_params, seed)
    correct = round(verdict.accuracy * verdict.n_test)
    ci_low, ci_high = metrics.clopper_pearson(correct, verdict.n_test)
    conclusive = judge_conclusive(verdict.p_value, ci_high)

    s = params.swd
    with phase("distances", f"SWD on {min(len(holdout), len(fake))} tiles per set "
                            f"({used['swd_patches_per_image']} patches per tile, {s.repeats} repeats) and colour histograms"):
        swd = metrics.sliced_wasserstein_pyramid(holdout, fake, used["swd_patches_per_image"], s.patch_size,
                                                 s.n_projections, s.repeats, seed)
        hist = metrics.colour_histogram_distance(holdout, fake, params.histogram_bins)

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

    with phase("FID/KID", _fid_detail(params.inception_weights)):
        extra = fid_kid(holdout, fake, params.inception_weights, seed, say=phase.say,
                        warn=lambda text: phase.say(f"warning: {text}"))
    write_json_atomic(out / names.FID_KID, extra)
    result: dict[str, Any] = {
        "n": {"train": int(len(train)), "holdout": int(len(holdout)), "fake": int(len(fake))},
        "judge": {"accuracy": verdict.accuracy, "accuracy_ci_low": ci_low, "accuracy_ci_high": ci_high,
                  "conclusive": int(conclusive), "auc": verdict.auc, "log_loss": verdict.log_loss,
                  "brier": verdict.brier, "p_value": verdict.p_value, "log10_p_value": verdict.log10_p_value,
                  "n_test": verdict.n_test, "n_train": verdict.n_train},
        "swd": swd,
        "colour_hist": hist,
        "memorization": {**mem.summary(), "holdout_frac_above_threshold": mem_real.fraction_above,
                         "holdout_ssim_median": float(np.median(mem_real.ssim))},
        "diversity": {"fake_mean_ssim": div.fake_mean_ssim, "real_mean_ssim": div.real_mean_ssim,
                      "collapsed": int(div.collapsed)},
        # Asked (params) and used (what the data allowed) for every count that depends on the data size.
        "adapted": {a.name: {"asked": a.asked, "used": a.used} for a in adapted},
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
        f"SWD {swd['mean']:.4f}; memorized {mem.fraction_above:.1%} > SSIM {m.ssim_threshold}; "
        f"diversity SSIM fake {div.fake_mean_ssim:.3f} vs real {div.real_mean_ssim:.3f}; quiz: {turing_paths['quiz']}"
    )
    if live_dir is not None:
        with phase("report", "report.html and headline.json"):
            report = write_report(out, samples_dir, live_dir, model_card_md=card_md)["report"]
        print(f"evaluate: report: {report}")
    phase.done()
    return result


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
