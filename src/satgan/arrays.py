"""The prepared-array contract between prepare, train and evaluate.

prepare writes ``<name>.npy`` (a real .npy, shape (N, C, H, W), float16 or float32,
values in [-1, 1]) and a sidecar ``<name>.json`` with at least ``shape``, ``dtype``,
``channels``, ``image_size`` and ``value_range``. Readers open the array memory-mapped
and check it against its sidecar, so a stale or mismatched pair is caught up front.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from satgan.errors import DataError

REQUIRED_SIDECAR_KEYS = ("shape", "dtype", "channels", "image_size", "value_range")


def sidecar_path(npy_path: str | Path) -> Path:
    """``data/prepared/tiles.npy`` -> ``data/prepared/tiles.json``."""
    return Path(npy_path).with_suffix(".json")


def open_prepared(npy_path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Open a prepared array read-only and memory-mapped, with its validated sidecar.

    Returns ``(array, meta)`` where ``array`` is an (N, C, H, W) ``np.memmap`` and ``meta`` the
    sidecar dict. Raises :class:`DataError` naming the file when either is missing or they disagree.
    """
    npy_path = Path(npy_path)
    side = sidecar_path(npy_path)
    if not npy_path.is_file():
        raise DataError(f"{npy_path}: prepared array not found (run `dvc repro prepare`)")
    if not side.is_file():
        raise DataError(f"{side}: sidecar not found next to {npy_path.name}")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{side}: not valid JSON: {exc}") from None
    missing = [k for k in REQUIRED_SIDECAR_KEYS if k not in meta]
    if missing:
        raise DataError(f"{side}: missing keys {missing}")
    try:
        array = np.load(npy_path, mmap_mode="r")
    except ValueError as exc:
        raise DataError(f"{npy_path}: not a readable .npy file: {exc}") from None
    if list(array.shape) != list(meta["shape"]) or str(array.dtype) != meta["dtype"]:
        raise DataError(
            f"{npy_path}: array is {tuple(array.shape)} {array.dtype} but {side.name} says "
            f"{tuple(meta['shape'])} {meta['dtype']}"
        )
    if array.ndim != 4 or array.shape[1] != meta["channels"] or array.shape[2] != meta["image_size"]:
        raise DataError(
            f"{npy_path}: expected (N, {meta['channels']}, {meta['image_size']}, {meta['image_size']}), "
            f"got {tuple(array.shape)}"
        )
    return array, meta
