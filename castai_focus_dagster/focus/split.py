"""FOCUS 1.3 split cost allocation (`FOCUS_ALLOCATION_MODE=split`): cluster charges split to workloads.

Why: FinOps teams want the cluster's own compute and storage charge, its allocation to workloads
and the idle capacity nobody requested in one dataset that reconciles. The method is documented in
docs/allocation.md (the documentation FOCUS requires for `ALLOCATION_METHOD_ID`).

- Origin charge: one per cluster × charge period × (resource, tier) of `CHARGES`, from the cluster
  cost report (`/v1/cost-reports/clusters/{id}/cost`): `{resource}Cost{Tier} × h` and
  `{quantity}{Tier} × h`, the report's timestamp being the bucket end as for workload costs.
  It is not emitted: per the FOCUS 1.3 glossary the origin is derived from its allocated charges,
  so Σ BilledCost over the dataset is the clusters' cost, nothing counted twice.
- Allocated charge: one per workload with a non-zero cost or quantity for that charge (exactly the
  rows workload mode emits), BilledCost = the workload's Cast AI cost, AllocatedRatio = that cost ÷
  the origin cost (quantity ÷ origin quantity when the origin costs nothing), quantities = ratio ×
  origin quantity, so unit prices are the origin's and ListCost = ListUnitPrice × PricingQuantity.
- Unallocated charge (idle capacity): origin − Σ allocated, AllocatedResourceId null; omitted when
  the remainder is zero (within `REMAINDER_RELATIVE_TOLERANCE`, the float noise of summing).
- Workloads costing more than their cluster (rounding, late data): the origin is raised to Σ
  workloads, so every workload keeps its Cast AI cost (= workload mode); the excess is carried,
  pro rata, in `x_CastAIUnreportedCost`. No row is ever negative.

Pure and vectorised (numpy/pyarrow); Python loops run over clusters and distinct label sets only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.castai.discounts import PricingStats
from castai_focus_dagster.castai.models import Cluster, EnrichmentContext
from castai_focus_dagster.focus.conformance import RuleResult
from castai_focus_dagster.focus.schema import FOCUS_COLUMNS, FOCUS_SCHEMA
from castai_focus_dagster.focus.transform import (
    CHARGES,
    ChargeRows,
    ClusterInfo,
    FocusOptions,
    WorkloadSource,
    allowed_labels,
    charge_columns,
    cluster_tags,
    focus_table,
    per_charge,
    prepare_workloads,
    tags_json,
    unit_prices,
)

ALLOCATION_METHOD_ID = "castai-request-based-v1"
CLUSTER_RESOURCE_TYPE = "Kubernetes Cluster"
CLUSTER_COST_ENDPOINT = "/v1/cost-reports/clusters/{clusterId}/cost"
# A remainder within this share of the origin is float noise of summing workload costs, not capacity.
REMAINDER_RELATIVE_TOLERANCE = 1e-9
RATIO_TOLERANCE = 1e-9
CONSERVATION_TOLERANCE_PER_ROW = 1e-6

# Columns of a split-mode row that describe the workload it is allocated to; all others describe the origin.
ALLOCATION_COLUMNS = (
    "AllocatedMethodDetails",
    "AllocatedMethodId",
    "AllocatedResourceId",
    "AllocatedResourceName",
    "AllocatedTags",
    "x_CastAINamespace",
    "x_CastAIWorkloadType",
    "x_CastAIWorkloadName",
)
_NON_SUMMABLE_DECIMALS = frozenset(
    {
        "ListUnitPrice",
        "ContractedUnitPrice",
        "PricingCurrencyListUnitPrice",
        "PricingCurrencyContractedUnitPrice",
    }
)
# Costs and quantities: the allocated and unallocated rows of an origin add up to it in each of them.
SUMMABLE_COLUMNS = tuple(
    c.name for c in FOCUS_COLUMNS if c.focus_type == "Decimal" and c.name not in _NON_SUMMABLE_DECIMALS
)
# Everything else must be identical on every row of an origin (FOCUS: dimensions and unit prices).
DIMENSION_COLUMNS = tuple(
    c.name for c in FOCUS_COLUMNS if c.name not in ALLOCATION_COLUMNS and c.name not in SUMMABLE_COLUMNS
)
_ORIGIN_KEY = ("ResourceId", "SkuPriceId", "ChargePeriodStart", "ChargePeriodEnd")

_MICROS_PER_SECOND = 1_000_000
_NUMBER = r"[0-9][0-9.eE+-]*"
_DETAILS = (
    r'^\{"Elements":\[\{"AllocatedRatio":(?P<ratio>' + _NUMBER + r'),"UsageUnit":"(?P<unit>[^"\\]+)",'
    r'"UsageQuantity":(?P<quantity>' + _NUMBER + r")\}\]\}$"
)


def to_focus_split(
    workloads: pa.Table,
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
    source = WorkloadSource(prepare_workloads(workloads))
    cluster_ids = _cluster_ids(source, cluster_costs, clusters)
    if not cluster_ids:
        return FOCUS_SCHEMA.empty_table()
    info = ClusterInfo.build(cluster_ids, clusters, context, options)
    code_of = {cid: i for i, cid in enumerate(cluster_ids)}
    hours = step_seconds / 3600.0
    used = _workload_entries(source, code_of, step_seconds, hours)
    reported = _report_entries(cluster_costs, code_of, hours)
    _check_grid(source, cluster_costs, step_seconds)
    origins = _Origins.build(used, reported)
    if origins.count == 0:
        return FOCUS_SCHEMA.empty_table()
    rows = _split_rows(origins, used)
    return _assemble(rows, origins, source, info, context, options, step_seconds, listing, stats)


# --------------------------------------------------------------------------------------------------
# Inputs as flat entries: one per (cluster, bucket end, charge)


class _Entries:
    """Charges of one input: cluster code, bucket end (µs), charge index, cost and quantity (× hours)."""

    def __init__(
        self,
        cluster: np.ndarray,
        end_us: np.ndarray,
        charge: np.ndarray,
        cost: np.ndarray,
        quantity: np.ndarray,
        row: np.ndarray | None = None,
    ):
        self.cluster = cluster.astype(np.int64)
        self.end_us = end_us.astype(np.int64)
        self.charge = charge.astype(np.int64)
        self.cost = cost
        self.quantity = quantity
        # Workload entries: the workload-costs row (workload × bucket) each entry comes from.
        self.row = np.zeros(0, dtype=np.int64) if row is None else row


def _cluster_ids(
    source: WorkloadSource, cluster_costs: Mapping[str, pa.Table], clusters: Mapping[str, Cluster]
) -> list[str]:
    without_report = sorted(set(source.cluster_ids) - set(cluster_costs))
    if without_report:
        raise ValueError(
            f"cluster(s) {', '.join(without_report)} have workload costs but no cluster cost report "
            f"({CLUSTER_COST_ENDPOINT}); split mode needs both for every cluster"
        )
    ids = sorted(set(source.cluster_ids) | set(cluster_costs))
    unknown = [cid for cid in ids if cid not in clusters]
    if unknown:
        raise ValueError(
            f"cluster cost reports reference cluster(s) {', '.join(unknown)} missing from the cluster list"
        )
    return ids


def _workload_entries(
    source: WorkloadSource, code_of: Mapping[str, int], step_seconds: int, hours: float
) -> _Entries:
    """Workload charges exactly as workload mode computes them (same nonzero rule, same float products)."""
    if source.table.num_rows == 0:
        empty = np.zeros(0)
        return _Entries(empty, empty, empty, empty, empty, np.zeros(0, dtype=np.int64))

    def cluster_of(row: int) -> str:
        return source.cluster_ids[source.cluster_entry[row]]

    wrong = source.step_seconds != step_seconds
    if wrong.any():
        i = int(np.argmax(wrong))
        raise ValueError(
            f"cluster {cluster_of(i)}: workload costs have step_seconds {int(source.step_seconds[i])}, "
            f"the cluster cost report was requested with {step_seconds}"
        )
    cost = np.column_stack([source.metric(c.cost_field) for c in CHARGES])
    quantity = np.column_stack([source.metric(c.quantity_field) for c in CHARGES])
    invalid = _first_invalid(cost, quantity)
    if invalid:
        raise _invalid_metric(
            cluster_of(invalid[0]), "/v1/cost-reports/clusters/{clusterId}/workload-costs", invalid
        )
    row, charge = np.nonzero((cost != 0) | (quantity != 0))
    codes = np.array([code_of[cid] for cid in source.cluster_ids], dtype=np.int64)
    return _Entries(
        codes[source.cluster_entry[row]],
        source.timestamp_us[row],
        charge,
        cost[row, charge] * hours,
        quantity[row, charge] * hours,
        row.astype(np.int64),
    )


def _report_entries(
    cluster_costs: Mapping[str, pa.Table], code_of: Mapping[str, int], hours: float
) -> _Entries:
    """Every non-zero (bucket, charge) of every cluster cost report."""
    needed = ["timestamp", *(c.cost_field for c in CHARGES), *(c.quantity_field for c in CHARGES)]
    parts: list[_Entries] = []
    for cluster_id in sorted(cluster_costs):
        report = cluster_costs[cluster_id]
        missing = [name for name in needed if name not in report.column_names]
        if missing:
            raise ValueError(
                f"cluster {cluster_id}: cluster cost report ({CLUSTER_COST_ENDPOINT}) lacks field(s) "
                f"{', '.join(missing)}"
            )
        end_us = report.column("timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
        distinct, counts = np.unique(end_us, return_counts=True)
        if (counts > 1).any():
            moment = np.datetime64(int(distinct[np.argmax(counts > 1)]), "us")
            raise ValueError(
                f"cluster {cluster_id}: cluster cost report ({CLUSTER_COST_ENDPOINT}) repeats bucket "
                f"{moment}Z"
            )
        cost = np.column_stack([_floats(report, c.cost_field) for c in CHARGES]).reshape(-1, len(CHARGES))
        quantity = np.column_stack([_floats(report, c.quantity_field) for c in CHARGES]).reshape(
            -1, len(CHARGES)
        )
        invalid = _first_invalid(cost, quantity)
        if invalid:
            raise _invalid_metric(cluster_id, CLUSTER_COST_ENDPOINT, invalid)
        row, charge = np.nonzero((cost != 0) | (quantity != 0))
        parts.append(
            _Entries(
                np.full(row.size, code_of[cluster_id]),
                end_us[row],
                charge,
                cost[row, charge] * hours,
                quantity[row, charge] * hours,
            )
        )
    if not parts:
        empty = np.zeros(0)
        return _Entries(empty, empty, empty, empty, empty)
    return _Entries(
        *(
            np.concatenate([getattr(p, name) for p in parts])
            for name in ("cluster", "end_us", "charge", "cost", "quantity")
        )
    )


def _floats(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)


def _first_invalid(cost: np.ndarray, quantity: np.ndarray) -> tuple[int, str, float] | None:
    """(row, field, value) of the first negative or non-finite metric: it would turn ratios negative."""
    for matrix, is_cost in ((cost, True), (quantity, False)):
        bad = ~(np.isfinite(matrix) & (matrix >= 0))
        if bad.any():
            row, charge = (int(v[0]) for v in np.nonzero(bad))
            field = CHARGES[charge].cost_field if is_cost else CHARGES[charge].quantity_field
            return row, field, float(matrix[row, charge])
    return None


def _invalid_metric(cluster_id: str, endpoint: str, invalid: tuple[int, str, float]) -> ValueError:
    _, field, value = invalid
    return ValueError(
        f"cluster {cluster_id}: {endpoint} field {field} must be a finite number >= 0, got {value!r}"
    )


def _check_grid(source: WorkloadSource, cluster_costs: Mapping[str, pa.Table], step_seconds: int) -> None:
    """Both inputs must share one bucket grid, or no workload bucket would meet its cluster bucket."""
    step_us = step_seconds * _MICROS_PER_SECOND
    inputs = [
        ("/v1/cost-reports/clusters/{clusterId}/workload-costs", source.cluster_id_text, source.timestamp_us)
    ]
    for cluster_id, report in sorted(cluster_costs.items()):
        ends = report.column("timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
        inputs.append((CLUSTER_COST_ENDPOINT, pa.repeat(pa.scalar(cluster_id), ends.size), ends))
    phases = [(endpoint, owners, ends % step_us) for endpoint, owners, ends in inputs if ends.size]
    if not phases:
        return
    reference = phases[0][2][0]
    for endpoint, owners, phase in phases:
        off = phase != reference
        if off.any():
            raise ValueError(
                f"cluster {owners[int(np.argmax(off))].as_py()}: bucket timestamps of {endpoint} are not on "
                f"the {step_seconds} s grid of the other inputs (workload and cluster buckets must match)"
            )


# --------------------------------------------------------------------------------------------------
# Origins and the split


class _Origins:
    """One origin charge per (cluster, bucket end, charge), sorted by cluster id, period and charge."""

    def __init__(
        self, keys: np.ndarray, ends: np.ndarray, reported: _Entries, used: _Entries, used_origin: np.ndarray
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
    def build(cls, used: _Entries, reported: _Entries) -> _Origins:
        ends = np.unique(np.concatenate([used.end_us, reported.end_us]))
        used_keys = _keys(used, ends)
        keys = np.unique(np.concatenate([used_keys, _keys(reported, ends)]))
        return cls(keys, ends, reported, used, np.searchsorted(keys, used_keys))


def _keys(entries: _Entries, ends: np.ndarray) -> np.ndarray:
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


def _split_rows(origins: _Origins, used: _Entries) -> _SplitRows:
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
    origin_start = origins.end_us - step_seconds * _MICROS_PER_SECOND
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
    columns |= {
        "AllocatedMethodDetails": _method_details(rows.ratio, unit, rows.usage_quantity),
        "AllocatedMethodId": pa.repeat(pa.scalar(ALLOCATION_METHOD_ID, pa.string()), n),
        "AllocatedResourceId": source.resource_id.take(workload_idx),
        "AllocatedResourceName": source.text("workload_name").take(workload_idx),
        "AllocatedTags": _allocated_tags(rows, cluster, source, info, options.tag_allowlist),
        "ChargeDescription": pc.binary_join_element_wise(
            per_charge([c.description for c in CHARGES], charge_idx),
            info.name.take(cluster_idx),
            " for Kubernetes cluster ",
        ),
        "ResourceId": resource_ids.take(cluster_idx),
        "ResourceName": info.name.take(cluster_idx),
        "ResourceType": pa.repeat(pa.scalar(CLUSTER_RESOURCE_TYPE, pa.string()), n),
        "Tags": cluster_tag_texts.take(cluster_idx),
        "x_CastAINamespace": source.text("namespace").take(workload_idx),
        "x_CastAIWorkloadType": source.text("workload_type").take(workload_idx),
        "x_CastAIWorkloadName": source.text("workload_name").take(workload_idx),
        "x_CastAIUnreportedCost": pa.array(rows.unreported, pa.float64(), mask=np.isnan(rows.unreported)),
    }
    return focus_table(columns, n)


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


def _allocated_tags(
    rows: _SplitRows,
    cluster: np.ndarray,
    source: WorkloadSource,
    info: ClusterInfo,
    allowlist: tuple[str, ...],
) -> pa.Array:
    """Workload labels minus keys already in Tags, serialized once per distinct (cluster, labels)."""
    label_texts, label_entry = source.label_entries()
    allocated = rows.source_row >= 0
    combo = np.where(
        allocated,
        cluster * (len(label_texts) + 1) + label_entry[np.where(allocated, rows.source_row, 0)] + 1,
        -1,
    )
    distinct, inverse = np.unique(combo, return_inverse=True)
    values: list[str | None] = []
    for key in distinct.tolist():
        if key < 0:
            values.append(None)
            continue
        owner = info.clusters[key // (len(label_texts) + 1)]
        label_index = key % (len(label_texts) + 1) - 1
        labels = allowed_labels(label_texts[label_index] if label_index >= 0 else None, owner.id, allowlist)
        tag_keys = cluster_tags(owner, allowlist).keys()
        values.append(tags_json({k: v for k, v in labels.items() if k not in tag_keys}))
    return pa.array(values, pa.string()).take(pa.array(inverse.reshape(-1).astype(np.int64)))


# --------------------------------------------------------------------------------------------------
# Split-specific audit (FOCUS 1.3 DataGeneratorCalculatedSplitCostAllocationHandling)


def check_split_allocation(table: pa.Table) -> list[RuleResult]:
    """The split rules on a split-mode table; origins are derived by grouping on `_ORIGIN_KEY`.

    Because the origin row is not emitted, "allocated rows sum to the origin" is checked as: every row
    carries its AllocatedRatio of every summable column's origin total, and the ratios sum to 1.
    """
    origin = _origin_index(table)
    ratio, unit, usage_quantity = _parsed_details(table)
    return [
        _rule(
            "split-method-details",
            _details_failures(table, ratio, unit, usage_quantity),
            _DETAILS_REQUIREMENT,
        ),
        _rule(
            "split-ratios-sum-to-one",
            _ratio_failures(origin, ratio),
            f"AllocatedRatio of the rows of every origin charge sums to 1 (±{RATIO_TOLERANCE:g})",
        ),
        _rule(
            "split-rows-sum-to-origin",
            _sum_failures(table, origin, ratio),
            "every summable column (costs, quantities) of a row is its AllocatedRatio of the origin total",
        ),
        _rule(
            "split-dimensions-match-origin",
            _dimension_failures(table, origin),
            "dimension columns and unit prices are identical on every row of an origin charge",
        ),
        _rule(
            "split-allocated-tags-disjoint",
            _tag_failures(table),
            "AllocatedTags repeats no key of Tags",
        ),
        _rule(
            "split-unallocated-rows",
            _unallocated_failures(table, origin),
            "AllocatedResourceId is null exactly on the unallocated row (no workload columns, at most one "
            "per origin) and unique among an origin's allocated rows",
        ),
    ]


def check_split_conservation(focus: pa.Table, cluster_costs: Mapping[str, pa.Table]) -> RuleResult:
    """Σ BilledCost per cluster and charge period equals the cluster cost report's cost × hours, plus the
    documented excess of workloads over their cluster (`x_CastAIUnreportedCost`)."""
    period_us = pc.subtract(
        focus.column("ChargePeriodEnd").cast(pa.int64()), focus.column("ChargePeriodStart").cast(pa.int64())
    )
    exported = (
        pa.table(
            {
                "cluster": pc.cast(focus.column("x_CastAIClusterId"), pa.string()),
                "end": focus.column("ChargePeriodEnd").cast(pa.int64()),
                "billed": focus.column("BilledCost"),
                "unreported": pc.fill_null(focus.column("x_CastAIUnreportedCost"), 0.0),
                "hours": pc.divide(pc.cast(period_us, pa.float64()), 3600.0 * _MICROS_PER_SECOND),
                "rows": pa.array(np.ones(focus.num_rows, dtype=np.int64)),
            }
        )
        .group_by(["cluster", "end"])
        .aggregate([("billed", "sum"), ("unreported", "sum"), ("hours", "max"), ("rows", "sum")])
    )
    joined = _report_rates(cluster_costs).join(exported, keys=["cluster", "end"], join_type="full outer")

    def values(name: str) -> np.ndarray:
        return np.nan_to_num(joined.column(name).to_numpy(zero_copy_only=False).astype(np.float64))

    def present(name: str) -> np.ndarray:
        return pc.is_valid(joined.column(name)).to_numpy(zero_copy_only=False)

    billed, unreported, rate = values("billed_sum"), values("unreported_sum"), values("rate")
    reported = rate * values("hours_max")
    exported_rows, in_report = present("rows_sum"), present("rate")
    tolerance = CONSERVATION_TOLERANCE_PER_ROW * np.maximum(values("rows_sum"), 1.0) + (
        2 * REMAINDER_RELATIVE_TOLERANCE * (reported + unreported)
    )
    unknown_cluster = exported_rows & ~pc.is_in(
        joined.column("cluster"), value_set=pa.array(list(cluster_costs), pa.string())
    ).to_numpy(zero_copy_only=False)
    bad = unknown_cluster | np.where(
        exported_rows, np.abs(billed - reported - unreported) > tolerance, rate > 0
    )
    message = (
        "Σ BilledCost per cluster and charge period equals the cluster cost report × hours "
        "(+ x_CastAIUnreportedCost)"
    )
    if bad.any():
        i = int(np.argmax(bad))
        if unknown_cluster[i]:
            detail = "the cluster has no cluster cost report"
        elif not exported_rows[i]:
            detail = "the cluster report has cost but no row was exported"
        elif not in_report[i]:
            detail = f"exported {billed[i]:.6f} for a bucket the cluster report lacks"
        else:
            detail = f"exported {billed[i]:.6f} vs report {reported[i]:.6f} + unreported {unreported[i]:.6f}"
        cluster = joined.column("cluster")[i].as_py()
        moment = np.datetime64(int(joined.column("end")[i].as_py()), "us")
        message += f"; first mismatch cluster {cluster} bucket ending {moment}Z: {detail}"
    return RuleResult("split-conservation", not bad.any(), int(bad.sum()), message)


def _report_rates(cluster_costs: Mapping[str, pa.Table]) -> pa.Table:
    """(cluster, bucket end, hourly cost of the bucket's charges) of every cluster cost report."""
    clusters, ends, rates = [], [], []
    for cluster_id, report in sorted(cluster_costs.items()):
        clusters.append(np.full(report.num_rows, cluster_id, dtype=object))
        ends.append(report.column("timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy())
        rates.append(sum((_floats(report, c.cost_field) for c in CHARGES), np.zeros(report.num_rows)))
    return pa.table(
        {
            "cluster": pa.array(np.concatenate(clusters) if clusters else [], pa.string()),
            "end": pa.array(np.concatenate(ends) if ends else [], pa.int64()),
            "rate": pa.array(np.concatenate(rates) if rates else [], pa.float64()),
        }
    )


_DETAILS_REQUIREMENT = (
    f"AllocatedMethodId is {ALLOCATION_METHOD_ID!r} and AllocatedMethodDetails is "
    '{"Elements":[{"AllocatedRatio":r,"UsageUnit":PricingUnit,"UsageQuantity":q}]} with 0 <= r <= 1, q >= 0'
)


def _rule(name: str, failures: tuple[np.ndarray, str], requirement: str) -> RuleResult:
    failing, sample = failures
    count = int(np.count_nonzero(failing))
    message = requirement if count == 0 else f"{count} row(s) violate: {requirement}; e.g. {sample}"
    return RuleResult(name, count == 0, count, message)


def _sample(table: pa.Table, failing: np.ndarray, columns: tuple[str, ...]) -> str:
    if not failing.any():
        return ""
    i = int(np.argmax(failing))
    return f"row {i}: " + ", ".join(f"{c}={table.column(c)[i].as_py()!r}" for c in columns)


def _codes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Integer codes equal exactly when the values are (null: -1), for any column type."""
    if pa.types.is_floating(column.type):
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        return np.where(np.isnan(values), np.int64(-1), (values + 0.0).view(np.int64))
    if pa.types.is_timestamp(column.type) or pa.types.is_integer(column.type):
        return pc.fill_null(column.cast(pa.int64()), -1).to_numpy(zero_copy_only=False).astype(np.int64)
    encoded = pc.dictionary_encode(column)
    indices = encoded.combine_chunks().indices if isinstance(encoded, pa.ChunkedArray) else encoded.indices
    return pc.fill_null(indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _dense(codes: np.ndarray) -> np.ndarray:
    """0..k-1 codes in value order (small enough to combine two into one int64)."""
    return np.unique(codes, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _pair(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Dense codes of (first, second) pairs, both dense codes."""
    return _dense(first * (int(second.max(initial=0)) + 1) + second)


def _origin_index(table: pa.Table) -> np.ndarray:
    """Origin number 0..n-1 of every row, from the columns that identify an origin charge."""
    origin = np.zeros(table.num_rows, dtype=np.int64)
    for name in _ORIGIN_KEY:
        origin = _pair(origin, _dense(_codes(table.column(name))))
    return origin


def _parsed_details(table: pa.Table) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """(AllocatedRatio, UsageUnit, UsageQuantity) per row; NaN / null where the JSON is not our shape."""
    parsed = pc.extract_regex(table.column("AllocatedMethodDetails").combine_chunks(), _DETAILS)

    def number(name: str) -> np.ndarray:
        return pc.cast(parsed.field(name), pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)

    return number("ratio"), parsed.field("unit"), number("quantity")


def _details_failures(
    table: pa.Table, ratio: np.ndarray, unit: pa.Array, usage_quantity: np.ndarray
) -> tuple[np.ndarray, str]:
    method_ok = pc.fill_null(pc.equal(table.column("AllocatedMethodId"), ALLOCATION_METHOD_ID), False)
    unit_ok = pc.fill_null(pc.equal(unit, table.column("PricingUnit").combine_chunks()), False)
    with np.errstate(invalid="ignore"):
        ratio_ok = (ratio >= 0) & (ratio <= 1) & (usage_quantity >= 0)
    failing = ~(method_ok.to_numpy(zero_copy_only=False) & unit_ok.to_numpy(zero_copy_only=False) & ratio_ok)
    return failing, _sample(table, failing, ("AllocatedMethodId", "AllocatedMethodDetails", "PricingUnit"))


def _ratio_failures(origin: np.ndarray, ratio: np.ndarray) -> tuple[np.ndarray, str]:
    total = np.bincount(
        origin, weights=np.nan_to_num(ratio, nan=np.inf), minlength=origin.max(initial=-1) + 1
    )
    failing = ~(np.abs(total - 1.0) <= RATIO_TOLERANCE)[origin]
    return (
        failing,
        f"ratios of an origin sum to {total[origin[np.argmax(failing)]]!r}" if failing.any() else "",
    )


def _sum_failures(table: pa.Table, origin: np.ndarray, ratio: np.ndarray) -> tuple[np.ndarray, str]:
    failing = np.zeros(table.num_rows, dtype=bool)
    offenders = []
    for name in SUMMABLE_COLUMNS:
        values = np.nan_to_num(table.column(name).to_numpy(zero_copy_only=False).astype(np.float64))
        total = np.bincount(origin, weights=values, minlength=origin.max(initial=-1) + 1)[origin]
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(values - ratio * total) <= REMAINDER_RELATIVE_TOLERANCE * np.abs(total) + 1e-12)
        if bad.any():
            offenders.append(name)
            failing |= bad
    return failing, "in " + ", ".join(offenders) if offenders else ""


def _dimension_failures(table: pa.Table, origin: np.ndarray) -> tuple[np.ndarray, str]:
    """A column varies within an origin when its smallest and largest code there differ (one sort)."""
    failing = np.zeros(table.num_rows, dtype=bool)
    if table.num_rows == 0:
        return failing, ""
    order = np.argsort(origin, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(origin[order]) != 0])  # origins are 0..n-1, in order
    offenders = []
    for name in DIMENSION_COLUMNS:
        codes = _codes(table.column(name))[order]
        varying = np.minimum.reduceat(codes, starts) != np.maximum.reduceat(codes, starts)
        if varying.any():
            offenders.append(name)
            failing |= varying[origin]
    return failing, "varying " + ", ".join(offenders) if offenders else ""


def _tag_failures(table: pa.Table) -> tuple[np.ndarray, str]:
    """Parsed once per distinct (Tags, AllocatedTags) pair: both repeat across buckets and resources."""
    tags, allocated = (
        pc.dictionary_encode(table.column(n)).combine_chunks() for n in ("Tags", "AllocatedTags")
    )
    tag_code, allocated_code = (
        pc.fill_null(a.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
        for a in (tags, allocated)
    )
    width = len(allocated.dictionary) + 1
    pairs, inverse = np.unique(tag_code * width + allocated_code, return_inverse=True)
    tag_texts, allocated_texts = tags.dictionary.to_pylist(), allocated.dictionary.to_pylist()
    clash: list[str] = []
    bad_pairs = np.zeros(len(pairs), dtype=bool)
    for p, pair in enumerate(pairs.tolist()):
        t, a = pair // width - 1, pair % width - 1
        if t < 0 or a < 0:
            continue
        common = set(_object(tag_texts[t])) & set(_object(allocated_texts[a]))
        if common:
            bad_pairs[p] = True
            clash.append(sorted(common)[0])
    return bad_pairs[inverse.reshape(-1)], f"key {clash[0]!r} in both" if clash else ""


def _object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _unallocated_failures(table: pa.Table, origin: np.ndarray) -> tuple[np.ndarray, str]:
    def valid(name: str) -> np.ndarray:
        return pc.is_valid(table.column(name)).to_numpy(zero_copy_only=False)

    allocated = valid("AllocatedResourceId")
    failing = valid("AllocatedResourceName") != allocated
    failing |= ~allocated & valid("AllocatedTags")
    for name in ("x_CastAINamespace", "x_CastAIWorkloadType", "x_CastAIWorkloadName"):
        failing |= valid(name) != allocated
    n_origins = origin.max(initial=-1) + 1
    failing |= (np.bincount(origin[~allocated], minlength=n_origins) > 1)[origin] & ~allocated
    per_workload = _pair(origin, _dense(_codes(table.column("AllocatedResourceId"))))
    failing |= allocated & (
        np.bincount(per_workload[allocated], minlength=per_workload.size)[per_workload] > 1
    )
    return failing, _sample(table, failing, ("AllocatedResourceId", "AllocatedResourceName", "AllocatedTags"))
