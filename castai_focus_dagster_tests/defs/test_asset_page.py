"""What the asset page shows, read back from a real Dagster instance: per-day check evaluations and
materialisation metadata (one-day and range runs alike), the FinOps figures and the cost-anomaly check."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from castai_focus_dagster.castai.sandbox import Faults, SandboxOrg, SandboxServer
from castai_focus_dagster.definitions import defs
from castai_focus_dagster.defs.checks import FOCUS_CHECKS
from castai_focus_dagster.defs.sensors import PUBLISHED_ASSET_KEY
from castai_focus_dagster.storage.keys import data_key
from castai_focus_dagster.storage.publication_guard import ALLOW_GROWTH_TAG

CHECK_NAMES = sorted(key.name for check in FOCUS_CHECKS for key in check.check_keys)
DAYS = ["2026-11-02", "2026-11-03"]
PREFIX = "focus/"  # the default S3_PREFIX


def run(
    keys: list[str], instance: dg.DagsterInstance, tags: dict[str, str] | None = None
) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("focus_export_job")
    if len(keys) == 1:
        return job.execute_in_process(
            partition_key=keys[0], instance=instance, raise_on_error=False, tags=tags
        )
    tags = {
        **(tags or {}),
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    }
    return job.execute_in_process(tags=tags, instance=instance, raise_on_error=False)


def namespace_costs(root: Path, org: SandboxOrg, key: str) -> dict[str, float]:
    """Σ BilledCost per cluster/namespace of a published day, computed by DuckDB from the file."""
    path = root / data_key(PREFIX, org.organization_id, date.fromisoformat(key), "parquet")
    rows = duckdb.sql(
        "SELECT x_CastAIClusterName || '/' || x_CastAINamespace, sum(BilledCost)::DOUBLE "
        f"FROM read_parquet('{path}') WHERE x_CastAINamespace IS NOT NULL GROUP BY 1"
    ).fetchall()
    return dict(rows)


def day_metadata(instance: dg.DagsterInstance, key: str) -> dict[str, object]:
    """The metadata of the day's latest materialisation, as the partition view shows it."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=PUBLISHED_ASSET_KEY, asset_partitions=[key]), limit=1
    ).records
    materialization = records[0].asset_materialization
    assert materialization is not None
    return {name: value.value for name, value in materialization.metadata.items()}


def evaluations(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetCheckEvaluation]:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    return [e.get_dagster_event().event_specific_data for e in events]  # type: ignore[misc]


def sandbox_total(org: SandboxOrg, key: str, cluster_ids: list[str] | None = None) -> float:
    start = datetime.fromisoformat(key).replace(tzinfo=UTC)
    ids = cluster_ids or [c.id for c in org.clusters]
    return sum(org.expected_cluster_total(cid, start, start + timedelta(days=1)) for cid in ids)


def test_each_day_of_a_range_run_has_its_own_checks_and_its_own_full_metadata(
    exporter_env: Path, sandbox_org: SandboxOrg
) -> None:
    with dg.instance_for_test() as instance:
        result = run(DAYS, instance)
        assert result.success
        checked = evaluations(instance, result.run_id)
        pages = {key: day_metadata(instance, key) for key in DAYS}
        one_day = run([DAYS[0]], instance)
        assert one_day.success
        alone = day_metadata(instance, DAYS[0])

    # One evaluation per check and day, each naming its day: no run-wide "Partition —" row.
    assert sorted((e.check_name, e.partition) for e in checked) == sorted(
        (name, key) for name in CHECK_NAMES for key in DAYS
    )
    assert all(e.passed for e in checked), [e for e in checked if not e.passed]
    assert all(e.target_materialization_data is not None for e in checked)
    # A day of the range carries every entry a one-day run shows.
    for key in DAYS:
        assert set(alone) <= set(pages[key]), set(alone) - set(pages[key])
    largest = max(sandbox_org.clusters, key=lambda c: sandbox_total(sandbox_org, DAYS[1], [c.id]))
    for key in DAYS:
        page = pages[key]
        expected = sandbox_total(sandbox_org, key)  # the sandbox's own truth, not our output
        assert page["BilledCost (USD)"] == pytest.approx(expected, abs=1e-4)
        assert page["billed_cost"] == pytest.approx(expected, abs=1e-4)
        assert abs(page["Σ BilledCost − Cast AI cost (USD)"]) <= 1e-4  # type: ignore[arg-type]
        assert page["day_status"] == "complete"
        assert "BilledCost so far (USD)" not in page
        for entry in ("audit", "preview", "enrichment_missing", "top_namespaces", "top_workloads"):
            assert entry in page, entry
    # The top cluster of the day is the sandbox's costliest cluster, with its cost to the cent.
    first_row = str(pages[DAYS[1]]["top_clusters"]).splitlines()[2]
    largest_cost = sandbox_total(sandbox_org, DAYS[1], [largest.id])
    assert first_row.startswith(f"| {largest.name} | {largest_cost:,.2f} |"), first_row
    # Previews show costs without binary float noise such as 0.009167024905000001 (display only).
    assert not re.search(r"\.\d*(0{5,}|9{5,})\d", str(pages[DAYS[0]]["preview"]))


def test_a_partial_day_is_marked_and_its_costs_are_not_plotted_as_a_day(exporter_env: Path) -> None:
    today = datetime.now(UTC).date().isoformat()
    with dg.instance_for_test() as instance:
        assert run([today], instance).success
        page = day_metadata(instance, today)
    assert str(page["day_status"]).startswith("partial: charge periods up to ")
    assert "BilledCost so far (USD)" in page
    assert "BilledCost (USD)" not in page and "Σ BilledCost − Cast AI cost (USD)" in page


def test_cost_anomaly_check_names_the_namespaces_of_a_cluster_whose_cost_tripled(
    exporter_env: Path, sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    tripled = sandbox_org.clusters[1]
    with dg.instance_for_test() as instance:
        steady = run(DAYS, instance)
        assert steady.success
        calm = {
            e.partition: e
            for e in evaluations(instance, steady.run_id)
            if e.check_name == "focus_cost_anomalies"
        }
        before, unscaled = (namespace_costs(exporter_env, sandbox_org, key) for key in DAYS)
        sandbox.faults = Faults(cost_scale={rf"/clusters/{tripled.id}/": 3.0})
        jump = run([DAYS[1]], instance, tags={ALLOW_GROWTH_TAG: "true"})
        assert jump.success  # a WARN check: the day is published
        (anomaly,) = [e for e in evaluations(instance, jump.run_id) if e.check_name == "focus_cost_anomalies"]

    # Ordinary day-to-day variation of the sandbox stays within the documented thresholds.
    assert calm[DAYS[1]].passed, calm[DAYS[1]].description
    assert calm[DAYS[0]].passed and "not published" in (calm[DAYS[0]].description or "")
    assert not anomaly.passed and anomaly.severity == dg.AssetCheckSeverity.WARN
    assert anomaly.partition == DAYS[1]
    assert tripled.name in (anomaly.description or "")
    rows = [
        [c.strip() for c in row.strip("|").split("|")]
        for row in str(anomaly.metadata["movers"].value).splitlines()[2:]
    ]
    assert rows, anomaly.metadata
    # Every mover belongs to the tripled cluster; a namespace's figures are DuckDB's sums of the files.
    assert all(cells[1].startswith(f"{tripled.name}/") for cells in rows), rows
    namespaces = [cells for cells in rows if cells[0] == "namespace"]
    assert namespaces, rows
    for _level, name, previous, current, _change in namespaces:
        assert float(previous.replace(",", "")) == pytest.approx(before[name], abs=0.006)
        assert float(current.replace(",", "")) == pytest.approx(3 * unscaled[name], abs=0.02)
