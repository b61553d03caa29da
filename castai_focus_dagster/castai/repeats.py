"""Workload identity across pages: placeholder identities for items missing one, and the comparison
that tells an identical repeat of a workload (dropped) from one with other numbers (refused)."""

from __future__ import annotations

from collections.abc import Container

import msgspec
import numpy as np
import pyarrow as pa

from castai_focus_dagster.castai.columns import bucket_columns
from castai_focus_dagster.castai.labels import exported_labels
from castai_focus_dagster.castai.models import METRIC_COLUMNS
from castai_focus_dagster.castai.wire import IDENTITY_FIELDS, MISSING_IDENTITY, WorkloadCostItem, WorkloadItem


def identity(item: WorkloadItem) -> tuple[str, str, str]:
    """(namespace, type, name); only called once placeholders are in, so never None."""
    return item.namespace or "", item.workload_type or "", item.workload_name or ""


def placeholder(
    item: WorkloadItem, missing: tuple[str, ...], taken: Container[tuple[str, str, str]]
) -> WorkloadItem:
    """`item` with MISSING_IDENTITY in its missing fields, numbered ("(unknown 2)", ...) in its last
    missing field when that identity is already `taken`: two such items never merge."""
    values = (item.namespace, item.workload_type, item.workload_name)
    names = dict(zip(IDENTITY_FIELDS, values, strict=True))
    fields = {name: MISSING_IDENTITY if name in missing else names[name] for name in IDENTITY_FIELDS}
    number = 1
    while (fields["namespace"], fields["workloadType"], fields["workloadName"]) in taken:
        number += 1
        fields[missing[-1]] = f"({MISSING_IDENTITY[1:-1]} {number})"
    return msgspec.structs.replace(
        item,
        namespace=fields["namespace"],
        workload_type=fields["workloadType"],
        workload_name=fields["workloadName"],
    )


def same_as_rows(item: WorkloadItem, first: pa.Table) -> bool:
    """Error path only (repeats are rare): compare a repeat with the rows kept for its first copy."""
    n_rows = first.num_rows
    if len(item.cost_metrics) != n_rows:
        return False
    if n_rows == 0:
        return True
    timestamps, records = bucket_columns(item.cost_metrics, WorkloadCostItem, METRIC_COLUMNS)
    my_times = timestamps.cast(pa.int64()).to_numpy()
    first_times = first.column("timestamp").cast(pa.int64()).to_numpy()
    mine, theirs = np.argsort(my_times, kind="stable"), np.argsort(first_times, kind="stable")
    same_times = np.array_equal(my_times[mine], first_times[theirs])
    same_metrics = all(
        np.array_equal(records[name][mine], first.column(name).to_numpy()[theirs]) for name in METRIC_COLUMNS
    )
    labels, _, _ = exported_labels(item.labels)
    return same_times and same_metrics and labels == first.column("labels")[0].as_py()
