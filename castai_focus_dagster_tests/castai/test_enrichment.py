"""Enrichment fetch against the sandbox: complete when all answers, partial (never failing) otherwise."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from castai_focus_dagster.castai.client import CastAIClient
from castai_focus_dagster.castai.enrichment import fetch_enrichment
from castai_focus_dagster.castai.models import EnrichmentContext
from castai_focus_dagster.castai.sandbox import CannedResponse, Faults, SandboxOrg, SandboxServer

ENTERPRISE_PATH_PREFIX = "/organization-management/v1/enterprises/"


def make_client(server: SandboxServer, org: SandboxOrg, **overrides: Any) -> CastAIClient:
    options: dict[str, Any] = {
        "organization_id": org.organization_id,
        "max_backoff_seconds": 0.01,
        "timeout_seconds": 5,
        "max_retries": 1,
        "rate_limit_rps": 1000,
    }
    options.update(overrides)
    return CastAIClient(server.url, org.api_key, **options)


def test_complete_context_matches_the_sandbox(sandbox: SandboxServer, sandbox_org: SandboxOrg) -> None:
    with make_client(sandbox, sandbox_org) as client:
        context = fetch_enrichment(client, enterprise_id=sandbox_org.enterprise_id)
    assert context.missing == {} and context.completeness == 1.0
    assert set(context.cluster_prices) == {c.id for c in sandbox_org.priced_clusters()}
    assert context.default_pricing is not None
    assert context.default_pricing.cpu_hourly_price == sandbox_org.default_cpu_hourly_price
    assert [d.id for d in context.discounts] == [d.id for d in sandbox_org.discounts]
    assert {k: v.name for k, v in context.child_organizations.items()} == {
        c.id: c.name for c in sandbox_org.child_organizations
    }
    assert [f.feature for f in context.platform_usage] == ["phase2", "woop"]
    assert EnrichmentContext.from_json(context.to_json()) == context


def test_calls_run_in_parallel(sandbox: SandboxServer, sandbox_org: SandboxOrg) -> None:
    """The sandbox holds each enrichment request until all five are in flight: fetched one after the
    other, the first would wait alone, the barrier breaks and that endpoint is missing."""
    all_in_flight = threading.Barrier(5, timeout=30)

    def wait_for_the_others(query: object) -> None:
        all_in_flight.wait()  # then the normal answer

    sandbox.faults = Faults(responses={".": wait_for_the_others})
    with make_client(sandbox, sandbox_org, max_retries=0) as client:
        context = fetch_enrichment(client, enterprise_id=sandbox_org.enterprise_id)
    assert context.missing == {}
    assert len(sandbox.requests) == 5


def test_failing_endpoints_degrade_to_a_partial_context(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.faults = Faults(
        fail_paths={"^/v1/discounts$": 404, "/clusters/prices$": 500},
        timeout_paths="platform-usage-report",
        timeout_seconds=2,
    )
    client = make_client(sandbox, sandbox_org, timeout_seconds=0.3, max_retries=0)
    with client, caplog.at_level(logging.WARNING):
        context = fetch_enrichment(client, enterprise_id=sandbox_org.enterprise_id)
    assert context.missing == {
        "cluster_prices": "HTTP 500",
        "discounts": "HTTP 404",
        "platform_usage": "timeout",
    }
    assert context.completeness == pytest.approx(2 / 5)
    assert context.cluster_prices == {} and context.discounts == [] and context.platform_usage == []
    assert context.default_pricing is not None and len(context.child_organizations) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for endpoint, reason in context.missing.items():
        assert any(endpoint in w and reason in w for w in warnings), (endpoint, warnings)


def test_default_pricing_404_is_recorded(sandbox: SandboxServer, sandbox_org: SandboxOrg) -> None:
    sandbox.faults = Faults(fail_paths={"anywhere-cluster-default-pricing": 404})
    with make_client(sandbox, sandbox_org) as client:
        assert client.default_pricing() is None
        context = fetch_enrichment(client)
    assert context.default_pricing is None
    assert context.missing == {"default_pricing": "HTTP 404"}


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        (Faults(malformed_json_paths="^/v1/discounts$"), "invalid JSON"),
        (Faults(html_error_paths="^/v1/discounts$"), "invalid JSON"),
        (Faults(fail_paths={"^/v1/discounts$": 503}), "HTTP 503"),
    ],
)
def test_bad_answers_degrade_with_their_reason(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, faults: Faults, reason: str
) -> None:
    sandbox.faults = faults
    with make_client(sandbox, sandbox_org) as client:
        context = fetch_enrichment(client, enterprise_id=sandbox_org.enterprise_id)
    assert context.missing == {"discounts": reason}
    assert context.cluster_prices and context.platform_usage and context.child_organizations


def test_enterprise_is_only_asked_for_with_an_enterprise_id(
    sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    with make_client(sandbox, sandbox_org) as client:
        context = fetch_enrichment(client)
    assert context.child_organizations == {} and context.missing == {}
    assert not [r for r in sandbox.requests if r.path.startswith(ENTERPRISE_PATH_PREFIX)]


def test_wrong_enterprise_is_reported(sandbox: SandboxServer, sandbox_org: SandboxOrg) -> None:
    """An organisation that is not an enterprise has no child listing: missing, not "no children"."""
    with make_client(sandbox, sandbox_org) as client:
        context = fetch_enrichment(client, enterprise_id=sandbox_org.organization_id)
    assert context.missing == {"enterprise_organizations": "HTTP 404"}
    assert context.child_organizations == {}


@pytest.mark.parametrize(
    "body",
    [
        b'{"nextPageCursor": ""}',  # 200 without items
        b'{"items": null}',
        b'{"items": [{"name": "no id"}]}',
        b'{"organizations": [{"organizationId": "x"}]}',  # another endpoint's shape
    ],
)
def test_a_wrongly_shaped_child_listing_is_missing_enrichment_not_no_children(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.faults = Faults(responses={"/organizations$": lambda _query: CannedResponse(body=body)})
    with make_client(sandbox, sandbox_org) as client, caplog.at_level(logging.WARNING):
        context = fetch_enrichment(client, enterprise_id=sandbox_org.enterprise_id)
    assert context.missing == {"enterprise_organizations": "invalid response"}
    assert context.child_organizations == {}
    assert any("enterprise_organizations" in r.getMessage() for r in caplog.records)


def test_the_child_listing_is_followed_across_pages(sandbox: SandboxServer, sandbox_org: SandboxOrg) -> None:
    with make_client(sandbox, sandbox_org, page_limit=1) as client:
        children = client.child_organizations(sandbox_org.enterprise_id)
    assert {k: v.name for k, v in children.items()} == {c.id: c.name for c in sandbox_org.child_organizations}
    pages = [r for r in sandbox.requests if r.path.startswith(ENTERPRISE_PATH_PREFIX)]
    assert len(pages) == len(sandbox_org.child_organizations) > 1
    assert all(r.query.get("page.limit") == ["1"] for r in pages)
    assert all(r.query.get("page.cursor") for r in pages[1:]) and "page.cursor" not in pages[0].query


def test_unexpected_errors_degrade_too(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_client(sandbox, sandbox_org) as client:

        def broken() -> None:
            raise RuntimeError("bug")

        monkeypatch.setattr(client, "platform_usage", broken)
        context = fetch_enrichment(client)
    assert context.missing == {"platform_usage": "RuntimeError"}
    assert set(context.missing) <= set(EnrichmentContext.ENDPOINTS)
