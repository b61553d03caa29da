"""The Cast AI sandbox over real HTTP on 127.0.0.1: shapes, arithmetic, paging, auth, faults, determinism.

Expectations come from the reference (castai-api.md) and from the sandbox organisation's exact
per-hour ground truth (`SandboxOrg.expected_*`), never from the rendered JSON itself.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import numpy as np
import pytest

from castai_focus_dagster.castai.models import METRIC_COLUMNS, TIERS
from castai_focus_dagster.castai.sandbox import Faults, SandboxOrg, SandboxServer
from castai_focus_dagster.castai.sandbox.discounts import Discount
from castai_focus_dagster.castai.sandbox.hours import hour_index
from castai_focus_dagster.castai.sandbox.metrics import LIST_PRICES
from castai_focus_dagster.settings import SANDBOX_ORGANIZATION_ID

START, END = "2026-03-01T00:00:00Z", "2026-03-03T00:00:00Z"  # two days: every-other-day jobs run once
DAY_END = "2026-03-02T00:00:00Z"
DECIMAL_STRING = re.compile(r"^\d+\.\d{6}$")
INTEGER_STRING = re.compile(r"^\d+$")
COMPONENTS = ("cpuCost", "ramCost", "gpuCost", "tpuCost")
ERROR_KEYS = {"message", "fieldViolations"}
# castai-api.md §8.1 CostReportItem / §3.3 WorkloadCostSummary, written out independently of the server.
CLUSTER_ITEM_KEYS = {
    f"{m}{t}"
    for m in ("cost", "cpuCount", "cpuCost", "ramCost", "ramGib", "gpuCost", "gpuCount", "tpuCost",
              "tpuCount", "totalCpuCost", "totalRamCost", "totalGpuCost", "totalTpuCost")
    for t in TIERS
} | {"timestamp", "storageGib", "storageCost", "totalStorageCost"}  # fmt: skip
WORKLOAD_SUMMARY_KEYS = {
    "totalCost", "totalCostOnDemand", "totalCostSpot", "totalCostSpotFallback", "totalStorageCost",
    "avgCost", "avgCpuCost", "avgRamCost", "avgGpuCost", "avgStorageCost", "avgTpuCost",
}  # fmt: skip


@pytest.fixture(scope="module")
def org() -> SandboxOrg:
    return SandboxOrg.generate(seed=7)


@pytest.fixture(scope="module")
def server(org: SandboxOrg) -> Iterator[SandboxServer]:
    with SandboxServer(org) as running:
        yield running


@pytest.fixture
def api(server: SandboxServer, org: SandboxOrg) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": org.api_key}, timeout=10) as client:
        yield client


def client_for(server: SandboxServer, timeout: float = 10) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-API-Key": server.org.api_key}, timeout=timeout)


def workloads_url(cluster_id: str) -> str:
    return f"/v1/cost-reports/clusters/{cluster_id}/workload-costs"


def window(start: str = START, end: str = END, step: int = 3600, **extra: Any) -> dict[str, Any]:
    return {"startTime": start, "endTime": end, "stepSeconds": str(step), **extra}


def fetch_items(api: httpx.Client, cluster_id: str, step: int, **extra: Any) -> list[dict[str, Any]]:
    response = api.get(workloads_url(cluster_id), params=window(step=step, **{"page.limit": "1000", **extra}))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["nextCursor"] == ""
    return list(body["items"])


def key(item: dict[str, Any]) -> tuple[str, str, str]:
    return item["namespace"], item["workloadType"], item["workloadName"]


def paid(bucket: dict[str, str]) -> float:
    """Average hourly compute + storage cost of one bucket, from the strings."""
    return sum(float(bucket[f"cost{t}"]) for t in TIERS) + float(bucket["storageCost"])


def total(item: dict[str, Any], hours_per_bucket: int) -> float:
    return sum(paid(bucket) for bucket in item["costMetrics"]) * hours_per_bucket


def timestamps(start: str, hours: int, count: int) -> list[str]:
    first = datetime.fromisoformat(start)
    return [(first + timedelta(hours=hours * k)).strftime("%Y-%m-%dT%H:%M:%SZ") for k in range(1, count + 1)]


# ----------------------------------------------------------------------------------------------
# Shapes


def test_external_clusters_have_the_reference_shape(api: httpx.Client, org: SandboxOrg) -> None:
    response = api.get("/v1/kubernetes/external-clusters")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"items"}
    items = body["items"]
    assert [c["id"] for c in items] == [c.id for c in org.clusters]
    assert {"eks", "gke", "aks", "anywhere"} <= {c["providerType"] for c in items}
    child_ids = {child.id for child in org.child_organizations}
    assert len(child_ids) >= 2 and {c["organizationId"] for c in items} == child_ids
    assert org.organization_id == SANDBOX_ORGANIZATION_ID not in child_ids | {org.enterprise_id}
    for cluster in items:
        assert {"id", "name", "organizationId", "providerType", "region", "tags", "status", "createdAt",
                "clusterNameId"} <= set(cluster)  # fmt: skip
        assert cluster["status"] == "ready"
        assert datetime.fromisoformat(cluster["createdAt"]).tzinfo is not None
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in cluster["tags"].items())
        if cluster["providerType"] == "anywhere":
            assert cluster["region"] is None
        else:
            assert cluster["region"]["name"] and cluster["region"]["displayName"]
    assert any(cluster["tags"] for cluster in items)


def test_workload_costs_have_the_reference_shape(api: httpx.Client, org: SandboxOrg) -> None:
    cluster_id = org.clusters[0].id
    response = api.get(workloads_url(cluster_id), params=window(step=86400))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"clusterId", "items", "noDataReason", "nextCursor", "count"}
    assert body["clusterId"] == cluster_id and body["noDataReason"] == "Unknown" and body["nextCursor"] == ""
    assert body["count"] == str(len(body["items"])) and body["items"]
    for item in body["items"]:
        assert set(item) == {"workloadName", "workloadType", "namespace", "costMetrics", "labels", "summary"}
        assert item["labels"] == []  # none requested -> none returned
        assert set(item["summary"]) == WORKLOAD_SUMMARY_KEYS
        assert all(DECIMAL_STRING.match(v) for v in item["summary"].values())
        assert len(item["costMetrics"]) == 2
        for bucket in item["costMetrics"]:
            assert set(bucket) == {"timestamp", *METRIC_COLUMNS}
            for name in METRIC_COLUMNS:
                pattern = INTEGER_STRING if name.startswith("uptimeMinutes") else DECIMAL_STRING
                assert pattern.match(bucket[name]), (name, bucket[name])


def test_bucket_timestamps_are_bucket_ends(api: httpx.Client, org: SandboxOrg) -> None:
    cluster_id = org.clusters[1].id
    hourly = fetch_items(api, cluster_id, 3600, endTime=DAY_END)
    assert [b["timestamp"] for b in hourly[0]["costMetrics"]] == timestamps(START, 1, 24)
    daily = fetch_items(api, cluster_id, 86400)
    assert [b["timestamp"] for b in daily[0]["costMetrics"]] == timestamps(START, 24, 2)
    # An incomplete last bucket is not reported: 5 hours in 2-hour steps -> ends 02:00 and 04:00.
    partial = fetch_items(api, cluster_id, 7200, endTime="2026-03-01T05:00:00Z")
    assert [b["timestamp"] for b in partial[0]["costMetrics"]] == timestamps(START, 2, 2)


def test_cost_is_the_sum_of_its_components_on_the_strings(api: httpx.Client, org: SandboxOrg) -> None:
    for cluster in org.clusters:
        buckets = [b for item in fetch_items(api, cluster.id, 3600) for b in item["costMetrics"]]
        buckets += api.get(f"/v1/cost-reports/clusters/{cluster.id}/cost", params=window()).json()["items"]
        for bucket in buckets:
            for tier in TIERS:
                components = sum(Decimal(bucket[f"{c}{tier}"]) for c in COMPONENTS)
                assert Decimal(bucket[f"cost{tier}"]) == components


# ----------------------------------------------------------------------------------------------
# Arithmetic against the ground truth


def test_hourly_and_daily_totals_agree_with_the_ground_truth(api: httpx.Client, org: SandboxOrg) -> None:
    for cluster in org.clusters:
        hourly = {key(i): i for i in fetch_items(api, cluster.id, 3600)}
        daily = {key(i): i for i in fetch_items(api, cluster.id, 86400)}
        assert hourly.keys() == daily.keys()
        assert set(hourly) <= set(org.workload_keys(cluster.id))
        for workload in org.workload_keys(cluster.id):
            expected = org.expected_workload_total(cluster.id, *workload, START, END)
            if workload not in hourly:
                assert expected == 0.0, workload
                continue
            assert total(hourly[workload], 1) == pytest.approx(expected, abs=1e-4), workload
            assert total(daily[workload], 24) == pytest.approx(expected, abs=1e-4), workload
            for day, daily_bucket in enumerate(daily[workload]["costMetrics"]):
                hours = hourly[workload]["costMetrics"][24 * day : 24 * (day + 1)]
                assert sum(paid(b) for b in hours) == pytest.approx(paid(daily_bucket) * 24, abs=1e-4)
        cluster_total = org.expected_cluster_total(cluster.id, START, END)
        assert cluster_total > 0
        assert sum(total(i, 1) for i in hourly.values()) == pytest.approx(cluster_total, abs=1e-3)


def test_workload_summary_totals_its_buckets(api: httpx.Client, org: SandboxOrg) -> None:
    for item in fetch_items(api, org.clusters[0].id, 3600):
        summary = {k: float(v) for k, v in item["summary"].items()}
        buckets = item["costMetrics"]
        for tier in TIERS:
            tier_total = sum(float(b[f"cost{tier}"]) for b in buckets)
            assert summary[f"totalCost{tier}"] == pytest.approx(tier_total, abs=1e-5)
        assert summary["totalStorageCost"] == pytest.approx(
            sum(float(b["storageCost"]) for b in buckets), abs=1e-5
        )
        assert summary["totalCost"] == pytest.approx(total(item, 1), abs=1e-5)
        assert summary["avgCost"] == pytest.approx(summary["totalCost"] / 48, abs=1e-6)


def expected_on_demand_cpu_price(cluster: dict[str, Any], list_unit: float, discounts: list[Any]) -> float:
    """The module docstring's rule, re-applied from API data: the list price less every enabled discount
    matching csp, cluster, region, on-demand lifecycle, dates (today) and CPU, with no node scope."""
    csp = {"eks": "aws", "gke": "gcp", "aks": "azure"}.get(cluster["providerType"])
    region = (cluster["region"] or {}).get("name")
    unit = list_unit
    for discount in discounts:
        pricing = discount["pricing"][0]
        if not (
            discount["enabled"] and discount["csp"] == csp
            and discount["target"] in ("TARGET_CPU", "TARGET_INSTANCE")
            and not (discount["target"] == "TARGET_INSTANCE" and pricing["type"] != "TYPE_PERCENTAGE")
            and not (pricing["type"] == "TYPE_FIXED" and float(pricing["value"]) < 0)
            and not any(discount[k] for k in ("families", "instanceTypes", "zones", "os"))
            and (not discount["clusters"] or cluster["id"] in discount["clusters"])
            and (not discount["regions"] or region in discount["regions"])
            and (not discount["lifeCycles"] or "LIFECYCLE_ON_DEMAND" in discount["lifeCycles"])
            and discount["startDate"] <= START < discount["endDate"]
        ):  # fmt: skip
            continue
        if pricing["type"] == "TYPE_PERCENTAGE":
            unit *= 1 - float(pricing["value"])
        elif pricing["type"] == "TYPE_FLAT":
            unit -= float(pricing["value"])
        else:
            unit = float(pricing["value"])
        unit = max(unit, 0.0)  # every step is clamped at 0
    return unit


def test_unit_prices_follow_list_prices_cluster_prices_and_discounts(
    api: httpx.Client, org: SandboxOrg
) -> None:
    """Cloud clusters: cost / quantity is the listing rate (useListingPrices=true) less matching discounts;
    Anywhere clusters: their ClusterPrice, with or without listing prices. Spot is ~60 % cheaper and moves."""
    prices = api.get(f"/pricing/v1/organizations/{org.organization_id}/clusters/prices").json()["items"]
    price_of = {p["clusterId"]: p for p in prices}
    discounts = api.get("/v1/discounts").json()["discounts"]
    clusters = api.get("/v1/kubernetes/external-clusters").json()["items"]
    assert set(price_of) == {c["id"] for c in clusters if c["providerType"] == "anywhere"}
    discounted = 0
    for cluster in clusters:
        buckets = [b for i in fetch_items(api, cluster["id"], 3600) for b in i["costMetrics"]]
        listed = [
            b
            for i in fetch_items(api, cluster["id"], 3600, useListingPrices="true")
            for b in i["costMetrics"]
        ]
        on_demand = [
            (b, lb) for b, lb in zip(buckets, listed, strict=True) if float(b["cpuCountOnDemand"]) > 1
        ]
        spot = [b for b in listed if float(b["cpuCountSpot"]) > 1]
        assert on_demand and spot
        for b, lb in on_demand:
            assert b["cpuCountOnDemand"] == lb["cpuCountOnDemand"]  # same usage, other prices
            list_unit = float(lb["cpuCostOnDemand"]) / float(lb["cpuCountOnDemand"])
            if cluster["providerType"] == "anywhere":
                expected = float(price_of[cluster["id"]]["cpuHourlyPrice"])
                assert list_unit == pytest.approx(expected, rel=1e-3)
            else:
                expected = expected_on_demand_cpu_price(cluster, list_unit, discounts)
            unit = float(b["cpuCostOnDemand"]) / float(b["cpuCountOnDemand"])
            assert unit == pytest.approx(expected, rel=1e-3), cluster["name"]
        discounted += expected != pytest.approx(list_unit, rel=1e-3)
        list_on_demand = float(on_demand[0][1]["cpuCostOnDemand"]) / float(
            on_demand[0][1]["cpuCountOnDemand"]
        )
        spot_ratios = [float(b["cpuCostSpot"]) / float(b["cpuCountSpot"]) / list_on_demand for b in spot]
        assert 0.3 < min(spot_ratios) < max(spot_ratios) < 0.55, cluster["name"]
    assert discounted >= 2, "the default organisation must exercise discounts"


def test_every_discount_scope_field_changes_the_sandbox_prices_as_documented(org: SandboxOrg) -> None:
    """`with_discounts` reprices the organisation: dates per hour, node scope never, negative flat raises."""
    eks = org.clusters[0]
    first = hour_index(START)
    hours = np.arange(first, first + 12, dtype=np.int64)

    def on_demand_cpu_rate(discounts: list[Discount], listing: bool = False) -> np.ndarray:
        metrics = org.with_discounts(discounts).hourly_metrics(eks.id, hours, listing=listing)
        cost, count = metrics["cpuCostOnDemand"].sum(axis=0), metrics["cpuCountOnDemand"].sum(axis=0)
        return np.asarray(cost / count)

    def aws(name: str, **fields: Any) -> Discount:
        base = Discount(name, org.organization_id, name, "aws", True, "TARGET_CPU", "TYPE_PERCENTAGE", "0.5")
        return replace(base, **fields)

    list_rate = on_demand_cpu_rate([])
    assert list_rate == pytest.approx(LIST_PRICES["eks"][0], rel=1e-12)
    morning = aws("morning", start_date="2026-03-01T06:00:00Z", end_date="2026-03-01T09:00:00Z")
    rate = on_demand_cpu_rate([morning])
    assert rate == pytest.approx(np.where((hours >= first + 6) & (hours < first + 9), 0.5, 1.0) * list_rate)
    assert on_demand_cpu_rate([morning], listing=True) == pytest.approx(list_rate)  # listing: no discount
    untouched = [
        aws("family", families=("m5",)),
        aws("types", instance_types=("m5.large",)),
        aws("zones", zones=("eu-central-1a",)),
        aws("os", os=("linux",)),
        aws("gcp", csp="gcp"),
        aws("region", regions=("us-east-1",)),
        aws("cluster", clusters=("other",)),
        aws("spot", life_cycles=("LIFECYCLE_SPOT",)),
        aws("off", enabled=False),
        aws("memory", target="TARGET_MEMORY"),
        aws("commitment", target="TARGET_COMMITMENT"),
        aws("fixed-instance", target="TARGET_INSTANCE", pricing_type="TYPE_FIXED", value="0.01"),
        aws("negative-fixed", pricing_type="TYPE_FIXED", value="-0.01"),
        aws("unknown-lifecycle", life_cycles=("LIFECYCLE_UNKNOWN",)),
    ]
    for discount in untouched:
        assert on_demand_cpu_rate([discount]) == pytest.approx(list_rate), discount.name
    surcharge = aws("surcharge", pricing_type="TYPE_FLAT", value="-1")
    assert on_demand_cpu_rate([surcharge]) == pytest.approx(list_rate + 1.0)
    instance = aws("instance", target="TARGET_INSTANCE", value="0.25")
    assert on_demand_cpu_rate([instance]) == pytest.approx(0.75 * list_rate)
    # lifeCycles lists alternatives: LIFECYCLE_UNKNOWN next to on-demand still matches on-demand.
    either = aws("either", life_cycles=("LIFECYCLE_UNKNOWN", "LIFECYCLE_ON_DEMAND"))
    assert on_demand_cpu_rate([either]) == pytest.approx(0.5 * list_rate)
    # Each step is clamped at 0: the flat 1.0 makes the price 0, then the surcharge of 0.001 applies.
    steps = [
        aws("flat", pricing_type="TYPE_FLAT", value="1"),
        aws("plus", pricing_type="TYPE_FLAT", value="-0.001"),
    ]
    assert on_demand_cpu_rate(steps) == pytest.approx(np.full(hours.size, 0.001), rel=1e-12)
    # A startDate inside an hour: that hour pays the discount for the part of it after the start.
    half = aws("half", start_date="2026-03-01T06:30:00Z", end_date="2026-03-01T08:15:00Z")
    weight = np.select([hours == first + 6, hours == first + 7, hours == first + 8], [0.5, 1.0, 0.25], 0.0)
    assert on_demand_cpu_rate([half]) == pytest.approx((1 - 0.5 * weight) * list_rate, rel=1e-12)
    # The API lists every scope field as given.
    api_form = replace(morning, families=("m5",), zones=("a",), os=("linux",), instance_types=("t",)).to_api()
    assert (api_form["families"], api_form["zones"], api_form["os"], api_form["instanceTypes"]) == (
        ["m5"], ["a"], ["linux"], ["t"],
    )  # fmt: skip
    assert (api_form["startDate"], api_form["endDate"]) == ("2026-03-01T06:00:00Z", "2026-03-01T09:00:00Z")


def test_rates_vary_by_hour_and_by_day(api: httpx.Client, org: SandboxOrg) -> None:
    items = {key(i): i for i in fetch_items(api, org.clusters[0].id, 3600)}
    api_hours = [paid(b) for b in items[("payments", "Deployment", "payments-api")]["costMetrics"]]
    assert len(set(api_hours)) > 20
    daily = {key(i): i for i in fetch_items(api, org.clusters[0].id, 86400)}
    day1, day2 = (paid(b) for b in daily[("payments", "Deployment", "payments-api")]["costMetrics"])
    assert day1 != day2


def test_special_workloads(api: httpx.Client, org: SandboxOrg) -> None:
    items = [i for c in org.clusters for i in fetch_items(api, c.id, 3600)]

    def values(item: dict[str, Any], field: str) -> list[float]:
        return [float(b[field]) for b in item["costMetrics"]]

    def costs(item: dict[str, Any]) -> list[float]:
        return [v for t in TIERS for v in values(item, f"cost{t}")] + values(item, "storageCost")

    def uptime(item: dict[str, Any]) -> float:
        return sum(v for t in TIERS for v in values(item, f"uptimeMinutes{t}"))

    gpu = [i for i in items if any(v > 0 for t in TIERS for v in values(i, f"gpuCount{t}"))]
    assert len(gpu) == 1 and any(v > 0 for v in values(gpu[0], "gpuCostOnDemand"))
    storage_only = [
        i for i in items
        if uptime(i) == 0 and all(v == 0 for t in TIERS for v in values(i, f"cost{t}"))
        and all(v > 0 for v in values(i, "storageCost"))
    ]  # fmt: skip
    assert len(storage_only) == 1
    free = [i for i in items if uptime(i) > 0 and all(v == 0 for v in costs(i))]
    assert len(free) == 1
    part_time = [i for i in items if 0 in values(i, "costSpot") and any(v > 0 for v in values(i, "costSpot"))]
    assert part_time, "some workloads run only part of the day"
    on_demand_only = [
        i for i in items if uptime(i) > 0 and sum(values(i, "costSpot") + values(i, "costSpotFallback")) == 0
    ]
    with_fallback = [i for i in items if sum(values(i, "costSpotFallback")) > 0]
    assert on_demand_only and with_fallback


# ----------------------------------------------------------------------------------------------
# Paging, labels, filters


def test_pagination_returns_every_workload_exactly_once(api: httpx.Client, org: SandboxOrg) -> None:
    cluster_id = org.clusters[2].id
    everything = [key(i) for i in fetch_items(api, cluster_id, 86400)]
    seen: list[tuple[str, str, str]] = []
    cursor, pages = "", 0
    while True:
        params = window(step=86400, **{"page.limit": "4"}, **({"page.cursor": cursor} if cursor else {}))
        body = api.get(workloads_url(cluster_id), params=params).json()
        assert body["count"] == str(len(everything))
        seen += [key(i) for i in body["items"]]
        pages += 1
        cursor = body["nextCursor"]
        if not cursor:
            break
    assert seen == everything and len(set(seen)) == len(seen)
    assert pages == -(-len(everything) // 4)


def test_paged_enrichment_endpoints_return_everything(api: httpx.Client, org: SandboxOrg) -> None:
    def collect(path: str, items_key: str, cursor_key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = ""
        while True:
            body = api.get(
                path, params={"page.limit": "2", **({"page.cursor": cursor} if cursor else {})}
            ).json()
            assert set(body) == {items_key, cursor_key}
            items += body[items_key]
            cursor = body[cursor_key]
            if not cursor:
                return items

    prices = collect(
        f"/pricing/v1/organizations/{org.organization_id}/clusters/prices", "items", "nextPageCursor"
    )
    assert [p["clusterId"] for p in prices] == [c.id for c in org.priced_clusters()]
    assert {p["default"] for p in prices} == {True, False}
    default_pricing = api.get(
        f"/pricing/v1beta/organizations/{org.organization_id}/anywhere-cluster-default-pricing"
    ).json()
    assert set(default_pricing) == {"cpuHourlyPrice", "memoryGibHourlyPrice"}
    for price in prices:
        assert {"id", "organizationId", "clusterId", "cpuHourlyPrice", "memoryGibHourlyPrice", "createTime",
                "updateTime", "default"} == set(price)  # fmt: skip
        if price["default"]:
            assert price["cpuHourlyPrice"] == default_pricing["cpuHourlyPrice"]
            assert price["memoryGibHourlyPrice"] == default_pricing["memoryGibHourlyPrice"]
    discounts = collect("/v1/discounts", "discounts", "nextPageToken")
    assert len(discounts) == len(org.discounts) >= 5
    assert {d["enabled"] for d in discounts} == {True, False}
    assert {"TYPE_PERCENTAGE", "TYPE_FIXED"} <= {d["pricing"][0]["type"] for d in discounts}
    assert any(d["clusters"] for d in discounts) and any(d["lifeCycles"] for d in discounts)
    assert all({"csp", "enabled", "pricing", "target"} <= set(d) for d in discounts)


def test_labels_to_include_selects_label_keys(
    api: httpx.Client, org: SandboxOrg, server: SandboxServer
) -> None:
    cluster = org.clusters[0]
    wanted = ["team", "app.kubernetes.io/name"]
    response = api.get(workloads_url(cluster.id), params=window(step=86400, labelsToInclude=wanted))
    assert "données-équipe".encode() in response.content  # raw UTF-8, like Go's protojson
    for item in response.json()["items"]:
        labels = cluster.workloads.labels[cluster.workloads.row(*key(item))]
        expected = [{"name": k, "value": labels[k]} for k in wanted if k in labels]
        assert item["labels"] == expected
    assert server.requests[-1].query["labelsToInclude"] == wanted


LABEL_NAMES = "/v1/cost-reports/workload-labels/names"


def test_workload_label_names_list_every_label_key_of_the_selected_clusters(
    api: httpx.Client, org: SandboxOrg
) -> None:
    """`WorkloadReportAPI_GetWorkloadLabelNames`: how a client learns which labels to ask for."""
    params = {"startTime": START, "endTime": END}

    def names(body: dict[str, Any], limit: int = 2) -> list[str]:
        collected: list[str] = []
        cursor = ""
        while True:
            page = api.post(
                LABEL_NAMES, params={**params, "page.limit": limit, "page.cursor": cursor}, json=body
            )
            assert page.status_code == 200, page.text
            collected += page.json()["labelNames"]
            cursor = page.json()["nextCursor"]
            if not cursor:
                return collected

    every = sorted({k for c in org.clusters for labels in c.workloads.labels for k in labels})
    assert names({}) == every and len(every) > 2  # paged: more names than one page holds
    first = org.clusters[0]
    assert names({"clusterIds": [first.id]}) == sorted(
        {k for labels in first.workloads.labels for k in labels}
    )
    assert api.post(LABEL_NAMES, params={"endTime": END}, json={}).status_code == 400
    assert api.get(LABEL_NAMES, params=params).status_code == 405


def test_filters_select_workloads(api: httpx.Client, org: SandboxOrg) -> None:
    cluster_id = org.clusters[0].id
    everything = fetch_items(api, cluster_id, 86400)
    namespaces = ["payments", "checkout"]
    by_query = fetch_items(api, cluster_id, 86400, **{"filter.namespaces": namespaces})
    assert by_query == [i for i in everything if i["namespace"] in namespaces] and by_query
    post = api.post(workloads_url(cluster_id), params=window(step=86400), json={"namespaces": namespaces})
    assert post.status_code == 200 and post.json()["items"] == by_query
    stateful = fetch_items(api, cluster_id, 86400, **{"filter.workloadTypes": "StatefulSet"})
    assert stateful and {i["workloadType"] for i in stateful} == {"StatefulSet"}
    by_label = api.post(
        workloads_url(cluster_id), params=window(step=86400, labelsToInclude="team"),
        json={"labels": [{"label": "team", "value": "web"}], "labelsOperator": "OR"},
    ).json()["items"]  # fmt: skip
    assert by_label and all(i["labels"] == [{"name": "team", "value": "web"}] for i in by_label)
    bad = api.post(workloads_url(cluster_id), params=window(), content=b"{not json")
    assert bad.status_code == 400 and bad.json()["fieldViolations"][0]["field"] == "body"


# ----------------------------------------------------------------------------------------------
# Cluster cost


def test_cluster_cost_covers_its_workloads(api: httpx.Client, org: SandboxOrg) -> None:
    for cluster in org.clusters:
        body = api.get(
            f"/v1/cost-reports/clusters/{cluster.id}/cost", params=window(includeIdleResourceCosts="true")
        )
        report = body.json()
        assert set(report) == {"clusterId", "items", "summary"} and report["clusterId"] == cluster.id
        items = fetch_items(api, cluster.id, 3600)
        assert len(report["items"]) == 48
        for position, bucket in enumerate(report["items"]):
            assert set(bucket) == CLUSTER_ITEM_KEYS
            assert all(DECIMAL_STRING.match(v) for k, v in bucket.items() if k != "timestamp")
            for name in ("storageCost", "storageGib", *(f"{m}{t}" for m in ("cpuCount", "ramGib", "gpuCount",
                         *COMPONENTS) for t in TIERS)):  # fmt: skip
                workloads = sum(float(i["costMetrics"][position][name]) for i in items)
                assert float(bucket[name]) >= workloads - 1e-6 * len(items), (cluster.name, name)
            for tier in TIERS:
                assert Decimal(bucket[f"totalCpuCost{tier}"]) == Decimal(bucket[f"cpuCost{tier}"])
        summary = {k: Decimal(v) for k, v in report["summary"].items()}
        parts = ("totalCpuCost", "totalRamCost", "totalGpuCost", "totalTpuCost", "totalStorageCost")
        assert summary["totalCost"] == sum(summary[p] for p in parts)
        workload_total = sum(total(i, 1) for i in items)
        assert float(summary["totalCost"]) > workload_total * 1.05  # idle capacity (10-30 %)


# ----------------------------------------------------------------------------------------------
# Billing


def test_billing_reports_use_json_numbers(api: httpx.Client, org: SandboxOrg) -> None:
    platform = api.get("/v1/billing/platform-usage-report").json()
    assert set(platform) == {"subscriptions", "features"}
    assert all({"provider", "startDate", "endDate"} <= set(s) for s in platform["subscriptions"])
    for feature in platform["features"]:
        assert {"feature", "displayName", "usage", "unit"} <= set(feature)
        assert isinstance(feature["usage"], float) and feature["usage"] > 0
        assert all(isinstance(feature["credits"][k], float) for k in ("total", "used", "remaining"))
    enterprise = api.get("/v1/billing/enterprise/usage-report").json()
    assert enterprise["enterpriseId"] == org.enterprise_id
    owners = {c["organizationId"] for c in api.get("/v1/kubernetes/external-clusters").json()["items"]}
    assert {o["organizationId"] for o in enterprise["organizations"]} == owners
    assert all(o["organizationName"] and o["features"] for o in enterprise["organizations"])
    child = org.child_organizations[0].id
    as_child = api.get("/v1/billing/enterprise/usage-report", headers={"X-CastAI-Organization-Id": child})
    assert as_child.status_code == 404 and set(as_child.json()) == ERROR_KEYS


def test_child_organisation_listing_is_paged_with_next_page_cursor(
    api: httpx.Client, org: SandboxOrg
) -> None:
    path = f"/organization-management/v1/enterprises/{org.enterprise_id}/organizations"
    first = api.get(path, params={"page.limit": "1"}).json()
    assert set(first) == {"items", "nextPageCursor"} and first["nextPageCursor"]
    second = api.get(path, params={"page.limit": "1", "page.cursor": first["nextPageCursor"]}).json()
    listed = first["items"] + second["items"]
    assert [(o["id"], o["name"]) for o in listed] == [(c.id, c.name) for c in org.child_organizations]
    assert all(o["parentId"] == org.enterprise_id for o in listed) and second["nextPageCursor"] == ""
    other = api.get(f"/organization-management/v1/enterprises/{org.organization_id}/organizations")
    assert other.status_code == 404 and set(other.json()) == ERROR_KEYS


def test_answers_the_definition_allows_are_served_on_demand(server: SandboxServer, org: SandboxOrg) -> None:
    cluster = org.clusters[0].id
    path = f"/v1/cost-reports/clusters/{cluster}/workload-costs"
    hourly = {"startTime": "2026-11-01T00:00:00Z", "endTime": "2026-11-02T00:00:00Z", "stepSeconds": "3600"}
    try:
        server.faults = Faults(no_data={cluster: None})
        with client_for(server) as api:
            empty = api.get(path, params=hourly).json()
            assert empty["items"] == [] and "noDataReason" not in empty
            server.faults = Faults(no_data={cluster: "AgentOutdated"})
            assert api.get(path, params=hourly).json()["noDataReason"] == "AgentOutdated"
            server.faults = Faults(answer_step_seconds={cluster: 86400})
            daily = api.get(path, params=hourly).json()["items"]
            assert {b["timestamp"] for i in daily for b in i["costMetrics"]} == {"2026-11-02T00:00:00Z"}
            server.faults = Faults(omit_identity={cluster: ("workloadType", "namespace")})
            nameless = api.get(path, params=hourly).json()["items"]
            assert nameless and all(
                "workloadName" in i and not {"workloadType", "namespace"} & set(i) for i in nameless
            )
            server.faults = Faults()
            default = api.get(path, params=hourly).json()
            assert default["noDataReason"] == "Unknown" and default["items"]
            assert all({"workloadName", "workloadType", "namespace"} <= set(i) for i in default["items"])
            assert len(default["items"][0]["costMetrics"]) == 24
    finally:
        server.faults = Faults()


def test_cost_scale_multiplies_every_cost_and_keeps_the_answer_consistent(
    server: SandboxServer, org: SandboxOrg
) -> None:
    cluster = org.clusters[0].id
    base = f"/v1/cost-reports/clusters/{cluster}"
    hourly = {"startTime": "2026-11-01T00:00:00Z", "endTime": "2026-11-02T00:00:00Z", "stepSeconds": "3600"}
    micro = Decimal("0.000001")

    def answers() -> tuple[dict[str, Any], dict[str, Any]]:
        with client_for(server) as api:
            workloads = api.get(f"{base}/workload-costs", params={**hourly, "limit": "1000"}).json()
            return workloads, api.get(f"{base}/cost", params=hourly).json()

    def is_cost(name: str) -> bool:
        return "Cost" in name or name.startswith("cost")

    try:
        plain_workloads, plain_cluster = answers()
        server.faults = Faults(cost_scale={cluster: 0.5})
        half_workloads, half_cluster = answers()
        assert server.faults.injected["answer"] == 2
    finally:
        server.faults = Faults()
    pairs = [
        (a, b)
        for x, y in zip(plain_workloads["items"], half_workloads["items"], strict=True)
        for a, b in [(x["summary"], y["summary"]), *zip(x["costMetrics"], y["costMetrics"], strict=True)]
    ] + list(zip(plain_cluster["items"], half_cluster["items"], strict=True))
    scaled = 0
    for plain, half in pairs:
        assert plain.keys() == half.keys()
        for name, value in plain.items():
            if name == "timestamp":
                assert half[name] == value
            elif is_cost(name):
                # Each bucket value is rounded to the micro-dollar; a summary adds up to 24 x 2 roundings.
                assert abs(Decimal(half[name]) - Decimal(value) / 2) <= 50 * micro, (name, value, half[name])
                scaled += Decimal(value) > 0
            else:
                assert half[name] == value, name  # counts, GiB, uptime untouched
    assert scaled > 100
    for item in half_workloads["items"]:
        for bucket in item["costMetrics"]:
            for tier in TIERS:  # cost{Tier} = Σ of its resource costs, exactly on the strings served
                parts = sum(Decimal(bucket[f"{c}Cost{tier}"]) for c in ("cpu", "ram", "gpu", "tpu"))
                assert Decimal(bucket[f"cost{tier}"]) == parts


# ----------------------------------------------------------------------------------------------
# Auth, organisation scoping, errors, recording


def test_auth_requires_the_api_key(server: SandboxServer, org: SandboxOrg) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as anonymous:
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
            response = anonymous.get("/v1/discounts", headers=headers)
            assert response.status_code == 401
            assert response.json() == {"message": "Unauthorized", "fieldViolations": []}
        assert (
            anonymous.get("/v1/discounts", headers={"Authorization": f"Bearer {org.api_key}"}).status_code
            == 200
        )
        assert anonymous.get("/healthz").status_code == 200


def test_organization_header_scopes_or_fails(api: httpx.Client, org: SandboxOrg) -> None:
    unknown = api.get("/v1/kubernetes/external-clusters", headers={"X-CastAI-Organization-Id": "not-an-org"})
    assert unknown.status_code == 500
    assert unknown.json() == {"message": "Internal Server Error", "fieldViolations": []}
    child = org.child_organizations[0].id
    scoped = api.get("/v1/kubernetes/external-clusters", headers={"X-CastAI-Organization-Id": child}).json()
    assert 0 < len(scoped["items"]) < len(org.clusters)
    assert {c["organizationId"] for c in scoped["items"]} == {child}
    foreign = next(c for c in org.clusters if c.organization_id != child)
    hidden = api.get(workloads_url(foreign.id), params=window(), headers={"X-CastAI-Organization-Id": child})
    assert hidden.status_code == 404


def test_bad_requests_get_error_envelopes(api: httpx.Client, org: SandboxOrg) -> None:
    cluster_id = org.clusters[0].id
    missing = api.get(workloads_url(cluster_id), params={"endTime": END})
    assert missing.status_code == 400 and missing.headers["content-type"] == "application/json"
    assert [v["field"] for v in missing.json()["fieldViolations"]] == ["startTime"]
    bad_step = api.get(f"/v1/cost-reports/clusters/{cluster_id}/cost", params=window(step=1800))
    assert bad_step.status_code == 400 and bad_step.json()["fieldViolations"][0]["field"] == "stepSeconds"
    bad_cursor = api.get(workloads_url(cluster_id), params=window(**{"page.cursor": "garbage"}))
    assert bad_cursor.status_code == 400
    unknown = api.get(workloads_url("no-such-cluster"), params=window())
    assert unknown.status_code == 404 and "no-such-cluster" in unknown.json()["message"]
    assert api.get("/v1/nothing-here").status_code == 404
    assert api.delete("/v1/discounts").status_code == 405
    unknown_org = api.get("/pricing/v1/organizations/nobody/clusters/prices")
    assert unknown_org.status_code == 404 and set(unknown_org.json()) == ERROR_KEYS


def test_requests_are_recorded_with_the_key_redacted(server: SandboxServer, org: SandboxOrg) -> None:
    with client_for(server) as client:
        client.post(workloads_url(org.clusters[0].id), params=window(), json={"namespaces": ["payments"]})
    recorded = server.requests[-1]
    assert recorded.method == "POST" and recorded.path == workloads_url(org.clusters[0].id)
    assert recorded.query["startTime"] == [START] and recorded.json == {"namespaces": ["payments"]}
    assert recorded.headers["x-api-key"] == "REDACTED"
    assert org.api_key not in repr(server.requests) and org.api_key not in repr(org)


# ----------------------------------------------------------------------------------------------
# Faults


@pytest.fixture
def faulty(org: SandboxOrg) -> Iterator[SandboxServer]:
    with SandboxServer(org, faults=Faults()) as running:
        yield running


def test_fault_429_with_retry_after_and_switchable(faulty: SandboxServer) -> None:
    with client_for(faulty) as client:
        assert client.get("/v1/discounts").status_code == 200
        faulty.faults.rate_429, faulty.faults.retry_after_seconds = 1.0, 1
        limited = client.get("/v1/discounts")
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        assert set(limited.json()) == ERROR_KEYS
        assert client.get("/healthz").status_code == 200  # faults apply to API paths only
        faulty.faults.rate_429 = 0.0
        assert client.get("/v1/discounts").status_code == 200


def test_fault_5xx_round_robin(faulty: SandboxServer) -> None:
    faulty.faults.rate_5xx = 1.0
    with client_for(faulty) as client:
        statuses = [client.get("/v1/discounts").status_code for _ in range(4)]
    assert statuses == [502, 503, 504, 502]


def test_fault_slow_and_timeout(faulty: SandboxServer) -> None:
    faulty.faults.rate_slow, faulty.faults.slow_seconds = 1.0, 0.3
    with client_for(faulty) as client:
        began = time.monotonic()
        assert client.get("/v1/discounts").status_code == 200
        assert time.monotonic() - began >= 0.3
    faulty.faults.rate_slow = 0.0
    faulty.faults.timeout_paths, faulty.faults.timeout_seconds = "/discounts$", 30.0
    with client_for(faulty, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get("/v1/discounts")
        assert client.get("/v1/billing/platform-usage-report").status_code == 200


def test_fault_corrupt_bodies_and_permanent_failures(faulty: SandboxServer, org: SandboxOrg) -> None:
    cluster_id = org.clusters[1].id
    faulty.faults.malformed_json_paths = "external-clusters"
    faulty.faults.html_error_paths = "platform-usage"
    faulty.faults.fail_paths = {"/v1/billing/enterprise": 404, f"{cluster_id}/workload-costs": 500}
    with client_for(faulty) as client:
        malformed = client.get("/v1/kubernetes/external-clusters")
        assert malformed.status_code == 200
        with pytest.raises(ValueError):
            json.loads(malformed.content)
        html = client.get("/v1/billing/platform-usage-report")
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert html.text.startswith("<!DOCTYPE html>")
        assert client.get("/v1/billing/enterprise/usage-report").status_code == 404
        assert client.get(workloads_url(cluster_id), params=window()).status_code == 500
        assert client.get(workloads_url(org.clusters[0].id), params=window()).status_code == 200


def test_fault_cursor_loop_and_duplicates(faulty: SandboxServer, org: SandboxOrg) -> None:
    cluster_id = org.clusters[0].id
    with client_for(faulty) as client:

        def page(cursor: str = "") -> dict[str, Any]:
            params = window(step=86400, **{"page.limit": "5"}, **({"page.cursor": cursor} if cursor else {}))
            return dict(client.get(workloads_url(cluster_id), params=params).json())

        faulty.faults.duplicate_workloads = True
        first = page()
        second = page(first["nextCursor"])
        assert second["items"][0] == first["items"][-1] and len(second["items"]) == 6
        faulty.faults.duplicate_workloads = False
        faulty.faults.cursor_loop = True
        looped = page(page()["nextCursor"])
        assert looped["nextCursor"] == first["nextCursor"] != ""
        last = client.get(workloads_url(cluster_id), params=window(**{"page.limit": "1000"})).json()
        assert last["nextCursor"] != ""


def test_random_faults_are_reproducible(org: SandboxOrg) -> None:
    def statuses() -> list[int]:
        with (
            SandboxServer(org, faults=Faults(rate_429=0.5, seed=3)) as running,
            client_for(running) as client,
        ):
            return [client.get("/v1/discounts").status_code for _ in range(20)]

    first = statuses()
    assert first == statuses() and {200, 429} == set(first)


# ----------------------------------------------------------------------------------------------
# Size, determinism, prerender, CLI


def test_size_knob_scales_the_organisation() -> None:
    big = SandboxOrg.generate(seed=7, clusters=12, workloads_per_cluster=40)
    assert len(big.clusters) == 12 and len({c.id for c in big.clusters}) == 12
    assert len({c.name for c in big.clusters}) == 12
    sizes = [len(big.workload_keys(c.id)) for c in big.clusters]
    assert min(sizes) >= 40 and sum(sizes) == 12 * 40 + 3  # plus the three special workloads
    assert all(len(set(big.workload_keys(c.id))) == size for c, size in zip(big.clusters, sizes, strict=True))


def test_same_seed_gives_byte_identical_responses(org: SandboxOrg, server: SandboxServer) -> None:
    paths = [
        ("/v1/kubernetes/external-clusters", {}),
        (workloads_url(org.clusters[0].id), window(labelsToInclude="team")),
        (f"/v1/cost-reports/clusters/{org.clusters[0].id}/cost", window()),
        (f"/pricing/v1/organizations/{org.organization_id}/clusters/prices", {}),
        ("/v1/discounts", {}),
        ("/v1/billing/platform-usage-report", {}),
        ("/v1/billing/enterprise/usage-report", {}),
    ]
    twin = SandboxOrg.generate(seed=7)
    with SandboxServer(twin) as other, client_for(server) as a, client_for(other) as b:
        for path, params in paths:
            assert a.get(path, params=params).content == b.get(path, params=params).content, path
    different = SandboxOrg.generate(seed=8)
    assert [c.id for c in different.clusters] != [c.id for c in org.clusters]


def test_prerendered_windows_answer_identically(org: SandboxOrg, server: SandboxServer) -> None:
    with SandboxServer(org) as prerendered:
        assert prerendered.prerender(START, END, 3600) == len(org.clusters)
        with client_for(server) as plain, client_for(prerendered) as cached:
            for cluster in org.clusters:
                params = window(**{"page.limit": "7"})
                expected = plain.get(workloads_url(cluster.id), params=params).content
                assert cached.get(workloads_url(cluster.id), params=params).content == expected


def test_cli_serves_until_sigterm() -> None:
    command = [sys.executable, "-m", "castai_focus_dagster.castai.sandbox", "--port", "0",
               "--clusters", "2", "--workloads-per-cluster", "3",
               "--prerender-start", START, "--prerender-end", END]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert re.fullmatch(r"SANDBOX_URL=http://127\.0\.0\.1:\d+", line), line
        url = line.split("=", 1)[1]
        clusters = httpx.get(
            f"{url}/v1/kubernetes/external-clusters", headers={"X-API-Key": "sandbox-api-key"}
        )
        assert len(clusters.json()["items"]) == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None and process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_ground_truth_rejects_times_off_the_hour(org: SandboxOrg) -> None:
    cluster = org.clusters[0]
    with pytest.raises(ValueError, match="whole hour"):
        org.expected_cluster_total(cluster.id, datetime(2026, 3, 1, 0, 30, tzinfo=UTC), END)
    with pytest.raises(KeyError):
        org.expected_workload_total(cluster.id, "nowhere", "Deployment", "ghost", START, END)
