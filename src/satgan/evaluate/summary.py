"""Print the key evaluation numbers and where the outputs are: ``python -m satgan.evaluate.summary``.

``make demo`` calls it after ``dvc repro``. It reads params.yaml's ``paths`` section (typed:
:class:`satgan.paths.PathsParams`) for the folders and ``data/eval/metrics.json``
(+ ``fid_kid.json``) for the numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from satgan import names
from satgan.cli import run_main
from satgan.errors import DataError
from satgan.evaluate.params import EvaluateParams
from satgan.evaluate.readings import check_fid_kid, check_metrics, demo_targets, floor_rows, judge_is_conclusive, rate_classifier
from satgan.fsutil import read_json
from satgan.params import DEFAULT_PARAMS, load_section
from satgan.paths import PathsParams


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: not found (run `dvc repro evaluate`, or `make demo`)")
    return read_json(path, "evaluate output")


def render(metrics: dict[str, Any], fid: dict[str, Any], samples: Path, eval_dir: Path, ssim_threshold: float) -> str:
    """The summary text: a metrics table with how to read each row, then the output paths."""
    j, mem, div = metrics["judge"], metrics["memorization"], metrics["diversity"]
    computed = isinstance(fid["fid"], float)
    fid_text = f"{fid['fid']:.2f} / {fid['kid']:.4f}" if computed else "not computed"
    rows = [
        ("tiles: train / held-out real / generated",
         f"{metrics['n']['train']} / {metrics['n']['holdout']} / {metrics['n']['fake']}", ""),
        ("judge accuracy (held-out, C2ST)", f"{j['accuracy']:.3f}",
         f"0.5 = can't tell real from fake (best); 1.0 = trivially fake; {j.get('folds', '?')}-fold CV x "
         f"{j.get('seeds', '?')} seeds")
        if judge_is_conclusive(metrics) else
        ("judge accuracy (held-out, C2ST)", "inconclusive",
         f"{j['accuracy']:.3f} on only {j['n_test']} test tiles, 95% CI {j['accuracy_ci_low']:.2f}-{j['accuracy_ci_high']:.2f}: "
         "too few held-out tiles to say"),
        ("judge ROC AUC", f"{j['auc']:.3f}", "0.5 = chance"),
        ("judge p-value vs chance", f"{j['p_value']:.2g}", f"small = the judge beats chance on {j['n_test']} test tiles"),
        ("SWD, mean over pyramid levels", f"{metrics['swd']['mean']:.4f}", "lower = closer local texture/colour; compare runs"),
        ("colour histogram distance", f"{metrics['colour_hist']['mean']:.3f}", "0 = same colours, 1 = disjoint"),
        (f"samples with SSIM > {ssim_threshold} to a train tile", f"{mem['frac_above_threshold']:.1%}",
         f"likely copies; held-out real tiles: {mem['holdout_frac_above_threshold']:.1%}"),
        ("nearest-train SSIM: median / max", f"{mem['ssim_median']:.3f} / {mem['ssim_max']:.3f}", "near 1 = memorized"),
        ("mean pairwise SSIM: fake / real", f"{div['fake_mean_ssim']:.3f} / {div['real_mean_ssim']:.3f}",
         "MODE COLLAPSE: fakes far more alike than real tiles" if div["collapsed"] else "fake ~ real = diverse"),
        ("FID / KID", fid_text, "lower = closer (Inception features)" if computed else fid["reason"]),
    ]
    # Labelled data: the class classifier's row (GAN-test or class coverage), read as on report.html.
    rows[-1:-1] = [(r.name, r.value, f"{r.reading}; baseline {r.baseline}") for r in rate_classifier(metrics)]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = ["satgan evaluation", ""] + [f"  {a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in rows]
    lines += floor_table(metrics)
    lines += ["", "Demo targets (issue 19):"] + [
        f"  {t.verdict:<12}  {t.name} {t.wanted}" for t in demo_targets(metrics)]
    lines += [
        "",
        "Outputs:",
        f"  quiz page (open in a browser)  {eval_dir / names.QUIZ}",
        f"  Turing grid                    {eval_dir / names.TURING_GRID}   (answer key: {eval_dir / names.TURING_KEY})",
        f"  sample grid                    {samples / names.SAMPLE_GRID}",
        f"  latent interpolation           {samples / names.INTERPOLATION}",
        f"  closest sample/train pairs     {eval_dir / names.CLOSEST_PAIRS}",
        f"  metrics                        {eval_dir / names.METRICS}   (compare runs: dvc metrics diff)",
        "",
        f"Score quiz answers: python -m satgan.evaluate.turing score answers.json [...] --key {eval_dir / names.TURING_KEY}",
    ]
    return "\n".join(lines)


def floor_table(metrics: dict[str, Any]) -> list[str]:
    """The report's floor table as text lines: each figure, fakes vs the comparison reals, real vs real, ratio, mark."""
    rows = floor_rows(metrics)
    if not rows:
        return []
    against = metrics.get("against", "holdout")
    head = ("figure", f"fakes vs {against} reals", "floor: real vs real", "ratio", "mark")
    cells = [head] + [(r.name, f"{r.value:.4g}", f"{r.floor:.4g}", "n/a" if r.ratio is None else f"{r.ratio:.2f}", r.mark)
                      for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    text = [f"  {c[0]:<{widths[0]}}  " + "  ".join(f"{x:>{w}}" for x, w in zip(c[1:4], widths[1:4])) + f"  {c[4]}"
            for c in cells]
    return ["", "Against the floor (the same figure between two disjoint sets of real tiles):", *text]


def main(argv: list[str] | None = None) -> None:
    """Print the summary of the last evaluate run."""
    parser = argparse.ArgumentParser(prog="python -m satgan.evaluate.summary", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    paths = load_section("paths", PathsParams, args.params)
    samples, eval_dir = Path(paths.samples), Path(paths.eval)
    threshold = load_section("evaluate", EvaluateParams, args.params).memorization.ssim_threshold
    metrics = check_metrics(_read(eval_dir / names.METRICS), str(eval_dir / names.METRICS))
    fid = check_fid_kid(_read(eval_dir / names.FID_KID), str(eval_dir / names.FID_KID))
    print(render(metrics, fid, samples, eval_dir, threshold))


if __name__ == "__main__":
    run_main(main, "summary")
