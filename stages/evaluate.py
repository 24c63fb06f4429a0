"""Stage 6, evaluate: Turing grid + quiz, automatic judge, SWD, histograms, memorization, diversity.

Usage (as in dvc.yaml): python stages/evaluate.py --prepared data/prepared --samples data/samples --model data/model --live data/live --out data/eval
"""

from __future__ import annotations

import argparse

from satgan.cli import run_main
from satgan.evaluate.params import EvaluateParams
from satgan.evaluate.stage import evaluate
from satgan.params import DEFAULT_PARAMS, load_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", required=True, help="prepare output: tiles.npy and holdout.npy (+ .json sidecars)")
    parser.add_argument("--samples", required=True, help="generate output: samples.npy (+ samples.json)")
    parser.add_argument("--model", default=None, help="train output (model.json), for MODEL_CARD.md with this evaluation")
    parser.add_argument("--live", default=None, help="train's dvclive folder, for report.html's training curves and samples")
    parser.add_argument("--out", required=True, help="folder for metrics.json, quiz.html, turing_grid.png, ...")
    parser.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: params.yaml)")
    args = parser.parse_args()
    params = load_section("evaluate", EvaluateParams, args.params)
    evaluate(args.prepared, args.samples, args.out, params, live_dir=args.live, model_dir=args.model)


if __name__ == "__main__":
    run_main(main, "evaluate")
