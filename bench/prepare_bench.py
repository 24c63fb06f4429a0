"""Benchmark the prepare stage (figures go in docs/benchmarks.md, section "prepare").

1. Throughput: satgan.prepare (process pool writing memmap slices, reduced-scale JPEG decode, albumentations INTER_AREA)
   against a plain single-threaded PIL + numpy loop doing the same work (decode, area resize,
   centre crop, normalize to [-1, 1], write one .npy) on the same 2,000 real tiles, same run.
2. Peak memory: prepare on 2,000 vs 20,000 tiles, each in a fresh subprocess (ru_maxrss).

Tiles are 128x128 JPEG crops cut from the real RSSCN7 images in ../shared/data/rsscn7 into a
temp dir; prepare resizes them to prepare.image_size (64 in params.yaml).

    python bench/prepare_bench.py [--tiles 2000] [--memory-tiles 2000 20000]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from rsscn7_crops import TILE, cut_crops  # bench/'s own helper (this script's folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
REPEATS = 3


def make_tiles(root: Path, n: int) -> Path:
    """Cut ``n`` real 128x128 crops into root/raw/tiles and write root/validated/accepted.csv."""
    lines = ["path,sha256,width,height,mode,channels,action"]
    for path, _ in cut_crops(root / "raw" / "tiles", n):
        lines.append(f"tiles/{path.name},{hashlib.sha256(path.read_bytes()).hexdigest()},{TILE},{TILE},RGB,3,as_is")
    (root / "validated").mkdir()
    (root / "validated" / "accepted.csv").write_text("\n".join(lines) + "\n")
    return root


def plain_loop(root: Path, size: int, dtype: str) -> None:
    """The baseline: one thread, PIL decode + BOX (area) resize + centre crop + numpy normalize + np.save."""
    rows = (root / "validated" / "accepted.csv").read_text().splitlines()[1:]
    out = np.empty((len(rows), 3, size, size), dtype)
    for i, row in enumerate(rows):
        with Image.open(root / "raw" / row.split(",")[0]) as im:
            im = im.convert("RGB")
            scale = size / min(im.size)
            w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
            im = im.resize((w, h), Image.Resampling.BOX)
            left, top = (w - size) // 2, (h - size) // 2
            arr = np.asarray(im.crop((left, top, left + size, top + size)))
        out[i] = (arr.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0).astype(dtype)
    np.save(root / "plain.npy", out)


def run_prepare(root: Path, out: Path, workers: int | None = None) -> float:
    from satgan.params import load_section
    from satgan.prepare import PrepareParams, prepare

    params = load_section("prepare", PrepareParams, REPO / "params.yaml")
    if workers is not None:
        params = dataclasses.replace(params, workers=workers)
    t0 = time.perf_counter()
    prepare(root / "raw", root / "validated", out, params, progress=False)
    return time.perf_counter() - t0


def child(root: Path) -> None:
    """Subprocess body for the memory test: run prepare, print peak RSS in MiB."""
    run_prepare(root, root / "prepared")
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=2000)
    parser.add_argument("--memory-tiles", type=int, nargs=2, default=[2000, 20000])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    from satgan.params import load_section
    from satgan.prepare import PrepareParams

    params = load_section("prepare", PrepareParams, REPO / "params.yaml")
    print(f"# prepare benchmark: {platform.processor() or platform.machine()}, "
          f"image_size {params.image_size}, {params.dtype}, workers {params.workers}, chunk {params.chunk_size}")
    with tempfile.TemporaryDirectory(prefix="prepare_bench_") as tmp:
        root = make_tiles(Path(tmp) / "t", args.tiles)
        run_prepare(root, Path(tmp) / "warm")  # warm the page cache and imports for both contenders
        plain, ours1, ours = [], [], []
        for rep in range(REPEATS):  # interleaved, best of REPEATS: fair to both under background load
            t0 = time.perf_counter()
            plain_loop(root, params.image_size, params.dtype)
            plain.append(time.perf_counter() - t0)
            ours1.append(run_prepare(root, Path(tmp) / f"a{rep}", workers=1))
            ours.append(run_prepare(root, Path(tmp) / f"b{rep}"))
        plain, ours1, ours = min(plain), min(ours1), min(ours)
        n = args.tiles
        print(f"| plain PIL + numpy loop (1 thread) | {n} | {plain:.2f} s | {n / plain:.0f} tiles/s | 1.00x |")
        print(f"| satgan prepare, workers=1 | {n} | {ours1:.2f} s | {n / ours1:.0f} tiles/s | {plain / ours1:.2f}x |")
        print(f"| satgan prepare, workers={params.workers} | {n} | {ours:.2f} s | {n / ours:.0f} tiles/s | {plain / ours:.2f}x |")
        peaks = {}
        for m in args.memory_tiles:
            mroot = make_tiles(Path(tmp) / f"m{m}", m)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", str(mroot)], capture_output=True, text=True, check=True)
            peaks[m] = float(proc.stdout.split()[-1])
            print(f"| peak RSS, {m} tiles | {peaks[m]:.0f} MiB | {time.perf_counter() - t0:.1f} s |")
        lo, hi = args.memory_tiles
        print(f"peak RSS ratio {hi} / {lo} tiles: {peaks[hi] / peaks[lo]:.2f}x (goal <= 1.2x)")


if __name__ == "__main__":
    main()
