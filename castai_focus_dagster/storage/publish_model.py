"""Publication requests, results and errors, and the JSON helpers every publication step shares."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from castai_focus_dagster.storage.keys import DataFormat
from castai_focus_dagster.storage.metadata import ColumnType, canonical_json, focus_datetime
from castai_focus_dagster.storage.payload import Payload
from castai_focus_dagster.storage.publication_guard import Change
from castai_focus_dagster.storage.store_base import ObjectNotFound, ObjectStore

JSON_CONTENT_TYPE = "application/json"


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
    schema_columns: Sequence[tuple[str, ColumnType]]  # (column name, Arrow type) in file order
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
            canonical_json(jsonable(self.extra))
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


def jsonable(value: Any) -> Any:
    """Manifest `extra` values as JSON (dates as ISO-8601); anything else unserializable is an error."""
    if isinstance(value, datetime):
        return focus_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [jsonable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"manifest extra value of type {type(value).__name__} is not JSON-serializable")


def read_json(store: ObjectStore, key: str) -> Any:
    """A published JSON document, or None when it is absent or unreadable (it is then rebuilt)."""
    try:
        return json.loads(store.get(key))
    except ObjectNotFound:
        return None
    except ValueError:  # not JSON (hand-edited or truncated by a foreign writer): rebuild it
        return None


def put_json_if_changed(store: ObjectStore, key: str, document: Any, current: Any) -> None:
    """Skip identical rewrites, so deterministic documents keep their S3 LastModified/ETag."""
    if current is not None and canonical_json(current) == canonical_json(document):
        return
    store.put(key, canonical_json(document), JSON_CONTENT_TYPE)
