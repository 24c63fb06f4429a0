"""A real loopback XYZ tile server for the download tests and benchmark, with per-tile fault injection.

Serves ``/{z}/{x}/{y}`` (or ``/tile/{z}/{y}/{x}`` when ``yx_order``) from a list of real image
bodies; ``faults[(z, x, y)]`` is a list of faults consumed one per request, after which the tile
is served normally (give a long list, e.g. ``["404"] * 9``, for a permanent fault).
``connections`` counts the client connections accepted (HTTP/1.1 keep-alive: one may carry many
requests). A request in absolute form (``GET http://host/z/x/y``, as sent to a proxy) is served too.
"""

from __future__ import annotations

import collections
import socket
import struct
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("500", "503", "429", "404", "timeout", "reset", "truncate", "html", "garbage", "drip", "redirect", "ftp")


class TileServer:
    """Start with ``with TileServer(bodies) as srv:``; ``srv.url`` is the template, ``srv.hits`` counts requests."""

    def __init__(
        self,
        bodies: list[bytes],
        faults: dict[tuple[int, int, int], list[str]] | None = None,
        latency_s: float = 0.0,
        stall_s: float = 1.0,
        retry_after: str = "1",
        content_type: str = "image/jpeg",
        yx_order: bool = False,
        drip_interval_s: float = 0.05,
    ) -> None:
        self.bodies = bodies
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.latency_s = latency_s
        self.stall_s = stall_s
        self.retry_after = retry_after
        self.content_type = content_type
        self.yx_order = yx_order
        self.drip_interval_s = drip_interval_s
        self.connections = 0
        self.hits: collections.Counter[tuple[int, int, int]] = collections.Counter()
        self.user_agents: set[str] = set()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        host, port = self.httpd.server_address[:2]
        path = "tile/{z}/{y}/{x}" if yx_order else "{z}/{x}/{y}"
        self.url = f"http://{host}:{port}/{path}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def body_for(self, z: int, x: int, y: int) -> bytes:
        """The image served for a tile: a fixed pick from the real bodies."""
        return self.bodies[(x * 31 + y * 17 + z) % len(self.bodies)]

    def __enter__(self) -> TileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def setup(self) -> None:
                super().setup()
                with server.lock:
                    server.connections += 1

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                parts = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
                try:
                    if server.yx_order:
                        assert parts[0] == "tile"
                        z, y, x = (int(p) for p in parts[1:4])
                    else:
                        z, x, y = (int(p) for p in parts[0:3])
                except (AssertionError, ValueError, IndexError):
                    self.send_error(400)
                    return
                key = (z, x, y)
                with server.lock:
                    server.hits[key] += 1
                    server.user_agents.add(self.headers["User-Agent"])
                    queue = server.faults[key] if key in server.faults else None
                    fault = queue.pop(0) if queue else None
                if server.latency_s:
                    time.sleep(server.latency_s)
                body = server.body_for(z, x, y)
                if fault in ("500", "503", "404"):
                    self.send_error(int(fault))
                elif fault == "429":
                    self.send_response(429)
                    self.send_header("Retry-After", server.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif fault == "timeout":
                    time.sleep(server.stall_s)
                    self.close_connection = True
                elif fault == "reset":
                    # SO_LINGER 0 makes close() send a TCP RST: the client sees a connection reset.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                elif fault == "truncate":
                    self._send(body[: len(body) // 2], server.content_type, declared=len(body))
                    self.close_connection = True
                elif fault == "html":
                    self._send(b"<html><body>rate limited</body></html>", "text/html")
                elif fault == "garbage":
                    self._send(b"this is not an image at all" * 10, server.content_type)
                elif fault == "drip":  # the headers, then the body one byte at a time
                    self.send_response(200)
                    self.send_header("Content-Type", server.content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.close_connection = True
                    for i in range(len(body)):
                        try:
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                        except OSError:
                            return  # the client gave up: what a timeout test wants
                        time.sleep(server.drip_interval_s)
                elif fault in ("redirect", "ftp"):  # to the same tile (a relative Location), or to an ftp:// URL
                    self.send_response(302)
                    where = "ftp://example.org/tile.jpg" if fault == "ftp" else urllib.parse.urlsplit(self.path).path + "?moved"
                    self.send_header("Location", where)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._send(body, server.content_type)

            def _send(self, data: bytes, content_type: str, declared: int | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(declared if declared is not None else len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to do

        return Handler
