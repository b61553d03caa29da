"""One day of audited FOCUS rows, encoded into a temporary file and published from there.

A day is encoded batch by batch (one batch = the FOCUS rows of whole clusters), so memory holds one
batch, not the day.
"""

from __future__ import annotations

import io
import math
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster import __version__
from castai_focus_dagster.focus.audit import AuditReport, combine_reports
from castai_focus_dagster.focus.schema import FOCUS_COLUMNS, FOCUS_SCHEMA
from castai_focus_dagster.focus.windows import DayWindow
from castai_focus_dagster.settings import Settings
from castai_focus_dagster.storage.keys import DataFormat
from castai_focus_dagster.storage.payload import Payload
from castai_focus_dagster.storage.publication_guard import ChangeKind, collection_fingerprint
from castai_focus_dagster.storage.publish import publish_partition
from castai_focus_dagster.storage.publish_model import PublishRequest, PublishResult
from castai_focus_dagster.storage.serialize import focus_writer, iter_focus_batches
from castai_focus_dagster.storage.store_base import ObjectStore

PREVIEW_ROWS = 10


@dataclass(frozen=True)
class FocusDay:
    """One day of audited FOCUS rows encoded in `data` (a temporary file: `discard()` it once published),
    with what the manifest and the UI report about it."""

    window: DayWindow
    fmt: DataFormat
    data: BinaryIO
    row_count: int
    preview: pa.Table  # the first PREVIEW_ROWS rows
    audit: AuditReport
    enrichment_completeness: float
    enrichment_missing: dict[str, str] = field(default_factory=dict)
    allocation_mode: str = "workload"
    # Clusters Cast AI listed no workload for ({"cluster_id", "cluster_name", "reason"}): "no data",
    # not "cost nothing". And how many workloads were exported under the missing-identity placeholder.
    clusters_without_data: list[dict[str, str]] = field(default_factory=list)
    workloads_missing_identity: int = 0
    pricing: dict[str, Any] = field(default_factory=dict)  # what the price rules did (discounts, sources)
    # Listed cluster id -> (rows, Σ BilledCost), zeros included: what the replacement guard compares.
    cluster_totals: dict[str, tuple[int, float]] | None = None

    def discard(self) -> None:
        self.data.close()


def encode_focus_day(
    window: DayWindow,
    batches: Iterable[tuple[pa.Table, AuditReport]],
    fmt: DataFormat,
    *,
    enrichment_completeness: float,
    enrichment_missing: dict[str, str],
    allocation_mode: str = "workload",
    clusters_without_data: list[dict[str, str]] | None = None,
    workloads_missing_identity: int = 0,
    pricing: Callable[[], dict[str, Any]] | None = None,
    cluster_ids: Iterable[str] | None = None,
) -> FocusDay:
    """Encode a day's FOCUS batches, each with its audit report, into one object in a temporary file.

    The report of the day combines the batches' reports (at least one batch: an empty day is one empty
    batch); the caller publishes the day only if `day.audit.passed`. `pricing` is called once every
    batch is written (the batches fill the figures it reports).
    """
    # Owned by the returned FocusDay (closed, hence deleted, by `discard()`): not a `with` block.
    data = tempfile.TemporaryFile(prefix="castai-focus-")  # noqa: SIM115
    try:
        writer = focus_writer(fmt, data)
        reports: list[AuditReport] = []
        preview = FOCUS_SCHEMA.empty_table()
        totals: dict[str, tuple[int, float]] = dict.fromkeys(cluster_ids or (), (0, 0.0))
        try:
            for table, report in batches:
                writer.write(table)
                reports.append(report)
                _add_cluster_totals(totals, table, report)
                if preview.num_rows < PREVIEW_ROWS and table.num_rows:
                    # take() copies: a slice would keep the whole batch alive.
                    head = table.take(pa.array(range(min(PREVIEW_ROWS - preview.num_rows, table.num_rows))))
                    preview = pa.concat_tables([preview, head])
        finally:
            writer.close()
    except BaseException:
        data.close()
        raise
    return FocusDay(
        window=window,
        fmt=fmt,
        data=data,
        row_count=writer.rows,
        preview=preview,
        audit=combine_reports(reports),
        enrichment_completeness=enrichment_completeness,
        enrichment_missing=enrichment_missing,
        allocation_mode=allocation_mode,
        clusters_without_data=list(clusters_without_data or []),
        workloads_missing_identity=workloads_missing_identity,
        pricing=pricing() if pricing is not None else {},
        cluster_totals=dict(sorted(totals.items())) if cluster_ids is not None else None,
    )


def _add_cluster_totals(totals: dict[str, tuple[int, float]], table: pa.Table, report: AuditReport) -> None:
    """Rows and Σ BilledCost per x_CastAIClusterId of one batch, added to `totals` (vectorised)."""
    if not table.num_rows:
        return
    clusters = table["x_CastAIClusterId"]
    if report.clusters == 1 and clusters.null_count == 0:  # one cluster (workload mode): the audit summed it
        per_cluster = [(clusters[0].as_py(), report.totals.get("BilledCost", 0.0), table.num_rows)]
    else:
        grouped = (
            pa.table({"cluster": pc.cast(clusters, pa.string()), "cost": table["BilledCost"]})
            .group_by("cluster", use_threads=False)
            .aggregate([("cost", "sum"), ("cost", "count")])
        )
        per_cluster = list(
            zip(
                grouped["cluster"].to_pylist(),
                grouped["cost_sum"].to_pylist(),
                grouped["cost_count"].to_pylist(),
                strict=True,
            )
        )
    for cid, cost, rows in per_cluster:
        before_rows, before_cost = totals.get(cid, (0, 0.0))
        totals[cid] = (before_rows + int(rows), before_cost + float(cost or 0.0))


def decode_check(data: Payload, fmt: str, expected_rows: int, expected_billed: float) -> None:
    """Audit of the staged bytes themselves, before they are published: they parse back with the FOCUS
    reader to exactly the FOCUS schema, with the expected rows, and their BilledCost column decodes to
    the audited total.

    The caller has already matched their SHA-256 to the encoded bytes, so this checks the encoding, not
    the transport. Parquet decodes only BilledCost (the schema and row counts come from the footer);
    CSV parses every field (its layout is by row).
    """
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    rows, billed = 0, 0.0
    for batch in iter_focus_batches(source, fmt, ["BilledCost"]):
        rows += batch.num_rows
        billed += float(pc.sum(batch["BilledCost"]).as_py() or 0.0)
    if rows != expected_rows:
        raise ValueError(f"staged object holds {rows} rows, expected {expected_rows}")
    # The two sums differ by summation order only (row groups vs cluster batches).
    if not math.isclose(billed, expected_billed, rel_tol=1e-9, abs_tol=1e-6):
        raise ValueError(f"staged object's Σ BilledCost is {billed:.6f}, the audit's {expected_billed:.6f}")


def publish_day(
    store: ObjectStore,
    settings: Settings,
    day: FocusDay,
    run_id: str,
    allow_changes: frozenset[ChangeKind] = frozenset(),
) -> PublishResult:
    """Publish one encoded day under the configured prefix, its staged copy audited by `decode_check`."""
    fmt = day.fmt
    request = PublishRequest(
        day=day.window.day,
        organization_id=settings.organization_id,
        fmt=fmt,
        data=day.data,
        row_count=day.row_count,
        totals=day.audit.totals,
        source_window=(day.window.start, day.window.end),
        step_seconds=day.window.step_seconds,
        run_id=run_id,
        complete=day.window.complete,
        schema_columns=[(c.name, c.arrow_type) for c in FOCUS_COLUMNS],
        generator_version=__version__,
        extra={
            "clusters": day.audit.clusters,
            "workloads": day.audit.workloads,
            "castai_cost": day.audit.source_total,
            "enrichment_completeness": day.enrichment_completeness,
            "enrichment_missing": day.enrichment_missing,
            "clusters_without_data": day.clusters_without_data,
            "workloads_missing_identity": day.workloads_missing_identity,
            "pricing": day.pricing,
            # The audit's verdict on the rows these very bytes encode: the published-conformance check
            # trusts it once the object's SHA-256 matches, instead of re-running every rule.
            "audit": {"passed": day.audit.passed, "rules": sorted(r.rule for r in day.audit.results)},
            "collection": collection_fingerprint(
                allocation_mode=settings.focus_allocation_mode,
                granularity=settings.collection_granularity,
                include_cluster_ids=settings.collection_include_cluster_ids,
                exclude_cluster_ids=settings.collection_exclude_cluster_ids,
                include_namespaces=settings.collection_include_namespaces,
                exclude_namespaces=settings.collection_exclude_namespaces,
            ),
        },
        cluster_totals=day.cluster_totals,
    )
    return publish_partition(
        store,
        request,
        prefix=settings.s3_prefix,
        ternary_prefix=settings.ternary_path_prefix if settings.ternary_enabled else None,
        audit=lambda staged: decode_check(
            staged, fmt, day.row_count, day.audit.totals.get("BilledCost", 0.0)
        ),
        delete_legacy_hourly=settings.delete_legacy_hourly_objects,
        allow_changes=allow_changes,
    )
