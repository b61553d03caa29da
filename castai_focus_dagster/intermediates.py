"""Byte formats of the intermediate assets, stored under `{S3_PREFIX}_internal/`: any asset can re-run alone.

Clusters and the enrichment context are small JSON documents; workload costs are Parquet in
`WORKLOAD_COSTS_SCHEMA` (dictionary-encoded strings keep repeated names cheap).
"""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from castai_focus_dagster.models import WORKLOAD_COSTS_SCHEMA, Cluster, EnrichmentContext


def clusters_to_bytes(clusters: list[Cluster]) -> bytes:
    return _json_bytes([c.to_json() for c in clusters])


def clusters_from_bytes(data: bytes) -> list[Cluster]:
    return [Cluster.from_json(item) for item in json.loads(data)]


def enrichment_to_bytes(context: EnrichmentContext) -> bytes:
    return _json_bytes(context.to_json())


def enrichment_from_bytes(data: bytes) -> EnrichmentContext:
    return EnrichmentContext.from_json(json.loads(data))


def workload_costs_to_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table.cast(WORKLOAD_COSTS_SCHEMA), sink, compression="zstd")
    return sink.getvalue()


def workload_costs_from_bytes(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data), schema=WORKLOAD_COSTS_SCHEMA)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, indent=1).encode()
