"""Refuse to replace a published day with a much smaller or much larger one unless asked to.

Pure functions: publication calls `check_replacement` and raises on its answer. Why the guard exists
and how a configuration change is treated: docs/architecture.md (storage/).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

# Run tags that allow one run to publish a change the guard would refuse.
ALLOW_SHRINK_TAG = "castai_focus/allow_shrink"
ALLOW_GROWTH_TAG = "castai_focus/allow_growth"
# A day, or a cluster, losing more than this share of its published BilledCost or rows is refused.
MAX_DROP = 0.25
# A day, or a cluster, whose BilledCost per hour covered exceeds this many times the published one.
MAX_GROWTH = 10.0
# Clusters that published less than this (USD) are compared only for vanishing, not by ratio: a
# few cents swing by any percentage.
MIN_COMPARED_COST = 1.0

# "configuration changed" is never refused: it records why the figures were not compared.
ChangeKind = Literal["shrink", "growth", "configuration changed"]
CONFIGURATION_CHANGED: ChangeKind = "configuration changed"


@dataclass(frozen=True)
class ClusterFigures:
    rows: int
    billed_cost: float


@dataclass(frozen=True)
class DayFigures:
    """What a day publishes: rows, Σ BilledCost, hours of buckets covered, and per-cluster figures.

    `clusters` is None for a manifest written before per-cluster figures existed (then only the day's
    totals and its cluster count can be compared); `cluster_count` is the number of listed clusters.
    `collection` is the configuration that shaped the day (None when the manifest does not record it).
    """

    rows: int
    billed_cost: float
    hours: float
    step_seconds: int | None
    cluster_count: int | None
    clusters: Mapping[str, ClusterFigures] | None
    collection: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    message: str


def figures_from_manifest(manifest: Any) -> DayFigures | None:
    """The published day's figures, or None when the manifest is absent or too damaged to compare."""
    if not isinstance(manifest, dict):
        return None
    try:
        rows = int(manifest["rowCount"])
        billed = float(manifest["costTotals"]["BilledCost"])
        window = manifest["sourceWindow"]
        hours = _hours(datetime.fromisoformat(window["start"]), datetime.fromisoformat(window["end"]))
        step = int(window["stepSeconds"]) if "stepSeconds" in window else None
    except (KeyError, TypeError, ValueError):
        return None
    if not math.isfinite(billed):
        return None
    clusters: dict[str, ClusterFigures] | None = None
    raw = manifest.get("clusters")
    if isinstance(raw, dict):
        try:
            clusters = {
                str(cid): ClusterFigures(int(v["rows"]), float(v["billedCost"])) for cid, v in raw.items()
            }
        except (KeyError, TypeError, ValueError):
            clusters = None
    raw_extra = manifest.get("extra")
    extra: dict[str, Any] = raw_extra if isinstance(raw_extra, dict) else {}
    count = extra.get("clusters")
    cluster_count = len(clusters) if clusters is not None else count if isinstance(count, int) else None
    collection = extra.get("collection")
    return DayFigures(
        rows,
        billed,
        hours,
        step,
        cluster_count,
        clusters,
        collection if isinstance(collection, dict) else None,
    )


def day_figures(
    rows: int,
    billed_cost: float,
    window: tuple[datetime, datetime],
    step_seconds: int,
    clusters: Mapping[str, tuple[int, float]],
    collection: Mapping[str, Any] | None = None,
) -> DayFigures:
    per_cluster = {cid: ClusterFigures(r, c) for cid, (r, c) in clusters.items()}
    return DayFigures(
        rows, billed_cost, _hours(*window), step_seconds, len(per_cluster), per_cluster, collection
    )


def collection_fingerprint(
    *,
    allocation_mode: str,
    granularity: str,
    include_cluster_ids: Sequence[str],
    exclude_cluster_ids: Sequence[str],
    include_namespaces: Sequence[str],
    exclude_namespaces: Sequence[str],
) -> dict[str, Any]:
    """The settings that decide which costs a day holds and how they are split, as the manifest's
    `extra.collection` (filters sorted and de-duplicated: their order changes nothing)."""
    return {
        "allocationMode": allocation_mode,
        "granularity": granularity,
        "includeClusterIds": sorted(set(include_cluster_ids)),
        "excludeClusterIds": sorted(set(exclude_cluster_ids)),
        "includeNamespaces": sorted(set(include_namespaces)),
        "excludeNamespaces": sorted(set(exclude_namespaces)),
    }


# Manifest field of the fingerprint -> the setting an operator changes.
_COLLECTION_SETTINGS = {
    "allocationMode": "FOCUS_ALLOCATION_MODE",
    "granularity": "COLLECTION_GRANULARITY",
    "includeClusterIds": "COLLECTION_INCLUDE_CLUSTER_IDS",
    "excludeClusterIds": "COLLECTION_EXCLUDE_CLUSTER_IDS",
    "includeNamespaces": "COLLECTION_INCLUDE_NAMESPACES",
    "excludeNamespaces": "COLLECTION_EXCLUDE_NAMESPACES",
}


def configuration_changes(published: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str]:
    """Each setting whose value differs between two fingerprints ([] when either is unknown)."""
    if published is None or new is None:
        return []
    names = sorted(set(published) | set(new), key=lambda n: (n not in _COLLECTION_SETTINGS, n))
    return [
        f"{_COLLECTION_SETTINGS.get(name, name)} {_setting(published.get(name))} -> {_setting(new.get(name))}"
        for name in names
        if published.get(name) != new.get(name)
    ]


def refused_changes(changes: list[Change], allow: frozenset[ChangeKind]) -> list[Change]:
    """The changes that stop the publication: those `allow` does not cover (a configuration change
    never does)."""
    return [c for c in changes if c.kind != CONFIGURATION_CHANGED and c.kind not in allow]


def check_replacement(published: DayFigures | None, new: DayFigures) -> list[Change]:
    """Every reason not to replace `published` by `new` silently; [] for a first publication."""
    if published is None or (published.rows == 0 and published.billed_cost == 0):
        return []  # nothing published, or an empty day: nothing to lose
    reconfigured = configuration_changes(published.collection, new.collection)
    if reconfigured:
        # Other settings make other figures: only a day that lost every cluster is still refused.
        noted = [Change(CONFIGURATION_CHANGED, "; ".join(reconfigured))]
        if new.cluster_count == 0 and (published.cluster_count or published.rows > 0):
            listed = published.clusters or {}
            noted.append(
                Change(
                    "shrink",
                    "Cast AI listed no clusters (or the cluster filters leave none); the published day has "
                    + (_list(listed) if listed else f"{published.rows} rows"),
                )
            )
        return noted
    # A day still being collected covers more hours at each run: scale the bounds by the coverage.
    ratio = new.hours / published.hours if published.hours > 0 else 1.0
    shrink_floor = (1 - MAX_DROP) * min(1.0, ratio)
    growth_ceiling = MAX_GROWTH * max(1.0, ratio)
    changes: list[Change] = []

    if published.clusters is not None and new.clusters is not None:
        vanished = {cid: f for cid, f in published.clusters.items() if cid not in new.clusters and f.rows > 0}
        if vanished and not new.clusters:
            changes.append(
                Change("shrink", "Cast AI listed no clusters; the published day has " + _list(vanished))
            )
        elif vanished:
            changes.append(Change("shrink", "cluster(s) no longer listed by Cast AI: " + _list(vanished)))
        for cid in sorted(set(published.clusters) & set(new.clusters)):
            before, after = published.clusters[cid], new.clusters[cid]
            if before.billed_cost < MIN_COMPARED_COST:
                continue
            if after.billed_cost < before.billed_cost * shrink_floor:
                changes.append(Change("shrink", f"cluster {cid}: {_cost_change(before, after)}"))
            elif after.billed_cost > before.billed_cost * growth_ceiling:
                changes.append(Change("growth", f"cluster {cid}: {_cost_change(before, after)}"))
    elif (
        published.cluster_count is not None
        and new.cluster_count is not None
        and new.cluster_count < published.cluster_count
    ):
        # An older manifest without per-cluster figures: the count is all there is to compare.
        changes.append(
            Change(
                "shrink",
                f"{new.cluster_count} cluster(s) listed, the published day has {published.cluster_count}",
            )
        )

    day_before = ClusterFigures(published.rows, published.billed_cost)
    day_after = ClusterFigures(new.rows, new.billed_cost)
    # Rows are comparable only at the same bucket size (COLLECTION_GRANULARITY changes them 24-fold).
    same_step = published.step_seconds is None or published.step_seconds == new.step_seconds
    fewer_rows = same_step and new.rows < published.rows * shrink_floor
    if new.billed_cost < published.billed_cost * shrink_floor or fewer_rows:
        changes.append(Change("shrink", f"day total: {_cost_change(day_before, day_after)}"))
    elif (
        published.billed_cost >= MIN_COMPARED_COST
        and new.billed_cost > published.billed_cost * growth_ceiling
    ):
        changes.append(Change("growth", f"day total: {_cost_change(day_before, day_after)}"))
    return changes


def refusal_message(
    changes: list[Change], *, day: str, where: str, published: DayFigures, new: DayFigures
) -> str:
    """One message naming the published and the new figures, every change, and how to allow it."""
    tags = sorted({ALLOW_SHRINK_TAG if c.kind == "shrink" else ALLOW_GROWTH_TAG for c in changes})
    return (
        f"refusing to replace the published FOCUS day {day} ({where}: {_figures(published)}) with "
        f"{_figures(new)}: "
        + "; ".join(c.message for c in changes)
        + ". Nothing was replaced. If the change is real (a deleted cluster, a Cast AI restatement), "
        "re-run the day with the run tag(s) " + ", ".join(f"{t}=true" for t in tags) + "."
    )


def allowed_kinds(tags: Mapping[str, str]) -> frozenset[ChangeKind]:
    """The change kinds a run's tags allow (a tag counts only with the value `true`)."""
    kinds: set[ChangeKind] = set()
    if tags.get(ALLOW_SHRINK_TAG, "").strip().lower() == "true":
        kinds.add("shrink")
    if tags.get(ALLOW_GROWTH_TAG, "").strip().lower() == "true":
        kinds.add("growth")
    return frozenset(kinds)


def _setting(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return "(unset)" if value is None else str(value)


def _hours(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds() / 3600)


def _figures(day: DayFigures) -> str:
    clusters = "" if day.cluster_count is None else f" from {day.cluster_count} cluster(s)"
    return f"{day.rows} rows, ${day.billed_cost:.2f}{clusters} over {day.hours:g} h"


def _cost_change(before: ClusterFigures, after: ClusterFigures) -> str:
    pct = (after.billed_cost / before.billed_cost - 1) * 100 if before.billed_cost else math.inf
    return (
        f"${before.billed_cost:.2f} ({before.rows} rows) -> ${after.billed_cost:.2f} ({after.rows} rows), "
        f"{pct:+.1f}%"
    )


def _list(clusters: Mapping[str, ClusterFigures]) -> str:
    return ", ".join(f"{cid} ({f.rows} rows, ${f.billed_cost:.2f})" for cid, f in sorted(clusters.items()))
