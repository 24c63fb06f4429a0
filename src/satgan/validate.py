"""Stage 2, validate: decide for every downloaded tile whether it is fit to train on.

Reads ``<raw>/manifest.csv`` (rows whose ``status`` is ``ok`` or ``resumed``) and writes to ``<out>``:

- ``accepted.csv``: path, sha256, width, height, mode, channels, action (manifest order);
- ``rejected.csv``: path, reason, detail; every ok-row is in exactly one of the two files;
- ``report.json``: flat counts (DVC metrics) per rejection reason;
- ``rejected.png``: a contact sheet of rejected tiles labelled with their reasons.

A bad image is data, not an exception: it becomes a rejected row with a reason from
:data:`REASONS`. Raw files are only read, never modified. Zero accepted tiles is a
:class:`~satgan.errors.DataError` (after the CSVs and report are written, to show why).
"""

from __future__ import annotations

import collections
import io
import json
import os
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError
from tqdm import tqdm

from satgan import imageops as ops
from satgan.errors import DataError
from satgan.fsutil import atomic_path, read_csv, sha256_file, write_csv_atomic, write_json_atomic
from satgan.params import InvalidParam

#: Manifest statuses of files on disk: `resumed` is a tile kept (sha256-verified) from an earlier
#: interrupted download, as usable as one fetched in this run; every other status has no file.
USABLE_STATUSES = ("ok", "resumed")
ACCEPTED_FIELDS = ("path", "sha256", "width", "height", "mode", "channels", "action")
REJECTED_FIELDS = ("path", "reason", "detail")
#: Every reason a tile can be rejected for, in the order the checks run.
REASONS = (
    "missing", "empty", "checksum", "placeholder", "duplicate", "unreadable", "truncated", "bomb",
    "unsupported", "too_small", "grayscale", "nodata", "low_contrast", "cloudy",
)
SHEET_MAX = 64  # rejected tiles shown on the contact sheet; the CSV has them all
THUMB = 64


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

    def __post_init__(self) -> None:
        if not 0 <= self.gray_tolerance <= 255:
            raise InvalidParam("gray_tolerance", f"must be within 0..255, got {self.gray_tolerance}")
        if self.min_size < 1:
            raise InvalidParam("min_size", f"must be >= 1, got {self.min_size}")
        if self.max_image_pixels < self.min_size**2:
            raise InvalidParam("max_image_pixels", f"must be >= min_size**2 ({self.min_size**2}), got {self.max_image_pixels}")
        if not 0 <= self.max_nodata_fraction <= 1:
            raise InvalidParam("max_nodata_fraction", f"must be within 0..1, got {self.max_nodata_fraction}")
        if not 0 <= self.low_contrast_fraction <= 1:
            raise InvalidParam("low_contrast_fraction", f"must be within 0..1, got {self.low_contrast_fraction}")
        if not 0 <= self.min_entropy <= 8:
            raise InvalidParam("min_entropy", f"must be within 0..8 bits, got {self.min_entropy}")
        if self.placeholder_repeats < 1:
            raise InvalidParam("placeholder_repeats", f"must be >= 1, got {self.placeholder_repeats}")
        if self.max_cloud_fraction is not None and not 0 <= self.max_cloud_fraction <= 1:
            raise InvalidParam("max_cloud_fraction", f"must be null or within 0..1, got {self.max_cloud_fraction}")
        if not 0 <= self.cloud_brightness <= 255:
            raise InvalidParam("cloud_brightness", f"must be within 0..255, got {self.cloud_brightness}")


@dataclass(frozen=True)
class ValidateResult:
    """What validate decided: counts, and the report written to report.json."""

    accepted: int
    rejected: int
    report: dict[str, int]


class _Reject(Exception):
    """Internal: a tile failed a check (never escapes this module)."""

    def __init__(self, reason: str, detail: str, thumb: np.ndarray | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.thumb = reason, detail, thumb


# What Pillow raises on undecodable bytes: each becomes a rejection row, anything else is a bug.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError)


def _thumb(pixels: np.ndarray) -> np.ndarray:
    rgb = ops.to_channels(pixels, 3)
    return np.asarray(Image.fromarray(rgb).resize((THUMB, THUMB), Image.Resampling.BOX))


def _multiband_tiff_detail(img: Image.Image) -> str | None:
    """Pillow reads some multi-band TIFFs (e.g. tifffile's 7-band) as a wrong-shaped 1-band image."""
    if img.format != "TIFF":
        return None
    tags = getattr(img, "tag_v2", {})
    samples = tags[277] if 277 in tags else 1  # SamplesPerPixel; TIFF's default is 1
    if samples > 4:
        return f"TIFF has {samples} samples per pixel; only 1-4 band images are supported"
    try:
        described = json.loads(str(tags[270])) if 270 in tags else None
    except json.JSONDecodeError:
        return None
    shape = described.get("shape") if isinstance(described, dict) else None
    if isinstance(shape, list) and len(shape) == 3 and shape[2] > 4:
        return (f"multispectral TIFF: its description says shape {shape} ({shape[2]} bands) but Pillow "
                f"decodes it as {img.width}x{img.height} {img.mode}; only 1-4 band images are supported")
    return None


def inspect_bytes(data: bytes, params: ValidateParams) -> dict[str, Any]:
    """Decode ``data`` and run the per-tile checks; returns accepted-row fields or raises _Reject."""
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise _Reject("bomb", str(exc)) from None
    except UnidentifiedImageError:
        raise _Reject("unreadable", f"not an image Pillow can identify ({len(data)} bytes)") from None
    except _DECODE_ERRORS as exc:
        raise _Reject("unreadable", f"{type(exc).__name__}: {exc}") from None
    w, h = img.size
    if w * h > params.max_image_pixels:
        raise _Reject("bomb", f"{w}x{h} = {w * h} pixels > max_image_pixels {params.max_image_pixels}")
    detail = _multiband_tiff_detail(img)
    if detail:
        raise _Reject("unsupported", detail)
    try:
        img.load()
        arr = ops.to_uint8(img)
    except OSError as exc:
        raise _Reject("truncated", f"{img.format} {w}x{h}: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise _Reject("unsupported", f"{img.format} {img.mode}: {type(exc).__name__}: {exc}") from None
    if min(w, h) < params.min_size:
        raise _Reject("too_small", f"{w}x{h} < min_size {params.min_size}", _thumb(arr))
    gray = img.mode in ops.GRAY_MODES or ops.is_content_gray(arr, params.gray_tolerance)
    if gray and params.grayscale == "drop":
        why = f"mode {img.mode}" if img.mode in ops.GRAY_MODES else f"RGB with R=G=B within {params.gray_tolerance}"
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
    if img.mode in ops.WIDE_MODES:
        steps.append("stretch")
    if channels == 3 and arr.ndim == 2:
        steps.append("gray_to_rgb")
    elif channels == 1 and img.mode != "L":
        steps.append("to_luminance")
    elif channels == 3 and img.mode != "RGB":
        steps.append("to_rgb")
    return {"width": w, "height": h, "mode": img.mode, "channels": channels, "action": "+".join(steps) or "as_is"}


def _read_manifest(raw: Path) -> list[dict[str, str]]:
    manifest = raw / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"{manifest}: manifest not found (run `dvc repro download`)")
    rows = read_csv(manifest)
    if rows and not {"path", "status"} <= set(rows[0]):
        raise DataError(f"{manifest}: expected columns path and status, got {sorted(rows[0])}")
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
    # Pass 1: existence, size, checksum and hash, so duplicates and placeholders skip decoding.
    for i, row in enumerate(rows):
        path = raw / row["path"]
        if not path.is_file():
            verdicts[i] = _Reject("missing", f"{path} is listed as ok but does not exist")
        elif path.stat().st_size == 0:
            verdicts[i] = _Reject("empty", "0-byte file")
        else:
            hashes[i] = sha256_file(path)
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

    # Pass 2: decode the survivors on threads (Pillow releases the GIL while decoding).
    def check(i: int) -> dict[str, Any] | _Reject:
        try:
            return inspect_bytes((raw / rows[i]["path"]).read_bytes(), params)
        except _Reject as rej:
            return rej

    todo = [i for i, v in enumerate(verdicts) if v is None]
    with ops.pixel_limit(params.max_image_pixels), warnings.catch_warnings():
        # Tiles over the limit are rejected by our own size check; Pillow's warning would be noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            bar = tqdm(total=len(todo), desc="validate", unit="tile", disable=not progress)
            for i, verdict in zip(todo, pool.map(check, todo)):
                verdicts[i] = verdict
                bar.update()
            bar.close()
    return _write_outputs(out, rows, hashes, verdicts)


def _write_outputs(out: Path, rows: list[dict[str, str]], hashes: list[str | None],
                   verdicts: list[dict[str, Any] | _Reject | None]) -> ValidateResult:
    accepted, rejected, sheet = [], [], []
    for row, h, v in zip(rows, hashes, verdicts):
        if isinstance(v, _Reject):
            rejected.append({"path": row["path"], "reason": v.reason, "detail": v.detail})
            if len(sheet) < SHEET_MAX:
                sheet.append((row["path"], v))
        else:
            assert v is not None, f"{row['path']}: no verdict (a bug in validate)"
            accepted.append({"path": row["path"], "sha256": h, **v})
    assert len(accepted) + len(rejected) == len(rows)
    by_reason = collections.Counter(r["reason"] for r in rejected)
    report = {"total": len(rows), "accepted": len(accepted), "rejected": len(rejected),
              **{f"rejected_{reason}": by_reason[reason] for reason in REASONS}}
    write_csv_atomic(out / "accepted.csv", accepted, ACCEPTED_FIELDS)
    write_csv_atomic(out / "rejected.csv", rejected, REJECTED_FIELDS)
    write_json_atomic(out / "report.json", report)
    write_contact_sheet(out / "rejected.png", sheet)
    if not accepted:
        top = ", ".join(f"{k} {n}" for k, n in by_reason.most_common(3))
        raise DataError(f"validate accepted 0 of {len(rows)} tiles ({top}); see {out / 'rejected.csv'}")
    return ValidateResult(accepted=len(accepted), rejected=len(rejected), report=report)


def write_contact_sheet(path: Path, items: list[tuple[str, _Reject]], ncol: int = 8) -> None:
    """A PNG grid of rejected tiles (grey box when undecodable) captioned with their reason."""
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
    with atomic_path(path, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
