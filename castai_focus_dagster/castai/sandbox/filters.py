"""Workload filters of the workload-costs request (query parameters or the POST body), applied to
the rendered rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from castai_focus_dagster.castai.sandbox.clusters import SandboxCluster
from castai_focus_dagster.castai.sandbox.protocol import (
    ApiError,
    Request,
)


@dataclass(frozen=True)
class WorkloadFilter:
    namespaces: frozenset[str] = frozenset()
    workload_names: frozenset[str] = frozenset()
    workload_types: frozenset[str] = frozenset()
    labels: tuple[tuple[str, str], ...] = ()
    labels_operator: str = "OR"


def query_filter(request: Request) -> WorkloadFilter:
    return WorkloadFilter(
        namespaces=frozenset(request.query.get("filter.namespaces", [])),
        workload_names=frozenset(request.query.get("filter.workloadNames", [])),
        workload_types=frozenset(request.query.get("filter.workloadTypes", [])),
    )


def body_filter(request: Request) -> WorkloadFilter:
    """The POST body `WorkloadFilter`; an empty body means no filter."""

    def invalid(field_name: str, description: str) -> ApiError:
        return ApiError(
            400, f"invalid WorkloadFilter body for {request.endpoint()}", [(field_name, description)]
        )

    try:
        body = json.loads(request.body) if request.body.strip() else {}
    except ValueError:
        raise invalid("body", "invalid JSON") from None
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object")
    lists: dict[str, frozenset[str]] = {}
    for name in ("namespaces", "workloadNames", "workloadTypes"):
        values = body.get(name) or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise invalid(name, "must be a list of strings")
        lists[name] = frozenset(values)
    labels = body.get("labels") or []
    if not isinstance(labels, list) or not all(
        isinstance(label, dict) and isinstance(label.get("label"), str) for label in labels
    ):
        raise invalid("labels", 'must be a list of {"label": ..., "value": ...}')
    operator = str(body.get("labelsOperator") or "OR").upper()
    if operator not in ("OR", "AND"):
        raise invalid("labelsOperator", "must be OR or AND")
    return WorkloadFilter(
        namespaces=lists["namespaces"],
        workload_names=lists["workloadNames"],
        workload_types=lists["workloadTypes"],
        labels=tuple((label["label"], str(label.get("value", ""))) for label in labels),
        labels_operator=operator,
    )


def filtered_positions(cluster: SandboxCluster, rows: np.ndarray, wanted: WorkloadFilter) -> np.ndarray:
    """Positions (into `rows`) of the listed workloads that pass the filter, in listing order."""
    workloads = cluster.workloads
    keep = np.ones(len(rows), dtype=bool)
    for values, column in (
        (wanted.namespaces, workloads.namespaces),
        (wanted.workload_names, workloads.workload_names),
        (wanted.workload_types, workloads.workload_types),
    ):
        if values:
            keep &= np.isin(column[rows], list(values))
    if wanted.labels:
        combine = all if wanted.labels_operator == "AND" else any
        keep &= np.array(
            [combine(workloads.labels[row].get(k) == v for k, v in wanted.labels) for row in rows], dtype=bool
        )
    return np.flatnonzero(keep)
