"""Which Cast AI discounts lower which FOCUS rows: the scope rules, pure and vectorised over rows.

A discount applies to a row only when every part of its scope can be evaluated from the row; node
scopes (`families`, `instanceTypes`, `zones`, `os`) never can, so such discounts are not applied
(rather than lowering rows outside their scope). Every discount not applied is counted with its reason.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from castai_focus_dagster.castai.models import Cluster, Discount
from castai_focus_dagster.castai.units import to_microseconds

# Cast AI `providerType` -> discount `csp` ("aws", "azure", "gcp", "oracle"). openshift, kops and anywhere
# clusters may run on any cloud or on premises: their CSP is unknown, so no discount can be evaluated.
CSP_OF_PROVIDER: dict[str, str] = {
    "eks": "aws",
    "selfhostedwithec2nodes": "aws",
    "gke": "gcp",
    "aks": "azure",
    "oke": "oracle",
}
KNOWN_CSPS = frozenset({"aws", "azure", "gcp", "oracle"})
# An instance discount lowers what the instance is billed for: its vCPUs and its memory. GPUs and volumes
# are priced separately by every provider, so TARGET_INSTANCE lowers neither.
TARGET_RESOURCES: dict[str, tuple[str, ...]] = {
    "TARGET_CPU": ("cpu",),
    "TARGET_MEMORY": ("memory",),
    "TARGET_INSTANCE": ("cpu", "memory"),
}
# Spot-fallback capacity is on-demand instances started because spot was unavailable: it is on-demand
# for a discount's lifecycle, while its PricingCategory stays Dynamic (the provider chose the capacity).
LIFECYCLE_OF_TIER: dict[str, str] = {
    "on-demand": "LIFECYCLE_ON_DEMAND",
    "spot": "LIFECYCLE_SPOT",
    "spot-fallback": "LIFECYCLE_ON_DEMAND",
}
PRICING_TYPES = frozenset({"TYPE_PERCENTAGE", "TYPE_FLAT", "TYPE_FIXED"})

# Reasons a discount is not applied (metadata keys, documented in docs/focus-mapping.md).
DISABLED = "disabled"
UNSUPPORTED_TARGET = "unsupported_target"  # TARGET_COMMITMENT, TARGET_CUSTOM_*, TARGET_UNKNOWN
UNSUPPORTED_PRICING_TYPE = "unsupported_pricing_type"  # TYPE_UNKNOWN or a type this code does not know
FIXED_INSTANCE_PRICE = "fixed_instance_price"  # a whole-instance price cannot be split into vCPU and GiB
FLAT_INSTANCE_AMOUNT = "flat_instance_amount"  # nor can an amount off a whole instance's price
NEGATIVE_FIXED_PRICE = "negative_fixed_price"
NODE_SCOPE = "node_scope"  # families / instanceTypes / zones / os: not evaluable on workload rows
UNKNOWN_CSP = "unknown_csp"  # csp missing or not one of aws, azure, gcp, oracle
UNKNOWN_LIFECYCLE = "unknown_lifecycle"  # lifeCycles lists only LIFECYCLE_UNKNOWN or unknown values
PROVIDER_WITHOUT_CSP = "provider_without_csp"  # only clusters whose CSP is unknown (anywhere, kops, ...)
OUT_OF_SCOPE = "out_of_scope"  # csp, clusters or regions exclude every cluster of the day
OUTSIDE_DATES = "outside_dates"  # startDate/endDate exclude the whole day


def unusable_reason(discount: Discount) -> str | None:
    """Why this discount can lower no row at all, whatever the cluster; None when it may apply."""
    if not discount.enabled:
        return DISABLED
    if discount.target not in TARGET_RESOURCES:
        return UNSUPPORTED_TARGET
    if discount.pricing_type not in PRICING_TYPES:
        return UNSUPPORTED_PRICING_TYPE
    if discount.target == "TARGET_INSTANCE" and discount.pricing_type == "TYPE_FLAT":
        return FLAT_INSTANCE_AMOUNT  # subtracted from each vCPU-hour and GiB-hour it would count many times
    if discount.pricing_type == "TYPE_FIXED":
        if discount.target == "TARGET_INSTANCE":
            return FIXED_INSTANCE_PRICE
        if discount.value < 0:
            return NEGATIVE_FIXED_PRICE
    if discount.families or discount.instance_types or discount.zones or discount.os:
        return NODE_SCOPE
    if discount.csp not in KNOWN_CSPS:
        return UNKNOWN_CSP
    # lifeCycles is a list of alternatives: LIFECYCLE_UNKNOWN (or an unknown value) next to a known one
    # matches no row, the known ones still do. A list of unknown values alone cannot be evaluated.
    if discount.life_cycles and not set(discount.life_cycles) & set(LIFECYCLE_OF_TIER.values()):
        return UNKNOWN_LIFECYCLE
    return None


def cluster_reason(discount: Discount, cluster: Cluster) -> str | None:
    """Why this (usable) discount does not apply to `cluster`; None when the cluster is in its scope."""
    csp = CSP_OF_PROVIDER.get(cluster.provider_type.strip().lower())
    if csp is None:
        return PROVIDER_WITHOUT_CSP
    if csp != discount.csp:
        return OUT_OF_SCOPE
    if discount.clusters and cluster.id not in discount.clusters:
        return OUT_OF_SCOPE
    if discount.regions and (cluster.region_name or "") not in discount.regions:
        return OUT_OF_SCOPE
    return None


def charge_mask(discount: Discount, resources: Sequence[str], tiers: Sequence[str | None]) -> np.ndarray:
    """Per charge (resource, tier): whether the discount's target and lifeCycles include it."""
    targets = TARGET_RESOURCES.get(discount.target, ())
    lifecycles = set(discount.life_cycles)
    return np.array(
        [
            resource in targets and (not lifecycles or LIFECYCLE_OF_TIER.get(tier or "", "") in lifecycles)
            for resource, tier in zip(resources, tiers, strict=True)
        ],
        dtype=bool,
    )


def contracted_prices(
    price: np.ndarray,
    period_start_us: np.ndarray,
    period_end_us: np.ndarray,
    discounts: Sequence[Discount],
    masks: Sequence[np.ndarray],
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """Per row: the list price less the discounts in scope, averaged over the row's charge period.

    `masks[i]` marks the rows discount i's scope (cluster, charge, tier) includes. The period is cut at
    every startDate/endDate inside it; each part pays the list price less the discounts active over it,
    applied in list order, each result clamped at 0 (a price is never negative, and the next discount
    applies to what the resource then costs). The row's price is the time-weighted mean of its parts, so
    a daily row a discount covers for half the day gets half of it. Returns (prices, clamped: rows where
    a step fell below 0, applied[i]: rows discount i lowered for some part of the period, weighted: rows
    whose parts had different prices, priced as the time-weighted mean).
    """
    n = price.size
    contracted = price.astype(np.float64, copy=True)
    clamped = np.zeros(n, dtype=bool)
    applied = [np.zeros(n, dtype=bool) for _ in discounts]
    touched = np.zeros(n, dtype=bool)
    for mask in masks:
        touched |= mask
    rows = np.flatnonzero(touched)
    weighted_rows = np.zeros(n, dtype=bool)
    if rows.size == 0:
        return contracted, clamped, applied, weighted_rows
    start = period_start_us[rows].astype(np.int64)
    end = np.maximum(period_end_us[rows].astype(np.int64), start + 1)  # an empty period: its start
    length = (end - start).astype(np.float64)
    bounds = [(None if d.start_date is None else micros(d.start_date),
               None if d.end_date is None else micros(d.end_date)) for d in discounts]  # fmt: skip
    # Parts between the earliest start and the latest end, cut only where a date falls inside.
    first_us, last_us = int(start.min()), int(end.max())
    edges = [
        first_us,
        *sorted({b for pair in bounds for b in pair if b is not None and first_us < b < last_us}),
    ]
    edges.append(last_us)
    weighted = np.zeros(rows.size)
    first = np.full(rows.size, np.nan)  # the price of a row's first part, to keep one-part rows exact
    uniform = np.ones(rows.size, dtype=bool)
    for lo, hi in itertools.pairwise(edges):
        overlap = np.minimum(end, hi) - np.maximum(start, lo)
        part = np.flatnonzero(overlap > 0)
        if part.size == 0:
            continue
        part_price = price[rows[part]].astype(np.float64, copy=True)
        for index, (discount, mask) in enumerate(zip(discounts, masks, strict=True)):
            begin, finish = bounds[index]
            if (begin is not None and begin > lo) or (finish is not None and hi > finish):
                continue  # the discount is not active over this part (cuts make it all or nothing)
            selected = mask[rows[part]]
            if not selected.any():
                continue
            lowered = discounted(discount, part_price[selected])
            negative = lowered < 0
            clamped[rows[part[selected][negative]]] = True
            part_price[selected] = np.maximum(lowered, 0.0)
            applied[index][rows[part[selected]]] = True
        weighted[part] += overlap[part] / length[part] * part_price
        new = np.isnan(first[part])
        first[part[new]] = part_price[new]
        uniform[part[~new]] &= first[part[~new]] == part_price[~new]
    contracted[rows] = np.where(uniform, first, weighted)
    weighted_rows[rows] = ~uniform
    return contracted, clamped, applied, weighted_rows


def discounted(discount: Discount, price: np.ndarray) -> np.ndarray:
    """Cast AI pricing types: PERCENTAGE ("0.1" = 10 % off), FLAT (subtract; negative adds), FIXED (override).

    Not clamped: `contracted_prices` clamps each step at 0 and counts the rows it clamped."""
    if discount.pricing_type == "TYPE_PERCENTAGE":
        return price * (1.0 - discount.value)
    if discount.pricing_type == "TYPE_FLAT":
        return price - discount.value
    if discount.pricing_type == "TYPE_FIXED":
        return np.full_like(price, discount.value)
    return price


def micros(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (naive datetimes are UTC)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return to_microseconds(aware)


@dataclass
class PricingStats:
    """What the unit-price rules did, summed over the batches of a day (materialisation metadata)."""

    list_price_rows: Counter[str] = field(default_factory=Counter)  # source -> rows
    discounted_rows: Counter[str] = field(default_factory=Counter)  # discount id -> rows it lowered
    clamped_rows: int = 0  # rows where a discount step fell below 0 and was clamped to 0
    time_weighted_rows: int = 0  # rows a discount date cuts: priced as the time-weighted mean

    def to_json(self) -> dict[str, Any]:
        return {
            "list_price_rows": dict(sorted(self.list_price_rows.items())),
            "discounted_rows": dict(sorted(self.discounted_rows.items())),
            "negative_price_clamped_rows": self.clamped_rows,
            "time_weighted_rows": self.time_weighted_rows,
        }


def unusable_counts(discounts: Sequence[Discount]) -> dict[str, int]:
    """Discounts that can lower no row whatever the cluster, by reason (enrichment metadata)."""
    counts = Counter(r for r in map(unusable_reason, discounts) if r is not None)
    return dict(sorted(counts.items()))


def discount_summary(
    discounts: Sequence[Discount], clusters: Iterable[Cluster], start: datetime, end: datetime
) -> dict[str, Any]:
    """Per day: how many discounts may apply, and every other discount counted by the reason it is not."""
    cluster_list = list(clusters)
    not_applied: Counter[str] = Counter()
    in_scope: list[str] = []
    for discount in discounts:
        reason = unusable_reason(discount)
        if reason is None:
            reasons = {cluster_reason(discount, c) for c in cluster_list}
            if None not in reasons:
                reason = PROVIDER_WITHOUT_CSP if reasons == {PROVIDER_WITHOUT_CSP} else OUT_OF_SCOPE
            elif (discount.start_date is not None and discount.start_date >= end) or (
                discount.end_date is not None and discount.end_date <= start
            ):
                reason = OUTSIDE_DATES
        if reason is None:
            in_scope.append(discount.id)
        else:
            not_applied[reason] += 1
    return {
        "discounts": len(discounts),
        "in_scope": sorted(in_scope),
        "not_applied": dict(sorted(not_applied.items())),
    }
