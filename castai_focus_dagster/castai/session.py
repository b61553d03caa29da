"""One authenticated HTTP session to Cast AI: rate-limited, retried, deadline-bounded requests whose
every failure becomes a `CastAIError`; server text is redacted, one line and truncated."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import httpx
import tenacity
from pydantic import SecretStr

from castai_focus_dagster.castai.diagnose import error_message
from castai_focus_dagster.castai.errors import CastAIError, InvalidResponse
from castai_focus_dagster.castai.retry import (
    RETRYABLE_STATUSES,
    RetryableResponse,
    TokenBucket,
    retry_after_seconds,
    retryable,
)
from castai_focus_dagster.castai.transport import (
    ApiKeyAuth,
    deadline_transport,
    environment_proxy_mounts,
    request_deadline,
)
from castai_focus_dagster.redaction import Redactor

_MAX_MESSAGE_CHARS = 300
_USER_AGENT = "castai-focus-dagster/0.1"

T = TypeVar("T")


class ApiSession:
    """Thread-safe: one connection pool, one token bucket, shared by every client thread.

    Decoding is serialised (`decoded` takes one lock): it holds the GIL anyway, and threads taking
    turns at it through the GIL instead cost a context switch at every short GIL release (see
    docs/performance.md, figure 5).
    """

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        timeout_seconds: float,
        max_retries: int,
        rate_limit_rps: float,
        rate_limit_burst: float | None = None,
        pool_size: int,
        logger: logging.Logger,
        transport: httpx.BaseTransport | None,
        max_backoff_seconds: float,
    ):
        self._redact = Redactor([api_key])
        self._timeout = timeout_seconds
        self._max_retries = max_retries
        self._max_backoff = max_backoff_seconds
        self._jitter = tenacity.wait_random_exponential(multiplier=0.5, max=max_backoff_seconds)
        self._bucket = TokenBucket(rate_limit_rps, burst=rate_limit_burst)
        self._log = logger
        self._decoding = threading.Lock()
        limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
        self.http = httpx.Client(
            base_url=base_url,
            auth=ApiKeyAuth(api_key),
            headers={"Accept": "application/json", "User-Agent": _USER_AGENT},
            timeout=httpx.Timeout(timeout_seconds),
            follow_redirects=False,  # a redirect could carry the key to another host
            transport=transport if transport is not None else deadline_transport(limits),
            mounts=environment_proxy_mounts(limits) if transport is None else None,
        )

    def close(self) -> None:
        self.http.close()

    def decoded(self, endpoint: str, cluster_id: str | None, decode: Callable[..., T], *args: object) -> T:
        """`decode(*args)`, one thread at a time, its `InvalidResponse` raised as a `CastAIError`."""
        try:
            with self._decoding:
                return decode(*args)
        except InvalidResponse as exc:
            detail = self.clean(str(exc))
            if exc.reason == "invalid JSON":
                detail = f"invalid JSON from {endpoint}: {detail.removeprefix('invalid JSON: ')}"
            raise CastAIError(
                detail, endpoint=endpoint, cluster_id=cluster_id, field=exc.field, reason=exc.reason
            ) from None

    def get(
        self,
        endpoint: str,
        path: str,
        params: Sequence[tuple[str, str]] = (),
        *,
        cluster_id: str | None = None,
        json_body: bytes | None = None,
    ) -> bytes:
        """GET (POST with `json_body`, for read-only POSTs) with retries on 429/502/503/504, timeouts and
        connection errors; returns the 2xx body.

        HTTP 500 is not retried: Cast AI answers it to a request it cannot serve (an unknown
        organisation id), the same every time.
        """
        attempts = self._max_retries + 1
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception(retryable),
            before_sleep=lambda state: self._log_retry(endpoint, cluster_id, attempts, state),
            reraise=True,
        )
        try:
            return retrying(self._get_once, endpoint, path, params, cluster_id, json_body)
        except RetryableResponse as exc:
            raise CastAIError(
                f"{exc.detail} (gave up after {attempts} attempt(s))",
                endpoint=endpoint,
                cluster_id=cluster_id,
                status=exc.status,
                transient=True,
            ) from None
        except httpx.TimeoutException as exc:
            raise CastAIError(
                f"no complete answer within {self._timeout:g} s (CASTAI_TIMEOUT_SECONDS, "
                f"{type(exc).__name__}); gave up after {attempts} attempt(s)",
                endpoint=endpoint,
                cluster_id=cluster_id,
                reason="timeout",
                transient=True,
            ) from None
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
            raise CastAIError(
                f"the request itself is invalid ({type(exc).__name__}: {self.clean(str(exc))}); not retried",
                endpoint=endpoint,
                cluster_id=cluster_id,
                reason="invalid request",
            ) from None
        except httpx.TransportError as exc:
            raise CastAIError(
                f"{type(exc).__name__}: {self.clean(str(exc))} (gave up after {attempts} attempt(s))",
                endpoint=endpoint,
                cluster_id=cluster_id,
                reason="connection error",
                transient=True,
            ) from None

    def _get_once(
        self,
        endpoint: str,
        path: str,
        params: Sequence[tuple[str, str]],
        cluster_id: str | None,
        json_body: bytes | None = None,
    ) -> bytes:
        self._bucket.acquire()
        method = "GET" if json_body is None else "POST"
        headers = None if json_body is None else {"Content-Type": "application/json"}
        request = self.http.build_request(
            method, path, params=list(params), headers=headers, content=json_body
        )
        with request_deadline(self._timeout):
            response = self.http.send(request, stream=True)
            try:
                # Joined here, never cached on the response: httpx keeps a response and its stream in
                # a reference cycle, so a cached body (MBs a page) would live until the cyclic GC runs.
                body = b"".join(response.iter_bytes())
            finally:
                response.close()
        if response.is_success:
            return body
        message, field = error_message(body)
        detail = self.clean(message)
        if response.status_code in RETRYABLE_STATUSES:
            raise RetryableResponse(
                response.status_code, detail, retry_after_seconds(response.headers.get("retry-after"))
            )
        raise CastAIError(
            detail, endpoint=endpoint, cluster_id=cluster_id, field=field, status=response.status_code
        )

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Capped exponential backoff with full jitter, never shorter than Retry-After (itself capped)."""
        delay = self._jitter(state)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryableResponse) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return min(delay, self._max_backoff)

    def _log_retry(
        self, endpoint: str, cluster_id: str | None, attempts: int, state: tenacity.RetryCallState
    ) -> None:
        error = state.outcome.exception() if state.outcome else None
        what = f"HTTP {error.status}" if isinstance(error, RetryableResponse) else type(error).__name__
        where = f" cluster {cluster_id}" if cluster_id else ""
        sleep = state.next_action.sleep if state.next_action else 0.0
        self._log.info(
            "Cast AI %s%s: %s, attempt %d/%d, retrying in %.2f s",
            endpoint,
            where,
            what,
            state.attempt_number,
            attempts,
            sleep,
        )

    def clean(self, text: str) -> str:
        """Server text made safe for messages: key redacted, one line, printable, truncated."""
        text = self._redact(text)
        text = "".join(ch for ch in " ".join(text.split()) if ch.isprintable())
        return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 1] + "…"
