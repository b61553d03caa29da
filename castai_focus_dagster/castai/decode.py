"""Cast AI JSON answers → the project's data contracts (models, Arrow tables), refusing what is wrong.

Decoders run with `strict=False`, so string decimals become floats inside msgspec's C decoder;
`columns.bucket_columns` turns metric structs into Arrow columns without Python per field. What cannot
be repaired raises `InvalidResponse` naming the field (and the workload); the client adds the endpoint
and the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import msgspec
import numpy as np
import pyarrow as pa

from castai_focus_dagster.castai.columns import bucket_columns
from castai_focus_dagster.castai.diagnose import body_kind, error_message, invalid_utf8, validation_problem
from castai_focus_dagster.castai.errors import WRONG_STEP, InvalidResponse
from castai_focus_dagster.castai.models import (
    ChildOrganization,
    Cluster,
    ClusterPrice,
    DefaultPricing,
    Discount,
    FeatureUsage,
)
from castai_focus_dagster.castai.validation import (
    BucketWindow,
    bucketed_totals,
    first_bad_metric,
    first_repeated_bucket,
    summary_mismatches,
    summary_problem,
)
from castai_focus_dagster.castai.wire import (
    COST_REPORT_COLUMNS,
    AnswerSummary,
    ChildOrganizationsResponse,
    ClusterPricesResponse,
    ClustersResponse,
    CostReportItem,
    CostReportResponse,
    DefaultPricingResponse,
    DiscountsResponse,
    LabelNamesResponse,
    PlatformUsageResponse,
    Prices,
    WorkloadCostsPage,
)

T = TypeVar("T")


def _decoder(response_type: type[T]) -> msgspec.json.Decoder[T]:
    """strict=False: Cast AI's string decimals ("0.412800") decode straight to float."""
    return msgspec.json.Decoder(response_type, strict=False)


# Built once (msgspec decoders are thread-safe), shared by every client thread.
_CLUSTERS = _decoder(ClustersResponse)
_WORKLOAD_COSTS_PAGE = _decoder(WorkloadCostsPage)
_COST_REPORT = _decoder(CostReportResponse)
_CLUSTER_PRICES_PAGE = _decoder(ClusterPricesResponse)
_DEFAULT_PRICING = _decoder(DefaultPricingResponse)
_DISCOUNTS_PAGE = _decoder(DiscountsResponse)
_CHILD_ORGANIZATIONS_PAGE = _decoder(ChildOrganizationsResponse)
_LABEL_NAMES_PAGE = _decoder(LabelNamesResponse)
_PLATFORM_USAGE = _decoder(PlatformUsageResponse)


def _decode(body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    try:
        decoded = decoder.decode(body)
    except UnicodeDecodeError:  # msgspec lets it through bare, naming neither field nor offset
        raise invalid_utf8(body) from None
    except msgspec.DecodeError as exc:
        if not isinstance(exc, msgspec.ValidationError):
            raise InvalidResponse(f"invalid JSON: {body_kind(body)}", reason="invalid JSON") from None
        raise validation_problem(exc, body) from None
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
    prices: Prices = response
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


def decode_cost_report(body: bytes, window: BucketWindow) -> pa.Table:
    """Cluster cost report → `timestamp` + every CostReportItem decimal as float64; its buckets must
    be of the requested size, each at its own timestamp, and total its `summary.totalCost`."""
    report = _decode(body, _COST_REPORT)
    items = report.items
    if not items:
        _check_report_summary(report.summary, 0.0, 0, window.step_seconds)
        return cost_report_schema().empty_table()
    timestamps, table = bucket_columns(items, CostReportItem, COST_REPORT_COLUMNS)
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
        raise InvalidResponse(problem, reason=WRONG_STEP, field="timestamp")
    repeated = first_repeated_bucket(np.zeros_like(micros), micros)  # one owner: the cluster
    if repeated is not None:
        raise InvalidResponse(
            f"bucket timestamp {items[repeated].timestamp.isoformat()} appears twice",
            reason="invalid response",
            field="timestamp",
        )
    bad = first_bad_metric(table)
    if bad:
        row, name, value = bad
        raise InvalidResponse(
            f"{name} must be a finite number >= 0, got {value!r} at {items[row].timestamp.isoformat()}",
            reason="invalid response",
            field=name,
        )
    counts = np.array([len(items)])
    bucketed = float(bucketed_totals(table, counts, window.step_seconds)[0])
    _check_report_summary(report.summary, bucketed, len(items), window.step_seconds)
    arrays = [timestamps, *table.arrays()]
    return pa.Table.from_arrays(arrays, schema=cost_report_schema())


def _check_report_summary(summary: AnswerSummary | None, bucketed: float, buckets: int, step: int) -> None:
    """The report's buckets, read at the requested step, must total its summary (when it has one)."""
    if summary is None:
        return
    stated = np.array([summary.total_cost])
    if summary_mismatches(np.array([bucketed]), stated, np.array([buckets]), step)[0]:
        raise InvalidResponse(
            summary_problem(bucketed, summary.total_cost, step), reason=WRONG_STEP, field="summary.totalCost"
        )


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
