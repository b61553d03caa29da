"""Split mode's inputs as flat charge entries (cluster, bucket end, charge), checked before rows are built."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from castai_focus_dagster.castai.models import Cluster
from castai_focus_dagster.castai.units import MICROS_PER_SECOND
from castai_focus_dagster.focus.charges import CHARGES
from castai_focus_dagster.focus.source import WorkloadSource

ALLOCATION_METHOD_ID = "castai-request-based-v1"
CLUSTER_RESOURCE_TYPE = "Kubernetes Cluster"
CLUSTER_COST_ENDPOINT = "/v1/cost-reports/clusters/{clusterId}/cost"
# A remainder within this share of the origin is float noise of summing workload costs, not capacity.
REMAINDER_RELATIVE_TOLERANCE = 1e-9


class Entries:
    """Charges of one input: cluster code, bucket end (µs), charge index, cost and quantity (× hours)."""

    def __init__(
        self,
        cluster: np.ndarray,
        end_us: np.ndarray,
        charge: np.ndarray,
        cost: np.ndarray,
        quantity: np.ndarray,
        row: np.ndarray | None = None,
    ):
        self.cluster = cluster.astype(np.int64)
        self.end_us = end_us.astype(np.int64)
        self.charge = charge.astype(np.int64)
        self.cost = cost
        self.quantity = quantity
        # Workload entries: the workload-costs row (workload × bucket) each entry comes from.
        self.row = np.zeros(0, dtype=np.int64) if row is None else row


def split_cluster_ids(
    source: WorkloadSource, cluster_costs: Mapping[str, pa.Table], clusters: Mapping[str, Cluster]
) -> list[str]:
    without_report = sorted(set(source.cluster_ids) - set(cluster_costs))
    if without_report:
        raise ValueError(
            f"cluster(s) {', '.join(without_report)} have workload costs but no cluster cost report "
            f"({CLUSTER_COST_ENDPOINT}); split mode needs both for every cluster"
        )
    ids = sorted(set(source.cluster_ids) | set(cluster_costs))
    unknown = [cid for cid in ids if cid not in clusters]
    if unknown:
        raise ValueError(
            f"cluster cost reports reference cluster(s) {', '.join(unknown)} missing from the cluster list"
        )
    return ids


def workload_entries(
    source: WorkloadSource, code_of: Mapping[str, int], step_seconds: int, hours: float
) -> Entries:
    """Workload charges exactly as workload mode computes them (same nonzero rule, same float products)."""
    if source.table.num_rows == 0:
        empty = np.zeros(0)
        return Entries(empty, empty, empty, empty, empty, np.zeros(0, dtype=np.int64))

    def cluster_of(row: int) -> str:
        return source.cluster_ids[source.cluster_entry[row]]

    wrong = source.step_seconds != step_seconds
    if wrong.any():
        i = int(np.argmax(wrong))
        raise ValueError(
            f"cluster {cluster_of(i)}: workload costs have step_seconds {int(source.step_seconds[i])}, "
            f"the cluster cost report was requested with {step_seconds}"
        )
    cost = np.column_stack([source.metric(c.cost_field) for c in CHARGES])
    quantity = np.column_stack([source.metric(c.quantity_field) for c in CHARGES])
    invalid = _first_invalid(cost, quantity)
    if invalid:
        raise _invalid_metric(
            cluster_of(invalid[0]), "/v1/cost-reports/clusters/{clusterId}/workload-costs", invalid
        )
    row, charge = np.nonzero((cost != 0) | (quantity != 0))
    codes = np.array([code_of[cid] for cid in source.cluster_ids], dtype=np.int64)
    return Entries(
        codes[source.cluster_entry[row]],
        source.timestamp_us[row],
        charge,
        cost[row, charge] * hours,
        quantity[row, charge] * hours,
        row.astype(np.int64),
    )


def report_entries(
    cluster_costs: Mapping[str, pa.Table], code_of: Mapping[str, int], hours: float
) -> Entries:
    """Every non-zero (bucket, charge) of every cluster cost report."""
    needed = ["timestamp", *(c.cost_field for c in CHARGES), *(c.quantity_field for c in CHARGES)]
    parts: list[Entries] = []
    for cluster_id in sorted(cluster_costs):
        report = cluster_costs[cluster_id]
        missing = [name for name in needed if name not in report.column_names]
        if missing:
            raise ValueError(
                f"cluster {cluster_id}: cluster cost report ({CLUSTER_COST_ENDPOINT}) lacks field(s) "
                f"{', '.join(missing)}"
            )
        end_us = report.column("timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
        distinct, counts = np.unique(end_us, return_counts=True)
        if (counts > 1).any():
            moment = np.datetime64(int(distinct[np.argmax(counts > 1)]), "us")
            raise ValueError(
                f"cluster {cluster_id}: cluster cost report ({CLUSTER_COST_ENDPOINT}) repeats bucket "
                f"{moment}Z"
            )
        cost = np.column_stack([report_floats(report, c.cost_field) for c in CHARGES]).reshape(
            -1, len(CHARGES)
        )
        quantity = np.column_stack([report_floats(report, c.quantity_field) for c in CHARGES]).reshape(
            -1, len(CHARGES)
        )
        invalid = _first_invalid(cost, quantity)
        if invalid:
            raise _invalid_metric(cluster_id, CLUSTER_COST_ENDPOINT, invalid)
        row, charge = np.nonzero((cost != 0) | (quantity != 0))
        parts.append(
            Entries(
                np.full(row.size, code_of[cluster_id]),
                end_us[row],
                charge,
                cost[row, charge] * hours,
                quantity[row, charge] * hours,
            )
        )
    if not parts:
        empty = np.zeros(0)
        return Entries(empty, empty, empty, empty, empty)
    return Entries(
        *(
            np.concatenate([getattr(p, name) for p in parts])
            for name in ("cluster", "end_us", "charge", "cost", "quantity")
        )
    )


def report_floats(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)


def _first_invalid(cost: np.ndarray, quantity: np.ndarray) -> tuple[int, str, float] | None:
    """(row, field, value) of the first negative or non-finite metric: it would turn ratios negative."""
    for matrix, is_cost in ((cost, True), (quantity, False)):
        bad = ~(np.isfinite(matrix) & (matrix >= 0))
        if bad.any():
            row, charge = (int(v[0]) for v in np.nonzero(bad))
            field = CHARGES[charge].cost_field if is_cost else CHARGES[charge].quantity_field
            return row, field, float(matrix[row, charge])
    return None


def _invalid_metric(cluster_id: str, endpoint: str, invalid: tuple[int, str, float]) -> ValueError:
    _, field, value = invalid
    return ValueError(
        f"cluster {cluster_id}: {endpoint} field {field} must be a finite number >= 0, got {value!r}"
    )


def check_grid(source: WorkloadSource, cluster_costs: Mapping[str, pa.Table], step_seconds: int) -> None:
    """Both inputs must share one bucket grid, or no workload bucket would meet its cluster bucket."""
    step_us = step_seconds * MICROS_PER_SECOND
    inputs = [
        ("/v1/cost-reports/clusters/{clusterId}/workload-costs", source.cluster_id_text, source.timestamp_us)
    ]
    for cluster_id, report in sorted(cluster_costs.items()):
        ends = report.column("timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
        inputs.append((CLUSTER_COST_ENDPOINT, pa.repeat(pa.scalar(cluster_id), ends.size), ends))
    phases = [(endpoint, owners, ends % step_us) for endpoint, owners, ends in inputs if ends.size]
    if not phases:
        return
    reference = phases[0][2][0]
    for endpoint, owners, phase in phases:
        off = phase != reference
        if off.any():
            raise ValueError(
                f"cluster {owners[int(np.argmax(off))].as_py()}: bucket timestamps of {endpoint} are not on "
                f"the {step_seconds} s grid of the other inputs (workload and cluster buckets must match)"
            )
