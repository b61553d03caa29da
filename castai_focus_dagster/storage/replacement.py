"""Compare the new day with the published one before anything is replaced (thresholds: publication_guard)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from castai_focus_dagster.storage.keys import figures_key, partition_object_prefix
from castai_focus_dagster.storage.legacy import DATA_OBJECT_SUFFIX, marked_ours
from castai_focus_dagster.storage.publication_guard import (
    ALLOW_SHRINK_TAG,
    Change,
    ChangeKind,
    DayFigures,
    check_replacement,
    day_figures,
    figures_from_manifest,
    refusal_message,
    refused_changes,
)
from castai_focus_dagster.storage.publish_model import PublishRequest, ReplacementRefused, jsonable, read_json
from castai_focus_dagster.storage.store_base import ObjectStore


def guard_replacement(
    store: ObjectStore,
    prefix: str,
    manifest_object: str,
    current: Any,
    req: PublishRequest,
    allow: frozenset[ChangeKind],
) -> list[str]:
    """Refuse (ReplacementRefused) a change of the published day that `allow` does not cover.

    The published figures come from the manifest, else from the figures object (which survives a
    retired, lost or withdrawn manifest). With neither, a data object of the day means something is
    published that cannot be compared: refused as a shrink, since the new day may be the empty one.
    Returns the findings that were allowed, for the manifest and the run log.
    """
    new = day_figures(
        req.row_count,
        req.totals.get("BilledCost", 0.0),
        req.source_window,
        req.step_seconds,
        req.cluster_totals or {},
        collection=jsonable(req.extra.get("collection")),  # None: not compared
    )
    if req.cluster_totals is None:
        new = replace(new, clusters=None, cluster_count=None)
    published, where = _published_figures(store, prefix, manifest_object, current, req)
    if published is None:
        return _guard_unverifiable(store, prefix, manifest_object, req, new, allow)
    changes = check_replacement(published, new)
    refused = refused_changes(changes, allow)
    if refused:
        message = refusal_message(
            refused,
            day=req.day.isoformat(),
            where=where,
            published=published,
            new=new,
        )
        raise ReplacementRefused(message, refused)
    return [f"{c.kind}: {c.message}" for c in changes]


def _published_figures(
    store: ObjectStore, prefix: str, manifest_object: str, current: Any, req: PublishRequest
) -> tuple[DayFigures | None, str]:
    """The published day's figures and where they were read: the manifest, else the figures object."""
    published = figures_from_manifest(current)
    if published is not None:
        return published, store.describe(manifest_object)
    key = figures_key(prefix, req.day)
    document = read_json(store, key)
    if isinstance(document, dict) and document.get("organizationId") == req.organization_id:
        published = figures_from_manifest(document)
        if published is not None:
            return published, store.describe(key)
    return None, ""


def _guard_unverifiable(
    store: ObjectStore,
    prefix: str,
    manifest_object: str,
    req: PublishRequest,
    new: DayFigures,
    allow: frozenset[ChangeKind],
) -> list[str]:
    """No figures to compare with: a first publication passes; over a data object of ours, refuse.

    A `-00` object without our writer's mark is the Go exporter's: `foreign_hour_zero` decides on it.
    """
    object_prefix = partition_object_prefix(prefix, req.organization_id, req.day)
    existing = [
        key
        for key in store.list(object_prefix)
        if (match := DATA_OBJECT_SUFFIX.match(key[len(object_prefix) :]))
        and match.group(1) == "00"
        and marked_ours(store, key, match.group(2))
    ]
    if not existing:
        return []
    finding = (
        f"{', '.join(store.describe(k) for k in existing)} is published but neither its manifest "
        f"({store.describe(manifest_object)}) nor its figures "
        f"({store.describe(figures_key(prefix, req.day))}) can be read, so the new day cannot be "
        "compared with it"
    )
    if "shrink" in allow:
        return [f"shrink: {finding}"]
    raise ReplacementRefused(
        f"refusing to publish the FOCUS day {req.day.isoformat()} ({new.rows} rows, "
        f"${new.billed_cost:.2f}): {finding}. Nothing was replaced. If the new day is right, re-run the day "
        f"with the run tag "
        f"{ALLOW_SHRINK_TAG}=true.",
        [Change("shrink", finding)],
    )


def figures_document(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the guard compares, from the manifest; no run id or time, so a re-run rewrites nothing."""
    fields = ("organizationId", "partition", "complete", "rowCount", "costTotals", "sourceWindow", "clusters")
    document = {name: manifest[name] for name in fields if name in manifest}
    document["figuresVersion"] = 1
    count = manifest.get("extra", {}).get("clusters")
    if isinstance(count, int):
        document["extra"] = {"clusters": count}
    return document
