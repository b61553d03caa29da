"""The four daily-partitioned assets: Cast AI clusters, workload costs, enrichment context, FOCUS rows.

Each returns a `DailyValues` so that a run over many days (single-run backfill, `--partition-range`)
fetches, transforms and writes one day at a time. Within a day, workload costs stream cluster by
cluster from the API into their stored file, and back out of it through the FOCUS transform, audit
and encoder: memory holds a few clusters, never the organisation's day (DESIGN §7.5). The FOCUS asset
audits every cluster before the IO manager publishes the day: a failing audit raises and nothing
replaces the previously published object.
"""

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa

from castai_focus_dagster.audit import AuditReport, audit_focus
from castai_focus_dagster.daily import DailyValues
from castai_focus_dagster.enrichment import fetch_enrichment
from castai_focus_dagster.focus_publication import FocusDay, encode_focus_day
from castai_focus_dagster.focus_transform import FocusOptions, to_focus
from castai_focus_dagster.intermediates import WorkloadCostsDay
from castai_focus_dagster.partitions import daily_partitions
from castai_focus_dagster.resources import CastAIResource, FocusStorageResource
from castai_focus_dagster.windows import DayWindow, day_window

IO_MANAGER_KEY = "focus_io_manager"
CASTAI_POOL = "castai_api"
OWNERS = ["team:finops-platform"]
WINDOW_END_KEY = b"castai_focus.window_end"

# Transient HTTP faults are retried inside the client; this covers the rest (pod restart, long outage).
API_RETRY_POLICY = dg.RetryPolicy(
    max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

# Every asset: daily partitions; one run walks a whole backfill range day by day (see daily.py).
SINGLE_RUN = dg.BackfillPolicy.single_run()


@dg.asset(
    group_name="castai",
    kinds={"castai", "python"},
    pool=CASTAI_POOL,
    retry_policy=API_RETRY_POLICY,
    description="Cast AI clusters of the organisation after COLLECTION_INCLUDE/EXCLUDE_CLUSTER_IDS.",
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    io_manager_key=IO_MANAGER_KEY,
    owners=OWNERS,
)
def castai_clusters(context: dg.AssetExecutionContext, castai: CastAIResource) -> DailyValues:
    settings = castai.settings
    clusters = castai.client.list_clusters(
        settings.collection_include_cluster_ids, settings.collection_exclude_cluster_ids
    )
    context.add_output_metadata(
        {
            "clusters": len(clusters),
            "providers": dg.MetadataValue.json(sorted({c.provider_type for c in clusters})),
            "cluster_names": dg.MetadataValue.json(sorted(c.name for c in clusters)),
        }
    )
    # The cluster list is current, not historical: every day of the run uses the same list.
    return DailyValues(keys=context.partition_keys, produce=lambda _key: clusters)


@dg.asset(
    group_name="castai",
    kinds={"castai", "pyarrow"},
    pool=CASTAI_POOL,
    retry_policy=API_RETRY_POLICY,
    description=(
        "Cast AI workload costs (one row per cluster × workload × bucket, columnar), fetched per cluster "
        "with bounded concurrency for the day's complete buckets."
    ),
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    io_manager_key=IO_MANAGER_KEY,
    owners=OWNERS,
)
def castai_workload_costs(
    context: dg.AssetExecutionContext, castai: CastAIResource, castai_clusters: DailyValues
) -> DailyValues:
    settings = castai.settings

    def fetch(key: str) -> WorkloadCostsDay:
        window = day_window(key, settings.step_seconds)
        # Sorted: the published rows do not depend on the order in which Cast AI lists clusters.
        cluster_ids = sorted(c.id for c in castai_clusters.get(key))

        def clusters() -> Iterator[pa.Table]:
            if window.is_empty or not cluster_ids:
                return
            # Bad input repaired by the client travels in each table's metadata; the IO manager reports it.
            for _cluster_id, table in castai.client.workload_costs_many(
                cluster_ids,
                window.start,
                window.end,
                window.step_seconds,
                labels=settings.focus_tag_allowlist,
                include_namespaces=settings.collection_include_namespaces,
                exclude_namespaces=settings.collection_exclude_namespaces,
            ):
                yield table

        # Lazy: the IO manager writes each cluster as it arrives (CASTAI_MAX_CONCURRENCY in flight).
        return WorkloadCostsDay(
            clusters=clusters(), metadata={WINDOW_END_KEY: window.end.isoformat().encode()}
        )

    return DailyValues(keys=context.partition_keys, produce=fetch)


@dg.asset(
    group_name="castai",
    kinds={"castai", "python"},
    pool=CASTAI_POOL,
    retry_policy=API_RETRY_POLICY,
    description=(
        "Prices, discounts, enterprise organisations and platform usage. Each endpoint that fails is "
        "recorded as missing; the export continues with documented fallbacks."
    ),
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    io_manager_key=IO_MANAGER_KEY,
    owners=OWNERS,
)
def castai_enrichment_context(context: dg.AssetExecutionContext, castai: CastAIResource) -> DailyValues:
    enrichment = fetch_enrichment(
        castai.client, enterprise_id=castai.settings.focus_enterprise_id, logger=context.log
    )
    context.add_output_metadata(
        {
            "enrichment_completeness": enrichment.completeness,
            "missing": dg.MetadataValue.json(enrichment.missing),
            "cluster_prices": len(enrichment.cluster_prices),
            "discounts": len(enrichment.discounts),
            "child_organizations": len(enrichment.child_organizations),
        }
    )
    # Prices and discounts are current values (the API has no history): one fetch serves every day of the run.
    return DailyValues(keys=context.partition_keys, produce=lambda _key: enrichment)


@dg.asset(
    group_name="focus",
    kinds={"parquet", "s3"},
    description=(
        "FOCUS 1.3 Cost and Usage rows, published as Hive-partitioned Parquet/CSV "
        "(version=focus-1.3/year=/month=/day=) after a conformance and conservation audit."
    ),
    metadata={"focus_version": "1.3"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    io_manager_key=IO_MANAGER_KEY,
    owners=OWNERS,
)
def focus_cost_and_usage(
    context: dg.AssetExecutionContext,
    storage: FocusStorageResource,
    castai_clusters: DailyValues,
    castai_workload_costs: DailyValues,
    castai_enrichment_context: DailyValues,
) -> DailyValues:
    settings = storage.settings
    options = FocusOptions.from_settings(settings)

    def build(key: str) -> FocusDay:
        workloads: WorkloadCostsDay = castai_workload_costs.get(key)
        enrichment = castai_enrichment_context.get(key)
        clusters = {c.id: c for c in castai_clusters.get(key)}

        def audited_batches() -> Iterator[tuple[pa.Table, AuditReport]]:
            # One cluster at a time: every rule is local to a row or a workload, hence to a cluster.
            for cluster_workloads in workloads.clusters:
                table = to_focus(cluster_workloads, clusters, enrichment, options)
                yield table, audit_focus(table, cluster_workloads)

        day = encode_focus_day(
            _window_of(key, workloads, settings.step_seconds),
            audited_batches(),
            settings.s3_format,
            enrichment_completeness=enrichment.completeness,
            enrichment_missing=dict(enrichment.missing),
        )
        report = day.audit
        if not report.passed:
            day.discard()
            raise dg.Failure(
                description=(
                    f"FOCUS rows for {key} failed the audit, nothing was published: {report.summary()}"
                ),
                metadata={"failed_rules": dg.MetadataValue.json([r.rule for r in report.failures])},
            )
        return day

    return DailyValues(keys=context.partition_keys, produce=build)


def _window_of(key: str, workloads: WorkloadCostsDay, step_seconds: int) -> DayWindow:
    """The window the workload costs were fetched for (recorded by that asset), so the manifest matches it."""
    window = day_window(key, step_seconds)
    recorded = workloads.metadata.get(WINDOW_END_KEY)
    if recorded:
        end = datetime.fromisoformat(recorded.decode()).astimezone(UTC)
        window = DayWindow(day=window.day, start=window.start, end=end, step_seconds=step_seconds)
    return window


FOCUS_ASSETS = [castai_clusters, castai_workload_costs, castai_enrichment_context, focus_cost_and_usage]
