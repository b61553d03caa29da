"""The sandbox's HTTP vocabulary: parsed requests, JSON answers, Cast AI's error envelope, the
window and paging parameters, and the faults that replace or corrupt an answer.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from castai_focus_dagster.castai.sandbox.faults import BodyFault, FaultPlan
from castai_focus_dagster.castai.sandbox.hours import hour_index
from castai_focus_dagster.castai.sandbox.metrics import HOUR_SECONDS

DEFAULT_STEP_SECONDS = 86400
DEFAULT_PAGE_LIMIT = 100
MAX_WINDOW_HOURS = 400 * 24


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it; secret header values are replaced by REDACTED."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    json: Any  # parsed JSON body, None when empty or not JSON
    received: float = field(default_factory=time.monotonic)  # arrival (before any fault delay)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    trickle_seconds: float = 0.0  # pause before each byte on the wire (the `trickle_paths` fault)


class ApiError(Exception):
    def __init__(self, status: int, message: str, violations: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.violations = violations

    def response(self) -> Response:
        return error(self.status, self.message, self.violations)


def error(status: int, message: str, violations: Sequence[tuple[str, str]] = ()) -> Response:
    body = {"message": message, "fieldViolations": [{"field": f, "description": d} for f, d in violations]}
    return Response(status, json_bytes(body))


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def first(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def endpoint(self) -> str:
        return f"{self.method} {self.path}"


# ----------------------------------------------------------------------------------------------
# Query parameters


@dataclass(frozen=True)
class Window:
    start_hour: int
    n_buckets: int
    hours_per_bucket: int
    listing: bool = False  # useListingPrices=true: costs at listing prices (no discount)
    cost_scale: float = 1.0  # fault `cost_scale`: every cost series multiplied by this
    # fault `active_hours`: the UTC hours of the day in which the workloads ran; each workload's buckets
    # without uptime or storage are left out of its answer (None: every bucket of every listed workload)
    active_hours: frozenset[int] | None = None

    @property
    def hours(self) -> int:
        return self.n_buckets * self.hours_per_bucket


def parse_window(request: Request) -> Window:
    """startTime/endTime (required RFC 3339) and stepSeconds -> whole-hour buckets ending at S+step..E."""
    problems: list[tuple[str, str]] = []
    hours: dict[str, int] = {}
    for name in ("startTime", "endTime"):
        raw = request.first(name)
        if not raw:
            problems.append((name, "required RFC 3339 date-time"))
            continue
        try:
            hours[name] = hour_index(raw)
        except ValueError as exc:
            problems.append((name, f"invalid date-time {raw!r}: {exc}"))
    raw_step = request.first("stepSeconds") or str(DEFAULT_STEP_SECONDS)
    step = int(raw_step) if raw_step.isdigit() else 0
    if step <= 0 or step % HOUR_SECONDS:
        problems.append(
            ("stepSeconds", f"must be a positive multiple of 3600 in the sandbox, got {raw_step!r}")
        )
    if not problems and hours["endTime"] <= hours["startTime"]:
        problems.append(("endTime", "must be after startTime"))
    if not problems and hours["endTime"] - hours["startTime"] > MAX_WINDOW_HOURS:
        problems.append(("endTime", f"the sandbox serves windows of at most {MAX_WINDOW_HOURS // 24} days"))
    if problems:
        raise ApiError(400, f"invalid request parameters for {request.endpoint()}", problems)
    hours_per_bucket = step // HOUR_SECONDS
    n_buckets = (hours["endTime"] - hours["startTime"]) // hours_per_bucket
    return Window(hours["startTime"], n_buckets, hours_per_bucket, _listing(request))


def _listing(request: Request) -> bool:
    """useListingPrices (protobuf JSON bool in a query: true/false, absent = false)."""
    raw = (request.first("useListingPrices") or "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiError(400, f"invalid useListingPrices {raw!r}", [("useListingPrices", "must be a bool")])
    return raw in ("true", "1")


def page_bounds(request: Request) -> tuple[int, int]:
    """(offset, limit) from page.cursor / page.limit."""
    raw_limit = request.first("page.limit") or str(DEFAULT_PAGE_LIMIT)
    if not raw_limit.isdigit() or int(raw_limit) < 1:
        raise ApiError(
            400, f"invalid page.limit for {request.endpoint()}", [("page.limit", "positive integer")]
        )
    cursor = request.first("page.cursor") or ""
    return (_decode_cursor(cursor, request) if cursor else 0), int(raw_limit)


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f'{{"offset":{offset}}}'.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, request: Request) -> int:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset = decoded["offset"]
        if isinstance(offset, int) and offset >= 0:
            return offset
    except (binascii.Error, ValueError, KeyError, TypeError):
        pass
    raise ApiError(400, f"invalid page.cursor for {request.endpoint()}", [("page.cursor", "unknown cursor")])


def paged(request: Request, items: Sequence[Any]) -> tuple[Sequence[Any], str]:
    offset, limit = page_bounds(request)
    end = offset + limit
    return items[offset:end], (encode_cursor(end) if end < len(items) else "")


def fault_response(plan: FaultPlan) -> Response:
    assert plan.status is not None
    response = error(plan.status, HTTPStatus(plan.status).phrase)
    if plan.retry_after is not None:
        return Response(response.status, response.body, headers={"Retry-After": plan.retry_after})
    return response


def corrupt(response: Response, plan: FaultPlan) -> Response:
    if plan.body is BodyFault.HTML:
        page = (
            b"<!DOCTYPE html><html><head><title>Bad Gateway</title></head><body>upstream error</body></html>"
        )
        return Response(200, page, content_type="text/html; charset=utf-8")
    if plan.body is BodyFault.MALFORMED:
        return Response(response.status, response.body[: len(response.body) // 2], headers=response.headers)
    return response
