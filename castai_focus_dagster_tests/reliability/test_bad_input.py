"""Every malformed Cast AI response of the corpus meets its documented outcome; never a silently wrong total.

Each case is served over real HTTP by the sandbox (its answers replaced by the case's scripted ones) to
the real client, then the day goes through the FOCUS transform and the publication audit, as in the
assets. The money is checked against Cast AI's own figure computed from the clean response's strings.
A few cases also run through the whole Dagster job to show where the warnings and errors surface.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from castai_focus_dagster.castai.client import CastAIClient
from castai_focus_dagster.castai.endpoints import CLUSTERS, WORKLOAD_COSTS
from castai_focus_dagster.castai.enrichment import fetch_enrichment
from castai_focus_dagster.castai.errors import CastAIError
from castai_focus_dagster.castai.input_warnings import input_warnings
from castai_focus_dagster.castai.models import EnrichmentContext
from castai_focus_dagster.castai.retry import RETRYABLE_STATUSES
from castai_focus_dagster.castai.sandbox import Faults, SandboxOrg, SandboxServer
from castai_focus_dagster.focus.audit import AuditReport, audit_focus
from castai_focus_dagster.focus.options import FocusOptions
from castai_focus_dagster.focus.transform import to_focus
from castai_focus_dagster_tests.reliability.corpus import CASES, ENRICHMENT_KEYS, BadInput, Clean
from castai_focus_dagster_tests.reliability.harness import (
    DAY,
    data_objects,
    local_objects,
    manifests,
    published,
    run_day,
    sandbox_environment,
)

START = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
END = START + timedelta(days=1)
STEP = 3600


@pytest.fixture(scope="module")
def org() -> SandboxOrg:
    # Four clusters: eks, gke, aks and an Anywhere cluster (the only kind with a Cast AI cluster price).
    return SandboxOrg.generate(seed=11, clusters=4, workloads_per_cluster=3)


@pytest.fixture(scope="module")
def server(org: SandboxOrg) -> Iterator[SandboxServer]:
    with SandboxServer(org) as running:
        yield running


@pytest.fixture(scope="module")
def clean(server: SandboxServer, org: SandboxOrg) -> Clean:
    """The sandbox's clean answers for the first cluster and the day, read over HTTP."""
    cluster_id = org.clusters[0].id
    headers = {"X-API-Key": org.api_key}
    with httpx.Client(base_url=server.url, headers=headers) as http:

        def get(path: str, **params: str | list[str]) -> dict[str, Any]:
            response = http.get(path, params=params)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

        # Every label, as the exporter asks for them with an empty FOCUS_TAG_ALLOWLIST.
        names = http.post(
            "/v1/cost-reports/workload-labels/names",
            params={"startTime": f"{DAY}T00:00:00Z", "endTime": END.strftime("%Y-%m-%dT%H:%M:%SZ")},
            json={"clusterIds": [cluster_id]},
        ).json()["labelNames"]
        workloads = get(
            f"/v1/cost-reports/clusters/{cluster_id}/workload-costs",
            startTime=f"{DAY}T00:00:00Z",
            endTime=END.strftime("%Y-%m-%dT%H:%M:%SZ"),
            stepSeconds=str(STEP),
            labelsToInclude=names,
            **{"page.limit": "1000"},
        )
        return Clean(
            cluster_id=cluster_id,
            organization_id=org.organization_id,
            workloads=workloads["items"],
            clusters=get("/v1/kubernetes/external-clusters"),
            cluster_prices=get(f"/pricing/v1/organizations/{org.organization_id}/clusters/prices"),
            discounts=get("/v1/discounts"),
        )


@dataclass
class Export:
    """One day of one cluster through the client, the transform and the audit."""

    error: CastAIError | None = None
    workloads: pa.Table | None = None
    focus: pa.Table | None = None
    audit: AuditReport | None = None
    enrichment: EnrichmentContext | None = None
    records: list[logging.LogRecord] = field(default_factory=list)

    @property
    def billed(self) -> float:
        assert self.focus is not None
        return float(pc.sum(self.focus["BilledCost"]).as_py() or 0.0)

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.WARNING]


class _Records(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]):
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def export_day(server: SandboxServer, org: SandboxOrg, cluster_id: str, name: str) -> Export:
    result = Export()
    logger = logging.getLogger(f"reliability.corpus.{name}")
    logger.handlers[:] = [_Records(result.records)]
    logger.propagate, logger.level = False, logging.DEBUG
    options = FocusOptions(organization_id=org.organization_id, billing_account_name="corpus")
    with CastAIClient(
        server.url,
        org.api_key,
        organization_id=org.organization_id,
        max_retries=1,
        max_backoff_seconds=0.01,
        rate_limit_rps=1000,
        timeout_seconds=5,
        logger=logger,
    ) as client:
        try:
            clusters = client.list_clusters([cluster_id])
            result.enrichment = fetch_enrichment(client, logger=logger)
            labels = client.workload_label_names(START, END, [cluster_id])  # all, as the exporter asks
            result.workloads = client.workload_costs(cluster_id, START, END, STEP, labels=labels)
        except CastAIError as exc:
            result.error = exc
            return result
    result.focus = to_focus(result.workloads, {c.id: c for c in clusters}, result.enrichment, options)
    result.audit = audit_focus(result.focus, result.workloads)
    return result


@pytest.fixture(scope="module")
def clean_export(server: SandboxServer, org: SandboxOrg, clean: Clean) -> Export:
    server.faults = Faults()
    export = export_day(server, org, clean.cluster_id, "clean")
    assert export.error is None and export.audit is not None and export.audit.passed
    return export


def test_the_reference_total_is_cast_ai_s_own(org: SandboxOrg, clean: Clean, clean_export: Export) -> None:
    """The figure every case is held to, derived from the response strings and from the sandbox's truth."""
    assert float(clean.total()) == pytest.approx(
        org.expected_cluster_total(clean.cluster_id, START, END), abs=1e-4
    )
    assert clean_export.billed == pytest.approx(float(clean.total()), abs=1e-6)


def test_the_corpus_covers_the_issue() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) >= 25
    assert {case.outcome for case in CASES} == {"refused", "repaired", "recorded", "degraded", "accepted"}
    for case in CASES:
        assert case.outcome not in ("repaired", "recorded") or case.warning, case.id
        assert case.outcome in ("refused", "repaired", "recorded") or not case.warning, case.id


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_meets_its_documented_outcome(
    case: BadInput, server: SandboxServer, org: SandboxOrg, clean: Clean, clean_export: Export
) -> None:
    server.faults = Faults(responses=case.build(clean))
    try:
        export = export_day(server, org, clean.cluster_id, case.id)
    finally:
        served = server.faults.injected["canned"]
        server.faults = Faults()
    assert served, "the case's answers were never served"

    if case.outcome == "refused":
        assert export.error is not None, "bad input was not refused"
        message = str(export.error)
        assert f"Cast AI {case.endpoint}" in message
        if case.endpoint == WORKLOAD_COSTS:
            assert export.error.cluster_id == clean.cluster_id and clean.cluster_id in message
        if case.field:
            assert export.error.field == case.field and f"field {case.field}" in message
        assert export.focus is None
        # Only what the client retried before giving up may be retried again (Dagster's retry policy).
        assert export.error.transient is (export.error.status in RETRYABLE_STATUSES), export.error
        return

    assert export.error is None, f"unexpected refusal: {export.error}"
    assert export.audit is not None and export.audit.passed, export.audit and export.audit.summary()
    if case.outcome == "recorded":  # no data: nothing published for the cluster, and the reason kept
        assert export.workloads is not None and export.billed == 0
        [recorded] = input_warnings(export.workloads)
        assert (recorded["rule"], recorded["cluster_id"]) == (case.warning, clean.cluster_id)
        assert recorded["detail"] and [m for m in export.warnings() if recorded["message"] in m]
        return
    # Never a silently wrong total: the money is Cast AI's, whatever was wrong with the response.
    assert export.billed == pytest.approx(float(clean.total()), abs=1e-6)
    assert export.billed == pytest.approx(clean_export.billed, abs=1e-9)
    if case.same_rows:
        assert export.focus is not None and export.focus.equals(clean_export.focus)
    assert export.workloads is not None
    repairs = input_warnings(export.workloads)
    if case.outcome == "accepted":
        assert not repairs and not export.warnings()
    elif case.outcome == "repaired":
        assert [w["rule"] for w in repairs] == [case.warning]
        assert repairs[0]["cluster_id"] == clean.cluster_id and repairs[0]["count"] >= 1
        assert [m for m in export.warnings() if clean.cluster_id in m and repairs[0]["message"] in m]
    else:  # degraded
        key = ENRICHMENT_KEYS[case.endpoint]
        assert export.enrichment is not None and key in export.enrichment.missing
        assert [m for m in export.warnings() if key in m and "unavailable" in m]
        assert not repairs


# The same cases inside Dagster: where an operator sees them ---------------------------------------


def _case(case_id: str) -> BadInput:
    return next(case for case in CASES if case.id == case_id)


def test_outcomes_surface_in_the_run_log_metadata_and_errors(
    server: SandboxServer,
    org: SandboxOrg,
    clean: Clean,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    sandbox_environment(
        monkeypatch,
        server,
        LOCAL_OUTPUT_DIR=str(out),
        COLLECTION_INCLUDE_CLUSTER_IDS=clean.cluster_id,
    )
    with dg.DagsterInstance.ephemeral() as instance:
        server.faults = Faults()
        baseline = run_day(instance)
        assert baseline.success
        before = local_objects(out)
        assert baseline.materialization("castai_workload_costs")["input_warnings"] == []

        # Refused: the run fails naming cluster, endpoint and field; nothing published changes.
        server.faults = Faults(responses=_case("error-body-200").build(clean))
        refused = run_day(instance)
        assert not refused.success
        assert [t for t in refused.failures() if f"Cast AI {WORKLOAD_COSTS} cluster {clean.cluster_id}" in t]
        assert [t for t in refused.failures() if "field message" in t]
        assert published(local_objects(out)) == published(before)

        # Repaired: a warning in the run log and in the materialization metadata; identical output.
        server.faults = Faults(responses=_case("duplicate-workload-across-pages").build(clean))
        repaired = run_day(instance)
        assert repaired.success
        warnings = repaired.materialization("castai_workload_costs")["input_warnings"]
        assert [(w["day"], w["rule"], w["cluster_id"]) for w in warnings] == [
            (DAY, "duplicate-workload", clean.cluster_id)
        ]
        assert [m for m in repaired.log_messages(logging.WARNING) if "duplicate workload" in m]
        assert data_objects(local_objects(out)) == data_objects(before)

        # Degraded: enrichment missing is recorded; the billed money is the same.
        server.faults = Faults(responses=_case("negative-cluster-price").build(clean))
        degraded = run_day(instance)
        assert degraded.success
        assert "cluster_prices" in degraded.materialization("castai_enrichment_context")["missing"]
        assert [m for m in degraded.log_messages(logging.WARNING) if "cluster_prices unavailable" in m]
        (manifest,) = manifests(local_objects(out)).values()
        (baseline_manifest,) = manifests(before).values()
        assert manifest["costTotals"]["BilledCost"] == pytest.approx(
            baseline_manifest["costTotals"]["BilledCost"]
        )
        assert manifest["extra"]["enrichment_missing"] == {"cluster_prices": "invalid response"}
    server.faults = Faults()


def test_clusters_endpoint_refusals_stop_the_run_before_anything_is_fetched(
    server: SandboxServer, org: SandboxOrg, clean: Clean
) -> None:
    """A refused cluster list is a refusal of the whole day: no workload costs are even requested."""
    server.faults = Faults(responses=_case("clusters-error-body").build(clean))
    server.requests.clear()
    export = export_day(server, org, clean.cluster_id, "clusters-refused")
    server.faults = Faults()
    assert export.error is not None and export.error.endpoint == CLUSTERS
    assert not [r for r in server.requests if r.path.endswith("/workload-costs")]


def test_a_permanent_refusal_is_not_retried_by_the_production_retry_policy(
    server: SandboxServer,
    org: SandboxOrg,
    clean: Clean,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Undecodable bytes fail the step at once, with the retry policy of production in force
    (it used to retry a bare UnicodeDecodeError for minutes)."""
    sandbox_environment(
        monkeypatch,
        server,
        LOCAL_OUTPUT_DIR=str(tmp_path / "out"),
        COLLECTION_INCLUDE_CLUSTER_IDS=clean.cluster_id,
        CASTAI_MAX_RETRIES="3",
    )
    server.faults = Faults(responses=_case("invalid-utf8-label").build(clean))
    server.requests.clear()
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            refused = run_day(instance, step_retries=True)
    finally:
        server.faults = Faults()
    assert not refused.success
    failures = refused.failures()
    assert [t for t in failures if f"Cast AI {WORKLOAD_COSTS} cluster {clean.cluster_id} field labels" in t]
    assert [t for t in failures if "not valid UTF-8" in t]
    retried = [
        e
        for e in refused.events
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"
    ]
    assert retried == []
    assert len([r for r in server.requests if r.path.endswith("/workload-costs")]) == 1
