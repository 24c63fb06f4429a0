"""Every mark and threshold of the evaluation, once: what each figure of metrics.json *means*.

evaluate (whether the judge is conclusive), ``report.html`` (:mod:`satgan.evaluate.report`, which
only renders), ``satgan summary`` (:mod:`satgan.evaluate.summary`), ``headline.json`` and the
README ask this module; none of them types a threshold again. Its map:

- thresholds: :data:`JUDGE_ALPHA`, :data:`JUDGE_EASY`, :data:`JUDGE_MIN_TEST`,
  :data:`FLOOR_GREEN` / :data:`FLOOR_AMBER`, :data:`COPIES_GREEN` / :data:`COPIES_AMBER`,
  :data:`DIVERSITY_GREEN`, :data:`CLASS_DROPPED_SHARE`, and the demo targets of issue 19
  (:data:`DEMO_TARGETS`, :func:`demo_targets`);
- marks: green (as good as the real-vs-real baseline), amber (a difference, or too few tiles to
  say), red (clearly worse), grey (no baseline), :data:`MARKS`;
- readings: :func:`judge_conclusive` (evaluate writes it into metrics.json),
  :func:`judge_mark`, :func:`floor_mark` / :func:`floor_rows` (each figure against its floor),
  :func:`rate_metrics` (the verdict table), :func:`rate_classifier` / :func:`rate_classes`
  (labelled data), :func:`headline` (what ``dvc exp show`` compares).

Pure: every function takes parsed metrics.json (a dict; anything missing or malformed reads as
"not available", never an exception) and returns values, no HTML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from satgan.errors import DataError

MARKS = ("green", "amber", "red", "grey")
JUDGE_MIN_TEST = 40  # fewer judge test tiles than this: a non-significant judge is inconclusive, not green
JUDGE_EASY = 0.75  # accuracy at which a difference counts as easy: red here, and what evaluate's conclusive rule must rule out
JUDGE_ALPHA = 0.05  # the judge "finds a difference" below this p-value
# A distance (SWD, colour, spectral) against its floor, the same distance between two sets of real tiles:
# green within FLOOR_GREEN x (issue 19's demo target: within 2x), amber within FLOOR_AMBER x, red beyond.
FLOOR_GREEN, FLOOR_AMBER = 2.0, 4.0
# Unconditional model: a class the held-out reals put at least this share in (by the classifier) but no sample
# falls in is a dropped mode (red); the class spreads count as the same within twice the distance sampling alone gives.
CLASS_DROPPED_SHARE = 0.05
# Likely copies (memorization): the share of samples above the SSIM threshold, against the same share among
# held-out reals never trained on: green within 1 point, amber within 5, red beyond.
COPIES_GREEN, COPIES_AMBER = 0.01, 0.05
# Diversity: fakes' mean pairwise SSIM at most this much above the reals' is "as varied as real tiles".
DIVERSITY_GREEN = 0.05


@dataclass(frozen=True)
class Target:
    """One demo target (issue 19): what it asks, and whether metrics.json meets it (None: not measured)."""

    name: str
    wanted: str
    met: bool | None

    @property
    def verdict(self) -> str:
        """"met", "missed" or "not measured": the one wording the report and ``satgan summary`` show."""
        return "met" if self.met else "missed" if self.met is False else "not measured"

    @property
    def mark(self) -> str:
        """The report's colour for :attr:`verdict`: green, red or grey."""
        return "green" if self.met else "red" if self.met is False else "grey"


# Issue 19's demo targets: what a demo run should reach (README "What good looks like").
DEMO_JUDGE_MAX = 0.85  # judge accuracy at most this
DEMO_FLOOR_RATIO = FLOOR_GREEN  # spectral distance and SWD each within this many times their real-vs-real floor
DEMO_SSIM_GAP = DIVERSITY_GREEN  # fakes' mean pairwise SSIM within this of the reals'
DEMO_TARGETS = (
    ("judge accuracy", f"<= {DEMO_JUDGE_MAX}"),
    ("spectral distance", f"<= {DEMO_FLOOR_RATIO:g}x its floor"),
    ("SWD", f"<= {DEMO_FLOOR_RATIO:g}x its floor"),
    ("fake pair SSIM", f"within {DEMO_SSIM_GAP} of real"),
    ("memorized", "none (0 samples above the SSIM threshold)"),
)


def demo_targets(metrics: dict[str, Any]) -> list[Target]:
    """Each of :data:`DEMO_TARGETS` against ``metrics`` (parsed metrics.json): met, missed, or None (not measured)."""
    def ratio_ok(key: str) -> bool | None:
        v, f = number(metrics, key), number(metrics, "floor." + key)
        return None if v is None or f is None or f <= 0 else v <= DEMO_FLOOR_RATIO * f

    acc = number(metrics, "judge.accuracy")
    fake, real = number(metrics, "diversity.fake_mean_ssim"), number(metrics, "diversity.real_mean_ssim")
    copied = number(metrics, "memorization.frac_above_threshold")
    met = (
        None if acc is None else acc <= DEMO_JUDGE_MAX,
        ratio_ok("spectral.mean"),
        ratio_ok("swd.mean"),
        None if fake is None or real is None else abs(fake - real) <= DEMO_SSIM_GAP,
        None if copied is None else copied == 0.0,
    )
    return [Target(name, wanted, ok) for (name, wanted), ok in zip(DEMO_TARGETS, met)]


def judge_conclusive(p_value: float, ci_high: float) -> bool:
    """Whether the judge's result says something: it found a difference (p < :data:`JUDGE_ALPHA`), or its 95% interval
    rules out an easy one (upper bound < :data:`JUDGE_EASY`). A judge scored on 8 tiles at accuracy 0.75 (p = 0.14,
    interval 0.35-0.97) says neither, so it is inconclusive and never a headline. evaluate writes it into
    metrics.json as ``judge.conclusive``.
    """
    return p_value < JUDGE_ALPHA or ci_high < JUDGE_EASY


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
    return p is None or p < JUDGE_ALPHA or (n_test is not None and n_test >= JUDGE_MIN_TEST)


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
    if p >= JUDGE_ALPHA:
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
      metrics.json says ``judge.conclusive`` 0 (:func:`judge_conclusive`).
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
        mark = "green" if excess <= COPIES_GREEN else "amber" if excess <= COPIES_AMBER else "red"
        out.append(Rated("likely copies of training tiles", _fmt(copies, ".1%"), _fmt(base, ".1%") + " of held-out reals", mark,
                         f"{copies:.1%} of samples are near-duplicates of a training tile; real tiles never trained on: {base:.1%}"))

    fake, real, collapsed = (number(metrics, "diversity.fake_mean_ssim"), number(metrics, "diversity.real_mean_ssim"),
                             number(metrics, "diversity.collapsed"))
    if fake is None or real is None:
        out.append(Rated("diversity (pairwise SSIM)", "n/a", "n/a", "grey", "not available: no diversity result"))
    else:
        diff = fake - real
        mark = "red" if collapsed else "green" if diff <= DIVERSITY_GREEN else "amber"
        text = ("mode collapse: fakes are far more alike than real tiles" if collapsed else
                "fakes are about as varied as real tiles" if diff <= DIVERSITY_GREEN else "fakes are somewhat more alike than real tiles")
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
                          ("green", "about as often as among held-out reals") if abs(f - h) <= max(CLASS_DROPPED_SHARE, h / 2) else
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
                if p is not None and p < JUDGE_ALPHA and acc >= JUDGE_EASY:  # as the overall judge's red (rate_metrics)
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


# headline.json's graded figures: the ones that rank runs, first in ``dvc exp show`` (their key order is its column
# order), so they stay on the first screen of a 160-column terminal whatever follows (tests/test_dvc_metrics.py).
HEADLINE_GRADED = ("judge_acc", "ll", "brier", "swd", "spectral", "colour", "copied", "ssim_fake", "fid", "gan_test_acc")
# ... then what reads them (the reals' pair SSIM, the collapse flag) and the train figures.
HEADLINE_CONTEXT = ("ssim_real", "collapse", "step", "img_s")


def headline(metrics: dict[str, Any] | None, live_summary: dict[str, Any] | None) -> dict[str, float | None]:
    """The figures ``dvc exp show`` compares runs by: short flat keys, None where not available.

    Graded first (:data:`HEADLINE_GRADED`, in this order): judge accuracy and its two graded
    scores, the log-loss (``ll``) and the Brier score (``brier``): the accuracy and p-value
    saturate at 1.0 and ~1e-25 once fakes are easy to tell, so ``dvc exp show --only-changed``
    drops them, while the two proper scores still move and rank runs; SWD, the spectral and
    colour-histogram distances, the share of likely copies, the mean pairwise SSIM of fakes
    (``ssim_fake``), FID when computed, and a conditional model's GAN-test accuracy (labelled
    data; None when inconclusive, :func:`gan_test_conclusive`; its ceiling, the classifier's
    accuracy on held-out reals, depends on the data only, so it stays in metrics.json with the
    other baselines). An inconclusive judge (too few test tiles to say anything,
    :func:`judge_is_conclusive`) has no headline accuracy: ``judge_acc`` is None (its p-value
    and the floors of each figure stay in metrics.json).

    Then :data:`HEADLINE_CONTEXT`: the reals' mean pairwise SSIM (``ssim_real``, what
    ``ssim_fake`` is read against; it depends on the data only, so ``--only-changed`` drops it
    between runs on the same tiles), the collapse flag (``collapse``: metrics.json's
    ``diversity.collapsed``, 1 when the fakes' pair SSIM exceeds the reals' by more than
    ``evaluate.diversity.margin``; evaluate decides it, nobody here recomputes it), and from
    dvclive's summary the last step and img/s.
    """
    m = metrics if isinstance(metrics, dict) else {}
    live = live_summary if isinstance(live_summary, dict) else {}
    out = {  # every figure; put in the order HEADLINE_GRADED + HEADLINE_CONTEXT below
        "judge_acc": number(m, "judge.accuracy") if judge_is_conclusive(m) else None,
        "ll": number(m, "judge.log_loss"),
        "brier": number(m, "judge.brier"),
        "swd": number(m, "swd.mean"),
        "spectral": number(m, "spectral.mean"),
        "colour": number(m, "colour_hist.mean"),
        "copied": number(m, "memorization.frac_above_threshold"),
        "ssim_fake": number(m, "diversity.fake_mean_ssim"),
    }
    if number(m, "fid") is not None:
        out["fid"] = number(m, "fid")
    if number(m, "classifier.gan_test.accuracy") is not None:
        out["gan_test_acc"] = number(m, "classifier.gan_test.accuracy") if gan_test_conclusive(m) else None
    out["ssim_real"] = number(m, "diversity.real_mean_ssim")
    out["collapse"] = number(m, "diversity.collapsed")
    out["step"] = number(live, "step")
    out["img_s"] = number(live, "train.img_per_s")
    return {key: out[key] for key in HEADLINE_GRADED + HEADLINE_CONTEXT if key in out}


# The figures a reader of metrics.json needs (satgan summary, satgan report): a file without them is not
# an evaluation, whatever else it holds.
REQUIRED_FIGURES = (
    "n.train", "n.holdout", "n.fake",
    "judge.accuracy", "judge.auc", "judge.p_value", "judge.n_test", "judge.accuracy_ci_low", "judge.accuracy_ci_high",
    "swd.mean", "colour_hist.mean",
    "memorization.frac_above_threshold", "memorization.holdout_frac_above_threshold", "memorization.ssim_median",
    "memorization.ssim_max",
    "diversity.fake_mean_ssim", "diversity.real_mean_ssim", "diversity.collapsed",
)


def check_metrics(metrics: Any, source: str) -> dict[str, Any]:
    """``metrics`` (parsed ``source``, a metrics.json) if it holds every :data:`REQUIRED_FIGURES` as a finite number;
    else one :class:`DataError` line naming the file and the first missing figures (rerun evaluate).
    """
    missing = [key for key in REQUIRED_FIGURES if number(metrics, key) is None]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise DataError(f"{source}: not an evaluate metrics.json: no number at {shown} (rerun `dvc repro evaluate`)")
    return metrics


def check_fid_kid(fid: Any, source: str) -> dict[str, Any]:
    """``fid`` (parsed fid_kid.json) if ``fid`` and ``kid`` are numbers, or strings with a ``reason``; else one DataError line."""
    ok = isinstance(fid, dict) and (
        (number(fid, "fid") is not None and number(fid, "kid") is not None)
        or (isinstance(fid.get("fid"), str) and isinstance(fid.get("reason"), str)))
    if not ok:
        raise DataError(f"{source}: not an evaluate fid_kid.json: expected 'fid' and 'kid' numbers, or 'not computed' "
                        "with a 'reason' (rerun `dvc repro evaluate`)")
    return fid
