"""The partition manifest: built from the request, retired before its objects change, committed last."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from castai_focus_dagster.storage.keys import FOCUS_VERSION
from castai_focus_dagster.storage.metadata import FOCUS_DATASET_ID, day_sector, focus_datetime
from castai_focus_dagster.storage.publish_model import (
    JSON_CONTENT_TYPE,
    PublishError,
    PublishRequest,
    jsonable,
)
from castai_focus_dagster.storage.store_base import ObjectStore, PreconditionFailed

# 2: per-cluster figures ("clusters"), which the replacement guard compares.
MANIFEST_VERSION = 2
_MANIFEST_ATTEMPTS = 3


def manifest_document(
    req: PublishRequest,
    files: list[dict[str, Any]],
    checksum: str,
    size: int,
    schema_id: str,
    dataset_instance_id: str,
    now: datetime,
    allowed_changes: list[str],
) -> dict[str, Any]:
    sector = day_sector(req.day, complete=req.complete, last_updated=now)
    manifest: dict[str, Any] = {
        "manifestVersion": MANIFEST_VERSION,
        "focusVersion": FOCUS_VERSION,
        "focusDatasetId": FOCUS_DATASET_ID,
        "datasetInstanceId": dataset_instance_id,
        "schemaId": schema_id,
        "organizationId": req.organization_id,
        "partition": {
            "day": req.day.isoformat(),
            "start": focus_datetime(sector.start),
            "end": focus_datetime(sector.end),
        },
        "complete": req.complete,
        "format": req.fmt,
        "files": files,
        "rowCount": req.row_count,
        "bytes": size,
        "checksumSha256": checksum,
        "costTotals": dict(sorted(req.totals.items())),
        "sourceWindow": {
            "start": focus_datetime(req.source_window[0]),
            "end": focus_datetime(req.source_window[1]),
            "stepSeconds": req.step_seconds,
        },
        "generatorVersion": req.generator_version,
        "runId": req.run_id,
        "publishedAt": focus_datetime(now),
        "extra": jsonable(req.extra),
    }
    if req.cluster_totals is not None:
        manifest["clusters"] = {
            cid: {"rows": rows, "billedCost": cost}
            for cid, (rows, cost) in sorted(req.cluster_totals.items())
        }
    if allowed_changes:  # the replacement guard's findings this run was allowed to publish
        manifest["allowedChanges"] = allowed_changes
    return manifest


def retire_manifest_unless_describing(
    store: ObjectStore, key: str, current: Any, version: str | None, files: list[dict[str, Any]]
) -> str | None:
    """Delete the manifest before the objects it lists change, unless it lists exactly the new ones.

    Returns the manifest version the final write expects (None: absent).
    """
    if current is None:
        if version is not None:  # unreadable manifest: it cannot vouch for anything
            store.delete(key)
        return None

    def described(entries: Any) -> set[tuple[Any, Any, Any]]:
        if not isinstance(entries, list):
            return set()
        return {(e.get("key"), e.get("sha256"), e.get("bytes")) for e in entries if isinstance(e, dict)}

    if described(current.get("files") if isinstance(current, dict) else None) != described(files):
        store.delete(key)
        return None
    return version


def commit_manifest(
    store: ObjectStore, key: str, body: bytes, expected: str | None, copied: dict[str, str | None]
) -> None:
    """Write the manifest only while every data key holds the version this run copied there.

    Each attempt checks the data, then writes conditionally on the manifest version last seen; when
    another run wrote the manifest meanwhile, the data is checked again before overwriting it (the data
    decides who may describe it). After the write the data is checked once more: if another run replaced
    it in between, this run's manifest is withdrawn (when still its own) and the run fails.
    """
    for _attempt in range(_MANIFEST_ATTEMPTS):
        _check_data_unchanged(store, copied, key)
        try:
            store.put_if(key, body, JSON_CONTENT_TYPE, expected)
        except PreconditionFailed:
            expected = store.version(key)
            continue
        break
    else:
        raise PublishError(
            f"{store.describe(key)} kept changing under concurrent publications of the same day; "
            "the manifest was not written (the data objects are complete); re-run the day"
        )
    written = store.version(key)
    try:
        _check_data_unchanged(store, copied, key)
    except PublishError:
        if store.version(key) == written:
            store.delete(key)
        raise


def _check_data_unchanged(store: ObjectStore, copied: dict[str, str | None], manifest: str) -> None:
    changed = sorted(k for k, version in copied.items() if store.version(k) != version)
    if changed:
        raise PublishError(
            f"{', '.join(store.describe(k) for k in changed)} was replaced by another run while this run "
            f"published the same day; this run does not write {store.describe(manifest)} (the other run's "
            "publication stands)"
        )
