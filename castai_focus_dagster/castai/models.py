"""Data contracts between the Cast AI client, the FOCUS transform and the Dagster assets.

`Cluster` (one cluster after the include/exclude filters), the workload-costs table in
`WORKLOAD_COSTS_SCHEMA` (one row per cluster x workload x bucket, metric columns named as Cast AI's
`WorkloadCostItem` fields) and `EnrichmentContext` (prices, discounts, organisations, usage, each
possibly `missing`); all serialise to JSON/Arrow so the assets can store and reload them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

# Cast AI per-bucket workload metrics (average hourly rates / average counts), in API field order.
TIERS: tuple[str, ...] = ("OnDemand", "Spot", "SpotFallback")
TIERED_METRICS: tuple[str, ...] = (
    "cost",
    "cpuCount",
    "podCount",
    "uptimeMinutes",
    "cpuCost",
    "ramCost",
    "ramGib",
    "gpuCost",
    "gpuCount",
    "tpuCost",
    "tpuCount",
)
UNTIERED_METRICS: tuple[str, ...] = ("storageCost", "storageGib")
METRIC_COLUMNS: tuple[str, ...] = tuple(f"{m}{t}" for m in TIERED_METRICS for t in TIERS) + UNTIERED_METRICS

# Resources of the FOCUS row model: (resource, cost field prefix, quantity field prefix, tiered?)
RESOURCES: tuple[tuple[str, str, str, bool], ...] = (
    ("cpu", "cpuCost", "cpuCount", True),
    ("memory", "ramCost", "ramGib", True),
    ("gpu", "gpuCost", "gpuCount", True),
    ("tpu", "tpuCost", "tpuCount", True),
    ("storage", "storageCost", "storageGib", False),
)

_DIM = pa.dictionary(pa.int32(), pa.string())

WORKLOAD_COSTS_SCHEMA = pa.schema(
    [
        pa.field("cluster_id", _DIM, nullable=False),
        pa.field("namespace", _DIM, nullable=False),
        pa.field("workload_type", _DIM, nullable=False),
        pa.field("workload_name", _DIM, nullable=False),
        # Requested workload labels as a canonical JSON object string (sorted keys); null when none.
        pa.field("labels", _DIM, nullable=True),
        # Bucket END (Cast AI labels each bucket with its end); the bucket is [timestamp - step, timestamp).
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("step_seconds", pa.int32(), nullable=False),
        *[pa.field(name, pa.float64(), nullable=False) for name in METRIC_COLUMNS],
    ]
)


def empty_workload_costs() -> pa.Table:
    return WORKLOAD_COSTS_SCHEMA.empty_table()


@dataclass(frozen=True)
class Cluster:
    id: str
    name: str
    organization_id: str
    provider_type: str  # eks | gke | aks | openshift | kops | anywhere | ...
    region_name: str | None = None  # e.g. "eu-central-1"; None when the cluster has no region
    region_display_name: str | None = None  # e.g. "EU (Frankfurt)"
    tags: dict[str, str] = field(default_factory=dict)  # Cast AI cluster tags
    status: str | None = None
    deleted_at: datetime | None = None  # when the cluster was deleted in Cast AI (None: it was not)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["deleted_at"] = self.deleted_at.isoformat() if self.deleted_at else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cluster:
        deleted = data.get("deleted_at")
        return cls(**{**data, "deleted_at": datetime.fromisoformat(deleted) if deleted else None})

    def deleted_by(self, moment: datetime) -> bool:
        """True when the cluster was deleted at or before `moment` (a day starting then has no data)."""
        return self.deleted_at is not None and self.deleted_at <= moment


@dataclass(frozen=True)
class ClusterPrice:
    cluster_id: str
    cpu_hourly_price: float  # per vCPU-hour
    memory_gib_hourly_price: float  # per GiB-hour
    is_default: bool  # True: org default price is used, not a custom one


@dataclass(frozen=True)
class DefaultPricing:
    cpu_hourly_price: float
    memory_gib_hourly_price: float


DISCOUNT_SCOPE_LISTS = ("clusters", "life_cycles", "regions", "families", "instance_types", "zones", "os")


@dataclass(frozen=True)
class Discount:
    id: str
    name: str | None
    enabled: bool
    target: str  # TARGET_CPU | TARGET_MEMORY | TARGET_INSTANCE | ...
    pricing_type: str  # TYPE_PERCENTAGE | TYPE_FIXED | TYPE_FLAT
    value: float  # may be negative (a FLAT "-1" raises the price)
    clusters: tuple[str, ...] = ()  # empty: applies to every cluster
    life_cycles: tuple[str, ...] = ()  # LIFECYCLE_ON_DEMAND | LIFECYCLE_SPOT; empty: all
    regions: tuple[str, ...] = ()  # empty: all
    start_date: datetime | None = None
    end_date: datetime | None = None
    csp: str = ""  # aws | azure | gcp | oracle (required by Cast AI; "" when absent)
    # Node scope: workload rows carry no node, so a discount narrowed by any of these is never applied.
    families: tuple[str, ...] = ()
    instance_types: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    os: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChildOrganization:
    id: str
    name: str


@dataclass(frozen=True)
class FeatureUsage:
    feature: str
    display_name: str
    usage: float
    unit: str


@dataclass
class EnrichmentContext:
    """Everything beyond workload costs; each endpoint that failed is named in `missing`."""

    cluster_prices: dict[str, ClusterPrice] = field(default_factory=dict)
    default_pricing: DefaultPricing | None = None
    discounts: list[Discount] = field(default_factory=list)
    child_organizations: dict[str, ChildOrganization] = field(default_factory=dict)  # by org id
    platform_usage: list[FeatureUsage] = field(default_factory=list)
    # endpoint name -> short reason ("HTTP 404", "timeout", ...) for every part that could not be read
    missing: dict[str, str] = field(default_factory=dict)

    ENDPOINTS = (
        "cluster_prices",
        "default_pricing",
        "discounts",
        "enterprise_organizations",
        "platform_usage",
    )

    @property
    def completeness(self) -> float:
        """Share of enrichment endpoints that answered (1.0 = complete)."""
        return 1.0 - len(self.missing) / len(self.ENDPOINTS)

    def to_json(self) -> dict[str, Any]:
        def conv(obj: Any) -> Any:
            if isinstance(obj, datetime):
                return obj.isoformat()
            if isinstance(obj, dict):
                return {k: conv(v) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return [conv(v) for v in obj]
            return obj

        return conv(
            {
                "cluster_prices": {k: asdict(v) for k, v in self.cluster_prices.items()},
                "default_pricing": asdict(self.default_pricing) if self.default_pricing else None,
                "discounts": [asdict(d) for d in self.discounts],
                "child_organizations": {k: asdict(v) for k, v in self.child_organizations.items()},
                "platform_usage": [asdict(f) for f in self.platform_usage],
                "missing": dict(self.missing),
            }
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnrichmentContext:
        def dt(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        return cls(
            cluster_prices={k: ClusterPrice(**v) for k, v in data.get("cluster_prices", {}).items()},
            default_pricing=DefaultPricing(**data["default_pricing"])
            if data.get("default_pricing")
            else None,
            discounts=[
                Discount(
                    **{
                        **d,
                        **{name: tuple(d.get(name, ())) for name in DISCOUNT_SCOPE_LISTS},
                        "start_date": dt(d.get("start_date")),
                        "end_date": dt(d.get("end_date")),
                    }
                )
                for d in data.get("discounts", [])
            ],
            child_organizations={
                k: ChildOrganization(**v) for k, v in data.get("child_organizations", {}).items()
            },
            platform_usage=[FeatureUsage(**f) for f in data.get("platform_usage", [])],
            missing=dict(data.get("missing", {})),
        )
