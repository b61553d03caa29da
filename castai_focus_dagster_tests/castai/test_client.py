"""Cast AI client against the sandbox over real HTTP on 127.0.0.1 (and MockTransport for bad payloads).

Expected numbers come from the sandbox's own ground truth (`SandboxOrg.expected_*`, its cluster and
discount catalogue), never from the JSON the client parses.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import socketserver
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pyarrow as pa
import pytest

from castai_focus_dagster.castai.client import CastAIClient
from castai_focus_dagster.castai.errors import CastAIError
from castai_focus_dagster.castai.models import METRIC_COLUMNS, WORKLOAD_COSTS_SCHEMA
from castai_focus_dagster.castai.sandbox import CannedResponse, Faults, SandboxOrg, SandboxServer
from castai_focus_dagster.castai.sandbox.metrics import LIST_PRICES
from castai_focus_dagster.castai.transport import ApiKeyAuth
from castai_focus_dagster.castai.wire import COST_REPORT_COLUMNS, WorkloadCostItem
from castai_focus_dagster.settings import load_settings

START = datetime(2026, 9, 1, tzinfo=UTC)
END = START + timedelta(days=1)
STEP = 3600
WORKLOAD_COSTS_PATH = "/v1/cost-reports/clusters/{}/workload-costs"
Key = tuple[str, str, str]


def make_client(server: SandboxServer, org: SandboxOrg, **overrides: Any) -> CastAIClient:
    options: dict[str, Any] = {
        "organization_id": org.organization_id,
        "max_backoff_seconds": 0.01,
        "timeout_seconds": 5,
        "max_retries": 3,
        "rate_limit_rps": 1000,
    }
    options.update(overrides)
    return CastAIClient(server.url, org.api_key, **options)


def workload_totals(table: pa.Table) -> dict[Key, float]:
    """USD per workload: Σ (compute of every tier + storage) x bucket hours."""
    hours = table["step_seconds"].to_numpy() / 3600
    paid = sum(table[c].to_numpy() for c in ("costOnDemand", "costSpot", "costSpotFallback", "storageCost"))
    totals: dict[Key, float] = defaultdict(float)
    keys = zip(
        table["namespace"].to_pylist(),
        table["workload_type"].to_pylist(),
        table["workload_name"].to_pylist(),
        strict=True,
    )
    for key, value in zip(keys, paid * hours, strict=True):
        totals[key] += float(value)
    return totals


def requests_to(server: SandboxServer, path: str) -> list[Any]:
    return [r for r in server.requests if r.path == path]


def workload_costs_error(
    server: SandboxServer, org: SandboxOrg, cluster_id: str, **overrides: Any
) -> CastAIError:
    """The error the day's `workload_costs` of `cluster_id` ends in, under the sandbox's current faults."""
    with make_client(server, org, **overrides) as client, pytest.raises(CastAIError) as info:
        client.workload_costs(cluster_id, START, END, STEP)
    return info.value


@pytest.fixture
def cluster_id(sandbox_org: SandboxOrg) -> str:
    return sandbox_org.clusters[0].id


# ------------------------------------------------------------------------------------------------
# Endpoints parsed


def test_list_clusters_maps_every_field_and_filters(sandbox: SandboxServer, sandbox_org: SandboxOrg) -> None:
    with make_client(sandbox, sandbox_org) as client:
        clusters = client.list_clusters()
        ids = [c.id for c in sandbox_org.clusters]
        assert [c.id for c in clusters] == ids
        for got, truth in zip(clusters, sandbox_org.clusters, strict=True):
            assert (got.name, got.organization_id, got.provider_type, got.tags, got.status) == (
                truth.name,
                truth.organization_id,
                truth.provider_type,
                truth.tags,
                "ready",
            )
            assert (got.region_name, got.region_display_name) == (
                truth.region_name,
                truth.region_display_name,
            )
        assert any(c.region_name is None for c in clusters)  # the "anywhere" cluster has no region

        assert [c.id for c in client.list_clusters(include_ids=[ids[3], ids[1]])] == [ids[1], ids[3]]
        assert [c.id for c in client.list_clusters(exclude_ids=[ids[0]])] == ids[1:]


def test_workload_costs_match_the_sandbox_ground_truth(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, cluster_id: str
) -> None:
    with make_client(sandbox, sandbox_org, page_limit=7) as client:
        table = client.workload_costs(cluster_id, START, END, STEP, labels=["team"])
    assert table.schema.equals(WORKLOAD_COSTS_SCHEMA, check_metadata=True)
    keys = sandbox_org.workload_keys(cluster_id)
    pages = len(requests_to(sandbox, WORKLOAD_COSTS_PATH.format(cluster_id)))
    totals = workload_totals(table)
    assert pages > 2 and pages == math.ceil(len(totals) / 7)  # several pages, each workload once
    assert set(totals) <= set(keys)
    for key in keys:
        expected = sandbox_org.expected_workload_total(cluster_id, *key, START, END)
        assert totals.get(key, 0.0) == pytest.approx(expected, rel=1e-6, abs=1e-4), key

    rows = list(
        zip(
            table["namespace"].to_pylist(),
            table["workload_type"].to_pylist(),
            table["workload_name"].to_pylist(),
            table["timestamp"].to_pylist(),
            strict=True,
        )
    )
    assert len(rows) == len(set(rows))
    assert {r[3] for r in rows} == {START + timedelta(hours=h + 1) for h in range(24)}
    assert set(table["cluster_id"].to_pylist()) == {cluster_id}
    assert set(table["step_seconds"].to_pylist()) == {STEP}

    labels_of = dict(zip(keys, sandbox_org.cluster(cluster_id).workloads.labels, strict=True))
    for key, labels in zip(rows, table["labels"].to_pylist(), strict=True):
        team = labels_of[key[:3]].get("team")
        assert labels == (
            json.dumps({"team": team}, ensure_ascii=False, separators=(",", ":")) if team else None
        )


def test_workload_costs_many_is_bounded_and_in_input_order(
    sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    ids = [c.id for c in reversed(sandbox_org.clusters)]
    in_flight, peak, started, changed = 0, 0, 0, threading.Condition()
    with make_client(sandbox, sandbox_org, max_concurrency=2) as client:
        fetch = client.workload_costs

        def counting(*args: Any, **kwargs: Any) -> pa.Table:
            nonlocal in_flight, peak, started
            with changed:
                in_flight += 1
                started += 1
                peak = max(peak, in_flight)
                changed.notify_all()
                # The first two fetches wait for each other (a serial pool never starts the second:
                # peak stays 1), then give a third the chance to start beside them (an unbounded
                # pool takes it: peak 3). A slow machine can only hide a fault here, never invent one.
                if started <= 2:
                    changed.wait_for(lambda: started >= 2, timeout=30)
                    changed.wait_for(lambda: started >= 3, timeout=0.5)
            try:
                return fetch(*args, **kwargs)
            finally:
                with changed:
                    in_flight -= 1

        client.workload_costs = counting  # type: ignore[method-assign]
        results = list(client.workload_costs_many(ids, START, END, STEP))
    assert [cid for cid, _ in results] == ids
    assert peak == 2
    for cid, table in results:
        assert set(table["cluster_id"].to_pylist()) == {cid}
        assert sum(workload_totals(table).values()) == pytest.approx(
            sandbox_org.expected_cluster_total(cid, START, END), rel=1e-6
        )


def test_cluster_cost_report_columns_and_arithmetic(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, cluster_id: str
) -> None:
    with make_client(sandbox, sandbox_org) as client:
        report = client.cluster_cost_report(cluster_id, START, END, STEP)
    assert report.column_names == ["timestamp", *COST_REPORT_COLUMNS]
    assert report["timestamp"].to_pylist() == [START + timedelta(hours=h + 1) for h in range(24)]
    for tier in ("OnDemand", "Spot", "SpotFallback"):
        parts = sum(report[f"{r}Cost{tier}"].to_numpy() for r in ("cpu", "ram", "gpu", "tpu"))
        assert report[f"cost{tier}"].to_numpy() == pytest.approx(parts, abs=1e-5)
    paid = sum(report[c].to_numpy() for c in ("costOnDemand", "costSpot", "costSpotFallback", "storageCost"))
    # The cluster costs its workloads plus idle capacity (sandbox model), so at least the workloads' total.
    assert paid.sum() >= sandbox_org.expected_cluster_total(cluster_id, START, END)


def test_cluster_cost_report_at_listing_prices(sandbox: SandboxServer, sandbox_org: SandboxOrg) -> None:
    """useListingPrices=true: same usage, costs before discounts (the EKS cluster has a CPU discount)."""
    eks = sandbox_org.clusters[0]
    assert eks.provider_type == "eks" and eks.discounts
    with make_client(sandbox, sandbox_org) as client:
        billed = client.cluster_cost_report(eks.id, START, END, STEP)
        listed = client.cluster_cost_report(eks.id, START, END, STEP, use_listing_prices=True)
    sent = requests_to(sandbox, f"/v1/cost-reports/clusters/{eks.id}/cost")[-2:]
    assert [r.query.get("useListingPrices") for r in sent] == [None, ["true"]]
    assert listed["cpuCountOnDemand"].equals(billed["cpuCountOnDemand"])
    assert listed["storageCost"].equals(billed["storageCost"])  # storage is never discounted
    list_rate = listed["cpuCostOnDemand"].to_numpy() / listed["cpuCountOnDemand"].to_numpy()
    billed_rate = billed["cpuCostOnDemand"].to_numpy() / billed["cpuCountOnDemand"].to_numpy()
    # The model's own list price, and its 15 % on-demand CPU discount (not read from the answers).
    assert list_rate == pytest.approx(LIST_PRICES["eks"][0], rel=1e-4)
    assert billed_rate == pytest.approx(LIST_PRICES["eks"][0] * 0.85, rel=1e-4)


def test_pricing_discounts_and_billing_endpoints(sandbox: SandboxServer, sandbox_org: SandboxOrg) -> None:
    with make_client(sandbox, sandbox_org, page_limit=2) as client:
        prices = client.cluster_prices()
        default = client.default_pricing()
        discounts = client.discounts()
        children = client.child_organizations(sandbox_org.enterprise_id)
        usage = client.platform_usage()
    assert {
        cid: (p.cpu_hourly_price, p.memory_gib_hourly_price, p.is_default) for cid, p in prices.items()
    } == {
        c.id: (round(c.cpu_hourly_price, 6), round(c.memory_gib_hourly_price, 6), c.price_is_default)
        for c in sandbox_org.priced_clusters()
    }
    assert default is not None
    assert (default.cpu_hourly_price, default.memory_gib_hourly_price) == (
        sandbox_org.default_cpu_hourly_price,
        sandbox_org.default_memory_gib_hourly_price,
    )
    scope = ("clusters", "life_cycles", "regions", "families", "instance_types", "zones", "os")

    def described(d: Any, value: float) -> tuple[Any, ...]:
        return (
            d.id,
            d.name,
            d.csp,
            d.enabled,
            d.target,
            d.pricing_type,
            value,
            *(getattr(d, f) for f in scope),
        )

    assert [described(d, d.value) for d in discounts] == [
        described(d, float(d.value)) for d in sandbox_org.discounts
    ]
    assert [(d.start_date, d.end_date) for d in discounts] == [
        (datetime.fromisoformat(str(d.start_date)), datetime.fromisoformat(str(d.end_date)))
        for d in sandbox_org.discounts
    ]
    assert any(d.value < 0 for d in discounts), "a negative flat value is valid and kept"
    assert {k: v.name for k, v in children.items()} == {c.id: c.name for c in sandbox_org.child_organizations}
    assert [f.feature for f in usage] == ["phase2", "woop"] and all(f.usage > 0 and f.unit for f in usage)
    # Paged endpoints followed their own cursor names across pages.
    discount_pages = requests_to(sandbox, "/v1/discounts")
    assert len(discount_pages) == math.ceil(len(sandbox_org.discounts) / 2)
    assert all(r.query.get("page.cursor") for r in discount_pages[1:])
    enterprise = requests_to(
        sandbox, f"/organization-management/v1/enterprises/{sandbox_org.enterprise_id}/organizations"
    )
    assert len(enterprise) == math.ceil(len(sandbox_org.child_organizations) / 2)


# ------------------------------------------------------------------------------------------------
# Query parameters


def test_sends_exactly_the_documented_query_parameters(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, cluster_id: str
) -> None:
    namespaces = sorted({k[0] for k in sandbox_org.workload_keys(cluster_id)})[:2]
    with make_client(sandbox, sandbox_org, page_limit=1) as client:
        filtered = client.workload_costs(
            cluster_id, START, END, STEP, labels=("team", "app"), include_namespaces=namespaces
        )
        sent_filtered = list(requests_to(sandbox, WORKLOAD_COSTS_PATH.format(cluster_id)))
        sandbox.requests.clear()
        client.workload_costs(cluster_id, START, END, STEP, exclude_namespaces=namespaces)
        sent_plain = list(requests_to(sandbox, WORKLOAD_COSTS_PATH.format(cluster_id)))

    window = {
        "startTime": ["2026-09-01T00:00:00Z"],
        "endTime": ["2026-09-02T00:00:00Z"],
        "stepSeconds": ["3600"],
    }
    assert len(sent_filtered) >= 2 and len(sent_plain) >= 2
    assert sent_filtered[0].query == {
        **window,
        "page.limit": ["1"],
        "labelsToInclude": ["team", "app"],
        "filter.namespaces": namespaces,
    }
    for later in sent_filtered[1:]:
        assert set(later.query) == {
            *window,
            "page.limit",
            "page.cursor",
            "labelsToInclude",
            "filter.namespaces",
        }
    assert sent_plain[0].query == {**window, "page.limit": ["1"]}
    assert all(set(r.query) == {*window, "page.limit", "page.cursor"} for r in sent_plain[1:])
    assert all(
        r.method == "GET" and r.headers["accept"] == "application/json" and "x-api-key" in r.headers
        for r in sent_filtered + sent_plain
    )
    assert set(filtered["namespace"].to_pylist()) == set(namespaces)


def test_namespace_filters_are_applied_client_side_too(sandbox_org: SandboxOrg, cluster_id: str) -> None:
    """A server that ignores `filter.namespaces` still yields only the wanted namespaces."""
    keys = sandbox_org.workload_keys(cluster_id)
    namespaces = sorted({k[0] for k in keys})
    body = {"items": [_item(ns, "Deployment", f"w-{ns}") for ns in namespaces], "nextCursor": ""}
    client = _mock_client(lambda request: httpx.Response(200, json=body))
    include = client.workload_costs("c", START, END, STEP, include_namespaces=namespaces[:1])
    exclude = client.workload_costs("c", START, END, STEP, exclude_namespaces=namespaces[:1])
    assert set(include["namespace"].to_pylist()) == set(namespaces[:1])
    assert set(exclude["namespace"].to_pylist()) == set(namespaces[1:])


# ------------------------------------------------------------------------------------------------
# Retries, rate limit, timeouts


def test_retries_through_429_and_5xx_give_the_fault_free_result(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, cluster_id: str
) -> None:
    with make_client(sandbox, sandbox_org, page_limit=5) as client:
        clean = client.workload_costs(cluster_id, START, END, STEP, labels=["team"])
    clean_requests = len(sandbox.requests)
    sandbox.requests.clear()
    sandbox.faults = Faults(rate_429=0.3, rate_5xx=0.3, retry_after_seconds=0, seed=1)
    with make_client(sandbox, sandbox_org, page_limit=5, max_retries=10) as client:
        faulty = client.workload_costs(cluster_id, START, END, STEP, labels=["team"])
    assert len(sandbox.requests) > clean_requests  # faults were injected and retried
    assert faulty.equals(clean)


def test_retry_after_is_honoured(sandbox: SandboxServer, sandbox_org: SandboxOrg) -> None:
    sandbox.faults = Faults(rate_429=0.5, retry_after_seconds=1, seed=7)
    with make_client(sandbox, sandbox_org, max_backoff_seconds=5) as client:
        began = time.monotonic()
        clusters = client.list_clusters()
        elapsed = time.monotonic() - began
    throttled = len(sandbox.requests) - 1  # one request succeeded, the others were answered 429
    assert clusters and throttled >= 1
    assert elapsed >= 1.0 * throttled


def test_retry_after_is_capped_at_max_backoff() -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "3600"}, json={"message": "slow down"})
        return httpx.Response(200, json={"items": []})

    client = _mock_client(handler, max_backoff_seconds=0.2)
    assert client.list_clusters() == []
    assert 0.2 <= calls[1] - calls[0] < 2


def test_gives_up_after_max_retries_naming_endpoint_and_cluster(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, cluster_id: str
) -> None:
    path = WORKLOAD_COSTS_PATH.format(cluster_id)
    sandbox.faults = Faults(fail_paths={path: 503})
    error = workload_costs_error(sandbox, sandbox_org, cluster_id, max_retries=2)
    assert (error.endpoint, error.cluster_id, error.status) == ("workload-costs", cluster_id, 503)
    assert "gave up after 3 attempt(s)" in str(error)
    assert len(requests_to(sandbox, path)) == 3


def test_permanently_failing_cluster_fails_at_once_naming_it(
    sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    ids = [c.id for c in sandbox_org.clusters]
    broken = ids[2]
    sandbox.faults = Faults(fail_paths={WORKLOAD_COSTS_PATH.format(broken): 500})
    with make_client(sandbox, sandbox_org, max_concurrency=2) as client, pytest.raises(CastAIError) as info:
        for _ in client.workload_costs_many(ids, START, END, STEP):
            pass
    error = info.value
    assert (error.endpoint, error.cluster_id, error.status, error.reason) == (
        "workload-costs",
        broken,
        500,
        "HTTP 500",
    )
    assert broken in str(error) and "workload-costs" in str(error) and "Internal Server Error" in str(error)
    assert len(requests_to(sandbox, WORKLOAD_COSTS_PATH.format(broken))) == 1  # 500 is not retried


def test_request_timeout_is_retried_then_reported(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, cluster_id: str
) -> None:
    sandbox.faults = Faults(timeout_paths="/cost$", timeout_seconds=2)
    client = make_client(sandbox, sandbox_org, timeout_seconds=0.2, max_retries=1)
    with client, pytest.raises(CastAIError) as info:
        client.cluster_cost_report(cluster_id, START, END, STEP)
    assert (info.value.reason, info.value.endpoint, info.value.cluster_id) == (
        "timeout",
        "cluster-cost",
        cluster_id,
    )
    assert len(requests_to(sandbox, f"/v1/cost-reports/clusters/{cluster_id}/cost")) == 2


def test_rate_limit_is_shared_by_threads(sandbox: SandboxServer, sandbox_org: SandboxOrg) -> None:
    with make_client(sandbox, sandbox_org, rate_limit_rps=20) as client:
        began = time.monotonic()
        threads = [
            threading.Thread(target=lambda: [client.list_clusters() for _ in range(10)]) for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - began
    assert len(sandbox.requests) == 30
    assert elapsed >= (30 - 20) / 20 * 0.95  # 20 in the first burst, then 20 per second


# ------------------------------------------------------------------------------------------------
# Paging faults and bad payloads


def test_cursor_loop_is_detected(sandbox: SandboxServer, sandbox_org: SandboxOrg, cluster_id: str) -> None:
    sandbox.faults = Faults(cursor_loop=True)
    error = workload_costs_error(sandbox, sandbox_org, cluster_id, page_limit=5)
    assert (error.reason, error.cluster_id) == ("cursor loop", cluster_id)
    assert "cursor loop" in str(error)
    assert len(requests_to(sandbox, WORKLOAD_COSTS_PATH.format(cluster_id))) == 2


def test_hard_page_cap(sandbox: SandboxServer, sandbox_org: SandboxOrg, cluster_id: str) -> None:
    error = workload_costs_error(sandbox, sandbox_org, cluster_id, page_limit=1, max_pages=3)
    assert error.reason == "page cap" and cluster_id in str(error)
    assert len(requests_to(sandbox, WORKLOAD_COSTS_PATH.format(cluster_id))) == 3


def test_workloads_repeated_across_pages_are_kept_once(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, cluster_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    with make_client(sandbox, sandbox_org, page_limit=4) as client:
        clean = client.workload_costs(cluster_id, START, END, STEP)
        sandbox.requests.clear()
        sandbox.faults = Faults(duplicate_workloads=True)  # every later page repeats the previous last one
        with caplog.at_level(logging.WARNING):
            merged = client.workload_costs(cluster_id, START, END, STEP)
    pages = len(requests_to(sandbox, WORKLOAD_COSTS_PATH.format(cluster_id)))
    assert merged.equals(clean)
    assert pages > 2
    assert f"dropped {pages - 1} duplicate workload(s)" in caplog.text
    assert cluster_id in caplog.text


@pytest.mark.parametrize("fault", ["malformed_json_paths", "html_error_paths"])
def test_malformed_and_html_bodies_are_named(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, cluster_id: str, fault: str
) -> None:
    sandbox.faults = Faults(**{fault: "workload-costs"})
    error = workload_costs_error(sandbox, sandbox_org, cluster_id)
    assert (error.reason, error.endpoint, error.cluster_id) == ("invalid JSON", "workload-costs", cluster_id)
    assert "invalid JSON from workload-costs" in str(error) and cluster_id in str(error)


def _metrics(**overrides: Any) -> dict[str, Any]:
    """Every metric 0.1, except each tier's cost: the sum of its four resource costs, as Cast AI sends it."""
    tier_costs = {m: "0.400000" for m in METRIC_COLUMNS if m.startswith("cost")}
    return {
        "timestamp": "2026-09-01T01:00:00Z",
        **{m: "0.100000" for m in METRIC_COLUMNS},
        **tier_costs,
        **overrides,
    }


def _item(
    namespace: str,
    kind: str,
    name: str,
    metrics: list[dict[str, Any]] | None = None,
    labels: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    return {
        "workloadName": name,
        "workloadType": kind,
        "namespace": namespace,
        "costMetrics": metrics if metrics is not None else [_metrics()],
        "labels": labels or [],
    }


def _mock_client(handler: Callable[[httpx.Request], httpx.Response], **overrides: Any) -> CastAIClient:
    options: dict[str, Any] = {"organization_id": "org", "max_backoff_seconds": 0.01, "max_retries": 2}
    options.update(overrides)
    return CastAIClient(
        "http://127.0.0.1:9", "secret-key-123", transport=httpx.MockTransport(handler), **options
    )


@pytest.mark.parametrize(
    ("overrides", "field", "problem"),
    [
        ({"costSpot": "-0.5"}, "costSpot", "finite number >= 0"),
        ({"ramGibOnDemand": "NaN"}, "ramGibOnDemand", "finite number"),
        ({"storageCost": "Infinity"}, "storageCost", "finite number"),
        ({"cpuCostOnDemand": "12,5"}, "cpuCostOnDemand", "Expected `float`"),
        (
            {"timestamp": "2026-09-01T01:30:00Z"},
            "timestamp",
            "off the requested grid: answered 1800s buckets, requested stepSeconds=3600",
        ),
        ({"timestamp": "2026-09-01T00:00:00Z"}, "timestamp", "not in"),
        ({"timestamp": "2026-09-02T01:00:00Z"}, "timestamp", "not in"),
        ({"timestamp": "2026-09-01T01:00:00"}, "timestamp", "timezone"),
    ],
)
def test_invalid_metrics_name_cluster_endpoint_field_and_workload(
    overrides: dict[str, str], field: str, problem: str
) -> None:
    """One metric of workload ns/Deployment/api is bad (`overrides`); its neighbour is fine."""
    good = _item("ns", "Deployment", "fine")
    item = _item("ns", "Deployment", "api", [_metrics(**overrides)])
    client = _mock_client(lambda request: httpx.Response(200, json={"items": [good, item]}))
    with pytest.raises(CastAIError) as info:
        client.workload_costs("cluster-9", START, END, STEP)
    error = info.value
    assert (error.endpoint, error.cluster_id, error.field) == ("workload-costs", "cluster-9", field)
    assert problem in str(error) and "ns/Deployment/api" in str(error) and "cluster-9" in str(error)


def test_missing_metrics_are_zero_and_labels_are_canonical() -> None:
    sparse = {"timestamp": "2026-09-01T02:00:00Z", "costOnDemand": "0.412800", "cpuCostOnDemand": 0.4128}
    labels = [
        {"name": "team", "value": "a"},
        {"name": "app", "value": "données"},
        {"name": "team", "value": "b"},
    ]
    body = {"items": [_item("ns", "Deployment", "api", [sparse], labels), _item("ns", "Job", "batch")]}
    client = _mock_client(lambda request: httpx.Response(200, json=body))
    table = client.workload_costs("c", START, END, STEP)
    first = table.slice(0, 1).to_pylist()[0]
    assert first["costOnDemand"] == 0.4128 and first["cpuCostOnDemand"] == 0.4128
    assert all(first[m] == 0.0 for m in METRIC_COLUMNS if m not in ("costOnDemand", "cpuCostOnDemand"))
    # `team` listed as a and as b: which holds cannot be told, so it is left out (and warned about).
    assert table["labels"].to_pylist() == ['{"app":"données"}', None]


def test_every_metric_lands_in_its_own_column_and_offsets_become_utc() -> None:
    """Each field a distinct value, sent out of order: a column mix-up or a dropped offset cannot pass."""
    values = {name: f"{index + 1}.25" for index, name in enumerate(METRIC_COLUMNS)}
    for tier in ("OnDemand", "Spot", "SpotFallback"):  # tier cost = sum of its parts, as Cast AI sends it
        parts = ("cpuCost", "ramCost", "gpuCost", "tpuCost")
        values[f"cost{tier}"] = str(sum(float(values[f"{part}{tier}"]) for part in parts))
    shuffled = dict(reversed([("timestamp", "2026-09-01T05:00:00+02:00"), *values.items()]))
    body = {"items": [_item("ns", "Deployment", "api", [shuffled])]}
    client = _mock_client(lambda request: httpx.Response(200, json=body))
    row = client.workload_costs("c", START, END, STEP).to_pylist()[0]
    assert row["timestamp"] == datetime(2026, 9, 1, 3, tzinfo=UTC)
    assert {name: row[name] for name in METRIC_COLUMNS} == {name: float(v) for name, v in values.items()}


def test_metric_struct_field_order_matches_the_table_columns() -> None:
    assert WorkloadCostItem.__struct_encode_fields__ == ("timestamp", *METRIC_COLUMNS)


def test_error_response_message_is_reported_and_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(
            400,
            json={
                "message": "bad\nstep " + "x" * 1000,
                "fieldViolations": [{"field": "stepSeconds", "description": "odd"}],
            },
        )

    with pytest.raises(CastAIError) as info:
        _mock_client(handler).workload_costs("c", START, END, STEP)
    assert (info.value.status, info.value.field, len(calls)) == (400, "stepSeconds", 1)
    assert "bad step" in str(info.value) and "\n" not in str(info.value) and len(str(info.value)) < 400


def test_invalid_window_is_rejected_before_any_request() -> None:
    calls: list[httpx.Request] = []
    client = _mock_client(lambda request: calls.append(request) or httpx.Response(200, json={}))
    with pytest.raises(ValueError, match="timezone-aware"):
        client.workload_costs("c", START.replace(tzinfo=None), END, STEP)
    with pytest.raises(ValueError, match="after start"):
        client.workload_costs("c", END, START, STEP)
    assert calls == []


# ------------------------------------------------------------------------------------------------
# Transport security and secrets


def test_key_is_refused_over_plain_http_to_a_remote_host() -> None:
    calls: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: calls.append(request) or httpx.Response(200, json={}))
    with pytest.raises(CastAIError, match="plain http") as info:
        CastAIClient("http://example.com", "secret-key-123", organization_id="o", transport=transport)
    assert calls == [] and "secret-key-123" not in str(info.value)
    # https anywhere, and http to loopback, are fine (the sandbox tests use http://127.0.0.1).
    CastAIClient("https://example.com", "secret-key-123", organization_id="o", transport=transport).close()


def test_key_is_sent_over_loopback_http(sandbox: SandboxServer, sandbox_org: SandboxOrg) -> None:
    assert sandbox.url.startswith("http://127.0.0.1:")
    with make_client(sandbox, sandbox_org) as client:
        assert len(client.list_clusters()) == len(sandbox_org.clusters)  # 401 without the right X-API-Key


def test_key_never_appears_in_errors_logs_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    key = "secret-key-123"
    seen_headers: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_headers.append(request.headers)
        echo = {"message": f"key {key} rejected", "fieldViolations": [{"field": "key", "description": key}]}
        if len(seen_headers) == 1:
            return httpx.Response(503, json=echo)  # retried (and logged)
        return httpx.Response(403, json=echo)

    client = _mock_client(handler)
    with caplog.at_level(logging.DEBUG), pytest.raises(CastAIError) as info:
        client.list_clusters()
    assert seen_headers[0]["x-api-key"] == key and seen_headers[0]["accept"] == "application/json"
    assert "[redacted]" in str(info.value)
    texts = [
        str(info.value),
        repr(info.value),
        repr(client),
        repr(ApiKeyAuth(client._api_key)),
        repr(client._http.headers),
        caplog.text,
        *(r.getMessage() for r in caplog.records),
    ]
    assert caplog.records and not [t for t in texts if key in t]


def test_key_never_appears_against_the_sandbox(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, cluster_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.faults = Faults(rate_429=0.5, retry_after_seconds=0, fail_paths={"/cost$": 500}, seed=3)
    with caplog.at_level(logging.DEBUG), make_client(sandbox, sandbox_org, max_retries=8) as client:
        client.list_clusters()
        with pytest.raises(CastAIError) as info:
            client.cluster_cost_report(cluster_id, START, END, STEP)
    assert sandbox_org.api_key not in str(info.value) + caplog.text + repr(client)


def test_from_settings_uses_the_settings_and_the_sandbox_url(
    sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    settings = load_settings(
        {
            "CASTAI_API_URL": sandbox.url,
            "CASTAI_API_KEY": sandbox_org.api_key,
            "CASTAI_ORGANIZATION_ID": sandbox_org.organization_id,
            "CASTAI_PAGE_LIMIT": "2",
            "LOCAL_OUTPUT_DIR": "unused",  # the real API needs an explicit output
        }
    )
    with CastAIClient.from_settings(settings) as client:
        assert len(client.discounts()) == len(sandbox_org.discounts)
    assert requests_to(sandbox, "/v1/discounts")[0].query["page.limit"] == ["2"]
    with pytest.raises(ValueError, match="sandbox"):
        CastAIClient.from_settings(load_settings({"CASTAI_API_URL": "sandbox"}))
    sandbox_settings = load_settings({"CASTAI_API_URL": "sandbox", "CASTAI_API_KEY": sandbox_org.api_key})
    with CastAIClient.from_settings(sandbox_settings, base_url=sandbox.url) as client:
        assert client.organization_id == sandbox_org.organization_id
        assert len(client.list_clusters()) == len(sandbox_org.clusters)


def _json_client(routes: dict[str, tuple[int, Any]]) -> CastAIClient:
    def handler(request: httpx.Request) -> httpx.Response:
        status, body = routes[request.url.path]
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers={"content-type": "text/html"})
        return httpx.Response(status, json=body)

    return _mock_client(handler)


def test_small_endpoints_tolerate_missing_and_unknown_keys(caplog: pytest.LogCaptureFixture) -> None:
    client = _json_client(
        {
            "/v1/kubernetes/external-clusters": (
                200,
                {
                    "items": [
                        {
                            "id": "c1",
                            "name": "one",
                            "providerType": "eks",
                            "region": {"name": ""},
                            "future": {"x": 1},
                        },
                        {"id": "c2"},
                    ]
                },
            ),
            "/pricing/v1beta/organizations/org/anywhere-cluster-default-pricing": (
                200,
                {"pricing": {"cpuHourlyPrice": "0.030000", "memoryGibHourlyPrice": "0.004000"}},
            ),
            "/v1/discounts": (
                200,
                {
                    "discounts": [
                        {
                            "id": "d1",
                            "enabled": True,
                            "target": "TARGET_CPU",
                            "pricing": [{"value": "0.1", "type": "TYPE_PERCENTAGE"}],
                        },
                        {"id": "d2", "enabled": True, "target": "TARGET_CPU"},
                        {
                            "id": "d3",
                            "csp": "AWS",
                            "enabled": True,
                            "target": "TARGET_MEMORY",
                            "instanceTypes": ["m5.large"],
                            "pricing": [{"value": "-1", "type": "TYPE_FLAT"}],
                        },
                    ]
                },
            ),
            "/v1/billing/platform-usage-report": (200, {"features": [{"feature": "woop", "usage": "12.5"}]}),
        }
    )
    first, second = client.list_clusters()
    assert (first.region_name, first.region_display_name, first.tags, first.status) == (None, None, {}, None)
    assert (second.id, second.name, second.provider_type) == ("c2", "c2", "")
    pricing = client.default_pricing()
    assert pricing is not None and (pricing.cpu_hourly_price, pricing.memory_gib_hourly_price) == (
        0.03,
        0.004,
    )
    with caplog.at_level(logging.WARNING):
        discounts = client.discounts()
    assert [(d.id, d.csp, d.pricing_type, d.value, d.clusters, d.instance_types) for d in discounts] == [
        ("d1", "", "TYPE_PERCENTAGE", 0.1, (), ()),
        ("d3", "aws", "TYPE_FLAT", -1.0, (), ("m5.large",)),  # "-1" is valid; csp compared lower-case
    ]
    assert "skipped 1 discount(s) without pricing: d2" in caplog.text
    usage = client.platform_usage()
    assert [(u.feature, u.display_name, u.usage, u.unit) for u in usage] == [("woop", "woop", 12.5, "")]


@pytest.mark.parametrize(
    ("path", "answer", "call", "expected"),
    [
        (
            "/pricing/v1beta/organizations/org/anywhere-cluster-default-pricing",
            (200, {"cpuHourlyPrice": "0.03"}),
            lambda c: c.default_pricing(),
            ("default-pricing", "memoryGibHourlyPrice", None),
        ),
        (
            "/pricing/v1/organizations/org/clusters/prices",
            (200, {"items": [{"clusterId": "c1", "cpuHourlyPrice": "-1", "memoryGibHourlyPrice": "0.1"}]}),
            lambda c: c.cluster_prices(),
            ("cluster-prices", "cpuHourlyPrice", None),
        ),
        (
            "/v1/kubernetes/external-clusters",
            (200, {"items": [{"name": "no id"}]}),
            lambda c: c.list_clusters(),
            ("clusters", "id", None),
        ),
        (
            "/v1/billing/platform-usage-report",
            (500, "<html><body>proxy error</body></html>"),
            lambda c: c.platform_usage(),
            ("platform-usage", None, 500),
        ),
    ],
)
def test_small_endpoint_errors_name_endpoint_and_field(
    path: str, answer: tuple[int, Any], call: Callable[[CastAIClient], Any], expected: tuple[Any, ...]
) -> None:
    with pytest.raises(CastAIError) as info:
        call(_json_client({path: answer}))
    assert (info.value.endpoint, info.value.field, info.value.status) == expected
    assert expected[0] in str(info.value)


# ------------------------------------------------------------------------------------------------
# Transient or permanent: the classification the client retried by is the one the error reports


def test_errors_say_whether_retrying_can_help(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, cluster_id: str
) -> None:
    path = WORKLOAD_COSTS_PATH.format(cluster_id)
    cases: list[tuple[Faults, bool, int]] = [  # faults, transient, requests made with max_retries=1
        (Faults(fail_paths={path: 503}), True, 2),
        (Faults(fail_paths={path: 429}), True, 2),
        (Faults(timeout_paths=f"{path}$", timeout_seconds=2), True, 2),
        (Faults(fail_paths={path: 500}), False, 1),
        (Faults(fail_paths={path: 404}), False, 1),
        (Faults(malformed_json_paths=f"{path}$"), False, 1),
    ]
    for faults, transient, requests in cases:
        sandbox.requests.clear()
        sandbox.faults = faults
        timeout = 0.3 if faults.timeout_paths else 10.0
        error = workload_costs_error(sandbox, sandbox_org, cluster_id, max_retries=1, timeout_seconds=timeout)
        assert error.transient is transient, (faults, error)
        assert len(requests_to(sandbox, path)) == requests, (faults, error)


def test_a_trickling_answer_fails_at_the_request_deadline(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, cluster_id: str
) -> None:
    """One byte a second passes every per-read timeout; the total deadline ends each attempt."""
    path = WORKLOAD_COSTS_PATH.format(cluster_id)
    sandbox.faults = Faults(trickle_paths=f"{path}$", trickle_seconds_per_byte=1.0)
    outcome: list[BaseException | None] = []

    def fetch() -> None:
        try:
            with make_client(sandbox, sandbox_org, timeout_seconds=2, max_retries=1) as client:
                client.workload_costs(cluster_id, START, END, STEP)
            outcome.append(None)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(timeout=60)  # a request still running here is unbounded (the answer takes hours)
    elapsed = time.monotonic() - started
    assert not worker.is_alive(), "the trickled request was not ended by its deadline"
    assert sandbox.faults.injected["trickle"] == 2
    (error,) = outcome
    assert isinstance(error, CastAIError) and error.reason == "timeout" and error.transient
    assert "within 2 s" in str(error) and error.cluster_id == cluster_id
    assert elapsed < 2 * 2 + 10  # two attempts of 2 s each, plus generous slack for a loaded machine


def test_the_deadline_spares_an_answer_that_arrives_in_time(
    sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    sandbox.faults = Faults(trickle_paths="external-clusters", trickle_seconds_per_byte=0.0005)
    with make_client(sandbox, sandbox_org, timeout_seconds=30, max_retries=0) as client:
        assert {c.id for c in client.list_clusters()} == {c.id for c in sandbox_org.clusters}
    assert sandbox.faults.injected["trickle"] == 1


def test_invalid_utf8_is_refused_at_once_naming_cluster_and_workload(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, cluster_id: str
) -> None:
    path = WORKLOAD_COSTS_PATH.format(cluster_id)
    item = (
        b'{"namespace":"shop","workloadType":"Deployment","workloadName":"web",'
        b'"labels":[{"name":"team","value":"pay\xffments"}],"costMetrics":[]}'
    )
    body = b'{"clusterId":"c","items":[' + item + b'],"nextCursor":"","count":"1"}'
    sandbox.faults = Faults(responses={f"{path}$": lambda _query: CannedResponse(200, body)})
    error = workload_costs_error(sandbox, sandbox_org, cluster_id, max_retries=3)
    assert (error.endpoint, error.cluster_id, error.field, error.reason) == (
        "workload-costs",
        cluster_id,
        "labels",
        "invalid UTF-8",
    )
    assert "not valid UTF-8" in str(error) and "shop/Deployment/web" in str(error)
    assert not error.transient and len(requests_to(sandbox, path)) == 1


def test_a_key_no_header_can_carry_is_refused_before_any_request() -> None:
    sent: list[httpx.Request] = []
    for key in ("castai-key-0123456789abcdef\n", "castai-key\r\nX-Injected: 1", "clé-0123456789"):
        with pytest.raises(CastAIError) as info:
            CastAIClient(
                "https://api.cast.ai",
                key,
                organization_id="o",
                transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200)),
            )
        assert not info.value.transient and "cannot be sent as a header" in str(info.value)
        assert "0123456789" not in str(info.value) and "castai-key" not in str(info.value)
    assert sent == []


def test_a_request_that_cannot_be_sent_is_permanent() -> None:
    """h11 refuses an illegal header value before sending; that fails identically every time."""
    calls: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.LocalProtocolError("Illegal header value b'x'")

    client = CastAIClient(
        "https://api.cast.ai",
        "k" * 16,
        organization_id="o",
        max_retries=3,
        transport=httpx.MockTransport(refuse),
    )
    with client, pytest.raises(CastAIError) as info:
        client.platform_usage()
    assert not info.value.transient and info.value.reason == "invalid request"
    assert "not retried" in str(info.value) and len(calls) == 1


def test_workload_label_names_follow_every_page_through_post(
    sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    ids = [c.id for c in sandbox_org.clusters[:2]]
    with make_client(sandbox, sandbox_org, page_limit=2) as client:
        names = client.workload_label_names(START, END, ids)
    expected = sorted({k for c in sandbox_org.clusters[:2] for labels in c.workloads.labels for k in labels})
    assert names == expected
    calls = requests_to(sandbox, "/v1/cost-reports/workload-labels/names")
    assert len(calls) == -(-len(expected) // 2) and {c.method for c in calls} == {"POST"}
    assert all(c.json == {"clusterIds": sorted(ids)} for c in calls)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"labelNames": ["team", ""], "nextCursor": ""}', "invalid response"),
        (b'{"message": "denied", "fieldViolations": []}', "error body"),
        (b"<html>", "invalid JSON"),
    ],
)
def test_a_bad_label_names_answer_is_refused_naming_the_endpoint(body: bytes, reason: str) -> None:
    client = _mock_client(lambda request: httpx.Response(200, content=body))
    with pytest.raises(CastAIError) as info:
        client.workload_label_names(START, END, ["c1"])
    assert info.value.endpoint == "workload-label-names" and info.value.reason == reason


# ------------------------------------------------------------------------------------------------
# Environment proxies (HTTP_PROXY/HTTPS_PROXY/NO_PROXY), through a real forwarding proxy


class _ForwardingProxy(socketserver.ThreadingTCPServer):
    """A plain HTTP forward proxy on 127.0.0.1: absolute-form request in, bytes relayed as they come."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ForwardingHandler)
        self.seen: list[str] = []  # request lines as the client sent them to the proxy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ForwardingHandler(socketserver.StreamRequestHandler):
    server: _ForwardingProxy

    def handle(self) -> None:
        while True:
            request_line = self.rfile.readline().decode("latin-1").rstrip("\r\n")
            if not request_line:
                return
            method, target, version = request_line.split(" ")
            self.server.seen.append(request_line)
            headers: list[str] = []
            length = 0
            while (line := self.rfile.readline().decode("latin-1").rstrip("\r\n")) != "":
                name = line.split(":", 1)[0].strip().lower()
                if name == "content-length":
                    length = int(line.split(":", 1)[1])
                if name not in ("connection", "proxy-connection", "keep-alive"):
                    headers.append(line)
            body = self.rfile.read(length) if length else b""
            url = urlsplit(target)
            assert url.scheme == "http" and url.hostname, request_line  # absolute form: a proxy request
            upstream = socket.create_connection((url.hostname, url.port or 80))
            with upstream:
                path = url.path + (f"?{url.query}" if url.query else "")
                head = "\r\n".join([f"{method} {path} {version}", *headers, "Connection: close", "", ""])
                upstream.sendall(head.encode("latin-1") + body)
                while chunk := upstream.recv(65536):  # relayed at once: a trickle stays a trickle
                    self.wfile.write(chunk)
                    self.wfile.flush()
            return  # the upstream closed: this connection ends with its answer


@pytest.fixture
def forwarding_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_ForwardingProxy]:
    proxy = _ForwardingProxy()
    worker = threading.Thread(target=proxy.serve_forever, daemon=True)
    worker.start()
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("http_proxy", proxy.url)
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_environment_proxy_carries_every_request_with_identical_results(
    sandbox: SandboxServer,
    sandbox_org: SandboxOrg,
    cluster_id: str,
    forwarding_proxy: _ForwardingProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP_PROXY is honoured as httpx's trust_env would, although the client passes its own transport."""
    with make_client(sandbox, sandbox_org) as client:
        proxied_clusters = client.list_clusters()
        proxied = client.workload_costs(cluster_id, START, END, STEP)
    through_proxy = list(forwarding_proxy.seen)
    assert len(through_proxy) == len(sandbox.requests) >= 2
    assert all(line.split(" ")[1].startswith(sandbox.url + "/") for line in through_proxy)
    assert any("/workload-costs" in line for line in through_proxy)

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # the same client settings, now bypassing the proxy
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with make_client(sandbox, sandbox_org) as client:
        direct_clusters = client.list_clusters()
        direct = client.workload_costs(cluster_id, START, END, STEP)
    assert forwarding_proxy.seen == through_proxy, "NO_PROXY was not honoured"
    assert proxied_clusters == direct_clusters
    assert proxied.equals(direct)
    assert proxied.num_rows > 0


def test_the_request_deadline_holds_through_an_environment_proxy(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, cluster_id: str, forwarding_proxy: _ForwardingProxy
) -> None:
    path = WORKLOAD_COSTS_PATH.format(cluster_id)
    sandbox.faults = Faults(trickle_paths=f"{path}$", trickle_seconds_per_byte=1.0)
    outcome: list[BaseException | None] = []

    def fetch() -> None:
        try:
            with make_client(sandbox, sandbox_org, timeout_seconds=2, max_retries=0) as client:
                client.workload_costs(cluster_id, START, END, STEP)
            outcome.append(None)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(timeout=60)  # a request still running here is unbounded (the answer takes hours)
    assert not worker.is_alive(), "the trickled request through the proxy was not ended by its deadline"
    assert any(path in line for line in forwarding_proxy.seen)
    (error,) = outcome
    assert isinstance(error, CastAIError) and error.reason == "timeout", error
