"""Quality per unit of compute: train several recipes for the same budget, evaluate each the same way, one table.

Every run trains one recipe (params.yaml's ``train`` section with the recipe's overrides and
the run's seed) on the same prepared tiles for the same budget, in its own process, then
samples with the generate stage's code and scores the samples with the evaluate stage's code.
Selection and certification use different real tiles (issue 19): the bench scores every run
against the **validation** split (``data/prepared/validation.npy``, ``evaluate.against:
validation``) and ranks the recipes there; ``--certify RECIPE`` then scores the chosen
recipe's runs, already trained, against the **held-out** split that certifies the demo.
Runs are interleaved (the recipe order rotates with each seed), so a slow spell of a shared
machine does not fall on one recipe. It prints one line per run, a table of runs and a table
per recipe (mean ± sd across seeds of each figure, and the difference from ``canonical`` ±
its standard error), and writes them as ``quality.md`` (with the machine and the command) and
``quality.csv`` / ``summary.csv`` into ``--out``; each run's model, samples and evaluation stay
in ``--out/runs/<recipe>-s<seed>/`` (``certify/`` holds its held-out evaluation).

    python bench/quality_bench.py --budget-iterations 2000                          # 4 seeds, canonical and default
    python bench/quality_bench.py --budget-seconds 480 --seeds 0,1,2,3              # CPU, 8 min per run
    python bench/quality_bench.py --budget-images 200000 --device cuda --recipes canonical,default
    python bench/quality_bench.py --certify default --out bench/out/quality-<time>  # the chosen one, on the holdout
    python bench/quality_bench.py --tables OUT0,OUT1 --baseline default --out OUT  # halves run one per core, one table

Budgets: ``--budget-iterations N`` trains N iterations (equal compute on the same nets, whatever
the machine's load: the budget to compare recipes by); ``--budget-images N`` trains N / batch_size
iterations; ``--budget-seconds S`` stops training after the first step that ends past S seconds
of the training loop (setup excluded), so a recipe's speed counts, and so does the box's load.
Every run records its img/s (iterations x batch_size over the whole train() call, setup
included: under a second), so compute differences between recipes stay visible. Data:
``--prepared`` (default data/prepared, what ``dvc repro prepare`` made). Recipes are
``dvc exp run -S``-style overrides (full dotted keys under ``train.`` or ``generate.``; every
key must exist in params.yaml), defined once in :data:`RECIPES`. The figures shown are
:data:`METRICS` (dotted keys of evaluate's metrics.json, read by name: a key a run lacks is an
empty cell) plus the floors named in :data:`FLOORS`.
"""
from __future__ import annotations

import argparse
import copy
import csv
import datetime
import json
import math
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from satgan.machine import describe as describe_machine
from satgan.train.registry import HACKS

REPO = Path(__file__).resolve().parents[1]

# The pytorch/examples DCGAN recipe (dcgan/main.py) on satgan's nets: Gaussian z, separate
# real/fake batches for D, G's non-saturating loss, Adam(2e-4, 0.5, 0.999), N(0, 0.02) init,
# and every other hack off. Derived from the one hack list (satgan.train.registry: a hack is on
# here exactly when the example does it too), so a hack added later cannot join the baseline.
CANONICAL: dict[str, Any] = {
    "train.init": "normal",
    "train.lr_g": 0.0002,
    "train.lr_d": 0.0002,
    "train.beta1": 0.5,
    "train.beta2": 0.999,
    **{h.params_key: h.in_example for h in HACKS},
    "generate.use_ema": False,
}

# The candidate recipe of issue 8: canonical plus the small-data fixes. DiffAugment (Zhao et al.
# 2020) on everything D sees, hinge loss (Lim & Ye 2017) and spectral norm in D (Miyato et al.
# 2018), dihedral flips/rotations of the real tiles; no label tricks, noise or replay.
LEAN: dict[str, Any] = {
    **CANONICAL,
    "train.hacks.diffaugment.enabled": True,
    "train.hacks.hinge_loss": True,
    "train.hacks.spectral_norm": True,
    "train.hacks.dihedral_augment": True,
}

# The defaults shipped until 2026-11-25 (commit 2df43aa), before the quality benchmark chose today's
# (docs/experiments.md, section 0): label smoothing and flipping, instance noise, replay of past
# fakes in their own D batch, EMA of G at 0.999, no DiffAugment. Kept so the comparison can be rerun.
PREVIOUS_DEFAULT: dict[str, Any] = {
    "train.hacks.soft_labels.enabled": True,
    "train.hacks.noisy_labels.enabled": True,
    "train.hacks.instance_noise.enabled": True,
    "train.hacks.replay.enabled": True,
    "train.hacks.ema.enabled": True,
    "train.hacks.ema.decay": 0.999,
    "train.hacks.diffaugment.enabled": False,
    "train.hacks.dihedral_augment": True,
    "generate.use_ema": True,
}

# Issue 19's three texture switches (each at its params.yaml settings): on in the default of 2026-12-07's sections
# 0e-0h (docs/experiments.md), off since section 0i (at equal seconds the recipe without them was closer to the reals).
TEXTURE_SWITCHES = ("train.hacks.bilinear_g.enabled", "train.hacks.g_pixel_noise.enabled", "train.hacks.highpass_d.enabled")
NO_TEXTURE: dict[str, Any] = dict.fromkeys(TEXTURE_SWITCHES, False)
TEXTURE: dict[str, Any] = dict.fromkeys(TEXTURE_SWITCHES, True)

RECIPES: dict[str, dict[str, Any]] = {
    "canonical": CANONICAL,
    "default": {},  # params.yaml as shipped
    # canonical + DiffAugment + dihedral flips: the recipe today's default was chosen from (the default adds only
    # failure_tracking, which reads values and changes nothing)
    "canonical-da": {**CANONICAL, "train.hacks.diffaugment.enabled": True, "train.hacks.dihedral_augment": True},
    "lean": LEAN,
    "lean-ema": {**LEAN, "train.hacks.ema.enabled": True, "train.hacks.ema.decay": 0.99, "generate.use_ema": True},
    "previous-default": PREVIOUS_DEFAULT,
    "previous-default-da": {**PREVIOUS_DEFAULT, "train.hacks.diffaugment.enabled": True},
    "previous-default-raw-g": {**PREVIOUS_DEFAULT, "generate.use_ema": False},  # same model, sampled with the raw G
    # Odena et al. 2016: nearest-neighbour resize + conv instead of transposed convs (the checkerboard's source)
    "default-resize-conv": {"train.hacks.checkerboard.enabled": True, "train.hacks.checkerboard.mode": "resize_conv"},
    # Heusel et al. 2017 (TTUR): D learns faster than G, 4e-4 vs 1e-4 as in SAGAN/BigGAN-style settings
    "default-ttur": {"train.lr_d": 0.0004, "train.lr_g": 0.0001},
    "default-ema": {"train.hacks.ema.enabled": True, "train.hacks.ema.decay": 0.999, "generate.use_ema": True},
    # Labelled data only (issue 13; ganhacks #12 "if you have labels, use them"): the default conditioned on the class,
    # by a projection D (Miyato & Koyama 2018) or an auxiliary classifier (AC-GAN, Odena et al. 2017) at two weights
    "default-projection": {"train.conditional": "projection"},
    "default-acgan": {"train.conditional": "acgan"},
    "default-acgan-w0.3": {"train.conditional": "acgan", "train.acgan_weight": 0.3},
    # Issue 19, texture (TEXTURE_SWITCHES). "default-texture" is today's default with the three on (the default of
    # sections 0e-0h); "default-notexture" the default with them off (today's default since section 0i, the same runs
    # as "default" while params.yaml ships them off), and each switch alone on it:
    "default-texture": TEXTURE,
    "default-notexture": NO_TEXTURE,
    # bilinear resize + conv in G's top two layers (Odena et al. 2016) against the transposed convs' dot lattice
    "notexture-bilinear": {**NO_TEXTURE, "train.hacks.bilinear_g.enabled": True},
    # per-pixel noise inputs with learned scales after G's last two hidden blocks, kept at sampling (StyleGAN, Karras
    # et al. 2019)
    "notexture-noise": {**NO_TEXTURE, "train.hacks.g_pixel_noise.enabled": True},
    # a frequency-aware D: a fixed high-pass residual of the image before cutout as extra input channels (SSD-GAN,
    # Chen et al. 2021; Schwarz et al. 2021)
    "notexture-freqd": {**NO_TEXTURE, "train.hacks.highpass_d.enabled": True},
    # Each texture switch left out of "default-texture", one at a time (what each one adds to the other two; section 0f):
    "default-nobilinear": {**TEXTURE, "train.hacks.bilinear_g.enabled": False},
    "default-nopixelnoise": {**TEXTURE, "train.hacks.g_pixel_noise.enabled": False},
    "default-nohighpass": {**TEXTURE, "train.hacks.highpass_d.enabled": False},
    # DiffAugment without its colour op (brightness, saturation, contrast): the fakes' colour and contrast were off
    "default-nocolor": {"train.hacks.diffaugment.policy": ["translation", "cutout"]},
    # DiffAugment without the dihedral flips/rotations of the reals, to separate the two in the evidence
    "default-noflips": {"train.hacks.dihedral_augment": False},
}

# Keys the bench sets itself for every run; a recipe may not override them.
BENCH_KEYS = ("train.seed", "train.device", "train.iterations", "train.checkpoint_every", "train.sample_every",
              "evaluate.against")
CHILD = "--run-one-spec"  # internal first argument: run the spec file that follows, in this process
UNBOUNDED_ITERATIONS = 10**9  # with --budget-seconds the clock stops the run, not the iteration count
DEFAULT_SEEDS = "0,1,2,3"  # four seeds: seed-to-seed spread is as large as most recipe differences (docs/experiments.md)
BASELINE = "canonical"  # every recipe's figures are also shown as a difference from this one's

# The figures the bench shows, as dotted keys of evaluate's metrics.json, in table order: one list
# to update when evaluate adds or renames a figure. Read by name; a key a run's metrics.json lacks
# is an empty cell, and a value that is a mapping shows its "mean" (swd: one per pyramid level).
METRICS = [
    "judge.accuracy", "judge.auc", "judge.log_loss", "judge.brier",
    "spectral", "swd",
    "colour_hist.mean", "memorization.frac_above_threshold", "diversity.fake_mean_ssim", "diversity.real_mean_ssim",
    "classifier.real_test.accuracy", "classifier.gan_test.accuracy", "classifier.tv_distance",  # labelled data only
]
# evaluate's floors (each figure for real tiles against real tiles: what a perfect generator would
# score), shown after METRICS: these dotted keys under metrics.json's "floor" mapping.
FLOORS = ["floor.judge.accuracy", "floor.judge.log_loss", "floor.spectral", "floor.swd", "floor.colour_hist"]
# How recipes are ranked: the figure and whether higher is better (judge log-loss: the judge's
# surprise at the fakes, graded even where it always wins; ln 2 for an uninformed judge).
RANK_BY = ("judge.log_loss", "higher")
RUN_COLUMNS = ["recipe", "seed", "against", "iterations", "train_s", "img_per_s"]  # then METRICS, then floors


class BenchError(Exception):
    """A bad argument, recipe or input: printed as one line, exit code 2."""


# ----------------------------------------------------------------------------- pure helpers


def hack_switches(train: dict[str, Any]) -> list[str]:
    """Dotted keys of every hack switch in a train section: ``train.hacks.x`` (bool) or ``train.hacks.x.enabled``."""
    keys = []
    for name, value in train["hacks"].items():
        if isinstance(value, bool):
            keys.append(f"train.hacks.{name}")
        elif isinstance(value, dict) and "enabled" in value:
            keys.append(f"train.hacks.{name}.enabled")
    return keys


def check_recipes(recipes: dict[str, dict[str, Any]], doc: dict[str, Any]) -> None:
    """Every override names an existing train./generate. key the bench does not set; canonical names every hack."""
    for name, overrides in recipes.items():
        for key in overrides:
            if not key.startswith(("train.", "generate.")) or key in BENCH_KEYS:
                raise BenchError(f"recipe {name}: {key}: only train.* and generate.* keys other than "
                                 f"{', '.join(BENCH_KEYS)} may be overridden")
            set_dotted(copy.deepcopy(doc), key, overrides[key], where=f"recipe {name}")
    if "canonical" in recipes:
        missing = [k for k in hack_switches(doc["train"]) if k not in recipes["canonical"]]
        if missing:
            raise BenchError(f"recipe canonical does not set {', '.join(missing)}: name every hack switch (off) in CANONICAL")


def set_dotted(doc: dict[str, Any], key: str, value: Any, where: str = "") -> None:
    """Set ``a.b.c`` in a nested params mapping in place; the key must already exist (a typo is an error)."""
    *parents, last = key.split(".")
    node = doc
    for part in parents:
        if not isinstance(node, dict) or part not in node:
            raise BenchError(f"{where}: {key}: no such key in params.yaml")
        node = node[part]
    if not isinstance(node, dict) or last not in node:
        raise BenchError(f"{where}: {key}: no such key in params.yaml")
    node[last] = value


def run_order(recipes: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """(recipe, seed) pairs, seed by seed, the recipe order rotated by one for each seed (interleaved runs)."""
    order = []
    for k, seed in enumerate(seeds):
        shift = k % len(recipes)
        order.extend((r, seed) for r in recipes[shift:] + recipes[:shift])
    return order


def budget_iterations(batch: int, images: int | None = None, iterations: int | None = None) -> int:
    """Iterations a run trains: ``iterations``, else ``images // batch``, else unbounded (a --budget-seconds run)."""
    if iterations is not None:
        if iterations < 1:
            raise BenchError(f"--budget-iterations {iterations}: expected >= 1")
        return iterations
    if images is None:
        return UNBOUNDED_ITERATIONS
    if images // batch < 1:
        raise BenchError(f"--budget-images {images} is less than one batch of {batch}")
    return images // batch


def run_params(doc: dict[str, Any], overrides: dict[str, Any], seed: int, device: str,
               budget_images: int | None, budget_iters: int | None = None,
               against: str = "validation") -> dict[str, Any]:
    """params.yaml's mapping for one run: the recipe's overrides, the seed and device, the budget's iterations, and
    the real tiles evaluate scores it against (``evaluate.against``: validation to choose, holdout to certify).

    Checkpoints and sample grids only at the end: they would cost the run time it is measured on.
    """
    out = copy.deepcopy(doc)
    for key, value in overrides.items():
        set_dotted(out, key, value, where="recipe")
    iterations = budget_iterations(out["train"]["batch_size"], budget_images, budget_iters)
    out["train"].update(seed=seed, device=device, iterations=iterations, checkpoint_every=iterations,
                        sample_every=iterations)
    set_against(out, against)
    return out


def set_against(doc: dict[str, Any], against: str) -> None:
    """Set ``evaluate.against`` in a params mapping; a params.yaml without that key predates the validation split."""
    if "against" not in doc.get("evaluate", {}):
        raise BenchError("evaluate.against: no such key in params.yaml (the evaluate stage must be able to score "
                         "against the validation split: update params.yaml and satgan.evaluate)")
    doc["evaluate"]["against"] = against


def metric(metrics: dict[str, Any], dotted: str) -> float | None:
    """The number at ``a.b.c`` in a metrics.json mapping (a mapping there: its ``mean``), or None when absent."""
    node: Any = metrics
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, dict):
        node = node.get("mean")
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None
    return float(node)


def row_from(result: dict[str, Any]) -> dict[str, Any]:
    """One table row from a run's result.json: the run, its measured compute, and every :data:`METRICS` figure by name."""
    m = result["metrics"]
    row: dict[str, Any] = {
        "recipe": result["recipe"], "seed": result["seed"], "against": result.get("against", ""),
        "iterations": result["iterations"], "train_s": result["train_s"], "img_per_s": result["img_per_s"],
    }
    for key in [*METRICS, *FLOORS]:
        value = metric(m, key)
        if value is not None:
            row[key] = value
    return row


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if key in ("seed", "iterations", "n"):
        return str(int(value))
    if key.endswith(("p_value", "log_loss", "brier")):
        return f"{value:.3g}"  # graded near 0, where runs the judge always catches still differ
    if key in ("train_s", "img_per_s"):
        return f"{value:.0f}"
    return f"{value:.3f}"


def table_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every key of the rows, in order of first appearance (conditional and unconditional runs differ at the end)."""
    return list(dict.fromkeys(k for r in rows for k in r))


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a GitHub markdown table; a run without a column shows an empty cell."""
    keys = table_columns(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(k, r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(rows: list[dict[str, Any]], baseline: str = BASELINE) -> list[dict[str, Any]]:
    """Per recipe and figure: seeds, mean ± sd across seeds, and the difference of means from ``baseline`` ± its
    standard error sqrt(sd_r^2 / n_r + sd_b^2 / n_b) (Welch), or None where there is no baseline to compare.

    Figures: img/s and every numeric column after the run's own (:data:`RUN_COLUMNS`), in table order.
    """
    figures = ["img_per_s"] + [k for k in table_columns(rows) if k not in RUN_COLUMNS]
    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    by = {(rec, f): [float(r[f]) for r in rows if r["recipe"] == rec and isinstance(r.get(f), (int, float))]
          for rec in recipes for f in figures}
    out = []
    for rec in recipes:
        for f in figures:
            values = by[(rec, f)]
            if not values:
                continue
            mean, sd = mean_sd(values)
            entry: dict[str, Any] = {"recipe": rec, "figure": f, "n": len(values), "mean": mean, "sd": sd,
                                     "diff": None, "diff_se": None}
            base = by.get((baseline, f), [])
            if rec != baseline and base:
                b_mean, b_sd = mean_sd(base)
                entry["diff"] = mean - b_mean
                entry["diff_se"] = math.sqrt(sd ** 2 / len(values) + b_sd ** 2 / len(base))
            out.append(entry)
    return out


def rank(summary: list[dict[str, Any]], by: tuple[str, str] = RANK_BY) -> list[tuple[str, float]]:
    """(recipe, mean of the ranking figure) best first; recipes without that figure are left out."""
    figure, better = by
    means = [(e["recipe"], e["mean"]) for e in summary if e["figure"] == figure]
    return sorted(means, key=lambda rm: -rm[1] if better == "higher" else rm[1])


def summary_table(summary: list[dict[str, Any]], baseline: str = BASELINE) -> str:
    """The per-recipe summary as markdown: one row per (recipe, figure)."""
    lines = [f"| recipe | figure | seeds | mean ± sd | vs {baseline} (diff ± se) |", "|---|---|---|---|---|"]
    for e in summary:
        f = e["figure"]
        diff = "" if e["diff"] is None else f"{_fmt(f, e['diff'])} ± {_fmt(f, e['diff_se'])}"
        lines.append(f"| {e['recipe']} | {f} | {e['n']} | {_fmt(f, e['mean'])} ± {_fmt(f, e['sd'])} | {diff} |")
    return "\n".join(lines)


def machine() -> str:
    """The machine, as every figure names it (satgan.machine)."""
    return describe_machine(full=True)


# ----------------------------------------------------------------------------- one run (child process)


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Train, generate and evaluate one (recipe, seed) as the pipeline's stages would; writes result.json.

    A certify spec (``certify``: true) trains nothing: it re-scores the run's samples, made by
    the selection run in the same folder, against the held-out tiles into ``certify/``.
    """
    from satgan.evaluate.stage import EvaluateParams, evaluate
    from satgan.generate import GenerateParams, generate
    from satgan.params import from_mapping
    from satgan.train import TrainParams, train

    doc, run, prepared = spec["params"], Path(spec["run_dir"]), Path(spec["prepared"])
    params_file = spec["params_file"]
    ep = from_mapping(EvaluateParams, doc["evaluate"], "evaluate", params_file)
    if spec.get("certify"):
        selected = json.loads((run / "result.json").read_text())
        metrics = evaluate(prepared, run / "samples", run / "certify", ep)
        result = {**selected, "against": doc["evaluate"]["against"], "metrics": metrics}
        (run / "certify" / "result.json").write_text(json.dumps(result, indent=2))
        return result
    tp = from_mapping(TrainParams, doc["train"], "train", params_file)
    gp = from_mapping(GenerateParams, doc["generate"], "generate", params_file)
    t0 = time.perf_counter()
    card = train(tp, prepared, run / "model", run / "checkpoints", None, max_seconds=spec["max_seconds"])
    train_s = time.perf_counter() - t0
    generate(run / "model", run / "samples", gp)
    metrics = evaluate(prepared, run / "samples", run / "eval", ep)
    result = {
        "recipe": spec["recipe"], "seed": spec["seed"], "against": doc["evaluate"]["against"],
        "iterations": int(card["step"]), "train_s": train_s, "img_per_s": card["step"] * tp.batch_size / train_s,
        "metrics": metrics,
    }
    (run / "result.json").write_text(json.dumps(result, indent=2))
    return result


# ----------------------------------------------------------------------------- the benchmark (parent)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--budget-iterations", type=int,
                        help="training iterations per run: equal compute on the same nets, whatever the machine's load")
    budget.add_argument("--budget-seconds", type=float, help="wall-clock seconds of training per run")
    budget.add_argument("--budget-images", type=int, help="training images per run (iterations = N / batch_size)")
    ap.add_argument("--certify", metavar="RECIPE", default=None,
                    help="train nothing: score RECIPE's runs in --out (a finished bench) against the held-out tiles")
    ap.add_argument("--tables", type=lambda v: [Path(p) for p in v.split(",") if p], default=None, metavar="DIR,DIR",
                    help="train nothing: one table of the finished runs in these bench folders (e.g. halves run one per "
                         "core), written to --out")
    ap.add_argument("--baseline", default=BASELINE, help=f"differences are taken from this recipe (default {BASELINE})")
    ap.add_argument("--recipes", default="canonical,default", help=f"comma-separated, from: {', '.join(RECIPES)}")
    ap.add_argument("--seeds", default=DEFAULT_SEEDS, help="comma-separated train seeds; each repeats every recipe")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--prepared", type=Path, default=REPO / "data" / "prepared",
                    help="tiles.npy + validation.npy (selection) or holdout.npy (--certify)")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default bench/out/quality-<UTC time>)")
    args = ap.parse_args(argv)
    budgets = (args.budget_iterations, args.budget_seconds, args.budget_images)
    if args.tables is not None and (args.certify is not None or any(b is not None for b in budgets) or args.out is None):
        ap.error("--tables DIR,DIR trains nothing: pass --out for the tables, and no budget or --certify")
    if args.tables is None and args.certify is None and all(b is None for b in budgets):
        ap.error("one of --budget-iterations, --budget-seconds, --budget-images is required (or --certify RECIPE)")
    if args.certify is not None and (any(b is not None for b in budgets) or args.out is None):
        ap.error("--certify RECIPE takes the runs of a finished bench: pass its --out, and no budget")
    if args.budget_seconds is not None and not args.budget_seconds > 0:
        ap.error("--budget-seconds must be > 0")
    if args.budget_images is not None and args.budget_images < 1:
        ap.error("--budget-images must be >= 1")
    if args.budget_iterations is not None and args.budget_iterations < 1:
        ap.error("--budget-iterations must be >= 1")
    return args


def _run_child(spec: dict[str, Any], spec_path: Path, log_path: Path) -> tuple[int, float]:
    spec_path.write_text(json.dumps(spec, indent=2))
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), CHILD, str(spec_path)],
                              stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    return proc.returncode, time.perf_counter() - t0


def _describe(row: dict[str, Any]) -> str:
    parts = [f"{row['iterations']} it", f"{row['img_per_s']:.0f} img/s"]
    parts += [f"{k} {_fmt(k, row[k])}" for k in ("judge.accuracy", "judge.log_loss", "swd", "spectral_distance")
              if k in row]
    return ", ".join(parts)


def _write_tables(out: Path, stem: str, rows: list[dict[str, Any]], header: list[str], argv: list[str],
                  baseline: str = BASELINE) -> None:
    """Print and write the runs table and the per-recipe summary (differences from ``baseline``): <stem>.md,
    <stem>.csv and <stem>_summary.csv."""
    table = markdown_table(rows)
    summary = summarize(rows, baseline)
    ranked = rank(summary)
    ranking = ", ".join(f"{r} ({_fmt(RANK_BY[0], v)})" for r, v in ranked)
    print(table)
    print(summary_table(summary, baseline))
    if ranked:
        print(f"ranked by mean {RANK_BY[0]} ({RANK_BY[1]} is better): {ranking}")
    with open(out / f"{stem}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=table_columns(rows), restval="")
        writer.writeheader()
        writer.writerows(rows)
    with open(out / f"{stem}_summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["recipe", "figure", "n", "mean", "sd", "diff", "diff_se"])
        writer.writeheader()
        writer.writerows(summary)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Quality benchmark, {when}", "",
             f"- command: `{shlex.join(['python', 'bench/quality_bench.py', *argv])}`",
             f"- machine: {machine()}", *header,
             "- judge log-loss and Brier: higher is better for the GAN (ln 2 = 0.693 and 0.25 for an uninformed judge)",
             f"- ranked by mean {RANK_BY[0]} ({RANK_BY[1]} is better): {ranking}", "",
             "## Runs", "", table, "",
             f"## Per recipe: mean ± sd across seeds; difference from {baseline} ± its standard error", "",
             summary_table(summary, baseline), ""]
    (out / f"{stem}.md").write_text("\n".join(lines))
    print(f"wrote {out / f'{stem}.md'}, {out / f'{stem}.csv'} and {out / f'{stem}_summary.csv'}")


def _parse_lists(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown or not recipes:
        raise BenchError(f"--recipes: unknown {unknown or 'none given'}; known: {', '.join(RECIPES)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        raise BenchError(f"--seeds: expected comma-separated integers, got {args.seeds!r}") from None
    if not seeds:
        raise BenchError("--seeds: none given")
    return recipes, seeds


def bench(args: argparse.Namespace, argv: list[str]) -> list[dict[str, Any]]:
    """Run every (recipe, seed) in its own process, scored on the validation split; write quality.md / .csv."""
    from satgan.params import read_params_file

    if args.certify is not None:
        return certify(args, argv)
    if args.tables is not None:
        return tables(args, argv)
    recipes, seeds = _parse_lists(args)
    for name in ("tiles.npy", "validation.npy"):
        if not (args.prepared / name).is_file():
            raise BenchError(f"{args.prepared / name}: not found (run `dvc repro prepare` with prepare.validation_fraction "
                             "> 0, or pass --prepared): recipes are chosen on the validation split, never the holdout")
    doc = read_params_file(args.params)
    check_recipes({r: RECIPES[r] for r in recipes}, doc)
    set_against(copy.deepcopy(doc), "validation")  # fail before any run when evaluate cannot score on validation
    out = args.out or REPO / "bench" / "out" / f"quality-{datetime.datetime.now(datetime.UTC):%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    budget = (f"{args.budget_iterations} iterations" if args.budget_iterations is not None
              else f"{args.budget_seconds:g} s of training" if args.budget_seconds is not None
              else f"{args.budget_images} images")
    print(f"quality bench: {len(recipes)} recipes x {len(seeds)} seeds, {budget} per run, device {args.device}, "
          f"scored on the validation split -> {out}", flush=True)

    order = run_order(recipes, seeds)
    rows, failed = [], []
    for k, (recipe, seed) in enumerate(order, 1):
        run_dir = out / "runs" / f"{recipe}-s{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "recipe": recipe, "seed": seed, "run_dir": str(run_dir), "prepared": str(args.prepared),
            "params_file": str(args.params), "max_seconds": args.budget_seconds,
            "params": run_params(doc, RECIPES[recipe], seed, args.device, args.budget_images, args.budget_iterations),
        }
        code, wall = _run_child(spec, run_dir / "spec.json", run_dir / "log.txt")
        if code != 0:
            tail = (run_dir / "log.txt").read_text().strip().splitlines()[-1:] or ["(no output)"]
            print(f"[{k}/{len(order)}] {recipe} seed {seed}: FAILED (exit {code}, {wall:.0f} s): {tail[0]} "
                  f"(see {run_dir / 'log.txt'})", flush=True)
            failed.append(f"{recipe}-s{seed}")
            continue
        row = row_from(json.loads((run_dir / "result.json").read_text()))
        rows.append(row)
        print(f"[{k}/{len(order)}] {recipe} seed {seed}: {_describe(row)} ({wall:.0f} s)", flush=True)

    if rows:
        _write_tables(out, "quality", rows,
                      [f"- budget: {budget} per run, device {args.device}, prepared tiles {args.prepared}",
                       "- scored against: the validation split (selection); certify the chosen recipe with "
                       f"`--certify RECIPE --out {out}`"], argv)
    if failed:
        raise BenchError(f"{len(failed)} run(s) failed: {', '.join(failed)}")
    return rows


def tables(args: argparse.Namespace, argv: list[str]) -> list[dict[str, Any]]:
    """Train nothing: the tables of every finished run in the ``--tables`` bench folders together, written to ``--out``.

    Two halves of one comparison run side by side (one process per core, each its own seeds) are
    one table this way, with the differences taken from ``--baseline``.
    """
    rows = []
    for folder in args.tables:
        found = sorted(p for p in (folder / "runs").glob("*") if (p / "result.json").is_file())
        if not found:
            raise BenchError(f"{folder / 'runs'}: no finished run (is {folder} a quality bench's --out?)")
        rows += [row_from(json.loads((p / "result.json").read_text())) for p in found]
    recipes = {r["recipe"] for r in rows}
    if args.baseline not in recipes:
        raise BenchError(f"--baseline: no run of {args.baseline!r} in {', '.join(map(str, args.tables))} "
                         f"(recipes there: {', '.join(sorted(recipes))})")
    args.out.mkdir(parents=True, exist_ok=True)
    _write_tables(args.out, "quality", rows,
                  [f"- runs from: {', '.join(str(f) for f in args.tables)} (tables only: nothing trained here)"],
                  argv, args.baseline)
    return rows


def certify(args: argparse.Namespace, argv: list[str]) -> list[dict[str, Any]]:
    """Score the chosen recipe's finished runs in ``--out`` against the held-out tiles; write certify.md / .csv."""
    recipe = args.certify
    if recipe not in RECIPES:
        raise BenchError(f"--certify: unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    if not (args.prepared / "holdout.npy").is_file():
        raise BenchError(f"{args.prepared / 'holdout.npy'}: not found (run `dvc repro prepare`, or pass --prepared)")
    runs = sorted((p for p in (args.out / "runs").glob(f"{recipe}-s*") if (p / "result.json").is_file()),
                  key=lambda p: p.name)
    if not runs:
        raise BenchError(f"{args.out / 'runs'}: no finished run of {recipe} (run the bench with it first)")
    print(f"quality bench: certifying {recipe} ({len(runs)} runs) on the held-out split -> {args.out}", flush=True)
    rows, failed = [], []
    for k, run_dir in enumerate(runs, 1):
        spec = json.loads((run_dir / "spec.json").read_text())
        set_against(spec["params"], "holdout")
        spec.update(certify=True, prepared=str(args.prepared))
        (run_dir / "certify").mkdir(exist_ok=True)
        code, wall = _run_child(spec, run_dir / "certify" / "spec.json", run_dir / "certify" / "log.txt")
        if code != 0:
            print(f"[{k}/{len(runs)}] {run_dir.name}: FAILED (exit {code}, see {run_dir / 'certify' / 'log.txt'})",
                  flush=True)
            failed.append(run_dir.name)
            continue
        row = row_from(json.loads((run_dir / "certify" / "result.json").read_text()))
        rows.append(row)
        print(f"[{k}/{len(runs)}] {recipe} seed {row['seed']}: {_describe(row)} ({wall:.0f} s)", flush=True)
    if rows:
        _write_tables(args.out, "certify", rows,
                      [f"- certified: {recipe}, its runs from {args.out / 'runs'} (trained by the selection bench), "
                       f"scored against the held-out split of {args.prepared}"], argv)
    if failed:
        raise BenchError(f"{len(failed)} run(s) failed: {', '.join(failed)}")
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD]:  # one run, in the process the parent started for it
        run_one(json.loads(Path(argv[1]).read_text()))
        return
    args = parse_args(argv)
    try:
        bench(args, argv)
    except BenchError as exc:
        print(f"quality bench: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
