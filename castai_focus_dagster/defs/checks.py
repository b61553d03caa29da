"""Asset checks on the published FOCUS objects: they re-read what consumers will read.

The audit inside write-audit-publish already refuses bad rows before anything is replaced; these checks
report, in the UI and per run, that the objects actually published are conformant and agree with their
manifest. They read the run's own partitions from its tags (partition-aware checks are a Dagster
preview feature, so they are not used).
"""

import hashlib
import json
import tempfile
from collections.abc import Mapping
from datetime import date
from typing import Any

import dagster as dg
import pyarrow.compute as pc

from castai_focus_dagster.defs.assets import focus_cost_and_usage
from castai_focus_dagster.defs.partitions import daily_partitions
from castai_focus_dagster.defs.resources import FocusStorageResource
from castai_focus_dagster.focus.conformance import check_conformance, combine_results
from castai_focus_dagster.storage.keys import manifest_key
from castai_focus_dagster.storage.object_store import ObjectStore
from castai_focus_dagster.storage.serialize import iter_focus_batches

TOTAL_TOLERANCE = 1e-6


def run_partition_keys(tags: Mapping[str, str]) -> list[str]:
    """The daily partitions a run covered, from its `dagster/partition` or range tags."""
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    start = tags.get("dagster/asset_partition_range_start")
    end = tags.get("dagster/asset_partition_range_end")
    if start and end:
        return list(daily_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(start=start, end=end)))
    return []


def _manifest(store: ObjectStore, prefix: str, key: str) -> dict[str, Any]:
    return json.loads(store.get(manifest_key(prefix, date.fromisoformat(key))))


@dg.asset_check(
    asset=focus_cost_and_usage,
    blocking=True,
    description="Every object the day's manifest lists exists with the listed size, SHA-256 and row count.",
)
def focus_manifest_consistency(
    context: dg.AssetCheckExecutionContext, storage: FocusStorageResource
) -> dg.AssetCheckResult:
    problems: list[str] = []
    keys = run_partition_keys(context.run.tags)
    for key in keys:
        try:
            manifest = _manifest(storage.store, storage.settings.s3_prefix, key)
        except KeyError:
            problems.append(f"{key}: no manifest")
            continue
        for item in manifest["files"]:
            # Through a temporary file: a day of a large organisation is hundreds of MB.
            with tempfile.TemporaryFile() as data:
                try:
                    storage.store.get_file(item["key"], data)
                except KeyError:
                    problems.append(f"{key}: {item['key']} is listed but missing")
                    continue
                size = data.tell()
                data.seek(0)
                digest = hashlib.file_digest(data, "sha256").hexdigest()
            if digest != item["sha256"] or size != item["bytes"]:
                problems.append(f"{key}: {item['key']} differs from its manifest entry")
    return dg.AssetCheckResult(
        passed=not problems and bool(keys),
        metadata={"partitions": dg.MetadataValue.json(keys), "problems": dg.MetadataValue.json(problems)},
    )


@dg.asset_check(
    asset=focus_cost_and_usage,
    blocking=True,
    description=(
        "The published objects parse with the FOCUS schema, pass the built-in FOCUS 1.3 conformance rules, "
        "and their cost totals equal the manifest's."
    ),
)
def focus_published_conformance(
    context: dg.AssetCheckExecutionContext, storage: FocusStorageResource
) -> dg.AssetCheckResult:
    settings = storage.settings
    problems: list[str] = []
    rows = 0
    keys = run_partition_keys(context.run.tags)
    for key in keys:
        try:
            manifest = _manifest(storage.store, settings.s3_prefix, key)
        except KeyError:
            problems.append(f"{key}: no manifest")
            continue
        fmt = manifest.get("format", settings.s3_format)
        for item in manifest["files"]:
            billed, results = 0.0, []
            # Row group by row group from a temporary file: memory holds one batch, not the day.
            with tempfile.TemporaryFile() as data:
                storage.store.get_file(item["key"], data)
                data.seek(0)
                for batch in iter_focus_batches(data, fmt):
                    rows += batch.num_rows
                    billed += float(pc.sum(batch["BilledCost"]).as_py() or 0.0)
                    results.append(check_conformance(batch))
            problems += [f"{key}: {r.rule}: {r.message}" for r in combine_results(results) if not r.passed]
            expected = float(manifest["costTotals"]["BilledCost"])
            if abs(billed - expected) > TOTAL_TOLERANCE * max(1, int(item["rowCount"])):
                problems.append(
                    f"{key}: Σ BilledCost {billed:.6f} differs from the manifest's {expected:.6f}"
                )
    return dg.AssetCheckResult(
        passed=not problems and bool(keys),
        metadata={
            "rows_checked": dg.MetadataValue.int(rows),
            "partitions": dg.MetadataValue.json(keys),
            "problems": dg.MetadataValue.json(problems[:50]),
        },
    )


@dg.asset_check(
    asset=focus_cost_and_usage,
    blocking=False,
    description=(
        "Warns when Cast AI had no data for a cluster (empty answer, with or without a noDataReason): the "
        "day is published without it, which does not mean the cluster cost nothing."
    ),
)
def focus_clusters_with_data(
    context: dg.AssetCheckExecutionContext, storage: FocusStorageResource
) -> dg.AssetCheckResult:
    without_data: list[dict[str, Any]] = []
    keys = run_partition_keys(context.run.tags)
    for key in keys:
        try:
            manifest = _manifest(storage.store, storage.settings.s3_prefix, key)
        except KeyError:
            continue  # focus_manifest_consistency reports a missing manifest
        listed = manifest.get("extra", {}).get("clusters_without_data", [])
        without_data += [{"day": key, **c} for c in listed]
    names = sorted({f"{c['cluster_name'] or c['cluster_id']} ({c['reason']})" for c in without_data})
    return dg.AssetCheckResult(
        passed=not without_data,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"Cast AI has no data for: {', '.join(names)}" if names else "Cast AI had data for every cluster"
        ),
        metadata={
            "partitions": dg.MetadataValue.json(keys),
            "clusters_without_data": dg.MetadataValue.json(without_data),
        },
    )


FOCUS_CHECKS = [
    focus_manifest_consistency,
    focus_published_conformance,
    focus_clusters_with_data,
    *dg.build_column_schema_change_checks(assets=[focus_cost_and_usage]),
]
