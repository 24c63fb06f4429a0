"""The archive source: a sha256-pinned .zip / .tar(.gz|.bz2|.xz), fetched or local, extracted defensively.

Extraction refuses, each as a ``refused`` manifest row with its reason: absolute paths, ``..``,
paths resolving outside the out dir, symlinks, hardlinks, devices, FIFOs, encrypted members,
duplicates, and anything past the member-count or total-size cap. Duplicates are judged on the
path as written: ``./b.jpg`` is ``b.jpg``, ``c//d.jpg`` and ``c/./d.jpg`` are ``c/d.jpg``, and
names differing only in case or Unicode normalisation are one file on macOS and Windows. Sizes are checked twice: the
size the archive declares before reading, and the bytes actually produced while streaming, so
a member that lies about its size (a zip bomb) is stopped at the cap, not after.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tqdm import tqdm

from satgan.download.fetch import Fetcher, FetchError
from satgan.download.output import OK, REFUSED, SCRATCH, SKIPPED, TILES, PathClaims, Row, member_path, same_file, staged_path
from satgan.download.params import DownloadParams
from satgan.download.runner import FailureWatch, WatchedRows
from satgan.errors import DataError, DownloadError
from satgan.fsutil import atomic_path, sha256_file

CHUNK = 1 << 16


@dataclass(frozen=True)
class Member:
    """One archive entry, format-neutral: name, kind (file/dir/symlink/...), declared size and an opener."""

    name: str
    kind: str
    size: int
    open: Callable[[], IO[bytes]]


def zip_members(zf: zipfile.ZipFile) -> Iterator[Member]:
    """The entries of a zip, with their Unix file type from the external attributes."""
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if info.is_dir():
            kind = "dir"
        elif stat.S_ISLNK(mode):
            kind = "symlink"
        elif stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # 0: no Unix type recorded (e.g. made on Windows)
            kind = "device or special file"
        elif info.flag_bits & 0x1:
            kind = "encrypted file"
        else:
            kind = "file"
        yield Member(info.filename, kind, info.file_size, lambda info=info: zf.open(info))


def tar_members(tf: tarfile.TarFile) -> Iterator[Member]:
    """The entries of a tar, streamed (never ``extractall``, which would trust the names)."""
    for info in tf:
        if info.isdir():
            kind = "dir"
        elif info.issym():
            kind = "symlink"
        elif info.islnk():
            kind = "hardlink"
        elif info.isreg():
            kind = "file"
        else:
            kind = "device or special file"
        yield Member(info.name, kind, info.size, lambda info=info: tf.extractfile(info))


def fetch_archive(out: Path, params: DownloadParams) -> Path:
    """The archive on local disk with the pinned sha256: the local path, or a fetched copy under out/.download.

    A URL is streamed to a temp file in out/.download (the staging area), hashed on the way,
    and renamed to out/.download/archive only when its sha256 matches the pin: the archive is
    never held in memory, and a failed, cut-off, oversized or mismatched fetch leaves no file.
    """
    location, expected = params.archive.location, params.archive.sha256
    if "://" in location:
        path = out / SCRATCH / "archive"
        if not same_file(path, expected):  # a fetched copy from an earlier run is reused
            _fetch_to(path, location, expected, params)
        return path
    path = Path(location)
    if not path.is_file():
        raise DataError(f"download.archive.location: {path}: file not found")
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise DataError(f"download.archive.location: {path}: cannot read: {exc.strerror or exc}") from None
    _check_pin(location, actual, expected)
    return path


def _fetch_to(path: Path, url: str, expected: str, params: DownloadParams) -> None:
    """Stream ``url`` into a temp file next to ``path``; rename it to ``path`` only if its sha256 is ``expected``."""
    # The archive is one request far bigger than a tile: it has its own size cap (the extraction
    # cap) and wall-clock limit, and errors name those keys.
    fetcher = Fetcher(params.http, max_bytes=params.archive.max_total_bytes,
                      max_bytes_key="download.archive.max_total_bytes", timeout_s=params.archive.timeout_s,
                      timeout_key="download.archive.timeout_s")
    try:
        # atomic_path removes the temp file on any exception (Ctrl-C included).
        with fetcher, atomic_path(path) as tmp, open(tmp, "wb") as fh:
            actual, _ = fetcher.get_to_file(url, fh)
            _check_pin(url, actual, expected)
            fh.flush()
            os.fsync(fh.fileno())
    except FetchError as exc:
        raise DownloadError(f"download.archive.location: {exc}") from None
    except OSError as exc:  # writing the temp file: a full disk, a read-only folder
        raise DownloadError(f"{path.parent}: cannot store the fetched archive: {exc.strerror or exc}") from None


def _check_pin(location: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise DownloadError(
            f"{location}: sha256 is {actual}, but download.archive.sha256 pins {expected} "
            "(wrong or changed archive; update the pin only if you trust the new file)"
        )


def extract_member(member: Member, dest: Path, limit: int) -> tuple[str, int] | str:
    """Stream ``member`` to ``dest`` atomically: (sha256, bytes), or the reason it was refused."""
    digest = hashlib.sha256()
    written = 0
    with atomic_path(dest) as tmp, member.open() as src, open(tmp, "wb") as dst:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > limit or written > member.size:
                # Abandon before writing the excess: atomic_path deletes the temp file on the exception.
                raise _Refused(f"produced more than its declared {member.size} bytes or the size cap")
            digest.update(chunk)
            dst.write(chunk)
        if written != member.size:
            raise _Refused(f"declared {member.size} bytes but produced {written}")
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest(), written


class _Refused(Exception):
    """Internal: stop streaming a member that broke a size rule; becomes a refused row."""


def archive_rows(out: Path, params: DownloadParams) -> list[Row]:
    """Verify and open the archive, then extract its image members under tiles/, one row per member."""
    arch = params.archive
    path = fetch_archive(out, params)
    try:
        return _extract_all(out, params, path)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        # A corrupt index or header ends the whole archive; single bad members are rows instead.
        raise DataError(f"{arch.location}: corrupt archive: {type(exc).__name__}: {exc}") from None


def _extract_all(out: Path, params: DownloadParams, path: Path) -> list[Row]:
    """Extract every member of the verified archive at ``path`` (see :func:`archive_rows`)."""
    arch = params.archive
    if zipfile.is_zipfile(path):
        container: zipfile.ZipFile | tarfile.TarFile = zipfile.ZipFile(path)
        members = zip_members(container)
    elif tarfile.is_tarfile(path):
        container = tarfile.open(path, mode="r:*")
        members = tar_members(container)
    else:
        raise DataError(f"{arch.location}: neither a zip nor a tar archive")
    bar = tqdm(members, desc="download archive", unit="member", disable=None)
    rows = WatchedRows(FailureWatch(None, 1.0, bar))  # the failure count and first error on the bar
    claims = PathClaims()
    files = 0
    budget = arch.max_total_bytes
    with container:
        for m in bar:
            source = f"{arch.location}!{m.name}"

            def refuse(reason: str, source: str = source) -> None:
                rows.append(Row.failed("", source, reason, status=REFUSED))

            if m.kind == "dir":
                continue
            files += 1
            if m.kind != "file":
                refuse(f"{m.kind} members are not extracted")
                continue
            try:
                # The name as written (./b.jpg, c//d.jpg and c/./d.jpg are b.jpg and c/d.jpg), then
                # checked as a path under tiles/ and in the staging folder.
                relpath = f"{TILES}/{member_path(m.name)}"
                dest = staged_path(out, relpath)
            except ValueError as exc:  # UnsafePath is a ValueError
                refuse(str(exc))
                continue
            if not m.name.lower().endswith(arch.extensions):
                rows.append(Row.failed("", source, "extension not in download.archive.extensions", status=SKIPPED))
                continue
            earlier = claims.claim(relpath, m.name)
            if earlier is not None:
                refuse(f"duplicate member: {m.name!r} is the same file as {earlier!r} once written "
                       "(after normalising the path, and on a case-insensitive filesystem)")
                continue
            if files > arch.max_members:
                refuse(f"more than download.archive.max_members={arch.max_members} files")
                continue
            if m.size > budget:
                refuse(f"declared {m.size} bytes exceed what is left of download.archive.max_total_bytes")
                continue
            try:
                result = extract_member(m, dest, budget)
            except _Refused as exc:
                refuse(str(exc))
                continue
            except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError, RuntimeError,
                    NotImplementedError) as exc:  # RuntimeError/NotImplementedError: zipfile's encryption/method errors
                rows.append(Row.failed("", source, f"cannot extract: {type(exc).__name__}: {exc}"))
                continue
            sha, size = result
            budget -= size
            rows.append(Row(relpath, source, sha, size, OK, ""))
    return rows
