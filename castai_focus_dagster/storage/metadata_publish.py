"""Write the FOCUS metadata documents of a prefix (DataGenerator, Schema, DatasetInstance, Recency)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from castai_focus_dagster.storage.keys import manifest_day, manifest_dir, metadata_keys
from castai_focus_dagster.storage.metadata import (
    TimeSector,
    canonical_json,
    column_definitions,
    data_generator_document,
    dataset_instance_document,
    dataset_instance_id_for,
    day_sector,
    parse_focus_datetime,
    recency_document,
    schema_document,
    schema_id_for,
    sectors_from_recency,
)
from castai_focus_dagster.storage.publish_model import (
    JSON_CONTENT_TYPE,
    PublishRequest,
    put_json_if_changed,
    read_json,
)
from castai_focus_dagster.storage.store_base import ObjectStore


def write_focus_metadata(
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

    put_json_if_changed(
        store, keys["data_generator"], data_generator_document(), read_json(store, keys["data_generator"])
    )

    # Schema collection: one object per schema ever published (old partitions keep referencing theirs).
    # A prefix holds one organisation: entries of another one (a corrected organisation id) are dropped.
    current_schemas = read_json(store, keys["schema"])
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
    put_json_if_changed(store, keys["schema"], schemas, current_schemas)

    current_instances = read_json(store, keys["dataset_instance"])
    instances = dataset_instance_document(
        dataset_instance_id, f"Cast AI Kubernetes cost and usage ({req.organization_id})"
    )
    put_json_if_changed(store, keys["dataset_instance"], instances, current_instances)

    current_recency = read_json(store, keys["recency"])
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
        lost = _sector_from_manifest(read_json(store, key), req.organization_id, day)
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
