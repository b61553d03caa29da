"""The one IO manager: intermediates under `_internal/`, FOCUS rows published by write-audit-publish.

Every asset returns a `DailyValues` (see daily.py); the IO manager walks its days one at a time, so a
single run covering many partitions writes one object set per day while holding one day in memory.
The published asset goes through `publish.publish_partition`: staged, read back and checked, copied to
its deterministic Hive key (plus the Ternary copy), then FOCUS metadata and the manifest, last.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from castai_focus_dagster import intermediates
from castai_focus_dagster.daily import DailyValues
from castai_focus_dagster.focus_publication import PublishedDay, publish_focus_day
from castai_focus_dagster.layout import internal_key
from castai_focus_dagster.resources import FocusStorageResource


@dataclass(frozen=True)
class _Codec:
    ext: str
    dump: Callable[[Any], bytes]
    load: Callable[[bytes], Any]
    content_type: str


CODECS: dict[str, _Codec] = {
    "castai_clusters": _Codec(
        "json", intermediates.clusters_to_bytes, intermediates.clusters_from_bytes, "application/json"
    ),
    "castai_workload_costs": _Codec(
        "parquet",
        intermediates.workload_costs_to_bytes,
        intermediates.workload_costs_from_bytes,
        "application/vnd.apache.parquet",
    ),
    "castai_enrichment_context": _Codec(
        "json", intermediates.enrichment_to_bytes, intermediates.enrichment_from_bytes, "application/json"
    ),
}
PUBLISHED_ASSET = "focus_cost_and_usage"


class FocusIOManager(dg.ConfigurableIOManager):
    """Stores the Cast AI intermediates and publishes the FOCUS cost-and-usage rows."""

    storage: dg.ResourceDependency[FocusStorageResource]

    def handle_output(self, context: dg.OutputContext, obj: DailyValues[Any]) -> None:
        name = context.asset_key.path[-1]
        if not isinstance(obj, DailyValues):
            raise dg.DagsterInvariantViolationError(
                f"{name} must return DailyValues, got {type(obj).__name__}"
            )
        if name == PUBLISHED_ASSET:
            self._publish(context, obj)
        else:
            self._store_intermediate(context, name, obj)

    def load_input(self, context: dg.InputContext) -> DailyValues[Any]:
        name = context.asset_key.path[-1]
        codec = CODECS[name]
        prefix = self.storage.settings.s3_prefix
        store = self.storage.store

        def load(key: str) -> Any:
            object_key = internal_key(prefix, name, _day(key), codec.ext)
            try:
                return codec.load(store.get(object_key))
            except KeyError as exc:
                raise dg.Failure(
                    f"{name} for {key} is not stored at {store.describe(object_key)}: materialise it first"
                ) from exc

        return DailyValues(keys=list(context.asset_partition_keys), produce=load)

    def _store_intermediate(self, context: dg.OutputContext, name: str, obj: DailyValues[Any]) -> None:
        codec = CODECS[name]
        prefix = self.storage.settings.s3_prefix
        store = self.storage.store
        written: list[str] = []
        for key, value in obj.items():
            object_key = internal_key(prefix, name, _day(key), codec.ext)
            store.put(object_key, codec.dump(value), codec.content_type)
            written.append(store.describe(object_key))
        context.add_output_metadata({"stored_at": dg.MetadataValue.json(written)})

    def _publish(self, context: dg.OutputContext, obj: DailyValues[Any]) -> None:
        days: list[PublishedDay] = []
        for key, day_result in obj.items():
            published = publish_focus_day(
                self.storage.store, self.storage.settings, day_result, context.run_id
            )
            days.append(published)
            context.log.info(f"published {key}: {published.row_count} rows to {', '.join(published.keys)}")
            if len(obj.keys) > 1:
                # One observation per day so per-partition figures stay visible in a multi-day run.
                context.log_event(
                    dg.AssetObservation(
                        asset_key=context.asset_key, partition=key, metadata=published.metadata()
                    )
                )
        context.add_output_metadata(PublishedDay.combined_metadata(days))


def _day(partition_key: str) -> Any:
    from datetime import date

    return date.fromisoformat(partition_key)
