"""HTTP(S) fetching with the standard library: timeouts, retries with backoff, Retry-After, size caps.

Every request has a wall-clock limit (``timeout_s``) covering connect, headers and body together,
so a server that drips bytes cannot hold a request past it. Transient problems (5xx, 408, 429,
timeouts, connection resets, a body shorter than its Content-Length) are retried with
exponential backoff; a 429's Retry-After is honoured up to ``max_retry_after_s``. Permanent problems (404 and other 4xx, a non-image response) fail at
once. Either way the caller gets a :class:`FetchError` whose message names the URL and reason.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import io
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from satgan.download.params import HttpParams
from satgan.errors import one_line

CHUNK = 1 << 16  # bytes per read of a response body
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
    """A URL could not be fetched; ``transient`` says whether a retry might help.

    ``reason`` is one line (it becomes a manifest CSV cell): urllib's redirect-loop message, for
    one, spans three.
    """

    def __init__(self, url: str, reason: str, transient: bool, retry_after: float | None = None) -> None:
        reason = one_line(reason)
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


# The wall-clock deadline of the request this thread is making (urllib is synchronous: one request,
# redirects included, runs on one thread), so the connection classes below can find it.
_local = threading.local()


class _Deadline:
    """A wall-clock limit on one request: when it passes, every socket the request opened is shut down.

    A socket timeout bounds each read, not the request: a server dripping one byte per second
    never trips it. Shutting the socket down from a timer thread wakes the blocked read (it sees
    end of file), wherever the request is: connecting, TLS, headers, redirects or the body.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        _local.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _local.deadline = None

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            socks = list(self._socks)
        for sock in socks:
            _shutdown(sock)

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down when the deadline passes (at once if it already has)."""
        with self._lock:
            self._socks.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _WatchedConnection:
    """Mixin for http.client connections: each new socket is handed to this thread's :class:`_Deadline`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        create = self._create_connection  # type: ignore[has-type]

        def create_watched(*a: Any, **k: Any) -> socket.socket:
            sock = create(*a, **k)
            deadline = getattr(_local, "deadline", None)
            if deadline is not None:
                deadline.watch(sock)
            return sock

        self._create_connection = create_watched


class _WatchedHTTPConnection(_WatchedConnection, http.client.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, http.client.HTTPSConnection):
    pass


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):  # noqa: ANN001, ANN201, D102 (urllib's signature)
        return self.do_open(_WatchedHTTPConnection, req)


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):  # noqa: ANN001, ANN201, D102 (urllib's signature)
        return self.do_open(_WatchedHTTPSConnection, req, context=self._context)


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_HttpOnlyRedirects, _WatchedHTTPHandler, _WatchedHTTPSHandler)


@dataclass(frozen=True)
class Fetcher:
    """Fetches URLs under one :class:`HttpParams`; thread-safe (no shared connection state).

    ``max_bytes`` / ``timeout_s`` override the response-size cap and the per-request wall-clock
    limit (an archive is one big request with its own caps); ``*_key`` are the params keys that
    set them, named in error messages.
    """

    http: HttpParams
    max_bytes: int | None = None
    max_bytes_key: str = "download.http.max_response_bytes"
    timeout_s: float | None = None
    timeout_key: str = "download.http.timeout_s"
    # Built once: its handlers keep no per-request state, so threads can share it.
    opener: urllib.request.OpenerDirector = field(default_factory=_opener, compare=False, repr=False)

    def get_once(self, url: str, sink: HashingSink | None = None) -> tuple[bytes, str]:
        """One GET of ``url`` within the wall-clock limit: (body, content type), or FetchError saying whether to retry.

        With ``sink`` the body is streamed into it (the returned body is then empty), so a large
        response never sits in memory; the size cap and the wall-clock limit apply all the same.
        """
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise FetchError(url, f"refused non-http(s) URL scheme {scheme!r}", transient=False)
        limit = self.http.timeout_s if self.timeout_s is None else self.timeout_s
        with _Deadline(limit) as deadline:
            try:
                result = self._get_once(url, limit, sink)
            except (FetchError, OSError, http.client.HTTPException):
                if not deadline.expired:
                    raise
                result = None
            if deadline.expired:  # whatever the cut-off socket made the request raise or return
                raise FetchError(url, f"timed out after {limit:g} s ({self.timeout_key}, wall clock)",
                                 transient=True) from None
        assert result is not None
        return result

    def _get_once(self, url: str, limit: float, sink: HashingSink | None) -> tuple[bytes, str]:
        cap = self.http.max_response_bytes if self.max_bytes is None else self.max_bytes
        request = urllib.request.Request(url, headers={"User-Agent": self.http.user_agent, "Accept": "image/*,*/*"})
        try:
            with self.opener.open(request, timeout=limit) as response:
                content_type = response.headers.get_content_type()
                declared = response.headers["Content-Length"]
                if declared is not None and declared.isdigit() and int(declared) > cap:
                    raise FetchError(url, f"Content-Length {declared} exceeds {self.max_bytes_key}={cap}", False)
                if sink is None:
                    body = read_capped(response, cap + 1)
                    size = len(body)
                else:
                    body, size = b"", stream_capped(response, sink, cap + 1)
                if size > cap:
                    raise FetchError(url, f"body exceeds {self.max_bytes_key}={cap}", transient=False)
                if declared is not None and declared.isdigit() and size != int(declared):
                    raise FetchError(url, f"truncated body: {size} of {declared} bytes", transient=True)
                return body, content_type
        except urllib.error.HTTPError as exc:
            exc.close()
            retry_after = parse_retry_after(exc.headers["Retry-After"]) if exc.headers is not None else None
            raise FetchError(url, f"HTTP {exc.code} {exc.reason}", exc.code in RETRY_STATUS, retry_after) from None
        except http.client.IncompleteRead as exc:
            raise FetchError(url, f"truncated body: got {len(exc.partial)} bytes, more expected", True) from None
        except (TimeoutError, socket.timeout):
            raise FetchError(url, f"timed out after {limit:g} s ({self.timeout_key})", transient=True) from None
        except (ConnectionError, http.client.HTTPException) as exc:
            raise FetchError(url, f"connection error: {type(exc).__name__}: {exc}", transient=True) from None
        except urllib.error.URLError as exc:
            # DNS failures, refused connections and TLS errors arrive wrapped; a refused or reset
            # connection may be a restarting server, so those are worth a retry.
            transient = isinstance(exc.reason, (TimeoutError, ConnectionError))
            raise FetchError(url, f"{type(exc.reason).__name__}: {exc.reason}", transient) from None

    def get(self, url: str) -> tuple[bytes, str]:
        """GET ``url``, retrying transient failures: (body, content type), or the last FetchError."""
        return self._retrying(url, lambda: self.get_once(url))

    def get_to_file(self, url: str, fh: BinaryIO) -> tuple[str, int]:
        """GET ``url`` into the open file ``fh``, retrying transient failures: (sha256 hex, bytes), or the last FetchError.

        The body is hashed while it streams to ``fh`` in 64 KiB chunks, so memory stays flat
        whatever its size; ``fh`` is rewound and truncated before every attempt.
        """
        sink = HashingSink(fh)

        def attempt() -> tuple[bytes, str]:
            sink.reset()
            return self.get_once(url, sink)

        self._retrying(url, attempt)
        return sink.hexdigest(), sink.size

    def _retrying(self, url: str, attempt_once: Callable[[], tuple[bytes, str]]) -> tuple[bytes, str]:
        attempt = 0
        while True:
            try:
                return attempt_once()
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


class HashingSink:
    """Where a streamed body goes: a binary file, with the sha256 and size of what was written."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.reset()

    def reset(self) -> None:
        """Start over (a retry): empty the file and the hash."""
        self.fh.seek(0)
        self.fh.truncate()
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` to the file and the hash."""
        self._digest.update(chunk)
        self.fh.write(chunk)
        self.size += len(chunk)

    def hexdigest(self) -> str:
        """The sha256 of everything written since the last reset."""
        return self._digest.hexdigest()


def stream_capped(response: http.client.HTTPResponse, sink: HashingSink | io.BytesIO, limit: int) -> int:
    """Copy the body into ``sink`` until EOF or ``limit`` bytes, in 64 KiB chunks; return the bytes copied."""
    total = 0
    while total < limit:
        chunk = response.read(min(CHUNK, limit - total))
        if not chunk:
            break
        sink.write(chunk)
        total += len(chunk)
    return total


def read_capped(response: http.client.HTTPResponse, limit: int) -> bytes:
    """Read until EOF or ``limit`` bytes, in chunks, so a huge or endless body cannot exhaust memory."""
    buffer = io.BytesIO()
    stream_capped(response, buffer, limit)
    return buffer.getvalue()
