"""HTTP(S) fetching with the standard library: timeouts, retries with backoff, Retry-After, size caps.

Transient problems (5xx, 408, 429, timeouts, connection resets, a body shorter than its
Content-Length) are retried with exponential backoff; a 429's Retry-After is honoured up to
``max_retry_after_s``. Permanent problems (404 and other 4xx, a non-image response) fail at
once. Either way the caller gets a :class:`FetchError` whose message names the URL and reason.
"""

from __future__ import annotations

import email.utils
import http.client
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from satgan.download.params import HttpParams

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Servers send odd but harmless content types for tiles; the signature check below is the real test.
IMAGE_CONTENT_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")
SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": ".png",
    b"\xff\xd8\xff": ".jpg",
    b"GIF87a": ".gif",
    b"GIF89a": ".gif",
    b"II*\x00": ".tif",
    b"MM\x00*": ".tif",
}


class FetchError(Exception):
    """A URL could not be fetched; ``transient`` says whether a retry might help."""

    def __init__(self, url: str, reason: str, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(f"{url}: {reason}")
        self.reason = reason
        self.transient = transient
        self.retry_after = retry_after


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s): urllib would otherwise follow one to ftp://."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, D102 (urllib's signature)
        scheme = urllib.parse.urlsplit(newurl).scheme
        if scheme not in ("http", "https"):
            raise FetchError(req.full_url, f"refused redirect to non-http(s) URL {newurl!r}", transient=False)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@dataclass(frozen=True)
class Fetcher:
    """Fetches URLs under one :class:`HttpParams`; thread-safe (no shared connection state)."""

    http: HttpParams
    # Built once: its handlers keep no per-request state, so threads can share it.
    opener: urllib.request.OpenerDirector = field(
        default_factory=lambda: urllib.request.build_opener(_HttpOnlyRedirects), compare=False, repr=False
    )

    def get_once(self, url: str) -> tuple[bytes, str]:
        """One GET of ``url``: (body, content type), or FetchError saying whether to retry."""
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise FetchError(url, f"refused non-http(s) URL scheme {scheme!r}", transient=False)
        request = urllib.request.Request(url, headers={"User-Agent": self.http.user_agent, "Accept": "image/*,*/*"})
        try:
            with self.opener.open(request, timeout=self.http.timeout_s) as response:
                content_type = response.headers.get_content_type()
                declared = response.headers["Content-Length"]
                if declared is not None and declared.isdigit() and int(declared) > self.http.max_response_bytes:
                    raise FetchError(url, f"Content-Length {declared} exceeds download.http.max_response_bytes", False)
                body = read_capped(response, self.http.max_response_bytes + 1)
                if len(body) > self.http.max_response_bytes:
                    raise FetchError(url, "body exceeds download.http.max_response_bytes", transient=False)
                if declared is not None and declared.isdigit() and len(body) != int(declared):
                    raise FetchError(url, f"truncated body: {len(body)} of {declared} bytes", transient=True)
                return body, content_type
        except urllib.error.HTTPError as exc:
            exc.close()
            retry_after = parse_retry_after(exc.headers["Retry-After"]) if exc.headers is not None else None
            raise FetchError(url, f"HTTP {exc.code} {exc.reason}", exc.code in RETRY_STATUS, retry_after) from None
        except http.client.IncompleteRead as exc:
            raise FetchError(url, f"truncated body: got {len(exc.partial)} bytes, more expected", True) from None
        except (TimeoutError, socket.timeout):
            raise FetchError(url, f"timed out after {self.http.timeout_s:g} s", transient=True) from None
        except (ConnectionError, http.client.HTTPException) as exc:
            raise FetchError(url, f"connection error: {type(exc).__name__}: {exc}", transient=True) from None
        except urllib.error.URLError as exc:
            # DNS failures, refused connections and TLS errors arrive wrapped; a refused or reset
            # connection may be a restarting server, so those are worth a retry.
            transient = isinstance(exc.reason, (TimeoutError, ConnectionError))
            raise FetchError(url, f"{type(exc.reason).__name__}: {exc.reason}", transient) from None

    def get(self, url: str) -> tuple[bytes, str]:
        """GET ``url``, retrying transient failures: (body, content type), or the last FetchError."""
        attempt = 0
        while True:
            try:
                return self.get_once(url)
            except FetchError as exc:
                if not exc.transient or attempt >= self.http.retries:
                    suffix = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise FetchError(url, exc.reason + suffix, exc.transient) from None
                time.sleep(self.delay(attempt, exc.retry_after))
                attempt += 1

    def get_image(self, url: str) -> tuple[bytes, str]:
        """GET ``url`` with retries and check it is an image: (body, file extension from its signature)."""
        body, content_type = self.get(url)
        if not content_type.startswith(IMAGE_CONTENT_TYPES):
            raise FetchError(url, f"not an image: Content-Type {content_type}", transient=False)
        ext = image_extension(body)
        if ext is None:
            raise FetchError(url, f"not an image: body starts with {body[:16]!r}", transient=False)
        return body, ext

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry ``attempt + 1``: Retry-After (capped) or exponential backoff."""
        if retry_after is not None:
            return min(retry_after, self.http.max_retry_after_s)
        return self.http.backoff_s * (2**attempt)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unparsable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def image_extension(body: bytes) -> str | None:
    """The file extension an image body's magic bytes announce (PNG, JPEG, GIF, TIFF, WebP), or None."""
    for magic, ext in SIGNATURES.items():
        if body.startswith(magic):
            return ext
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return ".webp"
    return None


def read_capped(response: http.client.HTTPResponse, limit: int) -> bytes:
    """Read until EOF or ``limit`` bytes, in chunks, so a huge or endless body cannot exhaust memory."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = response.read(min(1 << 16, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
