"""Stage 4, train: a DCGAN on data/prepared/tiles.npy -> data/model (safetensors + model.json).

Resumes from --checkpoints when the train params (minus iterations and the *_every
cadences) and the data hash match; starts fresh, saying so, otherwise. With train.nproc > 1
it relaunches itself under torchrun with that many processes (DistributedDataParallel:
NCCL on GPUs, gloo on CPUs); under `torchrun --nproc_per_node=N stages/train.py ...` by hand
(WORLD_SIZE set, e.g. multi-node) it trains as the rank torchrun gave it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from satgan.cli import run_main
from satgan.openmp import bind_for_training
from satgan.params import DEFAULT_PARAMS, load_section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="prepared folder with tiles.npy + tiles.json")
    ap.add_argument("--out", type=Path, required=True, help="model folder to write")
    ap.add_argument("--checkpoints", type=Path, required=True, help="persistent checkpoint folder")
    ap.add_argument("--live", type=Path, default=None, help="dvclive folder (metrics, plots, sample grids)")
    ap.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    args = ap.parse_args()
    bind_for_training(args.params)  # before torch loads: OpenMP reads its thread placement once
    from satgan.train import TrainParams, train
    from satgan.train.runtime import relaunch_under_torchrun

    params = load_section("train", TrainParams, args.params)
    if params.nproc > 1 and "WORLD_SIZE" not in os.environ:  # not already one of torchrun's workers
        relaunch_under_torchrun(params.nproc, params.device)
    train(params, args.data, args.out, args.checkpoints, args.live)


if __name__ == "__main__":
    run_main(main, "train")
