"""Quality per unit of compute: train several recipes for the same budget, evaluate each the same way, one table.

Every run trains one recipe (params.yaml's ``train`` section with the recipe's overrides and
the run's seed) on the same prepared tiles for the same budget, in its own process, then
samples with the generate stage's code and scores the samples with the evaluate stage's code
against the same held-out tiles. Runs are interleaved (the recipe order rotates with each
seed), so a slow spell of a shared machine does not fall on one recipe. It prints one line per
run and then one table, and writes it as ``quality.md`` (with the machine and the command)
and ``quality.csv`` into ``--out``; each run's model, samples and evaluation stay in
``--out/runs/<recipe>-s<seed>/``.

    python bench/quality_bench.py --budget-seconds 480 --seeds 0,1               # CPU, 8 min per run
    python bench/quality_bench.py --budget-images 200000 --device cuda --recipes canonical,default

Budgets: ``--budget-seconds S`` stops training after the first step that ends past S seconds
of the training loop (setup excluded); ``--budget-images N`` trains N / batch_size iterations.
img/s is iterations x batch_size over the whole train() call (setup included: under a second).
Data: ``--prepared`` (default data/prepared, what ``dvc repro prepare`` made). Recipes are
``dvc exp run -S``-style overrides (full dotted keys under ``train.`` or ``generate.``; every
key must exist in params.yaml), defined once in :data:`RECIPES`.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime
import json
import shlex
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

# Issue 19's three texture switches together (each at its params.yaml settings), on the default.
TEXTURE: dict[str, Any] = {
    "train.hacks.bilinear_g.enabled": True,
    "train.hacks.g_pixel_noise.enabled": True,
    "train.hacks.highpass_d.enabled": True,
}

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
    # Issue 19, texture: each switch alone on the default, then all three together (TEXTURE). Bilinear resize + conv
    # in G's top two layers (Odena et al. 2016) against the transposed convs' dot lattice
    "default-bilinear": {"train.hacks.bilinear_g.enabled": True},
    # per-pixel noise inputs with learned scales after G's last two hidden blocks, kept at sampling (StyleGAN, Karras
    # et al. 2019)
    "default-noise": {"train.hacks.g_pixel_noise.enabled": True},
    # a frequency-aware D: a fixed high-pass residual of the image before cutout as extra input channels (SSD-GAN,
    # Chen et al. 2021; Schwarz et al. 2021)
    "default-freqd": {"train.hacks.highpass_d.enabled": True},
    # DiffAugment without its colour op (brightness, saturation, contrast): the fakes' colour and contrast were off
    "default-nocolor": {"train.hacks.diffaugment.policy": ["translation", "cutout"]},
    # DiffAugment without the dihedral flips/rotations of the reals, to separate the two in the evidence
    "default-noflips": {"train.hacks.dihedral_augment": False},
    "default-texture": TEXTURE,
    "default-texture-nocolor": {**TEXTURE, "train.hacks.diffaugment.policy": ["translation", "cutout"]},
}

# Keys the bench sets itself for every run; a recipe may not override them.
BENCH_KEYS = ("train.seed", "train.device", "train.iterations", "train.checkpoint_every", "train.sample_every")
CHILD = "--run-one-spec"  # internal first argument: run the spec file that follows, in this process
UNBOUNDED_ITERATIONS = 10**9  # with --budget-seconds the clock stops the run, not the iteration count

COLUMNS = ["recipe", "seed", "iterations", "train_s", "img_per_s", "judge_accuracy", "judge_auc", "judge_log_loss",
           "judge_brier", "judge_p_value", "swd_mean"]  # then swd_<level>, then TAIL_COLUMNS
TAIL_COLUMNS = ["colour", "memorized", "fake_ssim", "real_ssim"]  # then, on labelled data, real_test and gan_test or class_tv


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


def run_params(doc: dict[str, Any], overrides: dict[str, Any], seed: int, device: str,
               budget_images: int | None) -> dict[str, Any]:
    """params.yaml's mapping for one run: the recipe's overrides, the seed and device, the budget's iterations.

    Checkpoints and sample grids only at the end: they would cost the run time it is measured on.
    """
    out = copy.deepcopy(doc)
    for key, value in overrides.items():
        set_dotted(out, key, value, where="recipe")
    batch = out["train"]["batch_size"]
    iterations = UNBOUNDED_ITERATIONS if budget_images is None else budget_images // batch
    if iterations < 1:
        raise BenchError(f"--budget-images {budget_images} is less than one batch of {batch}")
    out["train"].update(seed=seed, device=device, iterations=iterations, checkpoint_every=iterations,
                        sample_every=iterations)
    return out


def row_from(result: dict[str, Any]) -> dict[str, Any]:
    """One table row from a run's result.json: the numbers the table shows, flat."""
    m = result["metrics"]
    row = {
        "recipe": result["recipe"], "seed": result["seed"], "iterations": result["iterations"],
        "train_s": result["train_s"], "img_per_s": result["img_per_s"],
        "judge_accuracy": m["judge"]["accuracy"], "judge_auc": m["judge"]["auc"],
        "judge_log_loss": m["judge"]["log_loss"], "judge_brier": m["judge"]["brier"],
        "judge_p_value": m["judge"]["p_value"], "swd_mean": m["swd"]["mean"],
    }
    levels = sorted((k for k in m["swd"] if k != "mean"), key=lambda k: int(k.removesuffix("px")))
    row.update({f"swd_{k}": m["swd"][k] for k in levels})
    row.update({
        "colour": m["colour_hist"]["mean"],
        "memorized": round(m["memorization"]["frac_above_threshold"] * m["n"]["fake"]),
        "fake_ssim": m["diversity"]["fake_mean_ssim"], "real_ssim": m["diversity"]["real_mean_ssim"],
    })
    classifier = m.get("classifier")  # labelled data only (satgan.evaluate.stage.classifier_block)
    if isinstance(classifier, dict):
        row["real_test"] = classifier["real_test"]["accuracy"]
        if "gan_test" in classifier:  # a conditional model: the classifier's accuracy on the asked-for classes
            row["gan_test"] = classifier["gan_test"]["accuracy"]
        else:  # an unconditional model: how far its class spread is from the held-out reals'
            row["class_tv"] = classifier["tv_distance"]
    return row


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if key in ("seed", "iterations", "memorized"):
        return str(int(value))
    if key == "judge_p_value":
        return f"{value:.2g}"
    if key in ("judge_log_loss", "judge_brier"):
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


def machine() -> str:
    """The machine, as every figure names it (satgan.machine)."""
    return describe_machine(full=True)


# ----------------------------------------------------------------------------- one run (child process)


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Train, generate and evaluate one (recipe, seed) as the pipeline's stages would; writes result.json."""
    from satgan.evaluate.stage import EvaluateParams, evaluate
    from satgan.generate import GenerateParams, generate
    from satgan.params import from_mapping
    from satgan.train import train
    from satgan.train import TrainParams

    doc, run, prepared = spec["params"], Path(spec["run_dir"]), Path(spec["prepared"])
    params_file = spec["params_file"]
    tp = from_mapping(TrainParams, doc["train"], "train", params_file)
    gp = from_mapping(GenerateParams, doc["generate"], "generate", params_file)
    ep = from_mapping(EvaluateParams, doc["evaluate"], "evaluate", params_file)
    t0 = time.perf_counter()
    card = train(tp, prepared, run / "model", run / "checkpoints", None, max_seconds=spec["max_seconds"])
    train_s = time.perf_counter() - t0
    generate(run / "model", run / "samples", gp)
    metrics = evaluate(prepared, run / "samples", run / "eval", ep)
    result = {
        "recipe": spec["recipe"], "seed": spec["seed"], "iterations": int(card["step"]),
        "train_s": train_s, "img_per_s": card["step"] * tp.batch_size / train_s, "metrics": metrics,
    }
    (run / "result.json").write_text(json.dumps(result, indent=2))
    return result


# ----------------------------------------------------------------------------- the benchmark (parent)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget = ap.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-seconds", type=float, help="wall-clock seconds of training per run")
    budget.add_argument("--budget-images", type=int, help="training images per run (iterations = N / batch_size)")
    ap.add_argument("--recipes", default="canonical,default", help=f"comma-separated, from: {', '.join(RECIPES)}")
    ap.add_argument("--seeds", default="0", help="comma-separated train seeds; each repeats every recipe")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--prepared", type=Path, default=REPO / "data" / "prepared", help="tiles.npy + holdout.npy")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default bench/out/quality-<UTC time>)")
    args = ap.parse_args(argv)
    if args.budget_seconds is not None and not args.budget_seconds > 0:
        ap.error("--budget-seconds must be > 0")
    if args.budget_images is not None and args.budget_images < 1:
        ap.error("--budget-images must be >= 1")
    return args


def bench(args: argparse.Namespace, argv: list[str]) -> list[dict[str, Any]]:
    """Run every (recipe, seed) in its own process and write quality.md / quality.csv; returns the rows."""
    from satgan.params import read_params_file

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
    for name in ("tiles.npy", "holdout.npy"):
        if not (args.prepared / name).is_file():
            raise BenchError(f"{args.prepared / name}: not found (run `dvc repro prepare`, or pass --prepared)")
    doc = read_params_file(args.params)
    check_recipes({r: RECIPES[r] for r in recipes}, doc)
    out = args.out or REPO / "bench" / "out" / f"quality-{datetime.datetime.now(datetime.UTC):%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    budget = (f"{args.budget_seconds:g} s of training" if args.budget_seconds is not None
              else f"{args.budget_images} images")
    print(f"quality bench: {len(recipes)} recipes x {len(seeds)} seeds, {budget} per run, device {args.device} -> {out}",
          flush=True)

    order = run_order(recipes, seeds)
    rows, failed = [], []
    for k, (recipe, seed) in enumerate(order, 1):
        run_dir = out / "runs" / f"{recipe}-s{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "recipe": recipe, "seed": seed, "run_dir": str(run_dir), "prepared": str(args.prepared),
            "params_file": str(args.params), "max_seconds": args.budget_seconds,
            "params": run_params(doc, RECIPES[recipe], seed, args.device, args.budget_images),
        }
        (run_dir / "spec.json").write_text(json.dumps(spec, indent=2))
        t0 = time.perf_counter()
        with open(run_dir / "log.txt", "w") as log:
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), CHILD, str(run_dir / "spec.json")],
                                  stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = (run_dir / "log.txt").read_text().strip().splitlines()[-1:] or ["(no output)"]
            print(f"[{k}/{len(order)}] {recipe} seed {seed}: FAILED (exit {proc.returncode}, {wall:.0f} s): {tail[0]} "
                  f"(see {run_dir / 'log.txt'})", flush=True)
            failed.append(f"{recipe}-s{seed}")
            continue
        row = row_from(json.loads((run_dir / "result.json").read_text()))
        rows.append(row)
        print(f"[{k}/{len(order)}] {recipe} seed {seed}: {row['iterations']} it, {row['img_per_s']:.0f} img/s, "
              f"judge acc {row['judge_accuracy']:.3f} log-loss {row['judge_log_loss']:.3g}, SWD {row['swd_mean']:.3f}, "
              f"fake/real SSIM {row['fake_ssim']:.3f}/{row['real_ssim']:.3f} ({wall:.0f} s)", flush=True)

    if rows:
        table = markdown_table(rows)
        print(table)
        with open(out / "quality.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=table_columns(rows), restval="")
            writer.writeheader()
            writer.writerows(rows)
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        (out / "quality.md").write_text(
            f"# Quality benchmark, {when}\n\n"
            f"- command: `{shlex.join(['python', 'bench/quality_bench.py', *argv])}`\n"
            f"- machine: {machine()}\n"
            f"- budget: {budget} per run, device {args.device}, prepared tiles {args.prepared}\n"
            f"- judge log-loss and Brier: higher is better for the GAN (ln 2 = 0.693 and 0.25 for an uninformed judge)\n\n"
            f"{table}\n")
        print(f"wrote {out / 'quality.md'} and {out / 'quality.csv'}")
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
