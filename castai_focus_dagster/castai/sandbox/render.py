"""Vectorised JSON rendering of cost reports (pyarrow string kernels, no per-value Python); the
cache of rendered windows is in `window_cache`.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.castai.models import TIERS
from castai_focus_dagster.castai.sandbox.clusters import SandboxCluster
from castai_focus_dagster.castai.sandbox.hours import hour_timestamp
from castai_focus_dagster.castai.sandbox.metrics import RESOURCE_COSTS, SUMMED_FIELDS
from castai_focus_dagster.castai.sandbox.org import SandboxOrg
from castai_focus_dagster.castai.sandbox.protocol import (
    Window,
    json_str,
)

_MICRO = 1_000_000  # millionths of a dollar (or unit): the 6 decimals of Cast AI's strings, not time

# WorkloadCostItem fields in spec order, after `timestamp`.
WORKLOAD_ITEM_FIELDS: tuple[str, ...] = (
    *(f"cost{t}" for t in TIERS),
    *(f"{m}{t}" for m in ("cpuCount", "podCount", "uptimeMinutes", "cpuCost", "ramCost", "ramGib",
                          "gpuCost", "gpuCount") for t in TIERS),
    "storageCost", "storageGib",
    *(f"{m}{t}" for m in ("tpuCost", "tpuCount") for t in TIERS),
)  # fmt: skip
WORKLOAD_SUMMARY_FIELDS: tuple[str, ...] = (
    "totalCost", "totalCostOnDemand", "totalCostSpot", "totalCostSpotFallback", "totalStorageCost",
    "avgCost", "avgCpuCost", "avgRamCost", "avgGpuCost", "avgStorageCost", "avgTpuCost",
)  # fmt: skip
# CostReportItem fields in spec order, after `timestamp`.
CLUSTER_ITEM_FIELDS: tuple[str, ...] = (
    *(f"cost{t}" for t in TIERS),
    *(f"cpuCount{t}" for t in TIERS),
    *(f"{m}{t}" for t in TIERS for m in ("cpuCost", "ramCost")),
    *(f"{m}{t}" for m in ("ramGib", "gpuCost", "gpuCount") for t in TIERS),
    "storageGib", "storageCost",
    *(f"total{m}{t}" for m in ("CpuCost", "RamCost", "GpuCost") for t in TIERS),
    "totalStorageCost",
    *(f"{m}{t}" for m in ("tpuCost", "tpuCount") for t in TIERS),
    *(f"totalTpuCost{t}" for t in TIERS),
)  # fmt: skip
CLUSTER_SUMMARY_FIELDS: tuple[str, ...] = (
    "totalCost", "totalCpuCost", "totalRamCost", "totalGpuCost", "totalStorageCost",
    "avgCost", "avgCpuCost", "avgRamCost", "avgGpuCost", "avgStorageCost",
    "avgCpuCount", "avgRamGib", "avgGpuCount", "avgStorageGib",
    "totalCostOnDemand", "totalCostSpot", "totalCostSpotFallback",
    *(f"avg{m}{t}" for m in ("CpuCount", "RamGib", "GpuCount") for t in TIERS),
    *(f"avg{m}{t}" for m in ("CpuCost", "RamCost", "GpuCost") for t in TIERS),
    "totalTpuCost", "avgTpuCost", "avgTpuCount",
    *(f"avg{m}{t}" for m in ("TpuCount", "TpuCost") for t in TIERS),
)  # fmt: skip


def _add(arrays: Iterable[np.ndarray]) -> np.ndarray:
    """Element-wise sum of equally shaped arrays."""
    return functools.reduce(operator.add, arrays)


_RESOURCE_OF_COST = {"cpuCost": "Cpu", "ramCost": "Ram", "gpuCost": "Gpu", "tpuCost": "Tpu"}
# Summary name stem -> per-bucket series prefix, for the tiered series that summaries total.
_SUMMARY_STEMS = {
    "CpuCost": "cpuCost", "RamCost": "ramCost", "GpuCost": "gpuCost", "TpuCost": "tpuCost",
    "CpuCount": "cpuCount", "RamGib": "ramGib", "GpuCount": "gpuCount", "TpuCount": "tpuCount",
}  # fmt: skip


def _micro(values: np.ndarray) -> np.ndarray:
    """Dollars/counts -> integer millionths: the exact value the 6-decimal string shows."""
    return np.rint(values * _MICRO).astype(np.int64)


def _decimal_strings(micro: np.ndarray) -> pa.Array:
    flat = micro.ravel()
    whole = pa.array(flat // _MICRO).cast(pa.string())
    fraction = pc.utf8_slice_codeunits(pa.array(flat % _MICRO + _MICRO).cast(pa.string()), 1)
    return pc.binary_join_element_wise(whole, fraction, ".")


def _json_objects(columns: Sequence[tuple[str, pa.Array | pa.Scalar]]) -> pa.Array:
    """Row-wise `{"k1":"v1","k2":"v2",...}` strings; keys are plain identifiers, values pre-rendered."""
    pieces: list[Any] = []
    for position, (key, values) in enumerate(columns):
        pieces.append(pa.scalar(('{"' if position == 0 else '","') + key + '":"'))
        pieces.append(values)
    pieces.append(pa.scalar('"}'))
    return pc.binary_join_element_wise(*pieces, "")


def _div_round(total: np.ndarray, hours: int) -> np.ndarray:
    """Non-negative integer division rounded half up (averages of micro-unit totals)."""
    return (2 * total + hours) // (2 * hours) if hours else np.zeros_like(total)


def _summary_columns(series: dict[str, np.ndarray], names: Sequence[str], window: Window) -> dict[str, Any]:
    """Summary values in micro-units from per-bucket micro series (last axis = buckets):
    `total<X>` = Σ bucket value x bucket hours, `avg<X>` = total<X> / window hours."""
    totals: dict[str, np.ndarray] = {}
    for tier in TIERS:
        per_tier = {
            f"Cost{tier}": f"cost{tier}",
            **{f"{q}{tier}": f"{s}{tier}" for q, s in _SUMMARY_STEMS.items()},
        }
        for total_name, series_name in per_tier.items():
            totals[total_name] = np.asarray(series[series_name].sum(axis=-1) * window.hours_per_bucket)
    for quantity in _SUMMARY_STEMS:
        totals[quantity] = _add(totals[f"{quantity}{tier}"] for tier in TIERS)
    totals["StorageCost"] = np.asarray(series["storageCost"].sum(axis=-1) * window.hours_per_bucket)
    totals["StorageGib"] = np.asarray(series["storageGib"].sum(axis=-1) * window.hours_per_bucket)
    totals["Cost"] = _add([*(totals[f"Cost{tier}"] for tier in TIERS), totals["StorageCost"]])
    return {
        name: _div_round(totals[name[3:]], window.hours) if name.startswith("avg") else totals[name[5:]]
        for name in names
    }


@dataclass(frozen=True, eq=False)
class RenderedWindow:
    """One cluster x window, rendered once: listed workloads' JSON fragments and the /cost body."""

    rows: np.ndarray  # cluster workload rows listed in this window, in listing order
    cost_metrics: pa.Array  # per listed workload: its bucket objects joined by ","
    summaries: pa.Array  # per listed workload: its summary object
    cluster_cost_body: bytes


def render_window(
    org: SandboxOrg, cluster: SandboxCluster, window: Window, *, cost_only: bool = False
) -> RenderedWindow:
    """`cost_only`: only the /cost body (no per-workload JSON, the expensive part)."""
    means = org.bucket_metrics(
        cluster.id,
        window.start_hour,
        window.n_buckets,
        window.hours_per_bucket,
        listing=window.listing,
        active_hours=window.active_hours,
    )
    if window.cost_scale != 1.0:
        # Only the resource cost series: `cost{Tier}` and the summaries are derived from them below.
        means = {
            name: values * window.cost_scale if name in _SCALED_COST_FIELDS else values
            for name, values in means.items()
        }
    micro = {name: values if name in SUMMED_FIELDS else _micro(values) for name, values in means.items()}
    for tier in TIERS:
        micro[f"cost{tier}"] = _add(micro[f"{cost}{tier}"] for cost in RESOURCE_COSTS)
    uptime = _add(means[f"uptimeMinutes{tier}"] for tier in TIERS)
    ran = (uptime > 0) | (means["storageGib"] > 0)  # workloads x buckets (metrics are >= 0)
    rows = np.flatnonzero(ran.any(axis=1))
    timestamps = [
        hour_timestamp(window.start_hour + (b + 1) * window.hours_per_bucket) for b in range(window.n_buckets)
    ]
    listed = {name: values[rows] for name, values in micro.items()}
    if cost_only:
        empty = pa.array([], pa.string())
        return RenderedWindow(
            rows, empty, empty, cluster_cost_body(cluster, means, listed, window, timestamps)
        )
    bucket_objects = _json_objects(
        [("timestamp", pa.array(timestamps * len(rows), pa.string()))]
        + [(name, _field_strings(name, listed[name])) for name in WORKLOAD_ITEM_FIELDS]
    )
    per_row = np.full(len(rows), window.n_buckets)
    if window.active_hours is not None:  # a sparse answer: only the buckets in which a workload ran
        bucket_objects = bucket_objects.filter(pa.array(ran[rows].ravel()))
        per_row = ran[rows].sum(axis=1)
    offsets = pa.array(np.concatenate([[0], np.cumsum(per_row)]).astype(np.int32), pa.int32())
    cost_metrics = pc.binary_join(pa.ListArray.from_arrays(offsets, bucket_objects), ",")
    summary = _summary_columns(listed, WORKLOAD_SUMMARY_FIELDS, window)
    summaries = _json_objects([(name, _decimal_strings(summary[name])) for name in WORKLOAD_SUMMARY_FIELDS])
    return RenderedWindow(
        rows, cost_metrics, summaries, cluster_cost_body(cluster, means, listed, window, timestamps)
    )


def _field_strings(name: str, micro: np.ndarray) -> pa.Array | pa.Scalar:
    """One field of many bucket objects. An all-zero field (TPU, most GPU) is a scalar that
    `binary_join_element_wise` broadcasts: no per-value formatting at all."""
    if not micro.any():
        return pa.scalar("0" if name in SUMMED_FIELDS else "0.000000")
    return pa.array(micro.ravel()).cast(pa.string()) if name in SUMMED_FIELDS else _decimal_strings(micro)


def cluster_cost_body(
    cluster: SandboxCluster,
    means: dict[str, np.ndarray],
    workload_micro: dict[str, np.ndarray],
    window: Window,
    timestamps: list[str],
) -> bytes:
    """The cluster pays for its workloads plus idle capacity: every series / (1 - idle share), and never
    less than the sum of the workloads' emitted (rounded) values, so cluster >= Σ workloads holds exactly
    on the strings a client reads (the difference is idle capacity)."""
    scale = 1.0 / (1.0 - cluster.idle_share)
    series = {
        name: np.maximum(_micro(values.sum(axis=0) * scale), workload_micro[name].sum(axis=0))
        for name, values in means.items()
        if name not in SUMMED_FIELDS
    }
    for tier in TIERS:
        series[f"cost{tier}"] = _add(series[f"{cost}{tier}"] for cost in RESOURCE_COSTS)
        for cost, resource in _RESOURCE_OF_COST.items():
            series[f"total{resource}Cost{tier}"] = series[f"{cost}{tier}"] * window.hours_per_bucket
    series["totalStorageCost"] = series["storageCost"] * window.hours_per_bucket
    items = _json_objects(
        [("timestamp", pa.array(timestamps, pa.string()))]
        + [(name, _field_strings(name, series[name])) for name in CLUSTER_ITEM_FIELDS]
    )
    summary = _summary_columns(series, CLUSTER_SUMMARY_FIELDS, window)
    summary_object = _json_objects(
        [(name, _decimal_strings(np.atleast_1d(summary[name]))) for name in CLUSTER_SUMMARY_FIELDS]
    )[0].as_py()
    items_text = ",".join(items.to_pylist())
    return (
        f'{{"clusterId":{json_str(cluster.id)},"items":[{items_text}],"summary":{summary_object}}}'.encode()
    )


# The hourly series that are costs (`cost{Tier}` is their sum, derived when rendering).
_SCALED_COST_FIELDS: frozenset[str] = frozenset(
    f"{cost}{tier}" for cost in RESOURCE_COSTS for tier in TIERS
) | {"storageCost"}


def workload_items(
    cluster: SandboxCluster,
    rendered: RenderedWindow,
    positions: Sequence[int],
    labels_to_include: Sequence[str],
    left_out: Collection[str],
    *,
    bare: bool,
) -> list[str]:
    """The JSON `WorkloadItem`s at `positions` of a rendered window: identity (less `left_out`), the
    buckets (none when `bare`), the labels asked for and the summary."""
    workloads = cluster.workloads
    items = []
    for position in positions:
        row = int(rendered.rows[position])
        labels = workloads.labels[row]
        label_objects = ",".join(
            f'{{"name":{json_str(key)},"value":{json_str(labels[key])}}}'
            for key in labels_to_include
            if key in labels
        )
        identity = (
            ("workloadName", workloads.workload_names[row]),
            ("workloadType", workloads.workload_types[row]),
            ("namespace", workloads.namespaces[row]),
        )
        items.append(
            "{"
            + "".join(f'"{name}":{json_str(value)},' for name, value in identity if name not in left_out)
            + f'"costMetrics":[{"" if bare else rendered.cost_metrics[position].as_py()}],'
            f'"labels":[{label_objects}],'
            f'"summary":{rendered.summaries[position].as_py()}}}'
        )
    return items
