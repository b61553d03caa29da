"""The Cast AI sandbox HTTP server: Cast AI's REST paths, parameters and JSON shapes on 127.0.0.1.

Why a real HTTP server: the client's retries, timeouts, keep-alive, paging and decoding are tested
exactly as they run against api.cast.ai. Shapes follow shared/reference/castai-api.md (section
numbers below); what the reference could not establish is INFERRED and listed here.

Endpoints
- GET /v1/kubernetes/external-clusters (§2): `{"items": [Cluster]}`, no paging.
- GET|POST /v1/cost-reports/clusters/{clusterId}/workload-costs (§3): paged over workloads.
- GET /v1/cost-reports/clusters/{clusterId}/cost (§8.1): one item per bucket + summary.
- GET /pricing/v1/organizations/{organizationId}/clusters/prices (§4): paged, `nextPageCursor`; only
  Anywhere clusters (the endpoint is documented "for CAST Anywhere clusters").
- GET /pricing/v1beta/organizations/{orgId}/anywhere-cluster-default-pricing (§5, NOT FOUND).
- GET /v1/billing/platform-usage-report (§6.1): JSON numbers, not strings.
- GET /v1/billing/enterprise/usage-report (§6.2, NOT FOUND; the exporter no longer calls it).
- GET /organization-management/v1/enterprises/{enterpriseId}/organizations (§6.2): paged,
  `{"items": [{"id", "name", "parentId"}], "nextPageCursor"}`; 404 for any other enterprise id.
- GET /v1/discounts (§7): paged, `discounts` + `nextPageToken`.
- POST /v1/cost-reports/workload-labels/names (`WorkloadReportAPI_GetWorkloadLabelNames`): body
  `WorkloadLabelFilters` (`clusterIds`, `namespaces` honoured), paged, `labelNames` + `nextCursor`.
  INFERRED: the names of every workload of the selected clusters (sandbox workloads exist all the time).
- GET /healthz: the sandbox's own liveness probe (no auth, no faults; not a Cast AI path).

Conventions (FACT unless marked): decimals are strings with 6 decimals ("0.412800"), `count` is a
string; errors use the `ErrorResponse` envelope `{"message", "fieldViolations": []}` with
`Content-Type: application/json`; bucket timestamps are bucket ENDS: startTime=S, endTime=E, step
-> buckets S+step, S+2*step, ... <= E; `cost{Tier} = cpuCost + ramCost + gpuCost + tpuCost` holds
exactly on the emitted strings (the sum is taken of the rounded components); storage is separate.

INFERRED by the sandbox (not established by the reference):
- Auth: `X-API-Key: <key>` or `Authorization: Bearer <key>`; otherwise 401
  `{"message":"Unauthorized","fieldViolations":[]}` (401 body NOT FOUND).
- `X-CastAI-Organization-Id`: the key's org or the enterprise see every cluster, a child org id
  narrows clusters, reports and usage to that child; any other id -> 500 "Internal Server Error"
  (OBSERVED by a third party).
- Missing or invalid startTime/endTime/stepSeconds/page.* -> 400 naming the field. Unknown or
  out-of-scope cluster -> 404. Unknown organisation in a pricing path -> 404.
- Defaults: stepSeconds 86400, page.limit 100 (no maximum). Cursors are opaque base64 of an offset;
  the last page has `nextCursor: ""` (resp. `nextPageCursor` / `nextPageToken`).
- Sandbox limits: startTime/endTime must fall on whole UTC hours, stepSeconds must be a positive
  multiple of 3600, a window may span at most 400 days.
- Workload costs: a workload is listed only if it ran (uptime > 0) or had storage in the window.
  Items are ordered by (namespace, workloadType, workloadName). `labels` holds only the keys asked
  for with `labelsToInclude` (repeated parameter), in request order; NO labels when none are
  requested. Summary: `total*` = Σ bucket value x bucket hours (`totalCost` includes storage,
  `totalCost{Tier}` do not), `avg*` = total / window hours. `uptimeMinutes*` are whole minutes
  summed over the bucket. `includeIdleResourceCosts` is accepted and ignored. `useListingPrices=true`
  (workload costs and cluster cost) answers the same usage at listing prices: no discount applied.
- Cluster cost (§8.1): every resource and tier is the sum of the cluster's workloads divided by
  (1 - idle share), never below the sum of the workloads' emitted values: the cluster always costs
  at least the sum of its workloads, exactly on the strings (the difference is idle capacity).
- anywhere-cluster-default-pricing: `{"cpuHourlyPrice": "0.031611", "memoryGibHourlyPrice": "0.004237"}`.
- enterprise usage report: `{"enterpriseId", "organizations": [{"organizationId", "organizationName",
  "features": [FeatureUsageSummary]}]}`; 404 when the selected organisation is a child (non-enterprise).
- Billing usage numbers are synthetic (usage = provisioned vCPUs) with fixed, not current-month, dates,
  so responses stay byte-identical between runs.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
import hmac
import ipaddress
import json
import logging
import operator
import re
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.castai.models import TIERS
from castai_focus_dagster.castai.sandbox.faults import BodyFault, FaultPlan, Faults
from castai_focus_dagster.castai.sandbox.org import (
    HOUR_SECONDS,
    RESOURCE_COSTS,
    SUMMED_FIELDS,
    SandboxCluster,
    SandboxOrg,
    hour_index,
    hour_timestamp,
)

logger = logging.getLogger(__name__)

REDACTED = "REDACTED"
DEFAULT_STEP_SECONDS = 86400
DEFAULT_PAGE_LIMIT = 100
MAX_WINDOW_HOURS = 400 * 24
_MICRO = 1_000_000
_SECRET_HEADERS = ("x-api-key", "authorization")

# WorkloadCostItem fields in spec order (castai-api.md §3.3), after `timestamp`.
WORKLOAD_ITEM_FIELDS: tuple[str, ...] = (
    *(f"cost{t}" for t in TIERS),
    *(f"{m}{t}" for m in ("cpuCount", "podCount", "uptimeMinutes", "cpuCost", "ramCost", "ramGib",
                          "gpuCost", "gpuCount") for t in TIERS),
    "storageCost", "storageGib",
    *(f"{m}{t}" for m in ("tpuCost", "tpuCount") for t in TIERS),
)  # fmt: skip
WORKLOAD_SUMMARY_FIELDS: tuple[str, ...] = (
    "totalCost", "totalCostOnDemand", "totalCostSpot", "totalCostSpotFallback", "totalStorageCost",
    "avgCost", "avgCpuCost", "avgRamCost", "avgGpuCost", "avgStorageCost", "avgTpuCost",
)  # fmt: skip
# CostReportItem fields in spec order (castai-api.md §8.1), after `timestamp`.
CLUSTER_ITEM_FIELDS: tuple[str, ...] = (
    *(f"cost{t}" for t in TIERS),
    *(f"cpuCount{t}" for t in TIERS),
    *(f"{m}{t}" for t in TIERS for m in ("cpuCost", "ramCost")),
    *(f"{m}{t}" for m in ("ramGib", "gpuCost", "gpuCount") for t in TIERS),
    "storageGib", "storageCost",
    *(f"total{m}{t}" for m in ("CpuCost", "RamCost", "GpuCost") for t in TIERS),
    "totalStorageCost",
    *(f"{m}{t}" for m in ("tpuCost", "tpuCount") for t in TIERS),
    *(f"totalTpuCost{t}" for t in TIERS),
)  # fmt: skip
CLUSTER_SUMMARY_FIELDS: tuple[str, ...] = (
    "totalCost", "totalCpuCost", "totalRamCost", "totalGpuCost", "totalStorageCost",
    "avgCost", "avgCpuCost", "avgRamCost", "avgGpuCost", "avgStorageCost",
    "avgCpuCount", "avgRamGib", "avgGpuCount", "avgStorageGib",
    "totalCostOnDemand", "totalCostSpot", "totalCostSpotFallback",
    *(f"avg{m}{t}" for m in ("CpuCount", "RamGib", "GpuCount") for t in TIERS),
    *(f"avg{m}{t}" for m in ("CpuCost", "RamCost", "GpuCost") for t in TIERS),
    "totalTpuCost", "avgTpuCost", "avgTpuCount",
    *(f"avg{m}{t}" for m in ("TpuCount", "TpuCost") for t in TIERS),
)  # fmt: skip


def _add(arrays: Iterable[np.ndarray]) -> np.ndarray:
    """Element-wise sum of equally shaped arrays."""
    return functools.reduce(operator.add, arrays)


_RESOURCE_OF_COST = {"cpuCost": "Cpu", "ramCost": "Ram", "gpuCost": "Gpu", "tpuCost": "Tpu"}
# Summary name stem -> per-bucket series prefix, for the tiered series that summaries total.
_SUMMARY_STEMS = {
    "CpuCost": "cpuCost", "RamCost": "ramCost", "GpuCost": "gpuCost", "TpuCost": "tpuCost",
    "CpuCount": "cpuCount", "RamGib": "ramGib", "GpuCount": "gpuCount", "TpuCount": "tpuCount",
}  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Requests, responses, errors


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
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    trickle_seconds: float = 0.0  # pause before each byte on the wire (the `trickle_paths` fault)


class _ApiError(Exception):
    def __init__(self, status: int, message: str, violations: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.violations = violations

    def response(self) -> _Response:
        return _error(self.status, self.message, self.violations)


def _error(status: int, message: str, violations: Sequence[tuple[str, str]] = ()) -> _Response:
    body = {"message": message, "fieldViolations": [{"field": f, "description": d} for f, d in violations]}
    return _Response(status, _json_bytes(body))


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class _Request:
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
class _Window:
    start_hour: int
    n_buckets: int
    hours_per_bucket: int
    listing: bool = False  # useListingPrices=true: costs at listing prices (no discount)
    cost_scale: float = 1.0  # fault `cost_scale`: every cost series multiplied by this

    @property
    def hours(self) -> int:
        return self.n_buckets * self.hours_per_bucket


def _window(request: _Request) -> _Window:
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
        raise _ApiError(400, f"invalid request parameters for {request.endpoint()}", problems)
    hours_per_bucket = step // HOUR_SECONDS
    n_buckets = (hours["endTime"] - hours["startTime"]) // hours_per_bucket
    return _Window(hours["startTime"], n_buckets, hours_per_bucket, _listing(request))


def _listing(request: _Request) -> bool:
    """useListingPrices (protobuf JSON bool in a query: true/false, absent = false)."""
    raw = (request.first("useListingPrices") or "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise _ApiError(400, f"invalid useListingPrices {raw!r}", [("useListingPrices", "must be a bool")])
    return raw in ("true", "1")


def _page_bounds(request: _Request) -> tuple[int, int]:
    """(offset, limit) from page.cursor / page.limit."""
    raw_limit = request.first("page.limit") or str(DEFAULT_PAGE_LIMIT)
    if not raw_limit.isdigit() or int(raw_limit) < 1:
        raise _ApiError(
            400, f"invalid page.limit for {request.endpoint()}", [("page.limit", "positive integer")]
        )
    cursor = request.first("page.cursor") or ""
    return (_decode_cursor(cursor, request) if cursor else 0), int(raw_limit)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f'{{"offset":{offset}}}'.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, request: _Request) -> int:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset = decoded["offset"]
        if isinstance(offset, int) and offset >= 0:
            return offset
    except (binascii.Error, ValueError, KeyError, TypeError):
        pass
    raise _ApiError(400, f"invalid page.cursor for {request.endpoint()}", [("page.cursor", "unknown cursor")])


def _paged(request: _Request, items: Sequence[Any]) -> tuple[Sequence[Any], str]:
    offset, limit = _page_bounds(request)
    end = offset + limit
    return items[offset:end], (_encode_cursor(end) if end < len(items) else "")


# ----------------------------------------------------------------------------------------------
# Vectorised JSON rendering of cost reports (pyarrow string kernels, no per-value Python)


def _micro(values: np.ndarray) -> np.ndarray:
    """Dollars/counts -> integer millionths: the exact value the 6-decimal string shows."""
    return np.rint(values * _MICRO).astype(np.int64)


def _decimal_strings(micro: np.ndarray) -> pa.Array:
    flat = micro.ravel()
    whole = pa.array(flat // _MICRO).cast(pa.string())
    fraction = pc.utf8_slice_codeunits(pa.array(flat % _MICRO + _MICRO).cast(pa.string()), 1)
    return pc.binary_join_element_wise(whole, fraction, ".")


def _json_objects(columns: Sequence[tuple[str, pa.Array | pa.Scalar]]) -> pa.Array:
    """Row-wise `{"k1":"v1","k2":"v2",...}` strings; keys are plain identifiers, values pre-rendered."""
    pieces: list[Any] = []
    for position, (key, values) in enumerate(columns):
        pieces.append(pa.scalar(('{"' if position == 0 else '","') + key + '":"'))
        pieces.append(values)
    pieces.append(pa.scalar('"}'))
    return pc.binary_join_element_wise(*pieces, "")


def _div_round(total: np.ndarray, hours: int) -> np.ndarray:
    """Non-negative integer division rounded half up (averages of micro-unit totals)."""
    return (2 * total + hours) // (2 * hours) if hours else np.zeros_like(total)


def _summary_columns(series: dict[str, np.ndarray], names: Sequence[str], window: _Window) -> dict[str, Any]:
    """Summary values in micro-units from per-bucket micro series (last axis = buckets):
    `total<X>` = Σ bucket value x bucket hours, `avg<X>` = total<X> / window hours."""
    totals: dict[str, np.ndarray] = {}
    for tier in TIERS:
        per_tier = {
            f"Cost{tier}": f"cost{tier}",
            **{f"{q}{tier}": f"{s}{tier}" for q, s in _SUMMARY_STEMS.items()},
        }
        for total_name, series_name in per_tier.items():
            totals[total_name] = np.asarray(series[series_name].sum(axis=-1) * window.hours_per_bucket)
    for quantity in _SUMMARY_STEMS:
        totals[quantity] = _add(totals[f"{quantity}{tier}"] for tier in TIERS)
    totals["StorageCost"] = np.asarray(series["storageCost"].sum(axis=-1) * window.hours_per_bucket)
    totals["StorageGib"] = np.asarray(series["storageGib"].sum(axis=-1) * window.hours_per_bucket)
    totals["Cost"] = _add([*(totals[f"Cost{tier}"] for tier in TIERS), totals["StorageCost"]])
    return {
        name: _div_round(totals[name[3:]], window.hours) if name.startswith("avg") else totals[name[5:]]
        for name in names
    }


@dataclass(frozen=True, eq=False)
class _RenderedWindow:
    """One cluster x window, rendered once: listed workloads' JSON fragments and the /cost body."""

    rows: np.ndarray  # cluster workload rows listed in this window, in listing order
    cost_metrics: pa.Array  # per listed workload: its bucket objects joined by ","
    summaries: pa.Array  # per listed workload: its summary object
    cluster_cost_body: bytes


def _render_window(
    org: SandboxOrg, cluster: SandboxCluster, window: _Window, *, cost_only: bool = False
) -> _RenderedWindow:
    """`cost_only`: only the /cost body (no per-workload JSON, the expensive part)."""
    means = org.bucket_metrics(
        cluster.id, window.start_hour, window.n_buckets, window.hours_per_bucket, listing=window.listing
    )
    if window.cost_scale != 1.0:
        # Only the resource cost series: `cost{Tier}` and the summaries are derived from them below.
        means = {
            name: values * window.cost_scale if name in _SCALED_COST_FIELDS else values
            for name, values in means.items()
        }
    micro = {name: values if name in SUMMED_FIELDS else _micro(values) for name, values in means.items()}
    for tier in TIERS:
        micro[f"cost{tier}"] = _add(micro[f"{cost}{tier}"] for cost in RESOURCE_COSTS)
    uptime = _add(means[f"uptimeMinutes{tier}"].sum(axis=1) for tier in TIERS)
    rows = np.flatnonzero((uptime > 0) | (means["storageGib"].sum(axis=1) > 0))
    timestamps = [
        hour_timestamp(window.start_hour + (b + 1) * window.hours_per_bucket) for b in range(window.n_buckets)
    ]
    listed = {name: values[rows] for name, values in micro.items()}
    if cost_only:
        empty = pa.array([], pa.string())
        return _RenderedWindow(
            rows, empty, empty, _cluster_cost_body(cluster, means, listed, window, timestamps)
        )
    bucket_objects = _json_objects(
        [("timestamp", pa.array(timestamps * len(rows), pa.string()))]
        + [(name, _field_strings(name, listed[name])) for name in WORKLOAD_ITEM_FIELDS]
    )
    offsets = pa.array(np.arange(len(rows) + 1, dtype=np.int32) * window.n_buckets, pa.int32())
    cost_metrics = pc.binary_join(pa.ListArray.from_arrays(offsets, bucket_objects), ",")
    summary = _summary_columns(listed, WORKLOAD_SUMMARY_FIELDS, window)
    summaries = _json_objects([(name, _decimal_strings(summary[name])) for name in WORKLOAD_SUMMARY_FIELDS])
    return _RenderedWindow(
        rows, cost_metrics, summaries, _cluster_cost_body(cluster, means, listed, window, timestamps)
    )


def _field_strings(name: str, micro: np.ndarray) -> pa.Array | pa.Scalar:
    """One field of many bucket objects. An all-zero field (TPU, most GPU) is a scalar that
    `binary_join_element_wise` broadcasts: no per-value formatting at all."""
    if not micro.any():
        return pa.scalar("0" if name in SUMMED_FIELDS else "0.000000")
    return pa.array(micro.ravel()).cast(pa.string()) if name in SUMMED_FIELDS else _decimal_strings(micro)


def _cluster_cost_body(
    cluster: SandboxCluster,
    means: dict[str, np.ndarray],
    workload_micro: dict[str, np.ndarray],
    window: _Window,
    timestamps: list[str],
) -> bytes:
    """The cluster pays for its workloads plus idle capacity: every series / (1 - idle share), and never
    less than the sum of the workloads' emitted (rounded) values, so cluster >= Σ workloads holds exactly
    on the strings a client reads (the difference is idle capacity)."""
    scale = 1.0 / (1.0 - cluster.idle_share)
    series = {
        name: np.maximum(_micro(values.sum(axis=0) * scale), workload_micro[name].sum(axis=0))
        for name, values in means.items()
        if name not in SUMMED_FIELDS
    }
    for tier in TIERS:
        series[f"cost{tier}"] = _add(series[f"{cost}{tier}"] for cost in RESOURCE_COSTS)
        for cost, resource in _RESOURCE_OF_COST.items():
            series[f"total{resource}Cost{tier}"] = series[f"{cost}{tier}"] * window.hours_per_bucket
    series["totalStorageCost"] = series["storageCost"] * window.hours_per_bucket
    items = _json_objects(
        [("timestamp", pa.array(timestamps, pa.string()))]
        + [(name, _field_strings(name, series[name])) for name in CLUSTER_ITEM_FIELDS]
    )
    summary = _summary_columns(series, CLUSTER_SUMMARY_FIELDS, window)
    summary_object = _json_objects(
        [(name, _decimal_strings(np.atleast_1d(summary[name]))) for name in CLUSTER_SUMMARY_FIELDS]
    )[0].as_py()
    items_text = ",".join(items.to_pylist())
    return (
        f'{{"clusterId":{_json_str(cluster.id)},"items":[{items_text}],"summary":{summary_object}}}'.encode()
    )


# The hourly series that are costs (`cost{Tier}` is their sum, derived when rendering).
_SCALED_COST_FIELDS: frozenset[str] = frozenset(
    f"{cost}{tier}" for cost in RESOURCE_COSTS for tier in TIERS
) | {"storageCost"}

# cluster, start hour, buckets, hours per bucket, listing prices, cost scale, /cost body only
_WindowKey = tuple[str, int, int, int, bool, float, bool]


class _WindowCache:
    """Rendered windows: a small LRU for on-demand renders plus pinned (prerendered) entries.

    One lock per key so that concurrent pages of one cluster render it once, while different
    clusters render in parallel."""

    def __init__(self, capacity: int = 8):
        self._capacity = capacity
        self._recent: OrderedDict[_WindowKey, _RenderedWindow] = OrderedDict()
        self._pinned: dict[_WindowKey, _RenderedWindow] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[_WindowKey, threading.Lock] = {}

    def get(self, key: _WindowKey, build: Callable[[], _RenderedWindow]) -> _RenderedWindow:
        with self._lock:
            cached = self._lookup(key)
            if cached is not None:
                return cached
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                cached = self._lookup(key)
            if cached is not None:
                return cached
            rendered = build()
            with self._lock:
                self._recent[key] = rendered
                while len(self._recent) > self._capacity:
                    self._recent.popitem(last=False)
                self._key_locks.pop(key, None)
            return rendered

    def peek(self, key: tuple[str, int, int, int, bool, float]) -> _RenderedWindow | None:
        """A full render of this window if one is cached (it also holds the /cost body)."""
        with self._lock:
            return self._lookup((*key, False))

    def pin(self, key: _WindowKey, rendered: _RenderedWindow) -> None:
        with self._lock:
            self._pinned[key] = rendered

    def _lookup(self, key: _WindowKey) -> _RenderedWindow | None:
        if key in self._pinned:
            return self._pinned[key]
        if key in self._recent:
            self._recent.move_to_end(key)
            return self._recent[key]
        return None


# ----------------------------------------------------------------------------------------------
# The API


@dataclass(frozen=True)
class _WorkloadFilter:
    namespaces: frozenset[str] = frozenset()
    workload_names: frozenset[str] = frozenset()
    workload_types: frozenset[str] = frozenset()
    labels: tuple[tuple[str, str], ...] = ()
    labels_operator: str = "OR"


_Handler = Callable[..., _Response]


class _SandboxApi:
    """Routing, auth, faults and the endpoint handlers; knows nothing about sockets."""

    def __init__(self, server: SandboxServer):
        self._server = server
        self._org = server.org
        self._windows = _WindowCache()
        self._requests_lock = threading.Lock()
        clusters, organizations = (
            "/v1/cost-reports/clusters/(?P<cluster_id>[^/]+)",
            "organizations/(?P<org_id>[^/]+)",
        )
        get, get_post = frozenset({"GET"}), frozenset({"GET", "POST"})
        self._routes: list[tuple[frozenset[str], re.Pattern[str], _Handler]] = [
            (get, re.compile("/v1/kubernetes/external-clusters"), self._clusters),
            (get_post, re.compile(f"{clusters}/workload-costs"), self._workload_costs),
            (get, re.compile(f"{clusters}/cost"), self._cluster_cost),
            (get, re.compile(f"/pricing/v1/{organizations}/clusters/prices"), self._cluster_prices),
            (get, re.compile(f"/pricing/v1beta/{organizations}/anywhere-cluster-default-pricing"),
             self._default_pricing),
            (get, re.compile("/v1/billing/platform-usage-report"), self._platform_usage),
            (get, re.compile("/v1/billing/enterprise/usage-report"), self._enterprise_usage),
            (get, re.compile("/organization-management/v1/enterprises/(?P<enterprise_id>[^/]+)"
                             "/organizations"), self._child_organizations),
            (get, re.compile("/v1/discounts"), self._discounts),
            (frozenset({"POST"}), re.compile("/v1/cost-reports/workload-labels/names"), self._label_names),
        ]  # fmt: skip

    # Entry point ------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Response:
        parts = urlsplit(target)
        request = _Request(method, parts.path, parse_qs(parts.query, keep_blank_values=True), headers, body)
        self._record(request)
        if request.path == "/healthz":
            return _Response(200, b'{"status":"ok"}')
        plan = FaultPlan()
        try:
            scope = self._authorize(request)
            faults = self._server.faults
            plan = faults.plan(request.path, f"{method} {target}")
            response = self._answer(request, scope, plan, faults)
        except _ApiError as exc:
            response = exc.response()
        except Exception:  # a sandbox bug: answer like Cast AI would, keep the traceback visible
            logger.exception("sandbox failed on %s", request.endpoint())
            response = _error(500, "Internal Server Error")
        if plan.trickle_seconds:
            response = replace(response, trickle_seconds=plan.trickle_seconds)
        return response

    def _answer(self, request: _Request, scope: str, plan: FaultPlan, faults: Faults) -> _Response:
        if plan.delay_seconds:
            self._server.wait(plan.delay_seconds)
        if plan.status is not None:
            return _fault_response(plan)
        canned = faults.canned(request.path, request.query)
        if canned is not None:
            return _Response(canned.status, canned.body, canned.content_type, dict(canned.headers))
        return _corrupt(self._route(request, scope), plan)

    def wait(self, seconds: float) -> bool:
        """Sleep like a fault's delay; True when the server is stopping (stop sending)."""
        return self._server.wait(seconds)

    def _record(self, request: _Request) -> None:
        headers = {k: (REDACTED if k in _SECRET_HEADERS else v) for k, v in request.headers.items()}
        try:
            parsed = json.loads(request.body) if request.body else None
        except ValueError:
            parsed = None
        with self._requests_lock:
            self._server.requests.append(
                RecordedRequest(request.method, request.path, request.query, headers, parsed)
            )

    def _authorize(self, request: _Request) -> str:
        """Check the API key; return the organisation the request acts for."""
        key = request.headers.get("x-api-key", "")
        authorization = request.headers.get("authorization", "")
        if not key and authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
        if not hmac.compare_digest(key.encode(), self._org.api_key.encode()):
            raise _ApiError(401, "Unauthorized")
        organization = request.headers.get("x-castai-organization-id", "").strip()
        if not organization:
            return self._org.organization_id
        if organization not in self._org.known_organization_ids():
            raise _ApiError(500, "Internal Server Error")
        return organization

    def _route(self, request: _Request, scope: str) -> _Response:
        for methods, pattern, handler in self._routes:
            match = pattern.fullmatch(request.path)
            if match:
                if request.method not in methods:
                    raise _ApiError(405, f"method {request.method} not allowed on {request.path}")
                return handler(request, scope, **match.groupdict())
        raise _ApiError(404, f"no such endpoint: {request.path}")

    def render(self, cluster: SandboxCluster, window: _Window, *, cost_only: bool = False) -> _RenderedWindow:
        """Cached render; a full render also serves `cost_only` requests."""
        base = (
            cluster.id,
            window.start_hour,
            window.n_buckets,
            window.hours_per_bucket,
            window.listing,
            window.cost_scale,
        )
        if cost_only:
            full = self._windows.peek(base)
            if full is not None:
                return full
        key: _WindowKey = (*base, cost_only)
        return self._windows.get(key, lambda: _render_window(self._org, cluster, window, cost_only=cost_only))

    def prerender(self, cluster: SandboxCluster, window: _Window) -> None:
        """Pin the workload-costs window and the /cost body at listing prices (the exporter asks both)."""
        key = (cluster.id, window.start_hour, window.n_buckets, window.hours_per_bucket)
        self._windows.pin((*key, False, 1.0, False), _render_window(self._org, cluster, window))
        listing = replace(window, listing=True)
        self._windows.pin(
            (*key, True, 1.0, True), _render_window(self._org, cluster, listing, cost_only=True)
        )

    # Endpoints --------------------------------------------------------------------------------

    def _clusters(self, request: _Request, scope: str) -> _Response:
        faults = self._server.faults
        clusters = [
            c
            for c in self._org.clusters_of(scope)
            if not faults.unlist_all_clusters and c.id not in faults.unlisted_clusters
        ]
        items = [c.to_api() for c in clusters]
        for item in items:
            if item["id"] in faults.deleted_clusters:
                item.update(deletedAt=faults.deleted_clusters[item["id"]], status="deleted")
        return _Response(200, _json_bytes({"items": items}))

    def _scoped_cluster(self, request: _Request, scope: str, cluster_id: str) -> SandboxCluster:
        for cluster in self._org.clusters_of(scope):
            if cluster.id == cluster_id:
                return cluster
        raise _ApiError(
            404, f"cluster {cluster_id} not found ({request.endpoint()})", [("clusterId", "not found")]
        )

    def _served_window(self, request: _Request) -> _Window:
        """The requested window, or (fault `answer_step_seconds`) the same span in buckets of another size;
        (fault `cost_scale`) with every cost multiplied."""
        faults = self._server.faults
        window = _window(request)
        scaled, scale = faults.answer(faults.cost_scale, request.path)
        if scaled and scale is not None:
            window = replace(window, cost_scale=float(scale))
        matched, step = faults.answer(faults.answer_step_seconds, request.path)
        if not matched or step is None:
            return window
        hours_per_bucket = max(1, step // HOUR_SECONDS)
        return replace(
            window, n_buckets=max(1, window.hours // hours_per_bucket), hours_per_bucket=hours_per_bucket
        )

    def _workload_costs(self, request: _Request, scope: str, cluster_id: str) -> _Response:
        cluster = self._scoped_cluster(request, scope, cluster_id)
        faults = self._server.faults
        no_data, reason = faults.answer(faults.no_data, request.path)
        deleted_at = faults.deleted_clusters.get(cluster.id)
        deleted_seconds = datetime.fromisoformat(deleted_at).timestamp() if deleted_at else None
        if deleted_seconds is not None and _window(request).start_hour * HOUR_SECONDS >= deleted_seconds:
            no_data, reason = True, None
        if no_data:
            _window(request)  # still validated
            reason_field = "" if reason is None else f',"noDataReason":{_json_str(reason)}'
            body = (
                f'{{"clusterId":{_json_str(cluster.id)},"items":[]{reason_field},'
                '"nextCursor":"","count":"0"}'
            )
            return _Response(200, body.encode("utf-8"))
        window = self._served_window(request)
        workload_filter = _body_filter(request) if request.method == "POST" else _query_filter(request)
        offset, limit = _page_bounds(request)
        labels_to_include = list(dict.fromkeys(request.query.get("labelsToInclude", [])))
        rendered = self.render(cluster, window)
        positions = _filtered_positions(cluster, rendered.rows, workload_filter)
        page = list(positions[offset : offset + limit])
        _, omitted = faults.answer(faults.omit_identity, request.path)
        left_out = set(omitted or ())
        bare, bare_reason = faults.answer(faults.no_data_keep_items, request.path)
        reason_field = (
            "" if bare and bare_reason is None else f'"noDataReason":{_json_str(bare_reason or "Unknown")},'
        )
        if faults.duplicate_workloads and 0 < offset <= len(positions):
            page.insert(0, positions[offset - 1])
        if faults.cursor_loop:
            next_cursor = _encode_cursor(limit)
        else:
            next_cursor = _encode_cursor(offset + limit) if offset + limit < len(positions) else ""
        workloads = cluster.workloads
        items = []
        for position in page:
            row = int(rendered.rows[position])
            labels = workloads.labels[row]
            label_objects = ",".join(
                f'{{"name":{_json_str(key)},"value":{_json_str(labels[key])}}}'
                for key in labels_to_include
                if key in labels
            )
            identity = (
                ("workloadName", workloads.workload_names[row]),
                ("workloadType", workloads.workload_types[row]),
                ("namespace", workloads.namespaces[row]),
            )
            items.append(
                "{"
                + "".join(f'"{name}":{_json_str(value)},' for name, value in identity if name not in left_out)
                + f'"costMetrics":[{"" if bare else rendered.cost_metrics[position].as_py()}],'
                f'"labels":[{label_objects}],'
                f'"summary":{rendered.summaries[position].as_py()}}}'
            )
        body = (
            f'{{"clusterId":{_json_str(cluster.id)},"items":[{",".join(items)}],{reason_field}'
            f'"nextCursor":{_json_str(next_cursor)},"count":"{len(positions)}"}}'
        )
        return _Response(200, body.encode("utf-8"))

    def _cluster_cost(self, request: _Request, scope: str, cluster_id: str) -> _Response:
        cluster = self._scoped_cluster(request, scope, cluster_id)
        window = self._served_window(request)
        return _Response(200, self.render(cluster, window, cost_only=True).cluster_cost_body)

    def _known_org(self, request: _Request, org_id: str) -> None:
        if org_id not in self._org.known_organization_ids():
            raise _ApiError(
                404,
                f"organization {org_id} not found ({request.endpoint()})",
                [("organizationId", "not found")],
            )

    def _cluster_prices(self, request: _Request, scope: str, org_id: str) -> _Response:
        self._known_org(request, org_id)
        priced = [c for c in self._org.priced_clusters() if c in self._org.clusters_of(org_id)]
        page, cursor = _paged(request, priced)
        return _Response(
            200, _json_bytes({"items": [c.price_to_api() for c in page], "nextPageCursor": cursor})
        )

    def _default_pricing(self, request: _Request, scope: str, org_id: str) -> _Response:
        self._known_org(request, org_id)
        return _Response(200, _json_bytes({
            "cpuHourlyPrice": f"{self._org.default_cpu_hourly_price:.6f}",
            "memoryGibHourlyPrice": f"{self._org.default_memory_gib_hourly_price:.6f}",
        }))  # fmt: skip

    def _platform_usage(self, request: _Request, scope: str) -> _Response:
        clusters = self._org.clusters_of(scope)
        return _Response(
            200, _json_bytes({"subscriptions": _subscriptions(clusters), "features": _features(clusters)})
        )

    def _enterprise_usage(self, request: _Request, scope: str) -> _Response:
        if scope not in (self._org.organization_id, self._org.enterprise_id):
            raise _ApiError(
                404, f"organization {scope} is not an enterprise organization ({request.endpoint()})"
            )
        organizations = [
            {"organizationId": child.id, "organizationName": child.name,
             "features": _features(self._org.clusters_of(child.id))}
            for child in self._org.child_organizations
        ]  # fmt: skip
        return _Response(
            200, _json_bytes({"enterpriseId": self._org.enterprise_id, "organizations": organizations})
        )

    def _child_organizations(self, request: _Request, scope: str, enterprise_id: str) -> _Response:
        if enterprise_id != self._org.enterprise_id:
            raise _ApiError(
                404,
                f"enterprise {enterprise_id} not found ({request.endpoint()})",
                [("enterpriseId", "not found")],
            )
        page, cursor = _paged(request, self._org.child_organizations)
        items = [{"id": c.id, "name": c.name, "parentId": enterprise_id} for c in page]
        return _Response(200, _json_bytes({"items": items, "nextPageCursor": cursor}))

    def _label_names(self, request: _Request, scope: str) -> _Response:
        """Label names of the workloads of the body's `clusterIds` (empty: every visible cluster)."""
        missing = [
            (n, "required RFC 3339 date-time") for n in ("startTime", "endTime") if not request.first(n)
        ]
        if missing:
            raise _ApiError(400, f"invalid request parameters for {request.endpoint()}", missing)
        try:
            body = json.loads(request.body) if request.body.strip() else {}
        except ValueError:
            raise _ApiError(400, f"invalid WorkloadLabelFilters body for {request.endpoint()}") from None
        wanted = set(body.get("clusterIds") or []) if isinstance(body, dict) else set()
        namespaces = set(body.get("namespaces") or []) if isinstance(body, dict) else set()
        names: set[str] = set()
        for cluster in self._org.clusters_of(scope):
            if wanted and cluster.id not in wanted:
                continue
            workloads = cluster.workloads
            for row, labels in enumerate(workloads.labels):
                if not namespaces or workloads.namespaces[row] in namespaces:
                    names.update(labels)
        ordered = sorted(names)
        page, cursor = _paged(request, ordered)
        return _Response(
            200, _json_bytes({"labelNames": list(page), "nextCursor": cursor, "count": str(len(ordered))})
        )

    def _discounts(self, request: _Request, scope: str) -> _Response:
        page, cursor = _paged(request, self._org.discounts)
        return _Response(200, _json_bytes({"discounts": [d.to_api() for d in page], "nextPageToken": cursor}))


def _query_filter(request: _Request) -> _WorkloadFilter:
    return _WorkloadFilter(
        namespaces=frozenset(request.query.get("filter.namespaces", [])),
        workload_names=frozenset(request.query.get("filter.workloadNames", [])),
        workload_types=frozenset(request.query.get("filter.workloadTypes", [])),
    )


def _body_filter(request: _Request) -> _WorkloadFilter:
    """The POST body `WorkloadFilter` (castai-api.md §3.2); an empty body means no filter."""

    def invalid(field_name: str, description: str) -> _ApiError:
        return _ApiError(
            400, f"invalid WorkloadFilter body for {request.endpoint()}", [(field_name, description)]
        )

    try:
        body = json.loads(request.body) if request.body.strip() else {}
    except ValueError:
        raise invalid("body", "invalid JSON") from None
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object")
    lists: dict[str, frozenset[str]] = {}
    for name in ("namespaces", "workloadNames", "workloadTypes"):
        values = body.get(name) or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise invalid(name, "must be a list of strings")
        lists[name] = frozenset(values)
    labels = body.get("labels") or []
    if not isinstance(labels, list) or not all(
        isinstance(label, dict) and isinstance(label.get("label"), str) for label in labels
    ):
        raise invalid("labels", 'must be a list of {"label": ..., "value": ...}')
    operator = str(body.get("labelsOperator") or "OR").upper()
    if operator not in ("OR", "AND"):
        raise invalid("labelsOperator", "must be OR or AND")
    return _WorkloadFilter(
        namespaces=lists["namespaces"],
        workload_names=lists["workloadNames"],
        workload_types=lists["workloadTypes"],
        labels=tuple((label["label"], str(label.get("value", ""))) for label in labels),
        labels_operator=operator,
    )


def _filtered_positions(cluster: SandboxCluster, rows: np.ndarray, wanted: _WorkloadFilter) -> np.ndarray:
    """Positions (into `rows`) of the listed workloads that pass the filter, in listing order."""
    workloads = cluster.workloads
    keep = np.ones(len(rows), dtype=bool)
    for values, column in (
        (wanted.namespaces, workloads.namespaces),
        (wanted.workload_names, workloads.workload_names),
        (wanted.workload_types, workloads.workload_types),
    ):
        if values:
            keep &= np.isin(column[rows], list(values))
    if wanted.labels:
        combine = all if wanted.labels_operator == "AND" else any
        keep &= np.array(
            [combine(workloads.labels[row].get(k) == v for k, v in wanted.labels) for row in rows], dtype=bool
        )
    return np.flatnonzero(keep)


def _fault_response(plan: FaultPlan) -> _Response:
    assert plan.status is not None
    response = _error(plan.status, HTTPStatus(plan.status).phrase)
    if plan.retry_after is not None:
        return _Response(response.status, response.body, headers={"Retry-After": plan.retry_after})
    return response


def _corrupt(response: _Response, plan: FaultPlan) -> _Response:
    if plan.body is BodyFault.HTML:
        page = (
            b"<!DOCTYPE html><html><head><title>Bad Gateway</title></head><body>upstream error</body></html>"
        )
        return _Response(200, page, content_type="text/html; charset=utf-8")
    if plan.body is BodyFault.MALFORMED:
        return _Response(response.status, response.body[: len(response.body) // 2], headers=response.headers)
    return response


# Billing (synthetic usage, fixed dates) --------------------------------------------------------

_FEATURES = (("phase2", "Node Autoscaler", 1.0), ("woop", "Workload Autoscaler", 0.35))
_PROVIDER_CSP = {"eks": "aws", "gke": "gcp", "aks": "azure"}


def _subscriptions(clusters: Sequence[SandboxCluster]) -> list[dict[str, Any]]:
    providers = sorted({_PROVIDER_CSP[c.provider_type] for c in clusters if c.provider_type in _PROVIDER_CSP})
    return [
        {"provider": p, "startDate": "2025-01-01T00:00:00Z", "endDate": "2027-12-31T23:59:59Z"}
        for p in providers
    ]


def _features(clusters: Sequence[SandboxCluster]) -> list[dict[str, Any]]:
    """FeatureUsageSummary per feature (castai-api.md §6.1); usage in provisioned vCPUs, JSON numbers."""
    phase2_cpus = sum(c.provisioned_cpus() for c in clusters if c.provider_type != "anywhere")
    features = []
    for feature, display_name, share in _FEATURES:
        usage = round(phase2_cpus * share, 3)
        used = min(usage, 100.0)
        features.append({
            "feature": feature,
            "displayName": display_name,
            "usage": usage,
            "unit": "CPU",
            "credits": {"total": 100.0, "used": used, "remaining": round(100.0 - used, 3),
                        "resetFrequency": "monthly", "startDate": "2026-01-01T00:00:00Z",
                        "endDate": "2026-02-01T00:00:00Z", "provider": "aws"},
            "freeOfCharge": {"isFreeOfCharge": False},
            "creditsApplied": used,
            "freeOfChargePeriods": [],
            "creditPeriods": [],
        })  # fmt: skip
    return features


# ----------------------------------------------------------------------------------------------
# HTTP plumbing


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: _SandboxApi):
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

    def _trickle(self, response: _Response) -> None:
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
        self._api = _SandboxApi(self)
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
        window = _Window(first, (last - first) // hours_per_bucket, hours_per_bucket)
        for cluster in self.org.clusters:
            self._api.prerender(cluster, window)
        return len(self.org.clusters)


# ----------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="castai-focus-sandbox",
        description="Serve a simulated Cast AI API on 127.0.0.1 until SIGTERM/SIGINT; prints SANDBOX_URL=... "
        "when ready.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument("--clusters", type=int, default=6)
    parser.add_argument("--workloads-per-cluster", type=int, default=15)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--prerender-start", help="RFC 3339 start of a window to render before serving")
    parser.add_argument("--prerender-end", help="RFC 3339 end of that window")
    parser.add_argument("--prerender-step", type=int, default=3600, help="bucket seconds of that window")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if bool(args.prerender_start) != bool(args.prerender_end):
        _parser().error("--prerender-start and --prerender-end go together")
    org = SandboxOrg.generate(
        seed=args.seed, clusters=args.clusters, workloads_per_cluster=args.workloads_per_cluster
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with SandboxServer(org, port=args.port) as server:
        if args.prerender_start:
            server.prerender(args.prerender_start, args.prerender_end, args.prerender_step)
        print(f"SANDBOX_URL={server.url}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
