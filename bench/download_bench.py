"""Benchmark: xyz download throughput against a loopback tile server with 50 ms latency per tile.

With latency L and concurrency C the ideal is C / L tiles/s; the goal is >= 80% of it, i.e.
that threads, the per-request wall-clock watchdog, hashing, atomic writes to the staging folder,
the journal and the final commit into tiles/ add little over waiting on the network.
Run from the repository root: ``python bench/download_bench.py [--tiles 400] [--concurrency 8]``.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import mercantile
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the loopback tile server shared with the tests

from tileserver import TileServer  # noqa: E402

from satgan.download import DownloadParams, run_download  # noqa: E402
from satgan.params import from_mapping, read_params_file  # noqa: E402


def tile_bodies() -> list[bytes]:
    """Real RSSCN7 JPEGs from ../shared/data when present, else synthetic 256x256 JPEGs."""
    files = sorted((REPO.parent / "shared/data/rsscn7").rglob("*.jpg"))[::10]
    if files:
        return [f.read_bytes() for f in files]
    rng = np.random.default_rng(0)
    out = []
    for _ in range(8):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buf, format="JPEG")
        out.append(buf.getvalue())
    return out


def main() -> None:
    """Run the benchmark and print one result line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiles", type=int, default=400, help="tiles to fetch (a square-ish bbox)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.05, help="server latency per tile, seconds")
    args = ap.parse_args()
    side = int(np.ceil(np.sqrt(args.tiles)))
    z, x0, y0 = 12, 655, 1583
    nw, se = mercantile.bounds(x0, y0, z), mercantile.bounds(x0 + side - 1, y0 + side - 1, z)
    bbox = [nw.west + 1e-6, se.south + 1e-6, se.east - 1e-6, nw.north - 1e-6]
    doc = read_params_file(REPO / "params.yaml")["download"]
    with TileServer(tile_bodies(), latency_s=args.latency) as srv, tempfile.TemporaryDirectory() as tmp:
        doc["source"] = "xyz"
        doc["http"]["concurrency"] = args.concurrency
        doc["xyz"].update(url=srv.url, bbox=bbox, zoom=z, max_tiles=side * side)
        params = from_mapping(DownloadParams, doc, key="download")
        start = time.perf_counter()
        summary = run_download(params, tmp)
        seconds = time.perf_counter() - start
    n = summary.counts["ok"]
    rate, ideal = n / seconds, args.concurrency / args.latency
    print(
        f"download bench: {n} tiles, concurrency {args.concurrency}, {args.latency * 1000:.0f} ms latency: "
        f"{rate:.1f} tiles/s = {rate / ideal:.0%} of ideal {ideal:.0f} tiles/s ({seconds:.2f} s)"
    )


if __name__ == "__main__":
    main()
