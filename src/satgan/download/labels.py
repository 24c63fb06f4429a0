"""Class labels for the folder and archive sources (``download.labels``), recorded in manifest.csv.

- ``none``: no label; the manifest has exactly the columns it always had.
- ``folder``: a tile's label is the first folder of its path under the source's root (the folder
  ``download.folder.path`` or the archive's top level): ``forest/a001.jpg`` is ``forest``. A tile
  directly at the root has no class folder and becomes a ``refused`` row saying so.
- ``csv``: labels come from the CSV file ``download.labels_csv`` with columns ``path,label``, one
  row per tile, ``path`` relative to the same root (``forest/a001.jpg``, spelled as the manifest
  would: separators unified, NFC). A tile the CSV does not list is a ``refused`` row; a CSV
  that cannot be read, lacks a column, repeats a path or has an empty label stops the stage
  with one line naming the file and the line.

With a label mode other than ``none`` the manifest gets a ``label`` column, empty on rows with
no tile (failed, refused, skipped). Refused rows count towards ``download.max_failed_fraction``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import unicodedata
from pathlib import Path

from satgan.download.output import PRESENT, REFUSED, TILES, Row, member_path
from satgan.errors import DataError
from satgan.fsutil import UnsafePath, read_regular

CSV_COLUMNS = ("path", "label")


def _bad_label(label: str) -> str | None:
    """Why ``label`` cannot be a class name (empty, surrounding spaces, a control character), or None."""
    if not label:
        return "empty label"
    if label != label.strip():
        return f"label {label!r} has leading or trailing spaces"
    if any(unicodedata.category(ch) == "Cc" for ch in label):
        return f"label {label!r} has a control character"
    return None


def read_labels_csv(path: str | Path) -> dict[str, str]:
    """``relative path -> label`` from a ``path,label`` CSV; DataError (one line, naming file and line) when malformed."""
    path = Path(path)
    try:
        text = read_regular(path).decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a byte-order mark
    except FileNotFoundError:
        raise DataError(f"download.labels_csv: {path}: not found") from None
    except (OSError, UnsafePath, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"download.labels_csv: {path}: cannot read: {exc}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    table: dict[str, str] = {}
    try:
        header = next(reader, [])
        if [h.strip() for h in header] != list(CSV_COLUMNS):
            raise DataError(f"download.labels_csv: {path}: expected the header row path,label, got {','.join(header)!r}")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2:
                raise DataError(f"download.labels_csv: {path}: line {line}: expected 2 cells (path,label), got {len(row)}")
            try:
                key = member_path(row[0])
            except ValueError as exc:
                raise DataError(f"download.labels_csv: {path}: line {line}: {exc}") from None
            why = _bad_label(row[1])
            if why is not None:
                raise DataError(f"download.labels_csv: {path}: line {line}: {why}")
            if key in table:
                raise DataError(f"download.labels_csv: {path}: line {line}: {key!r} is listed twice")
            table[key] = row[1]
    except csv.Error as exc:
        raise DataError(f"download.labels_csv: {path}: not a valid CSV: {exc}") from None
    return table


def label_rows(rows: list[Row], mode: str, labels_csv: str) -> list[Row]:
    """``rows`` with each present tile's ``label`` set by ``mode`` (see the module docstring); unlabelled tiles refused.

    ``none`` returns ``rows`` unchanged.
    """
    if mode == "none":
        return rows
    table = read_labels_csv(labels_csv) if mode == "csv" else {}
    out = []
    prefix = f"{TILES}/"
    for row in rows:
        if row.status not in PRESENT:
            out.append(row)
            continue
        member = row.path[len(prefix):] if row.path.startswith(prefix) else row.path
        if mode == "folder":
            parts = member.split("/")
            label = parts[0] if len(parts) > 1 else ""
            why = None if label else ("no class folder: download.labels is 'folder', so every tile must sit in a "
                                      "folder named after its class under the root")
        else:
            label = table.get(member, "")
            why = None if label else f"not listed in download.labels_csv {labels_csv}"
        if why is None:
            why = _bad_label(label)
        if why is not None:
            out.append(Row.failed("", row.source, why, status=REFUSED))
        else:
            out.append(dataclasses.replace(row, label=label))
    return out
