"""What a FinOps user reads on the asset page: a day's cost by cluster, namespace and workload.

Pure pyarrow (vectorised `group_by` per batch) plus the Dagster metadata that shows it. A batch holds
whole clusters, so a namespace (named with its cluster) or a workload is complete within one batch:
keeping each batch's top entries is exact, and memory holds a few rows per batch, not the day.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.focus.audit import AuditReport
from castai_focus_dagster.focus.windows import DayWindow

TOP_ENTRIES = 10
# A mover: a namespace or workload whose day's BilledCost changed by more than MOVER_RELATIVE_CHANGE of
# the day before AND by at least MOVER_MIN_CHANGE (billing currency): big relative jumps of cents are noise.
MOVER_RELATIVE_CHANGE = 0.5
MOVER_MIN_CHANGE = 1.0
TOP_MOVERS = 5
UNALLOCATED = "(unallocated)"  # split mode: the cluster's idle and unreported rows have no namespace
_NAME_COLUMNS = ("x_CastAIClusterName", "x_CastAINamespace", "x_CastAIWorkloadType", "x_CastAIWorkloadName")
MOVER_COLUMNS = [*_NAME_COLUMNS, "BilledCost"]  # all `workload_costs` (and the anomaly check) reads


def workload_costs(table: pa.Table) -> pa.Table:
    """Σ BilledCost per cluster × namespace × workload of FOCUS rows (columns cluster, namespace,
    workload, cost); nulls (split mode's unallocated rows) read as `UNALLOCATED`."""
    names = {
        col: pc.fill_null(pc.cast(table[col], pa.string()), UNALLOCATED)
        if table.num_rows
        else pa.array([], pa.string())
        for col in _NAME_COLUMNS
    }
    workload = pc.binary_join_element_wise(names["x_CastAIWorkloadType"], names["x_CastAIWorkloadName"], "/")
    grouped = (
        pa.table(
            {
                "cluster": names["x_CastAIClusterName"],
                "namespace": names["x_CastAINamespace"],
                "workload": workload,
                "cost": pc.cast(table["BilledCost"], pa.float64()),
            }
        )
        .group_by(["cluster", "namespace", "workload"], use_threads=False)
        .aggregate([("cost", "sum")])
    )
    return grouped.rename_columns(["cluster", "namespace", "workload", "cost"])


def totals_by(grouped: pa.Table, keys: list[str]) -> dict[str, float]:
    """Σ cost per `keys` (joined with "/") of a `workload_costs` table."""
    if not grouped.num_rows:
        return {}
    by = grouped.group_by(keys, use_threads=False).aggregate([("cost", "sum")])
    labels = by[keys[0]]
    for key in keys[1:]:
        labels = pc.binary_join_element_wise(labels, by[key], "/")
    return dict(zip(labels.to_pylist(), by["cost_sum"].to_pylist(), strict=True))


@dataclass
class CostBreakdown:
    """A day's top clusters, namespaces and workloads by BilledCost, filled batch by batch."""

    clusters: dict[str, float] = field(default_factory=dict)
    namespaces: list[tuple[float, str]] = field(default_factory=list)
    workloads: list[tuple[float, str]] = field(default_factory=list)

    def add(self, table: pa.Table) -> None:
        grouped = workload_costs(table)
        for name, cost in totals_by(grouped, ["cluster"]).items():
            self.clusters[name] = self.clusters.get(name, 0.0) + cost
        self.namespaces = _top([*self.namespaces, *_pairs(totals_by(grouped, ["cluster", "namespace"]))])
        self.workloads = _top(
            [*self.workloads, *_pairs(totals_by(grouped, ["cluster", "namespace", "workload"]))]
        )

    def observe(
        self, batches: Iterable[tuple[pa.Table, AuditReport]]
    ) -> Iterator[tuple[pa.Table, AuditReport]]:
        """Pass the batches through unchanged, adding each to the breakdown."""
        for table, report in batches:
            self.add(table)
            yield table, report

    def metadata(self, audit: AuditReport, window: DayWindow, currency: str) -> dict[str, Any]:
        """The asset page's figures: costs in `currency`, the reconciliation difference, the top lists.

        Costs of a partial day carry "so far" in their name: the plots of the complete-day figures
        never show today's first hours as a drop."""
        billed = audit.totals.get("BilledCost", 0.0)
        suffix = f"({currency})" if window.complete else f"so far ({currency})"
        figures = {
            f"{column} {suffix}": dg.MetadataValue.float(round(audit.totals.get(column, 0.0), 6))
            for column in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost")
        }
        return {
            "day_status": dg.MetadataValue.text(
                "complete"
                if window.complete
                else f"partial: charge periods up to {window.end.strftime('%Y-%m-%d %H:%M')} UTC"
            ),
            **figures,
            f"Cast AI cost {suffix}": dg.MetadataValue.float(round(audit.source_total, 6)),
            # Σ BilledCost - Cast AI's own total: 0 up to rounding when every cost was conserved.
            f"Σ BilledCost − Cast AI cost ({currency})": dg.MetadataValue.float(
                round(billed - audit.source_total, 6)
            ),
            "top_clusters": dg.MetadataValue.md(
                _markdown("cluster", _top(_pairs(self.clusters)), billed, currency)
            ),
            "top_namespaces": dg.MetadataValue.md(
                _markdown("cluster/namespace", self.namespaces, billed, currency)
            ),
            "top_workloads": dg.MetadataValue.md(
                _markdown("cluster/namespace/kind/workload", self.workloads, billed, currency)
            ),
        }


def _pairs(costs: dict[str, float]) -> list[tuple[float, str]]:
    return [(cost, name) for name, cost in costs.items()]


def _top(entries: list[tuple[float, str]]) -> list[tuple[float, str]]:
    # Ties broken by name: the same day always lists the same entries in the same order.
    return heapq.nsmallest(TOP_ENTRIES, entries, key=lambda e: (-e[0], e[1]))


def _markdown(what: str, entries: list[tuple[float, str]], total: float, currency: str) -> str:
    lines = [f"| {what} | BilledCost ({currency}) | share |", "|---|---:|---:|"]
    lines += [
        f"| {name} | {cost:,.2f} | {cost / total:.1%} |" if total else f"| {name} | {cost:,.2f} | |"
        for cost, name in entries
    ]
    return "\n".join(lines)


def _level_costs(grouped: pa.Table, keys: list[str]) -> pa.Table:
    """Σ cost per `keys` as a two-column table (name, cost)."""
    costs = totals_by(grouped, keys)
    return pa.table(
        {"name": pa.array(list(costs), pa.string()), "cost": pa.array(list(costs.values()), pa.float64())}
    )


@dataclass(frozen=True)
class Movers:
    """The namespaces and workloads beyond the thresholds, largest absolute change first."""

    table: pa.Table  # level, name, previous, current, change
    namespaces: int
    workloads: int

    @property
    def rows(self) -> int:
        return self.table.num_rows

    def top(self) -> list[dict[str, Any]]:
        return self.table.slice(0, TOP_MOVERS).to_pylist()

    def markdown(self, currency: str) -> str:
        lines = [
            f"| level | name | day before ({currency}) | day ({currency}) | change |",
            "|---|---|---:|---:|---:|",
        ]
        for m in self.top():
            relative = f"{m['change'] / m['previous']:+.0%}" if m["previous"] else "new"
            lines.append(
                f"| {m['level']} | {m['name']} | {m['previous']:,.2f} | {m['current']:,.2f} | "
                f"{m['change']:+,.2f} ({relative}) |"
            )
        return "\n".join(lines)

    def summary(self, before: str, currency: str) -> str:
        if not self.rows:
            return f"no namespace or workload moved beyond the thresholds since {before}"
        named = "; ".join(f"{m['level']} {m['name']} {m['change']:+,.2f} {currency}" for m in self.top())
        return f"{self.rows} cost change(s) since {before} beyond the thresholds, largest: {named}"


def day_over_day_movers(previous: Iterable[pa.Table], current: Iterable[pa.Table]) -> Movers:
    """Compare two days' FOCUS rows by namespace and by workload (each named with its cluster)."""
    days = [pa.concat_tables([workload_costs(b) for b in batches]) for batches in (previous, current)]
    parts, counts = [], {}
    for level, keys in (
        ("namespace", ["cluster", "namespace"]),
        ("workload", ["cluster", "namespace", "workload"]),
    ):
        before, now = (_level_costs(day, keys) for day in days)
        joined = now.join(
            before,
            "name",
            join_type="full outer",
            left_suffix="_now",
            right_suffix="_before",
            coalesce_keys=True,
        )
        counts[level] = joined.num_rows
        was = pc.fill_null(joined["cost_before"], 0.0)
        is_ = pc.fill_null(joined["cost_now"], 0.0)
        change = pc.subtract(is_, was)
        size = pc.abs(change)
        beyond = pc.and_(
            pc.greater_equal(size, MOVER_MIN_CHANGE),
            pc.greater(size, pc.multiply(pc.abs(was), MOVER_RELATIVE_CHANGE)),
        )
        picked = pa.table(
            {
                "level": pa.array([level] * joined.num_rows, pa.string()),
                "name": joined["name"],
                "previous": was,
                "current": is_,
                "change": change,
                "size": size,
            }
        ).filter(beyond)
        parts.append(picked)
    movers = pa.concat_tables(parts).sort_by(
        [("size", "descending"), ("level", "ascending"), ("name", "ascending")]
    )
    return Movers(
        table=movers.drop_columns(["size"]), namespaces=counts["namespace"], workloads=counts["workload"]
    )
