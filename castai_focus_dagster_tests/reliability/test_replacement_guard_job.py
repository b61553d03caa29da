"""The replacement guard through the job: every case Cast AI may answer after a good day, and the
configuration changes an operator makes on purpose.

Each case publishes a good day with the real job (`dg.execute_job`), then changes the sandbox's answer
(a cluster's costs halved, the whole day x10^5, a cluster answering `noDataReason`) or the exporter's
settings, and compares the published bytes before and after. A refused run leaves every published
byte as it was; the documented run tag publishes the same answer and the manifest records why.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from castai_focus_dagster.castai.sandbox import Faults, SandboxOrg, SandboxServer
from castai_focus_dagster.storage.publication_guard import ALLOW_GROWTH_TAG, ALLOW_SHRINK_TAG
from castai_focus_dagster_tests.reliability.harness import (
    RETRY_EVENTS,
    RunOutcome,
    bucket_objects,
    consistency_problems,
    data_objects,
    local_objects,
    published,
    run_day,
    s3_settings,
    sandbox_environment,
    the_manifest,
)
from castai_focus_dagster_tests.reliability.s3_proxy import Rule, S3FaultProxy
from castai_focus_dagster_tests.s3_server import S3TestServer, s3_server_fixture  # noqa: F401

# Both cost endpoints of every cluster (workload costs and the cluster's own cost).
EVERY_CLUSTER = r"^/v1/cost-reports/clusters/"
ORG_CLUSTERS = 3  # the `org` fixture's size (conftest.py)


@pytest.fixture
def out(tmp_path: Path, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "out"
    sandbox_environment(monkeypatch, sandbox, LOCAL_OUTPUT_DIR=str(folder))
    return folder


def refusals(outcome: RunOutcome, *needles: str) -> list[str]:
    assert not outcome.success
    return [t for t in outcome.failures() if "refusing to replace" in t and all(n in t for n in needles)]


def refused(instance: dg.DagsterInstance, *needles: str) -> list[str]:
    """Run the day, which the guard must refuse with every one of `needles`: the refusals' texts."""
    outcome = run_day(instance)
    texts = refusals(outcome, *needles)
    assert texts, outcome.failures()
    return texts


def allowed(instance: dg.DagsterInstance, out: Path, tag: str) -> dict[str, Any]:
    """Run the day with the operator's `tag`, which must publish it: the new manifest."""
    outcome = run_day(instance, tags={tag: "true"})
    assert outcome.success, outcome.failures()
    return the_manifest(local_objects(out))


def test_a_cluster_at_half_its_cost_is_refused_until_the_operator_allows_it(
    out: Path, sandbox: SandboxServer
) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(instance).success
        good = local_objects(out)
        clusters = the_manifest(good)["clusters"]
        halved = max(clusters, key=lambda cid: clusters[cid]["billedCost"])

        sandbox.faults = Faults(cost_scale={rf"/clusters/{halved}/": 0.5})
        texts = refused(instance, f"cluster {halved}", ALLOW_SHRINK_TAG)
        assert f"${clusters[halved]['billedCost']:.2f}" in texts[0] and "-50.0%" in texts[0]
        assert sandbox.faults.injected["answer"] > 0  # the halved answers were served
        assert published(local_objects(out)) == published(good)  # byte for byte, manifest included

        manifest = allowed(instance, out, ALLOW_SHRINK_TAG)
        assert manifest["clusters"][halved]["billedCost"] == pytest.approx(
            clusters[halved]["billedCost"] / 2, abs=1e-3
        )
        assert [c for c in manifest["allowedChanges"] if c.startswith("shrink:") and halved in c]


def test_a_whole_day_at_1e5_times_its_cost_is_refused_until_the_operator_allows_it(
    out: Path, sandbox: SandboxServer
) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(instance).success
        good = local_objects(out)
        billed = the_manifest(good)["costTotals"]["BilledCost"]

        sandbox.faults = Faults(cost_scale={EVERY_CLUSTER: 1e5})
        texts = refused(instance, "day total", ALLOW_GROWTH_TAG)
        assert f"${billed:.2f}" in texts[0] and ALLOW_SHRINK_TAG not in texts[0]
        assert published(local_objects(out)) == published(good)

        assert refusals(run_day(instance, tags={ALLOW_SHRINK_TAG: "true"}), "day total")  # the wrong tag
        manifest = allowed(instance, out, ALLOW_GROWTH_TAG)
        assert manifest["costTotals"]["BilledCost"] == pytest.approx(billed * 1e5, rel=1e-6)
        assert [c for c in manifest["allowedChanges"] if c.startswith("growth: day total")]


def test_a_cluster_answering_no_data_after_a_good_day_is_refused_until_the_operator_allows_it(
    out: Path, sandbox: SandboxServer
) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(instance).success
        good = local_objects(out)
        clusters = the_manifest(good)["clusters"]
        silent = min(clusters)

        sandbox.faults = Faults(no_data={rf"/clusters/{silent}/workload-costs": "AgentOutdated"})
        refused(instance, f"cluster {silent}", "-> $0.00", ALLOW_SHRINK_TAG)
        assert published(local_objects(out)) == published(good)

        manifest = allowed(instance, out, ALLOW_SHRINK_TAG)
        assert manifest["clusters"][silent] == {"rows": 0, "billedCost": 0.0}
        assert [c for c in manifest["allowedChanges"] if silent in c]


def test_a_configuration_change_publishes_with_the_change_recorded_and_is_then_compared_again(
    out: Path, sandbox: SandboxServer, org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = org.clusters[0].id
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(instance).success
        first = the_manifest(local_objects(out))
        assert first["extra"]["collection"] == {
            "allocationMode": "workload",
            "granularity": "hourly",
            "includeClusterIds": [],
            "excludeClusterIds": [],
            "includeNamespaces": [],
            "excludeNamespaces": [],
        }
        assert "allowedChanges" not in first

        # Narrowing to one cluster at daily buckets: a shrink by figures, expected after the change.
        monkeypatch.setenv("COLLECTION_INCLUDE_CLUSTER_IDS", kept)
        monkeypatch.setenv("COLLECTION_GRANULARITY", "daily")
        narrowed = run_day(instance)
        assert narrowed.success, narrowed.failures()
        manifest = the_manifest(local_objects(out))
        assert sorted(manifest["clusters"]) == [kept]
        assert manifest["allowedChanges"] == [
            f"configuration changed: COLLECTION_GRANULARITY hourly -> daily; "
            f"COLLECTION_INCLUDE_CLUSTER_IDS [] -> [{kept}]"
        ]
        warnings = [
            m for m in narrowed.log_messages(logging.WARNING) if "configuration changed" in m and kept in m
        ]
        assert warnings and "other settings" in warnings[0]

        # Then the allocation mode: split rows instead of workload rows, published with the change noted.
        monkeypatch.setenv("FOCUS_ALLOCATION_MODE", "split")
        split = run_day(instance)
        assert split.success, split.failures()
        assert the_manifest(local_objects(out))["allowedChanges"] == [
            "configuration changed: FOCUS_ALLOCATION_MODE workload -> split"
        ]

        # Under the new settings the figures are compared again: the same answer, then a halved one.
        assert run_day(instance).success
        good = local_objects(out)
        assert "allowedChanges" not in the_manifest(good)
        sandbox.faults = Faults(cost_scale={EVERY_CLUSTER: 0.5})
        assert refusals(run_day(instance), f"cluster {kept}")
        assert published(local_objects(out)) == published(good)


def test_a_configuration_change_does_not_let_an_empty_cluster_list_through(
    out: Path, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(instance).success
        good = local_objects(out)
        monkeypatch.setenv("FOCUS_ALLOCATION_MODE", "split")
        sandbox.faults = Faults(unlist_all_clusters=True)
        refused(instance, "Cast AI listed no clusters", ALLOW_SHRINK_TAG)
        assert published(local_objects(out)) == published(good)


def test_access_denied_at_the_copy_step_fails_the_run_without_a_step_retry(
    s3_server: S3TestServer, sandbox: SandboxServer, org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production retry policy on: a permanent S3 answer is not retried (no second Cast AI round)."""
    client, bucket = s3_server.client(), s3_server.new_bucket()
    with S3FaultProxy(s3_server.endpoint_url) as proxy:
        sandbox_environment(monkeypatch, sandbox, **s3_settings(proxy.url, bucket))
        with dg.DagsterInstance.ephemeral() as instance:
            assert run_day(instance).success
            good = bucket_objects(client, bucket)
            monkeypatch.setenv("FOCUS_BILLING_ACCOUNT_NAME", "other-bytes")  # the copy would change data
            rule = Rule("PUT", r"^version=focus-1\.3/.*\.parquet$", copy=True)
            with proxy.failing(rule):
                failed = run_day(instance, step_retries=True)
    assert rule.matched == 1  # one attempt, not one per retry
    assert not failed.success
    assert [t for t in failed.failures() if "AccessDenied" in t and f"s3://{bucket}/" in t], failed.failures()
    assert not failed.event_types() & RETRY_EVENTS
    after = bucket_objects(client, bucket)
    assert consistency_problems(after) == []
    assert data_objects(after) == data_objects(good)  # the good day's bytes, not a partial copy


def test_split_mode_publishes_an_organisation_without_clusters_as_an_empty_day(
    out: Path, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: split allocation with no cluster at all failed with a bare `combine_reports` error."""
    monkeypatch.setenv("FOCUS_ALLOCATION_MODE", "split")
    sandbox.faults = Faults(unlist_all_clusters=True)
    with dg.DagsterInstance.ephemeral() as instance:
        outcome = run_day(instance)
    assert outcome.success, outcome.failures()
    manifest = the_manifest(local_objects(out))
    assert (manifest["rowCount"], manifest["clusters"]) == (0, {})
    assert manifest["costTotals"]["BilledCost"] == 0
