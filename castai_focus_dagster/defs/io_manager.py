"""Two IO managers, one per storage concern: the Cast AI intermediates under `_internal/`, and the
published FOCUS rows (write-audit-publish, storage/publish.py).

Every asset returns a `DailyValues` (see daily.py); both walk its days one at a time, so a run covering
many partitions holds one day in memory. Objects move through temporary files, never whole in memory.
"""

import errno
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import dagster as dg

from castai_focus_dagster.defs.daily import DailyValues
from castai_focus_dagster.defs.publication import PublishedDay, publish_focus_day
from castai_focus_dagster.defs.resources import FocusStorageResource
from castai_focus_dagster.storage import intermediates
from castai_focus_dagster.storage.keys import internal_key
from castai_focus_dagster.storage.object_store import ObjectStoreError
from castai_focus_dagster.storage.publication_guard import CONFIGURATION_CHANGED, allowed_kinds
from castai_focus_dagster.storage.publish_model import (
    JSON_CONTENT_TYPE,
    ForeignObjectRefused,
    PrefixOwnedError,
    ReplacementRefused,
)
from castai_focus_dagster.storage.serialize import PARQUET_CONTENT_TYPE


@dataclass(frozen=True)
class _Codec:
    ext: str
    dump: Callable[[Any, BinaryIO], dict[str, Any]]  # writes the value, returns what it wrote
    load: Callable[[BinaryIO], Any]
    content_type: str
    rows_are: str = ""  # what one stored row is, for the log line (a file without rows says nothing)


CODECS: dict[str, _Codec] = {
    "castai_clusters": _Codec(
        "json", intermediates.clusters_to_file, intermediates.clusters_from_file, JSON_CONTENT_TYPE
    ),
    "castai_workload_costs": _Codec(
        "parquet",
        intermediates.workload_costs_to_file,
        intermediates.workload_costs_from_file,
        PARQUET_CONTENT_TYPE,
        "workload buckets",
    ),
    "castai_cluster_costs": _Codec(
        "parquet",
        intermediates.cluster_costs_to_file,
        intermediates.cluster_costs_from_file,
        PARQUET_CONTENT_TYPE,
        "cluster cost-report buckets",
    ),
    "castai_listing_prices": _Codec(
        "parquet",
        intermediates.cluster_costs_to_file,
        intermediates.cluster_costs_from_file,
        PARQUET_CONTENT_TYPE,
        "cluster cost-report buckets",
    ),
    "castai_enrichment_context": _Codec(
        "json", intermediates.enrichment_to_file, intermediates.enrichment_from_file, JSON_CONTENT_TYPE
    ),
}
INPUT_ASSET = "castai_workload_costs"


def _daily(context: dg.OutputContext, obj: Any) -> DailyValues[Any]:
    if not isinstance(obj, DailyValues):
        raise dg.DagsterInvariantViolationError(
            f"{context.asset_key.path[-1]} must return DailyValues, got {type(obj).__name__}"
        )
    return obj


class IntermediatesIOManager(dg.ConfigurableIOManager):
    """Stores each Cast AI intermediate per day under `_internal/` and loads it back lazily."""

    storage: dg.ResourceDependency[FocusStorageResource]

    def handle_output(self, context: dg.OutputContext, obj: DailyValues[Any]) -> None:
        name = context.asset_key.path[-1]
        days = _daily(context, obj)
        codec = CODECS[name]
        prefix = self.storage.settings.s3_prefix
        store = self.storage.store
        written: list[str] = []
        warnings: list[dict[str, Any]] = []
        with _permanent_failures_fail_fast():
            for key, value in days.items():
                object_key = internal_key(prefix, name, _day(key), codec.ext)
                with tempfile.TemporaryFile(prefix="castai-focus-") as data:
                    facts = codec.dump(value, data)
                    data.seek(0)
                    store.put_file(object_key, data, codec.content_type)
                written.append(store.describe(object_key))
                warnings += [{"day": key, **warning} for warning in facts.get("input_warnings", [])]
                if codec.rows_are:
                    context.log.info(
                        f"{key}: {facts['rows']} {codec.rows_are} from {facts['clusters']} clusters"
                    )
        metadata: dict[str, Any] = {"stored_at": dg.MetadataValue.json(written)}
        if name == INPUT_ASSET:
            # Bad Cast AI input that a documented rule repaired (docs/reliability.md); [] when none.
            metadata["input_warnings"] = dg.MetadataValue.json(warnings)
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> DailyValues[Any]:
        name = context.asset_key.path[-1]
        codec = CODECS[name]
        prefix = self.storage.settings.s3_prefix
        store = self.storage.store

        def load(key: str) -> Any:
            object_key = internal_key(prefix, name, _day(key), codec.ext)
            # Read lazily by the codec (workload costs: one cluster at a time), which closes the file.
            try:
                source = store.open_file(object_key)
            except KeyError as exc:
                raise dg.Failure(
                    f"{name} for {key} is not stored at {store.describe(object_key)}: materialise it first"
                ) from exc
            try:
                return codec.load(source)
            except BaseException:
                source.close()
                raise

        return DailyValues(keys=list(context.asset_partition_keys), produce=load)


class PublicationIOManager(dg.ConfigurableIOManager):
    """Publishes each day of FOCUS rows by write-audit-publish; nothing downstream loads them."""

    storage: dg.ResourceDependency[FocusStorageResource]

    def handle_output(self, context: dg.OutputContext, obj: DailyValues[Any]) -> None:
        days = _daily(context, obj)
        with _permanent_failures_fail_fast():
            self._publish(context, days)

    def load_input(self, context: dg.InputContext) -> Any:
        raise dg.DagsterInvariantViolationError(
            f"{context.asset_key.to_user_string()} is published to the object store; read it from there"
        )

    def _publish(self, context: dg.OutputContext, obj: DailyValues[Any]) -> None:
        days: list[PublishedDay] = []
        allow = allowed_kinds(context.step_context.run_tags)
        for key, day_result in obj.items():
            try:
                published = publish_focus_day(
                    self.storage.store, self.storage.settings, day_result, context.run_id, allow
                )
            finally:
                day_result.discard()  # the encoded day's temporary file
            for change in published.allowed_changes:
                why = (
                    "the published day was made under other settings, not compared by figures"
                    if change.startswith(CONFIGURATION_CHANGED)
                    else "published a change allowed by the run's tags"
                )
                context.log.warning(f"{key}: {why}: {change}")
            days.append(published)
            context.log.info(f"published {key}: {published.row_count} rows to {', '.join(published.keys)}")
            _log_removed_and_legacy(context, key, published)
            if len(obj.keys) > 1:
                # Each day's materialisation carries its own figures (as a one-day run's), not the run's.
                context.step_context.add_asset_metadata(
                    PublishedDay.combined_metadata([published]),
                    asset_key=context.asset_key,
                    partition_key=key,
                )
        context.add_output_metadata(PublishedDay.combined_metadata(days))


def _log_removed_and_legacy(context: dg.OutputContext, key: str, published: PublishedDay) -> None:
    """Every object publishing removed, and the Go exporter's hour objects it kept, by key."""
    for stale in published.stale_deleted_keys:
        context.log.info(f"{key}: deleted {stale} (this day in the other S3_FORMAT, replaced)")
    if not published.legacy_hourly_keys:
        return
    if published.legacy_deleted:
        for legacy in published.legacy_hourly_keys:
            context.log.warning(
                f"{key}: deleted (or, at this day's key, overwrote) the Go exporter's object {legacy}"
            )
    else:
        context.log.warning(
            f"{key}: kept {len(published.legacy_hourly_keys)} hour object(s) of the Go exporter next to this "
            "day's object; readers of the tree count that day twice. Delete them or set "
            f"DELETE_LEGACY_HOURLY_OBJECTS=true: {', '.join(published.legacy_hourly_keys)}"
        )


# Errors no retry can heal: a full disk, a read-only folder, a missing bucket, a refused replacement.
_PERMANENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


@contextmanager
def _permanent_failures_fail_fast() -> Iterator[None]:
    """Fail at once, without the step's retry policy (which would call Cast AI again for nothing)."""
    try:
        yield
    except (ReplacementRefused, PrefixOwnedError, ForeignObjectRefused) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    except ObjectStoreError as exc:
        if not exc.permanent:
            raise
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    except OSError as exc:  # a temporary file of the run itself (disk full)
        if exc.errno not in _PERMANENT_ERRNOS:
            raise
        where = f" ({exc.filename})" if exc.filename else " (the temporary folder)"
        raise dg.Failure(description=f"cannot write{where}: {exc.strerror}", allow_retries=False) from exc


def _day(partition_key: str) -> Any:
    from datetime import date

    return date.fromisoformat(partition_key)
