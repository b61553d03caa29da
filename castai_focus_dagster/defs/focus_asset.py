"""The published asset, focus_cost_and_usage: FOCUS rows audited cluster by cluster, one day at a time.

Within a day, workload costs stream back out of their stored file through the FOCUS transform, audit
and encoder: memory holds a few clusters, never the organisation's day. Every cluster is audited before
the IO manager publishes the day: a failing audit raises and nothing replaces the published object.
"""

import functools
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pyarrow as pa

from castai_focus_dagster.castai.discounts import PricingStats, discount_summary
from castai_focus_dagster.castai.input_warnings import MISSING_WORKLOAD_IDENTITY, NO_DATA
from castai_focus_dagster.castai.models import Cluster, EnrichmentContext
from castai_focus_dagster.defs.asset_factory import (
    FOCUS_ASSET_KEY,
    PUBLICATION_IO_MANAGER_KEY,
    WINDOW_END_KEY,
    daily_asset,
    require_loaded_mode,
)
from castai_focus_dagster.defs.daily import DailyValues
from castai_focus_dagster.defs.finops import CostBreakdown
from castai_focus_dagster.defs.resources import FocusStorageResource
from castai_focus_dagster.defs.schedules import schedule_freshness_policy
from castai_focus_dagster.defs.split_batches import split_batches
from castai_focus_dagster.focus.audit import AuditReport, audit_focus
from castai_focus_dagster.focus.clusters import is_anywhere
from castai_focus_dagster.focus.options import FocusOptions
from castai_focus_dagster.focus.source import prepare_workloads
from castai_focus_dagster.focus.transform import to_focus
from castai_focus_dagster.focus.windows import DayWindow, day_window
from castai_focus_dagster.storage.focus_day import FocusDay, encode_focus_day
from castai_focus_dagster.storage.intermediates import WorkloadCostsDay, stored_input_warnings
from castai_focus_dagster.storage.keys import DATA_FORMATS


def focus_asset(*, split: bool) -> dg.AssetsDefinition:
    """focus_cost_and_usage for one allocation mode (only split mode reads the cluster cost reports),
    tagged with the format and destination the environment configures when the code location loads."""
    return _define(split=split, kinds=frozenset(published_kinds()))


def published_kinds(environ: Mapping[str, str] | None = None) -> set[str]:
    """The UI's kind tags of the published asset: its format and where it goes (`s3`, or `file` for
    the local folder), as the settings will read them; read when the code location loads."""
    env = os.environ if environ is None else environ
    fmt = env.get("S3_FORMAT", "").strip().lower()
    return {fmt if fmt in DATA_FORMATS else "parquet", "s3" if env.get("S3_BUCKET", "").strip() else "file"}


@functools.cache  # one definition per (mode, kinds): a reload with the same settings reuses it
def _define(*, split: bool, kinds: frozenset[str]) -> dg.AssetsDefinition:
    publish = daily_asset(
        name=FOCUS_ASSET_KEY.path[-1],
        group_name="focus",
        kinds=set(kinds),
        description=(
            "FOCUS 1.3 Cost and Usage rows, published as Hive-partitioned Parquet/CSV "
            "(version=focus-1.3/year=/month=/day=) after a conformance and conservation audit."
        ),
        metadata={"focus_version": "1.3"},
        calls_castai=False,
        freshness_policy=schedule_freshness_policy(),
        io_manager_key=PUBLICATION_IO_MANAGER_KEY,
    )
    if split:

        def split_allocation(
            context: dg.AssetExecutionContext,
            storage: FocusStorageResource,
            castai_clusters: DailyValues,
            castai_workload_costs: DailyValues,
            castai_cluster_costs: DailyValues,
            castai_listing_prices: DailyValues,
            castai_enrichment_context: DailyValues,
        ) -> DailyValues:
            return _focus_days(
                context,
                storage,
                castai_clusters,
                castai_workload_costs,
                castai_listing_prices,
                castai_enrichment_context,
                cluster_costs=castai_cluster_costs,
            )

        return publish(split_allocation)

    def workload_allocation(
        context: dg.AssetExecutionContext,
        storage: FocusStorageResource,
        castai_clusters: DailyValues,
        castai_workload_costs: DailyValues,
        castai_listing_prices: DailyValues,
        castai_enrichment_context: DailyValues,
    ) -> DailyValues:
        return _focus_days(
            context,
            storage,
            castai_clusters,
            castai_workload_costs,
            castai_listing_prices,
            castai_enrichment_context,
            cluster_costs=None,
        )

    return publish(workload_allocation)


def _focus_days(
    context: dg.AssetExecutionContext,
    storage: FocusStorageResource,
    castai_clusters: DailyValues,
    castai_workload_costs: DailyValues,
    castai_listing_prices: DailyValues,
    castai_enrichment_context: DailyValues,
    *,
    cluster_costs: DailyValues | None,
) -> DailyValues:
    settings = storage.settings
    options = FocusOptions.from_settings(settings)
    require_loaded_mode(settings.focus_allocation_mode, split=cluster_costs is not None)

    def build(key: str) -> FocusDay:
        workloads: WorkloadCostsDay = castai_workload_costs.get(key)
        enrichment = castai_enrichment_context.get(key)
        clusters = {c.id: c for c in castai_clusters.get(key)}
        listing: dict[str, pa.Table] = castai_listing_prices.get(key)
        stats = PricingStats()

        def audited_batches() -> Iterator[tuple[pa.Table, AuditReport]]:
            # One cluster at a time: every rule is local to a row or a workload, hence to a cluster.
            if cluster_costs is not None:
                yield from split_batches(
                    workloads,
                    cluster_costs.get(key),
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


def _window_of(key: str, workloads: WorkloadCostsDay, step_seconds: int) -> DayWindow:
    """The window the workload costs were fetched for (recorded by that asset), so the manifest matches it."""
    window = day_window(key, step_seconds)
    recorded = workloads.metadata.get(WINDOW_END_KEY)
    if recorded:
        end = datetime.fromisoformat(recorded.decode()).astimezone(UTC)
        window = DayWindow(day=window.day, start=window.start, end=end, step_seconds=step_seconds)
    return window
