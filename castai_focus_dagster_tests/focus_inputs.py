"""Synthetic Cast AI inputs for the FOCUS transform tests (seeded numpy; no sandbox server needed).

`synthetic_org()` builds a realistic organisation: four clusters (eks, gke, aks, a region-less
anywhere cluster with a custom price), listing-price reports of the three cloud clusters
(`listing_reports`), an enterprise with two child organisations, discounts, workloads
with labels (dots, slashes, unicode), on-demand/spot/spot-fallback mixes, storage, a GPU and a TPU
workload and idle hours. The daily table is the hourly one averaged per workload, exactly as Cast AI
reports an 86400 s bucket, so hourly and daily exports must agree on every daily total.
`workload_table()` builds small explicit tables for edge cases.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from castai_focus_dagster.castai.decode import cost_report_schema
from castai_focus_dagster.castai.models import (
    METRIC_COLUMNS,
    TIERS,
    WORKLOAD_COSTS_SCHEMA,
    ChildOrganization,
    Cluster,
    ClusterPrice,
    DefaultPricing,
    Discount,
    EnrichmentContext,
)
from castai_focus_dagster.castai.wire import COST_REPORT_COLUMNS
from castai_focus_dagster.focus.options import FocusOptions

ORGANIZATION_ID = "3f6c2a90-5d1e-4b7a-9c2f-0a1b2c3d4e5f"
ENTERPRISE_ID = ORGANIZATION_ID
CHILD_PAYMENTS = ChildOrganization("a1a1a1a1-0000-4000-8000-00000000000a", "Payments BU")
CHILD_DATA = ChildOrganization("b2b2b2b2-0000-4000-8000-00000000000b", "Data BU")
DAY = datetime(2026, 3, 14, tzinfo=UTC)

CLUSTERS: dict[str, Cluster] = {
    c.id: c
    for c in (
        Cluster(
            "c-eks-prod",
            "eks-prod",
            CHILD_PAYMENTS.id,
            "eks",
            "eu-central-1",
            "EU (Frankfurt)",
            {"env": "prod", "team": "payments"},
        ),
        Cluster(
            "c-gke-ml",
            "gke-ml",
            CHILD_DATA.id,
            "gke",
            "us-central1",
            "Iowa",
            {"env": "prod", "owner": "Zoë Ångström"},
        ),
        Cluster(
            "c-aks-edge", "aks-edge", CHILD_PAYMENTS.id, "aks", "westeurope", None, {"cost-center": "cc-42"}
        ),
        Cluster("c-onprem", "onprem-lab", ORGANIZATION_ID, "anywhere", None, None, {}),
    )
}

DEFAULT_PRICING = DefaultPricing(cpu_hourly_price=0.031611, memory_gib_hourly_price=0.004237)
# Cast AI documents cluster prices for Anywhere clusters only: the AKS one must be ignored.
CUSTOM_AKS_PRICE = ClusterPrice(
    "c-aks-edge", cpu_hourly_price=0.0275, memory_gib_hourly_price=0.0036, is_default=False
)
CUSTOM_ONPREM_PRICE = ClusterPrice(
    "c-onprem", cpu_hourly_price=0.0215, memory_gib_hourly_price=0.0029, is_default=False
)
DISCOUNTS = [
    Discount(
        "d-cpu",
        "EKS CPU 10 %",
        True,
        "TARGET_CPU",
        "TYPE_PERCENTAGE",
        0.1,
        clusters=("c-eks-prod",),
        life_cycles=("LIFECYCLE_ON_DEMAND",),
        csp="aws",
    ),
    Discount(
        "d-mem",
        "memory flat",
        True,
        "TARGET_MEMORY",
        "TYPE_FLAT",
        0.0005,
        regions=("us-central1",),
        csp="gcp",
    ),
    Discount(
        "d-window",
        "morning CPU",
        True,
        "TARGET_CPU",
        "TYPE_FIXED",
        0.02,
        clusters=("c-gke-ml",),
        start_date=DAY,
        end_date=DAY + timedelta(hours=6),
        csp="gcp",
    ),
    Discount("d-off", "disabled", False, "TARGET_CPU", "TYPE_FIXED", 0.0, csp="aws"),
    # Narrowed to a node family: workload rows cannot evaluate it, so it is never applied.
    Discount(
        "d-instance",
        "instances",
        True,
        "TARGET_INSTANCE",
        "TYPE_PERCENTAGE",
        0.5,
        csp="azure",
        families=("Dv5",),
    ),
]

# Listing (pre-discount) unit rates of the cloud clusters' cluster cost reports, per resource and tier.
LIST_RATES = {"cpu": 0.04, "ram": 0.0052, "gpu": 2.9, "tpu": 1.5, "storage": 0.00015}
LIST_TIER_FACTOR = {"OnDemand": 1.0, "Spot": 0.35, "SpotFallback": 1.0}
_REPORT_FIELDS = {"cpu": "cpuCount", "ram": "ramGib", "gpu": "gpuCount", "tpu": "tpuCount"}


def list_rate(resource: str, tier: str | None) -> float:
    """The listing unit price `listing_report` implies for a resource ("cpu", "ram", ...) and tier."""
    return LIST_RATES[resource] * (LIST_TIER_FACTOR[tier] if tier else 1.0)


def listing_report(bucket_ends: Sequence[datetime], count: float = 64.0) -> pa.Table:
    """A cluster cost report at listing prices: `count` units of every charge per bucket, each at its
    `list_rate` (cost = rate x count, as Cast AI reports the cluster's average hourly cost)."""
    columns: dict[str, Any] = {"timestamp": pa.array(list(bucket_ends), pa.timestamp("us", tz="UTC"))}
    values = {name: 0.0 for name in COST_REPORT_COLUMNS}
    for resource, quantity in _REPORT_FIELDS.items():
        for tier in TIERS:
            values[f"{quantity}{tier}"] = count
            values[f"{resource}Cost{tier}"] = list_rate(resource, tier) * count
    values["storageGib"], values["storageCost"] = count, list_rate("storage", None) * count
    columns |= {
        name: pa.array([values[name]] * len(bucket_ends), pa.float64()) for name in COST_REPORT_COLUMNS
    }
    return pa.table(columns, schema=cost_report_schema())


def listing_reports(day: datetime = DAY) -> dict[str, pa.Table]:
    """Listing reports of every cloud cluster for the day's hourly buckets (the daily bucket ends with the
    last of them, so one report serves both granularities)."""
    ends = [day + timedelta(hours=h) for h in range(1, 25)]
    return {cid: listing_report(ends) for cid, c in CLUSTERS.items() if c.provider_type != "anywhere"}


def enrichment_context(**overrides: Any) -> EnrichmentContext:
    base = EnrichmentContext(
        cluster_prices={
            "c-eks-prod": ClusterPrice("c-eks-prod", 0.031611, 0.004237, is_default=True),
            "c-aks-edge": CUSTOM_AKS_PRICE,
            "c-onprem": CUSTOM_ONPREM_PRICE,
        },
        default_pricing=DEFAULT_PRICING,
        discounts=list(DISCOUNTS),
        child_organizations={CHILD_PAYMENTS.id: CHILD_PAYMENTS, CHILD_DATA.id: CHILD_DATA},
    )
    return replace(base, **overrides)


def focus_options(**overrides: Any) -> FocusOptions:
    base = FocusOptions(
        organization_id=ORGANIZATION_ID, billing_account_name="Acme Corp", enterprise_id=ENTERPRISE_ID
    )
    return replace(base, **overrides)


@dataclass(frozen=True)
class SyntheticOrg:
    clusters: dict[str, Cluster]
    context: EnrichmentContext
    hourly: pa.Table
    daily: pa.Table
    day: datetime
    listing: dict[str, pa.Table]  # cluster cost reports at listing prices (cloud clusters)


# Hourly list rates of the synthetic capacity (per vCPU, GiB, GPU, TPU) and the tier multipliers.
_RATES = {"cpu": 0.031611, "ram": 0.004237, "gpu": 2.48, "tpu": 1.35, "storage": 0.000137}
_TIER_FACTOR = {"OnDemand": 1.0, "Spot": 0.31, "SpotFallback": 1.0}
_NAMESPACES = ("payments", "checkout", "ml-training", "kube-system", "data-platform")
_TYPES = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
_LABEL_POOL = (
    ("app.kubernetes.io/part-of", "shop"),
    ("team", "payments"),
    ("cost-center", "cc-42"),
    ("owner", "Zürich-Ω team"),
    ("scheduling.cast.ai/spot", "true"),
    ("empty-value", ""),
)


def synthetic_org(seed: int = 20260314, workloads_per_cluster: int = 10, day: datetime = DAY) -> SyntheticOrg:
    rng = np.random.default_rng(seed)
    keys: list[tuple[str, str, str, str, str | None]] = []
    for cluster_id in CLUSTERS:
        for i in range(workloads_per_cluster):
            namespace = _NAMESPACES[int(rng.integers(len(_NAMESPACES)))]
            workload_type = _TYPES[int(rng.integers(len(_TYPES)))]
            name = f"{namespace[:4]}-svc-{i:02d}"
            keys.append((cluster_id, namespace, workload_type, name, _labels(rng, name)))
    workloads = len(keys)
    hours = 24
    # Each workload runs a random share of the day; idle hours produce all-zero buckets.
    active = rng.random((workloads, hours)) < rng.uniform(0.3, 1.0, (workloads, 1))
    active[0] = True
    metrics: dict[str, np.ndarray] = {name: np.zeros((workloads, hours)) for name in METRIC_COLUMNS}
    tier_share = rng.dirichlet(np.ones(len(TIERS)), size=workloads) * (
        rng.random((workloads, len(TIERS))) < 0.7
    )
    tier_share[:, 0] = np.where(tier_share.sum(axis=1) == 0, 1.0, tier_share[:, 0])
    cpu = rng.uniform(0.05, 8.0, (workloads, 1)) * rng.uniform(0.6, 1.4, (workloads, hours)) * active
    ram = cpu * rng.uniform(1.0, 8.0, (workloads, 1))
    gpu = np.zeros((workloads, hours))
    gpu[1] = 2.0 * active[1]  # one GPU workload on eks
    tpu = np.zeros((workloads, hours))
    tpu[workloads_per_cluster + 1] = 4.0 * active[workloads_per_cluster + 1]  # one TPU workload on gke
    for t, tier in enumerate(TIERS):
        share = tier_share[:, t : t + 1]
        for field, amount, rate in (
            ("cpu", cpu, "cpu"),
            ("ram", ram, "ram"),
            ("gpu", gpu, "gpu"),
            ("tpu", tpu, "tpu"),
        ):
            count_field = "ramGib" if field == "ram" else f"{field}Count"
            metrics[f"{count_field}{tier}"] = amount * share
            metrics[f"{field}Cost{tier}"] = amount * share * _RATES[rate] * _TIER_FACTOR[tier]
        metrics[f"cost{tier}"] = np.sum(
            [metrics[f"{f}Cost{tier}"] for f in ("cpu", "ram", "gpu", "tpu")], axis=0
        )
        metrics[f"podCount{tier}"] = np.ceil(cpu * share)
        metrics[f"uptimeMinutes{tier}"] = np.where(cpu * share > 0, 60.0, 0.0)
    has_storage = np.array([k[2] == "StatefulSet" for k in keys])[:, None]
    metrics["storageGib"] = np.where(has_storage, rng.uniform(10, 500, (workloads, 1)), 0.0) * np.ones(
        (1, hours)
    )
    metrics["storageCost"] = metrics["storageGib"] * _RATES["storage"]

    start = np.datetime64(day.replace(tzinfo=None), "us")
    hour_ends = start + np.arange(1, hours + 1) * np.timedelta64(3600, "s")
    hourly = _table(keys, hours, hour_ends, 3600, {k: v.reshape(-1) for k, v in metrics.items()})
    day_end = np.array([start + np.timedelta64(86400, "s")])
    daily = _table(keys, 1, day_end, 86400, {k: v.mean(axis=1) for k, v in metrics.items()})
    return SyntheticOrg(dict(CLUSTERS), enrichment_context(), hourly, daily, day, listing_reports(day))


def _labels(rng: np.random.Generator, name: str) -> str | None:
    if rng.random() < 0.15:
        return None
    chosen = {k: v for k, v in _LABEL_POOL if rng.random() < 0.5}
    chosen["app.kubernetes.io/name"] = name
    return json.dumps(chosen, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _table(
    keys: Sequence[tuple[str, str, str, str, str | None]],
    buckets: int,
    bucket_ends: np.ndarray,
    step_seconds: int,
    metrics: Mapping[str, np.ndarray],
) -> pa.Table:
    def dim(position: int) -> pa.Array:
        return pa.array(np.repeat(np.array([k[position] for k in keys], dtype=object), buckets), pa.string())

    columns: dict[str, pa.Array] = {
        "cluster_id": dim(0),
        "namespace": dim(1),
        "workload_type": dim(2),
        "workload_name": dim(3),
        "labels": dim(4),
        "timestamp": pa.array(np.tile(bucket_ends, len(keys)), pa.timestamp("us", tz="UTC")),
        "step_seconds": pa.array(np.full(len(keys) * buckets, step_seconds, dtype=np.int32)),
    }
    columns.update({name: pa.array(values, pa.float64()) for name, values in metrics.items()})
    return pa.table(columns).cast(WORKLOAD_COSTS_SCHEMA)


def workload_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """A workload-costs table from explicit rows; unspecified metrics are 0, labels may be a dict."""
    defaults: dict[str, Any] = {
        "cluster_id": "c-eks-prod",
        "namespace": "payments",
        "workload_type": "Deployment",
        "workload_name": "checkout-api",
        "labels": None,
        "timestamp": DAY + timedelta(hours=1),
        "step_seconds": 3600,
    }
    columns: dict[str, list[Any]] = {name: [] for name in WORKLOAD_COSTS_SCHEMA.names}
    for row in rows:
        unknown = set(row) - set(columns)
        if unknown:
            raise KeyError(f"unknown workload-costs field(s): {sorted(unknown)}")
        for name in WORKLOAD_COSTS_SCHEMA.names:
            value = row.get(name, defaults.get(name, 0.0))
            if name == "labels" and isinstance(value, dict):
                value = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
            columns[name].append(value)
    return pa.table(
        {
            f.name: pa.array(columns[f.name], f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
            for f in WORKLOAD_COSTS_SCHEMA
        }
    ).cast(WORKLOAD_COSTS_SCHEMA)
