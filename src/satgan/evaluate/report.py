"""The evaluation report: one self-contained, offline HTML page per evaluation, plus the headline.

    python -m satgan.evaluate.report            # folders from params.yaml's `paths`; writes data/eval/report.html

``write_report`` reads what the pipeline already wrote and builds ``report.html`` (every image
inlined as a data URI; inline CSS, inline SVG charts and a few lines of inline JS; a
Content-Security-Policy that forbids any fetch) and ``headline.json``, the handful of figures
people compare runs by (the only file dvc.yaml declares as ``metrics:``, so ``dvc exp show``
stays narrow; the full numbers stay in ``metrics.json``). The page holds:

- the metrics, each with a one-line reading and a mark: green (as good as the real-vs-real
  baseline), amber (a difference, or too few tiles to say), red (clearly worse), grey (no
  baseline to compare with), see :func:`rate_metrics`;
- every figure against its floor, the same figure between two disjoint sets of real tiles
  (:func:`floor_rows`), and the mean radial power spectra of the fakes and of both real sets
  (``spectra.json``) as a chart;
- with labelled data, the classes: a table with one row per class (held-out and generated
  tiles, the class classifier's accuracy on each, the per-class judge, SWD and diversity) and
  a one-line reading with its mark (:func:`rate_classes`), and generate's class grid when it
  wrote one;
- the sample grid and the latent interpolation (generate);
- the fixed-noise samples dvclive saved during training, on a slider, and the loss curves from
  dvclive's TSV series (D and G losses on one chart, D(x) and D(G(z)) on one, gradient norms,
  img/s) drawn as inline SVG;
- the Turing grid with the answers behind a toggle, the closest sample/training pairs, the
  model card.

A missing or unreadable piece (no dvclive folder, no FID, a damaged key) is shown as "not
available" with the reason; it never stops the page.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from satgan import names
from satgan.cli import run_main
from satgan.errors import ParamsError, SatganError
from satgan.fsutil import write_text_atomic

REPORT = "report.html"
HEADLINE = "headline.json"
SPECTRA = "spectra.json"  # evaluate writes the mean radial log power spectra here; the report charts them
# dvclive's layout under the live folder (dvclive 3: plots/metrics/<name>.tsv with "step\t<leaf>"
# columns, images under plots/images/<name>); train logs `train/<name>` and `samples/<step>.png`.
LIVE_METRICS_DIR = ("plots", "metrics", "train")
LIVE_SAMPLES_DIR = ("plots", "images", names.LIVE_SAMPLES)
LIVE_SUMMARY = "metrics.json"
MAX_FRAMES = 60  # slider frames kept (evenly spaced, last included): bounds the page size
# The charts, as in dvc.yaml's top-level plots: series names are dvclive's train/<name>.
CHARTS = (
    ("Losses: D and G", (("loss_d", "D"), ("loss_g", "G"))),
    ("D(x) and D(G(z)): D's mean output on real and on fake tiles", (("d_real", "D(x)"), ("d_fake", "D(G(z))"))),
    ("Gradient norms", (("grad_norm_d", "D"), ("grad_norm_g", "G"))),
    ("Speed (images per second)", (("img_per_s", "img/s"),)),
)
COLOURS = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1")
MARKS = ("green", "amber", "red", "grey")
JUDGE_MIN_TEST = 40  # fewer judge test tiles than this: a non-significant judge is inconclusive, not green
JUDGE_EASY = 0.75  # accuracy at which a difference counts as easy: red here, and what evaluate's conclusive rule must rule out
# A distance (SWD, colour, spectral) against its floor, the same distance between two sets of real tiles:
# green within FLOOR_GREEN x (issue 19's demo target: within 2x), amber within FLOOR_AMBER x, red beyond.
FLOOR_GREEN, FLOOR_AMBER = 2.0, 4.0
# Unconditional model: a class the held-out reals put at least this share in (by the classifier) but no sample
# falls in is a dropped mode (red); the class spreads count as the same within twice the distance sampling alone gives.
CLASS_DROPPED_SHARE = 0.05


# ----------------------------------------------------------------- small readers (never raise)


class Missing(Exception):
    """A piece of the report that is not available; the message says why."""


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise Missing(f"{path} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise Missing(f"{path} is not readable JSON ({type(exc).__name__})") from None


def _png_uri(path: Path) -> str:
    """``data:image/png;base64,...`` of a PNG file (checked by Pillow first)."""
    if not path.is_file():
        raise Missing(f"{path} not found")
    try:
        with Image.open(path, formats=["PNG"]) as im:
            im.verify()
    except (OSError, SyntaxError, ValueError) as exc:
        raise Missing(f"{path} is not a readable PNG ({exc})") from None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise Missing(f"{path}: unreadable ({exc.strerror or exc})") from None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def number(doc: Any, dotted: str) -> float | None:
    """The finite number at ``a.b.c`` in nested dicts, or None (missing, not a number, NaN/inf, bool)."""
    node = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        return None
    return float(node)


def read_series(path: Path) -> tuple[list[float], list[float]]:
    """A dvclive TSV (header ``step<TAB><name>``) -> (steps, values); rows that are not two finite numbers are skipped."""
    if not path.is_file():
        raise Missing(f"{path.name} not found")
    steps, values = [], []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = csv.reader(fh, delimiter="\t")
            header = next(rows, None)
            if header is None or len(header) < 2 or header[0] != "step":
                raise Missing(f"{path.name}: expected a dvclive series with a 'step' column")
            for row in rows:
                try:
                    x, y = float(row[0]), float(row[-1])
                except (ValueError, IndexError):
                    continue
                if math.isfinite(x) and math.isfinite(y):
                    steps.append(x)
                    values.append(y)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise Missing(f"{path.name}: unreadable ({type(exc).__name__})") from None
    if not steps:
        raise Missing(f"{path.name}: no rows")
    return steps, values


def sample_frames(folder: Path, limit: int = MAX_FRAMES) -> list[tuple[int, Path]]:
    """dvclive's ``<step>.png`` images in ``folder``, by step; at most ``limit``, evenly spaced, the last kept."""
    if not folder.is_dir():
        raise Missing(f"{folder} not found")
    frames = sorted((int(p.stem), p) for p in folder.glob("*.png") if p.stem.isdigit() and p.is_file())
    if not frames:
        raise Missing(f"no <step>.png images in {folder}")
    if len(frames) > limit:
        idx = sorted({round(i * (len(frames) - 1) / (limit - 1)) for i in range(limit)})
        frames = [frames[i] for i in idx]
    return frames


# ----------------------------------------------------------------- metrics: readings and marks


@dataclass(frozen=True)
class Rated:
    """One metric on the page: its value, the real-vs-real baseline, a mark and a one-line reading."""

    name: str
    value: str
    baseline: str
    mark: str  # one of MARKS
    reading: str


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def judge_is_conclusive(metrics: dict[str, Any]) -> bool:
    """metrics.json's ``judge.conclusive`` (evaluate decides it from the p-value and the 95% interval); for
    metrics written before that field, not significant on fewer than :data:`JUDGE_MIN_TEST` test tiles is inconclusive.
    """
    flag = number(metrics, "judge.conclusive")
    if flag is not None:
        return flag != 0
    p, n_test = number(metrics, "judge.p_value"), number(metrics, "judge.n_test")
    return p is None or p < 0.05 or (n_test is not None and n_test >= JUDGE_MIN_TEST)


def adaptations(metrics: dict[str, Any]) -> list[str]:
    """The counts evaluate reduced to fit the data (metrics.json's ``adapted`` block), as "name: asked -> used"."""
    block = metrics["adapted"] if isinstance(metrics, dict) and "adapted" in metrics else None
    if not isinstance(block, dict):
        return []
    out = []
    for name, entry in block.items():
        asked, used = number(entry, "asked"), number(entry, "used")
        if asked is not None and used is not None and used != asked:
            out.append(f"{name}: {asked:.0f} -> {used:.0f}")
    return out


def judge_mark(metrics: dict[str, Any]) -> tuple[str, str]:
    """Mark and reading of the judge's accuracy, against chance and against its floor (``floor.judge``).

    Amber and "inconclusive" when :func:`judge_is_conclusive` says so. Green when it does no
    better than chance (p >= 0.05), or when its 95% interval reaches down to the floor's
    accuracy (a judge between the comparison reals and training reals: the fakes are no easier
    to tell than other real tiles). Else amber below 0.75 accuracy, red at 0.75 or more.
    """
    acc, p, n_test = number(metrics, "judge.accuracy"), number(metrics, "judge.p_value"), number(metrics, "judge.n_test")
    lo, hi = number(metrics, "judge.accuracy_ci_low"), number(metrics, "judge.accuracy_ci_high")
    floor = number(metrics, "floor.judge.accuracy")
    if acc is None or p is None:
        return "grey", "not available: no judge result in metrics.json"
    tiles = f"{n_test:.0f} test tiles" if n_test is not None else "its test tiles"
    if not judge_is_conclusive(metrics):
        upper = f"accuracy up to {hi:.2f}" if hi is not None else "an easy difference"
        return "amber", (f"inconclusive: too few tiles to say; no difference found (p = {p:.2g}), but {tiles} "
                         f"cannot rule out {upper}; more held-out tiles would decide")
    if p >= 0.05:
        return "green", f"a trained classifier does no better than chance (p = {p:.2g} on {tiles})"
    if floor is not None and lo is not None and lo <= floor:
        return "green", (f"a classifier tells fakes from reals no better than it tells two sets of real tiles apart "
                         f"(floor {floor:.3f})")
    if acc < JUDGE_EASY:
        return "amber", f"a classifier finds a difference, but not an easy one (p = {p:.2g})"
    return "red", f"a classifier tells fakes from reals {acc:.0%} of the time (p = {p:.2g})"


def floor_mark(value: float, floor: float) -> str:
    """Mark of a distance (lower is better) against its floor: green within FLOOR_GREEN x, amber within FLOOR_AMBER x."""
    if floor <= 0:
        return "green" if value <= 0 else "red"
    ratio = value / floor
    return "green" if ratio <= FLOOR_GREEN else "amber" if ratio <= FLOOR_AMBER else "red"


@dataclass(frozen=True)
class FloorRow:
    """One figure against its floor: fakes vs the comparison reals, the same between two real sets, their ratio."""

    name: str
    value: float
    floor: float
    mark: str  # one of MARKS
    reading: str

    @property
    def ratio(self) -> float | None:
        return self.value / self.floor if self.floor > 0 else None


# (name, metrics.json key, floor key under floor., what it measures); judge first.
FLOOR_FIGURES = (
    ("judge accuracy", "judge.accuracy", "judge.accuracy", "0.5 = the judge cannot tell the sets apart"),
    ("judge ROC AUC", "judge.auc", "judge.auc", "graded: 0.5 = cannot tell"),
    ("judge log-loss", "judge.log_loss", "judge.log_loss", "graded: lower = the judge is surer; 0.69 = coin"),
    ("SWD (patch texture)", "swd.mean", "swd.mean", "local texture and sharpness"),
    ("colour histogram distance", "colour_hist.mean", "colour_hist.mean", "colour distribution"),
    ("spectral distance", "spectral.mean", "spectral.mean", "radial power spectrum: coarse contrast vs fine texture"),
)


def floor_rows(metrics: dict[str, Any]) -> list[FloorRow]:
    """Every figure that has a floor in metrics.json (``floor.*``: the same measurement between the comparison
    reals and as many training reals), with its mark: the judge's accuracy by :func:`judge_mark`, each distance
    by :func:`floor_mark`, the judge's graded figures grey (they rank runs; the accuracy carries the verdict).
    Empty when metrics.json has no floor (written before it existed).
    """
    out = []
    for name, key, floor_key, what in FLOOR_FIGURES:
        v, f = number(metrics, key), number(metrics, "floor." + floor_key)
        if v is None or f is None:
            continue
        if key == "judge.accuracy":
            mark, _ = judge_mark(metrics)
        elif key.startswith("judge."):
            mark = "grey"
        else:
            mark = floor_mark(v, f)
        out.append(FloorRow(name, v, f, mark, what))
    return out


def rate_metrics(metrics: dict[str, Any], fid_kid: dict[str, Any] | None) -> list[Rated]:
    """Each headline metric of ``metrics.json`` against its real-vs-real baseline.

    - judge accuracy (classifier two-sample test): :func:`judge_mark`, against chance and its
      floor (``floor.judge``). Amber and "inconclusive", with its 95% interval, when
      metrics.json says ``judge.conclusive`` 0 (:func:`satgan.evaluate.stage.judge_conclusive`).
    - SWD, colour-histogram and spectral distance: against ``floor.swd.mean`` /
      ``floor.colour_hist.mean`` / ``floor.spectral.mean`` (the same distance between the
      comparison reals and as many training reals): :func:`floor_mark`; grey without a floor.
    - likely copies (memorization): against the same check on held-out real tiles; green
      within 1 point, amber within 5 points, red beyond.
    - diversity (mean pairwise SSIM of fakes vs of reals): green within 0.05, red when
      ``collapsed`` is set (fakes more alike than reals by more than evaluate's margin), else amber.
    - labelled data only (metrics.json has ``classifier``): :func:`rate_classifier`.
    - FID/KID: no baseline, grey.
    """
    out: list[Rated] = []
    acc, floor_acc = number(metrics, "judge.accuracy"), number(metrics, "floor.judge.accuracy")
    lo, hi = number(metrics, "judge.accuracy_ci_low"), number(metrics, "judge.accuracy_ci_high")
    mark, text = judge_mark(metrics)
    ci = f" (95% CI {lo:.2f}-{hi:.2f})" if lo is not None and hi is not None else ""
    base = "0.5 (chance)" + (f"; floor {floor_acc:.3f}" if floor_acc is not None else "")
    out.append(Rated("judge accuracy", "n/a" if acc is None else _fmt(acc) + ci, base, mark, text))

    for name, key, what in (
        ("SWD (patch texture)", "swd.mean", "local texture and sharpness"),
        ("colour histogram distance", "colour_hist.mean", "colour distribution"),
        ("spectral distance", "spectral.mean", "radial power spectrum (coarse contrast vs fine texture)"),
    ):
        v, b = number(metrics, key), number(metrics, "floor." + key)
        if v is None:
            out.append(Rated(name, "n/a", "n/a", "grey", f"not available: no {key} in metrics.json"))
        elif b is None or b <= 0:
            out.append(Rated(name, _fmt(v, ".4f"), "not recorded", "grey",
                             f"{what}: lower is closer; no real-vs-real floor recorded, so compare runs only"))
        else:
            out.append(Rated(name, _fmt(v, ".4f"), _fmt(b, ".4f"), floor_mark(v, b),
                             f"{what}: {v / b:.1f}x the distance between two sets of real tiles"))

    copies, base = number(metrics, "memorization.frac_above_threshold"), number(metrics, "memorization.holdout_frac_above_threshold")
    if copies is None or base is None:
        out.append(Rated("likely copies of training tiles", "n/a", "n/a", "grey", "not available: no memorization result"))
    else:
        excess = copies - base
        mark = "green" if excess <= 0.01 else "amber" if excess <= 0.05 else "red"
        out.append(Rated("likely copies of training tiles", _fmt(copies, ".1%"), _fmt(base, ".1%") + " of held-out reals", mark,
                         f"{copies:.1%} of samples are near-duplicates of a training tile; real tiles never trained on: {base:.1%}"))

    fake, real, collapsed = (number(metrics, "diversity.fake_mean_ssim"), number(metrics, "diversity.real_mean_ssim"),
                             number(metrics, "diversity.collapsed"))
    if fake is None or real is None:
        out.append(Rated("diversity (pairwise SSIM)", "n/a", "n/a", "grey", "not available: no diversity result"))
    else:
        diff = fake - real
        mark = "red" if collapsed else "green" if diff <= 0.05 else "amber"
        text = ("mode collapse: fakes are far more alike than real tiles" if collapsed else
                "fakes are about as varied as real tiles" if diff <= 0.05 else "fakes are somewhat more alike than real tiles")
        out.append(Rated("diversity (pairwise SSIM)", _fmt(fake), _fmt(real) + " among reals", mark, text))

    out += rate_classifier(metrics)

    fid, kid = number(metrics, "fid"), number(metrics, "kid")
    if fid is not None:
        out.append(Rated("FID / KID", f"{fid:.2f} / {_fmt(kid, '.4f')}", "no baseline", "grey",
                         "Inception-feature distances: lower is closer; compare runs of the same size"))
    else:
        why = fid_kid.get("reason") if isinstance(fid_kid, dict) and isinstance(fid_kid.get("reason"), str) else "no fid_kid.json"
        out.append(Rated("FID / KID", "not computed", "no baseline", "grey", f"not computed: {why}"))
    return out


def _ci(block: Any, lo_key: str = "ci_low", hi_key: str = "ci_high") -> str:
    lo, hi = number(block, lo_key), number(block, hi_key)
    return f" (95% CI {lo:.2f}-{hi:.2f})" if lo is not None and hi is not None else ""


def gan_test_mark(ci_low: float, ci_high: float, real_low: float, chance: float) -> tuple[str, str]:
    """Mark and reading of a GAN-test accuracy (its 95% interval ``ci_low``-``ci_high``) against the real-test accuracy's
    lower 95% bound ``real_low`` and chance (1 / the number of classes).

    Shmelkov et al. 2018: a generator whose samples look like their class scores about what
    held-out reals score. Both are measured on few tiles, so green when the intervals meet (the
    samples cannot be shown to classify worse than reals); red when the GAN-test interval still
    holds chance (the samples carry no recognisable class); amber and "inconclusive" when it
    holds both (too few samples to say); amber between.
    """
    if ci_high >= real_low and ci_low <= chance:
        return "amber", "inconclusive: too few samples to tell real-like classes from chance"
    if ci_high >= real_low:
        return "green", "the samples classify as their class about as often as held-out reals do"
    if ci_low <= chance:
        return "red", "the samples do not look like their class: the classifier is no better than chance on them"
    return "amber", "the samples look like their class, but less often than held-out reals do"


def gan_test_conclusive(metrics: dict[str, Any]) -> bool:
    """Whether metrics.json's GAN-test accuracy says anything: not "inconclusive" by :func:`gan_test_mark`."""
    lo, hi = number(metrics, "classifier.gan_test.ci_low"), number(metrics, "classifier.gan_test.ci_high")
    real_low, chance = number(metrics, "classifier.real_test.ci_low"), number(metrics, "classifier.chance")
    if lo is None or hi is None or real_low is None or chance is None:
        return False
    return not gan_test_mark(lo, hi, real_low, chance)[1].startswith("inconclusive")


def rate_classifier(metrics: dict[str, Any]) -> list[Rated]:
    """The class classifier's rows (labelled data only; none without ``classifier`` in metrics.json).

    - GAN-train accuracy (conditional model, beside GAN-test): a classifier trained on the
      samples scored on held-out reals, read as GAN-test (:func:`gan_test_mark`).
    - GAN-test accuracy (conditional model): the classifier's accuracy on the samples against
      the class each was asked for, read against its accuracy on held-out reals (the interval's
      lower bound) and chance (:func:`gan_test_mark`); the reading names the weakest class among
      those the classifier recognises in held-out reals (real-test interval above chance).
    - class coverage (unconditional model): the total-variation distance between the classes
      the classifier gives the samples and those it gives the held-out reals. Red when a class
      holding at least 5% of the held-out reals gets no sample (a dropped mode); green within
      twice ``tv_noise`` (the distance sampling the held-out tiles alone gives); else amber.
    """
    block = metrics["classifier"] if isinstance(metrics, dict) and "classifier" in metrics else None
    if not isinstance(block, dict):
        return []
    real, real_low, chance = number(block, "real_test.accuracy"), number(block, "real_test.ci_low"), number(block, "chance")
    if real is None or real_low is None or chance is None:
        return [Rated("class classifier", "n/a", "n/a", "grey", "not available: no real_test accuracy in metrics.json")]
    baseline = f"{real:.3f} on held-out reals{_ci(block['real_test'])}"
    if "gan_test" in block:
        g = block["gan_test"]
        acc, lo, hi = number(g, "accuracy"), number(g, "ci_low"), number(g, "ci_high")
        if acc is None or lo is None or hi is None:
            return [Rated("GAN-test accuracy", "n/a", baseline, "grey", "not available: no gan_test accuracy")]
        mark, text = gan_test_mark(lo, hi, real_low, chance)
        per = g["per_class"] if isinstance(g.get("per_class"), dict) else {}
        real_per = block["real_test"].get("per_class") if isinstance(block["real_test"], dict) else None
        recognised = {name for name, v in (real_per if isinstance(real_per, dict) else {}).items()
                      if (number(v, "ci_low") or 0.0) > chance}
        scored = {name: number(v, "accuracy") for name, v in per.items()
                  if number(v, "accuracy") is not None and name in recognised}
        if scored:
            weakest = min(scored, key=lambda name: (scored[name], name))
            text += f"; weakest class: {weakest} {scored[weakest]:.2f} of {number(per[weakest], 'n'):.0f} samples"
        rows = [Rated("GAN-test accuracy", f"{acc:.3f}{_ci(g)}", baseline, mark, f"{text} (chance {chance:.2f})")]
        t = block.get("gan_train")
        t_acc, t_lo, t_hi = number(t, "accuracy"), number(t, "ci_low"), number(t, "ci_high")
        if t_acc is not None and t_lo is not None and t_hi is not None:
            # The same reading as GAN-test: a classifier trained on the samples, scored on held-out reals.
            t_mark, t_text = gan_test_mark(t_lo, t_hi, real_low, chance)
            rows.append(Rated("GAN-train accuracy", f"{t_acc:.3f}{_ci(t)}", baseline, t_mark,
                              f"trained on the samples, scored on held-out reals: {t_text} (chance {chance:.2f})"))
        elif isinstance(t, str):
            rows.append(Rated("GAN-train accuracy", "not computed", baseline, "grey", t))
        return rows
    tv, noise = number(block, "tv_distance"), number(block, "tv_noise")
    shares = block["shares"] if isinstance(block.get("shares"), dict) else {}
    if tv is None or noise is None:
        return [Rated("class coverage", "n/a", baseline, "grey", "not available: no class spread in metrics.json")]
    dropped = sorted(name for name, v in shares.items()
                     if (number(v, "holdout") or 0.0) >= CLASS_DROPPED_SHARE and number(v, "fake") == 0.0)
    value, base = f"total variation {tv:.3f}", f"{2 * noise:.3f} by chance"
    if dropped:
        return [Rated("class coverage", value, base, "red", f"the model never makes these classes: {', '.join(dropped)}")]
    if tv <= 2 * noise:
        return [Rated("class coverage", value, base, "green",
                      "the samples fall in the classes about as often as held-out reals do")]
    return [Rated("class coverage", value, base, "amber", "the samples favour some classes over others more than reals do")]


@dataclass(frozen=True)
class ClassRow:
    """One class on the page: its cells and a mark with a one-line reading."""

    name: str
    cells: tuple[str, ...]
    mark: str
    reading: str


CLASS_COLUMNS = ("held-out / samples", "classifier on held-out reals", "GAN-test", "judge", "SWD",
                 "diversity: fakes / reals")
SHARE_COLUMNS = ("held-out reals", "samples")
MARK_ORDER = ("green", "grey", "amber", "red")


def rate_classes(metrics: dict[str, Any]) -> tuple[tuple[str, ...], list[ClassRow]]:
    """The per-class table: its columns and one row per class (empty without ``classifier`` in metrics.json).

    Conditional model: held-out and generated tiles of the class, the classifier's accuracy on
    each (the GAN-test reading of :func:`gan_test_mark`; grey when the classifier does not
    recognise the class among held-out reals either), and the per-class judge (its 95%
    interval; inconclusive on a handful of tiles, never a result), SWD and diversity (red when
    collapsed). The row takes its worst mark. Unconditional model: the share of held-out reals
    and of samples the classifier puts in the class; red when a class of the reals gets no sample.
    """
    block = metrics["classifier"] if isinstance(metrics, dict) and "classifier" in metrics else None
    if not isinstance(block, dict) or not isinstance(block.get("real_test"), dict):
        return (), []
    chance = number(block, "chance") or 0.0
    real_per = block["real_test"]["per_class"] if isinstance(block["real_test"].get("per_class"), dict) else {}
    if "gan_test" not in block:
        shares = block["shares"] if isinstance(block.get("shares"), dict) else {}
        rows = []
        for name, v in shares.items():
            h, f = number(v, "holdout"), number(v, "fake")
            if h is None or f is None:
                rows.append(ClassRow(name, ("n/a", "n/a"), "grey", "not available"))
                continue
            mark, text = (("red", "the model never makes this class") if h >= CLASS_DROPPED_SHARE and f == 0 else
                          ("green", "about as often as among held-out reals") if abs(f - h) <= max(0.05, h / 2) else
                          ("amber", "more often than among held-out reals" if f > h else "less often than among held-out reals"))
            rows.append(ClassRow(name, (f"{h:.1%}", f"{f:.1%}"), mark, text))
        return SHARE_COLUMNS, rows
    gan_per = block["gan_test"]["per_class"] if isinstance(block["gan_test"].get("per_class"), dict) else {}
    per_class = metrics["per_class"] if isinstance(metrics.get("per_class"), dict) else {}
    rows = []
    for name in real_per:
        real_c, gan_c, entry = real_per[name], gan_per.get(name), per_class.get(name, {})
        marks, texts = [], []
        real_acc = number(real_c, "accuracy")
        real_cell = f"{real_acc:.2f}{_ci(real_c)}" if real_acc is not None else str(real_c)
        g_acc, g_lo, g_hi = number(gan_c, "accuracy"), number(gan_c, "ci_low"), number(gan_c, "ci_high")
        real_low = number(real_c, "ci_low")
        if g_acc is None or g_lo is None or g_hi is None:
            gan_cell = "n/a"
            marks.append("grey")
            texts.append("no samples of this class")
        elif real_low is None or real_low <= chance:
            gan_cell = f"{g_acc:.2f}{_ci(gan_c)}"
            marks.append("grey")
            texts.append("the classifier does not recognise this class among held-out reals either (its interval "
                         "reaches chance), so GAN-test says nothing here")
        else:
            gan_cell = f"{g_acc:.2f}{_ci(gan_c)}"
            mark, text = gan_test_mark(g_lo, g_hi, real_low, chance)
            marks.append(mark)
            texts.append(text)
        n_h, n_f = number(entry, "n_holdout"), number(entry, "n_fake")
        counts = f"{n_h:.0f} / {n_f:.0f}" if n_h is not None and n_f is not None else "n/a"
        j = entry.get("judge") if isinstance(entry, dict) else None
        if isinstance(j, dict) and number(j, "accuracy") is not None:
            acc, p, n_test = number(j, "accuracy"), number(j, "p_value"), number(j, "n_test")
            if not judge_is_conclusive({"judge": j}):
                judge_cell = f"inconclusive: {acc:.2f}{_ci(j, 'accuracy_ci_low', 'accuracy_ci_high')} on {n_test:.0f} tiles"
            else:
                judge_cell = f"{acc:.2f}{_ci(j, 'accuracy_ci_low', 'accuracy_ci_high')}"
                if p is not None and p < 0.05 and acc >= 0.75:  # as the overall judge's red (rate_metrics)
                    marks.append("red")
                    texts.append("a judge tells this class's fakes from its reals")
        else:
            judge_cell = str(j) if isinstance(j, str) else "n/a"
        swd = number(entry, "swd.mean") if isinstance(entry, dict) else None
        swd_cell = f"{swd:.4f}" if swd is not None else (str(entry.get("swd")) if isinstance(entry, dict) and
                                                          isinstance(entry.get("swd"), str) else "n/a")
        fake_s, real_s = number(entry, "diversity.fake_mean_ssim"), number(entry, "diversity.real_mean_ssim")
        div_cell = f"{fake_s:.3f} / {real_s:.3f}" if fake_s is not None and real_s is not None else "n/a"
        if number(entry, "diversity.collapsed"):
            marks.append("red")
            texts.append("its fakes are far more alike than its reals")
        worst = max(marks, key=MARK_ORDER.index)
        reading = "; ".join(t for m, t in zip(marks, texts) if m == worst)
        rows.append(ClassRow(name, (counts, real_cell, gan_cell, judge_cell, swd_cell, div_cell), worst, reading))
    return CLASS_COLUMNS, rows


def headline(metrics: dict[str, Any] | None, live_summary: dict[str, Any] | None) -> dict[str, float | None]:
    """The figures ``dvc exp show`` compares runs by: short flat keys, None where not available.

    From metrics.json: judge accuracy, SWD, the spectral distance, the share of likely copies, the mean
    pairwise SSIM of fakes, FID when computed, and a conditional model's GAN-test accuracy (labelled
    data; None when inconclusive, :func:`gan_test_conclusive`; its ceiling, the classifier's
    accuracy on held-out reals, depends on the data only, so it stays in metrics.json with the
    other baselines). An inconclusive judge (too few test tiles to
    say anything, :func:`judge_is_conclusive`) has no headline accuracy: ``judge_acc`` is None
    (its p-value and the floors of each figure stay in metrics.json). From dvclive's summary: the last step and
    img/s. Their real-vs-real baselines (copies among held-out reals, SSIM among reals) depend
    on the data only, not on the model, so they stay in metrics.json and on the report page:
    each headline column costs ``dvc exp show`` about 11 of its 160 characters.
    """
    m = metrics if isinstance(metrics, dict) else {}
    live = live_summary if isinstance(live_summary, dict) else {}
    out = {
        "judge_acc": number(m, "judge.accuracy") if judge_is_conclusive(m) else None,
        "swd": number(m, "swd.mean"),
        "spectral": number(m, "spectral.mean"),
        "copied": number(m, "memorization.frac_above_threshold"),
        "ssim_fake": number(m, "diversity.fake_mean_ssim"),
    }
    if number(m, "fid") is not None:
        out["fid"] = number(m, "fid")
    if number(m, "classifier.gan_test.accuracy") is not None:
        out["gan_test_acc"] = number(m, "classifier.gan_test.accuracy") if gan_test_conclusive(m) else None
    out["step"] = number(live, "step")
    out["img_s"] = number(live, "train.img_per_s")
    return out


# ----------------------------------------------------------------- SVG charts


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (steps of 1, 2 or 5 x 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"expected finite bounds, got {lo}, {hi}")
    scale = max(abs(lo), abs(hi), 1e-12)
    if hi - lo < scale * 1e-9:  # a flat (or denormal-width) series: centre it in a visible range
        pad = scale * 0.05 if scale > 1e-12 else 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def line_chart_svg(title: str, series: list[tuple[str, list[float], list[float]]], width: int = 520, height: int = 236,
                   x_label: str = "step") -> str:
    """An inline SVG line chart of ``series`` [(label, xs, ys), ...] sharing x (``x_label``) and y axes."""
    if not series or not any(xs for _, xs, _ in series):
        raise ValueError("expected at least one non-empty series")
    left, right, top, bottom = 56, 12, 40, 36  # title at y=16, legend row at y=32, plot below
    xs_all = [x for _, xs, _ in series for x in xs]
    ys_all = [y for _, _, ys in series for y in ys]
    yt = nice_ticks(min(ys_all), max(ys_all))
    x_lo, x_hi = min(xs_all), max(xs_all)
    if x_hi <= x_lo:
        x_hi = x_lo + 1
    y_lo, y_hi = yt[0], yt[-1]
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * pw

    def py(y: float) -> float:
        return top + (1 - (y - y_lo) / (y_hi - y_lo)) * ph

    e = html.escape
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{e(title)}">',
             f'<text x="{left}" y="16" class="title">{e(title)}</text>']
    for t in yt:
        y = py(t)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{t:.4g}</text>')
    for t in nice_ticks(x_lo, x_hi):
        if x_lo <= t <= x_hi:
            x = px(t)
            parts.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">{t:.6g}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">{e(x_label)}</text>')
    for i, (label, xs, ys) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{pts}" data-series="{e(label)}"/>')
        lx = left + i * 130
        parts.append(f'<rect x="{lx}" y="27" width="12" height="3" fill="{colour}"/>'
                     f'<text x="{lx + 16}" y="32">{e(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------- page sections


def _na(reason: str) -> str:
    return f'<p class="na">not available: {html.escape(reason)}</p>'


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _section(title: str, body: str, sid: str) -> str:
    return f'<section id="{sid}"><h2>{html.escape(title)}</h2>{body}</section>'


def _metrics_section(eval_dir: Path) -> str:
    try:
        metrics = _read_json(eval_dir / names.METRICS)
    except Missing as exc:
        return _na(str(exc))
    try:
        fid = _read_json(eval_dir / names.FID_KID)
    except Missing:
        fid = None
    rows = []
    for r in rate_metrics(metrics if isinstance(metrics, dict) else {}, fid):
        rows.append(f'<tr class="{r.mark}"><td><span class="mark {r.mark}" title="{r.mark}"></span>{html.escape(r.name)}</td>'
                    f"<td>{html.escape(r.value)}</td><td>{html.escape(r.baseline)}</td><td>{html.escape(r.reading)}</td></tr>")
    adapted = adaptations(metrics if isinstance(metrics, dict) else {})
    note = ('<p class="note adapted">This evaluation fitted its counts to the data (asked -> used; too few tiles for '
            f'the params): {html.escape("; ".join(adapted))}.</p>' if adapted else "")
    return ('<table class="metrics"><thead><tr><th>metric</th><th>value</th><th>real-vs-real baseline</th>'
            "<th>reading</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>" + note +
            '<p class="legend"><span class="mark green"></span>as good as the baseline '
            '<span class="mark amber"></span>a difference, or too few tiles to say '
            '<span class="mark red"></span>clearly worse <span class="mark grey"></span>no baseline to compare with. '
            f"All numbers: <code>{html.escape(str(eval_dir / names.METRICS))}</code>.</p>"
            + _floor_table(metrics if isinstance(metrics, dict) else {}) + _spectrum_chart(eval_dir))


def _floor_table(metrics: dict[str, Any]) -> str:
    """Every figure against its floor (:func:`floor_rows`): fakes vs the comparison reals, reals vs reals, their ratio."""
    rows = floor_rows(metrics)
    if not rows:
        return _na("no floors in metrics.json (written before evaluate measured them)")
    against = metrics.get("against", "holdout")
    body = "".join(
        f'<tr class="{r.mark}"><td><span class="mark {r.mark}" title="{r.mark}"></span>{html.escape(r.name)}</td>'
        f"<td>{r.value:.4g}</td><td>{r.floor:.4g}</td><td>{'n/a' if r.ratio is None else format(r.ratio, '.2f')}</td>"
        f"<td>{html.escape(r.reading)}</td></tr>" for r in rows)
    return (f'<h3>Each figure against its floor</h3><table class="floor"><thead><tr><th>figure</th>'
            f"<th>fakes vs {html.escape(str(against))} reals</th><th>floor: real vs real</th><th>ratio</th><th>what</th>"
            f"</tr></thead><tbody>{body}</tbody></table>"
            f'<p class="note">The floor is the same measurement between the {html.escape(str(against))} reals and as '
            f"many training reals: what a generator that sampled the real tiles would score. Distances within "
            f"{FLOOR_GREEN:g}x their floor are green, within {FLOOR_AMBER:g}x amber.</p>")


def _spectrum_chart(eval_dir: Path) -> str:
    """The mean radial log power spectra (``spectra.json``) of the fakes and both real sets, as one SVG chart."""
    try:
        doc = _read_json(eval_dir / SPECTRA)
        radius = doc["radius"]
        series = [(name, radius, ys) for name, ys in doc.items() if name != "radius"]
        chart = line_chart_svg("Mean radial power spectrum (log10 power)", series, x_label="radius (cycles per tile)")
    except Missing as exc:
        return _na(str(exc))
    except (KeyError, TypeError, ValueError) as exc:
        return _na(f"{eval_dir / SPECTRA}: unreadable ({exc})")
    return (f'<div class="charts"><div class="chart-box">{chart}</div></div><p class="note">Fakes above the reals at '
            "small radii have too much coarse contrast; below them at large radii, too little fine texture; "
            "spikes at 8, 16 or 32 cycles are the up-convolution grid (Durall et al. 2020).</p>")


def _classes_section(eval_dir: Path, samples_dir: Path) -> str:
    """The per-class table and generate's class grid; "" for unlabelled data (no ``classifier`` in metrics.json)."""
    try:
        metrics = _read_json(eval_dir / names.METRICS)
    except Missing:
        return ""
    columns, rows = rate_classes(metrics if isinstance(metrics, dict) else {})
    if not rows:
        return ""
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in ("class", *columns, "reading"))
    body = "".join(f'<tr class="{r.mark}"><td><span class="mark {r.mark}" title="{r.mark}"></span>{e(r.name)}</td>'
                   + "".join(f"<td>{e(c)}</td>" for c in r.cells) + f"<td>{e(r.reading)}</td></tr>" for r in rows)
    if columns == SHARE_COLUMNS:
        intro = ("An unconditional model: the share of held-out reals and of samples a classifier trained on the "
                 "labelled training tiles puts in each class. A class the model never makes is a dropped mode.")
    else:
        intro = ("A classifier trained on the labelled training tiles scores the held-out reals (the ceiling) and each "
                 "sample against the class it was asked for (GAN-test, Shmelkov et al. 2018). Per class the held-out "
                 "tiles are few: a judge on a handful of tiles is inconclusive, shown with its 95% interval.")
    grid_path = samples_dir / names.SAMPLES_CLASSES_DIR / names.CLASS_GRID
    grid = (_image_block(grid_path, "class grid", "One row of samples per class (generate's classes/grid.png)")
            if grid_path.is_file() else "")
    return _section("Per class", f'<p class="note">{e(intro)}</p><table class="metrics classes"><thead><tr>{head}</tr>'
                    f"</thead><tbody>{body}</tbody></table>{grid}", "classes")


def _display_width(path: Path, box: int = 420) -> int:
    """Shown width of a PNG: scaled so its longer side is about ``box`` px, never below its own size, at most 4x."""
    with Image.open(path) as im:
        w, h = im.size
    return round(w * min(4.0, max(1.0, box / max(w, h, 1))))


def _image_block(path: Path, alt: str, caption: str) -> str:
    try:
        uri = _png_uri(path)
        width = _display_width(path)
        return (f'<figure><img src="{uri}" alt="{html.escape(alt)}" style="width:{width}px">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    except Missing as exc:
        return f"<figure>{_na(str(exc))}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _training_section(live_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """The slider's markup and frames, and the charts."""
    frames: list[dict[str, Any]] = []
    try:
        found = sample_frames(live_dir.joinpath(*LIVE_SAMPLES_DIR))
        frames = [{"step": step, "src": _png_uri(p)} for step, p in found]
    except Missing as exc:
        slider = _na(str(exc))
    if frames:
        last = len(frames) - 1
        slider = (f'<div class="slider"><input type="range" id="frame" min="0" max="{last}" value="{last}" step="1" '
                  f'aria-label="training step"> <span id="frame-step">step {frames[-1]["step"]}</span></div>'
                  f'<img id="frame-img" class="frames" src="{frames[-1]["src"]}" alt="fixed-noise samples during training">'
                  f'<p class="note">The same latent vectors at {len(frames)} points of training '
                  "(dvclive's image series; drag the slider).</p>")
    charts = []
    metrics_dir = live_dir.joinpath(*LIVE_METRICS_DIR)
    for title, members in CHARTS:
        series, missing = [], []
        for name, label in members:
            try:
                xs, ys = read_series(metrics_dir / f"{name}.tsv")
                series.append((label, xs, ys))
            except Missing as exc:
                missing.append(str(exc))
        if series:
            charts.append(f'<div class="chart-box">{line_chart_svg(title, series)}'
                          + (_na("; ".join(missing)) if missing else "") + "</div>")
        else:
            charts.append(f'<div class="chart-box"><p class="title">{html.escape(title)}</p>{_na("; ".join(missing))}</div>')
    body = slider + '<div class="charts">' + "".join(charts) + "</div>"
    return body, frames


def _turing_section(eval_dir: Path) -> str:
    from satgan.evaluate.turing import load_key

    try:
        uri = _png_uri(eval_dir / names.TURING_GRID)
        with Image.open(eval_dir / names.TURING_GRID) as im:
            width, height = im.size
    except (Missing, OSError) as exc:
        return _na(str(exc))
    try:
        key = load_key(eval_dir / names.TURING_KEY)
    except SatganError as exc:
        return f'<div class="turing">{_img(uri, "Turing grid")}</div>' + _na(f"answers: {exc}")
    nrow = key["nrow"]
    tile = (width - 2) / nrow - 2  # save_grid: 2 px padding around and between tiles
    labels = []
    for t in key["tiles"]:
        x = (2 + t["col"] * (tile + 2)) / width * 100
        y = (2 + t["row"] * (tile + 2)) / height * 100
        labels.append(f'<span class="answer {t["label"]}" style="left:{x:.3f}%;top:{y:.3f}%;'
                      f'width:{tile / width * 100:.3f}%;height:{tile / height * 100:.3f}%">{t["label"]}</span>')
    n_real = sum(t["label"] == "real" for t in key["tiles"])
    return (f'<p>{n_real} held-out real and {len(key["tiles"]) - n_real} generated tiles (quiz {html.escape(key["quiz_id"])}). '
            "Decide for each, then show the answers. People take the test one tile at a time in "
            f'<a href="{names.QUIZ}">{names.QUIZ}</a> (same folder).</p>'
            '<input type="checkbox" id="show-answers"><label for="show-answers"> show the answers</label>'
            f'<div class="turing">{_img(uri, "Turing grid")}{"".join(labels)}</div>')


def _card_section(eval_dir: Path, model_card_md: Path | None) -> str:
    parts = []
    if model_card_md is not None:
        if model_card_md.is_file():
            try:
                parts.append(f'<pre class="card">{html.escape(model_card_md.read_text(encoding="utf-8"))}</pre>')
            except (OSError, UnicodeDecodeError) as exc:
                parts.append(_na(f"{model_card_md}: unreadable ({type(exc).__name__})"))
        else:
            parts.append(_na(f"{model_card_md} not found"))
    try:
        card = _read_json(eval_dir / names.EVAL_MODEL_CARD)
    except Missing as exc:
        return "".join(parts) + _na(str(exc))
    rows = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k in sorted(node):
                walk(node[k], f"{prefix}.{k}" if prefix else str(k))
        else:
            rows.append(f"<tr><td>{html.escape(prefix)}</td><td>{html.escape(json.dumps(node))}</td></tr>")

    walk({k: v for k, v in card.items() if k != "metrics"} if isinstance(card, dict) else {"card": card}, "")
    parts.append(f'<p><code>{html.escape(str(eval_dir / names.EVAL_MODEL_CARD))}</code>: the evaluated model '
                 '(its metrics are in the table at the top).</p>'
                 '<table class="card"><tbody>' + "".join(rows) + "</tbody></table>")
    return "".join(parts)


def render_report(eval_dir: Path, samples_dir: Path, live_dir: Path, model_card_md: Path | None = None) -> str:
    """The whole page as a string (see the module docstring for its sections)."""
    training, frames = _training_section(live_dir)
    classes = _classes_section(eval_dir, samples_dir)  # "" for unlabelled data: no section, no link
    nav = [("metrics", "verdict"), *([("classes", "per class")] if classes else []), ("samples", "samples"),
           ("training", "training"), ("turing", "Turing test"), ("copies", "copying"), ("card", "model card")]
    body = "".join([
        _section("The verdict", _metrics_section(eval_dir), "metrics"),
        classes,
        _section("What the model makes", _image_block(samples_dir / names.SAMPLE_GRID, "sample grid",
                 "Samples (generate's grid.png)") + _image_block(samples_dir / names.INTERPOLATION, "latent interpolation",
                 "Walking between latent vectors (spherical interpolation), one row per pair"), "samples"),
        _section("Training", training, "training"),
        _section("Turing test", _turing_section(eval_dir), "turing"),
        _section("Is it copying?", _image_block(eval_dir / names.CLOSEST_PAIRS, "closest pairs",
                 "The samples most similar to a training tile: each sample (left) beside its nearest training tile (right)"),
                 "copies"),
        _section("Model card", _card_section(eval_dir, model_card_md), "card"),
    ])
    template = resources.files("satgan.evaluate").joinpath(REPORT).read_text(encoding="utf-8")
    for marker in ("__REPORT_NAV__", "__REPORT_BODY__", "__REPORT_FRAMES__"):
        if marker not in template:
            raise ValueError(f"{REPORT} template lacks the {marker} placeholder")
    frames_json = json.dumps(frames, separators=(",", ":")).replace("</", "<\\/")
    links = "".join(f'<a href="#{sid}">{html.escape(label)}</a>' for sid, label in nav)
    return (template.replace("__REPORT_FRAMES__", frames_json).replace("__REPORT_NAV__", links)
            .replace("__REPORT_BODY__", body))


def write_report(eval_dir: str | Path, samples_dir: str | Path, live_dir: str | Path,
                 model_card_md: str | Path | None = None, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``report.html`` and ``headline.json`` into ``out_dir`` (default: ``eval_dir``); returns their paths.

    Reads eval_dir (metrics.json, fid_kid.json, turing_grid.png, turing_key.json,
    closest_pairs.png, model_card.json), samples_dir (grid.png, interpolation.png, and
    classes/grid.png when generate wrote one), live_dir
    (dvclive: metrics.json, plots/metrics/train/*.tsv, plots/images/samples/*.png) and the
    optional markdown model card. Missing inputs become "not available" on the page and None
    in the headline; this function does not raise for them.
    """
    eval_dir, samples_dir, live_dir = Path(eval_dir), Path(samples_dir), Path(live_dir)
    out = Path(out_dir) if out_dir is not None else eval_dir
    card = Path(model_card_md) if model_card_md is not None else None
    paths = {"report": out / REPORT, "headline": out / HEADLINE}
    write_text_atomic(paths["report"], render_report(eval_dir, samples_dir, live_dir, card))
    try:
        metrics = _read_json(eval_dir / names.METRICS)
    except Missing:
        metrics = None
    try:
        live = _read_json(live_dir / LIVE_SUMMARY)
    except Missing:
        live = None
    # Key order is column order in `dvc exp show`: the judge first (write_json_atomic would sort).
    write_text_atomic(paths["headline"], json.dumps(headline(metrics, live), indent=2) + "\n")
    return paths


# ----------------------------------------------------------------- command line


def _folders(params_path: Path) -> dict[str, Path]:
    """The eval, samples and live folders from params.yaml's ``paths`` section."""
    from satgan.params import read_params_file

    doc = read_params_file(params_path)
    paths = doc["paths"] if "paths" in doc else None
    if not isinstance(paths, dict):
        raise ParamsError(f"{params_path}: missing section 'paths'")
    out = {}
    for key in ("eval", "samples", "live"):
        if key not in paths or not isinstance(paths[key], str):
            raise ParamsError(f"{params_path}: paths.{key}: expected a folder path")
        out[key] = Path(paths[key])
    return out


def main(argv: list[str] | None = None, prog: str = "python -m satgan.evaluate.report") -> None:
    """Build the report page by hand (the evaluate stage builds it too)."""
    from satgan.params import DEFAULT_PARAMS

    ap = argparse.ArgumentParser(prog=prog, description="Build data/eval/report.html (and headline.json) "
                                 "from the pipeline's outputs: one self-contained page to open in a browser.")
    ap.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file whose `paths` name the folders")
    ap.add_argument("--model-card", type=Path, default=None, help="a markdown model card to include")
    ap.add_argument("--out", type=Path, default=None, help="folder to write into (default: the eval folder)")
    args = ap.parse_args(argv)
    folders = _folders(args.params)
    paths = write_report(folders["eval"], folders["samples"], folders["live"], args.model_card, args.out)
    print(f"wrote {paths['report']} (open it in a browser) and {paths['headline']}")


if __name__ == "__main__":
    run_main(main, "report")
