"""The per-cluster report fetch that split mode's cluster costs and every mode's listing prices share:
one failure policy each (fail the day, or leave the cluster out), real runs against the sandbox."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from castai_focus_dagster.castai.sandbox import RecordedRequest, SandboxOrg, SandboxServer
from castai_focus_dagster_tests.defs.test_pipeline import DAY, run


def _cost_reports(requests: list[RecordedRequest], *, listing: bool) -> list[str]:
    """The cluster ids of the cluster cost report requests, at listing prices or at effective prices."""
    return [
        r.path.split("/")[-2]
        for r in requests
        if r.path.endswith("/cost") and (r.query.get("useListingPrices") == ["true"]) is listing
    ]


def _failed_day() -> tuple[list[str], str]:
    """Run the day, which must fail without a step retry: the failed steps and the first one's error."""
    with dg.instance_for_test() as instance:
        result = run([DAY], instance)
        assert not result.success
        events = [e.dagster_event for e in instance.all_logs(result.run_id) if e.dagster_event]
    assert not [e for e in events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    failures = [e for e in events if e.event_type_value == "STEP_FAILURE"]
    return [f.step_key or "" for f in failures], str(failures[0].event_specific_data)


def test_a_failed_cluster_cost_report_fails_the_split_day_and_asks_for_no_more(
    exporter_env: Path, sandbox: SandboxServer, sandbox_org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOCUS_ALLOCATION_MODE", "split")
    monkeypatch.setenv("CASTAI_MAX_CONCURRENCY", "1")  # one report at a time: "no more" is observable
    ids = sorted(c.id for c in sandbox_org.clusters)
    assert len(ids) >= 2
    broken = ids[0]
    sandbox.faults.fail_paths = {rf"/clusters/{broken}/cost$": 404}
    steps, error = _failed_day()
    assert steps == ["castai_cluster_costs"] and broken in error
    # The clusters after the failed one (by id) were never asked for.
    assert _cost_reports(sandbox.requests, listing=False) == [broken]
    assert not list(exporter_env.rglob("castai-focus-*.parquet"))


def test_a_failed_listing_report_leaves_out_only_its_cluster(
    exporter_env: Path, sandbox: SandboxServer, sandbox_org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASTAI_MAX_CONCURRENCY", "1")
    cloud = sorted(c.id for c in sandbox_org.clusters if c.provider_type != "anywhere")
    assert len(cloud) >= 2
    broken = cloud[0]
    sandbox.faults.fail_paths = {rf"/clusters/{broken}/cost$": 404}
    with dg.instance_for_test() as instance:
        result = run([DAY], instance)
        assert result.success
    # Every cloud cluster after the failed one was still asked for, once.
    assert sorted(_cost_reports(sandbox.requests, listing=True)) == cloud
    pricing = result.asset_materializations_for_node("focus_cost_and_usage")[0].metadata["pricing"].value
    assert isinstance(pricing, dict)
    assert pricing["listing_missing"] == [broken]


def test_a_listing_report_in_another_bucket_size_fails_the_day(
    exporter_env: Path, sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    """Degrading is for reports that are missing, never for one that would be misread."""
    cloud = sorted(c.id for c in sandbox_org.clusters if c.provider_type != "anywhere")
    sandbox.faults.answer_step_seconds = {rf"/clusters/{cloud[-1]}/cost$": 86400}
    steps, error = _failed_day()
    assert steps == ["castai_listing_prices"]
    assert cloud[-1] in error and "wrong bucket size" in error
    assert not list(exporter_env.rglob("castai-focus-*.parquet"))
