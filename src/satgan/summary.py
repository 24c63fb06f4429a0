"""Print the key evaluation numbers and where the outputs are: ``python -m satgan.summary``.

``make demo`` calls it after ``dvc repro``. It reads params.yaml's ``paths`` section for
the folders and ``data/eval/metrics.json`` (+ ``fid_kid.json``) for the numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from satgan.cli import run_main
from satgan.errors import DataError, ParamsError
from satgan.evaluate import EvaluateParams
from satgan.params import DEFAULT_PARAMS, load_section, read_params_file


def _paths(params_path: Path) -> tuple[Path, Path]:
    """(samples folder, eval folder) from params.yaml's ``paths`` section."""
    doc = read_params_file(params_path)
    paths = doc["paths"] if "paths" in doc else None
    if not isinstance(paths, dict):
        raise ParamsError(f"{params_path}: missing section 'paths'")
    for key in ("samples", "eval"):
        if key not in paths or not isinstance(paths[key], str):
            raise ParamsError(f"{params_path}: paths.{key}: expected a folder path")
    return Path(paths["samples"]), Path(paths["eval"])


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: not found (run `dvc repro evaluate`, or `make demo`)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None


def render(metrics: dict[str, Any], fid: dict[str, Any], samples: Path, eval_dir: Path, ssim_threshold: float) -> str:
    """The summary text: a metrics table with how to read each row, then the output paths."""
    j, mem, div = metrics["judge"], metrics["memorization"], metrics["diversity"]
    computed = isinstance(fid["fid"], float)
    fid_text = f"{fid['fid']:.2f} / {fid['kid']:.4f}" if computed else "not computed"
    rows = [
        ("tiles: train / held-out real / generated",
         f"{metrics['n']['train']} / {metrics['n']['holdout']} / {metrics['n']['fake']}", ""),
        ("judge accuracy (held-out, C2ST)", f"{j['accuracy']:.3f}", "0.5 = can't tell real from fake (best); 1.0 = trivially fake"),
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
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = ["satgan evaluation", ""] + [f"  {a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in rows]
    lines += [
        "",
        "Outputs:",
        f"  quiz page (open in a browser)  {eval_dir / 'quiz.html'}",
        f"  Turing grid                    {eval_dir / 'turing_grid.png'}   (answer key: {eval_dir / 'turing_key.json'})",
        f"  sample grid                    {samples / 'grid.png'}",
        f"  latent interpolation (slerp)   {samples / 'interpolation.png'}",
        f"  closest sample/train pairs     {eval_dir / 'closest_pairs.png'}",
        f"  metrics                        {eval_dir / 'metrics.json'}   (compare runs: dvc metrics diff)",
        "",
        f"Score quiz answers: python -m satgan.turing score answers.json [...] --key {eval_dir / 'turing_key.json'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the summary of the last evaluate run."""
    parser = argparse.ArgumentParser(prog="python -m satgan.summary", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    samples, eval_dir = _paths(args.params)
    threshold = load_section("evaluate", EvaluateParams, args.params).memorization.ssim_threshold
    print(render(_read(eval_dir / "metrics.json"), _read(eval_dir / "fid_kid.json"), samples, eval_dir, threshold))


if __name__ == "__main__":
    run_main(main, "summary")
