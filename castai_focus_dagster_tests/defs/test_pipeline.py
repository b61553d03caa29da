"""The product as users run it: the Dagster job on a real instance, the sandbox over HTTP, real files."""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from castai_focus_dagster import definitions
from castai_focus_dagster.definitions import defs
from castai_focus_dagster.defs import focus_asset as focus_asset_module
from castai_focus_dagster.defs.schedules import restated_partition_keys
from castai_focus_dagster.defs.sensors import FIRST_TICK_DONE, PUBLISHED_ASSET_KEY, missing_partition_keys
from castai_focus_dagster.storage.keys import data_key, manifest_key
from castai_focus_dagster_tests.s3_server import (  # noqa: F401  (pytest fixtures)
    S3TestServer,
    s3_bucket_fixture,
    s3_server_fixture,
)

PREFIX = "focus/"  # the default S3_PREFIX of the original exporter
DAY = "2026-11-01"
DAYS = ["2026-11-02", "2026-11-03", "2026-11-04"]
REPO = Path(__file__).resolve().parents[2]
REPOSITORY = defs.get_repository_def()


def load_defs() -> dg.Definitions:
    """The definitions as a code location loads them in this test's environment (the asset graph
    depends on FOCUS_ALLOCATION_MODE)."""
    return importlib.reload(definitions).defs


def run(
    keys: list[str], instance: dg.DagsterInstance, loaded: dg.Definitions | None = None
) -> dg.ExecuteInProcessResult:
    job = (loaded or load_defs()).resolve_job_def("focus_export_job")
    if len(keys) == 1:
        return job.execute_in_process(partition_key=keys[0], instance=instance, raise_on_error=False)
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    return job.execute_in_process(tags=tags, instance=instance, raise_on_error=False)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def day_total_from_sandbox(org, key: str) -> float:  # type: ignore[no-untyped-def]
    start = datetime.fromisoformat(key).replace(tzinfo=UTC)
    end = start + timedelta(days=1)
    return sum(org.expected_cluster_total(c.id, start, end) for c in org.clusters)


def test_one_day_end_to_end_to_local_files(exporter_env: Path, sandbox_org) -> None:  # type: ignore[no-untyped-def]
    with dg.instance_for_test() as instance:
        result = run([DAY], instance)
        assert result.success
        key = data_key(PREFIX, sandbox_org.organization_id, date.fromisoformat(DAY), "parquet")
        table = pq.read_table(exporter_env / key)
        manifest = json.loads((exporter_env / manifest_key(PREFIX, date.fromisoformat(DAY))).read_text())
        billed = pc.sum(table["BilledCost"]).as_py()
        assert table.num_rows == manifest["rowCount"] > 0
        assert billed == pytest.approx(manifest["costTotals"]["BilledCost"], abs=1e-9)
        # Conservation against the sandbox's own exact numbers, not against our output.
        assert billed == pytest.approx(day_total_from_sandbox(sandbox_org, DAY), abs=1e-4)
        materialization = result.asset_materializations_for_node("focus_cost_and_usage")[0]
        meta = materialization.metadata
        assert meta["dagster/row_count"].value == table.num_rows
        assert meta["billed_cost"].value == pytest.approx(billed)
        assert meta["enrichment_completeness"].value == 1.0
        assert "preview" in meta and "dagster/column_schema" in meta
        checks = result.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks)
        assert instance.get_materialized_partitions(PUBLISHED_ASSET_KEY) == {DAY}


def test_rematerialising_is_idempotent(exporter_env: Path) -> None:
    with dg.instance_for_test() as instance:
        assert run([DAY], instance).success
        first = snapshot(exporter_env)
        assert run([DAY], instance).success
        second = snapshot(exporter_env)
    assert sorted(first) == sorted(second), "a re-run must not add or remove objects"
    data = [k for k in first if k.startswith(PREFIX + "version=focus-1.3/")]
    assert data and all(first[k] == second[k] for k in data), "data objects must be byte-identical"
    assert not [k for k in second if k.startswith("_staging/")]


def test_three_day_single_run_writes_one_object_set_per_day(exporter_env: Path, sandbox_org) -> None:  # type: ignore[no-untyped-def]
    with dg.instance_for_test() as instance:
        result = run(DAYS, instance)
        assert result.success
        assert instance.get_materialized_partitions(PUBLISHED_ASSET_KEY) == set(DAYS)
    for key in DAYS:
        day = date.fromisoformat(key)
        assert (exporter_env / data_key(PREFIX, sandbox_org.organization_id, day, "parquet")).exists()
        manifest = json.loads((exporter_env / manifest_key(PREFIX, day)).read_text())
        assert manifest["costTotals"]["BilledCost"] == pytest.approx(
            day_total_from_sandbox(sandbox_org, key), abs=1e-4
        )
    data_files = sorted(p for p in exporter_env.rglob("*.parquet") if "version=focus-1.3" in str(p))
    assert len(data_files) == 3


def test_csv_format_replaces_the_parquet_object(
    exporter_env: Path,
    sandbox_org,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    day = date.fromisoformat(DAY)
    with dg.instance_for_test() as instance:
        assert run([DAY], instance).success
        monkeypatch.setenv("S3_FORMAT", "csv")
        assert run([DAY], instance).success
    csv_path = exporter_env / data_key(PREFIX, sandbox_org.organization_id, day, "csv")
    assert csv_path.exists()
    assert not (exporter_env / data_key(PREFIX, sandbox_org.organization_id, day, "parquet")).exists()
    header = csv_path.read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith('"') or header.split(",")[0]
    manifest = json.loads((exporter_env / manifest_key(PREFIX, day)).read_text())
    assert [f["key"] for f in manifest["files"]] == [
        data_key(PREFIX, sandbox_org.organization_id, day, "csv")
    ]


def test_a_failed_audit_leaves_the_published_objects_unchanged(
    exporter_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dg.instance_for_test() as instance:
        assert run([DAY], instance).success
        before = snapshot(exporter_env)
        real = focus_asset_module.to_focus

        def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
            table = real(*args, **kwargs)  # the real transform, then a wrong ListCost on every row
            index = table.schema.get_field_index("ListCost")
            return table.set_column(index, "ListCost", pc.add(table["ListCost"], 1.0))

        monkeypatch.setattr(focus_asset_module, "to_focus", broken)
        result = run([DAY], instance)
        assert not result.success
        after = snapshot(exporter_env)
    published = {k: v for k, v in before.items() if not k.startswith(PREFIX + "_internal/")}
    assert published == {k: v for k, v in after.items() if not k.startswith(PREFIX + "_internal/")}


def test_duckdb_reads_the_hive_tree_and_totals_match_the_manifests(exporter_env: Path) -> None:
    with dg.instance_for_test() as instance:
        assert run(DAYS, instance).success
    pattern = str(exporter_env / PREFIX / "version=focus-1.3" / "*" / "*" / "*" / "*.parquet")
    rows = duckdb.sql(
        "SELECT year, month, day, sum(BilledCost), count(*) "
        f"FROM read_parquet('{pattern}', hive_partitioning = true) "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert [f"{int(y):04d}-{int(m):02d}-{int(d):02d}" for y, m, d, _, _ in rows] == DAYS
    for (_y, _m, _d, billed, count), key in zip(rows, DAYS, strict=True):
        manifest = json.loads((exporter_env / manifest_key(PREFIX, date.fromisoformat(key))).read_text())
        assert billed == pytest.approx(manifest["costTotals"]["BilledCost"], abs=1e-6)
        assert count == manifest["rowCount"]


def test_schedule_requests_every_day_overlapping_the_lookback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASTAI_API_URL", "sandbox")
    schedule = defs.resolve_schedule_def("focus_restatement_schedule")
    tick = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
    monkeypatch.setenv("COLLECTION_LOOKBACK_HOURS", "24")
    context = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=REPOSITORY)
    requests = schedule.evaluate_tick(context).run_requests or []
    assert [r.partition_key for r in requests] == ["2026-11-19", "2026-11-20"]
    monkeypatch.setenv("COLLECTION_LOOKBACK_HOURS", "54")
    requests = (
        schedule.evaluate_tick(
            dg.build_schedule_context(scheduled_execution_time=tick, repository_def=REPOSITORY)
        ).run_requests
        or []
    )
    assert [r.partition_key for r in requests] == ["2026-11-18", "2026-11-19", "2026-11-20"]
    assert len({r.run_key for r in requests}) == 3
    assert schedule.cron_schedule == "0 */6 * * *"
    assert restated_partition_keys(datetime(2025, 1, 1, 1, tzinfo=UTC), 48) == ["2025-01-01"]


def test_gap_sensor_requests_exactly_the_missing_days(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASTAI_API_URL", "sandbox")
    monkeypatch.setenv("JOB_GAP_FILL_DAYS", "5")
    monkeypatch.setenv("JOB_BACKFILL_DAYS", "30")  # past the first tick (cursor): never used
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in range(5, 0, -1)]
    with dg.instance_for_test() as instance:
        for key in (days[0], days[3]):
            instance.report_runless_asset_event(dg.AssetMaterialization(PUBLISHED_ASSET_KEY, partition=key))
        sensor = defs.resolve_sensor_def("focus_gap_sensor")
        result = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, repository_def=REPOSITORY, cursor=FIRST_TICK_DONE)
        )
        assert sorted(r.partition_key for r in result.run_requests or []) == [days[1], days[2], days[4]]
        assert {r.tags["castai_focus/trigger"] for r in result.run_requests or []} == {"gap"}
        for key in days:
            instance.report_runless_asset_event(dg.AssetMaterialization(PUBLISHED_ASSET_KEY, partition=key))
        result = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, repository_def=REPOSITORY, cursor=FIRST_TICK_DONE)
        )
        assert not result.run_requests
    assert missing_partition_keys(datetime(2026, 1, 3, tzinfo=UTC), 2, {"2026-01-01"}) == ["2026-01-02"]


def test_gap_sensor_requests_days_last_published_before_they_were_complete(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: a day published while it ran (complete_day false) whose later schedule runs all failed
    counted as published, and was never asked for again."""
    monkeypatch.setenv("CASTAI_API_URL", "sandbox")
    monkeypatch.setenv("JOB_GAP_FILL_DAYS", "3")
    days = complete_days_before(datetime.now(UTC).date(), 3)

    def publish(key: str, complete: bool) -> None:
        event = dg.AssetMaterialization(
            PUBLISHED_ASSET_KEY, partition=key, metadata={"complete_day": complete}
        )
        instance.report_runless_asset_event(event)

    sensor = defs.resolve_sensor_def("focus_gap_sensor")
    with dg.instance_for_test() as instance:
        publish(days[0], False)
        publish(days[1], False)
        publish(days[1], True)  # restated once complete: the latest materialisation decides
        publish(days[2], True)
        result = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, repository_def=REPOSITORY, cursor=FIRST_TICK_DONE)
        )
        assert [r.partition_key for r in result.run_requests or []] == [days[0]]


def complete_days_before(today: date, count: int) -> list[str]:
    return [(today - timedelta(days=n)).isoformat() for n in range(count, 0, -1)]


@pytest.mark.parametrize("gap_days", ["0", "3"])
def test_first_deployment_backfills_job_backfill_days_once(
    monkeypatch: pytest.MonkeyPatch, gap_days: str
) -> None:
    """JOB_BACKFILL_DAYS as the original: the last N days on the first deployment, then never again."""
    monkeypatch.setenv("CASTAI_API_URL", "sandbox")
    monkeypatch.setenv("JOB_BACKFILL_DAYS", "10")
    monkeypatch.setenv("JOB_GAP_FILL_DAYS", gap_days)
    days = complete_days_before(datetime.now(UTC).date(), 10)
    sensor = defs.resolve_sensor_def("focus_gap_sensor")
    with dg.instance_for_test() as instance:
        first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=REPOSITORY))
        requests = first.run_requests or []
        assert [r.partition_key for r in requests] == days
        assert len({r.run_key for r in requests}) == 10
        # Days inside the gap window keep the gap run key, so the gap logic never asks for them twice.
        gap_keys = {r.partition_key for r in requests if (r.run_key or "").startswith("gap-")}
        assert gap_keys == set(days[len(days) - int(gap_days) :])
        # History runs queue behind the schedule's (priority 0): the run queue starts those first.
        backfill = [r for r in requests if (r.run_key or "").startswith("backfill-")]
        assert backfill and all(r.tags["dagster/priority"] == "-1" for r in backfill)
        assert first.cursor is not None
        # The runs have not finished yet (nothing materialised): the next tick does not backfill again.
        second = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, repository_def=REPOSITORY, cursor=first.cursor)
        )
        assert sorted(r.partition_key for r in second.run_requests or []) == sorted(gap_keys)
        assert all((r.run_key or "").startswith("gap-") for r in second.run_requests or [])


def test_no_first_deployment_backfill_by_default_nor_after_the_first_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CASTAI_API_URL", "sandbox")
    monkeypatch.delenv("JOB_BACKFILL_DAYS", raising=False)
    monkeypatch.setenv("JOB_GAP_FILL_DAYS", "0")
    sensor = defs.resolve_sensor_def("focus_gap_sensor")
    with dg.instance_for_test() as instance:
        result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=REPOSITORY))
        assert not result.run_requests  # JOB_BACKFILL_DAYS defaults to 0 = off
        assert result.cursor is not None  # ... and the first tick is spent all the same
        monkeypatch.setenv("JOB_BACKFILL_DAYS", "10")
        later = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, repository_def=REPOSITORY, cursor=result.cursor)
        )
        assert not later.run_requests  # not a first deployment any more


def test_first_deployment_backfill_survives_a_schedule_run_before_the_first_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: a day published by the schedule before the sensor first ticked skipped the backfill."""
    monkeypatch.setenv("CASTAI_API_URL", "sandbox")
    monkeypatch.setenv("JOB_BACKFILL_DAYS", "4")
    monkeypatch.setenv("JOB_GAP_FILL_DAYS", "0")
    days = complete_days_before(datetime.now(UTC).date(), 4)
    sensor = defs.resolve_sensor_def("focus_gap_sensor")
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(PUBLISHED_ASSET_KEY, partition=days[-1]))
        first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=REPOSITORY))
        assert [r.partition_key for r in first.run_requests or []] == days
        assert {r.tags["castai_focus/trigger"] for r in first.run_requests or []} == {"backfill"}
        assert first.cursor is not None
        second = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, repository_def=REPOSITORY, cursor=first.cursor)
        )
        assert not second.run_requests  # requested once


@pytest.mark.parametrize(("value", "running"), [(None, False), ("running", True), ("stopped", False)])
def test_schedule_default_status_starts_the_schedule_and_the_sensor(value: str | None, running: bool) -> None:
    """SCHEDULE_DEFAULT_STATUS, read when the code location loads (a fresh interpreter per value)."""
    env = {k: v for k, v in os.environ.items() if k != "SCHEDULE_DEFAULT_STATUS"}
    if value is not None:
        env["SCHEDULE_DEFAULT_STATUS"] = value
    code = (
        "from castai_focus_dagster.definitions import defs\n"
        "print(defs.resolve_schedule_def('focus_restatement_schedule').default_status.value, "
        "defs.resolve_sensor_def('focus_gap_sensor').default_status.value)"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = "RUNNING" if running else "STOPPED"
    assert proc.stdout.split() == [expected, expected]


def test_definitions_load_and_validate_from_the_cli(tmp_path: Path) -> None:
    dg.Definitions.validate_loadable(defs)
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-m",
            "castai_focus_dagster.definitions",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


RANGE_TAGS = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[1]}
MODULE = "castai_focus_dagster.definitions"
# Dagster's CLI takes --partition-range only for single-run assets; a multi-day run of the multi-run
# assets is the job with the range tags (what a backfill run carries).
CLI_SELECTIONS = [
    ["asset", "materialize", "-m", MODULE, "--select", "*", "--partition", DAY],
    ["job", "execute", "-m", MODULE, "-j", "focus_export_job", "--tags", json.dumps(RANGE_TAGS)],
]


@pytest.mark.parametrize("selection_args", CLI_SELECTIONS, ids=["partition", "partition-range"])
def test_the_asset_materialize_cli_as_users_run_it(
    exporter_env: Path,
    tmp_path: Path,
    sandbox_org,
    selection_args: list[str],  # type: ignore[no-untyped-def]
) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", *selection_args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    days = [DAY] if selection_args[0] == "asset" else DAYS[:2]
    written = sorted(p.name for p in exporter_env.rglob("castai-focus-*.parquet"))
    assert written == [
        Path(data_key(PREFIX, sandbox_org.organization_id, date.fromisoformat(d), "parquet")).name
        for d in days
    ]


def test_split_allocation_mode_end_to_end(
    exporter_env: Path,
    sandbox_org,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("FOCUS_ALLOCATION_MODE", "split")
    with dg.instance_for_test() as instance:
        result = run([DAY], instance)
        assert result.success
        stored = {
            e.step_key: e.user_message
            for e in instance.all_logs(result.run_id)
            if not e.dagster_event and " clusters" in e.user_message
        }
    # Each intermediate's log line names what its rows are (it said "workload buckets" for all of them).
    assert "workload buckets" in stored["castai_workload_costs"]
    assert "cluster cost-report buckets" in stored["castai_cluster_costs"]
    assert "cluster cost-report buckets" in stored["castai_listing_prices"]
    table = pq.read_table(
        exporter_env / data_key(PREFIX, sandbox_org.organization_id, date.fromisoformat(DAY), "parquet")
    )
    allocated = table.filter(pc.is_valid(table["AllocatedResourceId"]))
    idle = table.filter(pc.is_null(table["AllocatedResourceId"]))
    # Workloads keep exactly their Cast AI cost; the clusters' idle capacity is on top, made explicit.
    assert pc.sum(allocated["BilledCost"]).as_py() == pytest.approx(
        day_total_from_sandbox(sandbox_org, DAY), abs=1e-4
    )
    assert idle.num_rows > 0 and pc.sum(idle["BilledCost"]).as_py() > 0
    assert set(pc.unique(table["ResourceType"]).to_pylist()) == {"Kubernetes Cluster"}
    manifest = json.loads((exporter_env / manifest_key(PREFIX, date.fromisoformat(DAY))).read_text())
    assert manifest["costTotals"]["BilledCost"] == pytest.approx(
        pc.sum(table["BilledCost"]).as_py(), abs=1e-9
    )


@pytest.mark.parametrize("mode", ["workload", "split", None])
def test_only_split_mode_has_the_cluster_cost_reports_in_its_graph(
    monkeypatch: pytest.MonkeyPatch, mode: str | None
) -> None:
    if mode is None:
        monkeypatch.delenv("FOCUS_ALLOCATION_MODE", raising=False)
    else:
        monkeypatch.setenv("FOCUS_ALLOCATION_MODE", mode)
    graph = load_defs().resolve_asset_graph()
    cluster_costs = dg.AssetKey("castai_cluster_costs")
    focus_parents = graph.get(PUBLISHED_ASSET_KEY).parent_keys
    job_keys = load_defs().resolve_job_def("focus_export_job").asset_layer.asset_graph.get_all_asset_keys()
    if mode == "split":
        assert cluster_costs in graph.get_all_asset_keys() and cluster_costs in focus_parents
        assert cluster_costs in job_keys
    else:
        assert cluster_costs not in graph.get_all_asset_keys() and cluster_costs not in job_keys
        assert focus_parents == {
            dg.AssetKey(k)
            for k in (
                "castai_clusters",
                "castai_workload_costs",
                "castai_listing_prices",
                "castai_enrichment_context",
            )
        }


@pytest.mark.parametrize("mode", ["workload", "split"])
def test_only_a_split_mode_run_fetches_and_materialises_cluster_costs(
    exporter_env: Path,
    sandbox,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    monkeypatch.setenv("FOCUS_ALLOCATION_MODE", mode)
    seen = len(sandbox.requests)
    with dg.instance_for_test() as instance:
        result = run([DAY], instance)
        assert result.success
        materialised = {e.asset_key for e in result.get_asset_materialization_events()}
    # Listing prices also read /cost (useListingPrices=true); the cluster cost reports are the others.
    effective_price_reports = [
        r
        for r in sandbox.requests[seen:]
        if r.path.endswith("/cost") and r.query.get("useListingPrices") != ["true"]
    ]
    assert PUBLISHED_ASSET_KEY in materialised
    split = mode == "split"
    assert (dg.AssetKey("castai_cluster_costs") in materialised) is split
    assert bool(effective_price_reports) is split


def test_a_run_whose_mode_differs_from_the_loaded_graph_fails_naming_it(
    exporter_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOCUS_ALLOCATION_MODE", "workload")
    loaded = load_defs()
    monkeypatch.setenv("FOCUS_ALLOCATION_MODE", "split")  # changed after the code location loaded
    with dg.instance_for_test() as instance:
        result = run([DAY], instance, loaded)
        assert not result.success
        failures = [
            e for e in instance.all_logs(result.run_id) if e.dagster_event and e.dagster_event.is_step_failure
        ]
    assert [f.step_key for f in failures] == ["focus_cost_and_usage"]
    text = str(failures[0].dagster_event.event_specific_data)
    assert "FOCUS_ALLOCATION_MODE is split" in text and "loaded with workload" in text
    assert not list(exporter_env.rglob("castai-focus-*.parquet"))


@pytest.mark.parametrize(
    ("endpoint", "mode", "status"),
    [("workload-costs", "workload", 404), ("cost", "split", 404), ("workload-costs", "workload", 500)],
    ids=["workload-costs", "cluster-cost-in-split-mode", "http-500-like-the-client"],
)
def test_a_permanent_castai_error_fails_at_once_without_step_retries(
    exporter_env: Path,
    sandbox,  # type: ignore[no-untyped-def]
    sandbox_org,
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str,
    mode: str,
    status: int,
) -> None:
    """HTTP 500 is permanent for the client (not retried) and so for Dagster's retry policy too."""
    monkeypatch.setenv("FOCUS_ALLOCATION_MODE", mode)
    broken = sandbox_org.clusters[0].id
    sandbox.faults.fail_paths = {rf"/clusters/{broken}/{endpoint}$": status}
    with dg.instance_for_test() as instance:
        result = run([DAY], instance)
        assert not result.success
        events = instance.all_logs(result.run_id)
    retried = [
        e for e in events if e.dagster_event and e.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"
    ]
    assert not retried
    failure = next(
        e for e in events if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
    )
    text = str(failure.dagster_event.event_specific_data)
    assert broken in text and str(status) in text
    assert ("cluster-cost" if endpoint == "cost" else "workload-costs") in text


def test_one_day_to_s3_with_the_ternary_copy_manifest_and_metadata(
    exporter_env: Path,
    sandbox_org,  # type: ignore[no-untyped-def]
    s3_server: S3TestServer,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "S3_BUCKET": s3_bucket,
        "S3_REGION": "us-east-1",  # required with a bucket against the real API, as in the original
        "S3_ENDPOINT_URL": s3_server.endpoint_url,
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
        "S3_PREFIX": "finops/castai",
        "TERNARY_ENABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    with dg.instance_for_test() as instance:
        result = run([DAY], instance)
        assert result.success
        materialization = result.asset_materializations_for_node("focus_cost_and_usage")[0]
    client = s3_server.client()
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    day = date.fromisoformat(DAY)
    data = data_key("finops/castai/", sandbox_org.organization_id, day, "parquet")
    ternary = "ternary/" + data
    manifest = manifest_key("finops/castai/", day)
    assert {data, ternary, manifest} <= keys
    assert {
        f"finops/castai/metadata/focus-1.3/{n}.json" for n in ("schema", "dataset-instance", "recency")
    } <= keys
    assert not [k for k in keys if "_staging/" in k]
    body = client.get_object(Bucket=s3_bucket, Key=data)["Body"].read()
    assert client.get_object(Bucket=s3_bucket, Key=ternary)["Body"].read() == body
    document = json.loads(client.get_object(Bucket=s3_bucket, Key=manifest)["Body"].read())
    assert {f["key"] for f in document["files"]} == {data, ternary}
    assert pq.read_table(pa.BufferReader(body)).num_rows == document["rowCount"]
    assert set(materialization.metadata["output_keys"].value) == {data, ternary}  # type: ignore[attr-defined]


def _one_day_cli(env: dict[str, str], how: str, partition: str) -> subprocess.CompletedProcess[str]:
    """One day from the CLI: `focus_export_job` as the schedule runs it, or ad-hoc asset materialisation."""
    command = [
        sys.executable,
        "-m",
        "dagster",
        how.split()[0],
        how.split()[1],
        "-m",
        "castai_focus_dagster.definitions",
    ]
    if how == "job execute":
        command += ["-j", "focus_export_job", "--tags", json.dumps({"dagster/partition": partition})]
    else:
        command += ["--select", "*", "--partition", partition]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, check=False)


LEVELED_LINE = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")


@pytest.mark.parametrize(
    ("how", "log_level", "quiet"),
    [
        ("asset materialize", "error", {"DEBUG", "INFO", "WARNING"}),
        ("job execute", "error", {"DEBUG", "INFO", "WARNING"}),
        ("job execute", "info", {"DEBUG"}),
    ],
)
def test_log_level_applies_to_every_line_a_run_prints(
    exporter_env: Path, tmp_path: Path, how: str, log_level: str, quiet: set[str]
) -> None:
    """One day through the Dagster CLI: no log line below LOG_LEVEL, Dagster's console lines included."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "LOG_LEVEL": log_level}
    proc = _one_day_cli(env, how, DAY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(exporter_env.rglob("castai-focus-*.parquet")), "the day was not published"
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if LEVELED_LINE.search(line)]
    levels = {m.group(1) for line in lines if (m := LEVELED_LINE.search(line))}
    assert not levels & quiet, lines[:20]
    if log_level == "info":  # the same run does print at INFO, so the assertion above can fail
        assert "INFO" in levels and "DEBUG" not in (proc.stdout + proc.stderr)


@pytest.mark.parametrize("delete", [False, True], ids=["kept", "deleted"])
def test_go_exporter_hour_objects_are_removed_only_on_opt_in_and_logged_by_key(
    exporter_env: Path,
    sandbox_org,
    monkeypatch: pytest.MonkeyPatch,
    delete: bool,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("DELETE_LEGACY_HOURLY_OBJECTS", "true" if delete else "false")
    day = date.fromisoformat(DAY)
    hourly = [data_key(PREFIX, sandbox_org.organization_id, day, "parquet", hour=h) for h in (6, 12)]
    for key in hourly:
        (exporter_env / key).parent.mkdir(parents=True, exist_ok=True)
        (exporter_env / key).write_bytes(b"written by the Go CronJob")
    with dg.instance_for_test() as instance:
        result = run([DAY], instance)
        assert result.success
        messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert all((exporter_env / key).exists() is not delete for key in hourly)
    assert (exporter_env / data_key(PREFIX, sandbox_org.organization_id, day, "parquet")).exists()
    for key in hourly:  # every key is named in the run's log, deleted or kept
        assert any(key in m and ("deleted" in m if delete else "kept" in m) for m in messages), key
    materialization = result.asset_materializations_for_node("focus_cost_and_usage")[0]
    legacy = materialization.metadata["legacy_hourly_objects"].value
    assert legacy == {("deleted" if delete else "kept"): hourly}


def test_empty_allowlist_exports_every_label_merged_with_the_cluster_tags(
    exporter_env: Path,
    sandbox,
    sandbox_org,  # type: ignore[no-untyped-def]
) -> None:
    """As the original: all workload labels and cluster tags, keys as-is, a workload label winning."""
    with dg.instance_for_test() as instance:
        assert run([DAY], instance).success
    table = pq.read_table(
        exporter_env / data_key(PREFIX, sandbox_org.organization_id, date.fromisoformat(DAY), "parquet")
    )
    # Expected Tags from the sandbox organisation's own definition (not from our output).
    expected: dict[tuple[str, str, str, str], dict[str, str]] = {}
    for cluster in sandbox_org.clusters:
        w = cluster.workloads
        for row, labels in enumerate(w.labels):
            identity = (cluster.id, w.namespaces[row], w.workload_types[row], w.workload_names[row])
            expected[identity] = {**cluster.tags, **labels}
    columns = ["x_CastAIClusterId", "x_CastAINamespace", "x_CastAIWorkloadType", "ResourceName", "Tags"]
    seen = {tuple(r.values()) for r in table.select(columns).to_pylist()}
    assert seen
    clashes = 0
    for cluster_id, namespace, kind, name, tags in seen:
        want = expected[(cluster_id, namespace, kind, name)]
        assert json.loads(tags) == want
        assert list(json.loads(tags)) == sorted(want)  # deterministic key order
        cluster_tags = next(c.tags for c in sandbox_org.clusters if c.id == cluster_id)
        clashes += any(cluster_tags.get(k) not in (None, v) for k, v in want.items())
    assert clashes, "the sandbox must hold a label that differs from its cluster's tag of the same key"
    # How: the day's label names were listed once and every one of them was asked for.
    listed = [r for r in sandbox.requests if r.path == "/v1/cost-reports/workload-labels/names"]
    assert len(listed) == 1 and listed[0].method == "POST"
    names = sorted({k for c in sandbox_org.clusters for labels in c.workloads.labels for k in labels})
    workload_requests = [r for r in sandbox.requests if r.path.endswith("/workload-costs")]
    assert workload_requests and all(sorted(r.query["labelsToInclude"]) == names for r in workload_requests)


@pytest.mark.parametrize("delete", [False, True], ids=["refused", "replaced"])
def test_a_go_exporter_hour_zero_object_needs_the_operators_choice(
    exporter_env: Path,
    sandbox_org,
    monkeypatch: pytest.MonkeyPatch,
    delete: bool,  # type: ignore[no-untyped-def]
) -> None:
    """The Go exporter's run at hour 00 wrote our very key: overwritten only by the operator's choice."""
    monkeypatch.setenv("DELETE_LEGACY_HOURLY_OBJECTS", "true" if delete else "false")
    day = date.fromisoformat(DAY)
    key = data_key(PREFIX, sandbox_org.organization_id, day, "parquet")
    go_object = io.BytesIO()
    pq.write_table(pa.table({"BilledCost": [98.45], "x_CastAIClusterId": ["c1"]}), go_object)
    (exporter_env / key).parent.mkdir(parents=True, exist_ok=True)
    (exporter_env / key).write_bytes(go_object.getvalue())
    with dg.instance_for_test() as instance:
        result = run([DAY], instance)
        messages = [e.user_message for e in instance.all_logs(result.run_id)]
        attempts = [
            e
            for e in instance.all_logs(result.run_id)
            if e.dagster_event_type == dg.DagsterEventType.STEP_RESTARTED
        ]
    if not delete:
        assert not result.success and not attempts  # permanent: no retry calls Cast AI again
        assert (exporter_env / key).read_bytes() == go_object.getvalue()
        assert not (exporter_env / manifest_key(PREFIX, day)).exists()
        (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
        data = failure.step_failure_data
        assert data is not None and data.user_failure_data is not None
        description = data.user_failure_data.description or ""
        assert key in description and "DELETE_LEGACY_HOURLY_OBJECTS=true" in description, description
        return
    assert result.success
    table = pq.read_table(exporter_env / key)
    assert table.num_rows > 0 and table.schema.metadata[b"castai_focus_dagster.writer"]
    assert any(key in m and "Go exporter" in m for m in messages)
    materialization = result.asset_materializations_for_node("focus_cost_and_usage")[0]
    assert materialization.metadata["legacy_hourly_objects"].value == {"deleted": [key]}


@pytest.mark.parametrize(
    ("environment", "kinds"),
    [
        ({}, {"parquet", "file"}),
        ({"S3_BUCKET": "team-finops", "S3_FORMAT": "CSV"}, {"csv", "s3"}),
    ],
)
def test_the_published_asset_is_tagged_with_its_format_and_destination(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], kinds: set[str]
) -> None:
    for name in ("S3_BUCKET", "S3_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    graph = load_defs().resolve_asset_graph()
    assert graph.get(PUBLISHED_ASSET_KEY).kinds == kinds
