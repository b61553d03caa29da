"""The audit of write-audit-publish: a day's FOCUS rows checked before they replace the published object.

FOCUS conformance plus conservation against Cast AI's own costs, one cluster batch at a time (every
rule is local to a row or a workload); `combine_reports` adds the batches' reports into the day's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.focus.conformance import check_conformance
from castai_focus_dagster.focus.rules.common import RuleResult, combine_results
from castai_focus_dagster.focus.rules.conservation import (
    check_castai_consistency,
    conservation,
    source_costs_by_workload,
)
from castai_focus_dagster.focus.source import PreparedWorkloads, prepared

COST_COLUMNS = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost")


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


def audit_focus(focus: pa.Table, workloads: pa.Table | PreparedWorkloads) -> AuditReport:
    """The report on one batch; pass the `PreparedWorkloads` given to `to_focus` to prepare it once."""
    batch = prepared(workloads)
    source = source_costs_by_workload(batch)
    conserved, exported_workloads = conservation(focus, source)
    return AuditReport(
        results=[*check_conformance(focus), conserved, check_castai_consistency(batch)],
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
