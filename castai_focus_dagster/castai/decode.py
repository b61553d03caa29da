"""Typed decoding of Cast AI JSON responses into the project's data contracts.

Why msgspec: a workload-costs response is tens of MB per cluster and day, and every decimal is a
JSON *string* ("0.412800"). msgspec decoders run with `strict=False`, so those strings become
floats inside the C decoder, and unknown keys are skipped without building Python dicts. The
decoded metric structs are turned into Arrow columns through one numpy structured array per page
(`np.array(list_of_tuples, dtype=record)`), so no Python code runs per field per bucket.

Tolerance rules (Cast AI emits protojson; empty values may be omitted, see castai-api.md §1.2):
unknown keys are ignored; a missing metric field means 0.0; a missing cursor, list or map means
empty. What cannot be repaired raises `InvalidResponse` naming the field (and the workload); the
client turns it into a `CastAIError` that also names the endpoint and the cluster.

What would make a total silently wrong is refused rather than guessed: an error envelope on a 200
(decoded leniently it would read as "no items"), buckets of another size than the requested step
(the grid of the timestamps, over all pages, must be the step), a workload listed twice with different
numbers, a bucket listed twice, a tier cost that disagrees with its resource costs, absurd magnitudes, a page
sequence that ends before the `count` it announced. Three repairs keep the export going, each counted
so the client can warn: an identical repeat of a workload is dropped, a label whose key or value
holds control characters (which Kubernetes label syntax forbids) is left out of the labels, and a
workload without `workloadName`, `workloadType` or `namespace` (none is required by the definition)
is kept under the `MISSING_IDENTITY` placeholder. An answer without any workload is "no data", with
the `noDataReason` Cast AI gave, never "cost nothing".
docs/reliability.md lists every bad input with its outcome.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import msgspec
import numpy as np
import pyarrow as pa

from castai_focus_dagster.castai.models import (
    METRIC_COLUMNS,
    TIERS,
    WORKLOAD_COSTS_SCHEMA,
    ChildOrganization,
    Cluster,
    ClusterPrice,
    DefaultPricing,
    Discount,
    FeatureUsage,
)

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1, pattern=r"\S")]  # not blank either

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# Plausibility bounds of one workload bucket. Nothing real comes near them (a million dollars an hour
# for one workload, a billion CPUs, GiB or pod-minutes), and below them a day of float64 sums still
# carries micro-dollar precision. Beyond them the value is a unit or encoding error, not a cost.
MAX_HOURLY_COST = 1e6
MAX_QUANTITY = 1e9
# cost{Tier} versus cpu + ram + gpu + tpu cost of the tier: four 6-decimal strings round apart by < 5e-6.
TIER_SUM_TOLERANCE = 5e-6
# Kubernetes label keys and values never contain them; Tags readers would meet invisible characters.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class InvalidResponse(ValueError):
    """A response that cannot be decoded; `reason` is "invalid JSON", "invalid UTF-8", "invalid response"
    or "error body"."""

    def __init__(self, detail: str, *, reason: str, field: str | None = None, workload: str | None = None):
        super().__init__(detail)
        self.reason = reason
        self.field = field
        self.workload = workload


# --------------------------------------------------------------------------------------------------
# Structs (field names follow the API through rename="camel"; order of metric fields matters: it is
# the column order of the record arrays, checked against models.METRIC_COLUMNS by the tests).


class _Region(msgspec.Struct, rename="camel"):
    name: str = ""
    display_name: str = ""


class _Cluster(msgspec.Struct, rename="camel"):
    id: NonEmptyStr
    name: str = ""
    organization_id: str = ""
    provider_type: str = ""
    region: _Region | None = None
    tags: dict[str, str] | None = None
    status: str | None = None
    deleted_at: AwareDatetime | None = None


class _Body(msgspec.Struct):
    """Top level of every response: an `ErrorResponse` envelope on a 200 is recognised and refused.

    Decoded leniently (unknown keys ignored, missing lists empty) it would read as a valid, empty answer:
    a cluster without workloads, a day without cost.
    """

    message: str | None = None
    field_violations: list[Any] | None = msgspec.field(default=None, name="fieldViolations")


class _ClustersResponse(_Body):
    items: list[_Cluster] = []


class WorkloadCostItem(msgspec.Struct, rename="camel", gc=False):
    """One bucket of one workload (average hourly rates / average counts over the bucket)."""

    timestamp: AwareDatetime
    cost_on_demand: float = 0.0
    cost_spot: float = 0.0
    cost_spot_fallback: float = 0.0
    cpu_count_on_demand: float = 0.0
    cpu_count_spot: float = 0.0
    cpu_count_spot_fallback: float = 0.0
    pod_count_on_demand: float = 0.0
    pod_count_spot: float = 0.0
    pod_count_spot_fallback: float = 0.0
    uptime_minutes_on_demand: float = 0.0
    uptime_minutes_spot: float = 0.0
    uptime_minutes_spot_fallback: float = 0.0
    cpu_cost_on_demand: float = 0.0
    cpu_cost_spot: float = 0.0
    cpu_cost_spot_fallback: float = 0.0
    ram_cost_on_demand: float = 0.0
    ram_cost_spot: float = 0.0
    ram_cost_spot_fallback: float = 0.0
    ram_gib_on_demand: float = 0.0
    ram_gib_spot: float = 0.0
    ram_gib_spot_fallback: float = 0.0
    gpu_cost_on_demand: float = 0.0
    gpu_cost_spot: float = 0.0
    gpu_cost_spot_fallback: float = 0.0
    gpu_count_on_demand: float = 0.0
    gpu_count_spot: float = 0.0
    gpu_count_spot_fallback: float = 0.0
    tpu_cost_on_demand: float = 0.0
    tpu_cost_spot: float = 0.0
    tpu_cost_spot_fallback: float = 0.0
    tpu_count_on_demand: float = 0.0
    tpu_count_spot: float = 0.0
    tpu_count_spot_fallback: float = 0.0
    storage_cost: float = 0.0
    storage_gib: float = 0.0


class _Label(msgspec.Struct, gc=False):
    name: str
    value: str = ""


# The definition requires none of a workload's identity fields. A missing (or blank) one is exported
# under this placeholder: parentheses are forbidden in Kubernetes names, namespaces and kinds, so it
# never collides with a real workload.
MISSING_IDENTITY = "(unknown)"
IDENTITY_FIELDS = ("namespace", "workloadType", "workloadName")


class WorkloadItem(msgspec.Struct, rename="camel"):
    workload_name: str | None = None
    namespace: str | None = None
    workload_type: str | None = None
    cost_metrics: list[WorkloadCostItem] = []
    labels: list[_Label] = []

    def missing_identity(self) -> tuple[str, ...]:
        """The identity fields (API names) this item lacks or leaves blank."""
        values = (self.namespace, self.workload_type, self.workload_name)
        return tuple(f for f, v in zip(IDENTITY_FIELDS, values, strict=True) if v is None or not v.strip())


class WorkloadCostsPage(_Body):
    items: list[WorkloadItem] = []
    next_cursor: str | None = msgspec.field(default=None, name="nextCursor")
    count: int | None = None  # workloads matching the request over all pages (a string in the API)
    # Unknown | NoMetricsServer | AgentOutdated: why Cast AI has no data (meaningful when items are empty).
    no_data_reason: str | None = msgspec.field(default=None, name="noDataReason")


class CostReportItem(msgspec.Struct, rename="camel", gc=False):
    """One bucket of the cluster cost report (`GET /v1/cost-reports/clusters/{id}/cost`)."""

    timestamp: AwareDatetime
    cost_on_demand: float = 0.0
    cost_spot: float = 0.0
    cost_spot_fallback: float = 0.0
    cpu_count_on_demand: float = 0.0
    cpu_count_spot: float = 0.0
    cpu_count_spot_fallback: float = 0.0
    cpu_cost_on_demand: float = 0.0
    ram_cost_on_demand: float = 0.0
    cpu_cost_spot: float = 0.0
    ram_cost_spot: float = 0.0
    cpu_cost_spot_fallback: float = 0.0
    ram_cost_spot_fallback: float = 0.0
    ram_gib_on_demand: float = 0.0
    ram_gib_spot: float = 0.0
    ram_gib_spot_fallback: float = 0.0
    gpu_cost_on_demand: float = 0.0
    gpu_cost_spot: float = 0.0
    gpu_cost_spot_fallback: float = 0.0
    gpu_count_on_demand: float = 0.0
    gpu_count_spot: float = 0.0
    gpu_count_spot_fallback: float = 0.0
    storage_gib: float = 0.0
    storage_cost: float = 0.0
    total_cpu_cost_on_demand: float = 0.0
    total_cpu_cost_spot: float = 0.0
    total_cpu_cost_spot_fallback: float = 0.0
    total_ram_cost_on_demand: float = 0.0
    total_ram_cost_spot: float = 0.0
    total_ram_cost_spot_fallback: float = 0.0
    total_gpu_cost_on_demand: float = 0.0
    total_gpu_cost_spot: float = 0.0
    total_gpu_cost_spot_fallback: float = 0.0
    total_storage_cost: float = 0.0
    tpu_cost_on_demand: float = 0.0
    tpu_cost_spot: float = 0.0
    tpu_cost_spot_fallback: float = 0.0
    tpu_count_on_demand: float = 0.0
    tpu_count_spot: float = 0.0
    tpu_count_spot_fallback: float = 0.0
    total_tpu_cost_on_demand: float = 0.0
    total_tpu_cost_spot: float = 0.0
    total_tpu_cost_spot_fallback: float = 0.0


class _CostReportResponse(_Body):
    items: list[CostReportItem] = []


class _ClusterPrice(msgspec.Struct, rename="camel"):
    cluster_id: NonEmptyStr
    cpu_hourly_price: float
    memory_gib_hourly_price: float
    default: bool = False


class _ClusterPricesPage(_Body):
    items: list[_ClusterPrice] = []
    next_cursor: str | None = msgspec.field(default=None, name="nextPageCursor")


class _Prices(msgspec.Struct, rename="camel"):
    cpu_hourly_price: float | None = None
    memory_gib_hourly_price: float | None = None


class _DefaultPricingResponse(_Prices):
    pricing: _Prices | None = None  # tolerated wrapper: the shape of this endpoint is not published
    message: str | None = None  # an error envelope on a 200, as in `_Body`
    field_violations: list[Any] | None = msgspec.field(default=None, name="fieldViolations")


class _DiscountPricing(msgspec.Struct):
    value: float
    type: str = "TYPE_UNKNOWN"


class _Discount(msgspec.Struct, rename="camel"):
    id: str = ""
    name: str | None = None
    enabled: bool = False
    target: str = "TARGET_UNKNOWN"
    csp: str = ""
    clusters: list[str] = []
    life_cycles: list[str] = []
    regions: list[str] = []
    families: list[str] = []
    instance_types: list[str] = []
    zones: list[str] = []
    os: list[str] = []
    start_date: AwareDatetime | None = None
    end_date: AwareDatetime | None = None
    pricing: list[_DiscountPricing] = []


class _DiscountsPage(_Body):
    discounts: list[_Discount] = []
    next_cursor: str | None = msgspec.field(default=None, name="nextPageToken")


class _LabelNamesPage(_Body):
    """`GetWorkloadLabelNamesResponse`: `labelNames`, `nextCursor`, `count`."""

    label_names: list[str] = msgspec.field(default_factory=list, name="labelNames")
    next_cursor: str | None = msgspec.field(default=None, name="nextCursor")


class _ChildOrganization(msgspec.Struct, rename="camel"):
    id: NonEmptyStr
    name: str = ""


class _ChildOrganizationsPage(_Body):
    # No default: a 200 without `items` is a wrong shape, never "no child organisations".
    items: list[_ChildOrganization] | None = None
    next_cursor: str | None = msgspec.field(default=None, name="nextPageCursor")


class _Feature(msgspec.Struct, rename="camel"):
    feature: NonEmptyStr
    display_name: str = ""
    usage: float = 0.0
    unit: str = ""


class _PlatformUsageResponse(_Body):
    features: list[_Feature] = []


class _ErrorResponse(msgspec.Struct, rename="camel"):
    message: str = ""
    field_violations: list[dict[str, Any]] = []


COST_REPORT_COLUMNS: tuple[str, ...] = CostReportItem.__struct_encode_fields__[1:]
_WORKLOAD_RECORD = np.dtype([("timestamp", object), *((name, np.float64) for name in METRIC_COLUMNS)])
_COST_REPORT_RECORD = np.dtype([("timestamp", object), *((name, np.float64) for name in COST_REPORT_COLUMNS)])

T = TypeVar("T")
_ERROR_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING_FIELD = re.compile(r"missing required field `(?P<field>[^`]+)`")
_ITEM_INDEX = re.compile(r"^\.(?P<list>\w+)\[(?P<index>\d+)\]")


def _decoder(response_type: type[T]) -> msgspec.json.Decoder[T]:
    """strict=False: Cast AI's string decimals ("0.412800") decode straight to float."""
    return msgspec.json.Decoder(response_type, strict=False)


# Built once (msgspec decoders are thread-safe), shared by every client thread.
_CLUSTERS = _decoder(_ClustersResponse)
_WORKLOAD_COSTS_PAGE = _decoder(WorkloadCostsPage)
_COST_REPORT = _decoder(_CostReportResponse)
_CLUSTER_PRICES_PAGE = _decoder(_ClusterPricesPage)
_DEFAULT_PRICING = _decoder(_DefaultPricingResponse)
_DISCOUNTS_PAGE = _decoder(_DiscountsPage)
_CHILD_ORGANIZATIONS_PAGE = _decoder(_ChildOrganizationsPage)
_LABEL_NAMES_PAGE = _decoder(_LabelNamesPage)
_PLATFORM_USAGE = _decoder(_PlatformUsageResponse)
_ERROR = _decoder(_ErrorResponse)


def _decode(body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    try:
        decoded = decoder.decode(body)
    except UnicodeDecodeError:  # msgspec lets it through bare, naming neither field nor offset
        raise _invalid_utf8(body) from None
    except msgspec.DecodeError as exc:
        if not isinstance(exc, msgspec.ValidationError):
            raise InvalidResponse(f"invalid JSON: {_body_kind(body)}", reason="invalid JSON") from None
        raise _validation_problem(exc, body) from None
    if (
        getattr(decoded, "message", None) is not None
        or getattr(decoded, "field_violations", None) is not None
    ):
        message, field = error_message(body)
        raise InvalidResponse(
            f"a successful (2xx) response carries an error body: {message}",
            reason="error body",
            field=field or "message",
        )
    return decoded


_LAST_KEY = re.compile(rb'"((?:[^"\\]|\\.){1,256})"\s*:')


def _invalid_utf8(body: bytes) -> InvalidResponse:
    """Name the offset, the nearest JSON key before it and, in workload costs, the workload."""
    try:
        body.decode("utf-8")
        offset = -1  # msgspec disagreed with Python's codec: report without a position
    except UnicodeDecodeError as exc:
        offset = exc.start
    keys = _LAST_KEY.findall(body[: max(offset, 0)][-4096:])
    field = keys[-1].decode("utf-8", "backslashreplace") if keys else None
    for key in reversed(keys):  # inside a label list ({"name": ..., "value": ...}): name the list
        if key not in (b"name", b"value"):
            field = "labels" if key == b"labels" else field
            break
    workload = None
    try:  # error path only: read the body again with the bad bytes replaced, to name the workload
        items = msgspec.json.decode(body.decode("utf-8", "replace")).get("items")
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict) and "\ufffd" in msgspec.json.encode(item).decode():
                workload = workload_label(
                    str(item.get("namespace", "?")),
                    str(item.get("workloadType", "?")),
                    str(item.get("workloadName", "?")),
                )
                break
    except (msgspec.DecodeError, AttributeError):
        pass
    where = f" at byte {offset}" if offset >= 0 else ""
    detail = f"the body is not valid UTF-8{where} (JSON text must be)"
    if workload is not None:
        detail += f" (workload {workload})"
    return InvalidResponse(detail, reason="invalid UTF-8", field=field, workload=workload)


def _body_kind(body: bytes) -> str:
    head = body.lstrip()[:64].lower()
    if head.startswith(b"<"):
        return "an HTML/XML document instead of JSON"
    if not head:
        return "an empty body"
    return "malformed JSON"


def _validation_problem(exc: msgspec.ValidationError, body: bytes) -> InvalidResponse:
    """Name the field and, inside a workload-costs item, the workload the bad value belongs to."""
    message = str(exc)
    path_match = _ERROR_PATH.search(message)
    path = path_match.group("path") if path_match else ""
    missing = _MISSING_FIELD.search(message)
    field = missing.group("field") if missing else (re.findall(r"\.(\w+)", path) or [None])[-1]
    workload = None
    item = _ITEM_INDEX.match(path)
    if item and item.group("list") == "items":
        workload = _workload_at(body, int(item.group("index")))
    detail = message if workload is None else f"{message} (workload {workload})"
    return InvalidResponse(detail, reason="invalid response", field=field, workload=workload)


def _workload_at(body: bytes, index: int) -> str | None:
    """Error path only: re-read the body generically to name the workload at items[index]."""
    try:
        item = msgspec.json.decode(body)["items"][index]
    except (msgspec.DecodeError, UnicodeDecodeError, LookupError, TypeError):
        return None
    if not isinstance(item, dict):
        return None
    return workload_label(
        *(str(item.get(name) or MISSING_IDENTITY) for name in ("namespace", "workloadType", "workloadName"))
    )


def workload_label(namespace: str, workload_type: str, workload_name: str) -> str:
    return f"{namespace}/{workload_type}/{workload_name}"


def to_microseconds(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


# --------------------------------------------------------------------------------------------------
# Error bodies


def error_message(body: bytes) -> tuple[str, str | None]:
    """(message, first violated field) of an ErrorResponse body; a short description for other bodies."""
    try:
        error = _ERROR.decode(body)
    except UnicodeDecodeError:
        return "an error response that is not valid UTF-8", None
    except msgspec.DecodeError:
        return f"{_body_kind(body)} in the error response", None
    violations = [v for v in error.field_violations if isinstance(v, dict)]
    field = str(violations[0].get("field")) if violations and violations[0].get("field") else None
    details = "; ".join(f"{v.get('field', '?')}: {v.get('description', '')}" for v in violations)
    return (f"{error.message} ({details})" if details else error.message) or "no message", field


# --------------------------------------------------------------------------------------------------
# Small endpoints


def decode_clusters(body: bytes) -> list[Cluster]:
    response = _decode(body, _CLUSTERS)
    return [
        Cluster(
            id=c.id,
            name=c.name or c.id,
            organization_id=c.organization_id,
            provider_type=c.provider_type,
            region_name=(c.region.name or None) if c.region else None,
            region_display_name=(c.region.display_name or None) if c.region else None,
            tags=dict(c.tags or {}),
            status=c.status or None,
            deleted_at=c.deleted_at,
        )
        for c in response.items
    ]


def _check_price(value: float, field: str, cluster_id: str | None = None) -> float:
    if not np.isfinite(value) or value < 0:
        where = f" (cluster price of {cluster_id})" if cluster_id else ""
        raise InvalidResponse(
            f"{field} must be a finite number >= 0, got {value!r}{where}",
            reason="invalid response",
            field=field,
        )
    return value


def decode_cluster_prices_page(body: bytes) -> tuple[list[ClusterPrice], str | None]:
    page = _decode(body, _CLUSTER_PRICES_PAGE)
    prices = [
        ClusterPrice(
            cluster_id=p.cluster_id,
            cpu_hourly_price=_check_price(p.cpu_hourly_price, "cpuHourlyPrice", p.cluster_id),
            memory_gib_hourly_price=_check_price(
                p.memory_gib_hourly_price, "memoryGibHourlyPrice", p.cluster_id
            ),
            is_default=p.default,
        )
        for p in page.items
    ]
    return prices, page.next_cursor


def decode_default_pricing(body: bytes) -> DefaultPricing:
    response = _decode(body, _DEFAULT_PRICING)
    prices: _Prices = response
    if response.cpu_hourly_price is None and response.memory_gib_hourly_price is None and response.pricing:
        prices = response.pricing
    cpu, memory = prices.cpu_hourly_price, prices.memory_gib_hourly_price
    if cpu is None or memory is None:
        field = "cpuHourlyPrice" if cpu is None else "memoryGibHourlyPrice"
        raise InvalidResponse(f"{field} is missing", reason="invalid response", field=field)
    return DefaultPricing(_check_price(cpu, "cpuHourlyPrice"), _check_price(memory, "memoryGibHourlyPrice"))


def _check_discount_value(value: float, discount_id: str) -> float:
    """Any finite decimal: negative values are valid (a TYPE_FLAT of "-1" raises the price)."""
    if not np.isfinite(value):
        raise InvalidResponse(
            f"pricing.value of discount {discount_id or '?'} must be a finite number, got {value!r}",
            reason="invalid response",
            field="pricing.value",
        )
    return value


@dataclass(frozen=True)
class DiscountsPage:
    discounts: list[Discount]
    unpriced_ids: list[str]  # discounts without a pricing tier: they change no price, so they are skipped


def decode_label_names_page(body: bytes) -> tuple[list[str], str | None]:
    """One page of workload label names; an empty name is not a Kubernetes label and is refused."""
    page = _decode(body, _LABEL_NAMES_PAGE)
    if any(not name for name in page.label_names):
        raise InvalidResponse("an empty label name", reason="invalid response", field="labelNames")
    return page.label_names, page.next_cursor


def decode_discounts_page(body: bytes) -> tuple[DiscountsPage, str | None]:
    page = _decode(body, _DISCOUNTS_PAGE)
    priced = [d for d in page.discounts if d.pricing]
    discounts = [
        Discount(
            id=d.id,
            name=d.name,
            enabled=d.enabled,
            target=d.target,
            pricing_type=d.pricing[0].type,  # "Currently only single-tiered discounts are supported."
            value=_check_discount_value(d.pricing[0].value, d.id),
            clusters=tuple(d.clusters),
            life_cycles=tuple(d.life_cycles),
            regions=tuple(d.regions),
            start_date=d.start_date,
            end_date=d.end_date,
            csp=d.csp.strip().lower(),
            families=tuple(d.families),
            instance_types=tuple(d.instance_types),
            zones=tuple(d.zones),
            os=tuple(d.os),
        )
        for d in priced
    ]
    unpriced = [d.id or d.name or "?" for d in page.discounts if not d.pricing]
    return DiscountsPage(discounts, unpriced), page.next_cursor


def decode_child_organizations_page(body: bytes) -> tuple[list[ChildOrganization], str | None]:
    """One page of an enterprise's child organisations; a page without `items` is refused."""
    page = _decode(body, _CHILD_ORGANIZATIONS_PAGE)
    if page.items is None:
        raise InvalidResponse(
            "a 200 answer without `items`: not the child-organisation listing (wrong shape)",
            reason="invalid response",
            field="items",
        )
    return [ChildOrganization(id=o.id, name=o.name or o.id) for o in page.items], page.next_cursor


def decode_platform_usage(body: bytes) -> list[FeatureUsage]:
    response = _decode(body, _PLATFORM_USAGE)
    return [
        FeatureUsage(feature=f.feature, display_name=f.display_name or f.feature, usage=f.usage, unit=f.unit)
        for f in response.features
    ]


# --------------------------------------------------------------------------------------------------
# Time series (workload costs, cluster cost report)


@dataclass(frozen=True)
class BucketWindow:
    """The requested window: bucket timestamps must lie in (start, end] on start + k·step."""

    start: datetime
    end: datetime
    step_seconds: int

    def __post_init__(self) -> None:
        for name, moment in (("start", self.start), ("end", self.end)):
            if moment.tzinfo is None or moment.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware, got {moment!r}")
        if self.step_seconds <= 0:
            raise ValueError(f"step_seconds must be positive, got {self.step_seconds}")
        if self.end <= self.start:
            raise ValueError(f"end {self.end.isoformat()} must be after start {self.start.isoformat()}")

    def outside(self, micros: np.ndarray) -> np.ndarray:
        """Timestamps outside (start, end]."""
        return (micros <= to_microseconds(self.start)) | (micros > to_microseconds(self.end))

    def grid_seconds(self, micros: np.ndarray, grid: int = 0) -> int:
        """The bucket grid the timestamps lie on: gcd of their offsets from `start` (and of `grid`, the
        result for earlier pages), in seconds; 0 when there are none. One numpy reduction."""
        relative = micros - to_microseconds(self.start)
        step_us = self.step_seconds * 1_000_000
        buckets, off_grid = np.divmod(relative, step_us)
        if relative.size and relative.min() > 0 and not off_grid.any():
            # The usual case, in O(n): the gcd of the distinct bucket numbers (at most the window's).
            distinct = np.flatnonzero(np.bincount(buckets))
            return int(np.gcd(int(np.gcd.reduce(distinct)) * self.step_seconds, grid))
        if np.any(relative % 1_000_000):
            return 1  # sub-second offsets: a 1 s grid, never the requested step
        return int(np.gcd.reduce(np.append(relative // 1_000_000, grid).astype(np.int64)))

    def step_problem(self, grid: int) -> str | None:
        """Why buckets on a `grid`-second grid do not answer this request (None: they do)."""
        if grid in (0, self.step_seconds):
            return None
        return f"answered {grid}s buckets, requested stepSeconds={self.step_seconds} (wrong bucket size)"


def _records(rows: list[tuple[Any, ...]], record: np.dtype) -> tuple[pa.Array, np.ndarray]:
    """Row tuples → (timestamp array, structured numpy array of the float fields), in C."""
    table = np.array(rows, dtype=record)
    timestamps = pa.array(table["timestamp"], type=pa.timestamp("us", tz="UTC"))
    return timestamps, table


def _first_bad_metric(table: np.ndarray, columns: Sequence[str]) -> tuple[int, str, float] | None:
    for name in columns:
        values = table[name]
        bad = ~(np.isfinite(values) & (values >= 0))
        if bad.any():
            row = int(np.argmax(bad))
            return row, name, float(values[row])
    return None


def decode_cost_report(body: bytes, window: BucketWindow) -> pa.Table:
    """Cluster cost report → `timestamp` + every CostReportItem decimal as float64."""
    items = _decode(body, _COST_REPORT).items
    rows = [msgspec.structs.astuple(item) for item in items]
    if not rows:
        return cost_report_schema().empty_table()
    timestamps, table = _records(rows, _COST_REPORT_RECORD)
    micros = timestamps.cast(pa.int64()).to_numpy()
    bad_times = window.outside(micros)
    if bad_times.any():
        row = int(np.argmax(bad_times))
        raise InvalidResponse(
            f"bucket timestamp {items[row].timestamp.isoformat()} is not in "
            f"({window.start.isoformat()}, {window.end.isoformat()}]",
            reason="invalid response",
            field="timestamp",
        )
    problem = window.step_problem(window.grid_seconds(micros))
    if problem:
        raise InvalidResponse(problem, reason="wrong step", field="timestamp")
    bad = _first_bad_metric(table, COST_REPORT_COLUMNS)
    if bad:
        row, name, value = bad
        raise InvalidResponse(
            f"{name} must be a finite number >= 0, got {value!r} at {items[row].timestamp.isoformat()}",
            reason="invalid response",
            field=name,
        )
    arrays = [timestamps, *(pa.array(np.ascontiguousarray(table[name])) for name in COST_REPORT_COLUMNS)]
    return pa.Table.from_arrays(arrays, schema=cost_report_schema())


def cost_report_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
            *(pa.field(name, pa.float64(), nullable=False) for name in COST_REPORT_COLUMNS),
        ]
    )


def decode_workload_costs_page(body: bytes) -> tuple[WorkloadCostsPage, str | None]:
    page = _decode(body, _WORKLOAD_COSTS_PAGE)
    return page, page.next_cursor


def printable_labels(labels: Sequence[_Label]) -> tuple[list[_Label], int]:
    """The labels without control characters in key or value, and how many were left out."""
    kept = [
        label
        for label in labels
        if not _CONTROL_CHARACTERS.search(label.name) and not _CONTROL_CHARACTERS.search(label.value)
    ]
    return kept, len(labels) - len(kept)


def labels_json(labels: Sequence[_Label]) -> str | None:
    """Canonical JSON object of the workload's labels (sorted keys; a repeated key keeps its last value)."""
    if not labels:
        return None
    return json.dumps(
        {label.name: label.value for label in labels},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _dictionary(values: list[str | None], owners: pa.Array) -> pa.Array:
    return pa.array(values, pa.string()).dictionary_encode().take(owners)


# Where the rows of a workload's first copy went: (index into the assembled tables, first row, rows).
_Location = tuple[int, int, int]


def _is_cost(metric: str) -> bool:
    return metric.startswith("cost") or "Cost" in metric


_METRIC_LIMITS = np.array([MAX_HOURLY_COST if _is_cost(m) else MAX_QUANTITY for m in METRIC_COLUMNS])
_TIER_PARTS = {
    tier: tuple(f"{part}{tier}" for part in ("cpuCost", "ramCost", "gpuCost", "tpuCost")) for tier in TIERS
}


class WorkloadCostsAssembler:
    """Accumulates decoded workload-costs pages into one `WORKLOAD_COSTS_SCHEMA` table for a cluster.

    Applies the namespace include/exclude filters client-side (the server filter is only a hint),
    drops an identical repeat of a workload (counted in `duplicates`) but refuses a repeat with other
    numbers, leaves out labels holding control characters (counted in `dropped_labels`), and
    validates every bucket: timestamp on the requested grid and not repeated, metrics finite, >= 0
    and plausible, tier costs equal to their resource costs. `table()` refuses a page sequence that
    delivered fewer workloads than the `count` the pages announced.
    """

    def __init__(
        self,
        cluster_id: str,
        window: BucketWindow,
        *,
        include_namespaces: Sequence[str] = (),
        exclude_namespaces: Sequence[str] = (),
    ):
        self.cluster_id = cluster_id
        self.window = window
        self.duplicates = 0
        self.dropped_labels = 0
        self._include = frozenset(include_namespaces)
        self._exclude = frozenset(exclude_namespaces)
        # Every workload received (whatever its namespace) -> where its kept rows are (None: filtered out).
        self._first: dict[tuple[str, str, str], _Location | None] = {}
        self._announced = 0
        self._tables: list[pa.Table] = []
        self._grid = 0  # gcd of every bucket's offset from the window start, in seconds (0: no bucket yet)
        self._bucket_span = (np.iinfo(np.int64).max, -1)  # earliest and latest bucket timestamp (µs)
        self._max_uptime = 0.0  # the longest uptimeMinutes* of any bucket: a bucket holds at most its step
        self.missing_identity = 0  # items kept (past the namespace filters) under MISSING_IDENTITY
        self.received = 0  # items received over all pages, whatever their namespace
        self.buckets_received = 0  # costMetrics entries over every item received, whatever its namespace
        self.no_data_reason: str | None = None

    def note_no_data_reason(self, reason: str | None) -> None:
        """Record a page's `noDataReason` (the last non-empty one wins)."""
        if reason and reason.strip():
            self.no_data_reason = reason.strip()

    def no_data(self) -> str | None:
        """Why the cluster has no data when no bucket arrived over all pages (no item, or items that
        carry no `costMetrics`): the reason Cast AI gave, or "none given" (protojson omits the default
        value `Unknown`); None when any bucket was received."""
        if self.buckets_received:
            return None
        return self.no_data_reason or "none given"

    def add(self, items: Sequence[WorkloadItem]) -> None:
        kept: list[WorkloadItem] = []
        repeats: list[WorkloadItem] = []
        self.received += len(items)
        self.buckets_received += sum(len(item.cost_metrics) for item in items)
        for item in items:
            missing = item.missing_identity()
            if missing:
                # Never a repeat, never dropped: each such item becomes its own placeholder workload.
                item = self._placeholder(item, missing)
                self._first[_identity(item)] = None
                if self.wanted(item):  # COLLECTION_INCLUDE_NAMESPACES never lists "(unknown)"
                    kept.append(item)
                    self.missing_identity += 1
                continue
            key = _identity(item)
            if key in self._first:
                repeats.append(item)
                continue
            self._first[key] = None
            if self.wanted(item):
                kept.append(item)
        self._add_rows(kept)
        for item in repeats:  # after _add_rows: the first copy may be on this very page
            self._check_repeat(item)

    def expect_count(self, count: int | None) -> None:
        """Record the `count` a page announced (workloads matching the request over all pages)."""
        if count is not None:
            self._announced = max(self._announced, count)

    def _step_problem(self) -> tuple[str, str] | None:
        """(message, field) when the buckets are not of the requested size.

        A coarser grid is decided over every bucket of the cluster: with two or more distinct
        timestamps the grid alone decides, and `uptimeMinutes*` never refuses (see `uptime_over_step`).
        Buckets at a single timestamp are ambiguous (a daily answer to an hourly request, or a cluster
        that only ran in that hour); there a bucket holding more uptime minutes than its step is the
        tie-breaker, and the client settles the rest with one probe request (`single_last_bucket`).
        """
        earliest, latest = self._bucket_span
        if earliest > latest:
            return None  # no bucket at all
        problem = self.window.step_problem(self._grid)
        if earliest < latest:
            return (problem, "timestamp") if problem else None
        if self._max_uptime > self.window.step_seconds / 60 + 1e-6:
            uptime = (
                f"a bucket reports {self._max_uptime:g} uptime minutes, more than a "
                f"stepSeconds={self.window.step_seconds} bucket holds"
            )
            if problem:  # the lone timestamp's offset is the coarser size; uptime confirms it
                return f"{problem}: {uptime}", "timestamp"
            return f"{uptime} (wrong bucket size)", "uptimeMinutes"
        return None

    def single_last_bucket(self) -> bool:
        """Every bucket sits at the window's last timestamp, and the window holds more than one step:
        either the cluster only ran in the last bucket or Cast AI answered one coarser bucket."""
        earliest, latest = self._bucket_span
        end = to_microseconds(self.window.end)
        start = to_microseconds(self.window.start)
        return earliest == latest == end and end - self.window.step_seconds * 1_000_000 > start

    @property
    def uptime_over_step(self) -> float:
        """The longest `uptimeMinutes*` of a bucket when it exceeds the step on a correctly spaced answer
        (0.0 otherwise): not a refusal, since uptime may count pod-minutes; counted as an input warning."""
        earliest, latest = self._bucket_span
        if earliest < latest and self._max_uptime > self.window.step_seconds / 60 + 1e-6:
            return self._max_uptime
        return 0.0

    def table(self) -> pa.Table:
        problem = self._step_problem()
        if problem:
            raise InvalidResponse(problem[0], reason="wrong step", field=problem[1])
        if len(self._first) < self._announced:
            raise InvalidResponse(
                f"pages ended after {len(self._first)} distinct workload(s), but the response counted "
                f"{self._announced}: workloads would be missing",
                reason="invalid response",
                field="count",
            )
        if not self._tables:
            return WORKLOAD_COSTS_SCHEMA.empty_table()
        return pa.concat_tables(self._tables).combine_chunks()

    def _placeholder(self, item: WorkloadItem, missing: tuple[str, ...]) -> WorkloadItem:
        """`item` with MISSING_IDENTITY in its missing fields, numbered ("(unknown 2)", ...) in its last
        missing field when that identity is already taken: two such items never merge."""
        values = (item.namespace, item.workload_type, item.workload_name)
        names = dict(zip(IDENTITY_FIELDS, values, strict=True))
        fields = {name: MISSING_IDENTITY if name in missing else names[name] for name in IDENTITY_FIELDS}
        number = 1
        while (fields["namespace"], fields["workloadType"], fields["workloadName"]) in self._first:
            number += 1
            fields[missing[-1]] = f"({MISSING_IDENTITY[1:-1]} {number})"
        return msgspec.structs.replace(
            item,
            namespace=fields["namespace"],
            workload_type=fields["workloadType"],
            workload_name=fields["workloadName"],
        )

    def wanted(self, item: WorkloadItem) -> bool:
        """Past COLLECTION_INCLUDE/EXCLUDE_NAMESPACES (applied here, the server filter is a hint)."""
        return not (
            (self._include and item.namespace not in self._include) or item.namespace in self._exclude
        )

    def _add_rows(self, kept: Sequence[WorkloadItem]) -> None:
        counts = np.fromiter((len(item.cost_metrics) for item in kept), dtype=np.int64, count=len(kept))
        starts = np.cumsum(counts) - counts
        for item, first_row, n_rows in zip(kept, starts.tolist(), counts.tolist(), strict=True):
            self._first[_identity(item)] = (len(self._tables), first_row, n_rows)
        rows = [msgspec.structs.astuple(m) for item in kept for m in item.cost_metrics]
        if not rows:
            return
        owner = np.repeat(np.arange(len(kept), dtype=np.int64), counts)
        timestamps, table = _records(rows, _WORKLOAD_RECORD)
        self._validate(kept, owner, timestamps, table)
        label_texts = []
        for item in kept:
            labels, dropped = printable_labels(item.labels)
            self.dropped_labels += dropped
            label_texts.append(labels_json(labels))
        owners = pa.array(owner)
        n = len(rows)
        arrays = [
            pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(n, dtype=np.int32)), pa.array([self.cluster_id])
            ),
            _dictionary([item.namespace for item in kept], owners),
            _dictionary([item.workload_type for item in kept], owners),
            _dictionary([item.workload_name for item in kept], owners),
            _dictionary(label_texts, owners),
            timestamps,
            pa.array(np.full(n, self.window.step_seconds, dtype=np.int32)),
            *(pa.array(np.ascontiguousarray(table[name])) for name in METRIC_COLUMNS),
        ]
        self._tables.append(pa.Table.from_arrays(arrays, schema=WORKLOAD_COSTS_SCHEMA))

    def _check_repeat(self, item: WorkloadItem) -> None:
        """An identical repeat is dropped (and counted); a repeat with other numbers is refused."""
        location = self._first[_identity(item)]
        if location is None or self._same_as_first(item, location):
            self.duplicates += 1
            return
        label = workload_label(*_identity(item))
        raise InvalidResponse(
            f"workload {label} is listed twice with different cost metrics or labels; "
            "refusing to choose one of them",
            reason="invalid response",
            field="items",
            workload=label,
        )

    def _same_as_first(self, item: WorkloadItem, location: _Location) -> bool:
        """Error path only (repeats are rare): compare a repeat with the rows kept for its first copy."""
        table_index, first_row, n_rows = location
        if len(item.cost_metrics) != n_rows:
            return False
        if n_rows == 0:
            return True
        first = self._tables[table_index].slice(first_row, n_rows)
        timestamps, records = _records(
            [msgspec.structs.astuple(m) for m in item.cost_metrics], _WORKLOAD_RECORD
        )
        my_times = timestamps.cast(pa.int64()).to_numpy()
        first_times = first.column("timestamp").cast(pa.int64()).to_numpy()
        mine, theirs = np.argsort(my_times, kind="stable"), np.argsort(first_times, kind="stable")
        same_times = np.array_equal(my_times[mine], first_times[theirs])
        same_metrics = all(
            np.array_equal(records[name][mine], first.column(name).to_numpy()[theirs])
            for name in METRIC_COLUMNS
        )
        labels, _ = printable_labels(item.labels)
        return same_times and same_metrics and labels_json(labels) == first.column("labels")[0].as_py()

    def _validate(
        self, kept: Sequence[WorkloadItem], owner: np.ndarray, timestamps: pa.Array, table: np.ndarray
    ) -> None:
        def workload(row: int) -> str:
            item = kept[int(owner[row])]
            return workload_label(*_identity(item))

        def refuse(row: int, field: str, problem: str) -> InvalidResponse:
            return InvalidResponse(
                f"{problem} (workload {workload(row)})",
                reason="invalid response",
                field=field,
                workload=workload(row),
            )

        micros = timestamps.cast(pa.int64()).to_numpy()
        bad_times = self.window.outside(micros)
        if bad_times.any():
            row = int(np.argmax(bad_times))
            w, moment = self.window, timestamps[row].as_py().isoformat()
            raise refuse(
                row,
                "timestamp",
                f"bucket timestamp {moment} is not in ({w.start.isoformat()}, {w.end.isoformat()}]",
            )
        # Off the requested grid (finer or shifted buckets) is decided page by page; a coarser grid only
        # once every page is in (`table()`): one page may hold only workloads of the window's last bucket.
        self._grid = self.window.grid_seconds(micros, self._grid)
        if micros.size:
            earliest, latest = self._bucket_span
            self._bucket_span = (min(earliest, int(micros.min())), max(latest, int(micros.max())))
            uptime = max(float(table[f"uptimeMinutes{tier}"].max()) for tier in TIERS)
            self._max_uptime = max(self._max_uptime, uptime)
        if self._grid % self.window.step_seconds:
            off_grid = (micros - to_microseconds(self.window.start)) % (self.window.step_seconds * 1_000_000)
            row = int(np.argmax(off_grid != 0)) if off_grid.any() else 0
            problem = self.window.step_problem(self._grid) or ""
            moment = timestamps[row].as_py().isoformat()
            error = refuse(row, "timestamp", f"bucket timestamp {moment} off the requested grid: {problem}")
            error.reason = "wrong step"
            raise error
        order = np.lexsort((micros, owner))
        repeated = (owner[order][1:] == owner[order][:-1]) & (micros[order][1:] == micros[order][:-1])
        if repeated.any():
            row = int(order[1:][np.argmax(repeated)])
            raise refuse(
                row, "timestamp", f"bucket timestamp {timestamps[row].as_py().isoformat()} appears twice"
            )
        bad = _first_bad_metric(table, METRIC_COLUMNS)
        if bad:
            row, name, value = bad
            raise refuse(row, name, f"{name} must be a finite number >= 0, got {value!r}")
        for name, limit in zip(METRIC_COLUMNS, _METRIC_LIMITS, strict=True):
            absurd = table[name] > limit
            if absurd.any():
                row = int(np.argmax(absurd))
                unit = "USD per hour" if _is_cost(name) else "per bucket"
                raise refuse(
                    row,
                    name,
                    f"{name} = {float(table[name][row])!r} exceeds the plausible maximum {limit:g} {unit}",
                )
        for tier, parts in _TIER_PARTS.items():
            gap = np.abs(table[f"cost{tier}"] - sum(table[part] for part in parts))
            wrong = gap > TIER_SUM_TOLERANCE
            if wrong.any():
                row = int(np.argmax(wrong))
                raise refuse(
                    row,
                    f"cost{tier}",
                    f"cost{tier} = {float(table[f'cost{tier}'][row])!r} differs from "
                    f"{' + '.join(parts)} = {float(sum(table[p][row] for p in parts))!r} "
                    f"at {timestamps[row].as_py().isoformat()}",
                )


def _identity(item: WorkloadItem) -> tuple[str, str, str]:
    """(namespace, type, name); only called once placeholders are in, so never None."""
    return item.namespace or "", item.workload_type or "", item.workload_name or ""
