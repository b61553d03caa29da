"""List prices and discounts through the real product: Dagster runs against the sandbox over HTTP.

Expected prices come from the sandbox's own model (its list prices, cluster prices and discount
catalogue), never from the exporter's output. The organisation is the demo one plus an Azure CPU
discount of TYPE_FLAT "-1" (a surcharge: valid in the definition).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from castai_focus_dagster.castai.sandbox import Faults, SandboxOrg, SandboxServer
from castai_focus_dagster.castai.sandbox.discounts import Discount
from castai_focus_dagster.castai.sandbox.hours import hour_index
from castai_focus_dagster.castai.sandbox.metrics import (
    DEFAULT_CPU_HOURLY_PRICE,
    DEFAULT_MEMORY_GIB_HOURLY_PRICE,
    LIST_PRICES,
)
from castai_focus_dagster.definitions import defs
from castai_focus_dagster.storage.keys import data_key, manifest_key
from castai_focus_dagster_tests.defs.test_pipeline import PREFIX, day_total_from_sandbox

DAY = "2026-11-01"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def org(sandbox_org: SandboxOrg) -> SandboxOrg:
    surcharge = Discount(
        "9f0c0000-0000-4000-8000-00000000f1a7", sandbox_org.organization_id, "Azure CPU surcharge",
        "azure", True, "TARGET_CPU", "TYPE_FLAT", "-1",
    )  # fmt: skip
    return sandbox_org.with_discounts([*sandbox_org.discounts, surcharge])


@pytest.fixture
def server(org: SandboxOrg) -> Iterator[SandboxServer]:
    with SandboxServer(org, faults=Faults()) as running:
        yield running


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: SandboxServer, org: SandboxOrg) -> Path:
    return configure(monkeypatch, tmp_path, server, org)


def configure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: SandboxServer, org: SandboxOrg
) -> Path:
    """Settings of a run against `server`, output in a local folder (returned)."""
    out = tmp_path / "out"
    for name in list(os.environ):
        if name.startswith(("CASTAI_", "COLLECTION_", "FOCUS_", "S3_", "TERNARY_", "JOB_", "SCHEDULE_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CASTAI_API_URL", server.url)
    monkeypatch.setenv("CASTAI_API_KEY", org.api_key)
    monkeypatch.setenv("CASTAI_ORGANIZATION_ID", org.organization_id)
    monkeypatch.setenv("LOCAL_OUTPUT_DIR", str(out))
    monkeypatch.setenv("CASTAI_MAX_RETRIES", "2")
    return out


def materialize(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("focus_export_job")
    return job.execute_in_process(partition_key=DAY, instance=instance, raise_on_error=False)


def published(out: Path, org: SandboxOrg) -> pa.Table:
    return pq.read_table(out / data_key(PREFIX, org.organization_id, date.fromisoformat(DAY), "parquet"))


def rows(table: pa.Table, cluster_id: str, resource: str, tier: str) -> pa.Table:
    mask = pc.and_(
        pc.and_(
            pc.equal(table["x_CastAIClusterId"], cluster_id), pc.equal(table["x_CastAIResource"], resource)
        ),
        pc.equal(table["x_CastAIPricingTier"], tier),
    )
    selected = table.filter(mask)
    assert selected.num_rows > 0, (cluster_id, resource, tier)
    return selected


def column(table: pa.Table, name: str) -> list[float]:
    return [float(v) for v in table[name].to_pylist()]


def sku_effective_rates(selected: pa.Table) -> list[float]:
    """Per row of one cluster, resource and tier: Σ BilledCost ÷ Σ PricingQuantity of the rows of its
    charge period that have a quantity (the one effective rate of its SkuPriceId in that period)."""
    sums: dict[object, list[float]] = {}
    for row in selected.select(["ChargePeriodStart", "BilledCost", "PricingQuantity"]).to_pylist():
        if row["PricingQuantity"]:
            total = sums.setdefault(row["ChargePeriodStart"], [0.0, 0.0])
            total[0] += row["BilledCost"]
            total[1] += row["PricingQuantity"]
    return [
        sums[start][0] / sums[start][1] if start in sums else 0.0
        for start in selected["ChargePeriodStart"].to_pylist()
    ]


def test_prices_follow_each_clusters_source_and_discount_scope(
    env: Path, org: SandboxOrg, server: SandboxServer
) -> None:
    with dg.instance_for_test() as instance:
        result = materialize(instance)
        assert result.success
    table = published(env, org)
    eks, gke, aks, onprem, dev_eks, edge = org.clusters
    assert [c.provider_type for c in org.clusters] == ["eks", "gke", "aks", "anywhere", "eks", "anywhere"]

    # Cloud list prices are the listing rates (useListingPrices=true), not the Anywhere default pricing.
    for cluster in (eks, gke, aks):
        listed = column(rows(table, cluster.id, "cpu", "on-demand"), "ListUnitPrice")
        assert listed == pytest.approx([LIST_PRICES[cluster.provider_type][0]] * len(listed), rel=1e-3)
    # A GCP-only memory discount (20 %) lowers GKE memory and leaves EKS memory at its list price.
    eks_memory = rows(table, eks.id, "memory", "on-demand")
    assert column(eks_memory, "ContractedUnitPrice") == column(eks_memory, "ListUnitPrice")
    gke_memory = rows(table, gke.id, "memory", "on-demand")
    assert column(gke_memory, "ContractedUnitPrice") == pytest.approx(
        [0.8 * p for p in column(gke_memory, "ListUnitPrice")], rel=1e-12
    )
    # An enabled spot-only discount (5 % off GKE spot CPU) lowers spot rows only.
    gke_spot = rows(table, gke.id, "cpu", "spot")
    assert column(gke_spot, "ContractedUnitPrice") == pytest.approx(
        [0.95 * p for p in column(gke_spot, "ListUnitPrice")], rel=1e-12
    )
    gke_cpu = rows(table, gke.id, "cpu", "on-demand")
    assert column(gke_cpu, "ContractedUnitPrice") == column(gke_cpu, "ListUnitPrice")
    # Azure: the 10 % instance discount (vCPU and memory), then the "-1" flat CPU surcharge.
    aks_cpu = rows(table, aks.id, "cpu", "on-demand")
    assert column(aks_cpu, "ContractedUnitPrice") == pytest.approx(
        [0.9 * p + 1.0 for p in column(aks_cpu, "ListUnitPrice")], rel=1e-12
    )
    # Where every discount of a row is evaluable, ContractedUnitPrice is Cast AI's own (discounted) rate.
    for cluster, resource in ((eks, "cpu"), (gke, "memory"), (aks, "cpu"), (aks, "memory"), (dev_eks, "cpu")):
        charged = rows(table, cluster.id, resource, "on-demand")
        effective = pc.divide(charged["BilledCost"], charged["PricingQuantity"]).to_pylist()
        assert column(charged, "ContractedUnitPrice") == pytest.approx(effective, rel=2e-3), cluster.name
    # Anywhere clusters: Cast AI's default pricing as list price; a custom cluster price as contracted.
    edge_cpu = rows(table, edge.id, "cpu", "on-demand")
    assert set(column(edge_cpu, "ListUnitPrice")) == {DEFAULT_CPU_HOURLY_PRICE}
    edge_memory = rows(table, edge.id, "memory", "spot-fallback")
    assert set(column(edge_memory, "ListUnitPrice")) == {DEFAULT_MEMORY_GIB_HOURLY_PRICE}
    # Cast AI's Anywhere prices have no spot price: spot rows keep Cast AI's own rate, one per SKU price
    # and period (the workloads' own rates differ by Cast AI's 6-decimal rounding).
    for cluster in (edge, onprem):
        spot = rows(table, cluster.id, "cpu", "spot")
        effective = sku_effective_rates(spot)
        assert column(spot, "ListUnitPrice") == pytest.approx(effective, rel=1e-12)
        assert spot["ContractedUnitPrice"].equals(spot["ListUnitPrice"])
    assert set(column(rows(table, onprem.id, "cpu", "on-demand"), "ContractedUnitPrice")) == {
        round(onprem.cpu_hourly_price, 6)
    }
    # FOCUS: ListCost / ContractedCost are exactly unit price × PricingQuantity, as a reader recomputes them.
    for cost, price in (("ListCost", "ListUnitPrice"), ("ContractedCost", "ContractedUnitPrice")):
        assert table[cost].equals(pc.multiply(table[price], table["PricingQuantity"]))
    # Every discount of this organisation that Cast AI applied is attributable: ContractedCost is BilledCost
    # up to Cast AI's 6-decimal rounding of the listing reports.
    assert pc.sum(table["ContractedCost"]).as_py() == pytest.approx(
        pc.sum(table["BilledCost"]).as_py(), rel=1e-4
    )
    # BilledCost is Cast AI's cost whatever the prices.
    assert pc.sum(table["BilledCost"]).as_py() == pytest.approx(day_total_from_sandbox(org, DAY), abs=1e-4)

    # One listing-price request per cloud cluster and day.
    listing = [r for r in server.requests if r.query.get("useListingPrices") == ["true"]]
    assert sorted(r.path for r in listing) == sorted(
        f"/v1/cost-reports/clusters/{c.id}/cost" for c in org.clusters if c.provider_type != "anywhere"
    )
    pricing = result.asset_materializations_for_node("focus_cost_and_usage")[0].metadata["pricing"].value
    manifest = json.loads((env / manifest_key(PREFIX, date.fromisoformat(DAY))).read_text())
    assert manifest["extra"]["pricing"] == pricing
    assert isinstance(pricing, dict)
    assert pricing["listing_missing"] == []
    assert pricing["not_applied"] == {
        "disabled": 2,  # expired spot promotion, paused memory credit
        "node_scope": 2,  # AWS m5 reserved pricing (families, os), AWS c5 zonal rate (instanceTypes, zones)
        "outside_dates": 1,  # GCP 2024 launch promotion
        "unsupported_target": 1,  # AWS commitment
    }
    assert pricing["discounts"] == len(org.discounts)
    assert set(pricing["list_price_rows"]) == {"listing_report", "anywhere_default_pricing", "effective_rate"}
    assert pricing["discounted_rows"][org.discounts[-1].id] == aks_cpu.num_rows + len(
        [r for r in table.filter(pc.equal(table["x_CastAIClusterId"], aks.id)).to_pylist()
         if r["x_CastAIResource"] == "cpu" and r["x_CastAIPricingTier"] != "on-demand"]
    )  # fmt: skip
    assert pricing["negative_price_clamped_rows"] == 0
    enrichment = result.asset_materializations_for_node("castai_enrichment_context")[0].metadata
    assert enrichment["discounts_not_applied"].value == {
        "disabled": 2,
        "node_scope": 2,
        "unsupported_target": 1,
    }


def test_listing_prices_unavailable_degrade_to_the_effective_rate(
    env: Path, org: SandboxOrg, server: SandboxServer
) -> None:
    server.faults.fail_paths = {r"/cost$": 404}
    with dg.instance_for_test() as instance:
        result = materialize(instance)
        assert result.success
    table = published(env, org)
    eks = org.clusters[0]
    eks_cpu = rows(table, eks.id, "cpu", "on-demand")
    # No list price: the SKU price's effective rate, no discount.
    assert column(eks_cpu, "ListUnitPrice") == pytest.approx(sku_effective_rates(eks_cpu), rel=1e-12)
    assert eks_cpu["ContractedUnitPrice"].equals(eks_cpu["ListUnitPrice"])
    pricing = result.asset_materializations_for_node("focus_cost_and_usage")[0].metadata["pricing"].value
    assert isinstance(pricing, dict)
    assert pricing["listing_missing"] == sorted(c.id for c in org.clusters if c.provider_type != "anywhere")
    assert pc.sum(table["BilledCost"]).as_py() == pytest.approx(day_total_from_sandbox(org, DAY), abs=1e-4)


def test_the_cli_publishes_the_negative_flat_discount(env: Path, org: SandboxOrg, tmp_path: Path) -> None:
    """`dagster asset materialize` as users run it: the "-1" flat value no longer discards every discount."""
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "castai_focus_dagster.definitions",
         "--select", "*", "--partition", DAY],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "DAGSTER_HOME": str(home)}, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = published(env, org)
    aks_cpu = rows(table, org.clusters[2].id, "cpu", "on-demand")
    contracted, listed = column(aks_cpu, "ContractedUnitPrice"), column(aks_cpu, "ListUnitPrice")
    assert all(c > p for c, p in zip(contracted, listed, strict=True))  # a surcharge raises the price
    assert contracted == pytest.approx([0.9 * p + 1.0 for p in listed], rel=1e-12)


@pytest.mark.parametrize("granularity", ["daily", "hourly"])
def test_a_discount_starting_inside_a_bucket_is_weighted_by_the_time_it_covers(
    sandbox_org: SandboxOrg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, granularity: str
) -> None:
    """A 50 % EKS CPU discount from 10:30: each row's price is the sandbox's own hourly discounted price,
    averaged over the row's charge period (an hourly row pays exactly Cast AI's discounted cost)."""
    eks = sandbox_org.clusters[0]
    midday = Discount(
        "9f0c0000-0000-4000-8000-00000000d0a1", sandbox_org.organization_id, "EKS from 10:30", "aws", True,
        "TARGET_CPU", "TYPE_PERCENTAGE", "0.5", clusters=(eks.id,), start_date=f"{DAY}T10:30:00Z",
    )  # fmt: skip
    org = sandbox_org.with_discounts([midday])
    with SandboxServer(org, faults=Faults()) as server:
        out = configure(monkeypatch, tmp_path, server, org)
        monkeypatch.setenv("COLLECTION_GRANULARITY", granularity)
        with dg.instance_for_test() as instance:
            result = materialize(instance)
            assert result.success
    day = published(out, org)
    table = rows(day, eks.id, "cpu", "on-demand")
    pricing = result.asset_materializations_for_node("focus_cost_and_usage")[0].metadata["pricing"].value
    assert isinstance(pricing, dict)
    # Rows the 10:30 start cuts: EKS CPU rows (all tiers) of the day, or of its 10:00 hour.
    eks_cpu = day.filter(
        pc.and_(pc.equal(day["x_CastAIClusterId"], eks.id), pc.equal(day["x_CastAIResource"], "cpu"))
    )
    cut = [t for t in eks_cpu["ChargePeriodStart"].to_pylist() if granularity == "daily" or t.hour == 10]
    assert pricing["time_weighted_rows"] == len(cut) > 0
    first = hour_index(f"{DAY}T00:00:00Z")
    hours = np.arange(first, first + 24, dtype=np.int64)
    metrics = org.hourly_metrics(eks.id, hours)
    cost, count = metrics["cpuCostOnDemand"], metrics["cpuCountOnDemand"]
    price = cost.sum(axis=0) / count.sum(axis=0)  # the sandbox's discounted price of each hour
    assert price[10] == pytest.approx(0.75 * price[0], rel=1e-12)  # half of 10:00-11:00 is discounted
    starts = [hour_index(t.replace(tzinfo=UTC)) - first for t in table["ChargePeriodStart"].to_pylist()]
    for row, start in zip(table.to_pylist(), starts, strict=True):
        if granularity == "daily":
            # The share of the discount is exact; the list rate is Cast AI's 6-decimal listing report.
            share = float(np.mean(price)) / LIST_PRICES["eks"][0]
            assert float(row["ContractedUnitPrice"]) == pytest.approx(
                share * float(row["ListUnitPrice"]), rel=1e-12
            )
            expected = float(np.mean(price)) * float(row["PricingQuantity"])
            assert float(row["ContractedCost"]) == pytest.approx(expected, rel=1e-6, abs=1e-6), row
            continue
        else:  # one hour: exactly what the sandbox charges this workload for it
            w = eks.workloads.row(
                row["x_CastAINamespace"], row["x_CastAIWorkloadType"], row["x_CastAIWorkloadName"]
            )
            expected = float(cost[w, start])
        assert float(row["ContractedCost"]) == pytest.approx(expected, abs=1e-6), row
