"""The workload-costs table as the FOCUS transform and the audit read it, prepared once per batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.castai.models import WORKLOAD_COSTS_SCHEMA

_KEY_COLUMNS = ("cluster_id", "namespace", "workload_type", "workload_name")


@dataclass(frozen=True)
class PreparedWorkloads:
    """A prepared batch (`prepare_workloads`) and the table it came from; transform and audit share it."""

    table: pa.Table
    raw: pa.Table  # as received: the audit's Cast AI self-consistency rule reads every bucket

    @property
    def num_rows(self) -> int:
        return int(self.table.num_rows)


def prepared(workloads: pa.Table | PreparedWorkloads) -> PreparedWorkloads:
    """`workloads` prepared, unless it already is."""
    return workloads if isinstance(workloads, PreparedWorkloads) else prepare_workloads(workloads)


def prepare_workloads(workloads: pa.Table) -> PreparedWorkloads:
    """The workload-costs table as the transform reads it; pass the result to `to_focus` and the audit.

    Cast to `WORKLOAD_COSTS_SCHEMA`, duplicate buckets of a workload (same cluster, namespace, type,
    name and timestamp) dropped with the first one kept, sorted by those keys so the output does
    not depend on the order in which the API returned workloads.
    """
    missing = [name for name in WORKLOAD_COSTS_SCHEMA.names if name not in workloads.column_names]
    if missing:
        raise ValueError(f"workload costs table lacks column(s) {', '.join(missing)}")
    table = workloads.select(WORKLOAD_COSTS_SCHEMA.names).cast(WORKLOAD_COSTS_SCHEMA).combine_chunks()
    if table.num_rows == 0:
        return PreparedWorkloads(table, workloads)
    keys = [_dense_codes(_dictionary(table, name)) for name in _KEY_COLUMNS]
    timestamp = table.column("timestamp").cast(pa.int64()).to_numpy()
    order = np.lexsort((timestamp, *reversed(keys)))  # stable: the first of duplicates stays first
    sorted_keys = np.column_stack([k[order] for k in keys] + [timestamp[order]])
    first = np.ones(order.size, dtype=bool)
    first[1:] = np.any(sorted_keys[1:] != sorted_keys[:-1], axis=1)
    kept = order[first]
    if kept.size != order.size or np.any(kept != np.arange(kept.size)):  # usually sorted and unique already
        table = table.take(pa.array(kept)).combine_chunks()
    # Re-encode the cluster ids so their dictionary holds only clusters that have rows.
    cluster_ids = pc.dictionary_encode(table.column("cluster_id").cast(pa.string()))
    table = table.set_column(0, WORKLOAD_COSTS_SCHEMA.field(0), cluster_ids)
    step = table.column("step_seconds").to_numpy()
    if np.any(step <= 0):
        bad = int(np.argmax(step <= 0))
        raise ValueError(
            f"cluster {table.column('cluster_id')[bad].as_py()}: workload "
            f"{table.column('workload_name')[bad].as_py()} has step_seconds {int(step[bad])} (must be > 0)"
        )
    return PreparedWorkloads(table, workloads)


class WorkloadSource:
    """Column views of a prepared workload-costs table: codes, decoded strings, per-row identifiers."""

    def __init__(self, table: pa.Table):
        self.table = table
        cluster = _dictionary(table, "cluster_id")
        self.cluster_ids: list[str] = cluster.dictionary.to_pylist()
        self.cluster_entry = cluster.indices.to_numpy(zero_copy_only=False)
        self.step_seconds = table.column("step_seconds").to_numpy()
        self.timestamp_us = table.column("timestamp").cast(pa.int64()).to_numpy()
        self.cluster_id_text = self.text("cluster_id")
        namespace, workload_type, name = (
            self.text(c) for c in ("namespace", "workload_type", "workload_name")
        )
        self.resource_id = pc.binary_join_element_wise(
            "castai://",
            pc.binary_join_element_wise(self.cluster_id_text, namespace, workload_type, name, "/"),
            "",
        )
        self.workload_label = pc.binary_join_element_wise(
            workload_type, pc.binary_join_element_wise(namespace, name, "/"), " "
        )

    def metric(self, name: str) -> np.ndarray:
        return self.table.column(name).to_numpy()

    def text(self, name: str) -> pa.Array:
        """A dictionary column decoded to plain strings (cheap: one gather over the dictionary)."""
        column = _dictionary(self.table, name)
        return column.dictionary.take(column.indices)

    def text_of_rows(self, name: str, rows: pa.Array) -> pa.Array:
        """A dictionary column's strings at source rows `rows`: the indices are gathered first, so the
        strings are copied once."""
        column = _dictionary(self.table, name)
        return column.dictionary.take(column.indices.take(rows))

    def label_entries(self) -> tuple[list[str | None], np.ndarray]:
        """Distinct label JSON texts and, per row, the index into them (-1: no labels)."""
        labels = _dictionary(self.table, "labels")
        entry = pc.fill_null(labels.indices, -1).to_numpy()
        return labels.dictionary.to_pylist(), entry


def _dictionary(table: pa.Table, name: str) -> pa.DictionaryArray:
    column = table.column(name)
    chunk = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    assert isinstance(chunk, pa.DictionaryArray)
    return chunk


def _dense_codes(column: pa.DictionaryArray) -> np.ndarray:
    """Integer codes that order like the strings and are equal exactly when the strings are."""
    ranks = pc.rank(column.dictionary, sort_keys="ascending", tiebreaker="dense").to_numpy()
    return ranks[column.indices.to_numpy(zero_copy_only=False)]
