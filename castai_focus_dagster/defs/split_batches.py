"""Split cost allocation of a day's stored workload costs, streamed and audited cluster by cluster."""

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.castai.discounts import PricingStats
from castai_focus_dagster.castai.models import Cluster, EnrichmentContext, empty_workload_costs
from castai_focus_dagster.focus.audit import AuditReport, cost_totals
from castai_focus_dagster.focus.conformance import check_conformance
from castai_focus_dagster.focus.options import FocusOptions
from castai_focus_dagster.focus.rules.conservation import (
    check_castai_consistency,
    check_conservation,
    check_split_conservation,
)
from castai_focus_dagster.focus.rules.split import check_split_allocation
from castai_focus_dagster.focus.source import prepare_workloads
from castai_focus_dagster.focus.split import to_focus_split
from castai_focus_dagster.storage.intermediates import WorkloadCostsDay


def split_batches(
    workloads: WorkloadCostsDay,
    reports: dict[str, pa.Table],
    clusters: dict[str, Cluster],
    enrichment: EnrichmentContext,
    options: FocusOptions,
    step_seconds: int,
    listing: dict[str, pa.Table],
    stats: PricingStats,
) -> Iterator[tuple[pa.Table, AuditReport]]:
    """Split allocation cluster by cluster; clusters without workloads still publish their idle rows."""
    seen: set[str] = set()

    def audited(cluster_workloads: pa.Table, ids: list[str]) -> tuple[pa.Table, AuditReport]:
        cluster_reports = {cid: reports[cid] for cid in ids if cid in reports}
        batch = prepare_workloads(cluster_workloads)  # prepared once, for transform and audit
        table = to_focus_split(
            batch,
            cluster_reports,
            clusters,
            enrichment,
            options,
            step_seconds=step_seconds,
            listing=listing,
            stats=stats,
        )
        allocated = table.filter(pc.is_valid(table["AllocatedResourceId"]))
        unreported = float(pc.sum(table["x_CastAIUnreportedCost"]).as_py() or 0.0)
        return table, AuditReport(
            results=[
                *check_conformance(table),
                *check_split_allocation(table),
                check_split_conservation(table, cluster_reports),
                check_conservation(allocated, batch),
                check_castai_consistency(batch),
            ],
            totals=cost_totals(table),
            # The clusters' own cost (idle included) plus what their workloads exceeded it by.
            source_total=_report_total(cluster_reports, step_seconds) + unreported,
            workloads=pc.count_distinct(allocated["AllocatedResourceId"]).as_py()
            if allocated.num_rows
            else 0,
            clusters=len(cluster_reports),
        )

    for cluster_workloads in workloads.clusters:  # streamed: one cluster in memory
        ids = pc.unique(cluster_workloads["cluster_id"].cast(pa.string())).to_pylist()
        if ids:
            seen.update(ids)
            yield audited(cluster_workloads, ids)
    for cid in sorted(set(reports) - seen):
        yield audited(empty_workload_costs(), [cid])
    if not seen and not reports:  # no cluster at all: the empty day is one empty batch, as in workload mode
        yield audited(empty_workload_costs(), [])


def _report_total(reports: dict[str, pa.Table], step_seconds: int) -> float:
    """Σ of the cluster cost reports' compute and storage cost × bucket hours."""
    hours = step_seconds / 3600
    total = 0.0
    for report in reports.values():
        for name in report.column_names:
            if name == "storageCost" or any(
                name.startswith(f"{r}Cost") for r in ("cpu", "ram", "gpu", "tpu")
            ):
                total += float(pc.sum(report[name]).as_py() or 0.0) * hours
    return total
