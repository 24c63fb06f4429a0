"""dvc.yaml's metrics and plots: only the headline is a metric, `dvc exp show` stays narrow, the charts are curated."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline_helpers import commit_all, env, in_a_terminal
from satgan.evaluate import readings, report

# `dvc exp show` layout, measured on dvc 3.67 (rich table): an experiment row such as
# "  ├── 1a2b3c4 [no-instance-noise]  " takes ~36 characters, "Created" ~11, and each metric
# column its header or value width (values print with 5 significant digits: "0.0066899" for a Brier score,
# "0.36312", "2.1e-25", "1515.4": at most 9) plus 3 of padding. One "…" column (4) marks the params.
EXPERIMENT_COL, CREATED_COL, VALUE_WIDTH, PADDING, ELLIPSIS_COL = 36, 11, 9, 3, 4
TERMINAL = 160
# Columns headline.json has only when computed: FID (evaluate.inception_weights set) and GAN-test (labelled data,
# a conditional model).
CONDITIONAL_COLUMNS = ("fid", "gan_test_acc")
# An evaluation as evaluate writes it, with the default run's figures (data/eval/metrics.json of the README demo):
# what the real `dvc exp show` tests below print, scaled per experiment.
DEMO_METRICS = {
    "judge": {"accuracy": 1.0, "log_loss": 0.028549856, "brier": 0.006689915, "p_value": 3e-95, "conclusive": 1},
    "swd": {"mean": 0.195542883}, "spectral": {"mean": 0.321655198}, "colour_hist": {"mean": 0.314585635},
    "memorization": {"frac_above_threshold": 0.0},
    "diversity": {"fake_mean_ssim": 0.172985768, "real_mean_ssim": 0.049948302, "collapsed": 0},
}
DEMO_LIVE = {"step": 700, "train": {"img_per_s": 81.583024266}}
# What changes between two runs on the same tiles (the judge's accuracy sits at 1.0, nothing is copied, the reals'
# SSIM and the collapse flag depend on the data): these, scaled; the rest stays as DEMO_METRICS has it.
MOVING = ("ll", "brier", "swd", "spectral", "colour", "ssim_fake", "img_s")

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


def test_the_graded_headline_fits_dvc_exp_show_in_160_columns():
    """At the defaults (unlabelled data, FID off) the graded figures come first and fit a 160-column `dvc exp show`:
    judge accuracy, log-loss and Brier score, SWD, spectral and colour distance, likely copies, fake pair SSIM."""
    cols = [c for c in headline_columns() if c not in CONDITIONAL_COLUMNS]
    graded = [c for c in readings.HEADLINE_GRADED if c not in CONDITIONAL_COLUMNS]
    assert cols[:len(graded)] == graded and {"judge_acc", "ll", "brier", "colour", "ssim_fake"} <= set(graded)
    width = exp_show_width(graded)
    assert width <= TERMINAL, f"dvc exp show would need ~{width} columns for {graded}"


def test_the_conditional_columns_stay_within_one_wide_screen():
    """FID and a conditional model's GAN-test add one graded column each, only when computed: ~180 columns at most."""
    cols = headline_columns()
    assert set(CONDITIONAL_COLUMNS) <= set(cols)
    graded = [c for c in cols if c in readings.HEADLINE_GRADED]
    assert cols[:len(graded)] == graded and exp_show_width(graded) <= TERMINAL + 20, cols


def readme_comparison_command(repo_root: Path) -> list[str]:
    """README's "Comparing runs" `dvc exp show --only-changed ...` line, as argv (its comment left off)."""
    line = next(ln for ln in (repo_root / "README.md").read_text().splitlines()
                if ln.startswith("dvc exp show --only-changed"))
    return shlex.split(line, comments=True)


def _first_screen(out: str) -> tuple[list[str], list[str]]:
    """The header's column names and the experiment rows, as the first 160 columns of a terminal show them."""
    lines = [line[:TERMINAL] for line in out.splitlines()]
    header = next(line for line in lines if "Experiment" in line)
    rows = [line for line in lines if re.match(r"\s+(workspace|main|[├└]── )", line)]
    return header.split(), rows


@pytest.fixture(scope="module")
def two_experiments(repo_root, tmp_path_factory) -> Path:
    """A git + DVC repo with this params.yaml and a stage writing a headline.json of DEMO_METRICS's keys scaled by
    two train params, run at the defaults and as two experiments (``highpass-d``: a switch on; ``longer``:
    train.iterations 2000, above the default's 1500): what `dvc exp show` lists after two such runs, without training
    anything."""
    repo = tmp_path_factory.mktemp("exps")
    shutil.copy(repo_root / "params.yaml", repo / "params.yaml")
    base = readings.headline(DEMO_METRICS, DEMO_LIVE)
    (repo / "base.json").write_text(json.dumps(base))
    (repo / "stage.py").write_text(
        "import json, yaml\n"
        "t = yaml.safe_load(open('params.yaml'))['train']\n"
        "f = 1 + 0.37 * t['hacks']['highpass_d']['enabled'] + (t['iterations'] - 1500) / 1500\n"
        "h = json.load(open('base.json'))\n"
        f"h.update({{k: h[k] * f for k in {list(MOVING)!r}}}, step=float(t['iterations']))\n"
        "json.dump(h, open('headline.json', 'w'), indent=2)\n")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": {
        "cmd": "python stage.py", "deps": ["stage.py", "base.json"], "params": ["train"],
        "metrics": [{"headline.json": {"cache": False}}]}}}))
    for cmd in (["git", "init", "-q", "-b", "main"], ["dvc", "init", "-q"], ["dvc", "repro", "-q"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env())
    commit_all(repo, "a default run")
    for cmd in (["dvc", "exp", "run", "--temp", "-q", "-n", "highpass-d", "-S", "train.hacks.highpass_d.enabled=true"],
                ["dvc", "exp", "run", "--temp", "-q", "-n", "longer", "-S", "train.iterations=2000"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env(), capture_output=True)
    return repo


@pytest.mark.slow
def test_plain_dvc_exp_show_shows_the_graded_headline_on_its_first_screen(two_experiments):
    """Real `dvc exp show` in a 160-column terminal, after two experiments: every graded headline column is on the first
    screen, with its values."""
    names, rows = _first_screen(in_a_terminal(["dvc", "exp", "show"], two_experiments, TERMINAL))
    graded = [c for c in readings.HEADLINE_GRADED if c not in CONDITIONAL_COLUMNS]
    assert all(c in names for c in graded), names
    assert len(rows) == 4 and all(len(row.split()) >= len(graded) + 2 for row in rows), rows


@pytest.mark.slow
def test_readmes_comparison_command_shows_what_changed_in_160_columns(repo_root, two_experiments):
    """README's comparison command, run for real after two experiments: every headline figure that differs between the
    runs and both changed params fit a 160-column terminal, no column squeezed to '…'."""
    names, rows = _first_screen(in_a_terminal(readme_comparison_command(repo_root), two_experiments, TERMINAL))
    moving = [c for c in MOVING if c in readings.HEADLINE_GRADED]
    assert all(c in names for c in moving), names
    assert "train.hacks.highpass_d.enabled" in names and "train.iterations" in names, names
    assert rows and not any("…" in row for row in rows), rows


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
