"""The HTTP transport of the client: the API key added per request, one total deadline per request,
and the environment's proxies honoured by the same deadline-bounded transport."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx
from httpx._utils import get_environment_proxies  # the exact trust_env reading of httpx
from pydantic import SecretStr


class ApiKeyAuth(httpx.Auth):
    """Adds `X-API-Key` per request, so the key is not in the client's default headers (or their repr)."""

    def __init__(self, api_key: SecretStr):
        self._api_key = api_key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-API-Key"] = self._api_key.get_secret_value()
        yield request

    def __repr__(self) -> str:
        return "ApiKeyAuth(api_key=**********)"


_request_deadline = threading.local()  # monotonic deadline of the request this thread is making


@contextmanager
def request_deadline(seconds: float) -> Iterator[None]:
    """Every socket operation of this thread's request must end within `seconds` from now, in total."""
    _request_deadline.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _request_deadline.at = None


def _remaining(timeout: float | None, error: type[Exception]) -> float | None:
    """`timeout` clamped to what the current request's deadline leaves; `error` once it has passed."""
    at: float | None = getattr(_request_deadline, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the request's total deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _remaining(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _remaining(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(
            ssl_context, server_hostname, _remaining(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend with every connect, read and write bounded by the request deadline."""

    def __init__(self, backend: httpcore.NetworkBackend):
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, _remaining(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(
            path, _remaining(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def deadline_transport(limits: httpx.Limits, proxy: str | None = None) -> httpx.HTTPTransport:
    """httpx's own transport over the deadline backend (httpx exposes no backend parameter).

    With `proxy` the pool is httpcore's proxy pool, a subclass of the plain one: the deadline then
    bounds the connection to the proxy and every read through it.
    """
    transport = httpx.HTTPTransport(limits=limits, proxy=proxy)
    pool = transport._pool
    assert isinstance(pool, httpcore.ConnectionPool), "httpx changed its transport internals"
    pool._network_backend = _DeadlineBackend(pool._network_backend)
    return transport


def environment_proxy_mounts(limits: httpx.Limits) -> dict[str, httpx.BaseTransport | None]:
    """HTTP(S)_PROXY/ALL_PROXY/NO_PROXY as httpx reads them itself (it ignores them once a transport
    is passed): one deadline transport per proxy; a NO_PROXY pattern maps to None, the direct one."""
    return {
        pattern: None if proxy is None else deadline_transport(limits, proxy)
        for pattern, proxy in get_environment_proxies().items()
    }
