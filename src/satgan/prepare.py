"""Stage 3, prepare: accepted tiles -> memory-mapped (N, C, H, W) arrays in [-1, 1].

Reads ``<validated>/accepted.csv`` (and the raw files it lists) and writes to ``<out>``:

- ``tiles.npy`` + ``tiles.json``: the training tiles; ``holdout.npy`` + ``holdout.json``: real
  tiles held out to certify the model (evaluate); with ``validation_fraction`` > 0,
  ``validation.npy`` + ``validation.json``: real tiles for choosing recipes (bench/quality_bench.py),
  apart from the held-out ones. All split before any training exists by :mod:`satgan.split`
  (pairwise-disjoint tiles in spatial blocks with a margin where tiles have positions, else a
  seeded shuffle). When every tile has a position, each sidecar lists per row its box
  (``boxes``: ``[scene, x0, y0, x1, y1]`` in source pixels, :data:`satgan.names.SIDECAR_BOXES`),
  so evaluation can keep tiles that share pixels together;
- ``preview.png``: a grid of the first prepared training tiles.
- labelled data only (accepted.csv has a ``label`` column, from ``download.labels``):
  ``labels.npy``, ``holdout_labels.npy`` (and ``validation_labels.npy``), int64 class indices aligned
  row for row with ``tiles.npy``, ``holdout.npy`` (and ``validation.npy``); the sidecars name the classes (``classes``, index order:
  sorted names) and count each split's tiles per class (``class_counts``). The random holdout
  and validation splits are then stratified by class, and a class too small to give every split a
  tile stops the stage naming it. Without labels neither file is written (and a stale one is removed).

The arrays follow :mod:`satgan.arrays` (open them with :func:`satgan.arrays.open_prepared`).
Tiles are decoded through :func:`satgan.imageops.decode_pixels` (as validate did), or for
8-bit RGB JPEGs at a reduced DCT scale (:func:`satgan.imageops.decode_jpeg_reduced`), on a
process pool, ``chunk_size`` at a time. Each worker writes its slice straight into the shared
memory-mapped output and returns only a histogram, so no pixels cross processes and peak
memory depends on the chunk size, not on the number of tiles.

Prepare reads only inside its inputs: every accepted.csv path must stay inside ``<raw>``, and
raw files are opened only when they are regular files, never through a symlink. Every output
is written to a temp file and all of them replace the previous ones together at the end, so a run
that fails (a tile gone or changed since validate) leaves the previous dataset whole.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import io
import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from satgan import imageops as ops
from satgan import names
from satgan.arrays import write_array_with_sidecar
from satgan.errors import DataError
from satgan.fsutil import AtomicGroup, UnsafePath, atomic_group, open_regular, read_regular, safe_join, sha256_bytes
from satgan.params import check
from satgan.provenance import describe as describe_provenance
from satgan.split import Position, Split, SplitMode, read_manifest_sources, split_tiles, tile_position

PREVIEW_TILES = 64  # tiles shown in preview.png (8 x 8)
MAX_CHUNK = 1 << 20  # tiles per chunk: far past any memory budget, low enough to stay a sane number
MAX_WORKERS = 256  # decode processes
# The smallest dataset worth training and evaluating, checked after the holdout split (which may
# drop tiles) and before anything is written, so a too-small area stops here, not after training.
# Held out: with 5 tiles the judge (evaluate.judge.test_fraction 0.5) is scored on 2 + 2 tiles,
# where even a perfect judge has p = 1/16 > 0.05; 6 give 3 + 3 and p = 1/64. Training: fewer than
# 32 tiles is under half of one default batch (train.batch_size 64, drawn with replacement), so
# every batch repeats each tile and the model can only learn those few tiles by heart.
# The validation set (when asked for) is judged the same way, so it has the held-out minimum too.
MIN_HOLDOUT_TILES = 6
MIN_TRAIN_TILES = 32


@dataclass(frozen=True)
class PrepareParams:
    """The ``prepare`` section of params.yaml."""

    image_size: Literal[32, 64, 128]
    dtype: Literal["float16", "float32"]
    holdout_fraction: float
    seed: int
    chunk_size: int
    workers: int
    holdout_split: SplitMode
    holdout_margin_px: int
    holdout_blocks: int
    validation_fraction: float

    def __post_init__(self) -> None:
        check("holdout_fraction", 0 < self.holdout_fraction <= 0.5,
              "a fraction in (0, 0.5] (evaluation needs held-out real tiles)", self.holdout_fraction)
        check("validation_fraction", 0 <= self.validation_fraction <= 0.5,
              "a fraction in [0, 0.5] (0 = no validation split)", self.validation_fraction)
        check("validation_fraction", self.holdout_fraction + self.validation_fraction < 1,
              f"less than 1 - holdout_fraction ({1 - self.holdout_fraction:g}): training needs tiles too",
              self.validation_fraction)
        check("seed", 0 <= self.seed < 2**63, "an integer in 0..2**63-1", self.seed)
        check("chunk_size", 1 <= self.chunk_size <= MAX_CHUNK, f"1..{MAX_CHUNK}", self.chunk_size)
        check("workers", 1 <= self.workers <= MAX_WORKERS, f"1..{MAX_WORKERS}", self.workers)
        check("holdout_margin_px", 0 <= self.holdout_margin_px <= 1 << 20, "an integer >= 0 (at most 2**20)", self.holdout_margin_px)
        check("holdout_blocks", 1 <= self.holdout_blocks <= 4096, "an integer >= 1 (at most 4096)", self.holdout_blocks)


@dataclass(frozen=True)
class PrepareResult:
    """Where prepare wrote what."""

    train: int
    holdout: int
    shape: tuple[int, int, int]
    seconds: float
    validation: int = 0


@dataclass(frozen=True)
class _Accepted:
    """accepted.csv held as parallel lists (not a dict per row) so memory stays small for big N."""

    paths: list[str]
    sha256: list[str]
    widths: list[int]
    heights: list[int]
    modes: list[str]
    channels: int
    max_pixels: int
    csv_sha256: str  # of the bytes parsed, so the sidecars name exactly the accepted.csv used
    labels: list[str] | None = None  # the label column (download.labels), None when accepted.csv has none

    @property
    def class_names(self) -> list[str]:
        """The distinct labels, sorted: a label's class index is its position here."""
        return sorted(set(self.labels or ()))

    def class_indices(self) -> np.ndarray | None:
        """Every row's class index (int64), or None for unlabelled data."""
        if self.labels is None:
            return None
        index = {name: i for i, name in enumerate(self.class_names)}
        return np.array([index[label] for label in self.labels], np.int64)


def read_accepted(path: Path, raw: Path) -> _Accepted:
    """Stream accepted.csv into parallel lists; every row must agree on the channel count.

    Every path must name a file inside ``raw`` (not absolute, no ``..``, not through a symlinked
    folder): accepted.csv is an input like any other, and prepare reads nothing outside its inputs.
    """
    paths, shas, widths, heights, modes, channels, max_pixels = [], [], [], [], [], set(), 1
    labels: list[str] = []
    try:
        with open_regular(path) as fh:
            blob = fh.read()
        text = blob.decode("utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run `dvc repro validate`)") from None
    except (OSError, UnsafePath, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, [])
        need = ("path", "sha256", "width", "height", "mode", "channels")
        if not set(need) <= set(header):
            raise DataError(f"{path}: expected columns {list(need)}, got {header}")
        col = {name: header.index(name) for name in need}
        labelled = "label" in header
        label_col = header.index("label") if labelled else -1
        for line, row in enumerate(reader, start=2):
            try:
                rel = row[col["path"]]
                safe_join(raw, rel)
                paths.append(rel)
                shas.append(row[col["sha256"]])
                widths.append(int(row[col["width"]]))
                heights.append(int(row[col["height"]]))
                modes.append(row[col["mode"]])
                channels.add(int(row[col["channels"]]))
                if labelled:
                    labels.append(row[label_col])
                    if not labels[-1]:
                        raise ValueError("empty label")
            except UnsafePath as exc:
                raise DataError(f"{path}: line {line}: {exc}; prepare reads only files inside {raw}") from None
            except (IndexError, ValueError) as exc:
                raise DataError(f"{path}: line {line}: malformed row {row!r}: {exc}") from None
            max_pixels = max(max_pixels, widths[-1] * heights[-1])
    except csv.Error as exc:
        raise DataError(f"{path}: not a valid CSV: {exc}") from None
    if not paths:
        raise DataError(f"{path}: no accepted tiles to prepare")
    if len(channels) != 1 or not channels <= {1, 3}:
        raise DataError(f"{path}: expected one channel count (1 or 3) for every row, got {sorted(channels)}")
    return _Accepted(paths, shas, widths, heights, modes, channels.pop(), max_pixels, sha256_bytes(blob),
                     labels if labelled else None)


def check_minimum(split: Split, total: int, params: PrepareParams,
                  min_tiles: tuple[int, int] = (MIN_TRAIN_TILES, MIN_HOLDOUT_TILES)) -> None:
    """Stop (DataError) when the split leaves fewer than ``min_tiles`` (training, held-out) tiles.

    The message names the counts, the split rule and the params that change them.
    """
    n_train, n_hold, n_drop = len(split.train), len(split.holdout), len(split.dropped)
    n_val = len(split.validation)
    min_train, min_hold = min_tiles
    val_short = params.validation_fraction > 0 and n_val < min_hold
    if n_train >= min_train and n_hold >= min_hold and not val_short:
        return
    dropped = (f", {n_drop} dropped within prepare.holdout_margin_px={params.holdout_margin_px} of an evaluation tile"
               if n_drop else "")
    validation = f", {n_val} for validation" if params.validation_fraction > 0 else ""
    rule = (f"{split.rule} split, prepare.holdout_fraction={params.holdout_fraction}, "
            f"validation_fraction={params.validation_fraction}"
            + (f", holdout_blocks={params.holdout_blocks}" if split.rule == "spatial-block" else ""))
    raise DataError(
        f"too few tiles to train and evaluate: {total} accepted -> {n_train} training and {n_hold} held out{validation}"
        f"{dropped} ({rule}); need at least {min_train} training tiles (half a default batch) and {min_hold} "
        f"held-out tiles{f' and {min_hold} validation tiles' if params.validation_fraction > 0 else ''} (the fewest "
        f"on which evaluate's judge could reach p < 0.05). Download a "
        f"larger area (download.xyz.bbox, or a smaller download.sample.stride), "
        + ("raise prepare.holdout_fraction, " if n_hold < min_hold else "")
        + ("raise prepare.validation_fraction or set it to 0 (no validation split), " if val_short else "")
        + "or check validate's rejections (data/validated/rejected.csv)"
    )


def tile_positions(raw: Path, acc: _Accepted) -> list[Position | None]:
    """Each accepted tile's position (:func:`satgan.split.tile_position`) from ``raw``/manifest.csv's sources."""
    sources = read_manifest_sources(raw / names.MANIFEST)
    return [tile_position(p, sources.get(p, ""), w, h) for p, w, h in zip(acc.paths, acc.widths, acc.heights)]


def split_holdout(raw: Path, acc: _Accepted, params: PrepareParams,
                  positions: list[Position | None] | None = None) -> Split:
    """The holdout and validation split of the accepted tiles (:mod:`satgan.split`), positioned by manifest.csv."""
    positions = tile_positions(raw, acc) if positions is None else positions
    return split_tiles(positions, params.holdout_fraction, params.seed, params.holdout_split,
                       params.holdout_margin_px, params.holdout_blocks, acc.class_indices(), acc.class_names,
                       params.validation_fraction)


def sidecar_boxes(positions: list[Position | None], rows: np.ndarray) -> dict[str, Any]:
    """``{"boxes": [[scene, x0, y0, x1, y1], ...]}`` for ``rows`` when every tile has a position, else {}.

    All or nothing: a reader either can group every tile by the pixels it shares or knows it cannot.
    """
    if any(p is None for p in positions):
        return {}
    placed = [positions[i] for i in rows]
    return {names.SIDECAR_BOXES: [[p.group, p.x0, p.y0, p.x1, p.y1] for p in placed if p is not None]}


JPEG_SOI = b"\xff\xd8\xff"  # a JPEG file's first bytes


def _load_tile(item: tuple[str, str, int, int, str], raw: Path, channels: int, size: int) -> np.ndarray:
    """Read, check, decode and resize one (path, sha256, width, height, mode) tile -> uint8 (size, size, channels)."""
    rel, sha, width, height, mode = item
    try:
        path = safe_join(raw, rel)  # checked by read_accepted too; again here, as the tree may have changed
        data = read_regular(path)
    except FileNotFoundError:
        raise DataError(f"{raw / rel}: accepted by validate but no longer exists; rerun validate") from None
    except (OSError, UnsafePath) as exc:
        raise DataError(f"{raw / rel}: cannot read: {exc}") from None
    if sha256_bytes(data) != sha:
        raise DataError(f"{path}: changed since validate (sha256 differs from accepted.csv); rerun validate")
    try:
        if channels == 3 and mode == "RGB" and data[:3] == JPEG_SOI:
            # Most tiles servers send: an 8-bit RGB JPEG, which validate already decoded in full.
            # Decoding it at a reduced DCT scale is several times cheaper (imageops docstring).
            pixels = ops.decode_jpeg_reduced(data, width, height, size)
        else:
            pixels = ops.decode_pixels(data, channels)
    except ops.DECODE_ERRORS as exc:
        raise DataError(f"{path}: accepted by validate but no longer decodes: {type(exc).__name__}: {exc}") from None
    return ops.resize_center_crop(pixels, size)


def _prepare_rows(task: tuple[int, list[tuple[str, str, int, int, str]]], npy: Path, raw: Path,
                  channels: int, size: int, lut: np.ndarray) -> np.ndarray:
    """Decode tiles ``items`` into rows ``start:start+len(items)`` of the .npy at ``npy``; returns
    their (channels, 256) uint8 histogram.

    Runs in the worker processes: each writes its own slice of the shared memory-mapped file, so
    no pixel is pickled back to the parent, and normalizing and counting scale with the workers.
    Only one slice (``prepare.chunk_size`` tiles) is in a worker's memory at a time.
    """
    start, items = task
    pixels = np.stack([_load_tile(item, raw, channels, size) for item in items])  # (n, size, size, C) uint8
    hist = np.stack([np.bincount(pixels[..., ch].ravel(), minlength=256) for ch in range(channels)])
    # Map, write, unmap: written pages leave the process instead of piling up in its RSS.
    mm = np.lib.format.open_memmap(npy, mode="r+")
    mm[start:start + len(items)] = lut[pixels.transpose(0, 3, 1, 2)]
    del mm
    return hist


def _write_split(filename: str, rows: np.ndarray, acc: _Accepted, raw: Path, out: Path, params: PrepareParams,
                 pmap: Callable[..., Iterable[np.ndarray]], common: dict[str, Any], progress: bool,
                 group: AtomicGroup, preview: Path | None = None, labels_file: str | None = None,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``<out>/<filename>`` (+ its .json sidecar) from accepted rows ``rows``, one slice per task, into ``group``.

    With ``preview``, also write there a grid of the first :data:`PREVIEW_TILES` tiles. For
    labelled data, ``<out>/<labels_file>`` gets the rows' int64 class indices, in the same order.
    """
    classes = acc.class_indices()
    by_class: dict[str, Any] = {}
    if classes is not None and labels_file is not None:
        with open(group.path(out / labels_file), "wb") as fh:  # a handle: np.save would append .npy to the temp name
            np.save(fh, classes[rows].astype(np.int64), allow_pickle=False)
        counts = np.bincount(classes[rows], minlength=len(acc.class_names))
        by_class = {"classes": acc.class_names, "labels_file": labels_file,
                    "class_counts": {name: int(n) for name, n in zip(acc.class_names, counts)}}
    name = Path(filename).stem  # the split: "tiles", "holdout" or "validation"
    size, c = params.image_size, acc.channels
    shape = (len(rows), c, size, size)
    # uint8 -> stored value as a 256-entry table: the same numbers as imageops.normalize, in one
    # gather per slice, and exact streaming statistics from per-channel histograms of the uint8s.
    lut = ops.normalize(np.arange(256, dtype=np.uint8)[None, :], params.dtype)[0, 0]

    def fill(tmp: Path) -> dict[str, Any]:
        hist = np.zeros((c, 256), np.int64)
        tasks = [
            (start, [(acc.paths[i], acc.sha256[i], acc.widths[i], acc.heights[i], acc.modes[i])
                     for i in rows[start:start + params.chunk_size]])
            for start in range(0, len(rows), params.chunk_size)
        ]
        work = functools.partial(_prepare_rows, npy=tmp, raw=raw, channels=c, size=size, lut=lut)
        with tqdm(total=len(rows), desc=f"prepare {name}", unit="tile", disable=not progress) as bar:
            for (_, items), slice_hist in zip(tasks, pmap(work, tasks)):
                hist += slice_hist
                bar.update(len(items))
        # No fsync: the temp + rename already means a killed run never leaves a partial tiles.npy,
        # and syncing tens of MB to disk would cost more than the rest of a small run.
        if preview is not None:
            head = np.load(tmp, mmap_mode="r")[:PREVIEW_TILES]
            ops.save_grid(np.asarray(head, np.float32), preview, nrow=8)
        values = lut.astype(np.float64)
        counts = np.maximum(hist.sum(axis=1, keepdims=True), 1)
        mean = (hist * values).sum(axis=1) / counts[:, 0]
        std = np.sqrt((hist * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / counts[:, 0])
        return {
            **common,
            "split": name,
            "count": len(rows),
            "mean": [round(float(m), 6) for m in mean],
            "std": [round(float(s), 6) for s in std],
            "rows": [int(i) for i in rows],
            "sources": [acc.paths[i] for i in rows],
            **by_class,
            **(extra or {}),
        }

    return write_array_with_sidecar(out / filename, shape, params.dtype, fill, group)


def _init_worker(limit: int | None) -> None:
    import cv2

    Image.MAX_IMAGE_PIXELS = limit  # this worker process's own copy of Pillow's global
    cv2.setNumThreads(1)  # parallelism comes from the worker processes; nested cv2 threads only contend


@contextlib.contextmanager
def _tile_mapper(params: PrepareParams, limit: int | None) -> Iterator[Callable[..., Iterable[np.ndarray]]]:
    """An order-preserving ``map`` over tiles: in-process for 1 worker, else a forked process pool.

    Processes, not threads: per tile, Pillow's JPEG/PNG header parsing and albumentations' Python
    overhead hold the GIL longer than decoding releases it, so threads barely scale. Forking lets
    workers inherit the already-imported libraries (albumentations alone takes seconds to import).
    """
    if params.workers == 1:
        yield map
        return
    ops.resize_center_crop(np.zeros((params.image_size, params.image_size, 1), np.uint8), params.image_size)
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(params.workers, mp_context=ctx, initializer=_init_worker, initargs=(limit,)) as pool:
        yield lambda fn, tasks: pool.map(fn, tasks)


def prepare(raw: str | Path, validated: str | Path, out: str | Path, params: PrepareParams,
            progress: bool = True, min_tiles: tuple[int, int] = (MIN_TRAIN_TILES, MIN_HOLDOUT_TILES)) -> PrepareResult:
    """Prepare every tile in ``<validated>/accepted.csv`` into ``out`` (see the module docstring).

    ``min_tiles`` (training, held-out) is the smallest split accepted (:func:`check_minimum`); a
    library argument, so tests of other behaviours can run on a handful of tiles.
    """
    t0 = time.perf_counter()
    raw, out = Path(raw), Path(out)
    accepted_csv = Path(validated) / names.ACCEPTED
    acc = read_accepted(accepted_csv, raw)
    positions = tile_positions(raw, acc)
    split = split_holdout(raw, acc, params, positions)
    check_minimum(split, len(acc.paths), params, min_tiles)
    train_rows, hold_rows, val_rows = split.train, split.holdout, split.validation
    common = {
        "dtype": params.dtype,
        "channels": acc.channels,
        "image_size": params.image_size,
        "value_range": [-1.0, 1.0],
        "normalization": "x / 127.5 - 1 of uint8 pixels; resize shortest side (INTER_AREA) + centre crop",
        "accepted_csv_sha256": acc.csv_sha256,
        "seed": params.seed,
        "holdout_fraction": params.holdout_fraction,
        "validation_fraction": params.validation_fraction,
        "total": len(acc.paths),
        "holdout_split": split.record(acc.paths),
        # Where the tiles came from and under which terms (source, area, licence): the model card prints it.
        "provenance": describe_provenance(acc.paths, read_manifest_sources(raw / names.MANIFEST)),
    }
    out.mkdir(parents=True, exist_ok=True)
    # validate already refused bombs, by its own limit; tiles it accepted may still exceed Pillow's
    # default limit, so raise that limit (for this run only) to the largest accepted tile.
    limit = None if Image.MAX_IMAGE_PIXELS is None else max(acc.max_pixels, Image.MAX_IMAGE_PIXELS)
    # The outputs are one dataset: they replace the previous ones together at the end, so a
    # run that fails half way (a tile gone, a decode error) leaves the previous dataset whole.
    # A full disk: the arrays' blocks are reserved before any row is written (satgan.arrays.reserve_blocks, one
    # line naming the array); the small files (labels, preview) fail on write; either way the temp files go.
    try:
        with ops.pixel_limit(limit), _tile_mapper(params, limit) as pmap, atomic_group() as group:
            preview = group.path(out / names.PREVIEW, suffix=".png")
            _write_split(names.TRAIN_TILES, train_rows, acc, raw, out, params, pmap, common, progress, group, preview,
                         labels_file=names.TRAIN_LABELS, extra=sidecar_boxes(positions, train_rows))
            _write_split(names.HOLDOUT_TILES, hold_rows, acc, raw, out, params, pmap, common, progress, group,
                         labels_file=names.HOLDOUT_LABELS, extra=sidecar_boxes(positions, hold_rows))
            if len(val_rows):
                _write_split(names.VALIDATION_TILES, val_rows, acc, raw, out, params, pmap, common, progress, group,
                             labels_file=names.VALIDATION_LABELS, extra=sidecar_boxes(positions, val_rows))
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DataError(f"{out}: cannot write the prepared dataset ({exc.strerror}); the previous one is kept: "
                        "free space and rerun") from None
    # Files an earlier run wrote that this one does not would misdescribe the dataset: no validation
    # split now (validation_fraction 0), or unlabelled tiles now.
    stale = [] if len(val_rows) else [names.VALIDATION_TILES, str(Path(names.VALIDATION_TILES).with_suffix(".json")),
                                      names.VALIDATION_LABELS]
    if acc.labels is None:
        stale += [names.TRAIN_LABELS, names.HOLDOUT_LABELS, names.VALIDATION_LABELS]
    for name in stale:
        (out / name).unlink(missing_ok=True)
    return PrepareResult(train=len(train_rows), holdout=len(hold_rows),
                         shape=(acc.channels, params.image_size, params.image_size),
                         seconds=time.perf_counter() - t0, validation=len(val_rows))
