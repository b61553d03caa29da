"""The Cast AI assets: clusters, workload costs, cluster cost reports, listing prices, enrichment.

Each returns a `DailyValues` so that a run over many days fetches and stores one day at a time;
workload costs stream cluster by cluster from the API into their stored file.
"""

from collections.abc import Callable, Iterator
from contextlib import closing

import dagster as dg
import pyarrow as pa

from castai_focus_dagster.castai.discounts import unusable_counts
from castai_focus_dagster.castai.enrichment import fetch_enrichment
from castai_focus_dagster.castai.errors import WRONG_STEP, CastAIError
from castai_focus_dagster.castai.fanout import in_input_order
from castai_focus_dagster.defs.asset_factory import (
    WINDOW_END_KEY,
    daily_asset,
    permanent_castai_errors_fail_fast,
    require_loaded_mode,
)
from castai_focus_dagster.defs.daily import DailyValues
from castai_focus_dagster.defs.resources import CastAIResource
from castai_focus_dagster.focus.clusters import is_anywhere
from castai_focus_dagster.focus.windows import DayWindow, day_window
from castai_focus_dagster.storage.intermediates import WorkloadCostsDay


@daily_asset(
    group_name="castai",
    kinds={"castai", "python"},
    description="Cast AI clusters of the organisation after COLLECTION_INCLUDE/EXCLUDE_CLUSTER_IDS.",
    calls_castai=True,
)
def castai_clusters(context: dg.AssetExecutionContext, castai: CastAIResource) -> DailyValues:
    settings = castai.settings
    with permanent_castai_errors_fail_fast():
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
                with permanent_castai_errors_fail_fast():
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
            with permanent_castai_errors_fail_fast():
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
        "Cast AI cluster cost reports (the clusters' own compute and storage charges, idle included); "
        "in the graph only when FOCUS_ALLOCATION_MODE=split."
    ),
    calls_castai=True,
)
def castai_cluster_costs(
    context: dg.AssetExecutionContext, castai: CastAIResource, castai_clusters: DailyValues
) -> DailyValues:
    settings = castai.settings
    require_loaded_mode(settings.focus_allocation_mode, split=True)

    def fetch(key: str) -> dict[str, pa.Table]:
        window = day_window(key, settings.step_seconds)
        ids = sorted(c.id for c in castai_clusters.get(key))
        if window.is_empty:
            return {}
        # No report, no split of its cluster: a report that fails fails the day.
        reports = _cluster_reports(castai, window, ids, use_listing_prices=False)
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

        def unavailable(cluster_id: str, exc: CastAIError) -> None:
            context.log.warning(
                f"{key}: listing prices of cluster {cluster_id} unavailable ({exc.reason}); its rows keep "
                f"their effective rate as ListUnitPrice: {exc}"
            )

        # List prices degrade to the effective rate; costs are unaffected.
        reports = _cluster_reports(castai, window, ids, use_listing_prices=True, on_unavailable=unavailable)
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


def _cluster_reports(
    castai: CastAIResource,
    window: DayWindow,
    cluster_ids: list[str],
    *,
    use_listing_prices: bool,
    on_unavailable: Callable[[str, CastAIError], None] | None = None,
) -> dict[str, pa.Table]:
    """Each cluster's cost report for the window, CASTAI_MAX_CONCURRENCY requests at a time.

    The failure policy: without `on_unavailable` the first cluster (by id) whose report fails fails the
    day and the reports not yet asked for are not asked for; with it, that cluster is handed to it and
    left out. A report in another bucket size than asked fails the day under either policy.
    """

    def attempt(cluster_id: str) -> pa.Table | CastAIError:
        try:
            return castai.client.cluster_cost_report(
                cluster_id,
                window.start,
                window.end,
                window.step_seconds,
                use_listing_prices=use_listing_prices,
            )
        except CastAIError as exc:
            return exc

    reports: dict[str, pa.Table] = {}
    # One small request per cluster and day (the client's rate limit still applies); a report is
    # ~one row per bucket, so the day's reports stay small.
    width = castai.settings.castai_max_concurrency
    with closing(in_input_order(attempt, cluster_ids, width, thread_name_prefix="castai-report")) as results:
        for cluster_id, result in results:
            if not isinstance(result, CastAIError):
                reports[cluster_id] = result
            elif on_unavailable is None or result.reason == WRONG_STEP:
                with permanent_castai_errors_fail_fast():
                    raise result
            else:
                on_unavailable(cluster_id, result)
    return reports
