"""HTTP(S) fetching through a urllib3 connection pool: timeouts, retries with backoff, Retry-After, size caps.

One :class:`Fetcher` holds one urllib3 ``PoolManager`` shared by the download's worker threads:
at most ``http.concurrency`` kept-alive connections per host, each reused tile after tile
(urllib opened, and closed, one connection per tile: a TCP, and for https a TLS, handshake each).

Every request has a wall-clock limit (``timeout_s``) covering connect, headers and body together,
so a server that drips bytes cannot hold a request past it (urllib3's own timeouts bound each
socket operation, not the request). Transient problems (5xx, 408, 429, timeouts, connection
resets, a body shorter than its Content-Length) are retried with exponential backoff; a 429's
Retry-After is honoured up to ``max_retry_after_s``. Permanent problems (404 and other 4xx, a
non-image response) fail at once. Either way the caller gets a :class:`FetchError` whose message
names the URL and reason. Redirects are followed here, not by urllib3, so that each Location's
scheme is checked (only http and https) and a loop is named as one.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import IncompleteRead, NameResolutionError, NewConnectionError, ProtocolError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from satgan.download.params import HttpParams
from satgan.errors import one_line

CHUNK = 1 << 16  # bytes per read of a response body
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10  # urllib's HTTPRedirectHandler.max_redirections, which this replaces
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

    ``reason`` is one line (it becomes a manifest CSV cell), whatever a library's message spans.
    """

    def __init__(self, url: str, reason: str, transient: bool, retry_after: float | None = None) -> None:
        reason = one_line(reason)
        super().__init__(f"{url}: {reason}")
        self.reason = reason
        self.transient = transient
        self.retry_after = retry_after


# The wall-clock deadline of the request this thread is making (urllib3 is synchronous: one request,
# redirects included, runs on one thread), so the pool below can hand it each connection it lends.
_local = threading.local()


class _Deadline:
    """A wall-clock limit on one request: when it passes, the socket of every connection it holds is shut down.

    A socket timeout bounds each read, not the request: a server dripping one byte per second
    never trips it. Shutting the socket down from a timer thread wakes the blocked read (it sees
    end of file), wherever the request is: connecting, TLS, headers, redirects or the body.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._conns: list[_WatchedConnection] = []
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
            conns = list(self._conns)
        for conn in conns:
            conn.cut(self)

    def watch(self, conn: _WatchedConnection) -> None:
        """Cut ``conn`` when the deadline passes (at once if it already has), while this request still holds it."""
        with self._lock:
            self._conns.append(conn)
            expired = self.expired
        if expired:
            conn.cut(self)


class _WatchedConnection:
    """Mixin for urllib3 connections: the socket can be shut down by the deadline of the request holding it.

    The connection keeps a duplicate of its socket's descriptor (``socket.dup``): shutting that
    down shuts the one socket both name, even once TLS has wrapped (and detached) the original
    object, and it is never another thread's socket (a closed descriptor number may be reused).
    ``owner`` is the deadline of the request that checked the connection out of the pool, None
    while it sits in the pool: a deadline passing just after its request returned the connection
    cannot cut the next tile's request on it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = threading.Lock()
        self._handle: socket.socket | None = None
        self._owner: _Deadline | None = None

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        with self._guard:
            self._close_handle()
            self._handle = sock.dup()
            owner = self._owner
        if owner is not None and owner.expired:  # it passed while connecting
            self.cut(owner)
        return sock

    def claim(self, deadline: _Deadline | None) -> None:
        """The request with ``deadline`` holds this connection now (None: back in the pool)."""
        with self._guard:
            self._owner = deadline
        if deadline is not None:
            deadline.watch(self)

    def cut(self, deadline: _Deadline) -> None:
        """Shut the socket down if the request with ``deadline`` still holds this connection."""
        with self._guard:
            if self._owner is deadline and self._handle is not None:
                try:
                    self._handle.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # not connected any more

    def close(self) -> None:
        with self._guard:
            self._close_handle()
        super().close()  # type: ignore[misc]

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class _WatchedHTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedPool:
    """Mixin for urllib3 pools: a connection lent out is claimed by the borrowing thread's deadline, released on return."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        conn.claim(getattr(_local, "deadline", None))
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            conn.claim(None)
        super()._put_conn(conn)  # type: ignore[misc]


class _WatchedHTTPPool(_WatchedPool, HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(_WatchedPool, HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOL_CLASSES = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


def _manager(http: HttpParams, proxy: str | None = None) -> urllib3.PoolManager:
    """A pool of kept-alive connections per host (through ``proxy`` if given), at most ``http.concurrency`` each."""
    # block=False: a thread never waits for a connection (there are never more than concurrency
    # borrowers); retries=False: retrying (with backoff, Retry-After) and redirects are done here.
    kwargs: dict[str, Any] = {"maxsize": http.concurrency, "block": False, "retries": False,
                              "headers": {"User-Agent": http.user_agent, "Accept": "image/*,*/*"}}
    manager = urllib3.ProxyManager(proxy, **kwargs) if proxy else urllib3.PoolManager(**kwargs)
    manager.pool_classes_by_scheme = _POOL_CLASSES  # PoolManager's table of the pool class to build per scheme
    return manager


@dataclass(frozen=True)
class Fetcher:
    """Fetches URLs under one :class:`HttpParams`; thread-safe, its connection pool shared by all threads.

    ``max_bytes`` / ``timeout_s`` override the response-size cap and the per-request wall-clock
    limit (an archive is one big request with its own caps); ``*_key`` are the params keys that
    set them, named in error messages. Use it as a context manager (or call :meth:`close`) so the
    kept-alive connections are closed when the download ends.
    """

    http: HttpParams
    max_bytes: int | None = None
    max_bytes_key: str = "download.http.max_response_bytes"
    timeout_s: float | None = None
    timeout_key: str = "download.http.timeout_s"
    pool: urllib3.PoolManager = field(init=False, compare=False, repr=False)
    # The proxies urllib honoured (http_proxy, https_proxy, no_proxy), read once.
    proxies: dict[str, str] = field(default_factory=urllib.request.getproxies, compare=False, repr=False)
    _proxy_pools: dict[str, urllib3.PoolManager] = field(default_factory=dict, init=False, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pool", _manager(self.http))

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every kept-alive connection."""
        with self._lock:
            for manager in (self.pool, *self._proxy_pools.values()):
                manager.clear()

    def pool_for(self, url: str) -> urllib3.PoolManager:
        """The direct pool, or the one through the proxy that http_proxy / https_proxy name for ``url`` (unless no_proxy)."""
        parts = urllib.parse.urlsplit(url)
        proxy = self.proxies.get(parts.scheme)
        if not proxy or urllib.request.proxy_bypass(parts.netloc.rpartition("@")[2]):
            return self.pool
        if "://" not in proxy:
            proxy = "http://" + proxy  # urllib took a bare host:port as http
        with self._lock:
            if proxy not in self._proxy_pools:
                self._proxy_pools[proxy] = _manager(self.http, proxy)
            return self._proxy_pools[proxy]

    def get_once(self, url: str, sink: HashingSink | None = None) -> tuple[bytes, str]:
        """One GET of ``url`` within the wall-clock limit: (body, content type), or FetchError saying whether to retry.

        With ``sink`` the body is streamed into it (the returned body is then empty), so a large
        response never sits in memory; the size cap and the wall-clock limit apply all the same.
        """
        check_scheme(url, url)
        limit = self.http.timeout_s if self.timeout_s is None else self.timeout_s
        with _Deadline(limit) as deadline:
            try:
                result = self._get_once(url, limit, sink)
            except (FetchError, OSError, Urllib3Error):
                if not deadline.expired:
                    raise
                result = None
            if deadline.expired:  # whatever the cut-off socket made the request raise or return
                raise FetchError(url, f"timed out after {limit:g} s ({self.timeout_key}, wall clock)",
                                 transient=True) from None
        assert result is not None
        return result

    def _get_once(self, url: str, limit: float, sink: HashingSink | None) -> tuple[bytes, str]:
        visited = {url}
        target = url
        while True:
            response = self._request(url, target, limit)
            location = response.headers.get("Location")
            if response.status not in REDIRECT_STATUS or location is None:
                break
            discard(response)
            # A relative Location is resolved against the URL that sent it, as urllib did.
            new = urllib.parse.urljoin(target, location.strip())
            check_scheme(url, new, redirect=True)
            if new in visited:
                raise FetchError(url, f"HTTP {response.status} redirect to {new} would lead to an infinite loop "
                                      "(it was visited already)", transient=False)
            if len(visited) > MAX_REDIRECTS:
                raise FetchError(url, f"more than {MAX_REDIRECTS} redirects (the last to {new})", transient=False)
            visited.add(new)
            target = new
        if not 200 <= response.status < 300:
            discard(response)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise FetchError(url, f"HTTP {response.status} {response.reason}", response.status in RETRY_STATUS,
                             retry_after)
        try:
            return self._read_body(url, response, limit, sink)
        finally:
            if not response.isclosed():  # given up before the end: the connection cannot be reused
                response.close()
            response.release_conn()

    def _request(self, url: str, target: str, limit: float) -> urllib3.BaseHTTPResponse:
        """Send one GET of ``target`` (``url`` or where it redirected), headers read, body not: urllib3's errors as FetchError."""
        try:
            return self.pool_for(target).request(
                "GET", target, redirect=False, preload_content=False, decode_content=False, release_conn=False,
                timeout=urllib3.Timeout(connect=limit, read=limit))
        except NameResolutionError as exc:  # a typo in the host: retrying will not help
            raise FetchError(url, f"cannot resolve host: {exc}", transient=False) from None
        except NewConnectionError as exc:
            # A refused connection may be a restarting server: worth a retry. (A subclass of
            # urllib3's TimeoutError, so caught before it.)
            raise FetchError(url, f"connection error: {exc}", transient=True) from None
        except Urllib3Timeout:
            raise FetchError(url, f"timed out after {limit:g} s ({self.timeout_key})", transient=True) from None
        except SSLError as exc:  # a bad certificate stays bad
            raise FetchError(url, f"TLS error: {exc}", transient=False) from None
        except (ProtocolError, OSError) as exc:  # reset, or closed before the headers
            raise FetchError(url, f"connection error: {exc}", transient=True) from None
        except Urllib3Error as exc:
            raise FetchError(url, f"{type(exc).__name__}: {exc}", transient=False) from None

    def _read_body(self, url: str, response: urllib3.BaseHTTPResponse, limit: float,
                   sink: HashingSink | None) -> tuple[bytes, str]:
        cap = self.http.max_response_bytes if self.max_bytes is None else self.max_bytes
        content_type = media_type(response.headers.get("Content-Type"))
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise FetchError(url, f"Content-Length {declared} exceeds {self.max_bytes_key}={cap}", False)
        try:
            if sink is None:
                body = read_capped(response, cap + 1)
                size = len(body)
            else:
                body, size = b"", stream_capped(response, sink, cap + 1)
        except ProtocolError as exc:
            cut = exc.args[-1] if exc.args else None
            if isinstance(cut, IncompleteRead):
                raise FetchError(url, f"truncated body: got {cut.partial} bytes, {cut.expected} more expected",
                                 transient=True) from None
            raise FetchError(url, f"connection error: {exc}", transient=True) from None
        except Urllib3Timeout:
            raise FetchError(url, f"timed out after {limit:g} s ({self.timeout_key})", transient=True) from None
        except Urllib3Error as exc:  # a TLS record cut mid-body, say: worth a retry like a reset
            raise FetchError(url, f"connection error: {type(exc).__name__}: {exc}", transient=True) from None
        if size > cap:
            raise FetchError(url, f"body exceeds {self.max_bytes_key}={cap}", transient=False)
        if declared is not None and declared.isdigit() and size != int(declared):
            raise FetchError(url, f"truncated body: {size} of {declared} bytes", transient=True)
        return body, content_type

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


def check_scheme(url: str, target: str, redirect: bool = False) -> None:
    """Raise FetchError (permanent) for ``url`` unless ``target`` (it, or where it redirected) is http or https."""
    scheme = urllib.parse.urlsplit(target).scheme
    if scheme not in ("http", "https"):
        what = f"redirect to non-http(s) URL {target!r}" if redirect else f"non-http(s) URL scheme {scheme!r}"
        raise FetchError(url, f"refused {what}", transient=False)


def media_type(header: str | None) -> str:
    """The lowercased media type of a Content-Type header, without parameters; 'text/plain' when absent or malformed.

    The default is what ``email.message.Message.get_content_type`` (urllib's reading) gives.
    """
    value = (header or "").split(";", 1)[0].strip().lower()
    return value if value.count("/") == 1 else "text/plain"


def discard(response: urllib3.BaseHTTPResponse) -> None:
    """Finish with a response whose body is not wanted (an error, a redirect): keep its connection when cheap.

    A short declared body is read so the kept-alive connection goes back to the pool; anything
    else (large, unknown length, a failing read) closes the connection instead of draining it.
    """
    declared = response.headers.get("Content-Length")
    try:
        if declared is not None and declared.isdigit() and int(declared) <= CHUNK:
            response.read(CHUNK)
    except (OSError, Urllib3Error):
        pass
    finally:
        if not response.isclosed():
            response.close()
        response.release_conn()


def stream_capped(response: urllib3.BaseHTTPResponse, sink: HashingSink | io.BytesIO, limit: int) -> int:
    """Copy the body into ``sink`` until EOF or ``limit`` bytes, in 64 KiB chunks; return the bytes copied."""
    total = 0
    while total < limit:
        chunk = response.read(min(CHUNK, limit - total))
        if not chunk:
            break
        sink.write(chunk)
        total += len(chunk)
    return total


def read_capped(response: urllib3.BaseHTTPResponse, limit: int) -> bytes:
    """Read until EOF or ``limit`` bytes, in chunks, so a huge or endless body cannot exhaust memory."""
    buffer = io.BytesIO()
    stream_capped(response, buffer, limit)
    return buffer.getvalue()
