"""Tests for satgan.arrays: opening prepared arrays against their sidecar."""

from __future__ import annotations

import json

import numpy as np
import pytest

from satgan.arrays import open_prepared
from satgan.errors import DataError


def _write(tmp_path, shape=(5, 3, 8, 8), dtype="float16", **meta_patch):
    arr = np.zeros(shape, dtype=dtype)
    np.save(tmp_path / "tiles.npy", arr)
    meta = {"shape": list(shape), "dtype": dtype, "channels": shape[1], "image_size": shape[2],
            "value_range": [-1, 1], **meta_patch}
    (tmp_path / "tiles.json").write_text(json.dumps(meta))
    return tmp_path / "tiles.npy"


def test_open_prepared_returns_memmap_and_meta(tmp_path):
    """A consistent pair opens memory-mapped with its sidecar."""
    arr, meta = open_prepared(_write(tmp_path))
    assert isinstance(arr, np.memmap) and arr.shape == (5, 3, 8, 8) and meta["channels"] == 3


def test_mismatched_sidecar_is_refused(tmp_path):
    """A sidecar that disagrees with the array's shape is a DataError naming the file."""
    path = _write(tmp_path, shape=(5, 3, 8, 8))
    meta = json.loads((tmp_path / "tiles.json").read_text())
    (tmp_path / "tiles.json").write_text(json.dumps({**meta, "shape": [6, 3, 8, 8]}))
    with pytest.raises(DataError, match="tiles.npy: array is"):
        open_prepared(path)


def test_missing_files_are_named(tmp_path):
    """A missing array or sidecar is reported with its path."""
    with pytest.raises(DataError, match="prepared array not found"):
        open_prepared(tmp_path / "tiles.npy")
    np.save(tmp_path / "tiles.npy", np.zeros((1, 1, 2, 2), np.float16))
    with pytest.raises(DataError, match="sidecar not found"):
        open_prepared(tmp_path / "tiles.npy")
