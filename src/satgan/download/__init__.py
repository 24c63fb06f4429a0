"""Stage 1, download: fill ``<out>/tiles/`` from the configured source and write ``<out>/manifest.csv``.

Sources (``download.source``): ``sample`` (the embedded Sentinel-2 scene, no network), ``xyz``
(an XYZ tile server), ``folder`` (a local tree) and ``archive`` (a pinned zip/tar). See
:mod:`satgan.download.output` for the output layout and manifest statuses.
"""

from __future__ import annotations

import time
from pathlib import Path

from satgan.download.archive import archive_rows
from satgan.download.labels import label_rows
from satgan.download.output import Journal, Row, Summary, finish, prepare_output
from satgan.download.params import DownloadParams, xyz_tile_count
from satgan.download.sources import folder_rows, sample_rows, xyz_rows

__all__ = ["DownloadParams", "Summary", "run_download"]


def run_download(params: DownloadParams, out: str | Path) -> Summary:
    """Download per ``params`` into ``out``; return the summary or raise DownloadError/DataError.

    New tiles are staged and moved into ``out/tiles`` only when the run succeeded; then files
    under ``out/tiles`` that this run did not produce are removed. A failed run (too many
    failures, or an error) leaves ``out/tiles`` and ``out/manifest.csv`` as they were, and writes
    its rows to ``out/manifest.failed.csv``. Nothing outside ``out`` is written or deleted.
    """
    out = Path(out)
    prepare_output(out)
    start = time.monotonic()
    journal = Journal(out)
    rows: list[Row]
    planned = None  # known up front only for xyz (a bbox), where a run may stop early
    if params.source == "sample":
        rows = sample_rows(out, params.sample, workers=2)
    elif params.source == "xyz":
        rows = xyz_rows(out, params, journal)
        planned = xyz_tile_count(params.xyz.bbox, params.xyz.zoom)
    elif params.source == "folder":
        rows = folder_rows(out, params.folder)
    else:
        rows = archive_rows(out, params)
    rows = label_rows(rows, params.labels, params.labels_csv)
    return finish(out, params.source, rows, journal, time.monotonic() - start, params.max_failed_fraction, planned,
                  labelled=params.labels != "none")
