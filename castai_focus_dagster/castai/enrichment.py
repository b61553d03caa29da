"""Parallel, degrading fetch of everything beyond workload costs (prices, discounts, orgs, usage).

Enrichment only refines prices and account names, so an endpoint that is missing, failing or slow
is logged, named in `EnrichmentContext.missing`, and the export goes on with what answered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from castai_focus_dagster.castai.client import CastAIClient
from castai_focus_dagster.castai.errors import CastAIError
from castai_focus_dagster.castai.models import EnrichmentContext


def fetch_enrichment(
    client: CastAIClient, *, enterprise_id: str = "", logger: logging.Logger | None = None
) -> EnrichmentContext:
    """Fetch the enrichment context; never raises. Enterprise orgs are fetched only with an enterprise id."""
    log = logger or logging.getLogger(__name__)
    calls: dict[str, Callable[[], Any]] = {
        "cluster_prices": client.cluster_prices,
        "default_pricing": client.default_pricing,
        "discounts": client.discounts,
        "platform_usage": client.platform_usage,
    }
    if enterprise_id:
        calls["enterprise_organizations"] = lambda: client.child_organizations(enterprise_id)

    results: dict[str, Any] = {}
    missing: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="castai-enrichment") as pool:
        futures = {name: pool.submit(call) for name, call in calls.items()}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except CastAIError as exc:
                missing[name] = _degraded(log, name, exc.reason, str(exc))
            except Exception as exc:  # enrichment never fails the export, whatever went wrong
                missing[name] = _degraded(
                    log, name, type(exc).__name__, f"unexpected {type(exc).__name__}: {exc}"
                )
    if "default_pricing" in results and results["default_pricing"] is None:
        missing["default_pricing"] = _degraded(log, "default_pricing", "HTTP 404", "endpoint answered 404")
    context = EnrichmentContext(
        cluster_prices=results.get("cluster_prices", {}),
        default_pricing=results.get("default_pricing"),
        discounts=results.get("discounts", []),
        child_organizations=results.get("enterprise_organizations", {}),
        platform_usage=results.get("platform_usage", []),
        missing=missing,
    )
    log.info(
        "Cast AI enrichment: %d cluster price(s), %s default pricing, %d discount(s), %d child org(s), "
        "%d usage feature(s); completeness %.0f%%",
        len(context.cluster_prices),
        "with" if context.default_pricing else "no",
        len(context.discounts),
        len(context.child_organizations),
        len(context.platform_usage),
        100 * context.completeness,
    )
    return context


def _degraded(log: logging.Logger, name: str, reason: str, message: str) -> str:
    log.warning("Cast AI enrichment %s unavailable (%s), continuing without it: %s", name, reason, message)
    return reason
