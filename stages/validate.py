"""Stage 2, validate: sort downloaded tiles into accepted.csv / rejected.csv with reasons.

Usage (as in dvc.yaml): python stages/validate.py --raw data/raw --out data/validated
"""

from __future__ import annotations

import argparse

from satgan.cli import run_main
from satgan.params import DEFAULT_PARAMS, load_section
from satgan.validate import ValidateParams, validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", required=True, help="download output: tiles/ + manifest.csv")
    parser.add_argument("--out", required=True, help="folder for accepted.csv, rejected.csv, report.json")
    parser.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: params.yaml)")
    args = parser.parse_args()
    params = load_section("validate", ValidateParams, args.params)
    result = validate(args.raw, args.out, params)
    reasons = ", ".join(f"{k[9:]} {n}" for k, n in result.report.items() if k.startswith("rejected_") and n)
    print(f"validate: accepted {result.accepted}, rejected {result.rejected}" + (f" ({reasons})" if reasons else ""))


if __name__ == "__main__":
    run_main(main, "validate")
