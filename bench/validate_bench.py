"""Benchmark the validate stage: ``workers: 2`` (process pool) against ``workers: 1`` (in process), same run.

Tiles are ``--tiles`` 128x128 JPEG crops cut from the real RSSCN7 images in ../shared/data/rsscn7
into a temp dir (as bench/prepare_bench.py cuts them), listed in a download-style manifest.csv.
After a warm-up run, the two settings run interleaved ``--repeats`` times and the best time of
each is compared, so background load hits both alike. Every run's four outputs must be
byte-identical (checked). Figures go in docs/benchmarks.md, section "validate".

    python bench/validate_bench.py [--tiles 2000] [--repeats 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from rsscn7_crops import cut_crops  # bench/'s own helper (this script's folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("accepted.csv", "rejected.csv", "report.json", "rejected.png")


def make_raw(root: Path, n: int) -> Path:
    """Cut ``n`` real 128x128 crops into root/raw/tiles and write root/raw/manifest.csv (status ok)."""
    raw = root / "raw"
    lines = ["path,source,sha256,bytes,status,error"]
    for path, origin in cut_crops(raw / "tiles", n):
        data = path.read_bytes()
        lines.append(f"tiles/{path.name},{origin},{hashlib.sha256(data).hexdigest()},{len(data)},ok,")
    (raw / "manifest.csv").write_text("\n".join(lines) + "\n")
    return raw


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the pool's workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_validate(raw: Path, out: Path, workers: int) -> tuple[float, float, dict[str, bytes]]:
    """One validate run: wall seconds, CPU seconds (all processes), and the bytes of its four outputs."""
    from satgan.params import load_section
    from satgan.validate import ValidateParams, validate

    params = dataclasses.replace(load_section("validate", ValidateParams, REPO / "params.yaml"), workers=workers)
    t0, c0 = time.perf_counter(), cpu_seconds()
    validate(raw, out, params, progress=False)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return seconds, cpu, {name: (out / name).read_bytes() for name in OUTPUTS}


def main() -> None:
    """Run the benchmark and print a table row per setting and the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="the pool size compared with workers=1")
    args = ap.parse_args()
    print(f"# validate bench: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="validate_bench_") as tmp:
        raw = make_raw(Path(tmp), args.tiles)
        _, _, reference = run_validate(raw, Path(tmp) / "warm", args.workers)  # page cache and imports, for both
        times: dict[int, list[float]] = {1: [], args.workers: []}
        cpus: dict[int, list[float]] = {1: [], args.workers: []}
        for rep in range(args.repeats):
            for workers in times:
                seconds, cpu, outputs = run_validate(raw, Path(tmp) / f"w{workers}r{rep}", workers)
                if outputs != reference:
                    sys.exit(f"workers={workers} wrote different outputs than workers={args.workers}: a bug")
                times[workers].append(seconds)
                cpus[workers].append(cpu)
        best = {w: min(t) for w, t in times.items()}
        n = args.tiles
        # CPU seconds do not depend on how busy the machine is: equal CPU for both settings means
        # the pool adds no work, and the wall-clock speed-up is then bounded only by free cores.
        for workers, seconds in best.items():
            print(f"| validate, workers={workers} | {n} | {seconds:.2f} s | {n / seconds:.0f} tiles/s | "
                  f"{best[1] / seconds:.2f}x | CPU {min(cpus[workers]):.2f} s | "
                  f"all runs: {', '.join(f'{t:.2f}' for t in times[workers])} s |")
        print(f"speed-up workers={args.workers} / workers=1: {best[1] / best[args.workers]:.2f}x (goal >= 1.7x on 2 cores); "
              f"outputs byte-identical across all {1 + args.repeats * 2} runs; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
