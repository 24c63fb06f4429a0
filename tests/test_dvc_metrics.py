"""dvc.yaml's metrics and plots: only the headline is a metric, `dvc exp show` stays narrow, the charts are curated."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline_helpers import env
from satgan.evaluate import readings, report

# `dvc exp show` layout, measured on dvc 3.67 (rich table): an experiment row such as
# "  ├── 1a2b3c4 [no-instance-noise]  " takes ~36 characters, "Created" ~11, and each metric
# column its header or value width (values print with 5 significant digits, e.g. "2.1e-25",
# "0.36312", "1515.4": at most 8) plus 3 of padding. One "…" column (4) marks the params.
EXPERIMENT_COL, CREATED_COL, VALUE_WIDTH, PADDING, ELLIPSIS_COL = 36, 11, 8, 3, 4
TERMINAL = 160
# Columns headline.json has only when computed: FID (evaluate.inception_weights set) and GAN-test (labelled data,
# a conditional model).
CONDITIONAL_COLUMNS = ("fid", "gan_test_acc")


def _load(repo_root: Path) -> tuple[dict, dict[str, str]]:
    dvc = yaml.safe_load((repo_root / "dvc.yaml").read_text())
    paths = yaml.safe_load((repo_root / "params.yaml").read_text())["paths"]
    return dvc, paths


def _resolve(text: str, paths: dict[str, str]) -> str:
    return re.sub(r"\$\{paths\.(\w+)\}", lambda m: paths[m.group(1)], text)


def _entries(items: list) -> list[str]:
    """Paths of a dvc.yaml list whose items are strings or one-key mappings."""
    return [next(iter(i)) if isinstance(i, dict) else i for i in items or []]


def declared_metrics(dvc: dict, paths: dict[str, str]) -> list[str]:
    """Every metrics file dvc.yaml declares, stage-level and top-level, with ${paths.*} resolved."""
    files = [p for stage in dvc["stages"].values() for p in _entries(stage.get("metrics"))]
    files += _entries(dvc.get("metrics"))
    return [_resolve(f, paths) for f in files]


def headline_columns() -> list[str]:
    """The columns headline.json can have: every key of report.headline, FID and a conditional model's GAN-test included."""
    return list(readings.headline({"fid": 1.0, "classifier": {"gan_test": {"accuracy": 0.5}}}, None))  # every column


def exp_show_width(columns: list[str]) -> int:
    """Estimated characters of a `dvc exp show` row holding these metric columns (params collapsed to one '…')."""
    return EXPERIMENT_COL + CREATED_COL + sum(max(len(c), VALUE_WIDTH) + PADDING for c in columns) + ELLIPSIS_COL


def test_only_the_headline_is_declared_as_metrics(repo_root):
    """The one declared metrics file is headline.json (written by satgan.evaluate.report), whose columns this test can count."""
    dvc, paths = _load(repo_root)
    assert declared_metrics(dvc, paths) == [f"{paths['eval']}/{report.HEADLINE}"]


def test_headline_fits_dvc_exp_show_in_160_columns():
    """At the defaults (unlabelled data, FID off): judge accuracy and log-loss, SWD, spectral and colour distance,
    likely copies, diversity, step and img/s fit a 160-column `dvc exp show`."""
    cols = [c for c in headline_columns() if c not in CONDITIONAL_COLUMNS]
    assert {"judge_acc", "ll", "swd", "spectral", "colour", "copied", "ssim_fake"} <= set(cols)
    width = exp_show_width(cols)
    assert width <= TERMINAL, f"dvc exp show would need ~{width} columns for {cols}"


def test_the_conditional_columns_stay_within_one_wide_screen():
    """FID and a conditional model's GAN-test add one column each, only when computed: ~180 columns at most."""
    cols = headline_columns()
    assert set(CONDITIONAL_COLUMNS) <= set(cols)
    assert exp_show_width(cols) <= TERMINAL + 20, cols


def test_no_stage_plots_a_whole_dvclive_metrics_folder(repo_root):
    """No stage declares dvclive's TSV folder as a plot (that draws one chart per series, constants included)."""
    dvc, paths = _load(repo_root)
    stage_plots = [_resolve(p, paths) for st in dvc["stages"].values() for p in _entries(st.get("plots"))]
    assert not [p for p in stage_plots if p.rstrip("/").endswith("plots/metrics")]


def test_dvc_charts_match_the_report_charts(repo_root):
    """dvc.yaml's top-level charts draw exactly the dvclive series the report page draws, grouped the same way."""
    dvc, paths = _load(repo_root)
    prefix = f"{paths['live']}/{'/'.join(report.LIVE_METRICS_DIR)}/"
    groups = []
    for plot in dvc["plots"]:
        (_, spec), = plot.items()
        files = {_resolve(f, paths): col for f, col in spec["y"].items()}
        assert all(f.startswith(prefix) and Path(f).stem == col for f, col in files.items()), files
        groups.append(sorted(Path(f).stem for f in files))
    assert sorted(groups) == sorted(sorted(name for name, _ in members) for _, members in report.CHARTS)


@pytest.mark.slow
def test_dvc_plots_show_draws_the_curated_charts(repo_root, tmp_path):
    """Real `dvc plots show` over dvclive files gives one chart per curated group, D and G together."""
    dvc, paths = _load(repo_root)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(repo_root / name, tmp_path / name)
    series = tmp_path / paths["live"] / "/".join(report.LIVE_METRICS_DIR)
    series.mkdir(parents=True)
    for name in ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "img_per_s", "lr_g"):
        (series / f"{name}.tsv").write_text(f"step\t{name}\n10\t0.5\n20\t0.25\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, env=env())
    proc = subprocess.run(["dvc", "plots", "show", "--json"], cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    charts = {k: v for k, v in json.loads(proc.stdout)["data"].items() if v and v[0]["type"] == "vega"}
    meta = {"step", "rev", "dvc_inferred_y_value", "filename::field"}
    fields = {title: {k for row in ch[0]["content"]["data"]["values"] for k in row} - meta for title, ch in charts.items()}
    assert sorted(map(sorted, fields.values())) == sorted(sorted(n for n, _ in m) for _, m in report.CHARTS)
