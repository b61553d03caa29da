"""Fault injection for the Cast AI sandbox: the failure modes a production client must survive.

Why a separate object: tests (and the benchmark) switch faults on and off while a server is
running, so `Faults` is a plain mutable dataclass that the server reads on every request. Random
faults draw from one `random.Random(seed)`: the same seed and the same request order give the same
faults, run after run. Each request draws exactly three numbers (slow, 429, 5xx) whatever is
enabled, so turning one fault on does not shift the decisions of the others.

Faults apply only to API paths (`/v1/...`, `/pricing/...`), never to the sandbox's own `/healthz`.
Precedence on one request: `timeout_paths` and `rate_slow` delay the answer (delays add up), then
the first matching `fail_paths` entry, then `rate_429`, then `rate_5xx` replace the answer; if none
did, `html_error_paths` replaces a successful body by an HTML page (status 200) and
`malformed_json_paths` truncates it. `cursor_loop` and `duplicate_workloads` change the
workload-costs pagination itself and are applied by the server.

429 answers carry `Retry-After: <retry_after_seconds>` (INFERRED: Cast AI documents no rate-limit
headers, see castai-api.md §1.5) and the usual `ErrorResponse` envelope.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from enum import Enum

# Gateway errors a load balancer in front of Cast AI may answer; used round-robin by `rate_5xx`.
GATEWAY_ERRORS: tuple[int, ...] = (502, 503, 504)


class BodyFault(Enum):
    NONE = "none"
    HTML = "html"  # 200 with an HTML page instead of JSON (a proxy's error page)
    MALFORMED = "malformed"  # 200 with the JSON body cut in half


@dataclass(frozen=True)
class FaultPlan:
    """What the server does to one request: wait, then either fail it or answer (maybe corrupted)."""

    delay_seconds: float = 0.0
    status: int | None = None  # replace the answer by this error status
    retry_after: str | None = None  # Retry-After header value (429 only)
    body: BodyFault = BodyFault.NONE


@dataclass
class Faults:
    """Injected faults; every field defaults to "off". Path patterns are regexes searched in the path."""

    rate_429: float = 0.0  # share of API requests answered 429 Too Many Requests
    retry_after_seconds: float = 0.0  # value of the Retry-After header on those 429s
    rate_5xx: float = 0.0  # share answered 502/503/504 (round-robin)
    rate_slow: float = 0.0  # share delayed by `slow_seconds` before answering
    slow_seconds: float = 0.0
    malformed_json_paths: str | None = None  # regex: 200 with truncated JSON
    html_error_paths: str | None = None  # regex: 200 with an HTML body
    fail_paths: dict[str, int] = field(default_factory=dict)  # regex -> permanent status (404, 500, ...)
    timeout_paths: str | None = None  # regex: sleep `timeout_seconds` before answering
    timeout_seconds: float = 30.0
    cursor_loop: bool = False  # workload-costs always returns the same non-empty nextCursor
    duplicate_workloads: bool = False  # every later page repeats the previous page's last workload
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._gateway_errors_sent = 0

    def plan(self, path: str) -> FaultPlan:
        """Decide the faults of one API request (thread-safe; advances the seeded random stream)."""
        with self._lock:
            slow_draw, draw_429, draw_5xx = self._rng.random(), self._rng.random(), self._rng.random()
            delay = 0.0
            if _matches(self.timeout_paths, path):
                delay += self.timeout_seconds
            if slow_draw < self.rate_slow:
                delay += self.slow_seconds
            status = next(
                (code for pattern, code in self.fail_paths.items() if re.search(pattern, path)), None
            )
            if status is not None:
                return FaultPlan(delay_seconds=delay, status=status)
            if draw_429 < self.rate_429:
                return FaultPlan(
                    delay_seconds=delay, status=429, retry_after=_seconds(self.retry_after_seconds)
                )
            if draw_5xx < self.rate_5xx:
                status = GATEWAY_ERRORS[self._gateway_errors_sent % len(GATEWAY_ERRORS)]
                self._gateway_errors_sent += 1
                return FaultPlan(delay_seconds=delay, status=status)
            if _matches(self.html_error_paths, path):
                return FaultPlan(delay_seconds=delay, body=BodyFault.HTML)
            if _matches(self.malformed_json_paths, path):
                return FaultPlan(delay_seconds=delay, body=BodyFault.MALFORMED)
            return FaultPlan(delay_seconds=delay)


def _matches(pattern: str | None, path: str) -> bool:
    return pattern is not None and re.search(pattern, path) is not None


def _seconds(value: float) -> str:
    """Retry-After is delta-seconds: an integer when whole ("1"), else a decimal ("0.25")."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
