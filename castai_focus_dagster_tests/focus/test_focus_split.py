"""FOCUS 1.3 split cost allocation: cluster charges split to workloads, idle explicit, everything reconciling.

Real inputs come from the Cast AI sandbox over HTTP (one day, hourly and daily buckets). Expected values
are derived here from the sandbox's cluster cost report and workload costs (and its idle-share ground
truth), never from the split output itself. Synthetic tables cover the negative-remainder rule, edge
cases, errors and a derandomized property test.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from castai_focus_dagster.castai.client import CastAIClient
from castai_focus_dagster.castai.decode import cost_report_schema
from castai_focus_dagster.castai.enrichment import fetch_enrichment
from castai_focus_dagster.castai.models import Cluster, EnrichmentContext
from castai_focus_dagster.castai.sandbox import SandboxOrg, SandboxServer
from castai_focus_dagster.focus.conformance import check_conformance
from castai_focus_dagster.focus.options import FocusOptions
from castai_focus_dagster.focus.rules.conservation import check_split_conservation
from castai_focus_dagster.focus.rules.split import check_split_allocation
from castai_focus_dagster.focus.schema import FOCUS_COLUMNS, FOCUS_SCHEMA
from castai_focus_dagster.focus.split import to_focus_split
from castai_focus_dagster.focus.split_inputs import ALLOCATION_METHOD_ID
from castai_focus_dagster.focus.transform import to_focus
from castai_focus_dagster.storage.serialize import to_parquet_bytes
from castai_focus_dagster_tests.focus.test_focus_validator import VALIDATOR, _validator_venv_ready, verdict
from castai_focus_dagster_tests.focus_inputs import (
    CLUSTERS,
    DAY,
    enrichment_context,
    focus_options,
    workload_table,
)

pytestmark = pytest.mark.timeout(900)  # the first validator run ever installs its virtualenv

DOCS = Path(__file__).resolve().parents[2] / "docs/allocation.md"
START = datetime(2026, 3, 2, tzinfo=UTC)
END = START + timedelta(days=1)
LABELS = ("team", "env", "app.kubernetes.io/name")
# Cast AI field stems per resource, written out independently of the exporter's CHARGES table.
RESOURCE_FIELDS = {
    "cpu": ("cpuCost", "cpuCount"),
    "memory": ("ramCost", "ramGib"),
    "gpu": ("gpuCost", "gpuCount"),
    "tpu": ("tpuCost", "tpuCount"),
}
TIER_LABELS = {"OnDemand": "on-demand", "Spot": "spot", "SpotFallback": "spot-fallback"}
COMPONENT_COLUMNS = {
    "cpu": "x_CastAICpuCost",
    "memory": "x_CastAIRamCost",
    "gpu": "x_CastAIGpuCost",
    "tpu": "x_CastAITpuCost",
    "storage": "x_CastAIStorageCost",
}
COST_LIKE = ("BilledCost", "EffectiveCost", "PricingCurrencyEffectiveCost")
QUANTITIES = ("PricingQuantity", "ConsumedQuantity")
UNIT_PRICES = (
    "ListUnitPrice",
    "ContractedUnitPrice",
    "PricingCurrencyListUnitPrice",
    "PricingCurrencyContractedUnitPrice",
)
WORKLOAD_COLUMNS = ("x_CastAINamespace", "x_CastAIWorkloadType", "x_CastAIWorkloadName")
ORIGIN = ["x_CastAIClusterId", "ChargePeriodEnd", "x_CastAIResource", "x_CastAIPricingTier"]


# --------------------------------------------------------------------------------------------------
# Sandbox inputs over HTTP


@dataclass(frozen=True)
class SplitCase:
    step: int
    clusters: dict[str, Cluster]
    workloads: pa.Table
    reports: dict[str, pa.Table]
    context: EnrichmentContext
    options: FocusOptions
    split: pa.Table
    workload_mode: pa.Table

    @property
    def hours(self) -> float:
        return self.step / 3600


@pytest.fixture(scope="module")
def cases(sandbox_org: SandboxOrg) -> dict[int, SplitCase]:
    options = FocusOptions(
        organization_id=sandbox_org.organization_id,
        billing_account_name="Acme Corp",
        enterprise_id=sandbox_org.enterprise_id,
    )
    built: dict[int, SplitCase] = {}
    with (
        SandboxServer(sandbox_org) as server,
        CastAIClient(
            server.url, sandbox_org.api_key, organization_id=sandbox_org.organization_id, rate_limit_rps=1000
        ) as client,
    ):
        clusters = {c.id: c for c in client.list_clusters()}
        context = fetch_enrichment(client, enterprise_id=sandbox_org.enterprise_id)
        assert not context.missing
        for step in (3600, 86400):
            fetched = client.workload_costs_many(list(clusters), START, END, step, labels=LABELS)
            workloads = pa.concat_tables([table for _, table in fetched]).unify_dictionaries()
            reports = {cid: client.cluster_cost_report(cid, START, END, step) for cid in clusters}
            built[step] = SplitCase(
                step,
                clusters,
                workloads,
                reports,
                context,
                options,
                to_focus_split(workloads, reports, clusters, context, options, step_seconds=step),
                to_focus(workloads, clusters, context, options),
            )
    return built


@pytest.fixture(params=[3600, 86400], ids=["hourly", "daily"])
def case(request: pytest.FixtureRequest, cases: dict[int, SplitCase]) -> SplitCase:
    return cases[request.param]


def report_origins(case: SplitCase) -> pd.DataFrame:
    """Origin charges straight from the cluster cost reports: rate × hours per cluster, bucket and charge."""
    records = []
    for cluster_id, report in case.reports.items():
        frame = report.to_pandas()
        for _, bucket in frame.iterrows():
            charges = [
                (resource, TIER_LABELS[tier], f"{cost}{tier}", f"{quantity}{tier}")
                for resource, (cost, quantity) in RESOURCE_FIELDS.items()
                for tier in TIER_LABELS
            ] + [("storage", "-", "storageCost", "storageGib")]
            for resource, tier, cost, quantity in charges:
                if bucket[cost] or bucket[quantity]:
                    records.append(
                        (
                            cluster_id,
                            bucket["timestamp"],
                            resource,
                            tier,
                            bucket[cost] * case.hours,
                            bucket[quantity] * case.hours,
                        )
                    )
    return pd.DataFrame(records, columns=[*ORIGIN, "cost", "quantity"]).set_index(ORIGIN)


def frame(table: pa.Table) -> pd.DataFrame:
    out = table.to_pandas()
    out["x_CastAIPricingTier"] = out["x_CastAIPricingTier"].fillna("-")
    return out


def ratios(table: pa.Table) -> pd.DataFrame:
    """AllocatedMethodDetails parsed with a real JSON parser (independent of the audit's regex)."""
    elements = [json.loads(text)["Elements"] for text in table.column("AllocatedMethodDetails").to_pylist()]
    assert all(len(e) == 1 for e in elements)
    return pd.DataFrame([e[0] for e in elements])


# --------------------------------------------------------------------------------------------------
# The FinOps Foundation validator with --split


@pytest.fixture(scope="module")
def verdicts(
    cases: dict[int, SplitCase], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, subprocess.CompletedProcess[str]]:
    if not VALIDATOR.exists():
        pytest.skip(
            f"FinOps FOCUS validator not found at {VALIDATOR}: split rules are still checked by "
            "focus_split.check_split_allocation"
        )
    folder = tmp_path_factory.mktemp("focus-validator-split")
    (folder / "hourly.parquet").write_bytes(to_parquet_bytes(cases[3600].split))
    (folder / "daily.parquet").write_bytes(to_parquet_bytes(cases[86400].split))
    # Negative control: without AllocatedTags a split dataset must fail the --split criteria.
    pq.write_table(cases[86400].split.drop_columns(["AllocatedTags"]), folder / "no-allocated-tags.parquet")
    names = ["hourly.parquet", "daily.parquet", "no-allocated-tags.parquet"]

    def start(name: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(VALIDATOR), str(folder / name), "--split"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
        output, _ = process.communicate()
        return subprocess.CompletedProcess(process.args, process.returncode, output, "")

    results: dict[str, subprocess.CompletedProcess[str]] = {}
    if not _validator_venv_ready():  # the first run installs the virtualenv: never race two installs
        results[names[0]] = finish(start(names[0]))
    running = {name: start(name) for name in names if name not in results}
    results |= {name: finish(process) for name, process in running.items()}
    unusable = [r for r in results.values() if r.returncode == 2]
    if unusable:
        pytest.skip(f"FinOps FOCUS validator could not run: {unusable[0].stdout.strip()[-400:]}")
    return results


@pytest.mark.parametrize("name", ["hourly.parquet", "daily.parquet"])
def test_validator_with_split_reports_zero_failures(
    verdicts: dict[str, subprocess.CompletedProcess[str]], name: str
) -> None:
    result = verdicts[name]
    total, passed, failed = verdict(result)
    assert (result.returncode, failed) == (0, 0), result.stdout[-4000:]
    assert total > 700 and passed > 300  # the 1.3 model ran with the split criterion
    assert "Fail 0" in result.stdout.strip().splitlines()[-1]


def test_validator_split_criterion_is_active(verdicts: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = verdicts["no-allocated-tags.parquet"]
    _, _, failed = verdict(result)
    assert result.returncode != 0 and failed > 0
    assert "AllocatedTags" in result.stdout


# --------------------------------------------------------------------------------------------------
# Invariants on real sandbox data


def test_conformance_and_split_audits_pass(case: SplitCase) -> None:
    results = [
        *check_conformance(case.split),
        *check_split_allocation(case.split),
        check_split_conservation(case.split, case.reports),
    ]
    assert [r for r in results if not r.passed] == []
    assert case.split.schema.equals(FOCUS_SCHEMA)
    assert case.split.num_rows > case.workload_mode.num_rows > 0


def test_every_origin_charge_is_the_sum_of_its_rows_in_every_summable_column(case: SplitCase) -> None:
    summable = {c.name for c in FOCUS_COLUMNS if c.focus_type == "Decimal"} - set(UNIT_PRICES)
    assert summable == {
        *COST_LIKE,
        *QUANTITIES,
        "ListCost",
        "ContractedCost",
        "x_CastAIUnreportedCost",
    } | set(COMPONENT_COLUMNS.values())
    out = frame(case.split)
    assert out["x_CastAIUnreportedCost"].isna().all()  # the sandbox never reports less than its workloads
    sums = out.fillna({c: 0.0 for c in summable}).groupby(ORIGIN)[sorted(summable)].sum()
    prices = out.groupby(ORIGIN)[["ListUnitPrice", "ContractedUnitPrice"]].first()
    expected = report_origins(case)
    assert sorted(sums.index) == sorted(expected.index)  # one origin per non-zero report charge, no other
    joined = sums.join(expected).join(prices)
    cost, quantity = joined["cost"].to_numpy(), joined["quantity"].to_numpy()
    for column in COST_LIKE:
        np.testing.assert_allclose(joined[column], cost, rtol=1e-9, atol=1e-12, err_msg=column)
    for column in QUANTITIES:
        np.testing.assert_allclose(joined[column], quantity, rtol=1e-9, atol=1e-12, err_msg=column)
    for column, price in (("ListCost", "ListUnitPrice"), ("ContractedCost", "ContractedUnitPrice")):
        np.testing.assert_allclose(joined[column], joined[price] * quantity, rtol=1e-9, atol=1e-12)
    resource = joined.index.get_level_values("x_CastAIResource")
    for name, column in COMPONENT_COLUMNS.items():
        np.testing.assert_allclose(
            joined[column], np.where(resource == name, cost, 0.0), rtol=1e-9, atol=1e-12
        )
    assert (case.split.column("BilledCost").to_numpy() >= 0).all()
    assert (case.split.column("PricingQuantity").to_numpy() >= 0).all()


def test_ratios_sum_to_one_and_describe_each_row(case: SplitCase) -> None:
    out = frame(case.split)
    details = ratios(case.split)
    out["ratio"], out["unit"], out["usage"] = (
        details["AllocatedRatio"],
        details["UsageUnit"],
        details["UsageQuantity"],
    )
    assert (out["unit"] == out["PricingUnit"]).all()
    assert ((out["ratio"] >= 0) & (out["ratio"] <= 1)).all()
    assert (out.groupby(ORIGIN)["ratio"].sum() - 1.0).abs().max() <= 1e-9
    assert (out["AllocatedMethodId"] == ALLOCATION_METHOD_ID).all()

    origin = report_origins(case)
    joined = out.join(origin, on=ORIGIN)
    np.testing.assert_allclose(joined["ratio"], joined["BilledCost"] / joined["cost"], rtol=1e-12)
    np.testing.assert_allclose(joined["PricingQuantity"], joined["ratio"] * joined["quantity"], rtol=1e-12)

    # An allocated row's UsageQuantity is the workload's own requested quantity × hours from Cast AI.
    requested = workload_quantities(case)
    allocated = joined[joined["AllocatedResourceId"].notna()].join(
        requested, on=["AllocatedResourceId", "ChargePeriodEnd", "x_CastAIResource", "x_CastAIPricingTier"]
    )
    np.testing.assert_allclose(allocated["usage"], allocated["requested"], rtol=1e-12, atol=0)
    # The idle row's UsageQuantity is the capacity no workload requested.
    idle = joined[joined["AllocatedResourceId"].isna()]
    requested_sum = allocated.groupby(ORIGIN)["requested"].sum()
    expected_idle = (
        idle["quantity"] - requested_sum.reindex(pd.MultiIndex.from_frame(idle[ORIGIN])).fillna(0).to_numpy()
    )
    np.testing.assert_allclose(idle["usage"], expected_idle, rtol=1e-9, atol=1e-9)


def workload_quantities(case: SplitCase) -> pd.DataFrame:
    """Each workload's requested quantity × hours per bucket and charge, from the workload-costs table."""
    table = case.workloads.to_pandas()
    table["AllocatedResourceId"] = (
        "castai://"
        + table["cluster_id"].astype(str)
        + "/"
        + table["namespace"].astype(str)
        + "/"
        + table["workload_type"].astype(str)
        + "/"
        + table["workload_name"].astype(str)
    )
    parts = []
    for resource, (_, quantity) in RESOURCE_FIELDS.items():
        for tier, label in TIER_LABELS.items():
            parts.append(
                table.assign(
                    x_CastAIResource=resource, x_CastAIPricingTier=label, requested=table[f"{quantity}{tier}"]
                )
            )
    parts.append(
        table.assign(x_CastAIResource="storage", x_CastAIPricingTier="-", requested=table["storageGib"])
    )
    stacked = pd.concat(parts).rename(columns={"timestamp": "ChargePeriodEnd"})
    stacked["requested"] *= case.hours
    return stacked.set_index(
        ["AllocatedResourceId", "ChargePeriodEnd", "x_CastAIResource", "x_CastAIPricingTier"]
    )[["requested"]]


def test_dimension_columns_equal_the_origin(case: SplitCase) -> None:
    allocation = {"AllocatedMethodDetails", "AllocatedResourceId", "AllocatedResourceName", "AllocatedTags"}
    summable = {c.name for c in FOCUS_COLUMNS if c.focus_type == "Decimal"} - set(UNIT_PRICES)
    dimensions = [
        c.name for c in FOCUS_COLUMNS if c.name not in allocation | summable | set(WORKLOAD_COLUMNS)
    ]
    out = frame(case.split)
    distinct = out.groupby(["ResourceId", "SkuPriceId", "ChargePeriodStart"])[dimensions].nunique(
        dropna=False
    )
    assert (distinct == 1).all().all(), distinct.columns[(distinct != 1).any()].tolist()

    cluster = out["x_CastAIClusterId"].map(case.clusters)
    assert (out["ResourceId"] == "castai://" + out["x_CastAIClusterId"]).all()
    assert (out["ResourceName"] == cluster.map(lambda c: c.name)).all()
    assert (out["ResourceType"] == "Kubernetes Cluster").all()
    expected_tags = cluster.map(
        lambda c: (
            json.dumps(
                dict(c.tags),
                sort_keys=True,
                ensure_ascii=False,
                separators=(",", ":"),
            )
            if c.tags
            else None
        )
    )
    assert out["Tags"].tolist() == expected_tags.tolist()


def test_allocated_tags_are_the_workload_labels_without_tags_keys(case: SplitCase) -> None:
    out = case.split.to_pandas()
    labels = {
        f"castai://{r['cluster_id']}/{r['namespace']}/{r['workload_type']}/{r['workload_name']}": json.loads(
            r["labels"]
        )
        if r["labels"]
        else {}
        for r in case.workloads.select(
            ["cluster_id", "namespace", "workload_type", "workload_name", "labels"]
        )
        .to_pandas()
        .to_dict("records")
    }
    pairs = out[["Tags", "AllocatedTags", "AllocatedResourceId"]].drop_duplicates()
    assert pairs["AllocatedTags"].notna().any()
    for tags_text, allocated_text, resource_id in pairs.itertuples(index=False):
        tags = json.loads(tags_text) if isinstance(tags_text, str) else {}
        allocated = json.loads(allocated_text) if isinstance(allocated_text, str) else {}
        assert not set(tags) & set(allocated)
        if isinstance(resource_id, str):
            assert allocated == {k: v for k, v in labels[resource_id].items() if k not in tags}
        else:
            assert allocated == {}


def test_unallocated_rows_carry_the_idle_capacity(case: SplitCase, sandbox_org: SandboxOrg) -> None:
    out = case.split.to_pandas()
    idle = out[out["AllocatedResourceId"].isna()]
    assert len(idle) > 0 and (idle["BilledCost"] > 0).all()
    for column in ("AllocatedResourceName", "AllocatedTags", *WORKLOAD_COLUMNS):
        assert idle[column].isna().all(), column
    allocated = out[out["AllocatedResourceId"].notna()]
    for column in ("AllocatedResourceName", *WORKLOAD_COLUMNS):
        assert allocated[column].notna().all(), column
    assert (
        allocated["AllocatedResourceId"]
        == "castai://"
        + allocated["x_CastAIClusterId"]
        + "/"
        + allocated["x_CastAINamespace"]
        + "/"
        + allocated["x_CastAIWorkloadType"]
        + "/"
        + allocated["x_CastAIWorkloadName"]
    ).all()
    assert (allocated["AllocatedResourceName"] == allocated["x_CastAIWorkloadName"]).all()
    assert not out.duplicated(["SkuPriceId", "ChargePeriodStart", "AllocatedResourceId"]).any()
    # The sandbox's ground truth: each cluster pays 1 / (1 - idle share) of its workloads.
    share = (
        idle.groupby("x_CastAIClusterId")["BilledCost"].sum()
        / out.groupby("x_CastAIClusterId")["BilledCost"].sum()
    )
    for cluster_id, value in share.items():
        assert value == pytest.approx(sandbox_org.cluster(str(cluster_id)).idle_share, abs=1e-4)


def test_workload_mode_totals_equal_split_mode_allocated_totals(case: SplitCase) -> None:
    workload = case.workload_mode.to_pandas()
    split = case.split.to_pandas()
    allocated = split[split["AllocatedResourceId"].notna()]
    assert len(allocated) == len(workload)  # one allocated row per workload-mode row
    keys = ["ChargePeriodStart", "x_CastAIResource", "x_CastAIPricingTier"]
    merged = workload.merge(
        allocated.drop(columns=["ResourceId"]).rename(columns={"AllocatedResourceId": "ResourceId"}),
        on=["ResourceId", *keys],
        suffixes=("", "_split"),
        validate="one_to_one",
    )
    assert len(merged) == len(workload)
    for column in ("BilledCost", "EffectiveCost"):
        assert (merged[column] == merged[f"{column}_split"]).all()
    per_workload = workload.groupby("ResourceId")["BilledCost"].sum()
    per_allocated = allocated.groupby("AllocatedResourceId")["BilledCost"].sum()
    np.testing.assert_allclose(per_allocated.reindex(per_workload.index), per_workload, rtol=1e-12)


def test_hourly_and_daily_split_give_the_same_cluster_day(cases: dict[int, SplitCase]) -> None:
    """Cast AI rounds every hourly and daily rate to 6 decimals (±5e-7 $/h): a row of h hours may move by
    5e-7 × h, so the bounds below are derived from the row counts, not tuned."""
    per_cluster = {}
    for step, c in cases.items():
        rows = c.split.to_pandas()
        idle = rows["AllocatedResourceId"].isna()
        per_cluster[step] = pd.DataFrame(
            {
                "total": rows.groupby("x_CastAIClusterId")["BilledCost"].sum(),
                "idle": rows[idle].groupby("x_CastAIClusterId")["BilledCost"].sum(),
                "allocated_rows": rows[~idle].groupby("x_CastAIClusterId").size(),
            }
        )
    hourly, daily = per_cluster[3600], per_cluster[86400].reindex(per_cluster[3600].index)
    charges = 13
    cluster_bound = 5e-7 * (24 * charges * 1 + charges * 24)  # the report's rates, hourly and daily
    allocated_bound = 5e-7 * (hourly["allocated_rows"] * 1 + daily["allocated_rows"] * 24)
    assert ((hourly["total"] - daily["total"]).abs() <= cluster_bound).all()
    assert ((hourly["idle"] - daily["idle"]).abs() <= cluster_bound + allocated_bound).all()


def test_documented_duckdb_queries_run_on_the_published_layout(
    cases: dict[int, SplitCase], tmp_path: Path
) -> None:
    case = cases[3600]
    folder = tmp_path / "version=focus-1.3/year=2026/month=03/day=02"
    folder.mkdir(parents=True)
    (folder / "castai-focus-org-2026-03-02-00.parquet").write_bytes(to_parquet_bytes(case.split))
    # The working files beside the published tree (internal_key): a glob over the whole prefix
    # would read them too, and DuckDB refuses their other partitions (regression).
    internal = tmp_path / "_internal/castai_listing_prices/year=2026/month=03/day=02"
    internal.mkdir(parents=True)
    (internal / "castai_listing_prices.parquet").write_bytes(to_parquet_bytes(case.split))
    queries = re.findall(r"```sql\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(queries) == 3
    documented = "focus/version=focus-1.3/*/*/*/*.parquet"
    assert all(documented in q for q in queries)
    path = (tmp_path / "version=focus-1.3/*/*/*/*.parquet").as_posix()
    with duckdb.connect() as db:
        results = [db.execute(q.replace(documented, path)).df() for q in queries]

    split = case.split.to_pandas()
    idle_rows = split["AllocatedResourceId"].isna()
    per_day = results[0].set_index("cluster")
    by_name = split.groupby("ResourceName")
    np.testing.assert_allclose(
        per_day["cluster_cost"], by_name["BilledCost"].sum().reindex(per_day.index), rtol=1e-12
    )
    np.testing.assert_allclose(
        per_day["idle"],
        split[idle_rows].groupby("ResourceName")["BilledCost"].sum().reindex(per_day.index),
        rtol=1e-12,
    )
    origins = report_origins(case)
    assert len(results[1]) == len(origins)
    assert results[1]["BilledCost"].sum() == pytest.approx(origins["cost"].sum(), rel=1e-12)
    showback = results[2]
    assert showback["allocated"].sum() == pytest.approx(split[~idle_rows]["BilledCost"].sum(), rel=1e-12)
    assert 0 < showback["idle_share"].sum() <= split[idle_rows]["BilledCost"].sum() * (1 + 1e-12)


# --------------------------------------------------------------------------------------------------
# Synthetic cases: the negative-remainder rule and edge cases

CLUSTER = "c-eks-prod"
BUCKET_END = DAY + timedelta(hours=1)


def report_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """A cluster cost report (as `cluster_cost_report` returns it); unspecified fields are 0."""
    schema = cost_report_schema()
    return pa.table(
        {
            f.name: [row.get(f.name, BUCKET_END if f.name == "timestamp" else 0.0) for row in rows]
            for f in schema
        },
        schema=schema,
    )


def split(workloads: pa.Table, reports: Mapping[str, pa.Table], **options: Any) -> pa.Table:
    return to_focus_split(
        workloads, reports, CLUSTERS, enrichment_context(), focus_options(**options), step_seconds=3600
    )


def two_workloads(a: float = 0.4, b: float = 0.3) -> pa.Table:
    return workload_table(
        [
            {"workload_name": "api", "cpuCostOnDemand": a, "cpuCountOnDemand": 4.0},
            {"workload_name": "worker", "cpuCostOnDemand": b, "cpuCountOnDemand": 2.0},
        ]
    )


def audits(out: pa.Table, reports: Mapping[str, pa.Table]) -> list[str]:
    results = [*check_conformance(out), *check_split_allocation(out), check_split_conservation(out, reports)]
    return [f"{r.rule}: {r.message}" for r in results if not r.passed]


def test_workloads_exceeding_their_cluster_raise_the_origin_and_record_the_excess() -> None:
    reports = {CLUSTER: report_table([{"cpuCostOnDemand": 0.5, "cpuCountOnDemand": 5.0}])}
    out = split(two_workloads(), reports)
    rows = out.to_pandas()
    assert rows["AllocatedResourceId"].notna().all()  # no unallocated row, and nothing negative
    assert rows["BilledCost"].tolist() == [0.4, 0.3]  # Cast AI's workload figures win
    assert to_focus(two_workloads(), CLUSTERS, enrichment_context(), focus_options())[
        "BilledCost"
    ].to_pylist() == [
        0.4,
        0.3,
    ]
    assert ratios(out)["AllocatedRatio"].tolist() == pytest.approx([4 / 7, 3 / 7], rel=1e-12)
    assert rows["x_CastAIUnreportedCost"].tolist() == pytest.approx([0.2 * 4 / 7, 0.2 * 3 / 7], rel=1e-9)
    assert rows["x_CastAIUnreportedCost"].sum() == pytest.approx(0.7 - 0.5, rel=1e-12)
    # Quantity follows the raised origin: max(reported 5, requested 4 + 2) = 6 vCPU-hours.
    assert rows["PricingQuantity"].tolist() == pytest.approx([6 * 4 / 7, 6 * 3 / 7], rel=1e-12)
    assert (rows[["BilledCost", "PricingQuantity", "ListCost", "ContractedCost"]] >= 0).all().all()
    assert audits(out, reports) == []

    # The conservation audit relies on the recorded excess: without it the raised origin is a mismatch.
    index = out.schema.get_field_index("x_CastAIUnreportedCost")
    hidden = out.set_column(index, out.schema.field(index), pa.nulls(out.num_rows, pa.float64()))
    result = check_split_conservation(hidden, reports)
    assert not result.passed and CLUSTER in result.message


def test_a_missing_cluster_bucket_makes_every_workload_cost_unreported() -> None:
    reports = {CLUSTER: report_table([])}
    out = split(two_workloads(), reports)
    assert out["BilledCost"].to_pylist() == [0.4, 0.3]
    assert pa.compute.sum(out["x_CastAIUnreportedCost"]).as_py() == pytest.approx(0.7, rel=1e-12)
    assert audits(out, reports) == []


def test_an_exactly_allocated_origin_has_no_unallocated_row() -> None:
    reports = {
        CLUSTER: report_table([{"cpuCostOnDemand": 0.7, "cpuCountOnDemand": 6.0}])
    }  # 0.4 + 0.3 in float ≠ 0.7
    out = split(two_workloads(), reports)
    assert out.num_rows == 2 and out["AllocatedResourceId"].null_count == 0
    assert out["x_CastAIUnreportedCost"].null_count == 2
    assert audits(out, reports) == []


def test_idle_remainder_and_a_cluster_without_workloads() -> None:
    reports = {
        CLUSTER: report_table([{"cpuCostOnDemand": 1.0, "cpuCountOnDemand": 10.0}]),
        "c-gke-ml": report_table([{"storageCost": 0.02, "storageGib": 100.0}]),
    }
    out = split(two_workloads(), reports).to_pandas()
    idle = out[out["AllocatedResourceId"].isna()].set_index("x_CastAIClusterId")
    assert idle.loc[CLUSTER, "BilledCost"] == pytest.approx(0.3, rel=1e-12)
    assert json.loads(idle.loc[CLUSTER, "AllocatedMethodDetails"])["Elements"][0] == pytest.approx(
        {"AllocatedRatio": 0.3, "UsageUnit": "vCPU-Hours", "UsageQuantity": 4.0}
    )
    assert idle.loc[CLUSTER, "PricingQuantity"] == pytest.approx(3.0, rel=1e-12)
    assert idle.loc["c-gke-ml", "BilledCost"] == 0.02 and idle.loc["c-gke-ml", "PricingQuantity"] == 100.0
    assert idle.loc["c-gke-ml", "ChargeDescription"] == "Storage for Kubernetes cluster gke-ml"
    assert audits(split(two_workloads(), reports), reports) == []


def test_an_origin_without_cost_is_split_by_quantity() -> None:
    workloads = workload_table([{"workload_name": "free", "storageGib": 40.0}])
    reports = {CLUSTER: report_table([{"storageGib": 100.0}])}
    out = split(workloads, reports)
    assert ratios(out)["AllocatedRatio"].tolist() == pytest.approx([0.4, 0.6], rel=1e-12)
    assert out["BilledCost"].to_pylist() == [0.0, 0.0]
    assert out["PricingQuantity"].to_pylist() == pytest.approx([40.0, 60.0], rel=1e-12)
    assert audits(out, reports) == []


def test_allocated_tags_drop_keys_already_in_tags_and_follow_the_allowlist() -> None:
    """Split mode: Tags are the cluster's (equal on origin and allocated rows); a clashing label yields."""
    labels = {"env": "shadow", "app": "api", "team": "web"}
    workloads = workload_table([{"workload_name": "api", "cpuCostOnDemand": 0.4, "labels": labels}])
    reports = {CLUSTER: report_table([{"cpuCostOnDemand": 0.5}])}
    rows = split(workloads, reports).to_pandas()
    allocated = rows[rows["AllocatedResourceId"].notna()].iloc[0]
    assert json.loads(allocated["Tags"]) == {"env": "prod", "team": "payments"}
    assert json.loads(allocated["AllocatedTags"]) == {"app": "api"}
    assert audits(split(workloads, reports), reports) == []

    narrowed = split(workloads, reports, tag_allowlist=("team",)).to_pandas()
    first = narrowed[narrowed["AllocatedResourceId"].notna()].iloc[0]
    assert json.loads(first["Tags"]) == {"team": "payments"}
    assert pd.isna(first["AllocatedTags"])


def test_workload_mode_leaves_the_split_columns_null() -> None:
    out = to_focus(two_workloads(), CLUSTERS, enrichment_context(), focus_options())
    for name in (
        "AllocatedMethodDetails",
        "AllocatedMethodId",
        "AllocatedResourceId",
        "AllocatedResourceName",
        "AllocatedTags",
        "x_CastAIUnreportedCost",
    ):
        assert out[name].null_count == out.num_rows, name


def test_empty_inputs_give_the_schema() -> None:
    assert split(workload_table([]), {}).equals(FOCUS_SCHEMA.empty_table())
    assert split(workload_table([]), {CLUSTER: report_table([])}).schema.equals(FOCUS_SCHEMA)
    assert check_split_allocation(FOCUS_SCHEMA.empty_table())[0].passed
    assert all(r.passed for r in check_split_allocation(FOCUS_SCHEMA.empty_table()))
    assert check_split_conservation(FOCUS_SCHEMA.empty_table(), {}).passed


@pytest.mark.parametrize(
    ("workloads", "reports", "step", "message"),
    [
        (
            two_workloads(),
            {},
            3600,
            r"c-eks-prod.*no cluster cost report \(/v1/cost-reports/clusters/\{clusterId\}/cost\)",
        ),
        (
            two_workloads(),
            {CLUSTER: report_table([]).drop_columns(["ramGibSpot"])},
            3600,
            r"c-eks-prod.*ramGibSpot",
        ),
        (
            two_workloads(),
            {CLUSTER: report_table([{"cpuCostSpot": -1.0}])},
            3600,
            r"c-eks-prod.*cpuCostSpot.*>= 0",
        ),
        (two_workloads(), {CLUSTER: report_table([{}, {}])}, 3600, r"c-eks-prod.*repeats bucket"),
        (two_workloads(), {CLUSTER: report_table([])}, 86400, r"c-eks-prod.*step_seconds 3600.*86400"),
        (two_workloads(), {"c-unknown": report_table([])}, 3600, r"c-unknown.*missing from the cluster list"),
        (
            two_workloads(),
            {CLUSTER: report_table([{"timestamp": BUCKET_END + timedelta(minutes=30)}])},
            3600,
            r"c-eks-prod.*/cost are not on the 3600 s grid",
        ),
    ],
)
def test_inconsistent_inputs_fail_naming_the_cluster_and_field(
    workloads: pa.Table, reports: dict[str, pa.Table], step: int, message: str
) -> None:
    if "c-unknown" in reports:
        reports = {**reports, CLUSTER: report_table([])}
    with pytest.raises(ValueError, match=message):
        to_focus_split(workloads, reports, CLUSTERS, enrichment_context(), focus_options(), step_seconds=step)


# --------------------------------------------------------------------------------------------------
# Property: random inputs always split into rows that reconcile

FIELDS = ("cpuCostOnDemand", "cpuCountOnDemand", "ramCostSpot", "ramGibSpot", "storageCost", "storageGib")
amount = st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=500.0, allow_nan=False), st.just(1e-7))
cluster_factor = st.one_of(st.just(0.0), st.just(1.0), st.floats(min_value=0.5, max_value=2.0))


@st.composite
def split_inputs(draw: st.DrawFn) -> tuple[pa.Table, dict[str, pa.Table], int]:
    step = draw(st.sampled_from([3600, 86400]))
    buckets = [DAY + timedelta(seconds=step * (i + 1)) for i in range(draw(st.integers(1, 2)))]
    rows, reports = [], {}
    for cluster_id in draw(st.sets(st.sampled_from(sorted(CLUSTERS)), min_size=1, max_size=2)):
        report_rows = []
        for end in buckets:
            sums = dict.fromkeys(FIELDS, 0.0)
            for i in range(draw(st.integers(0, 3))):
                metrics = {f: draw(amount) for f in FIELDS}
                rows.append(
                    {
                        "cluster_id": cluster_id,
                        "workload_name": f"w{i}",
                        "timestamp": end,
                        "step_seconds": step,
                    }
                    | metrics
                )
                sums = {f: sums[f] + metrics[f] for f in FIELDS}
            if draw(st.booleans()) or not rows:  # sometimes the cluster report lacks the bucket (late data)
                report_rows.append({"timestamp": end} | {f: sums[f] * draw(cluster_factor) for f in FIELDS})
        reports[cluster_id] = report_table(report_rows)
    return workload_table(rows), reports, step


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split_inputs())
def test_property_random_inputs_reconcile(inputs: tuple[pa.Table, dict[str, pa.Table], int]) -> None:
    workloads, reports, step = inputs
    out = to_focus_split(
        workloads, reports, CLUSTERS, enrichment_context(), focus_options(), step_seconds=step
    )
    assert audits(out, reports) == []
    if out.num_rows == 0:
        return
    rows = frame(out)
    ratio = ratios(out)["AllocatedRatio"].to_numpy()
    assert (np.abs(pd.Series(ratio).groupby([rows[c] for c in ORIGIN]).sum() - 1.0) <= 1e-9).all()
    for column in ("BilledCost", "PricingQuantity", "ListCost", "ContractedCost"):
        assert (rows[column] >= 0).all(), column
    # Σ BilledCost per origin = max(cluster report, Σ workloads): the documented negative-remainder rule.
    hours = step / 3600
    reported = {
        (cid, end, field): value * hours
        for cid, report in reports.items()
        for end, *values in zip(
            report["timestamp"].to_pylist(), *(report[f].to_pylist() for f in FIELDS), strict=True
        )
        for field, value in zip(FIELDS, values, strict=True)
    }
    source = workloads.to_pandas()
    cost_field = {"cpu": "cpuCostOnDemand", "memory": "ramCostSpot", "storage": "storageCost"}
    for (cluster_id, end, resource, _), group in rows.groupby(ORIGIN):
        field = cost_field[str(resource)]
        mine = source[(source["cluster_id"] == cluster_id) & (source["timestamp"] == end)]
        workloads_cost = float((mine[field] * hours).sum())
        report_cost = reported.get((str(cluster_id), pd.Timestamp(str(end)).to_pydatetime(), field), 0.0)
        assert group["BilledCost"].sum() == pytest.approx(
            max(report_cost, workloads_cost), rel=1e-9, abs=1e-12
        )
    # Allocated rows are exactly the workload-mode rows.
    workload_mode = to_focus(workloads, CLUSTERS, enrichment_context(), focus_options())
    allocated = out.filter(out["AllocatedResourceId"].is_valid())
    assert sorted(allocated["BilledCost"].to_pylist()) == sorted(workload_mode["BilledCost"].to_pylist())
