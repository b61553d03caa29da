"""Unit prices of FOCUS rows: list price (listing report, Anywhere defaults, else effective rate) and
contracted price (discounts, Anywhere custom prices); see docs/focus-mapping.md "Prices"."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.castai.discounts import (
    PricingStats,
    charge_mask,
    cluster_reason,
    contracted_prices,
    unusable_reason,
)
from castai_focus_dagster.castai.models import EnrichmentContext
from castai_focus_dagster.focus.charges import CHARGES, NOT_SPOT, charges_of
from castai_focus_dagster.focus.clusters import ClusterInfo, is_anywhere

# Where a row's ListUnitPrice comes from (metadata `list_price_rows`).
LIST_SOURCES = ("effective_rate", "anywhere_default_pricing", "listing_report")


def unit_prices(
    charge: np.ndarray,
    cluster_entry: np.ndarray,
    period_start_us: np.ndarray,
    period_end_us: np.ndarray,
    cost_rate: np.ndarray,
    quantity_rate: np.ndarray,
    clusters: ClusterInfo,
    context: EnrichmentContext,
    listing: Mapping[str, pa.Table] | None = None,
    stats: PricingStats | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(ListUnitPrice, ContractedUnitPrice) per row; see docs/focus-mapping.md "Prices".

    `listing` maps cluster ids to their cluster cost report at listing prices (same window and step);
    `stats`, when given, receives what the rules did (list price sources, discounted and clamped rows).
    """
    row_list = np.full(charge.size, np.nan)
    source = np.full(charge.size, LIST_SOURCES.index("effective_rate"), dtype=np.int8)
    # Cast AI documents its default and cluster prices for Anywhere clusters only, and with no spot price:
    # they price on-demand (and spot-fallback, on-demand capacity) rows; spot rows keep their own rate.
    anywhere = clusters.is_anywhere[cluster_entry] & NOT_SPOT[charge]
    default = context.default_pricing
    if default is not None:
        defaults = (("cpu", default.cpu_hourly_price), ("memory", default.memory_gib_hourly_price))
        for resource, price in defaults:
            use = anywhere & charges_of(resource)[charge]
            row_list[use] = price
            source[use] = LIST_SOURCES.index("anywhere_default_pricing")
    for entry, cluster in enumerate(clusters.clusters):
        report = (listing or {}).get(cluster.id)
        if report is None or is_anywhere(cluster):
            continue
        rows = np.flatnonzero(cluster_entry == entry)
        rate = listing_rate(report, period_end_us[rows], charge[rows])
        found = ~np.isnan(rate)
        row_list[rows[found]] = rate[found]
        source[rows[found]] = LIST_SOURCES.index("listing_report")
    has_list = ~np.isnan(row_list)
    list_price = np.where(has_list, row_list, 0.0)
    fallback = np.flatnonzero(~has_list)
    list_price[fallback] = sku_effective_rate(
        cluster_entry[fallback], charge[fallback], period_end_us[fallback],
        cost_rate[fallback], quantity_rate[fallback],
    )  # fmt: skip

    # Discounts lower a list price, never Cast AI's effective rate (which already includes them).
    resources = [c.resource for c in CHARGES]
    tiers = [c.tier for c in CHARGES]
    usable = [d for d in context.discounts if unusable_reason(d) is None]
    masks = [
        has_list
        & np.array([cluster_reason(d, c) is None for c in clusters.clusters], dtype=bool)[cluster_entry]
        & charge_mask(d, resources, tiers)[charge]
        for d in usable
    ]
    contracted, negative, applied, weighted = contracted_prices(
        list_price, period_start_us, period_end_us, usable, masks
    )
    if stats is not None:
        for discount, lowered in zip(usable, applied, strict=True):
            if lowered.any():
                stats.discounted_rows[discount.id] += int(lowered.sum())
    for resource, custom in (("cpu", clusters.custom_cpu_price), ("memory", clusters.custom_memory_price)):
        row_custom = custom[cluster_entry]
        use = charges_of(resource)[charge] & NOT_SPOT[charge] & ~np.isnan(row_custom)
        contracted[use] = row_custom[use]
    if stats is not None:
        stats.clamped_rows += int(negative.sum())
        stats.time_weighted_rows += int(weighted.sum())
        counts = np.bincount(source, minlength=len(LIST_SOURCES))
        for name, count in zip(LIST_SOURCES, counts.tolist(), strict=True):
            if count:
                stats.list_price_rows[name] += count
    return list_price, contracted


def sku_effective_rate(
    cluster_entry: np.ndarray,
    charge: np.ndarray,
    period_end_us: np.ndarray,
    cost_rate: np.ndarray,
    quantity_rate: np.ndarray,
) -> np.ndarray:
    """Per row, the effective rate of its SKU price in its charge period: Σ cost ÷ Σ quantity over the
    rows of the same cluster, charge (resource and tier) and period that have a quantity.

    One rate per SkuPriceId and period, as FOCUS requires of a price looked up by SkuPriceId (a rate
    per row would give the workloads of one SKU price several list prices). Rows without quantity
    add nothing to it (their cost has no unit to spread over) and get the group's rate; 0 where no
    row of the group has a quantity.
    """
    if charge.size == 0:
        return np.zeros(0)
    # Hash-based grouping (O(n)): np.unique sorts, over a second per 4 million rows.
    period = _codes(period_end_us)  # a few distinct ends per day
    entries = int(cluster_entry.max()) + 1
    group = (period * entries + cluster_entry) * len(CHARGES) + charge
    if (int(period.max()) + 1) * entries * len(CHARGES) > 4 * group.size:
        group = _codes(group)  # sparse keys: number the groups that occur, so the sums stay small
    measured = quantity_rate != 0
    cost = np.bincount(group, weights=np.where(measured, cost_rate, 0.0))
    quantity = np.bincount(group, weights=np.where(measured, quantity_rate, 0.0))
    rate = np.divide(cost, quantity, out=np.zeros_like(cost), where=quantity != 0)
    return rate[group]


def _codes(values: np.ndarray) -> np.ndarray:
    """Each value's number among the distinct values, in order of first appearance (int64)."""
    return pc.dictionary_encode(pa.array(values.reshape(-1))).indices.to_numpy().astype(np.int64)


def listing_rate(report: pa.Table, period_end_us: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Listing unit price per row: the cluster's listing cost ÷ count of the row's bucket, tier and resource.

    NaN where the report has no bucket ending at the row's period end or a zero count for the charge.
    """
    rates = np.full(charge.size, np.nan)
    if report.num_rows == 0 or charge.size == 0:
        return rates
    ends = report.column("timestamp").cast(pa.int64()).to_numpy()
    order = np.argsort(ends, kind="stable")
    ends = ends[order]
    position = np.clip(np.searchsorted(ends, period_end_us), 0, ends.size - 1)
    matched = ends[position] == period_end_us
    bucket = order[position]
    names = set(report.column_names)
    for index, c in enumerate(CHARGES):
        rows = np.flatnonzero(matched & (charge == index))
        if rows.size == 0 or c.cost_field not in names or c.quantity_field not in names:
            continue
        cost = report.column(c.cost_field).to_numpy()[bucket[rows]]
        count = report.column(c.quantity_field).to_numpy()[bucket[rows]]
        rates[rows] = np.divide(cost, count, out=np.full(rows.size, np.nan), where=count > 0)
    return rates
