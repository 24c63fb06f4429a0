"""Tests for satgan.fsutil: atomic writes and hashing."""

from __future__ import annotations

import hashlib

import pytest

from satgan.fsutil import atomic_path, read_csv, sha256_file, write_csv_atomic, write_json_atomic


def test_failed_write_leaves_destination_untouched(tmp_path):
    """An exception inside atomic_path keeps the old file and leaves no temp file."""
    dest = tmp_path / "a.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_csv_round_trip_and_json(tmp_path):
    """CSV rows and JSON written atomically read back identically."""
    rows = [{"path": "a.png", "reason": "blank"}, {"path": "b,c.png", "reason": "truncated"}]
    write_csv_atomic(tmp_path / "r.csv", rows, ["path", "reason"])
    assert read_csv(tmp_path / "r.csv") == rows
    write_json_atomic(tmp_path / "r.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "r.json").read_text().startswith('{\n  "a"')


def test_sha256_file_matches_hashlib(tmp_path):
    """sha256_file equals hashlib over the whole content, across chunk boundaries."""
    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk=1000) == hashlib.sha256(data).hexdigest()
