"""Cast AI workload costs -> FOCUS 1.3 Cost-and-Usage rows: a pure, vectorised function (no Dagster).

Row model: one row per cluster x workload x charge period x pricing tier x resource, resource in
{cpu, memory, gpu, tpu, storage}; storage is untiered. One row per resource is what lets every row
satisfy FOCUS 1.3's `ListCost = ListUnitPrice x PricingQuantity`, which a row mixing CPU and RAM
cost cannot. Rows whose cost and quantity are both zero are omitted.

Cast AI metrics are average hourly rates over a bucket of `step_seconds` that ends at `timestamp`,
so a bucket contributes `rate x step_seconds / 3600` (cost) and `count x step_seconds / 3600`
(quantity-hours). Everything runs over whole columns: the 13 (resource, tier) charges form an
n x 13 matrix, strings are built once per input row, cluster or label set and then gathered
with `take`; the only Python loops run over clusters, discounts, discount dates and distinct label sets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.castai.discounts import (
    PricingStats,
    charge_mask,
    cluster_reason,
    contracted_prices,
    unusable_reason,
)
from castai_focus_dagster.castai.models import (
    RESOURCES,
    TIERS,
    WORKLOAD_COSTS_SCHEMA,
    Cluster,
    EnrichmentContext,
)
from castai_focus_dagster.focus.schema import FOCUS_SCHEMA
from castai_focus_dagster.settings import Settings

_KEY_COLUMNS = ("cluster_id", "namespace", "workload_type", "workload_name")
_TIER_LABELS = {"OnDemand": "on-demand", "Spot": "spot", "SpotFallback": "spot-fallback"}
_RESOURCE_LABELS = {  # resource -> (ChargeDescription word, PricingUnit, SkuMeter)
    "cpu": ("CPU", "vCPU-Hours", "vCPU usage"),
    "memory": ("Memory", "GiB-Hours", "Memory usage"),
    "gpu": ("GPU", "GPU-Hours", "GPU usage"),
    "tpu": ("TPU", "TPU-Hours", "TPU usage"),
    "storage": ("Storage", "GiB-Hours", "Storage usage"),
}

# Cast AI `providerType` -> FOCUS HostProviderName. Unknown types keep their own (readable) name.
HOST_PROVIDER_NAMES: dict[str, str] = {
    "eks": "AWS",
    "selfhostedwithec2nodes": "AWS",
    "gke": "Google Cloud",
    "aks": "Microsoft Azure",
    "oke": "Oracle Cloud Infrastructure",
    "openshift": "Red Hat OpenShift",
    "kops": "Self-managed (kOps)",
    "anywhere": "Self-managed",
}

_MICROS_PER_SECOND = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class FocusOptions:
    """The configuration the transform needs, decoupled from how settings are loaded."""

    organization_id: str  # the configured organisation: BillingAccountId of clusters that name none
    billing_account_name: str  # FOCUS_BILLING_ACCOUNT_NAME; empty: each row's BillingAccountId
    billing_currency: str = "USD"
    service_provider_name: str = "CAST AI"
    invoice_issuer_name: str = "CAST AI"
    publisher_name: str = "Cast AI"
    service_name: str = "Kubernetes"
    tag_allowlist: tuple[str, ...] = ()
    enterprise_id: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> FocusOptions:
        return cls(
            organization_id=settings.organization_id,
            billing_account_name=settings.focus_billing_account_name,
            billing_currency=settings.focus_billing_currency,
            service_provider_name=settings.focus_service_provider_name,
            invoice_issuer_name=settings.focus_invoice_issuer_name,
            publisher_name=settings.focus_publisher_name,
            service_name=settings.focus_service_name,
            tag_allowlist=settings.focus_tag_allowlist,
            enterprise_id=settings.focus_enterprise_id,
        )


@dataclass(frozen=True)
class Charge:
    """One of the 13 (resource, tier) charges a Cast AI bucket splits into."""

    resource: str
    tier: str | None  # None: storage (untiered)
    cost_field: str
    quantity_field: str

    @property
    def pricing_category(self) -> str:
        return "Standard" if self.tier in (None, "on-demand") else "Dynamic"

    @property
    def sku_id(self) -> str:
        return f"castai-k8s-{self.resource}"

    @property
    def sku_price_prefix(self) -> str:
        return self.sku_id if self.tier is None else f"{self.sku_id}-{self.tier}"

    @property
    def pricing_unit(self) -> str:
        return _RESOURCE_LABELS[self.resource][1]

    @property
    def sku_meter(self) -> str:
        return _RESOURCE_LABELS[self.resource][2]

    @property
    def description(self) -> str:
        word = _RESOURCE_LABELS[self.resource][0]
        return word if self.tier is None else f"{word} on {self.tier} capacity"


CHARGES: tuple[Charge, ...] = tuple(
    Charge(resource, _TIER_LABELS[tier], f"{cost}{tier}", f"{quantity}{tier}")
    for resource, cost, quantity, tiered in RESOURCES
    if tiered
    for tier in TIERS
) + tuple(
    Charge(resource, None, cost, quantity) for resource, cost, quantity, tiered in RESOURCES if not tiered
)


def is_anywhere(cluster: Cluster) -> bool:
    """A Cast AI Anywhere cluster: the only kind Cast AI's default and cluster prices are documented for."""
    return cluster.provider_type.strip().lower() == "anywhere"


def host_provider_name(provider_type: str, service_provider_name: str) -> str:
    """FOCUS: the host when exposed; when it cannot be determined, the service provider itself."""
    key = provider_type.strip().lower()
    if not key:
        return service_provider_name
    return HOST_PROVIDER_NAMES.get(key, provider_type.strip())


def to_focus(
    workloads: pa.Table,
    clusters: Mapping[str, Cluster],
    context: EnrichmentContext,
    options: FocusOptions,
    *,
    listing: Mapping[str, pa.Table] | None = None,
    stats: PricingStats | None = None,
) -> pa.Table:
    """FOCUS rows for a workload-costs table; the result always has exactly `FOCUS_SCHEMA`.

    `listing`: cluster cost reports at listing prices by cluster id (the list prices of cloud clusters);
    `stats` collects what the pricing rules did.
    """
    prepared = prepare_workloads(workloads)
    if prepared.num_rows == 0:
        return FOCUS_SCHEMA.empty_table()
    source = WorkloadSource(prepared)
    cluster_info = ClusterInfo.build(source.cluster_ids, clusters, context, options)

    # Charge matrix: row-major nonzero() yields rows grouped per bucket, charges in CHARGES order.
    cost_matrix = np.column_stack([source.metric(c.cost_field) for c in CHARGES])
    quantity_matrix = np.column_stack([source.metric(c.quantity_field) for c in CHARGES])
    row, charge = np.nonzero((cost_matrix != 0) | (quantity_matrix != 0))
    if row.size == 0:
        return FOCUS_SCHEMA.empty_table()
    cost_rate = cost_matrix[row, charge]
    quantity_rate = quantity_matrix[row, charge]
    hours = source.step_seconds[row] / 3600.0
    billed = cost_rate * hours
    quantity = quantity_rate * hours
    cluster_entry = source.cluster_entry[row]
    period_end = source.timestamp_us[row]
    period_start = period_end - source.step_seconds[row].astype(np.int64) * _MICROS_PER_SECOND

    list_price, contracted_price = unit_prices(
        charge,
        cluster_entry,
        period_start,
        period_end,
        cost_rate,
        quantity_rate,
        cluster_info,
        context,
        listing,
        stats,
    )
    charges = ChargeRows(charge, cluster_entry, period_start, period_end, billed, quantity)
    row_idx = pa.array(row.astype(np.int64))
    columns = charge_columns(charges, list_price, contracted_price, cluster_info, options)
    columns |= {
        "ChargeDescription": pc.binary_join_element_wise(
            per_charge([c.description for c in CHARGES], pa.array(charge.astype(np.int32))),
            source.workload_label.take(row_idx),
            " for ",
        ),
        "ResourceId": source.resource_id.take(row_idx),
        "ResourceName": source.text("workload_name").take(row_idx),
        "ResourceType": source.text("workload_type").take(row_idx),
        "Tags": _tags(source, cluster_info, options.tag_allowlist, row),
        "x_CastAINamespace": source.text("namespace").take(row_idx),
        "x_CastAIWorkloadType": source.text("workload_type").take(row_idx),
        "x_CastAIWorkloadName": source.text("workload_name").take(row_idx),
    }
    return focus_table(columns, int(row.size))


@dataclass(frozen=True)
class ChargeRows:
    """Output rows as (charge, cluster, period, amounts): what both allocation modes have in common."""

    charge: np.ndarray  # index into CHARGES
    cluster_entry: np.ndarray  # index into ClusterInfo
    period_start_us: np.ndarray
    period_end_us: np.ndarray
    billed: np.ndarray
    quantity: np.ndarray


def charge_columns(
    rows: ChargeRows,
    list_price: np.ndarray,
    contracted_price: np.ndarray,
    clusters: ClusterInfo,
    options: FocusOptions,
) -> dict[str, pa.Array]:
    """Every column determined by the charge, cluster, period, amounts and unit prices of a row.

    Shared by workload mode and split mode so the two cannot map a charge differently; each mode adds
    the columns that identify what the row is about (Resource*, Tags, ChargeDescription, Allocated*).
    """
    charge, billed, quantity = rows.charge, rows.billed, rows.quantity
    # Exactly the float64 products a reader recomputes: FOCUS 1.3 allows no discrepancy.
    list_cost = list_price * quantity
    contracted_cost = contracted_price * quantity

    month = rows.period_start_us.astype("datetime64[us]").astype("datetime64[M]")
    billing_start = month.astype("datetime64[us]").astype(np.int64)
    billing_end = (month + 1).astype("datetime64[us]").astype(np.int64)
    invoice_months, invoice_index = np.unique(month, return_inverse=True)
    invoice_ids = pa.array(
        [f"CASTAI-{options.organization_id}-{str(m)[:4]}-{str(m)[5:7]}" for m in invoice_months], pa.string()
    )

    charge_idx = pa.array(charge.astype(np.int32))
    cluster_idx = pa.array(rows.cluster_entry.astype(np.int32))
    unit = per_charge([c.pricing_unit for c in CHARGES], charge_idx)
    cluster_id = clusters.id.take(cluster_idx)
    n = int(charge.size)

    def const(value: str) -> pa.Array:
        return pa.repeat(pa.scalar(value, pa.string()), n)

    def money(values: np.ndarray) -> pa.Array:
        return pa.array(values, pa.float64())

    def instant(micros: np.ndarray) -> pa.Array:
        return pa.array(micros, FOCUS_SCHEMA.field("ChargePeriodStart").type)

    resource_np = np.array([c.resource for c in CHARGES])[charge]

    def component(name: str) -> pa.Array:
        return pa.array(billed, pa.float64(), mask=resource_np != name)

    return {
        "BilledCost": money(billed),
        "BillingAccountId": clusters.billing_account_id.take(cluster_idx),
        "BillingAccountName": clusters.billing_account_name.take(cluster_idx),
        "BillingCurrency": const(options.billing_currency),
        "BillingPeriodEnd": instant(billing_end),
        "BillingPeriodStart": instant(billing_start),
        "ChargeCategory": const("Usage"),
        "ChargeFrequency": const("Usage-Based"),
        "ChargePeriodEnd": instant(rows.period_end_us),
        "ChargePeriodStart": instant(rows.period_start_us),
        "ConsumedQuantity": money(quantity),
        "ConsumedUnit": unit,
        "ContractedCost": money(contracted_cost),
        "ContractedUnitPrice": money(contracted_price),
        "EffectiveCost": money(billed),
        "HostProviderName": clusters.host_provider.take(cluster_idx),
        "InvoiceId": invoice_ids.take(pa.array(invoice_index.astype(np.int32))),
        "InvoiceIssuerName": const(options.invoice_issuer_name),
        "ListCost": money(list_cost),
        "ListUnitPrice": money(list_price),
        "PricingCategory": per_charge([c.pricing_category for c in CHARGES], charge_idx),
        "PricingCurrency": const(options.billing_currency),
        "PricingCurrencyContractedUnitPrice": money(contracted_price),
        "PricingCurrencyEffectiveCost": money(billed),
        "PricingCurrencyListUnitPrice": money(list_price),
        "PricingQuantity": money(quantity),
        "PricingUnit": unit,
        "ProviderName": const(options.service_provider_name),
        "PublisherName": const(options.publisher_name),
        "RegionId": clusters.region_id.take(cluster_idx),
        "RegionName": clusters.region_name.take(cluster_idx),
        "ServiceCategory": const("Compute"),
        "ServiceName": const(options.service_name),
        "ServiceProviderName": const(options.service_provider_name),
        "ServiceSubcategory": const("Containers"),
        "SkuId": per_charge([c.sku_id for c in CHARGES], charge_idx),
        "SkuMeter": per_charge([c.sku_meter for c in CHARGES], charge_idx),
        "SkuPriceId": pc.binary_join_element_wise(
            per_charge([c.sku_price_prefix for c in CHARGES], charge_idx), cluster_id, "-"
        ),
        "SubAccountId": clusters.sub_account_id.take(cluster_idx),
        "SubAccountName": clusters.sub_account_name.take(cluster_idx),
        "SubAccountType": clusters.sub_account_type.take(cluster_idx),
        "x_CastAIClusterId": cluster_id,
        "x_CastAIClusterName": clusters.name.take(cluster_idx),
        "x_CastAIPricingTier": per_charge([c.tier for c in CHARGES], charge_idx),
        "x_CastAIResource": per_charge([c.resource for c in CHARGES], charge_idx),
        "x_CastAICpuCost": component("cpu"),
        "x_CastAIRamCost": component("memory"),
        "x_CastAIGpuCost": component("gpu"),
        "x_CastAITpuCost": component("tpu"),
        "x_CastAIStorageCost": component("storage"),
    }


def focus_table(columns: Mapping[str, pa.Array], num_rows: int) -> pa.Table:
    """`FOCUS_SCHEMA` table from the given columns; every other column is all-null."""
    arrays = [columns.get(f.name, pa.nulls(num_rows, f.type)) for f in FOCUS_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=FOCUS_SCHEMA)


def per_charge(values: Sequence[str | None], charge_idx: pa.Array) -> pa.Array:
    return pa.array(values, pa.string()).take(charge_idx)


def prepare_workloads(workloads: pa.Table) -> pa.Table:
    """The workload-costs table as the transform reads it (use it to audit against the same input).

    Cast to `WORKLOAD_COSTS_SCHEMA`, duplicate buckets of a workload (same cluster, namespace, type,
    name and timestamp) dropped with the first one kept, sorted by those keys so the output does
    not depend on the order in which the API returned workloads.
    """
    missing = [name for name in WORKLOAD_COSTS_SCHEMA.names if name not in workloads.column_names]
    if missing:
        raise ValueError(f"workload costs table lacks column(s) {', '.join(missing)}")
    table = workloads.select(WORKLOAD_COSTS_SCHEMA.names).cast(WORKLOAD_COSTS_SCHEMA).combine_chunks()
    if table.num_rows == 0:
        return table
    keys = [_dense_codes(_dictionary(table, name)) for name in _KEY_COLUMNS]
    timestamp = table.column("timestamp").cast(pa.int64()).to_numpy()
    order = np.lexsort((timestamp, *reversed(keys)))  # stable: the first of duplicates stays first
    sorted_keys = np.column_stack([k[order] for k in keys] + [timestamp[order]])
    first = np.ones(order.size, dtype=bool)
    first[1:] = np.any(sorted_keys[1:] != sorted_keys[:-1], axis=1)
    table = table.take(pa.array(order[first])).combine_chunks()
    # Re-encode the cluster ids so their dictionary holds only clusters that have rows.
    cluster_ids = pc.dictionary_encode(table.column("cluster_id").cast(pa.string()))
    table = table.set_column(0, WORKLOAD_COSTS_SCHEMA.field(0), cluster_ids)
    step = table.column("step_seconds").to_numpy()
    if np.any(step <= 0):
        bad = int(np.argmax(step <= 0))
        raise ValueError(
            f"cluster {table.column('cluster_id')[bad].as_py()}: workload "
            f"{table.column('workload_name')[bad].as_py()} has step_seconds {int(step[bad])} (must be > 0)"
        )
    return table


class WorkloadSource:
    """Column views of a prepared workload-costs table: codes, decoded strings, per-row identifiers."""

    def __init__(self, table: pa.Table):
        self.table = table
        cluster = _dictionary(table, "cluster_id")
        self.cluster_ids: list[str] = cluster.dictionary.to_pylist()
        self.cluster_entry = cluster.indices.to_numpy(zero_copy_only=False)
        self.step_seconds = table.column("step_seconds").to_numpy()
        self.timestamp_us = table.column("timestamp").cast(pa.int64()).to_numpy()
        self.cluster_id_text = self.text("cluster_id")
        namespace, workload_type, name = (
            self.text(c) for c in ("namespace", "workload_type", "workload_name")
        )
        self.resource_id = pc.binary_join_element_wise(
            "castai://",
            pc.binary_join_element_wise(self.cluster_id_text, namespace, workload_type, name, "/"),
            "",
        )
        self.workload_label = pc.binary_join_element_wise(
            workload_type, pc.binary_join_element_wise(namespace, name, "/"), " "
        )

    def metric(self, name: str) -> np.ndarray:
        return self.table.column(name).to_numpy()

    def text(self, name: str) -> pa.Array:
        """A dictionary column decoded to plain strings (cheap: one gather over the dictionary)."""
        column = _dictionary(self.table, name)
        return column.dictionary.take(column.indices)

    def label_entries(self) -> tuple[list[str | None], np.ndarray]:
        """Distinct label JSON texts and, per row, the index into them (-1: no labels)."""
        labels = _dictionary(self.table, "labels")
        entry = pc.fill_null(labels.indices, -1).to_numpy()
        return labels.dictionary.to_pylist(), entry


def _dictionary(table: pa.Table, name: str) -> pa.DictionaryArray:
    column = table.column(name)
    chunk = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    assert isinstance(chunk, pa.DictionaryArray)
    return chunk


def _dense_codes(column: pa.DictionaryArray) -> np.ndarray:
    """Integer codes that order like the strings and are equal exactly when the strings are."""
    ranks = pc.rank(column.dictionary, sort_keys="ascending", tiebreaker="dense").to_numpy()
    return ranks[column.indices.to_numpy(zero_copy_only=False)]


def billing_account_id(cluster: Cluster, configured_organization_id: str) -> str:
    """The organisation that owns the cluster (BillingAccountId, as in the original exporter); the
    configured organisation when Cast AI names none."""
    return cluster.organization_id or configured_organization_id


@dataclass(frozen=True)
class ClusterInfo:
    """Per-cluster attributes, aligned with the `cluster_id` dictionary of the source table."""

    clusters: list[Cluster]
    id: pa.Array
    name: pa.Array
    host_provider: pa.Array
    billing_account_id: pa.Array  # the cluster's organisation, as the original exporter
    billing_account_name: pa.Array
    region_id: pa.Array
    region_name: pa.Array
    sub_account_id: pa.Array
    sub_account_name: pa.Array
    sub_account_type: pa.Array
    custom_cpu_price: np.ndarray  # NaN: no custom price for this cluster
    custom_memory_price: np.ndarray
    is_anywhere: np.ndarray  # bool: a Cast AI Anywhere cluster (priced by Cast AI's cluster prices)

    @classmethod
    def build(
        cls,
        cluster_ids: list[str],
        clusters: Mapping[str, Cluster],
        context: EnrichmentContext,
        options: FocusOptions,
    ) -> ClusterInfo:
        unknown = sorted(set(cluster_ids) - set(clusters))
        if unknown:
            raise ValueError(
                f"workload costs reference cluster(s) {', '.join(unknown)} missing from the cluster list"
            )
        resolved = [clusters[cid] for cid in cluster_ids]

        def sub_account(c: Cluster) -> tuple[str, str, str]:
            child = context.child_organizations.get(c.organization_id) if options.enterprise_id else None
            if child is not None:
                return child.id, child.name, "Organization"
            return c.id, c.name, "Cluster"

        def custom(c: Cluster, attribute: str) -> float:
            # Cast AI documents cluster prices for Anywhere clusters only.
            price = context.cluster_prices.get(c.id) if is_anywhere(c) else None
            return float("nan") if price is None or price.is_default else float(getattr(price, attribute))

        subs = [sub_account(c) for c in resolved]
        accounts = [billing_account_id(c, options.organization_id) for c in resolved]
        region_ids = [c.region_name or None for c in resolved]
        return cls(
            clusters=resolved,
            id=pa.array([c.id for c in resolved], pa.string()),
            name=pa.array([c.name for c in resolved], pa.string()),
            host_provider=pa.array(
                [host_provider_name(c.provider_type, options.service_provider_name) for c in resolved],
                pa.string(),
            ),
            billing_account_id=pa.array(accounts, pa.string()),
            billing_account_name=pa.array([options.billing_account_name or a for a in accounts], pa.string()),
            region_id=pa.array(region_ids, pa.string()),
            region_name=pa.array(
                [
                    (c.region_display_name or c.region_name) if rid else None
                    for c, rid in zip(resolved, region_ids, strict=True)
                ],
                pa.string(),
            ),
            sub_account_id=pa.array([s[0] for s in subs], pa.string()),
            sub_account_name=pa.array([s[1] for s in subs], pa.string()),
            sub_account_type=pa.array([s[2] for s in subs], pa.string()),
            custom_cpu_price=np.array([custom(c, "cpu_hourly_price") for c in resolved], dtype=np.float64),
            custom_memory_price=np.array(
                [custom(c, "memory_gib_hourly_price") for c in resolved], dtype=np.float64
            ),
            is_anywhere=np.array([is_anywhere(c) for c in resolved], dtype=bool),
        )


def unit_prices(
    charge: np.ndarray,
    cluster_entry: np.ndarray,
    period_start_us: np.ndarray,
    period_end_us: np.ndarray,
    cost_rate: np.ndarray,
    quantity_rate: np.ndarray,
    clusters: ClusterInfo,
    context: EnrichmentContext,
    listing: Mapping[str, pa.Table] | None = None,
    stats: PricingStats | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(ListUnitPrice, ContractedUnitPrice) per row; see docs/focus-mapping.md "Prices".

    `listing` maps cluster ids to their cluster cost report at listing prices (same window and step);
    `stats`, when given, receives what the rules did (list price sources, discounted and clamped rows).
    """
    # The effective rate is cost per unit; a charge with cost but no quantity has no rate (documented: 0).
    effective = np.divide(cost_rate, quantity_rate, out=np.zeros_like(cost_rate), where=quantity_rate != 0)
    row_list = np.full(charge.size, np.nan)
    source = np.full(charge.size, LIST_SOURCES.index("effective_rate"), dtype=np.int8)
    # Cast AI documents its default and cluster prices for Anywhere clusters only, and with no spot price:
    # they price on-demand (and spot-fallback, on-demand capacity) rows; spot rows keep their own rate.
    anywhere = clusters.is_anywhere[cluster_entry] & _NOT_SPOT[charge]
    default = context.default_pricing
    if default is not None:
        defaults = (("cpu", default.cpu_hourly_price), ("memory", default.memory_gib_hourly_price))
        for resource, price in defaults:
            use = anywhere & _charges_of(resource)[charge]
            row_list[use] = price
            source[use] = LIST_SOURCES.index("anywhere_default_pricing")
    for entry, cluster in enumerate(clusters.clusters):
        report = (listing or {}).get(cluster.id)
        if report is None or is_anywhere(cluster):
            continue
        rows = np.flatnonzero(cluster_entry == entry)
        rate = listing_rate(report, period_end_us[rows], charge[rows])
        found = ~np.isnan(rate)
        row_list[rows[found]] = rate[found]
        source[rows[found]] = LIST_SOURCES.index("listing_report")
    has_list = ~np.isnan(row_list)
    list_price = np.where(has_list, row_list, effective)

    # Discounts lower a list price, never Cast AI's effective rate (which already includes them).
    resources = [c.resource for c in CHARGES]
    tiers = [c.tier for c in CHARGES]
    usable = [d for d in context.discounts if unusable_reason(d) is None]
    masks = [
        has_list
        & np.array([cluster_reason(d, c) is None for c in clusters.clusters], dtype=bool)[cluster_entry]
        & charge_mask(d, resources, tiers)[charge]
        for d in usable
    ]
    contracted, negative, applied, weighted = contracted_prices(
        list_price, period_start_us, period_end_us, usable, masks
    )
    if stats is not None:
        for discount, lowered in zip(usable, applied, strict=True):
            if lowered.any():
                stats.discounted_rows[discount.id] += int(lowered.sum())
    for resource, custom in (("cpu", clusters.custom_cpu_price), ("memory", clusters.custom_memory_price)):
        row_custom = custom[cluster_entry]
        use = _charges_of(resource)[charge] & _NOT_SPOT[charge] & ~np.isnan(row_custom)
        contracted[use] = row_custom[use]
    if stats is not None:
        stats.clamped_rows += int(negative.sum())
        stats.time_weighted_rows += int(weighted.sum())
        counts = np.bincount(source, minlength=len(LIST_SOURCES))
        for name, count in zip(LIST_SOURCES, counts.tolist(), strict=True):
            if count:
                stats.list_price_rows[name] += count
    return list_price, contracted


_NOT_SPOT = np.array([c.tier != "spot" for c in CHARGES])
# Where a row's ListUnitPrice comes from (metadata `list_price_rows`).
LIST_SOURCES = ("effective_rate", "anywhere_default_pricing", "listing_report")


def listing_rate(report: pa.Table, period_end_us: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Listing unit price per row: the cluster's listing cost ÷ count of the row's bucket, tier and resource.

    NaN where the report has no bucket ending at the row's period end or a zero count for the charge.
    """
    rates = np.full(charge.size, np.nan)
    if report.num_rows == 0 or charge.size == 0:
        return rates
    ends = report.column("timestamp").cast(pa.int64()).to_numpy()
    order = np.argsort(ends, kind="stable")
    ends = ends[order]
    position = np.clip(np.searchsorted(ends, period_end_us), 0, ends.size - 1)
    matched = ends[position] == period_end_us
    bucket = order[position]
    names = set(report.column_names)
    for index, c in enumerate(CHARGES):
        rows = np.flatnonzero(matched & (charge == index))
        if rows.size == 0 or c.cost_field not in names or c.quantity_field not in names:
            continue
        cost = report.column(c.cost_field).to_numpy()[bucket[rows]]
        count = report.column(c.quantity_field).to_numpy()[bucket[rows]]
        rates[rows] = np.divide(cost, count, out=np.full(rows.size, np.nan), where=count > 0)
    return rates


def _charges_of(resource: str) -> np.ndarray:
    return np.array([c.resource == resource for c in CHARGES])


def _tags(
    source: WorkloadSource, clusters: ClusterInfo, allowlist: tuple[str, ...], row: np.ndarray
) -> pa.Array:
    """Tags of the output rows (`row`: their source rows), serialized once per distinct (cluster, labels)."""
    label_texts, label_entry = source.label_entries()
    combo = source.cluster_entry.astype(np.int64) * (len(label_texts) + 1) + (label_entry + 1)
    distinct, inverse = np.unique(combo, return_inverse=True)
    values: list[str | None] = []
    for key in distinct.tolist():
        cluster = clusters.clusters[key // (len(label_texts) + 1)]
        label_index = key % (len(label_texts) + 1) - 1
        labels = allowed_labels(label_texts[label_index] if label_index >= 0 else None, cluster.id, allowlist)
        # As the original exporter: keys as they are, a workload label wins over a cluster tag.
        values.append(tags_json(cluster_tags(cluster, allowlist) | labels))
    return pa.array(values, pa.string()).take(pa.array(inverse.reshape(-1)[row].astype(np.int64)))


def cluster_tags(cluster: Cluster, allowlist: tuple[str, ...]) -> dict[str, Any]:
    """The cluster's Cast AI tags with their keys as they are (user-defined, like labels), filtered."""
    allowed = set(allowlist)
    return {k: v for k, v in cluster.tags.items() if not allowed or k in allowed}


def allowed_labels(text: str | None, cluster_id: str, allowlist: tuple[str, ...]) -> dict[str, Any]:
    """A workload's labels (canonical JSON text) with keys as-is, filtered by the allowlist."""
    allowed = set(allowlist)
    return {k: v for k, v in parse_labels(text, cluster_id).items() if not allowed or k in allowed}


def tags_json(tags: Mapping[str, Any]) -> str | None:
    """Key-value JSON as every Tags-like column carries it (sorted keys, compact); null when empty."""
    return json.dumps(tags, sort_keys=True, ensure_ascii=False, separators=(",", ":")) if tags else None


def parse_labels(text: str | None, cluster_id: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        labels = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"cluster {cluster_id}: workload labels are not valid JSON ({exc.msg})") from exc
    if not isinstance(labels, dict):
        raise ValueError(
            f"cluster {cluster_id}: workload labels must be a JSON object, got {type(labels).__name__}"
        )
    return labels
