"""Tests for satgan.evaluate.summary: the table and paths printed after `make demo`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

METRICS = {
    "n": {"train": 600, "holdout": 70, "fake": 512},
    "judge": {"accuracy": 0.81, "auc": 0.9, "p_value": 1e-6, "log10_p_value": -6.0, "n_test": 70,
              "accuracy_ci_low": 0.7, "accuracy_ci_high": 0.89},
    "swd": {"64px": 0.2, "32px": 0.1, "16px": 0.05, "mean": 0.1167},
    "colour_hist": {"ch0": 0.1, "ch1": 0.1, "ch2": 0.1, "mean": 0.1},
    "memorization": {"ssim_max": 0.7, "ssim_p95": 0.6, "ssim_median": 0.3, "l2_min": 0.2, "l2_median": 0.4,
                     "frac_above_threshold": 0.0, "holdout_frac_above_threshold": 0.0, "holdout_ssim_median": 0.3},
    "diversity": {"fake_mean_ssim": 0.95, "real_mean_ssim": 0.1, "collapsed": 1},
}


def _setup(tmp_path, repo_root, write_metrics=True):
    doc = yaml.safe_load((repo_root / "params.yaml").read_text())
    doc["paths"]["samples"] = str(tmp_path / "samples")
    doc["paths"]["eval"] = str(tmp_path / "eval")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "eval").mkdir()
    if write_metrics:
        (tmp_path / "eval" / "metrics.json").write_text(json.dumps(METRICS))
        (tmp_path / "eval" / "fid_kid.json").write_text(json.dumps({"fid": "not computed", "kid": "not computed",
                                                                     "reason": "no weights"}))
    return subprocess.run([sys.executable, "-m", "satgan.evaluate.summary", "--params", str(tmp_path / "params.yaml")],
                          capture_output=True, text=True)


def test_summary_prints_metrics_and_paths(tmp_path, repo_root):
    """The summary shows the judge accuracy, the collapse flag, FID's reason and the quiz/grid/metrics paths."""
    proc = _setup(tmp_path, repo_root)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "0.810" in out and "MODE COLLAPSE" in out and "no weights" in out
    for path in ("eval/quiz.html", "eval/turing_grid.png", "samples/grid.png", "eval/metrics.json"):
        assert str(tmp_path / path) in out


def test_summary_without_metrics_says_what_to_run(tmp_path, repo_root):
    """Before evaluate has run, the summary exits 2 and says to run it."""
    proc = _setup(tmp_path, repo_root, write_metrics=False)
    assert proc.returncode == 2 and "dvc repro evaluate" in proc.stderr


def test_an_inconclusive_judge_is_not_printed_as_a_score(tmp_path, repo_root):
    """judge.conclusive 0: the accuracy row reads 'inconclusive' with its interval, not the bare number."""
    doc = json.loads(json.dumps(METRICS))
    doc["judge"].update(accuracy=0.75, p_value=0.14, n_test=8, conclusive=0, accuracy_ci_low=0.349, accuracy_ci_high=0.968)
    proc = _setup(tmp_path, repo_root)
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps(doc))
    proc = subprocess.run([sys.executable, "-m", "satgan.evaluate.summary", "--params", str(tmp_path / "params.yaml")],
                          capture_output=True, text=True)
    row = next(line for line in proc.stdout.splitlines() if "judge accuracy" in line)
    assert "inconclusive" in row and "0.750 on only 8 test tiles, 95% CI 0.35-0.97" in row


def test_labelled_metrics_add_the_gan_test_row(tmp_path, repo_root):
    """metrics.json with a classifier section: the summary prints the GAN-test accuracy against the held-out reals."""
    doc = json.loads(json.dumps(METRICS))
    acc = {"accuracy": 0.6, "ci_low": 0.5, "ci_high": 0.7, "n": 100, "per_class": {}}
    doc["classifier"] = {"n_classes": 7, "chance": 1 / 7, "n_train": 600, "gan_test": acc,
                         "real_test": {**acc, "accuracy": 0.8, "ci_low": 0.72, "ci_high": 0.87}}
    _setup(tmp_path, repo_root)
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps(doc))
    proc = subprocess.run([sys.executable, "-m", "satgan.evaluate.summary", "--params", str(tmp_path / "params.yaml")],
                          capture_output=True, text=True)
    row = next(line for line in proc.stdout.splitlines() if "GAN-test accuracy" in line)
    assert "0.600 (95% CI 0.50-0.70)" in row and "baseline 0.800 on held-out reals" in row


def test_unlabelled_metrics_print_no_class_row(tmp_path, repo_root):
    """Without a classifier section the summary has no GAN-test or class coverage row."""
    proc = _setup(tmp_path, repo_root)
    assert "GAN-test" not in proc.stdout and "class coverage" not in proc.stdout


def test_summary_prints_each_figure_against_its_floor(tmp_path, repo_root):
    """With floors in metrics.json the summary prints the report's floor rows: figure, fakes, floor, ratio, mark."""
    doc = json.loads(json.dumps(METRICS))
    doc["spectral"] = {"mean": 0.3}
    doc["floor"] = {"judge": {"accuracy": 0.55}, "swd": {"mean": 0.1167 / 1.5}, "spectral": {"mean": 0.1}}
    _setup(tmp_path, repo_root, write_metrics=True)
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps(doc))
    proc = subprocess.run([sys.executable, "-m", "satgan.evaluate.summary", "--params", str(tmp_path / "params.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("  ")[1]: line.split() for line in proc.stdout.splitlines()
            if line.startswith("  spectral distance") or line.startswith("  SWD")}
    assert rows["spectral distance"][-4:] == ["0.3", "0.1", "3.00", "amber"]
    assert rows["SWD (patch texture)"][-2:] == ["1.50", "green"]


@pytest.mark.parametrize("doc", [{"judge": {"accuracy": 0.81}}, [1, 2], {**METRICS, "swd": "broken"}])
def test_a_structurally_wrong_metrics_json_is_one_line(tmp_path, repo_root, doc):
    """A metrics.json that is not an evaluation (missing figures, not an object) is one line naming it, non-zero exit."""
    _setup(tmp_path, repo_root)
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps(doc))
    proc = subprocess.run([sys.executable, "-m", "satgan.evaluate.summary", "--params", str(tmp_path / "params.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "metrics.json" in proc.stderr


def test_summary_lists_each_demo_target(tmp_path, repo_root):
    """The summary ends its figures with each demo target (readings.DEMO_TARGETS) and whether this run meets it."""
    proc = _setup(tmp_path, repo_root)
    assert proc.returncode == 0, proc.stderr
    assert "met           judge accuracy <= 0.85" in proc.stdout and "met           memorized none" in proc.stdout
    assert "not measured  spectral distance" in proc.stdout  # no spectral figure or floor in this metrics.json
