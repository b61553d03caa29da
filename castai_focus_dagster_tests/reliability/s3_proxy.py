"""A fault-injecting HTTP proxy in front of the loopback moto S3 server.

Why a proxy rather than a wrapper: the exporter under test builds its own boto3 client from
`S3_ENDPOINT_URL`, inside the Dagster run (or inside a child process for the crash test). Pointing that
URL at this proxy injects faults into the real production code path, with no seam in the product.

Every request is forwarded unchanged (the `Host` header included, so SigV4 signatures stay valid)
unless a `Rule` matches it. A matching rule answers with an S3 error instead (`AccessDenied` by
default: not retried by boto3, so a failure is immediate), or runs a callback first (the crash test
kills the exporter process there, and the request is never answered).
"""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

# Hop-by-hop or framing headers the proxy handles itself; everything else is forwarded as received.
_NOT_FORWARDED = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te"}


@dataclass(frozen=True)
class S3Request:
    """One request as the proxy saw it. `copy_source` is set for a server-side copy (CopyObject)."""

    method: str
    key: str
    copy_source: str | None
    headers: frozenset[str] = frozenset()  # the header names, lower case


@dataclass
class Rule:
    """Fail (or intercept) the S3 requests whose method matches and whose object key matches `key`.

    `copy`: True only CopyObject, False only uploads, None both. `times`: how many matching requests
    to fail (None: all of them). `header`: only requests carrying this header (lower case, e.g.
    `if-match`). `on_match` runs first; returning True means "do not answer at all".
    `forward`: after `on_match`, send the request on unchanged instead of failing it (to hold a request
    while something else happens). `headers` are added to the error answer (`x-amz-bucket-region`).
    """

    method: str
    key: str
    copy: bool | None = None
    status: int = 403
    code: str = "AccessDenied"
    times: int | None = None
    on_match: Callable[[S3Request], bool] | None = None
    forward: bool = False
    headers: tuple[tuple[str, str], ...] = ()  # extra headers of the error answer
    header: str | None = None
    matched: int = field(default=0, init=False)

    def selects(self, request: S3Request) -> bool:
        if request.method != self.method or not re.search(self.key, request.key):
            return False
        if self.copy is not None and (request.copy_source is not None) != self.copy:
            return False
        if self.header is not None and self.header not in request.headers:
            return False
        return self.times is None or self.matched < self.times


class S3FaultProxy:
    """The proxy on 127.0.0.1 (use as a context manager); `rules` may change while it runs."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.rules: list[Rule] = []
        self.requests: list[S3Request] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "proxy not running"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> S3FaultProxy:
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @contextmanager
    def failing(self, *rules: Rule) -> Iterator[list[Rule]]:
        """Install rules for the duration of a block."""
        with self.lock:
            self.rules = list(rules)
        try:
            yield self.rules
        finally:
            with self.lock:
                self.rules = []

    def decide(self, request: S3Request) -> Rule | None:
        with self.lock:
            self.requests.append(request)
            for rule in self.rules:
                if rule.selects(request):
                    rule.matched += 1
                    return rule
        return None


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: S3FaultProxy

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._body()
        path = urlsplit(self.path).path
        key = unquote(path).split("/", 2)[2] if path.count("/") >= 2 else ""
        request = S3Request(
            self.command,
            key,
            self.headers.get("x-amz-copy-source"),
            frozenset(name.lower() for name in self.headers),
        )
        rule = self.owner.decide(request)
        if rule is not None and rule.on_match is not None and rule.on_match(request):
            self.close_connection = True  # the client never gets an answer
            return
        if rule is not None and not rule.forward:
            self._error(rule)
            return
        status, headers, payload = self._forward(body)
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _NOT_FORWARDED and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(
            self.owner.upstream_host, self.owner.upstream_port, timeout=30
        )
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_FORWARDED}
            headers["Content-Length"] = str(len(body))
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            return response.status, response.getheaders(), payload
        finally:
            connection.close()

    def _error(self, rule: Rule) -> None:
        payload = (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{rule.code}</Code>"
            f"<Message>injected by the reliability tests</Message></Error>"
        ).encode()
        self.send_response(rule.status)
        self.send_header("Content-Type", "application/xml")
        for name, value in rule.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
