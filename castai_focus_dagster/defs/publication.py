"""The Dagster face of a published FOCUS day: its materialisation metadata (encoding and publishing
live in storage/focus_day.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import pyarrow as pa

from castai_focus_dagster.focus.audit import AuditReport
from castai_focus_dagster.focus.schema import FOCUS_COLUMNS
from castai_focus_dagster.settings import Settings
from castai_focus_dagster.storage.focus_day import (
    PREVIEW_ROWS,
    FocusDay,
    publish_day,
)
from castai_focus_dagster.storage.object_store import ObjectStore
from castai_focus_dagster.storage.publication_guard import ChangeKind

PREVIEW_COLUMNS = (
    "ChargePeriodStart",
    "SubAccountName",
    "ResourceName",
    "x_CastAIResource",
    "x_CastAIPricingTier",
    "PricingQuantity",
    "PricingUnit",
    "BilledCost",
    "ListCost",
    "ContractedCost",
)


@dataclass(frozen=True)
class PublishedDay:
    day: FocusDay
    keys: list[str]
    manifest_key: str
    checksum_sha256: str
    bytes: int
    legacy_hourly_keys: list[str] = field(default_factory=list)  # the Go exporter's hour objects
    legacy_deleted: bool = False
    stale_deleted_keys: list[str] = field(default_factory=list)
    allowed_changes: list[str] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return self.day.row_count

    def metadata(self) -> dict[str, Any]:
        audit = self.day.audit
        return {
            "dagster/row_count": dg.MetadataValue.int(self.row_count),
            "billed_cost": _dollars(audit.totals.get("BilledCost", 0.0)),
            "effective_cost": _dollars(audit.totals.get("EffectiveCost", 0.0)),
            "list_cost": _dollars(audit.totals.get("ListCost", 0.0)),
            "contracted_cost": _dollars(audit.totals.get("ContractedCost", 0.0)),
            "castai_cost": _dollars(audit.source_total),
            "allocation_mode": dg.MetadataValue.text(self.day.allocation_mode),
            "clusters": dg.MetadataValue.int(audit.clusters),
            "workloads": dg.MetadataValue.int(audit.workloads),
            "enrichment_completeness": dg.MetadataValue.float(self.day.enrichment_completeness),
            "clusters_without_data": dg.MetadataValue.json(self.day.clusters_without_data),
            "workloads_missing_identity": dg.MetadataValue.int(self.day.workloads_missing_identity),
            "complete_day": dg.MetadataValue.bool(self.day.window.complete),
            "bytes": dg.MetadataValue.int(self.bytes),
            "sha256": dg.MetadataValue.text(self.checksum_sha256),
            "output_keys": dg.MetadataValue.json(self.keys),
            "manifest": dg.MetadataValue.text(self.manifest_key),
            "legacy_hourly_objects": dg.MetadataValue.json(
                {"deleted" if self.legacy_deleted else "kept": self.legacy_hourly_keys}
            ),
        }

    @staticmethod
    def combined_metadata(days: list[PublishedDay]) -> dict[str, Any]:
        """Output metadata: the day's figures for a one-day run; sums plus a per-day table for a range."""
        if len(days) == 1:
            only = days[0]
            return {
                **only.metadata(),
                "audit": dg.MetadataValue.md(_audit_markdown(only.day.audit)),
                "preview": dg.MetadataValue.md(_preview_markdown(only.day.preview)),
                "dagster/column_schema": column_schema(),
                "enrichment_missing": dg.MetadataValue.json(only.day.enrichment_missing),
                "pricing": dg.MetadataValue.json(only.day.pricing),
            }
        total = sum(d.row_count for d in days)
        billed = sum(d.day.audit.totals.get("BilledCost", 0.0) for d in days)
        lines = ["| day | rows | BilledCost | ListCost | ContractedCost |", "|---|---:|---:|---:|---:|"]
        lines += [
            f"| {d.day.window.day} | {d.row_count} | {d.day.audit.totals.get('BilledCost', 0.0):.6f} | "
            f"{d.day.audit.totals.get('ListCost', 0.0):.6f} | "
            f"{d.day.audit.totals.get('ContractedCost', 0.0):.6f} |"
            for d in days
        ]
        return {
            "dagster/row_count": dg.MetadataValue.int(total),
            "billed_cost": dg.MetadataValue.float(billed),
            "days": dg.MetadataValue.md("\n".join(lines)),
            "output_keys": dg.MetadataValue.json([k for d in days for k in d.keys]),
            "dagster/column_schema": column_schema(),
        }


def _dollars(value: float) -> dg.FloatMetadataValue:
    """Costs to the micro-dollar: the precision Cast AI reports and the UI should show."""
    return dg.MetadataValue.float(round(value, 6))


def column_schema() -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=c.name, type=str(c.arrow_type), description=c.source) for c in FOCUS_COLUMNS
        ]
    )


def publish_focus_day(
    store: ObjectStore,
    settings: Settings,
    day: FocusDay,
    run_id: str,
    allow_changes: frozenset[ChangeKind] = frozenset(),
) -> PublishedDay:
    result = publish_day(store, settings, day, run_id, allow_changes)
    return PublishedDay(
        day=day,
        keys=[*result.data_keys, *result.ternary_keys],
        manifest_key=result.manifest_key,
        checksum_sha256=result.checksum_sha256,
        bytes=result.bytes,
        legacy_hourly_keys=result.legacy_hourly_keys,
        legacy_deleted=result.legacy_deleted,
        stale_deleted_keys=result.stale_deleted_keys,
        allowed_changes=result.allowed_changes,
    )


def _audit_markdown(report: AuditReport) -> str:
    lines = ["| rule | passed | failing rows | detail |", "|---|---|---:|---|"]
    lines += [
        f"| {r.rule} | {'yes' if r.passed else 'NO'} | {r.failing_rows} | {r.message} |"
        for r in report.results
    ]
    return "\n".join(lines)


def _preview_markdown(table: pa.Table) -> str:
    cols = [c for c in PREVIEW_COLUMNS if c in table.column_names]
    head = table.select(cols).slice(0, PREVIEW_ROWS).to_pylist()
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in cols) + " |" for row in head]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    """A preview cell; floats to 10 significant digits (display only: the data file keeps them exact)."""
    if value is None:
        return ""
    return f"{value:.10g}" if isinstance(value, float) else str(value)
