"""Formats of the intermediate assets, stored under `{S3_PREFIX}_internal/`: any asset can re-run alone.

Clusters and the enrichment context are small JSON documents. Workload costs are Parquet in
`WORKLOAD_COSTS_SCHEMA` (dictionary-encoded strings keep repeated names cheap) with one row group per
cluster: they are written as clusters arrive and read back one cluster at a time, so a day is never
one table in memory (memory is set by the largest cluster, not by the organisation).
Every format reads from and writes to a binary file, which the IO manager streams to and from the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from castai_focus_dagster.castai.input_warnings import INPUT_WARNINGS_KEY, input_warnings
from castai_focus_dagster.castai.models import WORKLOAD_COSTS_SCHEMA, Cluster, EnrichmentContext


@dataclass(frozen=True)
class WorkloadCostsDay:
    """A day of workload costs as one `WORKLOAD_COSTS_SCHEMA` table per cluster, iterated once.

    `metadata` is file-level (e.g. the window the day was fetched for). Reading a stored day yields at
    least one table: a day without clusters is one empty table, so consumers need no special case.
    """

    clusters: Iterable[pa.Table]
    metadata: dict[bytes, bytes] = field(default_factory=dict)


def clusters_to_file(clusters: list[Cluster], sink: BinaryIO) -> dict[str, Any]:
    sink.write(_json_bytes([c.to_json() for c in clusters]))
    return {}


def clusters_from_file(source: BinaryIO) -> list[Cluster]:
    return [Cluster.from_json(item) for item in json.loads(source.read())]


def enrichment_to_file(context: EnrichmentContext, sink: BinaryIO) -> dict[str, Any]:
    sink.write(_json_bytes(context.to_json()))
    return {}


def enrichment_from_file(source: BinaryIO) -> EnrichmentContext:
    return EnrichmentContext.from_json(json.loads(source.read()))


def workload_costs_to_file(day: WorkloadCostsDay, sink: BinaryIO) -> dict[str, Any]:
    """Write each cluster's table as its own row group; return rows, clusters and the input warnings
    (bad input the client repaired, recorded in each table's schema metadata)."""
    schema = WORKLOAD_COSTS_SCHEMA.with_metadata(day.metadata)
    rows, clusters = 0, 0
    warnings: list[dict[str, Any]] = []
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for table in day.clusters:
            warnings += input_warnings(table)
            if table.num_rows:
                writer.write_table(table.cast(schema), row_group_size=table.num_rows)
                rows += table.num_rows
                clusters += 1
        if warnings:
            # Known only once every cluster is in: the footer carries them to the FOCUS asset's manifest.
            writer.add_key_value_metadata({INPUT_WARNINGS_KEY: json.dumps(warnings, sort_keys=True)})
    return {"rows": rows, "clusters": clusters, "input_warnings": warnings}


def stored_input_warnings(day: WorkloadCostsDay) -> list[dict[str, Any]]:
    """The input warnings of every cluster of a stored day (see `workload_costs_to_file`)."""
    raw = day.metadata.get(INPUT_WARNINGS_KEY)
    return list(json.loads(raw)) if raw else []


def workload_costs_from_file(source: BinaryIO) -> WorkloadCostsDay:
    """A stored day, read lazily one row group (cluster) at a time; `source` is closed after the last."""
    parquet = pq.ParquetFile(source)
    metadata = dict(parquet.schema_arrow.metadata or {})
    footer = parquet.metadata.metadata or {}
    if INPUT_WARNINGS_KEY in footer:
        metadata[INPUT_WARNINGS_KEY] = footer[INPUT_WARNINGS_KEY]
    return WorkloadCostsDay(clusters=_row_groups(parquet, source), metadata=metadata)


def _row_groups(parquet: pq.ParquetFile, source: BinaryIO) -> Iterator[pa.Table]:
    try:
        if parquet.num_row_groups == 0:
            yield WORKLOAD_COSTS_SCHEMA.empty_table()
        for index in range(parquet.num_row_groups):
            yield parquet.read_row_group(index).cast(WORKLOAD_COSTS_SCHEMA)
    finally:
        source.close()


CLUSTER_IDS_KEY = b"castai_focus.cluster_ids"


def cluster_costs_to_file(reports: dict[str, pa.Table], sink: BinaryIO) -> dict[str, Any]:
    """Cluster cost reports (split allocation only) as one Parquet file with a `cluster_id` column.

    The cluster ids are also kept in the file metadata so a cluster with an empty report survives.
    """
    ids = sorted(reports)
    tables = [
        reports[cid].append_column("cluster_id", pa.array([cid] * reports[cid].num_rows, pa.string()))
        for cid in ids
    ]
    table = pa.concat_tables(tables) if tables else pa.table({"cluster_id": pa.array([], pa.string())})
    table = table.replace_schema_metadata({CLUSTER_IDS_KEY: json.dumps(ids).encode()})
    pq.write_table(table, sink, compression="zstd")
    return {"clusters": len(ids), "rows": sum(t.num_rows for t in tables)}


def cluster_costs_from_file(source: BinaryIO) -> dict[str, pa.Table]:
    table = pq.read_table(source)
    ids = json.loads((table.schema.metadata or {}).get(CLUSTER_IDS_KEY, b"[]"))
    reports = {}
    for cid in ids:
        rows = table.filter(pc.equal(table["cluster_id"], cid)).drop_columns(["cluster_id"])
        reports[cid] = rows.replace_schema_metadata(None)
    return reports


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, indent=1).encode()
