"""Split mode's batches: each cluster's workloads prepared once and shared by transform and audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from castai_focus_dagster.castai.client import CastAIClient
from castai_focus_dagster.castai.discounts import PricingStats
from castai_focus_dagster.castai.enrichment import fetch_enrichment
from castai_focus_dagster.castai.sandbox import SandboxOrg, SandboxServer
from castai_focus_dagster.defs import split_batches as split_batches_module
from castai_focus_dagster.defs.split_batches import split_batches
from castai_focus_dagster.focus import source
from castai_focus_dagster.focus.options import FocusOptions
from castai_focus_dagster.focus.source import PreparedWorkloads
from castai_focus_dagster.storage.intermediates import WorkloadCostsDay

START = datetime(2026, 3, 2, tzinfo=UTC)
END = START + timedelta(days=1)
STEP = 3600


def test_each_cluster_batch_is_prepared_once_and_audited_clean(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    with CastAIClient(
        sandbox.url, sandbox_org.api_key, organization_id=sandbox_org.organization_id, rate_limit_rps=1000
    ) as client:
        clusters = {c.id: c for c in client.list_clusters()}
        enrichment = fetch_enrichment(client, enterprise_id=sandbox_org.enterprise_id)
        per_cluster = [table for _, table in client.workload_costs_many(sorted(clusters), START, END, STEP)]
        reports = {cid: client.cluster_cost_report(cid, START, END, STEP) for cid in clusters}
    with_rows = [t for t in per_cluster if t.num_rows]
    assert len(with_rows) >= 2

    # Every preparation, whoever asks for it (the transform, the conservation rule or this module).
    prepared_tables: list[pa.Table] = []
    real = source.prepare_workloads

    def counting(workloads: pa.Table) -> PreparedWorkloads:
        prepared_tables.append(workloads)
        return real(workloads)

    monkeypatch.setattr(source, "prepare_workloads", counting)
    monkeypatch.setattr(split_batches_module, "prepare_workloads", counting)
    options = FocusOptions(organization_id=sandbox_org.organization_id, billing_account_name="Acme Corp")
    batches = list(
        split_batches(
            WorkloadCostsDay(clusters=iter(per_cluster)),
            reports,
            clusters,
            enrichment,
            options,
            STEP,
            {},
            PricingStats(),
        )
    )
    # One batch per cluster with workloads, then one per cluster that only has its report (idle only).
    clusters_with_workloads = {t["cluster_id"][0].as_py() for t in with_rows}
    assert len(batches) == len(with_rows) + len(set(reports) - clusters_with_workloads)
    assert len(prepared_tables) == len(batches), "a batch prepared more than once"
    assert all(report.passed for _, report in batches), [r.summary() for _, r in batches if not r.passed]
