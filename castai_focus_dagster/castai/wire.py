"""The msgspec structs of Cast AI's JSON answers (protojson: camelCase names, decimals as strings).

Field names follow the API through `rename="camel"`; unknown keys are skipped and a missing metric
means 0.0. Metric fields are read by their API names (`columns.bucket_columns`), not by position.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1, pattern=r"\S")]  # not blank either


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


class Body(msgspec.Struct):
    """Top level of every response: an `ErrorResponse` envelope on a 200 is recognised and refused.

    Decoded leniently (unknown keys ignored, missing lists empty) it would read as a valid, empty answer:
    a cluster without workloads, a day without cost.
    """

    message: str | None = None
    field_violations: list[Any] | None = msgspec.field(default=None, name="fieldViolations")


class ClustersResponse(Body):
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


class AnswerSummary(msgspec.Struct, rename="camel", gc=False):
    """The `summary` of a workload or of a cluster cost report: USD over the whole window (each
    bucket's hourly rates times its hours, storage included), the one figure of an answer that does
    not depend on the bucket size. The bucket-size check compares it with the buckets (`validation`)."""

    total_cost: float = 0.0


class Label(msgspec.Struct, gc=False):
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
    labels: list[Label] = []
    summary: AnswerSummary | None = None  # None: not sent, so only the spacing checks the bucket size

    def missing_identity(self) -> tuple[str, ...]:
        """The identity fields (API names) this item lacks or leaves blank."""
        values = (self.namespace, self.workload_type, self.workload_name)
        return tuple(f for f, v in zip(IDENTITY_FIELDS, values, strict=True) if v is None or not v.strip())


class WorkloadCostsPage(Body):
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


class CostReportResponse(Body):
    items: list[CostReportItem] = []
    summary: AnswerSummary | None = None


class _ClusterPrice(msgspec.Struct, rename="camel"):
    cluster_id: NonEmptyStr
    cpu_hourly_price: float
    memory_gib_hourly_price: float
    default: bool = False


class ClusterPricesResponse(Body):
    items: list[_ClusterPrice] = []
    next_cursor: str | None = msgspec.field(default=None, name="nextPageCursor")


class Prices(msgspec.Struct, rename="camel"):
    cpu_hourly_price: float | None = None
    memory_gib_hourly_price: float | None = None


class DefaultPricingResponse(Prices):
    pricing: Prices | None = None  # tolerated wrapper: the shape of this endpoint is not published
    message: str | None = None  # an error envelope on a 200, as in `Body`
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


class DiscountsResponse(Body):
    discounts: list[_Discount] = []
    next_cursor: str | None = msgspec.field(default=None, name="nextPageToken")


class LabelNamesResponse(Body):
    """`GetWorkloadLabelNamesResponse`: `labelNames`, `nextCursor`, `count`."""

    label_names: list[str] = msgspec.field(default_factory=list, name="labelNames")
    next_cursor: str | None = msgspec.field(default=None, name="nextCursor")


class _ChildOrganization(msgspec.Struct, rename="camel"):
    id: NonEmptyStr
    name: str = ""


class ChildOrganizationsResponse(Body):
    # No default: a 200 without `items` is a wrong shape, never "no child organisations".
    items: list[_ChildOrganization] | None = None
    next_cursor: str | None = msgspec.field(default=None, name="nextPageCursor")


class _Feature(msgspec.Struct, rename="camel"):
    feature: NonEmptyStr
    display_name: str = ""
    usage: float = 0.0
    unit: str = ""


class PlatformUsageResponse(Body):
    features: list[_Feature] = []


class ErrorResponse(msgspec.Struct, rename="camel"):
    message: str = ""
    field_violations: list[dict[str, Any]] = []


COST_REPORT_COLUMNS: tuple[str, ...] = CostReportItem.__struct_encode_fields__[1:]
