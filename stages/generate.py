"""Stage 5, generate: sample PNGs, samples.npy, a grid and a slerp interpolation strip from the model.

Also classes/ (classes.json; for a class-conditional model the samples' labels.npy, a grid and an
interpolation strip with one row per class from generate.classes).

Usage (as in dvc.yaml): python stages/generate.py --model data/model --out data/samples
"""

from __future__ import annotations

import argparse

from satgan.cli import run_main
from satgan.generate import GenerateParams, generate
from satgan.params import DEFAULT_PARAMS, load_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="train output: model.json + generator[_ema].safetensors")
    parser.add_argument("--out", required=True, help="folder for png/, samples.npy (+ .json), grid.png, interpolation.png, classes/")
    parser.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: params.yaml)")
    args = parser.parse_args()
    params = load_section("generate", GenerateParams, args.params)
    generate(args.model, args.out, params)


if __name__ == "__main__":
    run_main(main, "generate")
