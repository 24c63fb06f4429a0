"""Atomic file writes, confined reads and hashing shared by every stage.

A stage killed at any instant must never leave a half-written file under its output
folder: every write goes to a temporary file in the same directory and is moved into
place with :func:`os.replace`, which is atomic on POSIX filesystems. Files that must change
together (an array and its sidecar) are renamed together at the end by :func:`atomic_group`,
so a run that fails half way keeps the previous set whole.

Temporary files are created with mode ``0o666`` and the process umask applies, as for any
file ``open()`` creates (``tempfile.mkstemp`` would force ``0o600``, unreadable to the rest of a
shared workspace). Reads of files named by a manifest go through :func:`safe_join` and
:func:`open_regular`: a path must stay inside its root folder, symlinks are not followed,
and only regular files are opened (never a FIFO, which would block, or a device).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import secrets
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from satgan.errors import DataError


class UnsafePath(ValueError):
    """A path that would leave its root folder, follow a symlink, or open something other than a regular file."""


class FileTooLarge(ValueError):
    """A regular file larger than the cap its reader allows."""


def _create_temp(dest: Path, suffix: str) -> Path:
    """Create an empty temp file next to ``dest`` (mode 0o666 minus the umask) and return its path."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}{suffix}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{dest.parent}: could not create a unique temporary file for {dest.name}")


class AtomicGroup:
    """Temp files for several destinations, renamed into place together by :func:`atomic_group`."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def path(self, dest: str | Path, suffix: str = "") -> Path:
        """A new empty temp file next to ``dest``; it replaces ``dest`` when the group commits.

        ``suffix`` lets writers that infer the format from the extension (``np.save``) see it.
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temp(dest, suffix)
        self._pending.append((tmp, dest))
        return tmp

    def _commit(self) -> None:
        for tmp, dest in self._pending:
            os.replace(tmp, dest)
        self._pending.clear()

    def _abort(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending.clear()


@contextlib.contextmanager
def atomic_group() -> Iterator[AtomicGroup]:
    """Collect temp files (``group.path(dest)``); on success rename them all into place, in order.

    On an exception every temp file is removed and every destination is left as it was, so a
    failed run never replaces half of a set of files that belong together.
    """
    group = AtomicGroup()
    try:
        yield group
    except BaseException:
        group._abort()
        raise
    try:
        group._commit()
    except BaseException:
        group._abort()
        raise


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success it replaces ``dest`` atomically.

    On an exception the temporary file is removed and ``dest`` is left untouched.
    ``suffix`` lets writers that infer the format from the extension (``np.save``) see it.
    """
    with atomic_group() as group:
        yield group.path(dest, suffix)


def write_bytes_atomic(dest: str | Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically (fsync'd before the rename)."""
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text_atomic(dest: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``dest`` atomically."""
    write_bytes_atomic(dest, text.encode("utf-8"))


def write_json_atomic(dest: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``dest`` atomically."""
    write_text_atomic(dest, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str]) -> None:
    """Write ``rows`` (mappings with exactly ``fieldnames``) as CSV to ``path`` (e.g. a temp file of a group)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fieldnames), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def write_csv_atomic(dest: str | Path, rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str]) -> None:
    """Write ``rows`` (mappings with exactly ``fieldnames``) as CSV to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        write_csv(tmp, rows, fieldnames)


def safe_join(root: str | Path, relpath: str) -> Path:
    """``root / relpath``, or :class:`UnsafePath` with the reason when it would leave ``root``.

    Checks the string (empty, NUL, absolute, a drive letter, ``..``; backslashes count as
    separators) and then the resolved path: it must resolve inside ``root`` to exactly the
    path spelled, so no symlink anywhere below ``root`` (a planted folder link, or the file
    itself) is followed, whether it points outside or back inside.
    """
    root = Path(root)
    if not relpath or "\x00" in relpath:
        raise UnsafePath("empty path or NUL byte in path")
    if relpath.startswith(("/", "\\")) or (len(relpath) > 1 and relpath[1] == ":"):
        raise UnsafePath(f"absolute path {relpath!r}")
    parts = [p for p in relpath.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePath(f"path {relpath!r} contains '..'")
    if not parts:
        raise UnsafePath(f"path {relpath!r} names the folder itself")
    resolved_root = root.resolve()
    spelled = resolved_root.joinpath(*parts)
    dest = spelled.resolve()
    if not dest.is_relative_to(resolved_root) or dest == resolved_root:
        raise UnsafePath(f"path {relpath!r} resolves outside {root}")
    if dest != spelled:
        raise UnsafePath(f"path {relpath!r} goes through a symlink inside {root} (not followed)")
    return root.joinpath(*parts)


@contextlib.contextmanager
def open_regular(path: str | Path, max_bytes: int | None = None) -> Iterator[IO[bytes]]:
    """Open ``path`` for binary reading only if it is a regular file, not a symlink, within ``max_bytes``.

    Raises :class:`UnsafePath` (a symlink, FIFO, device, socket or directory), :class:`FileTooLarge`,
    or the ``OSError`` of a missing or unreadable file. ``O_NONBLOCK`` makes opening a FIFO return
    at once (so it can be refused) instead of waiting for a writer.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if os.path.islink(path):  # O_NOFOLLOW on a symlink: ELOOP
            raise UnsafePath(f"{path} is a symlink (not followed)") from None
        raise exc from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{path} is not a regular file ({_kind(st.st_mode)})")
        if max_bytes is not None and st.st_size > max_bytes:
            raise FileTooLarge(f"{path} is {st.st_size} bytes, more than the cap of {max_bytes}")
        os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def read_regular(path: str | Path, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular, non-symlink file (see :func:`open_regular`); never more than ``max_bytes``."""
    with open_regular(path, max_bytes) as fh:
        data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:  # the file grew after the size check
        raise FileTooLarge(f"{path} grew past the cap of {max_bytes} bytes while being read")
    return data


MAX_JSON_BYTES = 64 << 20  # satgan's JSON files are kilobytes (metrics.json ~10 kB); a bigger one is not ours


def read_json_bytes(path: str | Path, what: str = "JSON file", max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of a regular, non-symlink file of at most ``max_bytes``; anything else is one DataError line naming it."""
    try:
        return read_regular(path, max_bytes)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except (UnsafePath, FileTooLarge) as exc:
        raise DataError(f"{path}: {what} refused: {exc}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None


def parse_json_object(raw: bytes, path: str | Path, what: str = "JSON file") -> dict[str, Any]:
    """``raw`` (read from ``path``) as a JSON object; not UTF-8, not JSON, too deep or not an object: one DataError line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: {what} is not UTF-8 text") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: {what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise DataError(f"{path}: {what} is nested too deeply to be a satgan file") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a JSON object ({what}), got {type(doc).__name__}")
    return doc


def read_json(path: str | Path, what: str = "JSON file", max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The one JSON reader: a JSON object from a regular file (:func:`read_json_bytes`, :func:`parse_json_object`).

    Every failure (missing, a FIFO or symlink, too large, not UTF-8, not JSON, not an object) is a
    :class:`satgan.errors.DataError` whose one line names the file and ``what`` it should be.
    """
    return parse_json_object(read_json_bytes(path, what, max_bytes), path, what)


def sha256_regular(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a regular, non-symlink file (see :func:`open_regular`), read in chunks."""
    h = hashlib.sha256()
    with open_regular(path) as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Read a CSV written by :func:`write_csv_atomic` into a list of dicts (a regular file, never a symlink)."""
    with open_regular(path) as fh:
        text = fh.read().decode("utf-8")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of the file at ``path``, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
