"""Write-audit-publish of one daily FOCUS partition: stage, read back and audit, guard, copy, manifest last.

The steps and their guarantees are described in docs/architecture.md (storage/); each step is its own
module, and this one runs them in order under the day's lease.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from castai_focus_dagster.storage.keys import (
    data_key,
    figures_key,
    lease_key,
    manifest_key,
    partition_dir,
    partition_object_prefix,
    staging_dir,
    staging_key,
    ternary_key,
)
from castai_focus_dagster.storage.lease import (
    LEASE_POLL_SECONDS,
    LEASE_WAIT_SECONDS,
    acquire_lease,
    release_lease,
)
from castai_focus_dagster.storage.legacy import delete_stale_data_objects, foreign_hour_zero
from castai_focus_dagster.storage.manifest import (
    commit_manifest,
    manifest_document,
    retire_manifest_unless_describing,
)
from castai_focus_dagster.storage.metadata import canonical_json
from castai_focus_dagster.storage.metadata_publish import write_focus_metadata
from castai_focus_dagster.storage.ownership import claim_prefix
from castai_focus_dagster.storage.payload import Payload, payload_sha256, payload_size, read_back, upload
from castai_focus_dagster.storage.publication_guard import ChangeKind
from castai_focus_dagster.storage.publish_model import (
    PublishError,
    PublishRequest,
    PublishResult,
    put_json_if_changed,
    read_json,
)
from castai_focus_dagster.storage.replacement import figures_document, guard_replacement
from castai_focus_dagster.storage.serialize import data_format
from castai_focus_dagster.storage.store_base import ObjectStore


def _utc_now() -> datetime:
    return datetime.now(UTC)


def publish_partition(
    store: ObjectStore,
    req: PublishRequest,
    *,
    prefix: str,
    ternary_prefix: str | None,
    audit: Callable[[Payload], None] | None = None,  # receives the staged copy, of the kind of `data`
    clock: Callable[[], datetime] = _utc_now,
    delete_legacy_hourly: bool = False,
    allow_changes: frozenset[ChangeKind] = frozenset(),
    lease_wait_seconds: float = LEASE_WAIT_SECONDS,
    lease_poll_seconds: float = LEASE_POLL_SECONDS,
) -> PublishResult:
    """Publish one partition: the steps in order, under the day's lease (docs/architecture.md, storage/)."""
    final = data_key(prefix, req.organization_id, req.day, req.fmt)
    # (tree prefix, data key, role) for the main tree and, when enabled, the Ternary tree.
    trees = [(prefix, final, "data")]
    if ternary_prefix:
        copy = ternary_key(ternary_prefix, prefix, req.organization_id, req.day, req.fmt)
        trees.append((ternary_prefix + prefix, copy, "ternary"))
    checksum, size = payload_sha256(req.data), payload_size(req.data)
    files = [_file_entry(store, key, req, checksum, size, role) for _, key, role in trees]
    staging = staging_key(prefix, final, req.run_id)
    manifest_object = manifest_key(prefix, req.day)
    claim_prefix(store, prefix, req.organization_id)
    lease = acquire_lease(
        store, lease_key(prefix, req.day), req, clock, lease_wait_seconds, lease_poll_seconds
    )
    try:
        return _publish_holding_lease(
            store, req, prefix, trees, files, checksum, size, staging, manifest_object, audit, clock,
            delete_legacy_hourly, allow_changes,
        )  # fmt: skip
    finally:
        release_lease(store, *lease)


def _publish_holding_lease(
    store: ObjectStore,
    req: PublishRequest,
    prefix: str,
    trees: list[tuple[str, str, str]],
    files: list[dict[str, Any]],
    checksum: str,
    size: int,
    staging: str,
    manifest_object: str,
    audit: Callable[[Payload], None] | None,
    clock: Callable[[], datetime],
    delete_legacy_hourly: bool,
    allow_changes: frozenset[ChangeKind],
) -> PublishResult:
    final = trees[0][1]
    _remove_stale_temporary(store, [partition_dir(tree, req.day) for tree, _, _ in trees])
    try:
        upload(store, staging, req.data, data_format(req.fmt).content_type)
        with read_back(store, staging, like=req.data) as staged:
            staged_checksum = payload_sha256(staged)
            if staged_checksum != checksum:
                raise PublishError(
                    f"staged object {store.describe(staging)} does not match the uploaded bytes "
                    f"(sha256 {staged_checksum} != {checksum}); nothing was published"
                )
            if audit is not None:
                try:
                    audit(staged)
                except Exception as exc:
                    exc.add_note(f"audit rejected {store.describe(final)}; the previous object is unchanged")
                    raise
        current_version = store.version(manifest_object)
        current = read_json(store, manifest_object)
        allowed = guard_replacement(store, prefix, manifest_object, current, req, allow_changes)
        foreign = foreign_hour_zero(store, [tree for tree, _, _ in trees], current, req, delete_legacy_hourly)
        expected = retire_manifest_unless_describing(store, manifest_object, current, current_version, files)
        for _, key, _ in trees:
            store.copy(staging, key)
        stale: list[str] = []
        legacy: list[str] = []
        copied = {key: store.version(key) for _, key, _ in trees}
        for tree, key, _ in trees:
            ours, hourly = delete_stale_data_objects(store, tree, req, key, delete_legacy_hourly)
            stale += [k for k in ours if k not in foreign]
            legacy += hourly
        legacy += foreign  # overwritten at the day's key, or deleted in the other format
        now = clock()
        schema_id, dataset_instance_id = write_focus_metadata(store, req, prefix, now)
        manifest = manifest_document(req, files, checksum, size, schema_id, dataset_instance_id, now, allowed)
        # The guard's copy of the figures, before the manifest (which stays the last write): a run
        # that fails from here on leaves figures describing the bytes it copied.
        figures = figures_key(prefix, req.day)
        put_json_if_changed(store, figures, figures_document(manifest), read_json(store, figures))
        commit_manifest(store, manifest_object, canonical_json(manifest), expected, copied)
    except BaseException as exc:
        try:
            store.delete(staging)
        except Exception as cleanup:
            exc.add_note(f"staging object {store.describe(staging)} could not be deleted: {cleanup}")
        raise
    _delete_partition_staging(store, prefix, req)
    return PublishResult(
        data_keys=[final],
        ternary_keys=[key for _, key, _ in trees[1:]],
        manifest_key=manifest_object,
        checksum_sha256=checksum,
        bytes=size,
        legacy_hourly_keys=legacy,
        legacy_deleted=delete_legacy_hourly,
        stale_deleted_keys=stale,
        allowed_changes=allowed,
    )


def _remove_stale_temporary(store: ObjectStore, folders: list[str]) -> None:
    """Temporary files of killed writers (local folder only; an S3 upload leaves no object)."""
    remove = getattr(store, "remove_stale_temporary", None)
    if remove is not None:
        remove(tuple(folders))


def _file_entry(
    store: ObjectStore, key: str, req: PublishRequest, checksum: str, size: int, role: str
) -> dict[str, Any]:
    return {
        "key": key,
        "uri": store.describe(key),
        "role": role,
        "bytes": size,
        "sha256": checksum,
        "rowCount": req.row_count,
    }


def _delete_partition_staging(store: ObjectStore, prefix: str, req: PublishRequest) -> None:
    """Delete this run's staging object and any a failed earlier run left for the same partition.

    A concurrent run of the same partition would lose its staging object here and fail at its copy:
    loud, and its previous objects are intact.
    """
    root = staging_dir(prefix)
    partition_prefix = partition_object_prefix(prefix, req.organization_id, req.day)
    for key in store.list(root):
        _run_id, _, final = key[len(root) :].partition("/")
        if final.startswith(partition_prefix):
            store.delete(key)
