"""The Cast AI sandbox over real HTTP/1.1 on 127.0.0.1, in a background thread: the client's
retries, timeouts, keep-alive, paging and decoding run exactly as against api.cast.ai.
"""

from __future__ import annotations

import functools
import ipaddress
import threading
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from castai_focus_dagster.castai.sandbox.faults import Faults
from castai_focus_dagster.castai.sandbox.hours import hour_index
from castai_focus_dagster.castai.sandbox.metrics import HOUR_SECONDS
from castai_focus_dagster.castai.sandbox.org import SandboxOrg
from castai_focus_dagster.castai.sandbox.protocol import (
    RecordedRequest,
    Response,
    Window,
)
from castai_focus_dagster.castai.sandbox.routes import SandboxApi


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: SandboxApi):
        self.api = api
        super().__init__(address, _RequestHandler)


class _RequestHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive; every answer carries Content-Length."""

    protocol_version = "HTTP/1.1"
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    # Send small answers at once: Nagle + delayed ACK would add ~40 ms that a real API does not have.
    disable_nagle_algorithm = True
    server: _HttpServer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        response = self.server.api.handle(method, self.path, headers, body)
        if response.trickle_seconds:
            self._trickle(response)
            return
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. its timeout fired)
            self.close_connection = True

    def _trickle(self, response: Response) -> None:
        """The whole answer, status line included, one byte per `trickle_seconds`; the connection closes."""
        head = [f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}"]
        head += [f"Content-Type: {response.content_type}", f"Content-Length: {len(response.body)}"]
        head += [f"{name}: {value}" for name, value in response.headers.items()]
        head += ["Connection: close", "", ""]
        wire = "\r\n".join(head).encode("latin-1") + response.body
        self.close_connection = True
        try:
            for index in range(len(wire)):
                if self.server.api.wait(response.trickle_seconds):
                    return
                self.wfile.write(wire[index : index + 1])
        except OSError:  # the client gave up (its deadline fired)
            return

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the recorded requests are the log (and they never hold the API key)."""


class SandboxServer:
    """The sandbox on 127.0.0.1 in a background thread; use as a context manager.

    `requests` records every request (secret headers REDACTED); `faults` may be changed while the
    server runs; `prerender` renders and pins workload-cost windows so that benchmarks time the
    client, not the server."""

    def __init__(self, org: SandboxOrg, faults: Faults | None = None, port: int = 0, host: str = "127.0.0.1"):
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the sandbox binds loopback addresses only, not {host}")
        self.org = org
        self.faults = faults if faults is not None else Faults()
        self.requests: list[RecordedRequest] = []
        self._address = (host, port)
        self._api = SandboxApi(self)
        self._stopping = threading.Event()
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"SandboxServer(url={self.url if self._httpd else None!r}, org={self.org!r})"

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the sandbox server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SandboxServer:
        if self._httpd is not None:
            raise RuntimeError("the sandbox server is already running")
        self._stopping.clear()
        self._httpd = _HttpServer(self._address, self._api)
        serve = functools.partial(self._httpd.serve_forever, poll_interval=0.05)  # quick stop()
        self._thread = threading.Thread(target=serve, name="castai-sandbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; delayed (fault) answers still pending return at once."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        self._httpd, self._thread = None, None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait(self, seconds: float) -> bool:
        """Sleep for a fault's delay, cut short when the server stops (then True)."""
        return self._stopping.wait(seconds)

    def prerender(self, start: datetime | str, end: datetime | str, step_seconds: int = 3600) -> int:
        """Render every cluster's workload costs (and cluster cost) for this window; returns clusters."""
        if step_seconds <= 0 or step_seconds % HOUR_SECONDS:
            raise ValueError(f"step_seconds must be a positive multiple of 3600, got {step_seconds}")
        first, last = hour_index(start), hour_index(end)
        hours_per_bucket = step_seconds // HOUR_SECONDS
        window = Window(first, (last - first) // hours_per_bucket, hours_per_bucket)
        for cluster in self.org.clusters:
            self._api.prerender(cluster, window)
        return len(self.org.clusters)
