"""Tests for satgan.evaluate.readings: every mark, threshold and headline figure read from metrics.json."""

from __future__ import annotations

import json

import pytest

from evaluate_helpers import LABELLED, METRICS, UNCONDITIONAL, accuracy_block
from satgan.evaluate.metrics import clopper_pearson
from satgan.evaluate.readings import (
    FLOOR_GREEN,
    HEADLINE_CONTEXT,
    HEADLINE_GRADED,
    JUDGE_EASY,
    demo_targets,
    floor_rows,
    gan_test_mark,
    headline,
    judge_conclusive,
    number,
    rate_classes,
    rate_metrics,
)


def _marks(metrics: dict) -> dict[str, str]:
    return {r.name: r.mark for r in rate_metrics(metrics, None)}


def _patched(**changes) -> dict:
    doc = json.loads(json.dumps(METRICS))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return doc


def test_number_reads_finite_numbers_only():
    """number() returns floats at dotted paths and None for missing keys, strings, bools and NaN."""
    doc = {"a": {"b": 2, "s": "3", "t": True, "n": float("nan")}}
    assert number(doc, "a.b") == 2.0
    assert [number(doc, k) for k in ("a.s", "a.t", "a.n", "a.x", "a.b.c", "z")] == [None] * 6


def test_judge_marks_follow_significance_and_size():
    """Significant and easy is red; not significant on enough tiles is green; on few tiles amber."""
    assert _marks(METRICS)["judge accuracy"] == "red"
    assert _marks(_patched(judge__p_value=0.4, judge__accuracy=0.55))["judge accuracy"] == "green"
    assert _marks(_patched(judge__p_value=0.4, judge__accuracy=0.75, judge__n_test=9))["judge accuracy"] == "amber"
    assert _marks(_patched(judge__p_value=0.01, judge__accuracy=0.6))["judge accuracy"] == "amber"


def test_an_inconclusive_judge_is_amber_with_its_interval_and_no_headline():
    """judge.conclusive 0 (8 test tiles, accuracy 0.75, p 0.14): amber, the 95% CI shown, judge_acc None in the headline."""
    small = _patched(judge__accuracy=0.75, judge__p_value=0.14, judge__n_test=8, judge__conclusive=0,
                     judge__accuracy_ci_low=0.349, judge__accuracy_ci_high=0.968)
    row = next(r for r in rate_metrics(small, None) if r.name == "judge accuracy")
    assert row.mark == "amber" and row.value == "0.750 (95% CI 0.35-0.97)" and row.reading.startswith("inconclusive")
    h = headline(small, None)
    assert h["judge_acc"] is None
    assert headline(_patched(judge__conclusive=1), None)["judge_acc"] == METRICS["judge"]["accuracy"]


def test_distances_are_grey_without_a_floor_and_rated_with_one():
    """SWD has no mark without a real-vs-real floor; with one, 1.2x is green and 5x red."""
    assert _marks({k: v for k, v in METRICS.items() if k != "floor"})["SWD (patch texture)"] == "grey"
    assert _marks(_patched(floor__swd__mean=0.35 / 1.2))["SWD (patch texture)"] == "green"
    assert _marks(_patched(floor__swd__mean=0.07))["SWD (patch texture)"] == "red"


def test_floor_rows_give_each_figure_its_floor_and_ratio():
    """Every figure with a floor is a row: the value, the real-vs-real floor and their ratio, judge first."""
    rows = {r.name: r for r in floor_rows(METRICS)}
    assert list(rows)[0] == "judge accuracy" and len(rows) == 6
    assert rows["spectral distance"].floor == 0.1 and rows["spectral distance"].ratio == pytest.approx(3.0)
    assert rows["SWD (patch texture)"].ratio == pytest.approx(3.5)


def test_distances_within_the_floor_ratio_are_green():
    """A distance within FLOOR_GREEN x its floor is green; the spectral distance 3x its floor is amber."""
    at = _patched(spectral__mean=0.1 * FLOOR_GREEN)
    assert {r.name: r.mark for r in floor_rows(at)}["spectral distance"] == "green"
    assert _marks(METRICS)["spectral distance"] == "amber"


def test_a_judge_whose_interval_reaches_its_floor_is_green():
    """A significant judge whose 95% interval reaches down to the real-vs-real judge's accuracy is green."""
    near = _patched(judge__accuracy=0.62, judge__p_value=0.001, judge__accuracy_ci_low=0.54, judge__accuracy_ci_high=0.7)
    assert _marks(near)["judge accuracy"] == "green"
    assert _marks(_patched(judge__accuracy=0.62, judge__p_value=0.001, judge__accuracy_ci_low=0.58))["judge accuracy"] == "amber"


def test_metrics_without_floors_have_no_floor_rows():
    """metrics.json written before floors existed gives no floor rows (the page says not available)."""
    assert floor_rows({k: v for k, v in METRICS.items() if k != "floor"}) == []


def test_headline_carries_the_spectral_distance():
    """headline.json has the spectral distance beside SWD."""
    assert headline(METRICS, None)["spectral"] == 0.3


def test_headline_carries_the_brier_score_the_real_pair_ssim_and_the_collapse_flag():
    """headline.json has the judge's Brier score, the reals' pair SSIM and metrics.json's collapse flag as evaluate set it."""
    h = headline(METRICS, None)
    assert (h["brier"], h["ssim_real"], h["collapse"]) == (0.02, 0.04, 1.0)
    assert headline(_patched(diversity__collapsed=0), None)["collapse"] == 0.0


def test_headline_puts_the_graded_figures_first():
    """Key order (dvc exp show's column order): the graded figures, then the reals' SSIM, the collapse flag, step and img/s."""
    every = headline({**LABELLED, "fid": 3.0}, {"step": 5, "train": {"img_per_s": 9.0}})
    assert list(every) == list(HEADLINE_GRADED + HEADLINE_CONTEXT)
    assert list(headline(METRICS, None)) == [k for k in HEADLINE_GRADED + HEADLINE_CONTEXT
                                             if k not in ("fid", "gan_test_acc")]


def test_copies_and_diversity_are_rated_against_the_real_tiles():
    """Copies at the held-out rate are green, far above it red; collapsed diversity is red, equal diversity green."""
    assert _marks(METRICS)["likely copies of training tiles"] == "green"
    assert _marks(_patched(memorization__frac_above_threshold=0.2))["likely copies of training tiles"] == "red"
    assert _marks(METRICS)["diversity (pairwise SSIM)"] == "red"
    assert _marks(_patched(diversity__fake_mean_ssim=0.06, diversity__collapsed=0))["diversity (pairwise SSIM)"] == "green"


def test_missing_metrics_are_grey_not_errors():
    """An empty metrics document gives every row 'grey' with a reason."""
    rated = rate_metrics({}, None)
    assert {r.mark for r in rated} == {"grey"} and all(r.reading for r in rated)


def test_headline_is_small_and_flat():
    """The headline has a few flat numeric-or-None figures, FID only when computed."""
    h = headline(METRICS, {"train": {"img_per_s": 120.0}, "step": 600})
    assert h["judge_acc"] == 0.97 and h["step"] == 600 and h["img_s"] == 120.0 and "fid" not in h
    assert all(v is None or isinstance(v, float) for v in h.values()) and len(h) <= 12
    assert headline(None, None) == {k: None for k in h}
    assert headline({**METRICS, "fid": 12.5}, None)["fid"] == 12.5


@pytest.mark.parametrize(("lo", "hi", "mark", "start"), [
    (0.6, 0.8, "green", "the samples classify as their class"), (0.1, 0.45, "red", "the samples do not look like"),
    (0.1, 0.9, "amber", "inconclusive"), (0.55, 0.7, "amber", "the samples look like their class, but less often"),
])
def test_gan_test_is_read_against_the_real_test_and_chance(lo, hi, mark, start):
    """GAN-test's interval meeting the real-test's lower bound is green, holding chance red, holding both inconclusive."""
    got = gan_test_mark(lo, hi, real_low=0.75, chance=0.5)
    assert got[0] == mark and got[1].startswith(start)


def test_the_gan_test_row_names_its_baseline_and_weakest_class():
    """The verdict table's GAN-test row shows the interval, the real-test baseline and the weakest class."""
    row = next(r for r in rate_metrics(LABELLED, None) if r.name == "GAN-test accuracy")
    assert row.value == "0.700 (95% CI 0.60-0.72)" and row.baseline.startswith("0.900 on held-out reals")
    assert row.mark == "amber" and "weakest class: river 0.50 of 50 samples" in row.reading


def test_an_unconditional_model_that_drops_a_class_is_red_naming_it():
    """A class holding 30% of the held-out reals and no sample: class coverage red, the class named."""
    row = next(r for r in rate_metrics(UNCONDITIONAL, None) if r.name == "class coverage")
    assert row.mark == "red" and row.reading.endswith("never makes these classes: town")
    even = json.loads(json.dumps(UNCONDITIONAL))
    even["classifier"]["shares"]["town"]["fake"], even["classifier"]["tv_distance"] = 0.1, 0.1
    assert next(r for r in rate_metrics(even, None) if r.name == "class coverage").mark == "green"


def test_unlabelled_metrics_have_no_class_rows_or_table():
    """Without a classifier section neither the verdict table nor the class table gets a class row."""
    assert [r.name for r in rate_metrics(METRICS, None)] == [r.name for r in rate_metrics(LABELLED, None)
                                                            if r.name != "GAN-test accuracy"]
    assert rate_classes(METRICS) == ((), [])


def test_each_class_row_takes_its_worst_mark_and_keeps_a_small_judge_inconclusive():
    """river: collapsed diversity makes it red; its 4-tile judge reads inconclusive; forest says why it has no judge."""
    columns, rows = rate_classes(LABELLED)
    by_name = {r.name: r for r in rows}
    assert len(columns) == len(rows[0].cells) and set(by_name) == {"forest", "river"}
    assert by_name["river"].mark == "red" and "far more alike" in by_name["river"].reading
    assert by_name["river"].cells[3] == "inconclusive: 0.75 (95% CI 0.19-0.99) on 4 tiles"
    assert by_name["forest"].mark == "green" and by_name["forest"].cells[3].startswith("not computed: 2 held-out")


def test_a_class_the_classifier_cannot_recognise_gets_no_gan_test_reading():
    """A class whose real-test interval reaches chance is grey per class and never named the weakest class."""
    doc = json.loads(json.dumps(LABELLED))
    doc["classifier"]["real_test"]["per_class"]["river"] = accuracy_block(0.4, 0.2, 0.7, 15)
    row = next(r for r in rate_metrics(doc, None) if r.name == "GAN-test accuracy")
    assert "weakest class: forest" in row.reading
    del doc["per_class"]["river"]["diversity"]
    river = next(r for r in rate_classes(doc)[1] if r.name == "river")
    assert river.mark == "grey" and "does not recognise this class" in river.reading


def test_headline_adds_the_gan_test_accuracy_only_when_there_is_one():
    """A conditional model's headline gains gan_test_acc (None when inconclusive); unlabelled and unconditional ones keep their columns."""
    assert headline(LABELLED, None)["gan_test_acc"] == 0.7
    wide = json.loads(json.dumps(LABELLED))
    wide["classifier"]["gan_test"].update(ci_low=0.3, ci_high=0.95)
    assert headline(wide, None)["gan_test_acc"] is None
    assert list(headline(UNCONDITIONAL, None)) == list(headline(METRICS, None))
    assert "gan_test_acc" not in headline(METRICS, None)


def test_gan_train_sits_beside_gan_test_with_the_same_reading():
    """A gan_train block adds a GAN-train row after GAN-test, marked by the same rule against the real-test and chance."""
    block = {"n_classes": 7, "chance": 1 / 7, "real_test": {"accuracy": 0.9, "ci_low": 0.8, "ci_high": 0.95},
             "gan_test": {"accuracy": 0.85, "ci_low": 0.75, "ci_high": 0.92},
             "gan_train": {"accuracy": 0.3, "ci_low": 0.1, "ci_high": 0.45}}
    rows = [r for r in rate_metrics({**METRICS, "classifier": block}, None) if r.name.startswith("GAN-")]
    assert [r.name for r in rows] == ["GAN-test accuracy", "GAN-train accuracy"]
    assert rows[1].mark == gan_test_mark(0.1, 0.45, 0.8, 1 / 7)[0] and rows[1].value.startswith("0.300")


def test_judge_reading_needs_a_difference_or_a_narrow_interval():
    """Significant is conclusive; not significant is conclusive only when the 95% interval rules out 0.75."""
    assert not judge_conclusive(0.14, clopper_pearson(6, 8)[1])
    assert judge_conclusive(0.004, clopper_pearson(8, 8)[1])
    assert judge_conclusive(0.6, clopper_pearson(82, 164)[1])


def test_demo_targets_read_each_target_against_metrics():
    """The demo targets (issue 19): judge <= 0.85, distances within 2x their floor, SSIM gap, no copies."""
    met = {t.name: t.met for t in demo_targets(METRICS)}
    assert met == {"judge accuracy": False, "spectral distance": False, "SWD": False, "fake pair SSIM": False,
                   "memorized": True}


def test_demo_targets_are_unmeasured_without_metrics():
    """A metrics.json without the figures leaves every target None (not measured), never an error."""
    assert {t.met for t in demo_targets({})} == {None}


def test_the_judge_is_red_from_the_easy_threshold():
    """A significant judge at JUDGE_EASY or above is red, just below it amber (one threshold, here)."""
    marks = {acc: _marks(_patched(judge__accuracy=acc, judge__accuracy_ci_low=acc - 0.05))["judge accuracy"]
             for acc in (JUDGE_EASY, JUDGE_EASY - 0.01)}
    assert marks == {JUDGE_EASY: "red", JUDGE_EASY - 0.01: "amber"}


def test_headline_carries_the_graded_judge_and_colour_distance():
    """headline.json has the judge's log-loss (it moves when accuracy saturates at 1.0) and the colour distance."""
    h = headline(METRICS, None)
    assert h["ll"] == METRICS["judge"]["log_loss"] and h["colour"] == METRICS["colour_hist"]["mean"]
