"""Fault injection for the Cast AI sandbox: the failure modes a production client must survive.

`Faults` is read on every request, so tests change it while the server runs; random faults are
reproducible from the seed (and, with `keyed=True`, independent of request order). Faults apply to
API paths only, never to `/healthz`. Their precedence and the answers they produce are described in
docs/architecture.md; `injected` counts the faults actually applied.
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TypeVar

T = TypeVar("T")

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
    trickle_seconds: float = 0.0  # pause before each byte of the answer (0: sent at once)


@dataclass(frozen=True)
class CannedResponse:
    """A scripted answer that replaces the sandbox's own, to serve malformed or hostile bodies."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


# Given the request's query parameters, the answer to serve instead of the sandbox's (None: serve normally).
Responder = Callable[[Mapping[str, list[str]]], CannedResponse | None]


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
    trickle_paths: str | None = None  # regex: the answer is sent one byte at a time
    trickle_seconds_per_byte: float = 1.0
    cursor_loop: bool = False  # workload-costs always returns the same non-empty nextCursor
    duplicate_workloads: bool = False  # every later page repeats the previous page's last workload
    # Cluster ids the cluster list leaves out (a partial answer); their other endpoints still answer.
    # Every cluster when `unlist_all_clusters`: the list answers 200 {"items": []}.
    unlisted_clusters: frozenset[str] = frozenset()
    unlist_all_clusters: bool = False
    responses: dict[str, Responder] = field(default_factory=dict)  # regex -> scripted answers
    # Answers the API definition allows that a client must not misread (applied by the server):
    answer_step_seconds: dict[str, int] = field(default_factory=dict)  # regex -> step actually served
    no_data: dict[str, str | None] = field(default_factory=dict)  # regex -> noDataReason (None: omitted)
    # regex -> noDataReason (None: omitted); the workloads stay listed, each with `costMetrics: []`
    no_data_keep_items: dict[str, str | None] = field(default_factory=dict)
    omit_identity: dict[str, tuple[str, ...]] = field(default_factory=dict)  # regex -> item fields left out
    cost_scale: dict[str, float] = field(default_factory=dict)  # regex -> factor on every cost field
    # regex -> the UTC hours of the day (0: 00:00-01:00) in which the cluster's workloads ran; the other
    # hours are idle and each workload's answer leaves out its buckets without uptime or storage
    active_hours: dict[str, frozenset[int]] = field(default_factory=dict)
    # Cluster id -> its `deletedAt` (RFC 3339): listed with status "deleted"; windows starting at or
    # after it answer `items: []` without a noDataReason (the cluster has nothing to report any more).
    deleted_clusters: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    keyed: bool = False  # draws per request identity instead of one stream in arrival order

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._gateway_errors_sent = 0
        self._occurrences: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()  # "slow", "timeout", "fail", "429", "5xx", "html", ...

    def plan(self, path: str, request: str | None = None) -> FaultPlan:
        """Decide the faults of one API request (thread-safe; advances the seeded random stream).

        `request` identifies the request for `keyed` draws (method, path and query; default: the path).
        """
        with self._lock:
            slow_draw, draw_429, draw_5xx = self._draws(request or path)
            plan = self._plan(path, slow_draw, draw_429, draw_5xx)
            if _matches(self.trickle_paths, path):
                self.injected["trickle"] += 1
                plan = replace(plan, trickle_seconds=self.trickle_seconds_per_byte)
            return plan

    def _plan(self, path: str, slow_draw: float, draw_429: float, draw_5xx: float) -> FaultPlan:
        """Delays and answer replacements of one request, from its three draws (lock held)."""
        delay = 0.0
        if _matches(self.timeout_paths, path):
            delay += self.timeout_seconds
            self.injected["timeout"] += 1
        if slow_draw < self.rate_slow:
            delay += self.slow_seconds
            self.injected["slow"] += 1
        status = next((code for pattern, code in self.fail_paths.items() if re.search(pattern, path)), None)
        if status is not None:
            self.injected["fail"] += 1
            return FaultPlan(delay_seconds=delay, status=status)
        if draw_429 < self.rate_429:
            self.injected["429"] += 1
            return FaultPlan(delay_seconds=delay, status=429, retry_after=_seconds(self.retry_after_seconds))
        if draw_5xx < self.rate_5xx:
            # Round-robin in arrival order; keyed: chosen by the request's own draw, like the rest.
            turn = (
                int(draw_5xx / self.rate_5xx * len(GATEWAY_ERRORS))
                if self.keyed
                else self._gateway_errors_sent
            )
            status = GATEWAY_ERRORS[turn % len(GATEWAY_ERRORS)]
            self._gateway_errors_sent += 1
            self.injected["5xx"] += 1
            return FaultPlan(delay_seconds=delay, status=status)
        if _matches(self.html_error_paths, path):
            self.injected["html"] += 1
            return FaultPlan(delay_seconds=delay, body=BodyFault.HTML)
        if _matches(self.malformed_json_paths, path):
            self.injected["malformed"] += 1
            return FaultPlan(delay_seconds=delay, body=BodyFault.MALFORMED)
        return FaultPlan(delay_seconds=delay)

    def canned(self, path: str, query: Mapping[str, list[str]]) -> CannedResponse | None:
        """The scripted answer of the first `responses` pattern found in `path` that has one."""
        for pattern, responder in list(self.responses.items()):
            if re.search(pattern, path):
                answer = responder(query)
                if answer is not None:
                    with self._lock:
                        self.injected["canned"] += 1
                    return answer
        return None

    def answer(self, knob: Mapping[str, T], path: str) -> tuple[bool, T | None]:
        """(True, value) of the first pattern of `knob` found in `path`, counted in `injected`."""
        for pattern, value in list(knob.items()):
            if re.search(pattern, path):
                with self._lock:
                    self.injected["answer"] += 1
                return True, value
        return False, None

    def _draws(self, request: str) -> tuple[float, float, float]:
        """Three numbers in [0, 1): from the shared stream, or (keyed) from the request's own stream."""
        if not self.keyed:
            return self._rng.random(), self._rng.random(), self._rng.random()
        occurrence = self._occurrences[request]
        self._occurrences[request] += 1
        own = random.Random(f"{self.seed}|{request}|{occurrence}")  # str seeds hash with SHA-512
        return own.random(), own.random(), own.random()


def _matches(pattern: str | None, path: str) -> bool:
    return pattern is not None and re.search(pattern, path) is not None


def _seconds(value: float) -> str:
    """Retry-After is delta-seconds: an integer when whole ("1"), else a decimal ("0.25")."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
