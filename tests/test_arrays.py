"""Tests for satgan.arrays: opening prepared arrays against their sidecar."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satgan.arrays import open_prepared, save_array_with_sidecar, sidecar_boxes, write_array_with_sidecar
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


def test_empty_npy_is_a_data_error_naming_the_file(tmp_path):
    """A 0-byte tiles.npy (a killed copy, a full disk) is one DataError line naming it, not an EOFError."""
    path = _write(tmp_path)
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"tiles\.npy: empty file \(0 bytes\)"):
        open_prepared(path)


@pytest.mark.parametrize("cut", [6, 60, 200])
def test_truncated_npy_is_a_data_error_naming_the_file(tmp_path, cut):
    """A .npy cut inside its magic, its header or its data is a DataError naming the file."""
    path = _write(tmp_path)
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(DataError, match=r"tiles\.npy: not a readable \.npy file"):
        open_prepared(path)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_mutated_npy_or_sidecar_is_a_data_error_or_opens(tmp_path_factory, data):
    """Any truncation, byte flip or garbage in the .npy or a garbage sidecar: DataError naming the file, or a valid open."""
    tmp_path = tmp_path_factory.mktemp("npy")
    path = _write(tmp_path)
    target = data.draw(st.sampled_from([path, tmp_path / "tiles.json"]))
    blob = bytearray(target.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["cut", "flip", "insert"]))
        pos = data.draw(st.integers(0, max(len(blob) - 1, 0)))
        if kind == "cut":
            del blob[pos:]
        elif kind == "flip" and blob:
            blob[pos] = data.draw(st.integers(0, 255))
        else:
            blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    target.write_bytes(bytes(blob))
    try:
        arr, meta = open_prepared(path)
    except DataError as exc:
        assert "\n" not in str(exc) and ("tiles.npy" in str(exc) or "tiles.json" in str(exc))
    else:
        assert list(arr.shape) == meta["shape"] and str(arr.dtype) == meta["dtype"]


def test_save_array_with_sidecar_round_trips_through_open_prepared(tmp_path):
    """save_array_with_sidecar writes the contract: open_prepared reads the same array and the extra keys."""
    images = np.random.default_rng(0).uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32)
    meta = save_array_with_sidecar(tmp_path / "samples.npy", images, {"seed": 3})
    arr, read = open_prepared(tmp_path / "samples.npy")
    assert np.array_equal(arr, images) and read == meta and read["seed"] == 3 and read["channels"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.json", "samples.npy"]


def test_boxes_are_read_back_one_per_row(tmp_path):
    """A sidecar's boxes come back as (scene, x0, y0, x1, y1) tuples; a sidecar without them gives None."""
    boxes = [["s", 0, 0, 8, 8], ["s", 8, 0, 16, 8], ["t", 0, 0, 8, 8], ["s", 4, 4, 12, 12], ["s", 0, 8, 8, 16]]
    assert sidecar_boxes(open_prepared(_write(tmp_path, boxes=boxes))[1]) == [tuple(b) for b in boxes]
    assert sidecar_boxes(open_prepared(_write(tmp_path))[1]) is None


@pytest.mark.parametrize("boxes, match", [
    ([["s", 0, 0, 8, 8]] * 6, r"boxes: expected one box per row \(5\), got 6 entries"),
    ([["s", 0, 0, 8, 8]] * 4 + [["s", 8, 0, 8, 8]], r"boxes\[4\]: expected \[scene, x0, y0, x1, y1\]"),
    ([["s", 0, 0, 8, 8]] * 4 + [[0, 0, 0, 8, 8]], r"boxes\[4\]: expected"),
])
def test_malformed_boxes_are_one_error_naming_the_sidecar(tmp_path, boxes, match):
    """Boxes missing a row, empty or without a scene name are one DataError naming the sidecar and the entry."""
    with pytest.raises(DataError, match=f"tiles.json: {match}"):
        open_prepared(_write(tmp_path, boxes=boxes))


def _no_space(fd, offset, length):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_new_array_has_its_disk_blocks_reserved_before_it_is_filled(tmp_path):
    """write_array_with_sidecar hands fill a file whose blocks exist (no hole a memory-mapped store could SIGBUS on)."""
    seen = {}

    def fill(tmp):
        st = tmp.stat()
        seen["blocks"], seen["size"] = st.st_blocks * 512, st.st_size
        return {}

    write_array_with_sidecar(tmp_path / "tiles.npy", (64, 3, 32, 32), "float16", fill)
    assert seen["size"] > 390_000 and seen["blocks"] >= seen["size"], seen


def test_a_full_disk_is_one_line_naming_the_array_and_leaves_no_temp_file(tmp_path, monkeypatch):
    """When the array's blocks cannot be reserved (ENOSPC), one DataError line names the file and size; nothing is left."""
    monkeypatch.setattr(os, "posix_fallocate", _no_space)
    filled = []
    with pytest.raises(DataError) as err:
        write_array_with_sidecar(tmp_path / "tiles.npy", (64, 3, 32, 32), "float16", lambda tmp: filled.append(tmp) or {})
    assert str(err.value) == (f"{tmp_path / 'tiles.npy'}: cannot reserve 0.4 MB on disk for the array (No space left on "
                              "device); nothing was replaced: free space and rerun")
    assert filled == [] and list(tmp_path.iterdir()) == []
