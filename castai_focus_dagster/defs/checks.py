"""Asset checks on the published FOCUS objects: they re-read what consumers will read.

The audit inside write-audit-publish already refuses bad rows before anything is replaced; these checks
report, in the UI and per day, that the objects actually published are conformant, agree with their
manifest, keep one schema and show no unexplained cost jump. Each check is partitioned like its asset
and records one evaluation per day, in a one-day run and in every day of a range.
"""

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, BinaryIO

import dagster as dg
import pyarrow.compute as pc

# Dagster has no public constructor for the "which materialisation was checked" link of an evaluation
# yielded directly (the only way to record one evaluation per day of a range run).
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from castai_focus_dagster.defs.asset_factory import FOCUS_ASSET_KEY
from castai_focus_dagster.defs.finops import (
    MOVER_COLUMNS,
    MOVER_MIN_CHANGE,
    MOVER_RELATIVE_CHANGE,
    day_over_day_movers,
)
from castai_focus_dagster.defs.partitions import daily_partitions
from castai_focus_dagster.defs.resources import FocusStorageResource
from castai_focus_dagster.focus.conformance import check_conformance
from castai_focus_dagster.focus.rules.common import combine_results
from castai_focus_dagster.storage.keys import manifest_key
from castai_focus_dagster.storage.object_store import ObjectStore
from castai_focus_dagster.storage.payload import payload_sha256, payload_size
from castai_focus_dagster.storage.serialize import iter_focus_batches

TOTAL_TOLERANCE = 1e-6
# A day republished while a check reads it (an overlapping run of the same day) is read again after
# 1, 2, 4 and 8 s; an object that still differs from its manifest then is reported as such.
SETTLE_DELAYS_SECONDS = (1.0, 2.0, 4.0, 8.0)
ASSET_KEY = FOCUS_ASSET_KEY
Evaluations = Iterator[dg.AssetCheckEvaluation | dg.Output[None]]


@dataclass(frozen=True)
class DayVerdict:
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    description: str | None = None


def _manifest(store: ObjectStore, prefix: str, key: str) -> dict[str, Any]:
    return json.loads(store.get(manifest_key(prefix, date.fromisoformat(key))))


def _settle_wait(seconds: float) -> None:
    time.sleep(seconds)


class Republished(Exception):
    """An object differs from the manifest read just before it: the day is being republished."""


def settled(judge: Callable[[str], DayVerdict]) -> Callable[[str], DayVerdict]:
    """`judge` on one consistent (manifest, objects) state of the day, read again while it changes."""

    def judge_settled(key: str) -> DayVerdict:
        for delay in SETTLE_DELAYS_SECONDS:
            try:
                return judge(key)
            except Republished:
                _settle_wait(delay)
        try:
            return judge(key)
        except Republished as exc:
            return DayVerdict(False, {"problems": dg.MetadataValue.json([str(exc)])}, str(exc))

    return judge_settled


@contextmanager
def _open_listed(store: ObjectStore, item: dict[str, Any]) -> Iterator[BinaryIO]:
    """The listed object as an open file (rewound), or `Republished` when it is not the one the manifest
    lists."""
    with store.open_file(item["key"]) as data:
        if payload_size(data) != item["bytes"] or payload_sha256(data) != item["sha256"]:
            raise Republished(f"{item['key']} differs from its manifest entry")
        yield data


def _checked_materialization(
    instance: dg.DagsterInstance, key: str
) -> AssetCheckEvaluationTargetMaterializationData | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=ASSET_KEY, asset_partitions=[key]), limit=1
    ).records
    if not records:
        return None
    latest = records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        run_id=latest.run_id, storage_id=latest.storage_id, timestamp=latest.timestamp
    )


def per_day(
    context: dg.AssetCheckExecutionContext,
    judge: Callable[[str], DayVerdict],
    *,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> Evaluations:
    """One evaluation per day of the run, each linked to that day's materialisation."""
    (spec,) = context.check_specs
    for key in context.partition_keys:
        verdict = judge(key)
        yield dg.AssetCheckEvaluation(
            asset_key=ASSET_KEY,
            check_name=spec.name,
            passed=verdict.passed,
            metadata=verdict.metadata,
            description=verdict.description,
            severity=severity,
            blocking=spec.blocking,
            partition=key,
            target_materialization_data=_checked_materialization(context.instance, key),
        )
    yield dg.Output(None)  # the check step's own output, which the evaluations do not produce


def daily_check(
    *, blocking: bool, description: str
) -> Callable[[Callable[..., Evaluations]], dg.AssetChecksDefinition]:
    """A check of the FOCUS asset partitioned by day; its function yields `per_day`'s evaluations."""

    def wrap(fn: Callable[..., Evaluations]) -> dg.AssetChecksDefinition:
        # dg.asset_check's annotation knows only functions returning one AssetCheckResult.
        check_fn: Callable[..., Any] = fn
        return dg.asset_check(
            asset=ASSET_KEY,
            partitions_def=daily_partitions,
            blocking=blocking,
            description=description,
        )(check_fn)

    return wrap


@daily_check(
    blocking=True,
    description="Every object the day's manifest lists exists with the listed size, SHA-256 and row count.",
)
def focus_manifest_consistency(
    context: dg.AssetCheckExecutionContext, storage: FocusStorageResource
) -> Evaluations:
    def judge(key: str) -> DayVerdict:
        try:
            manifest = _manifest(storage.store, storage.settings.s3_prefix, key)
        except KeyError:
            return DayVerdict(False, {"problems": dg.MetadataValue.json(["no manifest"])}, "no manifest")
        problems: list[str] = []
        for item in manifest["files"]:
            # Hashed from a file, never in memory: a day of a large organisation is hundreds of MB.
            try:
                with _open_listed(storage.store, item):
                    pass
            except KeyError:
                problems.append(f"{item['key']} is listed but missing")
        return DayVerdict(
            not problems,
            {"objects": len(manifest["files"]), "problems": dg.MetadataValue.json(problems)},
        )

    yield from per_day(context, settled(judge))


@daily_check(
    blocking=True,
    description=(
        "The published objects parse with the FOCUS schema, are the bytes the FOCUS 1.3 conformance audit "
        "passed before publication (SHA-256; without that record every rule runs again on them), and their "
        "row counts and cost totals equal the manifest's."
    ),
)
def focus_published_conformance(
    context: dg.AssetCheckExecutionContext, storage: FocusStorageResource
) -> Evaluations:
    settings = storage.settings

    def judge(key: str) -> DayVerdict:
        return published_conformance(storage.store, settings.s3_prefix, settings.s3_format, key)

    yield from per_day(context, settled(judge))


def published_conformance(store: ObjectStore, prefix: str, default_format: str, key: str) -> DayVerdict:
    """The verdict of `focus_published_conformance` on one day (`Republished` while it is replaced)."""
    try:
        manifest = _manifest(store, prefix, key)
    except KeyError:
        return DayVerdict(False, {"problems": dg.MetadataValue.json(["no manifest"])}, "no manifest")
    audited = audited_rules(manifest)
    problems: list[str] = []
    rows = 0
    fmt = manifest.get("format", default_format)
    for item in manifest["files"]:
        item_rows, billed, results = 0, 0.0, []
        # Row group by row group from a file: memory holds one batch, not the day.
        with _open_listed(store, item) as data:  # Republished unless these are the listed bytes
            for batch in iter_focus_batches(data, fmt, None if audited is None else ["BilledCost"]):
                item_rows += batch.num_rows
                billed += float(pc.sum(batch["BilledCost"]).as_py() or 0.0)
                if audited is None:
                    results.append(check_conformance(batch))
        rows += item_rows
        problems += [f"{r.rule}: {r.message}" for r in combine_results(results) if not r.passed]
        if item_rows != int(item["rowCount"]):
            problems.append(f"{item['key']} holds {item_rows} rows, the manifest lists {item['rowCount']}")
        expected = float(manifest["costTotals"]["BilledCost"])
        if abs(billed - expected) > TOTAL_TOLERANCE * max(1, int(item["rowCount"])):
            problems.append(f"Σ BilledCost {billed:.6f} differs from the manifest's {expected:.6f}")
    how = "audited before publication, SHA-256 verified" if audited else "every rule run on the objects"
    return DayVerdict(
        not problems,
        {
            "rows_checked": dg.MetadataValue.int(rows),
            "conformance": how,
            "rules": len(audited) if audited else "all",
            "problems": dg.MetadataValue.json(problems[:50]),
        },
    )


def audited_rules(manifest: dict[str, Any]) -> list[str] | None:
    """The rules the publication's audit passed on the rows of the listed objects, as it recorded them;
    None for a manifest without that record (an older version's publication, or one made by hand)."""
    audit = manifest.get("extra", {}).get("audit")
    if not isinstance(audit, dict) or audit.get("passed") is not True:
        return None
    rules = audit.get("rules")
    return [str(rule) for rule in rules] if isinstance(rules, list) and rules else None


@daily_check(
    blocking=False,
    description=(
        "The day's published schema (the manifest's schemaId) is the one of the day before: readers of the "
        "Hive tree see one table schema."
    ),
)
def focus_column_schema(context: dg.AssetCheckExecutionContext, storage: FocusStorageResource) -> Evaluations:
    prefix = storage.settings.s3_prefix

    def judge(key: str) -> DayVerdict:
        try:
            schema_id = _manifest(storage.store, prefix, key)["schemaId"]
        except KeyError:
            return DayVerdict(True, description="no manifest (focus_manifest_consistency reports it)")
        before = (date.fromisoformat(key) - timedelta(days=1)).isoformat()
        try:
            previous = _manifest(storage.store, prefix, before)["schemaId"]
        except KeyError:
            return DayVerdict(True, {"schema_id": schema_id}, f"no published day {before} to compare with")
        return DayVerdict(
            schema_id == previous,
            {"schema_id": schema_id, "previous_schema_id": previous},
            None if schema_id == previous else f"the FOCUS schema changed since {before}",
        )

    yield from per_day(context, judge, severity=dg.AssetCheckSeverity.WARN)


@daily_check(
    blocking=False,
    description=(
        "Warns when Cast AI had no data for a cluster (empty answer, with or without a noDataReason): the "
        "day is published without it, which does not mean the cluster cost nothing."
    ),
)
def focus_clusters_with_data(
    context: dg.AssetCheckExecutionContext, storage: FocusStorageResource
) -> Evaluations:
    def judge(key: str) -> DayVerdict:
        try:
            manifest = _manifest(storage.store, storage.settings.s3_prefix, key)
        except KeyError:
            return DayVerdict(True, description="no manifest (focus_manifest_consistency reports it)")
        listed = manifest.get("extra", {}).get("clusters_without_data", [])
        names = sorted({f"{c['cluster_name'] or c['cluster_id']} ({c['reason']})" for c in listed})
        return DayVerdict(
            not listed,
            {"clusters_without_data": dg.MetadataValue.json(listed)},
            f"Cast AI has no data for: {', '.join(names)}" if names else "Cast AI had data for every cluster",
        )

    yield from per_day(context, judge, severity=dg.AssetCheckSeverity.WARN)


@daily_check(
    blocking=False,
    description=(
        f"Warns when a namespace's or a workload's BilledCost changed by more than "
        f"{MOVER_RELATIVE_CHANGE:.0%} and at least {MOVER_MIN_CHANGE:g} (billing currency) since the day "
        "before, naming the largest movers. Complete days only."
    ),
)
def focus_cost_anomalies(
    context: dg.AssetCheckExecutionContext, storage: FocusStorageResource
) -> Evaluations:
    settings = storage.settings

    def judge(key: str) -> DayVerdict:
        before = (date.fromisoformat(key) - timedelta(days=1)).isoformat()
        days = []
        for day in (before, key):
            try:
                days.append(_manifest(storage.store, settings.s3_prefix, day))
            except KeyError:
                return DayVerdict(True, description=f"not compared: {day} is not published")
        partial = [m["partition"]["day"] for m in days if not m.get("complete")]
        if partial:
            return DayVerdict(True, description=f"not compared: {', '.join(partial)} is a partial day")
        movers = day_over_day_movers(
            _data_batches(storage.store, days[0]), _data_batches(storage.store, days[1])
        )
        currency = settings.focus_billing_currency
        return DayVerdict(
            not movers.rows,
            {
                "movers": dg.MetadataValue.md(movers.markdown(currency)),
                "namespaces_compared": movers.namespaces,
                "workloads_compared": movers.workloads,
            },
            movers.summary(before, currency),
        )

    yield from per_day(context, judge, severity=dg.AssetCheckSeverity.WARN)


def _data_batches(store: ObjectStore, manifest: dict[str, Any]) -> Iterator[Any]:
    """The day's published rows, batch by batch, from its data objects (not the Ternary copies)."""
    for item in manifest["files"]:
        if item.get("role", "data") != "data":
            continue
        with store.open_file(item["key"]) as data:
            yield from iter_focus_batches(data, manifest["format"], MOVER_COLUMNS)


FOCUS_CHECKS = [
    focus_manifest_consistency,
    focus_published_conformance,
    focus_column_schema,
    focus_clusters_with_data,
    focus_cost_anomalies,
]
