"""Conservation: every workload's exported Σ BilledCost equals Cast AI's own cost of it, Cast AI's
tier costs agree with their parts, and (split mode) each cluster's exported cost equals its cluster
cost report; a gap would publish a plausible wrong number."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.castai.models import TIERS
from castai_focus_dagster.castai.units import MICROS_PER_HOUR, TIER_PARTS, TIER_SUM_TOLERANCE
from castai_focus_dagster.focus.charges import CHARGES
from castai_focus_dagster.focus.rules.common import RuleResult
from castai_focus_dagster.focus.source import PreparedWorkloads, prepared
from castai_focus_dagster.focus.split_inputs import REMAINDER_RELATIVE_TOLERANCE, report_floats

# Per exported row, the float noise allowed between Σ BilledCost and Cast AI's cost × hours.
CONSERVATION_TOLERANCE_PER_ROW = 1e-6
_WORKLOAD_KEYS = ("cluster_id", "namespace", "workload_type", "workload_name")
_FOCUS_WORKLOAD_KEYS = (
    "x_CastAIClusterId",
    "x_CastAINamespace",
    "x_CastAIWorkloadType",
    "x_CastAIWorkloadName",
)


def _tier_parts_sum(workloads: pa.Table, tier: str) -> pa.ChunkedArray:
    """A tier's hourly compute cost as the sum of its resources (what the FOCUS rows carry)."""
    first, *rest = TIER_PARTS[tier]
    total = workloads[first]
    for part in rest:
        total = pc.add(total, workloads[part])
    return total


def source_costs_by_workload(workloads: pa.Table | PreparedWorkloads) -> pa.Table:
    """Cast AI's own cost per workload: (cpu + ram + gpu + tpu cost of every tier + storage) × bucket hours.

    Duplicate buckets are dropped exactly as the transform drops them (the same prepared batch).
    """
    table = prepared(workloads).table
    hours = pc.divide(pc.cast(table["step_seconds"], pa.float64()), 3600.0)
    hourly = table["storageCost"]
    for tier in TIERS:
        hourly = pc.add(hourly, _tier_parts_sum(table, tier))
    keyed = pa.table(
        {key: pc.cast(table[key], pa.string()) for key in _WORKLOAD_KEYS}
        | {"cost": pc.multiply(hourly, hours)}
    )
    return keyed.group_by(list(_WORKLOAD_KEYS), use_threads=False).aggregate([("cost", "sum")])


def check_castai_consistency(workloads: pa.Table | PreparedWorkloads) -> RuleResult:
    """Cast AI's `cost{Tier}` equals cpu + ram + gpu + tpu cost of that tier, up to 6-decimal rounding.

    Read on every bucket as received (duplicates too): a larger gap means the API contradicts itself.
    """
    table = workloads.raw if isinstance(workloads, PreparedWorkloads) else workloads
    failing = 0
    for tier in TIERS:
        gap = pc.abs(pc.subtract(table[f"cost{tier}"], _tier_parts_sum(table, tier)))
        failing += int(pc.sum(pc.greater(gap, TIER_SUM_TOLERANCE)).as_py() or 0)
    return RuleResult(
        rule="castai_cost_consistency",
        passed=failing == 0,
        failing_rows=failing,
        message="Cast AI cost{Tier} equals the sum of its cpu, ram, gpu and tpu costs (±5e-6 per hour)",
    )


def check_conservation(focus: pa.Table, workloads: pa.Table | PreparedWorkloads) -> RuleResult:
    """Every workload's Σ BilledCost equals its Cast AI cost; no FOCUS row belongs to an unknown workload."""
    return conservation(focus, source_costs_by_workload(workloads))[0]


def conservation(focus: pa.Table, source: pa.Table) -> tuple[RuleResult, int]:
    """The conservation rule against per-workload source costs, and the number of exported workloads."""
    exported = (
        pa.table(
            {
                key: pc.cast(focus[col], pa.string())
                for key, col in zip(_WORKLOAD_KEYS, _FOCUS_WORKLOAD_KEYS, strict=True)
            }
            | {"billed": focus["BilledCost"], "rows": pa.array(np.ones(focus.num_rows, dtype=np.int64))}
        )
        .group_by(list(_WORKLOAD_KEYS), use_threads=False)
        .aggregate([("billed", "sum"), ("rows", "sum")])
    )
    joined = source.join(exported, keys=list(_WORKLOAD_KEYS), join_type="full outer", use_threads=False)
    src = np.nan_to_num(joined["cost_sum"].to_numpy(zero_copy_only=False).astype(float))
    out = np.nan_to_num(joined["billed_sum"].to_numpy(zero_copy_only=False).astype(float))
    rows = np.nan_to_num(joined["rows_sum"].to_numpy(zero_copy_only=False).astype(float))
    bad = np.abs(src - out) > CONSERVATION_TOLERANCE_PER_ROW * np.maximum(rows, 1.0)
    failing = int(bad.sum())
    message = "Σ BilledCost per workload equals Cast AI cost (compute + storage) × hours"
    if failing:
        i = int(np.argmax(bad))
        message += (
            f"; first mismatch {joined['cluster_id'][i]}/{joined['namespace'][i]}/"
            f"{joined['workload_type'][i]}/{joined['workload_name'][i]}: "
            f"exported {out[i]:.6f} vs Cast AI {src[i]:.6f}"
        )
    rule = RuleResult(rule="conservation", passed=failing == 0, failing_rows=failing, message=message)
    return rule, exported.num_rows


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
                "hours": pc.divide(pc.cast(period_us, pa.float64()), float(MICROS_PER_HOUR)),
                "rows": pa.array(np.ones(focus.num_rows, dtype=np.int64)),
            }
        )
        .group_by(["cluster", "end"], use_threads=False)
        .aggregate([("billed", "sum"), ("unreported", "sum"), ("hours", "max"), ("rows", "sum")])
    )
    joined = _report_rates(cluster_costs).join(
        exported, keys=["cluster", "end"], join_type="full outer", use_threads=False
    )

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
        rates.append(sum((report_floats(report, c.cost_field) for c in CHARGES), np.zeros(report.num_rows)))
    return pa.table(
        {
            "cluster": pa.array(np.concatenate(clusters) if clusters else [], pa.string()),
            "end": pa.array(np.concatenate(ends) if ends else [], pa.int64()),
            "rate": pa.array(np.concatenate(rates) if rates else [], pa.float64()),
        }
    )
