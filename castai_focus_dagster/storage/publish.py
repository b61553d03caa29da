"""Write-audit-publish of one daily FOCUS partition to an object store.

Consumers (Athena, Ternary, DuckDB) read the data tree directly, so publication must never expose a
partial, unaudited or duplicated object, and a manifest must never describe bytes that are not there:

0. check that the prefix belongs to this organisation (its marker, written at the first publication);
   then take the day's lease (`_locks/`), held to the end: another run of the day waits for it;
1. upload the bytes to a staging key outside the data tree;
2. read them back, verify the SHA-256, run the caller's audit (which raises to abort);
3. compare the new day with the published one (publication_guard; its figures come from the
   manifest, else from the day's figures object, which is never retired; a data object of ours with
   neither is refused as a shrink): a shrink or growth beyond the thresholds is refused unless the caller
   allows that kind of change; a `-00` object of the day that no manifest of ours lists and that lacks
   our writer's mark is the Go exporter's (its run at hour 00 wrote the same key): refused unless the
   caller asks (`delete_legacy_hourly`), else replaced;
4. retire the partition's manifest if it describes other objects, then copy staging -> final data key
   (deterministic: overwrites, never a second copy) and the Ternary copy;
5. delete our stale data objects of the partition (the other format of hour `00`) in both trees; the
   Go exporter's hour objects (`-01` ... `-23`) only when the caller asks (`delete_legacy_hourly`),
   otherwise they are kept and reported in the result;
6. write the FOCUS metadata documents and the figures object, then the manifest last, conditionally:
   only while the data keys still hold the versions this run copied, and (If-Match / If-None-Match)
   only over the manifest version this run last saw; re-checked after the write;
7. delete the staging object (and any a failed earlier run left for this partition).

A failure before 4 leaves every published object untouched. A failure from 4 on may leave the partition
without a manifest (and, during a format switch, with both formats), never with a manifest that lists
missing or different bytes; re-running the publish repairs everything. The data bytes
are the caller's and carry no run timestamp, so re-publishing identical data rewrites identical objects.

The data is either bytes or a seekable local file (`Payload`): a day of a large organisation is
published from a temporary file, staged and read back through files, so memory stays flat.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, BinaryIO

from castai_focus_dagster.storage.keys import (
    FOCUS_VERSION,
    DataFormat,
    data_key,
    figures_key,
    lease_key,
    manifest_day,
    manifest_dir,
    manifest_key,
    metadata_keys,
    organization_marker_key,
    partition_dir,
    partition_object_prefix,
    staging_dir,
    staging_key,
    ternary_key,
)
from castai_focus_dagster.storage.metadata import (
    FOCUS_DATASET_ID,
    TimeSector,
    canonical_json,
    column_definitions,
    data_generator_document,
    dataset_instance_document,
    dataset_instance_id_for,
    day_sector,
    focus_datetime,
    parse_focus_datetime,
    recency_document,
    schema_document,
    schema_id_for,
    sectors_from_recency,
)
from castai_focus_dagster.storage.object_store import ObjectNotFound, ObjectStore, PreconditionFailed
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
from castai_focus_dagster.storage.serialize import written_by_this_exporter

# The day's publication lease: how long it is valid (a killed holder blocks the day this long at most),
# how long another run waits for it before failing (transient: the step retry tries again), how often
# it looks.
LEASE_SECONDS = 900
LEASE_WAIT_SECONDS = 300.0
LEASE_POLL_SECONDS = 2.0
# (lease key, run id) of the leases this process holds now: a lease naming this process but not listed
# here was left by an earlier run in this process whose release failed.
_HELD_LEASES: set[tuple[str, str]] = set()
_log = logging.getLogger(__name__)
# 2: per-cluster figures ("clusters"), which the replacement guard compares.
MANIFEST_VERSION = 2
_MANIFEST_ATTEMPTS = 3
CONTENT_TYPES: dict[str, str] = {
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv; charset=utf-8",
}
JSON_CONTENT_TYPE = "application/json"
# The part of a data object name after partition_object_prefix(): the hour and the format.
_DATA_OBJECT_SUFFIX = re.compile(r"^(\d{2})\.(parquet|csv)$")

# The serialized object: in memory, or a seekable binary file (large days never enter memory whole).
Payload = bytes | BinaryIO
_HASH_CHUNK = 1 << 20


class PublishError(RuntimeError):
    """Publication was refused or could not complete; the message names the object involved."""


class ReplacementRefused(PublishError):
    """The new day differs from the published one beyond the guard's thresholds; nothing was replaced."""

    def __init__(self, message: str, changes: list[Change]):
        super().__init__(message)
        self.changes = changes


class PrefixOwnedError(PublishError):
    """The prefix holds another organisation's export; nothing was written."""


class ForeignObjectRefused(PublishError):
    """A `-00` object of the day is not ours (the Go exporter's) and the caller did not allow replacing it."""


class LeaseHeld(PublishError):
    """Another run is publishing the same day and kept its lease longer than this run waited."""


@dataclass(frozen=True)
class PublishRequest:
    """One daily partition's serialized FOCUS rows plus what the manifest and metadata must say about them."""

    day: date
    organization_id: str
    fmt: DataFormat
    data: Payload = field(repr=False)
    row_count: int
    totals: dict[str, float]  # BilledCost / EffectiveCost / ListCost / ContractedCost sums
    source_window: tuple[datetime, datetime]
    step_seconds: int
    run_id: str
    complete: bool  # False for a day that has not ended yet
    schema_columns: Sequence[tuple[str, str]]  # (column name, Arrow type string) in file order
    generator_version: str
    extra: dict[str, Any] = field(default_factory=dict)  # clusters, workloads, enrichment completeness...
    provider_tag_prefixes: tuple[str, ...] = ()  # prefixes of provider-defined keys inside Tags
    # Listed cluster id -> (rows, Σ BilledCost), zeros included; None when unknown (not compared).
    cluster_totals: dict[str, tuple[int, float]] | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.row_count < 0:
            problems.append(f"row_count must be >= 0, got {self.row_count}")
        if self.step_seconds <= 0:
            problems.append(f"step_seconds must be > 0, got {self.step_seconds}")
        bad_totals = sorted(name for name, value in self.totals.items() if not math.isfinite(value))
        if bad_totals:
            problems.append(f"totals must be finite numbers: {', '.join(bad_totals)}")
        start, end = self.source_window
        if start.tzinfo is None or end.tzinfo is None or end < start:
            problems.append("source_window must be two time-zone-aware datetimes, start <= end")
        try:
            canonical_json(_jsonable(self.extra))
        except (TypeError, ValueError) as exc:
            problems.append(f"extra must be JSON-serializable without NaN/inf ({exc})")
        if problems:
            raise ValueError(
                f"invalid publish request for {self.organization_id} {self.day}: " + "; ".join(problems)
            )


@dataclass(frozen=True)
class PublishResult:
    data_keys: list[str]
    ternary_keys: list[str]
    manifest_key: str
    checksum_sha256: str
    bytes: int
    # The Go exporter's hour objects of the day in either tree: deleted when `legacy_deleted`, else kept.
    legacy_hourly_keys: list[str] = field(default_factory=list)
    legacy_deleted: bool = False
    stale_deleted_keys: list[str] = field(default_factory=list)  # our other format of the same day
    allowed_changes: list[str] = field(default_factory=list)  # guard findings the caller allowed


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
    """Publish one partition (see the module docstring for the order and the guarantees)."""
    final = data_key(prefix, req.organization_id, req.day, req.fmt)
    # (tree prefix, data key, role) for the main tree and, when enabled, the Ternary tree.
    trees = [(prefix, final, "data")]
    if ternary_prefix:
        copy = ternary_key(ternary_prefix, prefix, req.organization_id, req.day, req.fmt)
        trees.append((ternary_prefix + prefix, copy, "ternary"))
    checksum, size = _sha256(req.data), _size(req.data)
    files = [_file_entry(store, key, req, checksum, size, role) for _, key, role in trees]
    staging = staging_key(prefix, final, req.run_id)
    manifest_object = manifest_key(prefix, req.day)
    claim_prefix(store, prefix, req.organization_id)
    lease = _acquire_lease(
        store, lease_key(prefix, req.day), req, clock, lease_wait_seconds, lease_poll_seconds
    )
    try:
        return _publish_holding_lease(
            store, req, prefix, trees, files, checksum, size, staging, manifest_object, audit, clock,
            delete_legacy_hourly, allow_changes,
        )  # fmt: skip
    finally:
        _release_lease(store, *lease)


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
        _upload(store, staging, req.data, CONTENT_TYPES[req.fmt])
        with _read_back(store, staging, like=req.data) as staged:
            staged_checksum = _sha256(staged)
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
        current = _read_json(store, manifest_object)
        allowed = _guard_replacement(store, prefix, manifest_object, current, req, allow_changes)
        foreign = _foreign_hour_zero(
            store, [tree for tree, _, _ in trees], current, req, delete_legacy_hourly
        )
        expected = _retire_manifest_unless_describing(store, manifest_object, current, current_version, files)
        for _, key, _ in trees:
            store.copy(staging, key)
        stale: list[str] = []
        legacy: list[str] = []
        copied = {key: store.version(key) for _, key, _ in trees}
        for tree, key, _ in trees:
            ours, hourly = _delete_stale_data_objects(store, tree, req, key, delete_legacy_hourly)
            stale += [k for k in ours if k not in foreign]
            legacy += hourly
        legacy += foreign  # overwritten at the day's key, or deleted in the other format
        now = clock()
        schema_id, dataset_instance_id = _write_focus_metadata(store, req, prefix, now)
        manifest = _manifest(req, files, checksum, size, schema_id, dataset_instance_id, now, allowed)
        # The guard's copy of the figures, before the manifest (which stays the last write): a run
        # that fails from here on leaves figures describing the bytes it copied.
        figures = figures_key(prefix, req.day)
        _put_json_if_changed(store, figures, _figures_document(manifest), _read_json(store, figures))
        _commit_manifest(store, manifest_object, canonical_json(manifest), expected, copied)
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


def _foreign_hour_zero(
    store: ObjectStore, trees: list[str], current: Any, req: PublishRequest, replace_them: bool
) -> list[str]:
    """The day's `-00` objects (either format, every tree) that are not ours, or refuse them.

    Ours: listed by the published manifest, or marked by our writer (a manifest can be lost). Anything
    else under that name was written by the Go exporter's run at hour 00: publishing overwrites it (same
    format) or deletes it (the other format), so that needs the operator's choice.
    """
    files = current.get("files") if isinstance(current, dict) else None
    listed = {e.get("key") for e in files if isinstance(e, dict)} if isinstance(files, list) else set()
    foreign: list[str] = []
    for tree in trees:
        object_prefix = partition_object_prefix(tree, req.organization_id, req.day)
        for key in sorted(store.list(object_prefix)):
            match = _DATA_OBJECT_SUFFIX.match(key[len(object_prefix) :])
            if (
                match
                and match.group(1) == "00"
                and key not in listed
                and not _marked_ours(store, key, match[2])
            ):
                foreign.append(key)
    if foreign and not replace_them:
        raise ForeignObjectRefused(
            f"{req.day}: {', '.join(store.describe(k) for k in foreign)} is not this exporter's (no manifest "
            "of ours lists it and it carries no mark of our writer): the Go exporter's run at hour 00 wrote "
            "this key. Publishing would overwrite or delete it, so nothing was written. Move it away, or set "
            "DELETE_LEGACY_HOURLY_OBJECTS=true to let publication replace the Go exporter's objects"
        )
    return foreign


def _marked_ours(store: ObjectStore, key: str, fmt: str) -> bool:
    with tempfile.TemporaryFile() as local:  # streamed: a day's object never enters memory whole
        store.get_file(key, local)
        local.seek(0)
        return written_by_this_exporter(local, fmt)


def _acquire_lease(
    store: ObjectStore,
    key: str,
    req: PublishRequest,
    clock: Callable[[], datetime],
    wait_seconds: float,
    poll_seconds: float,
) -> tuple[str, str, str | None]:
    """Take the day's lease (a conditional create); wait while another run holds it, take it over once
    expired. Returns (key, the version written), for the release."""
    deadline = time.monotonic() + wait_seconds
    while True:
        now = clock()
        body = canonical_json(
            {
                "runId": req.run_id,
                "expiresAt": focus_datetime(now + timedelta(seconds=LEASE_SECONDS)),
                "host": socket.gethostname(),
                "pid": os.getpid(),
            }
        )
        expected = None
        version = store.version(key)
        if version is not None:
            holder = _read_json(store, key)
            run_id, expires = _lease_holder(holder)
            if (
                expires is not None
                and expires > now
                and run_id != req.run_id
                and not _holder_died(key, holder)
            ):
                if time.monotonic() >= deadline:
                    raise LeaseHeld(
                        f"run {run_id} is publishing the FOCUS day {req.day.isoformat()} "
                        f"({store.describe(key)}, valid until {focus_datetime(expires)}); this run waited "
                        f"{wait_seconds:g} s and published nothing; it is retried, or re-run the day"
                    )
                time.sleep(poll_seconds)
                continue
            expected = version  # expired, unreadable or our own: take it over
        try:
            store.put_if(key, body, JSON_CONTENT_TYPE, expected)
        except PreconditionFailed:
            continue  # another run took it meanwhile: look again
        _HELD_LEASES.add((key, req.run_id))
        return key, req.run_id, store.version(key)


def _lease_holder(document: Any) -> tuple[str, datetime | None]:
    """(run id, expiry) of a lease document; no expiry when it is malformed (then taken over)."""
    if not isinstance(document, dict):
        return "?", None
    try:
        return str(document.get("runId")), parse_focus_datetime(document["expiresAt"])
    except (KeyError, TypeError, ValueError):
        return str(document.get("runId")), None


def _holder_died(key: str, document: Any) -> bool:
    """True when the lease names a process of this host that no longer exists (a killed run here);
    a holder on another host (another pod) is alive until its lease expires."""
    if not isinstance(document, dict) or document.get("host") != socket.gethostname():
        return False
    pid = document.get("pid")
    if pid == os.getpid():
        return (key, str(document.get("runId"))) not in _HELD_LEASES
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False


def _release_lease(store: ObjectStore, key: str, run_id: str, version: str | None) -> None:
    """Delete the lease unless another run took it over (after it expired).

    A failed release does not fail the run (the publication is complete or failed on its own): the
    lease then expires, or is taken over by the next run on this host.
    """
    _HELD_LEASES.discard((key, run_id))
    try:
        if version is not None and store.version(key) == version:
            store.delete(key)
    except Exception as exc:
        _log.warning("could not release the publication lease %s: %s", store.describe(key), exc)


def _guard_replacement(
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
        collection=_jsonable(req.extra.get("collection")),  # None: not compared
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
    document = _read_json(store, key)
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

    A `-00` object without our writer's mark is the Go exporter's: `_foreign_hour_zero` decides on it.
    """
    object_prefix = partition_object_prefix(prefix, req.organization_id, req.day)
    existing = [
        key
        for key in store.list(object_prefix)
        if (match := _DATA_OBJECT_SUFFIX.match(key[len(object_prefix) :]))
        and match.group(1) == "00"
        and _marked_ours(store, key, match.group(2))
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


def _figures_document(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the guard compares, from the manifest; no run id or time, so a re-run rewrites nothing."""
    fields = ("organizationId", "partition", "complete", "rowCount", "costTotals", "sourceWindow", "clusters")
    document = {name: manifest[name] for name in fields if name in manifest}
    document["figuresVersion"] = 1
    count = manifest.get("extra", {}).get("clusters")
    if isinstance(count, int):
        document["extra"] = {"clusters": count}
    return document


def _commit_manifest(
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


def _remove_stale_temporary(store: ObjectStore, folders: list[str]) -> None:
    """Temporary files of killed writers (local folder only; an S3 upload leaves no object)."""
    remove = getattr(store, "remove_stale_temporary", None)
    if remove is not None:
        remove(tuple(folders))


def _prefix_owner(store: ObjectStore, prefix: str) -> tuple[str | None, str]:
    """The organisation a prefix belongs to and where that is recorded (marker, else a manifest)."""
    marker = organization_marker_key(prefix)
    try:
        raw = store.get(marker)
    except ObjectNotFound:
        raw = None
    if raw is not None:
        try:
            owner = json.loads(raw)["organizationId"]
        except (ValueError, KeyError, TypeError):
            raise PrefixOwnedError(
                f"{store.describe(marker)} is not a valid organisation marker (expected JSON with "
                "organizationId); restore it or delete it so the next run records this organisation"
            ) from None
        return str(owner), store.describe(marker)
    # A prefix published before markers existed: its manifests name the organisation.
    for key in store.list(manifest_dir(prefix)):
        manifest = _read_json(store, key)
        if isinstance(manifest, dict) and isinstance(manifest.get("organizationId"), str):
            return manifest["organizationId"], store.describe(key)
    return None, ""


def check_prefix_owner(store: ObjectStore, prefix: str, organization_id: str) -> bool:
    """Refuse a prefix that holds another organisation's export; True when the marker already exists."""
    owner, where = _prefix_owner(store, prefix)
    if owner is not None and owner != organization_id:
        raise PrefixOwnedError(
            f"S3_PREFIX {prefix!r} holds the FOCUS export of Cast AI organisation {owner} "
            f"(recorded in {where}), but CASTAI_ORGANIZATION_ID is {organization_id}. One S3_PREFIX holds "
            f"one organisation (two would make every total count twice); nothing was written. Set S3_PREFIX "
            f"to a new prefix for {organization_id}; or, if {owner} was a mistake, delete its objects under "
            f"the prefix (castai-focus-{owner}-* data files, the manifests under "
            f"{store.describe(manifest_dir(prefix).rstrip('/'))}/ and "
            f"{store.describe(organization_marker_key(prefix))}) "
            f"and re-run; the next publication drops {owner}'s entries from the metadata documents "
            "(schema.json, dataset-instance.json, recency.json)."
        )
    return owner is not None and where == store.describe(organization_marker_key(prefix))


def claim_prefix(store: ObjectStore, prefix: str, organization_id: str) -> None:
    """Record the prefix's organisation at its first publication (conditional: first writer wins)."""
    if check_prefix_owner(store, prefix, organization_id):
        return
    document = {"organizationId": organization_id, "focusVersion": FOCUS_VERSION}
    try:
        store.put_if(organization_marker_key(prefix), canonical_json(document), JSON_CONTENT_TYPE, None)
    except PreconditionFailed:
        check_prefix_owner(store, prefix, organization_id)  # written meanwhile: by this organisation?


def _size(data: Payload) -> int:
    if isinstance(data, bytes):
        return len(data)
    return data.seek(0, 2)


def _sha256(data: Payload) -> str:
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    data.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: data.read(_HASH_CHUNK), b""):
        digest.update(chunk)
    data.seek(0)  # rewound for the next reader (the audit)
    return digest.hexdigest()


def _upload(store: ObjectStore, key: str, data: Payload, content_type: str) -> None:
    if isinstance(data, bytes):
        store.put(key, data, content_type)
    else:
        data.seek(0)
        store.put_file(key, data, content_type)


@contextmanager
def _read_back(store: ObjectStore, key: str, like: Payload) -> Iterator[Payload]:
    """The stored object as the same kind of payload as the uploaded one (a file: a temporary one)."""
    if isinstance(like, bytes):
        yield store.get(key)
        return
    with tempfile.TemporaryFile() as staged:
        store.get_file(key, staged)
        staged.seek(0)
        yield staged


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


def _read_json(store: ObjectStore, key: str) -> Any:
    """A published JSON document, or None when it is absent or unreadable (it is then rebuilt)."""
    try:
        return json.loads(store.get(key))
    except ObjectNotFound:
        return None
    except ValueError:  # not JSON (hand-edited or truncated by a foreign writer): rebuild it
        return None


def _put_json_if_changed(store: ObjectStore, key: str, document: Any, current: Any) -> None:
    """Skip identical rewrites, so deterministic documents keep their S3 LastModified/ETag."""
    if current is not None and canonical_json(current) == canonical_json(document):
        return
    store.put(key, canonical_json(document), JSON_CONTENT_TYPE)


def _retire_manifest_unless_describing(
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


def _delete_stale_data_objects(
    store: ObjectStore, tree: str, req: PublishRequest, keep: str, delete_legacy_hourly: bool
) -> tuple[list[str], list[str]]:
    """(our deleted other-format objects, the Go exporter's hour objects) of this organisation's day.

    Hour `00` is ours (daily partitions); hours `01`-`23` can only come from the Go exporter, which
    wrote one object per run: they are deleted only when the operator chose it.
    """
    object_prefix = partition_object_prefix(tree, req.organization_id, req.day)
    ours: list[str] = []
    legacy: list[str] = []
    for key in sorted(store.list(object_prefix)):
        match = _DATA_OBJECT_SUFFIX.match(key[len(object_prefix) :])
        if key == keep or not match:
            continue
        if match.group(1) == "00":
            ours.append(key)
            store.delete(key)
        else:
            legacy.append(key)
            if delete_legacy_hourly:
                store.delete(key)
    return ours, legacy


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


def _write_focus_metadata(
    store: ObjectStore, req: PublishRequest, prefix: str, now: datetime
) -> tuple[str, str]:
    """Write DataGenerator, Schema, DatasetInstance and Recency; return (SchemaId, DatasetInstanceId)."""
    keys = metadata_keys(prefix)
    dataset_instance_id = dataset_instance_id_for(req.organization_id)
    schema_id = schema_id_for(
        req.organization_id,
        column_definitions(req.schema_columns, req.provider_tag_prefixes),
        req.generator_version,
    )

    _put_json_if_changed(
        store, keys["data_generator"], data_generator_document(), _read_json(store, keys["data_generator"])
    )

    # Schema collection: one object per schema ever published (old partitions keep referencing theirs).
    # A prefix holds one organisation: entries of another one (a corrected organisation id) are dropped.
    current_schemas = _read_json(store, keys["schema"])
    schemas = _mine(current_schemas, dataset_instance_id)
    if not any(s.get("SchemaId") == schema_id for s in schemas):
        schemas.append(
            schema_document(
                req.schema_columns,
                schema_id=schema_id,
                dataset_instance_id=dataset_instance_id,
                creation_date=now,
                data_generator_version=req.generator_version,
                provider_tag_prefixes=req.provider_tag_prefixes,
            )
        )
    schemas.sort(key=lambda s: (str(s.get("CreationDate")), str(s.get("SchemaId"))))
    _put_json_if_changed(store, keys["schema"], schemas, current_schemas)

    current_instances = _read_json(store, keys["dataset_instance"])
    instances = dataset_instance_document(
        dataset_instance_id, f"Cast AI Kubernetes cost and usage ({req.organization_id})"
    )
    _put_json_if_changed(store, keys["dataset_instance"], instances, current_instances)

    current_recency = _read_json(store, keys["recency"])
    mine = _updated_recency(store, prefix, req, dataset_instance_id, current_recency, now)
    recency = [mine]
    store.put(keys["recency"], canonical_json(recency), JSON_CONTENT_TYPE)
    return schema_id, dataset_instance_id


def _collection(document: Any) -> list[dict[str, Any]]:
    """The objects of a published metadata collection; anything malformed counts as absent."""
    return [d for d in document if isinstance(d, dict)] if isinstance(document, list) else []


def _mine(document: Any, dataset_instance_id: str) -> list[dict[str, Any]]:
    """Objects of a metadata collection that belong to this dataset instance (the prefix's only one)."""
    return [d for d in _collection(document) if d.get("DatasetInstanceId") == dataset_instance_id]


def _updated_recency(
    store: ObjectStore,
    prefix: str,
    req: PublishRequest,
    dataset_instance_id: str,
    current: Any,
    now: datetime,
) -> dict[str, Any]:
    """This instance's Recency with today's sector set, plus sectors of any manifest Recency lost.

    Concurrent partition runs read-modify-write the same recency.json; the last writer can drop another
    run's sector. Every publish therefore re-adds sectors for manifests missing from Recency (one LIST,
    and a GET only for the few days that went missing).
    """
    mine = _mine(current, dataset_instance_id)
    sectors: dict[date, TimeSector] = {}
    if mine:
        try:
            sectors = {s.start.date(): s for s in sectors_from_recency(mine[0])}
        except (KeyError, TypeError, ValueError):
            sectors = {}  # malformed: rebuilt from the manifests below
    for key in store.list(manifest_dir(prefix)):
        day = manifest_day(key)
        if day is None or day == req.day or day in sectors:
            continue
        lost = _sector_from_manifest(_read_json(store, key), req.organization_id, day)
        if lost is not None:
            sectors[day] = lost
    sectors[req.day] = day_sector(req.day, complete=req.complete, last_updated=now)
    return recency_document(dataset_instance_id, list(sectors.values()), now)


def _sector_from_manifest(manifest: Any, organization_id: str, day: date) -> TimeSector | None:
    if not isinstance(manifest, dict) or manifest.get("organizationId") != organization_id:
        return None
    try:
        published = parse_focus_datetime(manifest["publishedAt"])
    except (KeyError, TypeError, ValueError):
        return None
    return day_sector(day, complete=bool(manifest.get("complete")), last_updated=published)


def _manifest(
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
        "extra": _jsonable(req.extra),
    }
    if req.cluster_totals is not None:
        manifest["clusters"] = {
            cid: {"rows": rows, "billedCost": cost}
            for cid, (rows, cost) in sorted(req.cluster_totals.items())
        }
    if allowed_changes:  # the replacement guard's findings this run was allowed to publish
        manifest["allowedChanges"] = allowed_changes
    return manifest


def _jsonable(value: Any) -> Any:
    """Manifest `extra` values as JSON (dates as ISO-8601); anything else unserializable is an error."""
    if isinstance(value, datetime):
        return focus_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"manifest extra value of type {type(value).__name__} is not JSON-serializable")
