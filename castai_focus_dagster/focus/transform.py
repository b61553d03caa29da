"""Cast AI workload costs -> FOCUS 1.3 Cost-and-Usage rows (workload mode): a pure, vectorised function.

One row per cluster × workload × charge period × pricing tier × resource; docs/architecture.md
(`focus/`) says why, and how the columns are built without per-row Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.castai.discounts import PricingStats
from castai_focus_dagster.castai.models import Cluster, EnrichmentContext
from castai_focus_dagster.castai.units import MICROS_PER_SECOND
from castai_focus_dagster.focus.charges import CHARGES, per_charge
from castai_focus_dagster.focus.clusters import ClusterInfo
from castai_focus_dagster.focus.options import FocusOptions
from castai_focus_dagster.focus.prices import unit_prices
from castai_focus_dagster.focus.schema import FOCUS_COLUMNS, FOCUS_CONSTANTS, FOCUS_SCHEMA
from castai_focus_dagster.focus.source import PreparedWorkloads, WorkloadSource, prepared
from castai_focus_dagster.focus.tags import workload_tags


def to_focus(
    workloads: pa.Table | PreparedWorkloads,
    clusters: Mapping[str, Cluster],
    context: EnrichmentContext,
    options: FocusOptions,
    *,
    listing: Mapping[str, pa.Table] | None = None,
    stats: PricingStats | None = None,
) -> pa.Table:
    """FOCUS rows for a workload-costs table; the result always has exactly `FOCUS_SCHEMA`.

    `listing`: cluster cost reports at listing prices by cluster id (the list prices of cloud clusters);
    `stats` collects what the pricing rules did. Pass a `PreparedWorkloads` to share it with the audit.
    """
    batch = prepared(workloads)
    if batch.num_rows == 0:
        return FOCUS_SCHEMA.empty_table()
    source = WorkloadSource(batch.table)
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
    period_start = period_end - source.step_seconds[row].astype(np.int64) * MICROS_PER_SECOND

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
    workload_name = source.text_of_rows("workload_name", row_idx)
    workload_type = source.text_of_rows("workload_type", row_idx)
    columns |= {
        "ChargeDescription": pc.binary_join_element_wise(
            per_charge([c.description for c in CHARGES], pa.array(charge.astype(np.int32))),
            source.workload_label.take(row_idx),
            " for ",
        ),
        "ResourceId": source.resource_id.take(row_idx),
        "ResourceName": workload_name,
        "ResourceType": workload_type,
        "Tags": workload_tags(source, cluster_info, options.tag_allowlist, row),
        "x_CastAINamespace": source.text_of_rows("namespace", row_idx),
        "x_CastAIWorkloadType": workload_type,  # the same array twice: gathered once
        "x_CastAIWorkloadName": workload_name,
    }
    return focus_table(columns, int(row.size), options)


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

    billing_start, billing_end, invoice_months, invoice_index = _billing_months(rows.period_start_us)
    invoice_ids = pa.array(
        [f"CASTAI-{options.organization_id}-{str(m)[:4]}-{str(m)[5:7]}" for m in invoice_months], pa.string()
    )

    charge_idx = pa.array(charge.astype(np.int32))
    of_cluster = _gather_to(rows.cluster_entry)
    unit = per_charge([c.pricing_unit for c in CHARGES], charge_idx)
    cluster_id = of_cluster(clusters.id)

    def money(values: np.ndarray) -> pa.Array:
        return pa.array(values, pa.float64())

    def instant(micros: np.ndarray) -> pa.Array:
        return pa.array(micros, FOCUS_SCHEMA.field("ChargePeriodStart").type)

    resources = np.array([c.resource for c in CHARGES])

    def component(name: str) -> pa.Array:
        # A per-charge flag gathered to the rows: no string comparison per row.
        return pa.array(billed, pa.float64(), mask=(resources != name)[charge])

    return {
        "BilledCost": money(billed),
        "BillingAccountId": of_cluster(clusters.billing_account_id),
        "BillingAccountName": of_cluster(clusters.billing_account_name),
        "BillingPeriodEnd": instant(billing_end),
        "BillingPeriodStart": instant(billing_start),
        "ChargePeriodEnd": instant(rows.period_end_us),
        "ChargePeriodStart": instant(rows.period_start_us),
        "ConsumedQuantity": money(quantity),
        "ConsumedUnit": unit,
        "ContractedCost": money(contracted_cost),
        "ContractedUnitPrice": money(contracted_price),
        "EffectiveCost": money(billed),
        "HostProviderName": of_cluster(clusters.host_provider),
        "InvoiceId": invoice_ids.take(pa.array(invoice_index.astype(np.int32))),
        "ListCost": money(list_cost),
        "ListUnitPrice": money(list_price),
        "PricingCategory": per_charge([c.pricing_category for c in CHARGES], charge_idx),
        "PricingCurrencyContractedUnitPrice": money(contracted_price),
        "PricingCurrencyEffectiveCost": money(billed),
        "PricingCurrencyListUnitPrice": money(list_price),
        "PricingQuantity": money(quantity),
        "PricingUnit": unit,
        "RegionId": of_cluster(clusters.region_id),
        "RegionName": of_cluster(clusters.region_name),
        "SkuId": per_charge([c.sku_id for c in CHARGES], charge_idx),
        "SkuMeter": per_charge([c.sku_meter for c in CHARGES], charge_idx),
        "SkuPriceId": _sku_price_ids(clusters).take(
            pa.array(rows.cluster_entry.astype(np.int64) * len(CHARGES) + charge)
        ),
        "SubAccountId": of_cluster(clusters.sub_account_id),
        "SubAccountName": of_cluster(clusters.sub_account_name),
        "SubAccountType": of_cluster(clusters.sub_account_type),
        "x_CastAIClusterId": cluster_id,
        "x_CastAIClusterName": of_cluster(clusters.name),
        "x_CastAIPricingTier": per_charge([c.tier for c in CHARGES], charge_idx),
        "x_CastAIResource": per_charge([c.resource for c in CHARGES], charge_idx),
        "x_CastAICpuCost": component("cpu"),
        "x_CastAIRamCost": component("memory"),
        "x_CastAIGpuCost": component("gpu"),
        "x_CastAITpuCost": component("tpu"),
        "x_CastAIStorageCost": component("storage"),
    }


def _billing_months(period_start_us: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: its billing period's start and end (µs), and the index of its month among the distinct
    months (also returned)."""
    size = period_start_us.size
    if size:
        extremes = np.array([period_start_us.min(), period_start_us.max()])
        first, last = extremes.astype("datetime64[us]").astype("datetime64[M]")
        if first == last:  # a day lies in one month: calendar arithmetic on one value, not on every row
            start, end = np.array([first, first + 1]).astype("datetime64[us]").astype(np.int64)
            return np.full(size, start), np.full(size, end), np.array([first]), np.zeros(size, np.int64)
    month = period_start_us.astype("datetime64[us]").astype("datetime64[M]")
    months, index = np.unique(month, return_inverse=True)
    start = month.astype("datetime64[us]").astype(np.int64)
    end = (month + 1).astype("datetime64[us]").astype(np.int64)
    return start, end, months, index


def _gather_to(entry: np.ndarray) -> Callable[[pa.Array], pa.Array]:
    """`values[entry]` for per-cluster arrays: a batch usually holds one cluster, and repeating its one
    value costs a third of gathering it row by row through an index."""
    if entry.size and entry[0] >= 0 and not np.any(entry != entry[0]):  # -1 fails in the take, as ever
        first, size = int(entry[0]), int(entry.size)
        return lambda values: pa.repeat(values[first], size)
    index = pa.array(entry.astype(np.int32))
    return lambda values: values.take(index)


def _sku_price_ids(clusters: ClusterInfo) -> pa.Array:
    """SkuPriceId of every (cluster, charge), cluster-major: built once per cluster, gathered to the rows."""
    prefixes = pa.array([c.sku_price_prefix for c in CHARGES] * len(clusters.id), pa.string())
    owners = clusters.id.take(pa.array(np.repeat(np.arange(len(clusters.id)), len(CHARGES))))
    return pc.binary_join_element_wise(prefixes, owners, "-")


def constant_value(name: str, options: FocusOptions) -> str | None:
    """The value every row of constant column `name` holds (its `FocusColumn.constant`), or None: null."""
    constant = FOCUS_CONSTANTS[name]
    return getattr(options, constant.option) if constant.option else constant.value


def focus_table(columns: Mapping[str, pa.Array], num_rows: int, options: FocusOptions) -> pa.Table:
    """`FOCUS_SCHEMA` table from the given columns, constant columns filled from the schema, others null."""
    arrays = []
    for column in FOCUS_COLUMNS:
        if column.name in columns:
            arrays.append(columns[column.name])
            continue
        value = constant_value(column.name, options) if column.constant else None
        arrays.append(
            pa.nulls(num_rows, column.arrow_type)
            if value is None
            else pa.repeat(pa.scalar(value, column.arrow_type), num_rows)
        )
    return pa.Table.from_arrays(arrays, schema=FOCUS_SCHEMA)
