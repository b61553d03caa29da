"""Cast AI REST client: one method per endpoint the exporter reads, typed results, `CastAIError`s
naming endpoint, cluster and field. Requests go through `ApiSession` (rate limit, retries, deadline);
workload costs of many clusters are fetched `max_concurrency` at a time on threads."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from types import TracebackType
from urllib.parse import quote

import httpx
import pyarrow as pa
from pydantic import SecretStr

from castai_focus_dagster.castai.assembler import WorkloadCostsAssembler
from castai_focus_dagster.castai.decode import (
    decode_clusters,
    decode_cost_report,
    decode_label_names_page,
    decode_workload_costs_page,
)
from castai_focus_dagster.castai.endpoints import CLUSTER_COST, CLUSTERS, LABEL_NAMES, WORKLOAD_COSTS
from castai_focus_dagster.castai.errors import CastAIError
from castai_focus_dagster.castai.fanout import in_input_order
from castai_focus_dagster.castai.input_warnings import with_input_warnings, workload_costs_warnings
from castai_focus_dagster.castai.models import Cluster
from castai_focus_dagster.castai.org_endpoints import OrganizationEndpoints
from castai_focus_dagster.castai.probe import probe_coarser_bucket
from castai_focus_dagster.castai.session import ApiSession
from castai_focus_dagster.castai.units import rfc3339
from castai_focus_dagster.castai.validation import BucketWindow
from castai_focus_dagster.settings import Settings, header_safe, key_allowed_over


class CastAIClient(OrganizationEndpoints):
    """Thread-safe client of the Cast AI endpoints the exporter reads. Use as a context manager."""

    def __init__(
        self,
        base_url: str,
        api_key: str | SecretStr,
        *,
        organization_id: str,
        timeout_seconds: float = 60,
        max_retries: int = 6,
        rate_limit_rps: float = 20,
        rate_limit_burst: float | None = None,
        max_concurrency: int = 8,
        page_limit: int = 100,
        logger: logging.Logger | None = None,
        transport: httpx.BaseTransport | None = None,
        max_backoff_seconds: float = 30,
        max_pages: int = 10_000,
    ):
        base_url = base_url.rstrip("/")
        if not key_allowed_over(base_url):
            raise CastAIError(
                "refusing to send the API key over plain http to a non-loopback host (use https)",
                endpoint=base_url,
            )
        if max_retries < 0 or max_concurrency < 1 or page_limit < 1 or max_pages < 1:
            raise ValueError("max_retries >= 0, max_concurrency >= 1, page_limit >= 1 and max_pages >= 1")
        self.base_url = base_url
        self.organization_id = organization_id
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        if not header_safe(self._api_key.get_secret_value()):
            # h11 would refuse it on every request, quoting it; settings strip and refuse such keys.
            raise CastAIError(
                "the API key holds a control or non-ASCII character (not shown): it cannot be sent "
                "as a header; strip the newline or fix the secret",
                endpoint=base_url,
            )
        self._max_concurrency = max_concurrency
        self._page_limit = page_limit
        self._max_pages = max_pages
        self._log = logger or logging.getLogger(__name__)
        self._session = ApiSession(
            base_url,
            self._api_key,
            timeout_seconds=timeout_seconds,
            max_retries=max_retries,
            rate_limit_rps=rate_limit_rps,
            rate_limit_burst=rate_limit_burst,
            pool_size=max_concurrency + 5,  # cluster fetches + the parallel enrichment calls
            logger=self._log,
            transport=transport,
            max_backoff_seconds=max_backoff_seconds,
        )
        self._http = self._session.http

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        base_url: str | None = None,
        logger: logging.Logger | None = None,
        *,
        rate_limit_rps: float | None = None,
        rate_limit_burst: float | None = None,
    ) -> CastAIClient:
        """Client for the configured API; `base_url` overrides it (the URL of a running sandbox), and
        `rate_limit_rps` the whole budget (this run's share of it)."""
        url = base_url or settings.castai_api_url
        if settings.is_sandbox and base_url is None:
            raise ValueError("CASTAI_API_URL=sandbox: start the sandbox and pass its URL as base_url")
        return cls(
            url,
            settings.castai_api_key,
            organization_id=settings.organization_id,
            timeout_seconds=settings.castai_timeout_seconds,
            max_retries=settings.castai_max_retries,
            rate_limit_rps=settings.castai_rate_limit_rps if rate_limit_rps is None else rate_limit_rps,
            rate_limit_burst=rate_limit_burst,
            max_concurrency=settings.castai_max_concurrency,
            page_limit=settings.castai_page_limit,
            logger=logger,
        )

    def __repr__(self) -> str:
        return f"CastAIClient(base_url={self.base_url!r}, organization_id={self.organization_id!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> CastAIClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------------
    # Endpoints

    def list_clusters(
        self, include_ids: Sequence[str] = (), exclude_ids: Sequence[str] = ()
    ) -> list[Cluster]:
        """All clusters of the organization after the include/exclude filters.

        Deleted clusters are kept: a cluster deleted during the window still has costs in it, and
        Cast AI returns empty workload costs for the days after its deletion.
        """
        clusters = self._session.decoded(
            CLUSTERS, None, decode_clusters, self._session.get(CLUSTERS, "/v1/kubernetes/external-clusters")
        )
        include, exclude = set(include_ids), set(exclude_ids)
        unknown = sorted(include - {c.id for c in clusters})
        if unknown:
            self._log.warning(
                "Cast AI clusters: included cluster id(s) not in the organization: %s", ", ".join(unknown)
            )
        return [c for c in clusters if (not include or c.id in include) and c.id not in exclude]

    def workload_costs(
        self,
        cluster_id: str,
        start: datetime,
        end: datetime,
        step_seconds: int,
        *,
        labels: Sequence[str] = (),
        include_namespaces: Sequence[str] = (),
        exclude_namespaces: Sequence[str] = (),
    ) -> pa.Table:
        """One cluster's workload costs for (start, end] as a `models.WORKLOAD_COSTS_SCHEMA` table.

        Metric fields missing from a bucket count as 0.0 (protojson may omit zero values). Repairs
        (an identical repeat of a workload dropped, labels with control characters left out) are
        logged as warnings and recorded in the table's schema metadata (`input_warnings(table)`).
        An answer whose buckets all sit at the window's last timestamp costs one more request (the
        probe that tells a late-starting cluster from one coarser bucket).
        """
        window = BucketWindow(start, end, step_seconds)
        params = [
            ("startTime", rfc3339(start)),
            ("endTime", rfc3339(end)),
            ("stepSeconds", str(step_seconds)),
        ]
        params += [("labelsToInclude", key) for key in dict.fromkeys(labels)]
        params += [("filter.namespaces", namespace) for namespace in dict.fromkeys(include_namespaces)]
        assembler = WorkloadCostsAssembler(
            cluster_id, window, include_namespaces=include_namespaces, exclude_namespaces=exclude_namespaces
        )
        path = f"/v1/cost-reports/clusters/{quote(cluster_id, safe='')}/workload-costs"
        for page in self._pages(WORKLOAD_COSTS, path, params, decode_workload_costs_page, cluster_id):
            self._session.decoded(WORKLOAD_COSTS, cluster_id, assembler.add, page.items)
            assembler.expect_count(page.count)
            assembler.note_no_data_reason(page.no_data_reason)
            del page  # not held while the next page waits for its request
        table = self._session.decoded(WORKLOAD_COSTS, cluster_id, assembler.table)
        if assembler.single_last_bucket():
            probe_coarser_bucket(
                self._session,
                self._page_limit,
                self._max_pages,
                cluster_id,
                path,
                params,
                window,
                assembler.wanted,
            )
        warnings = workload_costs_warnings(assembler, cluster_id, step_seconds)
        for warning in warnings:
            self._log.warning("Cast AI %s cluster %s: %s", warning.endpoint, cluster_id, warning.message)
        self._log.debug("Cast AI workload-costs cluster %s: %d rows", cluster_id, table.num_rows)
        return with_input_warnings(table, [w.to_json() for w in warnings])

    def workload_costs_many(
        self,
        cluster_ids: Sequence[str],
        start: datetime,
        end: datetime,
        step_seconds: int,
        *,
        labels: Sequence[str] = (),
        include_namespaces: Sequence[str] = (),
        exclude_namespaces: Sequence[str] = (),
    ) -> Iterator[tuple[str, pa.Table]]:
        """`workload_costs` for many clusters, `max_concurrency` at a time, yielded in input order.

        At most `max_concurrency` fetches are in flight or finished-but-not-yet-yielded, so memory
        is bounded by that many clusters, not by the organization. The first failure is raised
        when its cluster's turn comes; fetches not yet started are cancelled.
        """
        costs = functools.partial(
            self.workload_costs,
            start=start,
            end=end,
            step_seconds=step_seconds,
            labels=labels,
            include_namespaces=include_namespaces,
            exclude_namespaces=exclude_namespaces,
        )

        def fetch(cluster_id: str) -> pa.Table:
            try:
                return costs(cluster_id)
            finally:
                # Arrow's allocator (mimalloc) keeps freed pages in the heap of the thread that
                # allocated them, returned only when that thread collects: without this, every fetch
                # thread would hold its own high-water mark, and memory grow with the threads in use.
                pa.default_memory_pool().release_unused()

        return in_input_order(fetch, cluster_ids, self._max_concurrency, thread_name_prefix="castai")

    def workload_label_names(self, start: datetime, end: datetime, cluster_ids: Sequence[str]) -> list[str]:
        """Every Kubernetes label name on the clusters' workloads in [start, end], sorted and distinct.

        Cast AI returns a workload's labels only for the keys named in `labelsToInclude`; this listing
        (`POST /v1/cost-reports/workload-labels/names`) is how "all labels" is asked for.
        """
        params = [("startTime", rfc3339(start)), ("endTime", rfc3339(end))]
        body = json.dumps({"clusterIds": sorted(cluster_ids)}).encode()
        path = "/v1/cost-reports/workload-labels/names"
        names: set[str] = set()
        for page in self._pages(LABEL_NAMES, path, params, decode_label_names_page, json_body=body):
            names.update(page)
        return sorted(names)

    def cluster_cost_report(
        self,
        cluster_id: str,
        start: datetime,
        end: datetime,
        step_seconds: int,
        *,
        use_listing_prices: bool = False,
    ) -> pa.Table:
        """Cluster cost time series: `timestamp` + every CostReportItem decimal as float64.

        `use_listing_prices`: Cast AI's "listing prices instead of discounted prices" (the list prices)."""
        window = BucketWindow(start, end, step_seconds)
        params = [
            ("startTime", rfc3339(start)),
            ("endTime", rfc3339(end)),
            ("stepSeconds", str(step_seconds)),
        ]
        if use_listing_prices:
            params.append(("useListingPrices", "true"))
        path = f"/v1/cost-reports/clusters/{quote(cluster_id, safe='')}/cost"
        body = self._session.get(CLUSTER_COST, path, params, cluster_id=cluster_id)
        return self._session.decoded(CLUSTER_COST, cluster_id, decode_cost_report, body, window)
