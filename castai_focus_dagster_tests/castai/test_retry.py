"""The client's retry and rate-limit policy in isolation: which faults retry, Retry-After, the bucket."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from castai_focus_dagster.castai.retry import RetryableResponse, TokenBucket, retry_after_seconds, retryable


def test_retry_after_parsing() -> None:
    now = datetime(2026, 9, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("0.25") == 0.25
    assert retry_after_seconds("Tue, 01 Sep 2026 12:00:05 GMT", now=now) == 5.0
    assert retry_after_seconds("Tue, 01 Sep 2026 11:00:00 GMT", now=now) == 0.0  # in the past
    assert retry_after_seconds("-4") == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_token_bucket_spaces_requests_beyond_the_burst() -> None:
    now = [0.0]
    slept: list[float] = []
    bucket = TokenBucket(10, clock=lambda: now[0], sleep=slept.append)
    for _ in range(12):
        bucket.acquire()
    assert slept == pytest.approx([0.1, 0.2])  # burst of 10, then one token every 1/10 s
    now[0] = 5.0  # refilled (capped at the burst size)
    slept.clear()
    for _ in range(10):
        bucket.acquire()
    assert slept == []


def test_only_faults_that_can_heal_are_retried() -> None:
    request = httpx.Request("GET", "https://api.cast.ai/v1/x")
    assert retryable(RetryableResponse(503, "unavailable", None))
    assert retryable(httpx.ConnectError("refused", request=request))
    assert retryable(httpx.ReadTimeout("slow", request=request))
    assert not retryable(httpx.LocalProtocolError("bad header"))  # our own request: fails every time
    assert not retryable(httpx.UnsupportedProtocol("ftp://", request=request))
    assert not retryable(ValueError("a bug"))


def test_a_bucket_refuses_a_rate_that_would_never_refill() -> None:
    for rate in (0, -1):
        with pytest.raises(ValueError, match="rate must be positive"):
            TokenBucket(rate)


def test_a_paced_bucket_starts_at_most_its_rate_in_any_second_even_when_a_thread_wakes_late() -> None:
    """Regression (bench figure 6): a thread that woke late from its paced sleep started together with
    the next one, so 4 runs at 2 requests/s each put 10 requests into one second of an 8/s budget."""
    now = [0.0]
    lateness = [0.5]  # the first paced sleep ends 0.5 s late, as under CPU load

    def sleep(seconds: float) -> None:
        now[0] += seconds + (lateness.pop() if lateness else 0.0)

    bucket = TokenBucket(2, burst=1, clock=lambda: now[0], sleep=sleep)
    starts = []
    for _ in range(6):
        bucket.acquire()
        starts.append(now[0])
    busiest = max(sum(1 for s in starts if t <= s < t + 1.0) for t in starts)
    assert busiest <= 2, starts
