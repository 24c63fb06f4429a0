"""Stage 3, prepare: accepted tiles -> memory-mapped (N, C, H, W) arrays in [-1, 1] plus a holdout.

Usage (as in dvc.yaml):
    python stages/prepare.py --raw data/raw --validated data/validated --out data/prepared
"""

from __future__ import annotations

import argparse

from satgan import names
from satgan.cli import run_main
from satgan.params import DEFAULT_PARAMS, load_section
from satgan.prepare import PrepareParams, prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", required=True, help="download output (the files accepted.csv lists)")
    parser.add_argument("--validated", required=True, help="validate output: accepted.csv")
    parser.add_argument("--out", required=True, help="folder for tiles.npy/.json and holdout.npy/.json")
    parser.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: params.yaml)")
    args = parser.parse_args()
    params = load_section("prepare", PrepareParams, args.params)
    result = prepare(args.raw, args.validated, args.out, params)
    c, h, w = result.shape
    val = f" + {result.validation} validation" if result.validation else ""
    print(f"prepare: {result.train} training + {result.holdout} holdout{val} tiles of {c}x{h}x{w} {params.dtype} "
          f"in {result.seconds:.1f}s -> {args.out}/{names.TRAIN_TILES}, {names.HOLDOUT_TILES}"
          + (f", {names.VALIDATION_TILES}" if result.validation else ""))


if __name__ == "__main__":
    run_main(main, "prepare")
