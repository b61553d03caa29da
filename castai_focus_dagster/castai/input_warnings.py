"""Bad input the client repaired by a documented rule, kept with the data it concerns: each
`InputWarning` is logged and stored in the workload-costs table's schema metadata."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from castai_focus_dagster.castai.assembler import WorkloadCostsAssembler
from castai_focus_dagster.castai.endpoints import WORKLOAD_COSTS
from castai_focus_dagster.castai.wire import MISSING_IDENTITY

# Schema-metadata key of a workload-costs table: JSON list of the InputWarnings met while fetching it.
INPUT_WARNINGS_KEY = b"castai_focus.input_warnings"
DUPLICATE_WORKLOAD = "duplicate-workload"
CONTROL_CHARACTERS_IN_LABELS = "control-characters-in-labels"
CONFLICTING_LABEL_VALUES = "conflicting-label-values"
MISSING_WORKLOAD_IDENTITY = "missing-workload-identity"
# Correctly spaced buckets whose uptimeMinutes* exceed the step (uptime may count pod-minutes): kept.
UPTIME_OVER_STEP = "uptime-over-step"
# Workloads whose answer carried no `summary`: their bucket size was judged by its spacing alone.
SUMMARY_MISSING = "summary-missing"
# Not a repair but a fact the day must show: Cast AI listed no workload for the cluster (see `no_data`).
NO_DATA = "no-data"


@dataclass(frozen=True)
class InputWarning:
    """Bad input repaired by a documented rule (docs/reliability.md): logged, and kept with the data
    so the asset's metadata shows it. `rule` is a stable id, `count` how many times it applied."""

    endpoint: str
    cluster_id: str | None
    rule: str
    count: int
    message: str
    detail: str = ""  # machine-readable specifics (NO_DATA: the noDataReason); left out of JSON when empty

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "detail" or v}


def input_warnings(table: pa.Table) -> list[dict[str, Any]]:
    """The InputWarnings (as JSON objects) recorded in a workload-costs table's schema metadata."""
    raw = (table.schema.metadata or {}).get(INPUT_WARNINGS_KEY)
    return list(json.loads(raw)) if raw else []


def with_input_warnings(table: pa.Table, warnings: Sequence[Mapping[str, Any]]) -> pa.Table:
    """`table` with `warnings` recorded in its schema metadata (none: no key), other metadata kept."""
    metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != INPUT_WARNINGS_KEY}
    if warnings:
        metadata[INPUT_WARNINGS_KEY] = json.dumps(list(warnings), sort_keys=True).encode()
    return table.replace_schema_metadata(metadata or None)


def workload_costs_warnings(
    assembler: WorkloadCostsAssembler, cluster_id: str, step_seconds: int
) -> list[InputWarning]:
    """The repairs and facts one cluster's assembled workload costs must carry, in a fixed order."""
    warnings = []
    if assembler.uptime_over_step:
        warnings.append(
            InputWarning(
                WORKLOAD_COSTS,
                cluster_id,
                UPTIME_OVER_STEP,
                1,
                f"a bucket reports {assembler.uptime_over_step:g} uptime minutes, more than a "
                f"stepSeconds={step_seconds} bucket lasts; the buckets are spaced as requested, so "
                "they are kept (uptime may count pod-minutes)",
            )
        )
    if assembler.without_summary:
        warnings.append(
            InputWarning(
                WORKLOAD_COSTS,
                cluster_id,
                SUMMARY_MISSING,
                assembler.without_summary,
                f"{assembler.without_summary} workload(s) came without a summary: their bucket size was "
                "checked by the spacing of their timestamps only (not against their total)",
            )
        )
    if assembler.duplicates:
        warnings.append(
            InputWarning(
                WORKLOAD_COSTS,
                cluster_id,
                DUPLICATE_WORKLOAD,
                assembler.duplicates,
                f"dropped {assembler.duplicates} duplicate workload(s): identical repeats of a workload "
                "already received (kept the first copy)",
            )
        )
    if assembler.dropped_labels:
        warnings.append(
            InputWarning(
                WORKLOAD_COSTS,
                cluster_id,
                CONTROL_CHARACTERS_IN_LABELS,
                assembler.dropped_labels,
                f"left out {assembler.dropped_labels} label(s) whose key or value holds control "
                "characters (not valid Kubernetes labels); costs are unaffected",
            )
        )
    if assembler.conflicting_labels:
        warnings.append(
            InputWarning(
                WORKLOAD_COSTS,
                cluster_id,
                CONFLICTING_LABEL_VALUES,
                assembler.conflicting_labels,
                f"left out {assembler.conflicting_labels} label name(s) that a workload lists with "
                "different values (which one holds cannot be told); costs are unaffected",
            )
        )
    if assembler.missing_identity:
        warnings.append(
            InputWarning(
                WORKLOAD_COSTS,
                cluster_id,
                MISSING_WORKLOAD_IDENTITY,
                assembler.missing_identity,
                f"{assembler.missing_identity} workload(s) without workloadName, workloadType or "
                f"namespace exported under the placeholder {MISSING_IDENTITY!r}; their costs are kept",
            )
        )
    no_data = assembler.no_data()
    if no_data is not None:
        warnings.append(
            InputWarning(
                WORKLOAD_COSTS,
                cluster_id,
                NO_DATA,
                1,
                f"Cast AI has no workload data for the cluster (noDataReason: {no_data}); "
                "it is absent from the day, which does not mean it cost nothing",
                detail=no_data,
            )
        )
    return warnings
