"""The prepared-array contract between prepare, generate, train and evaluate.

A writer produces ``<name>.npy`` (a real .npy, shape (N, C, H, W), float16 or float32,
values in [-1, 1]) and a sidecar ``<name>.json`` with at least ``shape``, ``dtype``,
``channels``, ``image_size`` and ``value_range``, through :func:`write_array_with_sidecar`
(arrays filled slice by slice, as prepare does) or :func:`save_array_with_sidecar` (an array
already in memory, as generate has). Readers open the array memory-mapped with
:func:`open_prepared`, which checks it against its sidecar, so a stale, mismatched, empty or
corrupt pair is one :class:`~satgan.errors.DataError` naming the file, never a traceback.

A sidecar may list each row's pixel box under :data:`satgan.names.SIDECAR_BOXES` (prepare does
when every tile has a position): ``[scene, x0, y0, x1, y1]``, half-open source pixels.
:func:`open_prepared` checks it (one per row, well-formed) and :func:`sidecar_boxes` returns it,
or None when the sidecar has none.
"""

from __future__ import annotations

import json
import os
import tokenize
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from satgan.errors import DataError
from satgan.fsutil import AtomicGroup, atomic_group
from satgan.names import SIDECAR_BOXES

REQUIRED_SIDECAR_KEYS = ("shape", "dtype", "channels", "image_size", "value_range")
DTYPES = ("float16", "float32")

# What np.load raises on a 0-byte, truncated or garbage .npy: an empty file (EOFError), a bad
# magic string or a pickle (ValueError), a header that does not parse (SyntaxError, or numpy's
# tokenizer's TokenError), a shape or data region larger than the file (ValueError from mmap,
# OverflowError), an unreadable file.
_NPY_ERRORS = (ValueError, EOFError, SyntaxError, tokenize.TokenError, OverflowError, TypeError, MemoryError, OSError)


def sidecar_path(npy_path: str | Path) -> Path:
    """``data/prepared/tiles.npy`` -> ``data/prepared/tiles.json``."""
    return Path(npy_path).with_suffix(".json")


def sidecar_meta(shape: tuple[int, ...], dtype: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """The contract's sidecar for an (N, C, H, W) array of ``dtype``, plus ``extra`` keys."""
    dtype = str(np.dtype(dtype))
    if len(shape) != 4 or shape[1] not in (1, 3) or shape[2] != shape[3] or dtype not in DTYPES:
        raise ValueError(f"sidecar_meta: expected (N, 1|3, S, S) float16/float32, got {tuple(shape)} {dtype}")
    return {
        "shape": [int(n) for n in shape],
        "dtype": dtype,
        "channels": int(shape[1]),
        "image_size": int(shape[2]),
        "value_range": [-1.0, 1.0],
        **extra,
    }


def write_array_with_sidecar(npy_path: str | Path, shape: tuple[int, ...], dtype: Any,
                             fill: Callable[[Path], dict[str, Any]], group: AtomicGroup | None = None) -> dict[str, Any]:
    """Write ``npy_path`` (+ its sidecar) as an (N, C, H, W) ``dtype`` array filled by ``fill``; returns the sidecar.

    ``fill(tmp)`` receives the path of a temp .npy already of the right shape and dtype (zeros),
    writes the rows (e.g. through ``np.lib.format.open_memmap(tmp, mode="r+")``, from any
    process) and returns extra sidecar keys. Both files appear only when everything succeeded:
    at the end of ``group`` when one is given (so several arrays change together), else at once.
    The temp file's disk blocks are reserved before ``fill`` runs (:func:`reserve_blocks`): a
    disk too full for the array is one DataError naming ``npy_path`` and the size, and the
    group removes its temp files, where writing through the map would die of SIGBUS.
    """
    npy_path = Path(npy_path)
    if group is None:
        with atomic_group() as own:
            return write_array_with_sidecar(npy_path, shape, dtype, fill, own)
    tmp = group.path(npy_path, suffix=".npy")
    try:
        np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape)).flush()  # header; the rest a hole
        reserve_blocks(tmp)
    except OSError as exc:
        need = np.dtype(dtype).itemsize * int(np.prod(shape))
        raise DataError(f"{npy_path}: cannot reserve {need / 1e6:.1f} MB on disk for the array "
                        f"({exc.strerror or exc}); nothing was replaced: free space and rerun") from None
    meta = sidecar_meta(tuple(shape), dtype, fill(tmp))
    side = group.path(sidecar_path(npy_path))
    try:
        side.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{sidecar_path(npy_path)}: cannot write ({exc.strerror or exc}); nothing was replaced: "
                        "free space and rerun") from None
    return meta


def reserve_blocks(path: Path) -> None:
    """Give every byte of ``path`` its disk blocks now (:func:`os.posix_fallocate`), before anything maps it.

    A new .npy is a hole (its size set, no blocks behind it), and a store into a memory-mapped
    page the filesystem then cannot back (a full disk, a quota) is SIGBUS: the process dies with
    no message and its temp files stay. Reserved up front, a full disk is an ``OSError``
    (ENOSPC) here instead, before any row is written. Only where the OS has posix_fallocate
    (Linux; not macOS, whose writes keep the old behaviour).
    """
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def save_array_with_sidecar(npy_path: str | Path, images: np.ndarray, extra: dict[str, Any],
                            group: AtomicGroup | None = None) -> dict[str, Any]:
    """Write in-memory (N, C, H, W) float16/float32 ``images`` as ``npy_path`` + sidecar; returns the sidecar."""

    def fill(tmp: Path) -> dict[str, Any]:
        mm = np.lib.format.open_memmap(tmp, mode="r+")
        mm[:] = images
        mm.flush()
        del mm
        return extra

    return write_array_with_sidecar(npy_path, images.shape, images.dtype, fill, group)


def _read_sidecar(side: Path) -> dict[str, Any]:
    """The sidecar as a dict whose contract keys have the contract's types, or DataError naming the file."""
    if not side.is_file():
        raise DataError(f"{side}: sidecar not found next to {side.with_suffix('.npy').name}")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{side}: not valid JSON: {exc}") from None
    except OSError as exc:
        raise DataError(f"{side}: cannot read: {exc.strerror or exc}") from None
    if not isinstance(meta, dict):
        raise DataError(f"{side}: expected a JSON object, got {type(meta).__name__}")
    missing = [k for k in REQUIRED_SIDECAR_KEYS if k not in meta]
    if missing:
        raise DataError(f"{side}: missing keys {missing}")
    shape, dtype = meta["shape"], meta["dtype"]
    if not (isinstance(shape, list) and len(shape) == 4
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise DataError(f"{side}: shape: expected a list of 4 non-negative integers, got {shape!r}")
    if dtype not in DTYPES:
        raise DataError(f"{side}: dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    for key in ("channels", "image_size"):
        if not isinstance(meta[key], int) or isinstance(meta[key], bool):
            raise DataError(f"{side}: {key}: expected an integer, got {meta[key]!r}")
    if SIDECAR_BOXES in meta:
        _check_boxes(meta[SIDECAR_BOXES], shape[0], side)
    return meta


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_boxes(boxes: Any, n_rows: int, side: Path) -> None:
    """DataError naming ``side`` unless ``boxes`` is one ``[scene, x0, y0, x1, y1]`` per row with x0 < x1, y0 < y1."""
    if not isinstance(boxes, list) or len(boxes) != n_rows:
        got = f"{len(boxes)} entries" if isinstance(boxes, list) else type(boxes).__name__
        raise DataError(f"{side}: {SIDECAR_BOXES}: expected one box per row ({n_rows}), got {got}")
    for k, box in enumerate(boxes):
        if not (isinstance(box, list) and len(box) == 5 and isinstance(box[0], str) and all(map(_is_int, box[1:]))
                and box[1] < box[3] and box[2] < box[4]):
            raise DataError(f"{side}: {SIDECAR_BOXES}[{k}]: expected [scene, x0, y0, x1, y1] with integers "
                            f"x0 < x1 and y0 < y1, got {box!r}")


def sidecar_boxes(meta: dict[str, Any]) -> list[tuple[str, int, int, int, int]] | None:
    """Each row's box ``(scene, x0, y0, x1, y1)`` (half-open source pixels) from a sidecar :func:`open_prepared`
    checked, or None when it records none (tiles without positions: folder and archive sources).

    Two rows share pixels iff their scenes are equal and their boxes intersect:
    ``max(x0s) < min(x1s) and max(y0s) < min(y1s)``.
    """
    boxes = meta.get(SIDECAR_BOXES)
    if boxes is None:
        return None
    return [(str(b[0]), int(b[1]), int(b[2]), int(b[3]), int(b[4])) for b in boxes]


def open_prepared(npy_path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Open a prepared array read-only and memory-mapped, with its validated sidecar.

    Returns ``(array, meta)`` where ``array`` is an (N, C, H, W) ``np.memmap`` and ``meta`` the
    sidecar dict. Raises :class:`DataError` naming the file when either is missing, empty,
    truncated, not a .npy, or when they disagree.
    """
    npy_path = Path(npy_path)
    side = sidecar_path(npy_path)
    if not npy_path.is_file():
        raise DataError(f"{npy_path}: prepared array not found (run `dvc repro prepare`)")
    meta = _read_sidecar(side)
    if npy_path.stat().st_size == 0:
        raise DataError(f"{npy_path}: empty file (0 bytes), not a .npy array; rerun the stage that writes it")
    try:
        array = np.load(npy_path, mmap_mode="r", allow_pickle=False)
    except _NPY_ERRORS as exc:
        raise DataError(f"{npy_path}: not a readable .npy file (truncated or corrupt?): {type(exc).__name__}: {exc}") from None
    if not isinstance(array, np.ndarray):  # np.load gives an NpzFile for a zip archive
        array.close()
        raise DataError(f"{npy_path}: expected a .npy array, got a {type(array).__name__}")
    if list(array.shape) != list(meta["shape"]) or str(array.dtype) != meta["dtype"]:
        raise DataError(
            f"{npy_path}: array is {tuple(array.shape)} {array.dtype} but {side.name} says "
            f"{tuple(meta['shape'])} {meta['dtype']}"
        )
    if array.ndim != 4 or array.shape[1] != meta["channels"] or array.shape[2] != meta["image_size"] \
            or array.shape[3] != meta["image_size"]:
        raise DataError(
            f"{npy_path}: expected (N, {meta['channels']}, {meta['image_size']}, {meta['image_size']}), "
            f"got {tuple(array.shape)}"
        )
    return array, meta


def class_names(value: Any) -> tuple[str, ...] | None:
    """A sidecar's (or card's) JSON list of distinct non-empty class names as a tuple, or None when it is not one."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value) or len(set(value)) != len(value):
        return None
    return tuple(value)


def open_labels(npy_path: str | Path, n_rows: int, n_classes: int, rows_of: str) -> np.ndarray:
    """A class-label array: (n_rows,) int64 indices in [0, n_classes), aligned row for row with ``rows_of``.

    prepare writes one beside tiles.npy and holdout.npy for labelled data, generate one beside
    a conditional model's samples.npy. Raises :class:`DataError` naming the file when it is
    missing, unreadable, not 1-D int64, of another length than ``rows_of`` or out of range.
    """
    npy_path = Path(npy_path)
    if not npy_path.is_file():
        raise DataError(f"{npy_path}: class labels not found (expected one int64 per row of {rows_of})")
    try:
        labels = np.load(npy_path, allow_pickle=False)
    except _NPY_ERRORS as exc:
        raise DataError(f"{npy_path}: not a readable .npy file (truncated or corrupt?): {type(exc).__name__}: {exc}") from None
    if not isinstance(labels, np.ndarray):
        labels.close()
        raise DataError(f"{npy_path}: expected a .npy array, got a {type(labels).__name__}")
    if labels.dtype != np.int64 or labels.shape != (n_rows,):
        raise DataError(f"{npy_path}: expected ({n_rows},) int64 class indices, one per row of {rows_of}, "
                        f"got {labels.shape} {labels.dtype}")
    if n_rows and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{npy_path}: expected class indices in 0..{n_classes - 1} ({n_classes} classes), "
                        f"got {labels.min()}..{labels.max()}")
    return labels
