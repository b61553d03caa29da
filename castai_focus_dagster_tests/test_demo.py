"""`make demo`'s run is a run of the code location `make dev` serves, so the UI lists it like any other."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from castai_focus_dagster_tests.dagster_dev import REPO


@pytest.mark.integration
def test_the_demo_run_carries_the_code_location_origin(
    exporter_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg

    from devtools.demo import run_export

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    day = (datetime.now(UTC).date() - timedelta(days=2)).isoformat()

    with dg.DagsterInstance.get() as instance:
        assert run_export(instance, day, day)
        (run,) = instance.get_runs()

    assert run.job_name == "focus_export_job"
    assert run.status == dg.DagsterRunStatus.SUCCESS
    # What the webserver groups its Overview timeline by: the run's code location, repository and job.
    origin = run.remote_job_origin
    assert origin is not None, "a run without a remote origin is left out of the UI's timeline"
    assert origin.location_name == "castai_focus_dagster"  # workspace.yaml's location_name
    assert origin.repository_origin.repository_name == "__repository__"
    assert origin.job_name == "focus_export_job"
    assert run.job_code_origin is not None
    assert run.job_code_origin.repository_origin.code_pointer.module == "castai_focus_dagster.definitions"
    # The demo's tags and the job's own (its K8s pod size) as on a run launched from the UI.
    assert run.tags["dagster/asset_partition_range_start"] == day
    assert run.tags["dagster/asset_partition_range_end"] == day
    assert run.tags["castai_focus/trigger"] == "demo"
    assert "dagster-k8s/config" in run.tags
    assert run.run_config == {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    # The day was published into the exporter's output folder.
    year, month, dom = day.split("-")
    assert list((exporter_env / "focus").glob(f"version=*/year={year}/month={month}/day={dom}/*.parquet"))
