"""Benchmark the download stage against loopback servers (figures go in docs/benchmarks.md, "download").

Three parts, one per ``--part``:

- ``throughput`` (default): xyz download of ``--tiles`` real tiles from a loopback tile server
  with ``--latency`` per tile. With latency L and concurrency C the ideal is C / L tiles/s; the
  goal is >= 80% of it, i.e. that threads, the per-request wall-clock watchdog, hashing, atomic
  writes to the staging folder, the journal and the final commit into tiles/ add little over
  waiting on the network. The server runs in this process (as in the first recorded figures).
- ``pooling``: the throughput run with the fetcher's kept-alive connection pool, and again with
  every request asking ``Connection: close`` (so one connection per tile, as urllib did), each
  ``--repeats`` times alternately; the median tiles/s of each and the connections the server saw.
  Loopback connections are cheap (no TLS, no round trip), so this is the smallest the gain gets.
- ``memory``: peak RSS of a whole xyz download (a fresh subprocess; ``ru_maxrss``) at each of
  ``--memory-tiles`` planned tiles (default 1,000 and 10,000) from a tile server in its own
  process, so only the client is measured. The goal is flat memory: the largest within 1.2x of
  the smallest (the manifest rows are the only thing that should grow with the tile count).
- ``archive``: peak RSS of the ``archive`` source fetching a ``--archive-mb`` MB zip of real
  tiles (re-encoded RSSCN7 images) over loopback HTTP and extracting it, in a fresh subprocess.

Run from the repository root, e.g.::

    python bench/download_bench.py                                   # throughput
    python bench/download_bench.py --part pooling --tiles 200 --latency 0
    python bench/download_bench.py --part memory --memory-tiles 1000 10000
    python bench/download_bench.py --part archive --archive-mb 60
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import mercantile
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RSSCN7 = REPO.parent / "shared" / "data" / "rsscn7"
sys.path.insert(0, str(REPO / "tests"))  # the loopback tile server shared with the tests

from satgan.download import DownloadParams, run_download  # noqa: E402
from satgan.params import from_mapping, read_params_file  # noqa: E402
from tileserver import TileServer  # noqa: E402

Z, X0, Y0 = 12, 655, 1583  # a zoom-12 corner with room for a 100 x 100 bbox


def tile_bodies(crop: int | None = None) -> list[bytes]:
    """Real RSSCN7 JPEGs from ../shared/data (every 10th; with ``crop``, a crop x crop JPEG of every image).

    Falls back to synthetic 256x256 JPEGs when the real imagery is absent.
    """
    files = sorted(RSSCN7.rglob("*.jpg"))
    if files and crop is None:
        return [f.read_bytes() for f in files[::10]]
    out = []
    for f in files:
        with Image.open(f) as im:
            buf = io.BytesIO()
            im.crop((0, 0, crop, crop)).save(buf, format="JPEG", quality=90)
            out.append(buf.getvalue())
    if out:
        return out
    rng = np.random.default_rng(0)
    for _ in range(8):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buf, format="JPEG")
        out.append(buf.getvalue())
    return out


def xyz_doc(url: str, tiles: int, concurrency: int) -> dict[str, Any]:
    """The repository's download params for the xyz source over a square-ish bbox of ``tiles`` tiles."""
    side = int(np.ceil(np.sqrt(tiles)))
    nw, se = mercantile.bounds(X0, Y0, Z), mercantile.bounds(X0 + side - 1, Y0 + side - 1, Z)
    bbox = [nw.west + 1e-6, se.south + 1e-6, se.east - 1e-6, nw.north - 1e-6]
    doc = read_params_file(REPO / "params.yaml")["download"]
    doc["source"] = "xyz"
    doc["http"]["concurrency"] = concurrency
    doc["xyz"].update(url=url, bbox=bbox, zoom=Z, max_tiles=side * side)
    return doc


def throughput(args: argparse.Namespace) -> None:
    """The throughput part: one result line."""
    with TileServer(tile_bodies(), latency_s=args.latency) as srv, tempfile.TemporaryDirectory() as tmp:
        params = from_mapping(DownloadParams, xyz_doc(srv.url, args.tiles, args.concurrency), key="download")
        start = time.perf_counter()
        summary = run_download(params, tmp)
        seconds = time.perf_counter() - start
    n = summary.counts["ok"]
    rate, ideal = n / seconds, args.concurrency / args.latency
    print(
        f"download bench: {n} tiles, concurrency {args.concurrency}, {args.latency * 1000:.0f} ms latency: "
        f"{rate:.1f} tiles/s = {rate / ideal:.0%} of ideal {ideal:.0f} tiles/s ({seconds:.2f} s)"
    )


def timed_run(args: argparse.Namespace, bodies: list[bytes]) -> tuple[float, int, int]:
    """One xyz download from a fresh in-process tile server: (tiles/s, ok tiles, client connections accepted)."""
    with TileServer(bodies, latency_s=args.latency) as srv, tempfile.TemporaryDirectory() as tmp:
        params = from_mapping(DownloadParams, xyz_doc(srv.url, args.tiles, args.concurrency), key="download")
        start = time.perf_counter()
        summary = run_download(params, tmp)
        seconds = time.perf_counter() - start
        return summary.counts["ok"] / seconds, summary.counts["ok"], srv.connections


def pooling(args: argparse.Namespace) -> None:
    """The pooling part: median tiles/s with kept-alive pooled connections and with one connection per tile."""
    from satgan.download import fetch

    pooled = fetch._manager

    def per_tile(http: Any, proxy: str | None = None) -> Any:
        manager = pooled(http, proxy)
        manager.headers = {**manager.headers, "Connection": "close"}  # the server closes after each response
        return manager

    bodies = tile_bodies()
    rates: dict[str, list[float]] = {"pooled": [], "per-tile": []}
    seen: dict[str, tuple[int, int]] = {}
    for _ in range(args.repeats):
        for label, factory in (("pooled", pooled), ("per-tile", per_tile)):
            fetch._manager = factory
            try:
                rate, ok, conns = timed_run(args, bodies)
            finally:
                fetch._manager = pooled
            rates[label].append(rate)
            seen[label] = (ok, conns)
    med = {label: float(np.median(r)) for label, r in rates.items()}
    for label, r in rates.items():
        ok, conns = seen[label]
        print(f"| {label} | {ok} tiles, {conns} connections | median {med[label]:.0f} tiles/s "
              f"(runs: {', '.join(f'{x:.0f}' for x in r)}) |")
    print(f"pooled / per-tile: {med['pooled'] / med['per-tile']:.2f}x (concurrency {args.concurrency}, "
          f"{args.latency * 1000:.0f} ms latency)")


def _serve(bodies: list[bytes], content_type: str, conn: Any) -> None:
    """Server process body: serve ``bodies`` until the parent closes the pipe."""
    with TileServer(bodies, content_type=content_type) as srv:
        conn.send(srv.url)
        try:
            conn.recv()
        except EOFError:
            pass


class ServerProcess:
    """A TileServer in its own (forked) process, so the measured client's RSS holds none of it."""

    def __init__(self, bodies: list[bytes], content_type: str = "image/jpeg") -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(bodies, content_type, child), daemon=True)
        self.proc.start()
        child.close()
        self.url: str = self.conn.recv()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()


def run_child(doc: dict[str, Any], out: Path) -> dict[str, float]:
    """Run one download in a fresh interpreter; its peak RSS (MiB), seconds and counts."""
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps({"doc": doc, "out": str(out)})],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"child download failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.splitlines()[-1])


def child(spec: str) -> None:
    """Subprocess body: run the download described by ``spec``; print peak RSS, time and counts as JSON."""
    job = json.loads(spec)
    params = from_mapping(DownloadParams, job["doc"], key="download")
    start = time.perf_counter()
    summary = run_download(params, job["out"])
    seconds = time.perf_counter() - start
    print(json.dumps({"rss_mib": peak_rss_mib(), "seconds": seconds, **summary.counts}))


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: VmHWM of its own address space where Linux has it.

    Not ``ru_maxrss``: Linux carries that over from the parent across fork + exec, so a child of
    a parent holding a big archive in memory would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; macOS: bytes (then / 1024**2)


def memory(args: argparse.Namespace) -> None:
    """The memory part: peak RSS of xyz downloads at each planned tile count, and the ratio."""
    peaks = {}
    with ServerProcess(tile_bodies(crop=64)) as srv, tempfile.TemporaryDirectory(prefix="download_bench_") as tmp:
        for n in args.memory_tiles:
            doc = xyz_doc(srv.url, n, args.concurrency)
            res = run_child(doc, Path(tmp) / f"out{n}")
            peaks[n] = res["rss_mib"]
            print(f"| xyz, {doc['xyz']['max_tiles']} planned tiles ({res['ok']} ok, {res['failed']} failed) | "
                  f"peak RSS {res['rss_mib']:.1f} MiB | {res['seconds']:.1f} s |", flush=True)
    lo, hi = min(peaks), max(peaks)
    print(f"peak RSS ratio {hi} / {lo} tiles: {peaks[hi] / peaks[lo]:.2f}x (goal <= 1.2x)")


def make_archive(path: Path, megabytes: float) -> str:
    """Write a zip of real tiles (RSSCN7 images re-encoded as PNG, cycled) of about ``megabytes`` MB; its sha256."""
    files = sorted(RSSCN7.rglob("*.jpg"))
    if not files:
        sys.exit(f"no RSSCN7 images under {RSSCN7} (see ../shared/data/README.md)")
    target = int(megabytes * 1e6)
    k = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        while path.stat().st_size < target:
            with Image.open(files[k % len(files)]) as im:
                buf = io.BytesIO()
                im.rotate(90 * (k // len(files) % 4)).save(buf, format="PNG")  # new bytes each cycle
            zf.writestr(f"tiles/{k:05d}.png", buf.getvalue())
            k += 1
    return hashlib.sha256(path.read_bytes()).hexdigest()


def archive(args: argparse.Namespace) -> None:
    """The archive part: peak RSS fetching and extracting a ~``--archive-mb`` MB zip over loopback HTTP."""
    with tempfile.TemporaryDirectory(prefix="download_bench_") as tmp:
        zpath = Path(tmp) / "tiles.zip"
        sha = make_archive(zpath, args.archive_mb)
        size = zpath.stat().st_size
        with ServerProcess([zpath.read_bytes()], content_type="application/zip") as srv:
            doc = read_params_file(REPO / "params.yaml")["download"]
            doc["source"] = "archive"
            doc["archive"].update(location=srv.url.format(z=0, x=0, y=0), sha256=sha)
            res = run_child(doc, Path(tmp) / "out")
    print(f"| archive over loopback HTTP, {size / 1e6:.1f} MB zip ({res['ok']} members) | "
          f"peak RSS {res['rss_mib']:.1f} MiB | {res['seconds']:.1f} s |")


def main() -> None:
    """Parse the arguments and run the chosen part."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("throughput", "pooling", "memory", "archive"), default="throughput")
    ap.add_argument("--tiles", type=int, default=400, help="throughput: tiles to fetch (a square-ish bbox)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.05, help="throughput: server latency per tile, seconds")
    ap.add_argument("--repeats", type=int, default=3, help="pooling: runs of each variant (the median is shown)")
    ap.add_argument("--memory-tiles", type=int, nargs="+", default=[1000, 10000], help="memory: planned tile counts")
    ap.add_argument("--archive-mb", type=float, default=60.0, help="archive: size of the zip, MB")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child)
    print(f"# download bench ({args.part}): {platform.machine()}, {multiprocessing.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}", flush=True)
    {"throughput": throughput, "pooling": pooling, "memory": memory, "archive": archive}[args.part](args)


if __name__ == "__main__":
    main()
