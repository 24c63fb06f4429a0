"""The download output folder: manifest rows, staging, the resume journal, commit and stale-file cleanup.

Layout of ``--out`` (a DVC ``persist: true`` output, so an earlier run's files may be present)::

    tiles/               the tiles of the last successful run, at the paths manifest.csv names
    manifest.csv         one row per planned tile: path, source, sha256, bytes, status, error
    .download/tiles/     (while a run is in progress, or after one failed) tiles this run wrote,
                         staged at the path they will have under tiles/
    .download/archive    (while a run is in progress) a fetched archive before extraction; while
                         it streams in, a temp file beside it (removed if the fetch fails)
    .journal.jsonl       (xyz, while in progress or after a failed run) one JSON line per tile
                         staged, so a run killed with kill -9 resumes without refetching those
    manifest.failed.csv  (only after a failed run) that run's rows, with every failure's reason

A run writes only into ``.download/``. Only when it succeeded (some tiles, failures within
``download.max_failed_fraction``) does :func:`finish` move the staged tiles into ``tiles/``,
replace ``manifest.csv`` and delete stale files; a failed run leaves ``tiles/`` and
``manifest.csv`` exactly as the last successful run left them. Nothing outside ``--out`` is
ever written or deleted: a symlinked ``tiles/`` or ``.download/`` stops the stage, and no path
through a symlink below ``--out`` is written or followed.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import shutil
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from satgan import names
from satgan.errors import DataError, DownloadError, one_line
from satgan.fsutil import UnsafePath, open_regular, safe_join, write_csv_atomic

MANIFEST = names.MANIFEST
JOURNAL = names.JOURNAL
TILES = names.TILES_DIR
SCRATCH = ".download"
FAILED_MANIFEST = "manifest.failed.csv"
FIELDS = ("path", "source", "sha256", "bytes", "status", "error")
LABEL = "label"  # the extra manifest column when download.labels is not 'none' (satgan.download.labels)

# Statuses. ok: on disk, fetched, cut or copied by this run. resumed: on disk from an earlier
# (possibly killed) run with the recorded sha256, so not fetched again (xyz). failed: could not
# be fetched, read or written (error says why). refused: an archive member or folder entry
# rejected for safety (error says why). skipped: an archive member that is not an image by
# extension. failed and refused count towards max_failed_fraction.
OK, RESUMED, FAILED, REFUSED, SKIPPED = "ok", "resumed", "failed", "refused", "skipped"
PRESENT = (OK, RESUMED)
BAD = (FAILED, REFUSED)


@dataclass(frozen=True, slots=True)
class Row:
    """One manifest row; ``path`` is relative to the out dir and empty when nothing was written.

    ``error`` is always one line (it is a CSV cell). Slots: a run holds one Row per planned tile,
    and without a per-instance ``__dict__`` each takes about half the memory.
    """

    path: str
    source: str
    sha256: str
    bytes: int
    status: str
    error: str
    label: str = ""  # the tile's class, when download.labels is not 'none'; else always empty

    def __post_init__(self) -> None:
        object.__setattr__(self, "error", one_line(self.error))

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


def prepare_output(out: Path) -> None:
    """Create ``out`` and refuse (DataError) to run when an entry the stage writes or deletes is a symlink.

    Cleaning ``tiles/`` through a symlink would empty whatever folder it points to; writing
    ``manifest.csv`` through one would overwrite any file. The stage never creates links, so
    one there was planted: removing it is the user's call, not this stage's.
    """
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: the download output exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{out}: cannot create the download output: {exc.strerror or exc}") from None
    for name in (TILES, SCRATCH, MANIFEST, JOURNAL, FAILED_MANIFEST):
        entry = out / name
        if entry.is_symlink():
            raise DataError(
                f"{entry} is a symlink (to {os.readlink(entry)}): the download stage writes and deletes only "
                f"inside {out} and never through a link; remove the link (the folder it points to is untouched)"
            )
        if name in (TILES, SCRATCH) and entry.exists() and not entry.is_dir():
            raise DataError(f"{entry}: expected a folder, found a file")


def safe_dest(out: Path, relpath: str) -> Path:
    """``out / relpath``, refusing (ValueError with the reason) a path that leaves ``out`` or goes through a link."""
    return safe_join(out, relpath)


def staged_path(out: Path, relpath: str) -> Path:
    """Where this run writes the file that will be ``out / relpath`` once the run succeeded."""
    safe_join(out, relpath)
    return safe_join(out / SCRATCH, relpath)


def member_path(name: str) -> str:
    """An archive member or folder entry name as the relative path to write: ValueError when unsafe.

    Separators are unified (a backslash counts as one, as on the system that may have made the
    archive), empty and ``.`` parts are dropped, and the text is NFC-normalised, so ``./b.jpg``,
    ``c//d.jpg``, ``c/./d.jpg`` and an NFD spelling all name the one file they would be on disk.
    Absolute paths, ``..`` and control characters (a newline in a name) are refused.
    """
    if not name or "\x00" in name:
        raise ValueError("empty name or NUL byte in name")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"absolute path {name!r}")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise ValueError(f"control character in name {name!r}")
    parts = [p for p in unicodedata.normalize("NFC", name).replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"path {name!r} contains '..'")
    if not parts:
        raise ValueError(f"name {name!r} names no file")
    return "/".join(parts)


class PathClaims:
    """Destinations already taken in this run, compared the way a case-insensitive filesystem would.

    Two names that differ only in case (or in Unicode normalisation) are one file on macOS and
    Windows, and the later copy would silently overwrite the earlier: the second is refused.
    """

    def __init__(self) -> None:
        self._taken: dict[str, str] = {}

    def claim(self, relpath: str, source: str) -> str | None:
        """Take ``relpath`` for ``source``; return the earlier source holding the same path, or None."""
        key = unicodedata.normalize("NFC", unicodedata.normalize("NFC", relpath).casefold())
        if key in self._taken:
            return self._taken[key]
        self._taken[key] = source
        return None


def same_file(path: Path, sha256: str) -> bool:
    """True when ``path`` is a regular, non-symlink file whose sha256 is ``sha256``."""
    try:
        with open_regular(path) as fh:
            digest = hashlib.sha256()
            while block := fh.read(1 << 20):
                digest.update(block)
    except (OSError, UnsafePath):
        return False
    return digest.hexdigest() == sha256


def _row_from(rec: Any) -> Row | None:
    """A Row from a manifest or journal record, or None when the record is malformed."""
    if not isinstance(rec, dict) or not set(FIELDS) <= set(rec):
        return None
    values = {k: rec[k] for k in FIELDS}
    if not all(isinstance(values[k], str) for k in FIELDS if k != "bytes"):
        return None
    try:
        values["bytes"] = int(values["bytes"] or 0)
    except (TypeError, ValueError):
        return None
    return Row(**values)


class Journal:
    """Append-only JSON lines of rows already written, flushed per line so kill -9 loses at most one."""

    def __init__(self, out: Path) -> None:
        self.path = out / JOURNAL
        self._fh: IO[str] | None = None

    def load(self) -> dict[str, Row]:
        """Rows of earlier runs on disk, by source: the last manifest, then the journal of a killed or failed run.

        Both are only a cache of what need not be fetched again: a malformed record is ignored
        (its tile is fetched again), never trusted.
        """
        rows: dict[str, Row] = {}
        manifest = self.path.parent / MANIFEST
        try:
            # Streamed: only the rows kept are held, not the whole file and a dict per line.
            with open_regular(manifest) as fh, io.TextIOWrapper(fh, encoding="utf-8", newline="") as text:
                for rec in csv.DictReader(text):
                    row = _row_from(rec)
                    if row is not None and row.status in PRESENT:
                        rows[row.source] = row
        except FileNotFoundError:
            pass
        except (OSError, UnsafePath, UnicodeDecodeError, ValueError, csv.Error) as exc:
            raise DataError(f"{manifest}: cannot read the previous manifest: {exc}") from None
        try:
            # Line by line: the journal of a big killed run is not read into memory whole.
            with open_regular(self.path) as fh:
                for raw in fh:
                    try:
                        row = _row_from(json.loads(raw.decode("utf-8", errors="replace")))
                    except (json.JSONDecodeError, RecursionError):
                        continue  # the line a kill -9 cut short: that tile is simply fetched again
                    if row is not None:
                        rows[row.source] = row
        except FileNotFoundError:
            return rows
        except (OSError, UnsafePath) as exc:
            raise DataError(f"{self.path}: cannot read the resume journal: {exc}") from None
        return rows

    def append(self, row: Row) -> None:
        """Record ``row`` (a tile now on disk) durably enough to survive the process being killed."""
        if self._fh is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
            self._fh = os.fdopen(os.open(self.path, flags, 0o666), "a", encoding="utf-8")
        self._fh.write(json.dumps(dataclasses.asdict(row)) + "\n")
        self._fh.flush()

    def close(self) -> None:
        """Close the journal, keeping it: a failed run's staged tiles are resumed by the next run."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def close_and_remove(self) -> None:
        """Close and delete the journal: the manifest now holds the same facts."""
        self.close()
        self.path.unlink(missing_ok=True)


def resume_hit(out: Path, row: Row | None, path_prefix: str) -> Row | None:
    """``row`` (an earlier run's, for the same source) as ``resumed`` if its file (under ``path_prefix``) is on disk with the same sha256.

    The file may be staged (a killed or failed run wrote it) or in ``tiles/`` (a successful run).
    """
    if row is None:
        return None
    if not row.path.startswith(path_prefix):
        return None
    try:
        # The manifest or journal could have been edited by hand: the path is checked like any other.
        candidates = (staged_path(out, row.path), safe_dest(out, row.path))
    except UnsafePath:
        return None
    if not any(same_file(path, row.sha256) for path in candidates):
        return None
    return dataclasses.replace(row, status=RESUMED, error="")


def commit(out: Path, rows: list[Row]) -> None:
    """Move every present row's staged file into ``tiles/`` (each rename atomic); check the rest are there."""
    for row in rows:
        if row.status not in PRESENT:
            continue
        try:
            final, staged = safe_dest(out, row.path), staged_path(out, row.path)
        except UnsafePath as exc:
            raise DownloadError(f"{out}: cannot place {row.path}: {exc}") from None
        if same_file(staged, row.sha256):
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                safe_dest(out, row.path)  # re-checked: mkdir must not have met a link planted meanwhile
                os.replace(staged, final)
            except (OSError, UnsafePath) as exc:
                raise DownloadError(f"{final}: cannot move the new tile into place: {exc}") from None
        elif not same_file(final, row.sha256):
            raise DownloadError(f"{final}: missing or changed while the download ran (sha256 differs); rerun")


def remove_stale(out: Path, rows: list[Row]) -> int:
    """Delete files and links under ``out/tiles`` that no present row names (earlier configs); return the count.

    Runs only after a successful run. Never follows a link: a symlink found below ``tiles/`` is
    itself stale (this stage never makes one) and is removed as a link, its target untouched.
    """
    tiles = out / TILES
    if tiles.is_symlink():
        raise DownloadError(f"{tiles} is a symlink: refusing to clean it")
    if not tiles.is_dir():
        return 0
    keep = {os.path.normpath(out / row.path) for row in rows if row.status in PRESENT}
    removed = 0
    for dirpath, dirnames, filenames in os.walk(tiles, topdown=False, followlinks=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            if os.path.normpath(path) not in keep or os.path.islink(path):
                os.unlink(path)
                removed += 1
        if dirpath != str(tiles) and not os.listdir(dirpath):
            os.rmdir(dirpath)
    return removed


def finish(out: Path, source: str, rows: list[Row], journal: Journal, seconds: float, max_failed: float,
           planned: int | None = None, labelled: bool = False) -> Summary:
    """On success: commit staged tiles, write the manifest, drop stale files, staging and journal.

    With ``labelled`` both manifests get a ``label`` column after the others (else exactly :data:`FIELDS`).

    On failure (no tiles, more failures than ``max_failed``, or a run stopped early with fewer
    rows than the ``planned`` tiles): write this run's rows to ``manifest.failed.csv``, keep the
    staging and journal for a resume, touch nothing else, and raise DownloadError.
    """
    rows.sort(key=lambda r: (r.path, r.source))  # in place: a sorted copy would hold every row twice
    summary = Summary(
        source=source,
        out=out,
        counts=count_statuses(rows),
        total_bytes=sum(r.bytes for r in rows if r.status in PRESENT),
        seconds=seconds,
    )
    problem = None
    attempted = sum(n for status, n in summary.counts.items() if status != SKIPPED)
    if planned is not None and attempted < planned:
        bad = [r for r in rows if r.status in BAD]
        first = f"; first: {bad[0].source}: {bad[0].error}" if bad else ""
        problem = (f"stopped early: {len(bad)} of {planned} planned tiles failed, more than "
                   f"download.max_failed_fraction={max_failed:g} allows; {planned - attempted} not attempted{first}")
    elif not any(r.status in PRESENT for r in rows):
        problem = f"source '{source}' produced no tiles"
    elif summary.failed_fraction > max_failed:
        bad = [r for r in rows if r.status in BAD]
        problem = (f"{len(bad)} of {len(rows)} tiles failed ({summary.failed_fraction:.1%} > "
                   f"download.max_failed_fraction={max_failed:g}); first: {bad[0].source}: {bad[0].error}")
    if problem is not None:
        journal.close()
        _write_manifest(out / FAILED_MANIFEST, rows, labelled)
        kept = f"{out / MANIFEST} and {out / TILES} are kept as the last successful run left them" \
            if (out / MANIFEST).exists() else f"nothing was added to {out / TILES}"
        which = "every row is" if planned is None or attempted >= planned else "the rows of the tiles tried are"
        raise DownloadError(f"{problem}; {which} in {out / FAILED_MANIFEST}; {kept}")
    commit(out, rows)
    _write_manifest(out / MANIFEST, rows, labelled)
    journal.close_and_remove()
    remove_stale(out, rows)
    (out / FAILED_MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(out / SCRATCH, ignore_errors=True)
    return summary


def _write_manifest(path: Path, rows: list[Row], labelled: bool = False) -> None:
    fields = FIELDS + (LABEL,) if labelled else FIELDS
    try:
        write_csv_atomic(path, ({k: getattr(r, k) for k in fields} for r in rows), fields)
    except OSError as exc:
        raise DownloadError(f"{path}: cannot write: {exc.strerror or exc}") from None
