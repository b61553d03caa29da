"""The audit of write-audit-publish: checks a day's FOCUS rows before they replace the published object.

Two families of rules, both vectorised:
- FOCUS conformance (`conformance.check_conformance`): the FOCUS 1.3 rules the exporter relies on;
- conservation (DESIGN §7.1): per workload, Σ BilledCost equals Cast AI's cost (compute + storage)
  × bucket hours, within $0.000001 per row.
Pure code: no Dagster import, so the same audit runs in tests, benchmarks and asset checks.

A day is audited one cluster batch at a time (every rule is local to a row or to a workload, and a
workload belongs to one cluster); `combine_reports` adds the batches' reports into the day's report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.castai.models import TIERS
from castai_focus_dagster.focus.conformance import RuleResult, check_conformance, combine_results
from castai_focus_dagster.focus.transform import prepare_workloads

CONSERVATION_TOLERANCE_PER_ROW = 1e-6
# Four components each rounded to 6 decimals by Cast AI: their sum may differ from cost{Tier} by < 4 × 0.5e-6.
RATE_ROUNDING_TOLERANCE = 5e-6
COST_COLUMNS = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost")
_WORKLOAD_KEYS = ("cluster_id", "namespace", "workload_type", "workload_name")
_FOCUS_WORKLOAD_KEYS = (
    "x_CastAIClusterId",
    "x_CastAINamespace",
    "x_CastAIWorkloadType",
    "x_CastAIWorkloadName",
)


@dataclass(frozen=True)
class AuditReport:
    results: list[RuleResult]
    totals: dict[str, float] = field(default_factory=dict)
    source_total: float = 0.0
    workloads: int = 0
    clusters: int = 0

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[RuleResult]:
        return [r for r in self.results if not r.passed]

    def summary(self) -> str:
        if self.passed:
            return f"{len(self.results)} rules passed"
        return "; ".join(f"{r.rule}: {r.message} ({r.failing_rows} rows)" for r in self.failures)


def cost_totals(focus: pa.Table) -> dict[str, float]:
    return {name: float(pc.sum(focus[name]).as_py() or 0.0) for name in COST_COLUMNS}


def _hourly_compute(workloads: pa.Table, tier: str) -> pa.ChunkedArray:
    """A tier's hourly compute cost as the sum of its resources (what the FOCUS rows carry)."""
    total = workloads[f"cpuCost{tier}"]
    for resource in ("ramCost", "gpuCost", "tpuCost"):
        total = pc.add(total, workloads[f"{resource}{tier}"])
    return total


def source_costs_by_workload(workloads: pa.Table) -> pa.Table:
    """Cast AI's own cost per workload: (cpu + ram + gpu + tpu cost of every tier + storage) × bucket hours.

    Duplicate buckets are dropped exactly as the transform drops them (`prepare_workloads`).
    """
    workloads = prepare_workloads(workloads)
    hours = pc.divide(pc.cast(workloads["step_seconds"], pa.float64()), 3600.0)
    hourly = workloads["storageCost"]
    for tier in TIERS:
        hourly = pc.add(hourly, _hourly_compute(workloads, tier))
    keyed = pa.table(
        {key: pc.cast(workloads[key], pa.string()) for key in _WORKLOAD_KEYS}
        | {"cost": pc.multiply(hourly, hours)}
    )
    return keyed.group_by(list(_WORKLOAD_KEYS)).aggregate([("cost", "sum")])


def check_castai_consistency(workloads: pa.Table) -> RuleResult:
    """Cast AI's `cost{Tier}` equals cpu + ram + gpu + tpu cost of that tier, up to 6-decimal rounding.

    A larger gap means the API contradicts itself; publishing either figure would be silently wrong.
    """
    failing = 0
    for tier in TIERS:
        gap = pc.abs(pc.subtract(workloads[f"cost{tier}"], _hourly_compute(workloads, tier)))
        failing += int(pc.sum(pc.greater(gap, RATE_ROUNDING_TOLERANCE)).as_py() or 0)
    return RuleResult(
        rule="castai_cost_consistency",
        passed=failing == 0,
        failing_rows=failing,
        message="Cast AI cost{Tier} equals the sum of its cpu, ram, gpu and tpu costs (±5e-6 per hour)",
    )


def check_conservation(focus: pa.Table, workloads: pa.Table) -> RuleResult:
    """Every workload's Σ BilledCost equals its Cast AI cost; no FOCUS row belongs to an unknown workload."""
    return _conservation(focus, source_costs_by_workload(workloads))[0]


def _conservation(focus: pa.Table, source: pa.Table) -> tuple[RuleResult, int]:
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


def audit_focus(focus: pa.Table, workloads: pa.Table) -> AuditReport:
    source = source_costs_by_workload(workloads)
    conservation, exported_workloads = _conservation(focus, source)
    return AuditReport(
        results=[*check_conformance(focus), conservation, check_castai_consistency(workloads)],
        totals=cost_totals(focus),
        source_total=float(pc.sum(source["cost_sum"]).as_py() or 0.0),
        workloads=exported_workloads,
        clusters=pc.count_distinct(focus["x_CastAIClusterId"]).as_py() if focus.num_rows else 0,
    )


def combine_reports(reports: Sequence[AuditReport]) -> AuditReport:
    """The report of a day audited in batches of whole clusters: failing rows, totals and counts add up
    (`conformance.combine_results`)."""
    if not reports:
        raise ValueError("combine_reports needs at least one report")
    return AuditReport(
        results=combine_results([r.results for r in reports]),
        totals={name: sum(r.totals.get(name, 0.0) for r in reports) for name in COST_COLUMNS},
        source_total=sum(r.source_total for r in reports),
        workloads=sum(r.workloads for r in reports),
        clusters=sum(r.clusters for r in reports),
    )
