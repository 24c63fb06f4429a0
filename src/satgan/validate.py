"""Stage 2, validate: decide for every downloaded tile whether it is fit to train on.

Reads ``<raw>/manifest.csv`` (rows whose ``status`` is ``ok`` or ``resumed``) and writes to ``<out>``:

- ``accepted.csv``: path, sha256, width, height, mode, channels, action (manifest order), and
  label when the manifest has a label column (download.labels);
- ``rejected.csv``: path, reason, detail; every ok-row is in exactly one of the two files;
- ``report.json``: flat counts (DVC metrics) per rejection reason;
- ``rejected.png``: a contact sheet of rejected tiles labelled with their reasons.

A bad image is data, not an exception: it becomes a rejected row with a reason from
:data:`REASONS`. Raw files are only read, never modified, and only inside ``<raw>``: a manifest
path that is absolute, holds ``..``, resolves outside (through a symlinked folder), is itself a
symlink or is not a regular file (a FIFO, a device) is rejected as ``unsafe_path`` unread. The
four outputs replace the previous ones together. Zero accepted tiles is a
:class:`~satgan.errors.DataError` (after the CSVs and report are written, to show why).

Decoding runs on ``workers`` forked processes (1 = in this process), ``CHUNK`` tiles per task,
results taken in manifest order, so the four outputs are byte-identical for any worker count.
A worker process that dies (a decoder crash, the OOM killer) loses no row and does not stop the
stage: the tiles it may have held are checked again one at a time, each in a process of its
own, and a tile that kills that process too is rejected as ``crashed``.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import hashlib
import json
import multiprocessing
import os
import signal
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError
from tqdm import tqdm

from satgan import imageops as ops
from satgan import names
from satgan.errors import DataError, one_line
from satgan.fsutil import UnsafePath, atomic_group, open_regular, read_csv, read_regular, safe_join, write_csv
from satgan.params import check

#: Manifest statuses of files on disk: `resumed` is a tile kept (sha256-verified) from an earlier
#: interrupted download, as usable as one fetched in this run; every other status has no file.
USABLE_STATUSES = ("ok", "resumed")
ACCEPTED_FIELDS = ("path", "sha256", "width", "height", "mode", "channels", "action")
REJECTED_FIELDS = ("path", "reason", "detail")
LABEL = "label"  # the optional last column of manifest.csv and accepted.csv: the tile's class
#: Every reason a tile can be rejected for, in the order the checks run.
REASONS = (
    "unsafe_path", "missing", "empty", "checksum", "placeholder", "duplicate", "unreadable", "truncated", "bomb",
    "unsupported", "crashed", "too_small", "grayscale", "nodata", "low_contrast", "cloudy",
)
SHEET_MAX = 64  # rejected tiles shown on the contact sheet; the CSV has them all
THUMB = 64
# Upper bounds of the params: far past any real tile, low enough that nothing overflows.
MAX_SIDE = 1 << 20
MAX_PIXELS = 1 << 40
MAX_COUNT = 1 << 31
MAX_WORKERS = 256  # decode processes
CHUNK = 16  # tiles per pool task: amortises the inter-process round trip; small enough to balance the tail


@dataclass(frozen=True)
class ValidateParams:
    """The ``validate`` section of params.yaml."""

    grayscale: Literal["drop", "convert", "keep"]
    gray_tolerance: int
    min_size: int
    max_image_pixels: int
    max_nodata_fraction: float
    low_contrast_fraction: float
    min_entropy: float
    placeholder_repeats: int
    max_cloud_fraction: float | None
    cloud_brightness: int
    workers: int

    def __post_init__(self) -> None:
        check("gray_tolerance", 0 <= self.gray_tolerance <= 255, "0..255", self.gray_tolerance)
        check("min_size", 1 <= self.min_size <= MAX_SIDE, f"1..{MAX_SIDE}", self.min_size)
        check("max_image_pixels", self.min_size**2 <= self.max_image_pixels <= MAX_PIXELS,
              f"min_size**2 ({self.min_size**2})..{MAX_PIXELS}", self.max_image_pixels)
        check("max_nodata_fraction", 0 <= self.max_nodata_fraction <= 1, "0..1", self.max_nodata_fraction)
        check("low_contrast_fraction", 0 <= self.low_contrast_fraction <= 1, "0..1", self.low_contrast_fraction)
        check("min_entropy", 0 <= self.min_entropy <= 8, "0..8 bits", self.min_entropy)
        check("placeholder_repeats", 1 <= self.placeholder_repeats <= MAX_COUNT, f"1..{MAX_COUNT}",
              self.placeholder_repeats)
        check("max_cloud_fraction", self.max_cloud_fraction is None or 0 <= self.max_cloud_fraction <= 1,
              "null or 0..1", self.max_cloud_fraction)
        check("cloud_brightness", 0 <= self.cloud_brightness <= 255, "0..255", self.cloud_brightness)
        check("workers", 1 <= self.workers <= MAX_WORKERS, f"1..{MAX_WORKERS}", self.workers)


@dataclass(frozen=True)
class ValidateResult:
    """What validate decided: counts, and the report written to report.json."""

    accepted: int
    rejected: int
    report: dict[str, int]


class _Reject(Exception):
    """Internal: a tile failed a check (never escapes this module)."""

    def __init__(self, reason: str, detail: str, thumb: np.ndarray | None = None) -> None:
        detail = one_line(detail)  # a CSV cell: library messages may span lines
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.thumb = reason, detail, thumb

    def __reduce__(self) -> tuple[Any, ...]:
        # Workers send verdicts back pickled; the default would call __init__ with the message only.
        return (_Reject, (self.reason, self.detail, self.thumb))


#: What a tile's checks decide: the accepted row's fields, or the rejection.
Verdict = dict[str, Any] | _Reject


def _thumb(pixels: np.ndarray) -> np.ndarray | None:
    if 0 in pixels.shape[:2]:  # nothing to show (a 0-pixel-wide image): the sheet draws a grey box
        return None
    rgb = ops.to_channels(pixels, 3)
    return np.asarray(Image.fromarray(rgb).resize((THUMB, THUMB), Image.Resampling.BOX))


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def decode_checked(data: bytes, max_image_pixels: int) -> ops.Decoded:
    """Every step that parses the untrusted bytes, under one guard: the decoded tile or _Reject.

    Opening (only :data:`satgan.imageops.FORMATS`), the pixel-count check, the TIFF structure
    check and the decode itself all run here, so whatever a crafted header or tag makes Pillow
    or tifffile raise (:data:`satgan.imageops.DECODE_ERRORS`) is a rejection with its reason.
    """
    try:
        img = ops.identify(data)
    except Image.DecompressionBombError as exc:
        raise _Reject("bomb", str(exc)) from None
    except UnidentifiedImageError:
        raise _Reject("unreadable", f"not a {'/'.join(ops.FORMATS)} image ({len(data)} bytes)") from None
    except ops.DECODE_ERRORS as exc:
        raise _Reject("unreadable", _failure(exc)) from None
    with img:
        try:
            w, h = img.size
            if w * h > max_image_pixels:
                raise _Reject("bomb", f"{w}x{h} = {w * h} pixels > max_image_pixels {max_image_pixels}")
            problem = ops.tiff_problem(img)
        except ops.DECODE_ERRORS as exc:
            raise _Reject("unsupported", f"{img.format}: {_failure(exc)}") from None
        if problem:
            raise _Reject("unsupported", problem)
        try:
            return ops.decode_image(img, data)
        except Image.DecompressionBombError as exc:
            raise _Reject("bomb", str(exc)) from None
        except OSError as exc:
            raise _Reject("truncated", f"{img.format} {w}x{h}: {exc}") from None
        except ops.DECODE_ERRORS as exc:
            raise _Reject("unsupported", f"{img.format} {img.mode}: {_failure(exc)}") from None


def inspect_bytes(data: bytes, params: ValidateParams) -> dict[str, Any]:
    """Decode ``data`` and run the per-tile checks; returns accepted-row fields or raises _Reject."""
    decoded = decode_checked(data, params.max_image_pixels)
    arr, mode = decoded.pixels, decoded.mode
    h, w = arr.shape[:2]
    if min(w, h) < params.min_size:
        raise _Reject("too_small", f"{w}x{h} < min_size {params.min_size}", _thumb(arr))
    gray = arr.ndim == 2 or ops.is_content_gray(arr, params.gray_tolerance)
    if gray and params.grayscale == "drop":
        why = f"mode {mode}" if arr.ndim == 2 else f"{mode} with R=G=B within {params.gray_tolerance}"
        raise _Reject("grayscale", f"{why} (validate.grayscale: drop)", _thumb(arr))
    channels = 1 if params.grayscale == "keep" else 3
    pixels = ops.to_channels(arr, channels)
    nodata = ops.nodata_fraction(pixels)
    if nodata > params.max_nodata_fraction:
        raise _Reject("nodata", f"{nodata:.1%} pure black/white > {params.max_nodata_fraction:.0%}", _thumb(pixels))
    ent = ops.entropy(pixels)
    if ent < params.min_entropy or ops.is_low_contrast(pixels, params.low_contrast_fraction):
        raise _Reject("low_contrast", f"entropy {ent:.2f} bits (min {params.min_entropy})", _thumb(pixels))
    if params.max_cloud_fraction is not None:
        bright = ops.bright_fraction(pixels, params.cloud_brightness)
        if bright > params.max_cloud_fraction:
            raise _Reject("cloudy", f"{bright:.1%} of pixels >= {params.cloud_brightness}", _thumb(pixels))
    steps = []
    if decoded.stretched:
        steps.append("stretch")
    if channels == 3 and arr.ndim == 2:
        steps.append("gray_to_rgb")
    elif channels == 1 and mode != "L":
        steps.append("to_luminance")
    elif channels == 3 and mode != "RGB":
        steps.append("to_rgb")
    return {"width": w, "height": h, "mode": mode, "channels": channels, "action": "+".join(steps) or "as_is"}


def raw_file(raw: Path, relpath: str) -> Path:
    """The file a manifest row names, or _Reject("unsafe_path") when it is not inside ``raw``."""
    try:
        return safe_join(raw, relpath)
    except UnsafePath as exc:
        raise _Reject("unsafe_path", f"{exc} (only files inside the raw folder {raw} are read)") from None


def hash_raw_file(path: Path) -> str:
    """sha256 of a raw tile, or _Reject: missing, empty, a symlink or a special file."""
    try:
        with open_regular(path) as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise _Reject("empty", "0-byte file")
            digest = hashlib.sha256()
            while block := fh.read(1 << 20):
                digest.update(block)
    except FileNotFoundError:
        raise _Reject("missing", f"{path} is listed as ok but does not exist") from None
    except UnsafePath as exc:
        raise _Reject("unsafe_path", str(exc)) from None
    except OSError as exc:
        raise _Reject("unreadable", f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _read_manifest(raw: Path) -> list[dict[str, str]]:
    manifest = raw / names.MANIFEST
    try:
        rows = read_csv(manifest)
    except FileNotFoundError:
        raise DataError(f"{manifest}: manifest not found (run `dvc repro download`)") from None
    except (OSError, UnsafePath, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{manifest}: cannot read the manifest: {exc}") from None
    if rows and not {"path", "status"} <= set(rows[0]):
        raise DataError(f"{manifest}: expected columns path and status, got {sorted(map(str, rows[0]))}")
    ok = [r for r in rows if r["status"] in USABLE_STATUSES]
    if not ok:
        raise DataError(f"{manifest}: no rows with status {' or '.join(USABLE_STATUSES)} ({len(rows)} rows in all)")
    return ok


def validate(raw: str | Path, out: str | Path, params: ValidateParams, progress: bool = True) -> ValidateResult:
    """Validate every usable row of ``<raw>/manifest.csv`` and write the outputs under ``out``."""
    raw, out = Path(raw), Path(out)
    rows = _read_manifest(raw)
    verdicts: list[dict[str, Any] | _Reject | None] = [None] * len(rows)
    hashes: list[str | None] = [None] * len(rows)
    paths: list[Path | None] = [None] * len(rows)
    # Pass 1: path, existence, size, checksum and hash, so duplicates and placeholders skip decoding.
    for i, row in enumerate(rows):
        try:
            paths[i] = raw_file(raw, row["path"] or "")
            hashes[i] = hash_raw_file(paths[i])
        except _Reject as rej:
            verdicts[i] = rej
            continue
        # A manifest without a sha256 (an empty cell) has nothing to check against.
        expected = row["sha256"] if "sha256" in row and row["sha256"] else hashes[i]
        if expected != hashes[i]:
            verdicts[i] = _Reject("checksum", f"sha256 {hashes[i][:12]} != manifest {expected[:12]}")
    counts = collections.Counter(h for h, v in zip(hashes, verdicts) if h and v is None)
    first: dict[str, str] = {}
    for i, h in enumerate(hashes):
        if h is None or verdicts[i] is not None:
            continue
        if counts[h] > params.placeholder_repeats:
            verdicts[i] = _Reject("placeholder", f"same bytes as {counts[h]} tiles (> placeholder_repeats {params.placeholder_repeats})")
        elif h in first:
            verdicts[i] = _Reject("duplicate", f"same bytes as {first[h]}")
        else:
            first[h] = rows[i]["path"]

    # Pass 2: decode the survivors, on worker processes unless workers is 1.
    todo = [i for i, v in enumerate(verdicts) if v is None]
    todo_paths = [paths[i] for i in todo]  # pass 1 checked each is inside raw
    with ops.pixel_limit(params.max_image_pixels), warnings.catch_warnings():
        # Tiles over the limit are rejected by our own size check; Pillow's warning would be noise.
        # Forked workers inherit both the limit and this filter.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with tqdm(total=len(todo), desc="validate", unit="tile", disable=not progress) as bar, \
                contextlib.closing(_decode_all(todo_paths, params, bar)) as decided:  # type: ignore[arg-type]
            shown = 0
            for i in range(len(rows)):
                if verdicts[i] is None:
                    verdicts[i] = next(decided)
                if isinstance(verdicts[i], _Reject):
                    # Only the first SHEET_MAX rejections are drawn: drop the other thumbnails at
                    # once, so memory does not grow with the number of rejected tiles.
                    if shown >= SHEET_MAX:
                        verdicts[i].thumb = None  # type: ignore[union-attr]
                    shown += 1
            assert next(decided, None) is None, "validate: more verdicts than tiles (a bug)"
    return _write_outputs(out, rows, hashes, verdicts)


def check_tile(path: Path, params: ValidateParams) -> Verdict:
    """Read and inspect one raw tile (already confined to the raw folder by pass 1): its verdict."""
    try:
        data = read_regular(path)
    except (OSError, UnsafePath) as exc:  # changed since pass 1
        return _Reject("missing", f"cannot read {path} any more: {exc}")
    try:
        return inspect_bytes(data, params)
    except _Reject as rej:
        return rej


def _check_chunk(paths: list[Path], params: ValidateParams) -> list[Verdict]:
    """One pool task: the verdicts of ``paths``, in order (runs in a worker process)."""
    return [check_tile(path, params) for path in paths]


def _decode_all(paths: list[Path], params: ValidateParams, bar: tqdm) -> Iterator[Verdict]:
    """The verdict of every path, in order: in this process for 1 worker, else on a forked process pool.

    Processes, not threads: per tile, Pillow's header parsing and the numpy checks on small
    arrays hold the GIL far longer than decoding releases it, so threads ran no faster than one.
    Forking lets workers inherit the imported libraries, the pixel limit and the warning filter.
    At most ``2 * workers`` chunks are in flight, so memory does not grow with the tile count.
    """
    if params.workers == 1 or len(paths) <= CHUNK:  # one task's worth: a pool would only add its start-up
        for path in paths:
            yield check_tile(path, params)
            bar.update()
        return
    ctx = multiprocessing.get_context("fork")
    chunks = [paths[start:start + CHUNK] for start in range(0, len(paths), CHUNK)]
    window = 2 * params.workers
    pending: collections.deque[tuple[list[Path], Future[list[Verdict]]]] = collections.deque()
    submitted = 0
    pool = ProcessPoolExecutor(params.workers, mp_context=ctx)
    try:
        while pending or submitted < len(chunks):
            while submitted < len(chunks) and len(pending) < window:
                pending.append((chunks[submitted], pool.submit(_check_chunk, chunks[submitted], params)))
                submitted += 1
            chunk, future = pending[0]
            try:
                results = future.result()
            except BrokenProcessPool:
                # A worker died: every task not finished is suspect. Finished ones keep their
                # results; the others are checked again one tile at a time, each in a process of
                # its own, so the tile that kills its process is found and rejected, not lost.
                pool.shutdown(wait=True, cancel_futures=True)
                for chunk, future in pending:
                    done = future.done() and not future.cancelled() and future.exception() is None
                    yield from (future.result() if done else (_isolated(path, params, ctx) for path in chunk))
                    bar.update(len(chunk))
                pending.clear()
                pool = ProcessPoolExecutor(params.workers, mp_context=ctx)
                continue
            pending.popleft()
            yield from results
            bar.update(len(chunk))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _isolated_child(conn: Any, path: Path, params: ValidateParams) -> None:
    conn.send(check_tile(path, params))
    conn.close()


def _isolated(path: Path, params: ValidateParams, ctx: Any) -> Verdict:
    """Check one tile in a process of its own: its verdict, or ``crashed`` when that process dies."""
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_isolated_child, args=(send, path, params), daemon=True)
    proc.start()
    send.close()
    try:
        verdict: Verdict | None = recv.recv()
    except EOFError:  # the process died before sending its verdict
        verdict = None
    finally:
        recv.close()
        proc.join()
    if verdict is None:
        return _Reject("crashed", f"decoding it killed the worker process ({_exit_reason(proc.exitcode)})")
    return verdict


def _exit_reason(code: int | None) -> str:
    """A worker process's exit code in words: 'signal SIGSEGV' or 'exit code 3'."""
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _write_outputs(out: Path, rows: list[dict[str, str]], hashes: list[str | None],
                   verdicts: list[dict[str, Any] | _Reject | None]) -> ValidateResult:
    accepted, rejected, sheet = [], [], []
    labelled = bool(rows) and LABEL in rows[0]  # download.labels: the label travels with the tile
    for row, h, v in zip(rows, hashes, verdicts):
        if isinstance(v, _Reject):
            rejected.append({"path": row["path"], "reason": v.reason, "detail": v.detail})
            if len(sheet) < SHEET_MAX:
                sheet.append((row["path"], v))
        else:
            assert v is not None, f"{row['path']}: no verdict (a bug in validate)"
            accepted.append({"path": row["path"], "sha256": h, **v, **({LABEL: row[LABEL]} if labelled else {})})
    assert len(accepted) + len(rejected) == len(rows)
    by_reason = collections.Counter(r["reason"] for r in rejected)
    report = {"total": len(rows), "accepted": len(accepted), "rejected": len(rejected),
              **{f"rejected_{reason}": by_reason[reason] for reason in REASONS}}
    # The four files are one result: they replace the previous ones together, or not at all.
    with atomic_group() as group:
        write_csv(group.path(out / names.ACCEPTED), accepted, ACCEPTED_FIELDS + ((LABEL,) if labelled else ()))
        write_csv(group.path(out / names.REJECTED), rejected, REJECTED_FIELDS)
        group.path(out / names.VALIDATE_REPORT).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        write_contact_sheet(group.path(out / names.REJECTED_SHEET, suffix=".png"), sheet)
    if not accepted:
        top = ", ".join(f"{k} {n}" for k, n in by_reason.most_common(3))
        raise DataError(f"validate accepted 0 of {len(rows)} tiles ({top}); see {out / names.REJECTED}")
    return ValidateResult(accepted=len(accepted), rejected=len(rejected), report=report)


def write_contact_sheet(path: Path, items: list[tuple[str, _Reject]], ncol: int = 8) -> None:
    """Write to ``path`` a PNG grid of rejected tiles (grey box when undecodable) captioned with their reason."""
    cell_w, cell_h = THUMB + 40, THUMB + 26
    n = max(len(items), 1)
    cols = min(ncol, n)
    sheet = Image.new("RGB", (cols * cell_w, ((n + cols - 1) // cols) * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if not items:
        draw.text((4, 4), "no rejected tiles", fill=(0, 0, 0))
    for k, (name, rej) in enumerate(items):
        x, y = (k % cols) * cell_w + 20, (k // cols) * cell_h + 2
        if rej.thumb is not None:
            sheet.paste(Image.fromarray(rej.thumb), (x, y))
        else:
            draw.rectangle((x, y, x + THUMB - 1, y + THUMB - 1), fill=(128, 128, 128))
        draw.text((x - 18, y + THUMB + 1), rej.reason, fill=(200, 0, 0))
        draw.text((x - 18, y + THUMB + 12), Path(name).name[:16], fill=(0, 0, 0))
    sheet.save(path, format="PNG")
