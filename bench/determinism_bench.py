"""Train-step time with ``train.deterministic`` off and on, step by step in one process.

The cost of deterministic mode decides its default (params.yaml). One Trainer (params.yaml's
train section, default hacks) trains on the prepared tiles; after a warm-up, consecutive
steps alternate between the two modes in ABBA order (pair k runs off-then-on when k is even,
on-then-off when odd), each step timed on its own. On a box shared with other work the load
changes over seconds, so the figure that counts is the median over pairs of the two
neighbouring steps' time ratio, which that load hits alike:

    python bench/determinism_bench.py --data data/prepared --threads 2 --pairs 60
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from satgan import names
from satgan.arrays import open_prepared
from satgan.params import from_mapping
from satgan.train import Dist, Trainer, TrainParams, model_config, pick_device
from satgan.train.runtime import determinism

REPO = Path(__file__).resolve().parents[1]


def timed_step(tr: Trainer, deterministic: bool) -> float:
    """Seconds for one training step in the given mode (its metrics read, so the work is done)."""
    with determinism(deterministic, tr.device):
        if tr.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = tr.run_step()
        float(out["loss_g"])
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / "data" / "prepared", help="prepared folder (random tiles if absent)")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()

    doc = yaml.safe_load(args.params.read_text())["train"]
    doc.update(device=args.device, threads=args.threads, compile="none")  # eager: the mode is read at each op
    p = from_mapping(TrainParams, doc, "train", file=str(args.params))
    device = pick_device(p.device, 0)
    torch.set_num_threads(args.threads)
    tiles = args.data / names.TRAIN_TILES
    if tiles.is_file():
        arr = np.asarray(open_prepared(tiles)[0], dtype=np.float32)
        source = str(tiles)
    else:
        arr = np.random.default_rng(0).uniform(-1, 1, (512, 3, 64, 64)).astype(np.float32)
        source = "random 64x64 tiles"
    tr = Trainer(p, model_config(p, arr.shape[2], arr.shape[1]), arr, device, Dist())
    for i in range(args.warmup):
        timed_step(tr, i % 2 == 0)
    times: dict[bool, list[float]] = {False: [], True: []}
    for k in range(args.pairs):
        for mode in ((False, True) if k % 2 == 0 else (True, False)):
            times[mode].append(timed_step(tr, mode))
    off, on = statistics.median(times[False]), statistics.median(times[True])
    ratios = sorted(b / a for a, b in zip(times[False], times[True]))
    q = statistics.quantiles(ratios, n=4)
    print(f"device {device}, threads {torch.get_num_threads()}, {source} {arr.shape[1:]}, ngf {p.ngf}, ndf {p.ndf}, "
          f"batch {p.batch_size}, {args.pairs} ABBA pairs of steps")
    print(f"median step: off {1000 * off:.0f} ms ({p.batch_size / off:.0f} img/s), on {1000 * on:.0f} ms "
          f"({p.batch_size / on:.0f} img/s); slowest/fastest step {max(times[False] + times[True]) / min(times[False] + times[True]):.1f}x")
    print(f"on/off step-time ratio of neighbouring steps: median {statistics.median(ratios):.3f} "
          f"(quartiles {q[0]:.3f}-{q[2]:.3f}): deterministic costs {100 * (statistics.median(ratios) - 1):.1f}%")


if __name__ == "__main__":
    main()
