"""The evaluations the evaluate tests read (tests/test_evaluate_readings.py, tests/test_evaluate_report.py): metrics.json
documents as evaluate writes them, the inputs of the readings and the page, not expected results; and the headless
Chromium that the page tests (report.html, quiz.html) drive."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium (see .ci/run)")

# An evaluation as evaluate writes it (the input of the page, not an expected result).
METRICS = {
    "n": {"train": 60, "holdout": 30, "fake": 30},
    "judge": {"accuracy": 0.97, "auc": 0.99, "log_loss": 0.08, "brier": 0.02, "p_value": 1e-12, "log10_p_value": -12.0, "n_test": 60,
              "accuracy_ci_low": 0.88, "accuracy_ci_high": 0.99},
    "swd": {"16px": 0.3, "32px": 0.4, "mean": 0.35},
    "colour_hist": {"ch0": 0.2, "mean": 0.25},
    "spectral": {"ch0": 0.3, "mean": 0.3},
    "floor": {"n": 30, "judge": {"accuracy": 0.55, "auc": 0.56, "log_loss": 0.71}, "swd": {"mean": 0.1},
              "colour_hist": {"mean": 0.2}, "spectral": {"mean": 0.1}},
    "memorization": {"frac_above_threshold": 0.0, "holdout_frac_above_threshold": 0.0, "ssim_median": 0.2,
                     "ssim_max": 0.3, "holdout_ssim_median": 0.15},
    "diversity": {"fake_mean_ssim": 0.36, "real_mean_ssim": 0.04, "collapsed": 1},
}


def accuracy_block(acc: float, lo: float, hi: float, n: int) -> dict:
    """A classifier's accuracy block as metrics.json holds it: the accuracy, its 95% interval and the tile count."""
    return {"accuracy": acc, "ci_low": lo, "ci_high": hi, "n": n}


# A conditional model's labelled evaluation as evaluate writes it (the input of the page, not an expected result).
JUDGE_4 = {"accuracy": 0.75, "accuracy_ci_low": 0.19, "accuracy_ci_high": 0.99, "conclusive": 0, "p_value": 0.31,
           "n_test": 4, "auc": 0.7, "log_loss": 0.6, "brier": 0.2, "log10_p_value": -0.5, "n_train": 4}
LABELLED = {**METRICS,
            "classifier": {"n_classes": 2, "chance": 0.5, "n_train": 60,
                           "real_test": {**accuracy_block(0.9, 0.75, 0.97, 30),
                                         "per_class": {"forest": accuracy_block(0.93, 0.7, 0.99, 15),
                                                       "river": accuracy_block(0.87, 0.6, 0.98, 15)}},
                           "gan_test": {**accuracy_block(0.7, 0.6, 0.72, 100),
                                        "per_class": {"forest": accuracy_block(0.9, 0.78, 0.97, 50),
                                                      "river": accuracy_block(0.5, 0.36, 0.64, 50)}}},
            "per_class": {"forest": {"n_holdout": 2, "n_fake": 50, "judge": "not computed: 2 held-out real and 50 "
                                     "generated tiles of this class; a per-class figure needs at least 2 of each",
                                     "swd": {"mean": 0.3}, "diversity": {"fake_mean_ssim": 0.2, "real_mean_ssim": 0.2,
                                                                         "collapsed": 0}},
                          "river": {"n_holdout": 4, "n_fake": 50, "judge": JUDGE_4, "swd": {"mean": 0.4},
                                    "diversity": {"fake_mean_ssim": 0.9, "real_mean_ssim": 0.2, "collapsed": 1}}}}
UNCONDITIONAL = {**METRICS,
                 "classifier": {"n_classes": 3, "chance": 1 / 3, "n_train": 60,
                                "real_test": {**accuracy_block(0.9, 0.75, 0.97, 30), "per_class": {}},
                                "shares": {"forest": {"fake": 0.5, "holdout": 0.4}, "river": {"fake": 0.5, "holdout": 0.3},
                                           "town": {"fake": 0.0, "holdout": 0.3}},
                                "tv_distance": 0.3, "tv_noise": 0.08},
                 "per_class": "not computed: the samples carry no class (an unconditional model)"}
