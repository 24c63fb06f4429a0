"""The download output folder: manifest rows, the resume journal, safe paths and stale-file cleanup.

Layout of ``--out`` (a DVC ``persist: true`` output, so an earlier run's files may be present)::

    tiles/          every tile or image, at the path its manifest row names
    manifest.csv    one row per planned tile: path, source, sha256, bytes, status, error
    .journal.jsonl  (only while a run is in progress) one JSON line per tile written, so a
                    run killed with kill -9 resumes without refetching those tiles
    .download/      (only while a run is in progress) a fetched archive before extraction
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from satgan.errors import DownloadError
from satgan.fsutil import read_csv, sha256_file, write_csv_atomic

MANIFEST = "manifest.csv"
JOURNAL = ".journal.jsonl"
TILES = "tiles"
SCRATCH = ".download"
FIELDS = ("path", "source", "sha256", "bytes", "status", "error")

# Statuses. ok: on disk, fetched, cut or copied by this run. resumed: on disk from an earlier
# (possibly killed) run with the recorded sha256, so not fetched again (xyz). failed: could not be fetched, read or written (error says why). refused: an
# archive member rejected for safety (error says why). skipped: an archive member that is not
# an image by extension. failed and refused count towards max_failed_fraction.
OK, RESUMED, FAILED, REFUSED, SKIPPED = "ok", "resumed", "failed", "refused", "skipped"
PRESENT = (OK, RESUMED)
BAD = (FAILED, REFUSED)


@dataclass(frozen=True)
class Row:
    """One manifest row; ``path`` is relative to the out dir and empty when nothing was written."""

    path: str
    source: str
    sha256: str
    bytes: int
    status: str
    error: str

    @classmethod
    def failed(cls, path: str, source: str, error: str, status: str = FAILED) -> Row:
        """A row for a tile that is not on disk, with the reason."""
        return cls(path=path, source=source, sha256="", bytes=0, status=status, error=error)


@dataclass(frozen=True)
class Summary:
    """What a download run produced, for the one-line summary and for tests."""

    source: str
    out: Path
    counts: dict[str, int]
    total_bytes: int
    seconds: float

    @property
    def failed_fraction(self) -> float:
        """Failed + refused rows over all rows that were meant to be tiles (skipped rows excluded)."""
        planned = sum(n for status, n in self.counts.items() if status != SKIPPED)
        return sum(self.counts[s] for s in BAD) / planned if planned else 0.0

    def line(self) -> str:
        """The one-line summary printed by the stage."""
        present = sum(self.counts[s] for s in PRESENT)
        parts = ", ".join(f"{n} {status}" for status, n in self.counts.items())
        return (
            f"download: {present} tiles from '{self.source}' in {self.out / TILES} ({parts}; "
            f"{self.total_bytes / 1e6:.1f} MB) in {self.seconds:.1f} s; manifest {self.out / MANIFEST}"
        )


def count_statuses(rows: Iterable[Row]) -> dict[str, int]:
    """Rows per status, every status present (zero when none)."""
    counts = {status: 0 for status in (OK, RESUMED, FAILED, REFUSED, SKIPPED)}
    for row in rows:
        counts[row.status] += 1
    return counts


def safe_dest(out: Path, relpath: str) -> Path:
    """``out / relpath``, refusing (ValueError with the reason) a path that would land outside ``out``.

    Checks the string (absolute, ``..``, backslashes, NUL) and then the resolved path, so a
    symlinked directory planted inside ``out`` cannot redirect a write elsewhere either.
    """
    if not relpath or "\x00" in relpath:
        raise ValueError("empty path or NUL byte in path")
    if relpath.startswith(("/", "\\")) or (len(relpath) > 1 and relpath[1] == ":"):
        raise ValueError(f"absolute path {relpath!r}")
    parts = relpath.replace("\\", "/").split("/")
    if ".." in parts:
        raise ValueError(f"path {relpath!r} contains '..'")
    root = out.resolve()
    dest = (root / relpath).resolve()
    if dest == root or not dest.is_relative_to(root):
        raise ValueError(f"path {relpath!r} resolves outside {out}")
    return out / relpath


class Journal:
    """Append-only JSON lines of rows already written, flushed per line so kill -9 loses at most one."""

    def __init__(self, out: Path) -> None:
        self.path = out / JOURNAL
        self._fh: IO[str] | None = None

    def load(self) -> dict[str, Row]:
        """Rows of earlier runs on disk, by source: the last manifest, then the journal of a killed run."""
        rows: dict[str, Row] = {}
        manifest = self.path.parent / MANIFEST
        if manifest.is_file():
            for rec in read_csv(manifest):
                if set(FIELDS) <= set(rec) and rec["status"] in PRESENT:
                    rows[rec["source"]] = Row(**{**rec, "bytes": int(rec["bytes"] or 0)})
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line a kill -9 cut short: that tile is simply fetched again
                rows[rec["source"]] = Row(**rec)
        return rows

    def append(self, row: Row) -> None:
        """Record ``row`` (a tile now on disk) durably enough to survive the process being killed."""
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps(dataclasses.asdict(row)) + "\n")
        self._fh.flush()

    def close_and_remove(self) -> None:
        """Close and delete the journal: the manifest now holds the same facts."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.path.unlink(missing_ok=True)


def resume_hit(out: Path, previous: dict[str, Row], source: str, path_prefix: str) -> Row | None:
    """The earlier row for ``source`` if its file (under ``path_prefix``) is still on disk with the same sha256."""
    if source not in previous:
        return None
    row = previous[source]
    if not row.path.startswith(path_prefix):
        return None
    try:
        dest = safe_dest(out, row.path)  # the manifest or journal could have been edited by hand
    except ValueError:
        return None
    if not dest.is_file() or dest.is_symlink() or sha256_file(dest) != row.sha256:
        return None
    return dataclasses.replace(row, status=RESUMED, error="")


def remove_stale(out: Path, rows: list[Row]) -> int:
    """Delete files under ``out/tiles`` that no present row names (earlier configs, temp files); return count."""
    keep = {os.path.normpath(out / row.path) for row in rows if row.status in PRESENT}
    tiles = out / TILES
    removed = 0
    if not tiles.exists():
        return 0
    for dirpath, dirnames, filenames in os.walk(tiles, topdown=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            if os.path.normpath(path) not in keep:
                os.unlink(path)
                removed += 1
        if dirpath != str(tiles) and not os.listdir(dirpath):
            os.rmdir(dirpath)
    shutil.rmtree(out / SCRATCH, ignore_errors=True)
    return removed


def finish(out: Path, source: str, rows: list[Row], journal: Journal, seconds: float, max_failed: float) -> Summary:
    """Write the manifest, drop stale files and the journal, and fail when too many tiles failed."""
    rows = sorted(rows, key=lambda r: (r.path, r.source))
    write_csv_atomic(out / MANIFEST, (dataclasses.asdict(r) for r in rows), FIELDS)
    journal.close_and_remove()
    remove_stale(out, rows)
    summary = Summary(
        source=source,
        out=out,
        counts=count_statuses(rows),
        total_bytes=sum(r.bytes for r in rows if r.status in PRESENT),
        seconds=seconds,
    )
    if not any(r.status in PRESENT for r in rows):
        raise DownloadError(f"source '{source}' produced no tiles; see {out / MANIFEST}")
    if summary.failed_fraction > max_failed:
        bad = [r for r in rows if r.status in BAD]
        raise DownloadError(
            f"{len(bad)} of {len(rows)} tiles failed ({summary.failed_fraction:.1%} > "
            f"download.max_failed_fraction={max_failed:g}); first: {bad[0].source}: {bad[0].error}; "
            f"all failures are rows in {out / MANIFEST}"
        )
    return summary
