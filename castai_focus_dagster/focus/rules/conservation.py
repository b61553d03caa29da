"""Conservation: every workload's exported Σ BilledCost equals Cast AI's own cost of it, and Cast AI's
tier costs agree with their parts; a gap would publish a plausible wrong number."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.castai.models import TIERS
from castai_focus_dagster.castai.units import TIER_PARTS, TIER_SUM_TOLERANCE
from castai_focus_dagster.focus.rules.common import RuleResult
from castai_focus_dagster.focus.source import PreparedWorkloads, prepared

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
    return keyed.group_by(list(_WORKLOAD_KEYS)).aggregate([("cost", "sum")])


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
        .group_by(list(_WORKLOAD_KEYS))
        .aggregate([("billed", "sum"), ("rows", "sum")])
    )
    joined = source.join(exported, keys=list(_WORKLOAD_KEYS), join_type="full outer")
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
