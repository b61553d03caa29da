"""The daily-partitioned assets: Cast AI clusters, workload costs, cluster costs, enrichment, FOCUS rows.

Each returns a `DailyValues` so that a run over many days (a backfill run, `--partition-range`)
fetches, transforms and writes one day at a time. Within a day, workload costs stream cluster by
cluster from the API into their stored file, and back out of it through the FOCUS transform, audit
and encoder: memory holds a few clusters, never the organisation's day (DESIGN §7.5). The FOCUS asset
audits every cluster before the IO manager publishes the day: a failing audit raises and nothing
replaces the previously published object.
"""

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.castai.discounts import PricingStats, discount_summary, unusable_counts
from castai_focus_dagster.castai.enrichment import fetch_enrichment
from castai_focus_dagster.castai.errors import WRONG_STEP, CastAIError
from castai_focus_dagster.castai.input_warnings import MISSING_WORKLOAD_IDENTITY, NO_DATA
from castai_focus_dagster.castai.models import Cluster, EnrichmentContext, empty_workload_costs
from castai_focus_dagster.defs.daily import DailyValues
from castai_focus_dagster.defs.finops import CostBreakdown
from castai_focus_dagster.defs.partitions import daily_partitions
from castai_focus_dagster.defs.publication import FocusDay, encode_focus_day
from castai_focus_dagster.defs.resources import CASTAI_POOL, CastAIResource, FocusStorageResource
from castai_focus_dagster.defs.schedules import schedule_freshness_policy
from castai_focus_dagster.focus.audit import (
    AuditReport,
    audit_focus,
    check_castai_consistency,
    check_conservation,
    cost_totals,
)
from castai_focus_dagster.focus.conformance import check_conformance
from castai_focus_dagster.focus.split import check_split_allocation, check_split_conservation, to_focus_split
from castai_focus_dagster.focus.transform import FocusOptions, is_anywhere, prepare_workloads, to_focus
from castai_focus_dagster.focus.windows import DayWindow, day_window
from castai_focus_dagster.storage.intermediates import WorkloadCostsDay, stored_input_warnings

# One IO manager per storage concern: the Cast AI intermediates, and the published FOCUS rows.
INTERMEDIATES_IO_MANAGER_KEY = "focus_intermediates_io_manager"
PUBLICATION_IO_MANAGER_KEY = "focus_publication_io_manager"
OWNERS = ["team:finops-platform"]
WINDOW_END_KEY = b"castai_focus.window_end"

# Transient HTTP faults are retried inside the client; this covers the rest (pod restart, long outage).
API_RETRY_POLICY = dg.RetryPolicy(
    max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


@contextmanager
def _permanent_castai_errors_fail_fast() -> Iterator[None]:
    """Turn a permanent Cast AI error into a failure the retry policy does not repeat.

    The client already retried what can heal (`CastAIError.transient`); the policy's longer delays are
    for those faults only (a long outage, a pod restart), never for an answer that stays wrong.
    """
    try:
        yield
    except CastAIError as exc:
        if exc.transient:
            raise
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


# Backfills fan out: one run per BACKFILL_DAYS_PER_RUN consecutive days, runs in parallel up to the
# instance's run limits; each run walks its days one by one (daily.py). See docs/scaling.md.
BACKFILL_DAYS_PER_RUN = 7
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=BACKFILL_DAYS_PER_RUN)


def daily_asset(
    *,
    group_name: str,
    kinds: set[str],
    description: str,
    calls_castai: bool,
    metadata: dict[str, Any] | None = None,
    freshness_policy: dg.FreshnessPolicy | None = None,
    io_manager_key: str = INTERMEDIATES_IO_MANAGER_KEY,
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """The settings every asset shares; assets that call Cast AI also share its pool and retry policy."""
    return dg.asset(
        group_name=group_name,
        kinds=kinds,
        description=description,
        metadata=metadata,
        partitions_def=daily_partitions,
        backfill_policy=BACKFILL_POLICY,
        io_manager_key=io_manager_key,
        owners=OWNERS,
        pool=CASTAI_POOL if calls_castai else None,
        retry_policy=API_RETRY_POLICY if calls_castai else None,
        freshness_policy=freshness_policy,
    )


@daily_asset(
    group_name="castai",
    kinds={"castai", "python"},
    description="Cast AI clusters of the organisation after COLLECTION_INCLUDE/EXCLUDE_CLUSTER_IDS.",
    calls_castai=True,
)
def castai_clusters(context: dg.AssetExecutionContext, castai: CastAIResource) -> DailyValues:
    settings = castai.settings
    with _permanent_castai_errors_fail_fast():
        clusters = castai.client.list_clusters(
            settings.collection_include_cluster_ids, settings.collection_exclude_cluster_ids
        )
    unknown = sorted(set(settings.collection_include_cluster_ids) - {c.id for c in clusters})
    if unknown:
        # A typo here would export (and publish over) a day without those clusters' costs.
        raise dg.Failure(
            description=(
                f"configuration error: COLLECTION_INCLUDE_CLUSTER_IDS names cluster id(s) that Cast AI "
                f"organisation {settings.organization_id} does not have: {', '.join(unknown)} "
                f"(it has {len(clusters)} of the listed ids). Fix the variable; nothing was exported."
            ),
            allow_retries=False,
        )
    # BillingAccountId is the cluster's organisation; a cluster that names none falls back to ours.
    without_org = sorted(c.id for c in clusters if not c.organization_id)
    if without_org:
        context.log.warning(
            f"Cast AI clusters without organizationId (billed to {settings.organization_id}): "
            + ", ".join(without_org)
        )
    context.add_output_metadata(
        {
            "clusters": len(clusters),
            "clusters_without_organization_id": len(without_org),
            "providers": dg.MetadataValue.json(sorted({c.provider_type for c in clusters})),
            "cluster_names": dg.MetadataValue.json(sorted(c.name for c in clusters)),
        }
    )
    # The cluster list is current, not historical: every day of the run uses the same list.
    return DailyValues(keys=context.partition_keys, produce=lambda _key: clusters)


@daily_asset(
    group_name="castai",
    kinds={"castai", "pyarrow"},
    description=(
        "Cast AI workload costs (one row per cluster × workload × bucket, columnar), fetched per cluster "
        "with bounded concurrency for the day's complete buckets."
    ),
    calls_castai=True,
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
            labels = settings.focus_tag_allowlist
            if not labels:  # empty allowlist = every label: Cast AI returns only the labels named
                with _permanent_castai_errors_fail_fast():
                    labels = tuple(castai.client.workload_label_names(window.start, window.end, cluster_ids))
                context.log.info(f"{key}: asking Cast AI for all {len(labels)} workload label names")
            # Bad input repaired by the client travels in each table's metadata; the IO manager reports it.
            fetched = castai.client.workload_costs_many(
                cluster_ids,
                window.start,
                window.end,
                window.step_seconds,
                labels=labels,
                include_namespaces=settings.collection_include_namespaces,
                exclude_namespaces=settings.collection_exclude_namespaces,
            )
            with _permanent_castai_errors_fail_fast():
                yield from (table for _cluster_id, table in fetched)

        # Lazy: the IO manager writes each cluster as it arrives (CASTAI_MAX_CONCURRENCY in flight).
        return WorkloadCostsDay(
            clusters=clusters(), metadata={WINDOW_END_KEY: window.end.isoformat().encode()}
        )

    return DailyValues(keys=context.partition_keys, produce=fetch)


@daily_asset(
    group_name="castai",
    kinds={"castai", "pyarrow"},
    description=(
        "Cast AI cluster cost reports (the clusters' own compute and storage charges, idle included), "
        "fetched only when FOCUS_ALLOCATION_MODE=split; empty otherwise."
    ),
    calls_castai=True,
)
def castai_cluster_costs(
    context: dg.AssetExecutionContext, castai: CastAIResource, castai_clusters: DailyValues
) -> DailyValues:
    settings = castai.settings

    def fetch(key: str) -> dict[str, pa.Table]:
        window = day_window(key, settings.step_seconds)
        if settings.focus_allocation_mode != "split" or window.is_empty:
            return {}
        reports = {}
        for cluster in sorted(castai_clusters.get(key), key=lambda c: c.id):
            with _permanent_castai_errors_fail_fast():
                reports[cluster.id] = castai.client.cluster_cost_report(
                    cluster.id, window.start, window.end, window.step_seconds
                )
        context.log.info(f"{key}: cluster cost reports of {len(reports)} clusters")
        return reports

    return DailyValues(keys=context.partition_keys, produce=fetch)


@daily_asset(
    group_name="castai",
    kinds={"castai", "pyarrow"},
    description=(
        "Cast AI cluster cost reports at listing prices (useListingPrices=true) of every cluster that is not "
        "a Cast Anywhere cluster: the source of their ListUnitPrice. A cluster whose report fails keeps "
        "its effective rate as list price and is named in the metadata."
    ),
    calls_castai=True,
)
def castai_listing_prices(
    context: dg.AssetExecutionContext, castai: CastAIResource, castai_clusters: DailyValues
) -> DailyValues:
    settings = castai.settings

    def fetch(key: str) -> dict[str, pa.Table]:
        window = day_window(key, settings.step_seconds)
        ids = sorted(c.id for c in castai_clusters.get(key) if not is_anywhere(c))
        if window.is_empty or not ids:
            return {}

        def one(cluster_id: str) -> pa.Table:
            return castai.client.cluster_cost_report(
                cluster_id, window.start, window.end, window.step_seconds, use_listing_prices=True
            )

        reports: dict[str, pa.Table] = {}
        # One small request per cluster and day, CASTAI_MAX_CONCURRENCY at a time (the client's rate limit
        # still applies); a report is ~one row per bucket, so the day's reports stay small.
        workers = max(1, min(settings.castai_max_concurrency, len(ids)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="castai-listing") as pool:
            futures = {cid: pool.submit(one, cid) for cid in ids}
            for cid, future in futures.items():
                try:
                    reports[cid] = future.result()
                except CastAIError as exc:  # list prices degrade to the effective rate; costs are unaffected
                    if exc.reason == WRONG_STEP:  # another bucket size than asked: fail the day
                        with _permanent_castai_errors_fail_fast():
                            raise
                    context.log.warning(
                        f"{key}: listing prices of cluster {cid} unavailable ({exc.reason}); its rows keep "
                        f"their effective rate as ListUnitPrice: {exc}"
                    )
        context.log.info(f"{key}: listing-price reports of {len(reports)} of {len(ids)} cloud clusters")
        return reports

    # Lazy, like every daily asset: the IO manager fetches and stores one day at a time. The FOCUS asset
    # names every cloud cluster of the day that has no listing report (`pricing.listing_missing`).
    return DailyValues(keys=context.partition_keys, produce=fetch)


@daily_asset(
    group_name="castai",
    kinds={"castai", "python"},
    description=(
        "Prices, discounts, enterprise organisations and platform usage. Each endpoint that fails is "
        "recorded as missing; the export continues with documented fallbacks."
    ),
    calls_castai=True,
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
            # Reasons that hold for every cluster; the FOCUS asset's `pricing` has the day's full count.
            "discounts_not_applied": dg.MetadataValue.json(unusable_counts(enrichment.discounts)),
            "child_organizations": len(enrichment.child_organizations),
        }
    )
    # Prices and discounts are current values (the API has no history): one fetch serves every day of the run.
    return DailyValues(keys=context.partition_keys, produce=lambda _key: enrichment)


@daily_asset(
    group_name="focus",
    kinds={"parquet", "s3"},
    description=(
        "FOCUS 1.3 Cost and Usage rows, published as Hive-partitioned Parquet/CSV "
        "(version=focus-1.3/year=/month=/day=) after a conformance and conservation audit."
    ),
    metadata={"focus_version": "1.3"},
    calls_castai=False,
    freshness_policy=schedule_freshness_policy(),
    io_manager_key=PUBLICATION_IO_MANAGER_KEY,
)
def focus_cost_and_usage(
    context: dg.AssetExecutionContext,
    storage: FocusStorageResource,
    castai_clusters: DailyValues,
    castai_workload_costs: DailyValues,
    castai_cluster_costs: DailyValues,
    castai_listing_prices: DailyValues,
    castai_enrichment_context: DailyValues,
) -> DailyValues:
    settings = storage.settings
    options = FocusOptions.from_settings(settings)
    split = settings.focus_allocation_mode == "split"

    def build(key: str) -> FocusDay:
        workloads: WorkloadCostsDay = castai_workload_costs.get(key)
        enrichment = castai_enrichment_context.get(key)
        clusters = {c.id: c for c in castai_clusters.get(key)}
        listing: dict[str, pa.Table] = castai_listing_prices.get(key)
        stats = PricingStats()

        def audited_batches() -> Iterator[tuple[pa.Table, AuditReport]]:
            # One cluster at a time: every rule is local to a row or a workload, hence to a cluster.
            if split:
                yield from _split_batches(
                    workloads,
                    castai_cluster_costs.get(key),
                    clusters,
                    enrichment,
                    options,
                    settings.step_seconds,
                    listing,
                    stats,
                )
                return
            for cluster_workloads in workloads.clusters:
                batch = prepare_workloads(cluster_workloads)  # prepared once, for transform and audit
                table = to_focus(batch, clusters, enrichment, options, listing=listing, stats=stats)
                yield table, audit_focus(table, batch)

        warnings = stored_input_warnings(workloads)
        window = _window_of(key, workloads, settings.step_seconds)
        breakdown = CostBreakdown()
        day = encode_focus_day(
            window,
            breakdown.observe(audited_batches()),
            settings.s3_format,
            enrichment_completeness=enrichment.completeness,
            enrichment_missing=dict(enrichment.missing),
            allocation_mode=settings.focus_allocation_mode,
            clusters_without_data=_clusters_without_data(warnings, clusters, window.start),
            workloads_missing_identity=sum(
                int(w["count"]) for w in warnings if w["rule"] == MISSING_WORKLOAD_IDENTITY
            ),
            pricing=lambda: _pricing_summary(enrichment, clusters, listing, stats, window),
            cluster_ids=sorted(clusters),
        )
        _log_pricing(context, key, day.pricing)
        report = day.audit
        if not report.passed:
            day.discard()
            raise dg.Failure(
                description=(
                    f"FOCUS rows for {key} failed the audit, nothing was published: {report.summary()}"
                ),
                metadata={"failed_rules": dg.MetadataValue.json([r.rule for r in report.failures])},
            )
        # This day's own page, in a one-day run and in every day of a range.
        context.add_asset_metadata(
            breakdown.metadata(report, window, options.billing_currency), partition_key=key
        )
        return day

    return DailyValues(keys=context.partition_keys, produce=build)


def _clusters_without_data(
    warnings: list[dict[str, Any]], clusters: dict[str, Cluster], day_start: datetime
) -> list[dict[str, str]]:
    """The clusters Cast AI has no data for, with their name and the reason it gave.

    A cluster deleted before the day began is expected to have none: it is left out, so a deleted
    cluster Cast AI still lists does not warn every day from then on."""
    return [
        {
            "cluster_id": str(w["cluster_id"]),
            "cluster_name": clusters[w["cluster_id"]].name if w["cluster_id"] in clusters else "",
            "reason": str(w.get("detail") or "none given"),
        }
        for w in sorted(warnings, key=lambda w: str(w["cluster_id"]))
        if w["rule"] == NO_DATA
        and not (w["cluster_id"] in clusters and clusters[w["cluster_id"]].deleted_by(day_start))
    ]


def _split_batches(
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
        table = to_focus_split(
            cluster_workloads,
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
                check_conservation(allocated, cluster_workloads),
                check_castai_consistency(cluster_workloads),
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


def _log_pricing(context: dg.AssetExecutionContext, key: str, pricing: dict[str, Any]) -> None:
    if pricing.get("negative_price_clamped_rows"):
        context.log.warning(
            f"{key}: discounts would make {pricing['negative_price_clamped_rows']} ContractedUnitPrice(s) "
            "negative; published as 0"
        )
    if pricing.get("time_weighted_rows"):
        context.log.warning(
            f"{key}: a discount starts or ends inside the charge period of {pricing['time_weighted_rows']} "
            "row(s); their ContractedUnitPrice is the time-weighted mean (hourly rows limit it to one hour)"
        )
    if pricing.get("listing_missing"):
        context.log.warning(
            f"{key}: no listing prices for cluster(s) {', '.join(pricing['listing_missing'])}; their "
            "ListUnitPrice is the effective rate"
        )
    if pricing.get("not_applied"):
        context.log.info(f"{key}: discounts not applied, by reason: {pricing['not_applied']}")


def _pricing_summary(
    enrichment: EnrichmentContext,
    clusters: dict[str, Cluster],
    listing: dict[str, pa.Table],
    stats: PricingStats,
    window: DayWindow,
) -> dict[str, Any]:
    """What the price rules did for the day: list price sources, discounts applied or not (and why)."""
    return {
        **stats.to_json(),
        "listing_missing": sorted(
            cid for cid, c in clusters.items() if not is_anywhere(c) and cid not in listing
        ),
        **discount_summary(enrichment.discounts, clusters.values(), window.start, window.end),
    }


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


def _window_of(key: str, workloads: WorkloadCostsDay, step_seconds: int) -> DayWindow:
    """The window the workload costs were fetched for (recorded by that asset), so the manifest matches it."""
    window = day_window(key, step_seconds)
    recorded = workloads.metadata.get(WINDOW_END_KEY)
    if recorded:
        end = datetime.fromisoformat(recorded.decode()).astimezone(UTC)
        window = DayWindow(day=window.day, start=window.start, end=end, step_seconds=step_seconds)
    return window


FOCUS_ASSETS = [
    castai_clusters,
    castai_workload_costs,
    castai_cluster_costs,
    castai_listing_prices,
    castai_enrichment_context,
    focus_cost_and_usage,
]
