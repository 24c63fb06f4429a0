"""Tests for satgan.fsutil: atomic writes, confined reads and hashing."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from satgan.fsutil import (
    FileTooLarge,
    UnsafePath,
    atomic_group,
    atomic_path,
    read_csv,
    read_regular,
    safe_join,
    sha256_file,
    write_csv_atomic,
    write_json_atomic,
)


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


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it after."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mask, mode):
    """A file written atomically gets 0o666 minus the umask, as open() would give (mkstemp forced 0600)."""
    umask(mask)
    write_json_atomic(tmp_path / "a.json", {"a": 1})
    with atomic_group() as group:
        group.path(tmp_path / "b.bin").write_bytes(b"x")
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == mode


def test_atomic_group_failure_keeps_every_old_file(tmp_path):
    """An exception after some files of a group were written replaces none of them and leaves no temp."""
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_group() as group:
            group.path(tmp_path / "a.txt").write_text("new")
            group.path(tmp_path / "b.txt").write_text("new")
            raise RuntimeError("the second half failed")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a.txt": "old", "b.txt": "old"}


def test_safe_join_refuses_escapes_and_links_either_way(tmp_path):
    """Absolute, '..', and any symlink below the root (pointing outside or back inside) are refused."""
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "real" / "f.png").write_bytes(b"x")
    (root / "out_link").symlink_to(tmp_path)
    (root / "in_link").symlink_to(root / "real")
    (root / "file_link.png").symlink_to(root / "real" / "f.png")
    for bad in ("/etc/hostname", "../x.png", "real/../../x.png", "real\\..\\..\\x.png", "out_link/x.png",
                "in_link/f.png", "file_link.png", "", ".", "a\x00b"):
        with pytest.raises(UnsafePath):
            safe_join(root, bad)
    assert safe_join(root, "real//./f.png") == root / "real" / "f.png"


def test_open_regular_refuses_fifos_devices_and_symlinks_without_blocking(tmp_path):
    """A FIFO is refused at once (no writer needed), as are /dev/zero, a symlink, a folder and a file over the cap."""
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    (tmp_path / "big.png").write_bytes(b"x" * 11)
    for path in (tmp_path / "fifo.png", Path("/dev/zero"), tmp_path / "zero.png", tmp_path):
        with pytest.raises(UnsafePath):
            read_regular(path)
    with pytest.raises(FileTooLarge, match="11 bytes, more than the cap of 10"):
        read_regular(tmp_path / "big.png", max_bytes=10)
    assert read_regular(tmp_path / "big.png", max_bytes=11) == b"x" * 11


def test_read_csv_keeps_newlines_inside_quoted_cells(tmp_path):
    """A CSV cell holding a newline reads back as one row (the reader does not split lines itself)."""
    write_csv_atomic(tmp_path / "r.csv", [{"a": "x\ny", "b": "2"}], ["a", "b"])
    assert read_csv(tmp_path / "r.csv") == [{"a": "x\ny", "b": "2"}]


@pytest.mark.parametrize(("content", "says"), [(None, "not found"), (b"{", "not valid JSON"), (b"[1]", "expected a JSON object"),
                                               (b"\xff", "not UTF-8")])
def test_read_json_fails_in_one_line_naming_the_file(tmp_path, content, says):
    """The one JSON reader: missing, broken, non-object or non-UTF-8 files are one DataError naming the file."""
    from satgan.errors import DataError
    from satgan.fsutil import read_json

    path = tmp_path / "x.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=says) as info:
        read_json(path, "thing")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_json_reads_an_object(tmp_path):
    """A JSON object comes back as a dict."""
    from satgan.fsutil import read_json

    (tmp_path / "x.json").write_text('{"a": [1, 2]}')
    assert read_json(tmp_path / "x.json") == {"a": [1, 2]}
