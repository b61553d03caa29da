"""FOCUS 1.3 split cost allocation (`FOCUS_ALLOCATION_MODE=split`): cluster charges split to workloads.

Each origin charge (cluster × period × charge, from the cluster cost report) becomes one allocated row
per workload plus, when capacity is left, one unallocated (idle) row; docs/allocation.md documents the
method and docs/architecture.md (`focus/`) why the origin itself is not emitted.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from castai_focus_dagster.focus.schema import FOCUS_SCHEMA
from castai_focus_dagster.focus.source import PreparedWorkloads, WorkloadSource, prepared
from castai_focus_dagster.focus.split_inputs import (
    ALLOCATION_METHOD_ID,
    CLUSTER_RESOURCE_TYPE,
    REMAINDER_RELATIVE_TOLERANCE,
    Entries,
    check_grid,
    report_entries,
    split_cluster_ids,
    workload_entries,
)
from castai_focus_dagster.focus.tags import allocated_tags, cluster_tags, tags_json
from castai_focus_dagster.focus.transform import ChargeRows, charge_columns, focus_table


def to_focus_split(
    workloads: pa.Table | PreparedWorkloads,
    cluster_costs: Mapping[str, pa.Table],
    clusters: Mapping[str, Cluster],
    context: EnrichmentContext,
    options: FocusOptions,
    *,
    step_seconds: int,
    listing: Mapping[str, pa.Table] | None = None,
    stats: PricingStats | None = None,
) -> pa.Table:
    """Split-mode FOCUS rows in exactly `FOCUS_SCHEMA`.

    `cluster_costs` maps every cluster id to its cluster cost report (`CastAIClient.cluster_cost_report`),
    fetched for the same window and `step_seconds` as `workloads`; the report has no bucket size of its
    own, hence the explicit `step_seconds`.
    """
    if step_seconds <= 0:
        raise ValueError(f"step_seconds must be positive, got {step_seconds}")
    source = WorkloadSource(prepared(workloads).table)
    cluster_ids = split_cluster_ids(source, cluster_costs, clusters)
    if not cluster_ids:
        return FOCUS_SCHEMA.empty_table()
    info = ClusterInfo.build(cluster_ids, clusters, context, options)
    code_of = {cid: i for i, cid in enumerate(cluster_ids)}
    hours = step_seconds / 3600.0
    used = workload_entries(source, code_of, step_seconds, hours)
    reported = report_entries(cluster_costs, code_of, hours)
    check_grid(source, cluster_costs, step_seconds)
    origins = _Origins.build(used, reported)
    if origins.count == 0:
        return FOCUS_SCHEMA.empty_table()
    rows = _split_rows(origins, used)
    return _assemble(rows, origins, source, info, context, options, step_seconds, listing, stats)


# --------------------------------------------------------------------------------------------------
# Origins and the split


class _Origins:
    """One origin charge per (cluster, bucket end, charge), sorted by cluster id, period and charge."""

    def __init__(
        self, keys: np.ndarray, ends: np.ndarray, reported: Entries, used: Entries, used_origin: np.ndarray
    ):
        n_charges = len(CHARGES)
        self.count = int(keys.size)
        self.charge = keys % n_charges
        self.end_us = ends[(keys // n_charges) % max(ends.size, 1)] if keys.size else keys
        self.cluster = keys // n_charges // max(ends.size, 1)
        self.used_origin = used_origin
        report_origin = np.searchsorted(keys, _keys(reported, ends))
        self.reported_cost = np.zeros(self.count)
        self.reported_quantity = np.zeros(self.count)
        self.reported_cost[report_origin] = reported.cost
        self.reported_quantity[report_origin] = reported.quantity
        self.used_cost = np.bincount(used_origin, weights=used.cost, minlength=self.count)
        self.used_quantity = np.bincount(used_origin, weights=used.quantity, minlength=self.count)

        gap = self.reported_cost - self.used_cost
        tolerance = REMAINDER_RELATIVE_TOLERANCE * np.maximum(self.reported_cost, self.used_cost)
        # Negative-remainder rule: workloads that cost more than the report raise the origin to their sum.
        self.unreported = np.where(gap < -tolerance, -gap, 0.0)
        self.cost = np.where(gap > tolerance, self.reported_cost, self.used_cost)
        self.quantity = np.maximum(self.reported_quantity, self.used_quantity)
        # The ratio basis is cost; an origin that costs nothing is split by quantity instead.
        self.by_quantity = self.cost == 0
        basis_total = np.where(self.by_quantity, self.quantity, self.cost)
        basis_used = np.where(self.by_quantity, self.used_quantity, self.used_cost)
        self.has_idle = basis_total - basis_used > REMAINDER_RELATIVE_TOLERANCE * basis_total

    @classmethod
    def build(cls, used: Entries, reported: Entries) -> _Origins:
        ends = np.unique(np.concatenate([used.end_us, reported.end_us]))
        used_keys = _keys(used, ends)
        keys = np.unique(np.concatenate([used_keys, _keys(reported, ends)]))
        return cls(keys, ends, reported, used, np.searchsorted(keys, used_keys))


def _keys(entries: Entries, ends: np.ndarray) -> np.ndarray:
    """Sortable origin key: cluster code (clusters sorted by id), then bucket, then charge."""
    bucket = entries.cluster * ends.size + np.searchsorted(ends, entries.end_us)
    return bucket * len(CHARGES) + entries.charge


@dataclass(frozen=True)
class _SplitRows:
    """Output rows before columns, ordered by origin; per origin its workloads, then the unallocated row."""

    origin: np.ndarray
    source_row: np.ndarray  # the workload-costs row; -1 on the unallocated row
    billed: np.ndarray
    ratio: np.ndarray
    usage_quantity: np.ndarray
    unreported: np.ndarray  # NaN: null


def _split_rows(origins: _Origins, used: Entries) -> _SplitRows:
    o = origins.used_origin
    basis_total = np.where(origins.by_quantity, origins.quantity, origins.cost)[o]
    ratio = np.where(origins.by_quantity[o], used.quantity, used.cost) / basis_total
    ratio_used = np.bincount(o, weights=ratio, minlength=origins.count)
    unreported_share = np.where(origins.unreported[o] > 0, origins.unreported[o] * ratio, np.nan)

    idle = np.flatnonzero(origins.has_idle)
    idle_ratio = 1.0 - ratio_used[idle]
    idle_quantity = origins.quantity[idle] - origins.used_quantity[idle] + 0.0

    origin = np.concatenate([o, idle])
    source_row = np.concatenate([used.row, np.full(idle.size, -1, dtype=np.int64)])
    # Per origin: workloads in source order (cluster, namespace, type, name), the unallocated row last.
    order = np.lexsort((source_row, source_row < 0, origin))
    return _SplitRows(
        origin=origin[order],
        source_row=source_row[order],
        billed=np.concatenate([used.cost, origins.cost[idle] - origins.used_cost[idle]])[order],
        ratio=np.concatenate([ratio, idle_ratio])[order],
        usage_quantity=np.concatenate([used.quantity, idle_quantity])[order],
        unreported=np.concatenate([unreported_share, np.full(idle.size, np.nan)])[order],
    )


# --------------------------------------------------------------------------------------------------
# Columns


def _assemble(
    rows: _SplitRows,
    origins: _Origins,
    source: WorkloadSource,
    info: ClusterInfo,
    context: EnrichmentContext,
    options: FocusOptions,
    step_seconds: int,
    listing: Mapping[str, pa.Table] | None,
    stats: PricingStats | None,
) -> pa.Table:
    origin_start = origins.end_us - step_seconds * MICROS_PER_SECOND
    list_price, contracted_price = unit_prices(
        origins.charge,
        origins.cluster,
        origin_start,
        origins.end_us,
        origins.cost,
        origins.quantity,
        info,
        context,
        listing,
        stats,
    )
    o = rows.origin
    cluster = origins.cluster[o]
    charge = origins.charge[o]
    quantity = rows.ratio * origins.quantity[o]
    columns = charge_columns(
        ChargeRows(charge, cluster, origin_start[o], origins.end_us[o], rows.billed, quantity),
        list_price[o],
        contracted_price[o],
        info,
        options,
    )
    n = int(o.size)
    cluster_idx = pa.array(cluster.astype(np.int32))
    charge_idx = pa.array(charge.astype(np.int32))
    allocated = rows.source_row >= 0
    workload_idx = pa.array(np.where(allocated, rows.source_row, 0), pa.int64(), mask=~allocated)
    resource_ids = pc.binary_join_element_wise("castai://", info.id, "")
    cluster_tag_texts = pa.array(
        [tags_json(cluster_tags(c, options.tag_allowlist)) for c in info.clusters], pa.string()
    )
    unit = per_charge([c.pricing_unit for c in CHARGES], charge_idx)
    workload_name = source.text_of_rows("workload_name", workload_idx)  # null on the unallocated rows
    columns |= {
        "AllocatedMethodDetails": _method_details(rows.ratio, unit, rows.usage_quantity),
        "AllocatedMethodId": pa.repeat(pa.scalar(ALLOCATION_METHOD_ID, pa.string()), n),
        "AllocatedResourceId": source.resource_id.take(workload_idx),
        "AllocatedResourceName": workload_name,
        "AllocatedTags": allocated_tags(rows.source_row, cluster, source, info, options.tag_allowlist),
        "ChargeDescription": pc.binary_join_element_wise(
            per_charge([c.description for c in CHARGES], charge_idx),
            info.name.take(cluster_idx),
            " for Kubernetes cluster ",
        ),
        "ResourceId": resource_ids.take(cluster_idx),
        "ResourceName": info.name.take(cluster_idx),
        "ResourceType": pa.repeat(pa.scalar(CLUSTER_RESOURCE_TYPE, pa.string()), n),
        "Tags": cluster_tag_texts.take(cluster_idx),
        "x_CastAINamespace": source.text_of_rows("namespace", workload_idx),
        "x_CastAIWorkloadType": source.text_of_rows("workload_type", workload_idx),
        "x_CastAIWorkloadName": workload_name,  # the same array twice: gathered once
        "x_CastAIUnreportedCost": pa.array(rows.unreported, pa.float64(), mask=np.isnan(rows.unreported)),
    }
    return focus_table(columns, n, options)


def _method_details(ratio: np.ndarray, unit: pa.Array, usage_quantity: np.ndarray) -> pa.Array:
    """`{"Elements":[{"AllocatedRatio":r,"UsageUnit":u,"UsageQuantity":q}]}`; numbers in shortest
    round-trip form, so a reader parses back exactly the float64 the ratio checks use."""
    return pc.binary_join_element_wise(
        '{"Elements":[{"AllocatedRatio":',
        pa.array(ratio, pa.float64()).cast(pa.string()),
        ',"UsageUnit":"',
        unit,
        '","UsageQuantity":',
        pa.array(usage_quantity, pa.float64()).cast(pa.string()),
        "}]}",
        "",
    )
