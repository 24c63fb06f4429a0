"""Stage 1: download tiles from the source in params.yaml's ``download`` section into ``--out``."""

from __future__ import annotations

import argparse

from satgan.cli import run_main
from satgan.download import DownloadParams, run_download
from satgan.params import DEFAULT_PARAMS, load_section


def main() -> None:
    """Parse arguments, load ``download`` params, run the download and print the one-line summary."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="output folder (tiles/ + manifest.csv), e.g. data/raw")
    parser.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: params.yaml)")
    args = parser.parse_args()
    params = load_section("download", DownloadParams, args.params)
    print(run_download(params, args.out).line())


if __name__ == "__main__":
    run_main(main, "download")
