"""Retry and rate-limit policy of the client: which faults are retried, how long to wait (capped
exponential backoff with full jitter, never shorter than `Retry-After`), and a shared token bucket."""

from __future__ import annotations

import email.utils
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


class RetryableResponse(Exception):
    """429/502/503/504: retried by tenacity, converted to CastAIError when retries run out."""

    def __init__(self, status: int, detail: str, retry_after: float | None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


def retryable(error: BaseException) -> bool:
    """The client's retry classification; `CastAIError.transient` reports it."""
    if isinstance(error, (httpx.LocalProtocolError, httpx.UnsupportedProtocol)):
        return False  # our own request is malformed: it would fail identically every time
    return isinstance(error, (RetryableResponse, httpx.TransportError))


WINDOW_SECONDS = 1.05  # 1 s plus 50 ms for the way from the client to Cast AI
_CLOCK_SLACK = 1e-6  # float sums of clock readings: a start exactly one window ago has left it


class TokenBucket:
    """Client-side rate limit shared by all threads: `rate` requests/second, bursts of up to `burst`
    (default `rate`; 1 paces requests at least 1/`rate` apart).

    With an explicit `burst`, a request also starts only when fewer than ⌈rate⌉ started in the last
    `WINDOW_SECONDS`: a thread that wakes late from its paced sleep cannot bunch with the next one, so
    no 1-second window of start times holds more than ⌈rate⌉ (the budget share of a run).

    A caller takes a token even when the bucket is empty (the balance goes negative) and sleeps
    outside the lock until its token is due: callers are served in arrival order, none spins.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self._rate = rate
        self._capacity = max(1.0, rate if burst is None else burst)
        self._tokens = self._capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = threading.Lock()
        self._window_cap = None if burst is None else max(1, math.ceil(rate - 1e-9))
        self._starts: deque[float] = deque()

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            self._tokens -= 1.0
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        if self._window_cap is not None:
            self._admit(self._window_cap)

    def _admit(self, cap: int) -> None:
        """Wait until fewer than `cap` requests started within the last `WINDOW_SECONDS`, then start."""
        while True:
            with self._lock:
                now = self._clock()
                while self._starts and now >= self._starts[0] + WINDOW_SECONDS - _CLOCK_SLACK:
                    self._starts.popleft()
                if len(self._starts) < cap:
                    self._starts.append(now)
                    return
                wait = max(self._starts[0] + WINDOW_SECONDS - now, _CLOCK_SLACK)
            self._sleep(wait)


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or HTTP-date); None when absent or unreadable."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    return seconds if seconds > 0 else 0.0
