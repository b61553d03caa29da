"""Cast AI REST client: authentication, retries, client-side rate limit, cursor paging, typed errors.

Why a synchronous `httpx.Client` plus a `ThreadPoolExecutor` rather than asyncio:
- the callers (Dagster assets) are synchronous; an event loop per asset would need `asyncio.run`
  bridging and async twins of the retry and rate-limit code, for a small fan-out
  (`CASTAI_MAX_CONCURRENCY`, default 8 clusters in flight) where threads cost nothing;
- the time goes to waiting on Cast AI, where a thread blocked on a socket releases the GIL and
  overlaps with the others exactly like an event loop would, and to decoding multi-MB pages, which
  is CPU-bound under the GIL (msgspec) in either model: asyncio could not decode faster, and would
  stall its loop during each decode unless it handed decoding to threads anyway;
- `httpx.Client` is thread-safe with one shared connection pool (keep-alive across clusters).
A later benchmark measures the fan-out; if the threads turn out to wait on the GIL rather than on
the network, the remedy is process-level parallelism (Dagster steps), not asyncio.

Every failure becomes a `CastAIError` naming the endpoint, the cluster and the field involved, and
saying whether retrying can help (`transient`: the classification the client's own retries used);
the API key never appears in an exception, a log record or a repr.

`timeout_seconds` is one deadline per HTTP request: connecting, sending and reading the whole answer
together. httpx's timeouts apply per socket operation, so a server trickling a byte a second would
never trip them; the client's network backend therefore clamps every socket operation of a request to
the time its deadline leaves.
"""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpcore
import httpx
import pyarrow as pa
import tenacity
from httpx._utils import get_environment_proxies  # the exact trust_env reading of httpx
from pydantic import SecretStr

from castai_focus_dagster.castai.decode import (
    MISSING_IDENTITY,
    BucketWindow,
    InvalidResponse,
    WorkloadCostsAssembler,
    WorkloadItem,
    decode_child_organizations_page,
    decode_cluster_prices_page,
    decode_clusters,
    decode_cost_report,
    decode_default_pricing,
    decode_discounts_page,
    decode_label_names_page,
    decode_platform_usage,
    decode_workload_costs_page,
    error_message,
)
from castai_focus_dagster.castai.models import (
    ChildOrganization,
    Cluster,
    ClusterPrice,
    DefaultPricing,
    Discount,
    FeatureUsage,
)
from castai_focus_dagster.redaction import Redactor
from castai_focus_dagster.settings import Settings, header_safe, key_allowed_over

# Short endpoint names used in errors, logs and EnrichmentContext.missing mapping.
CLUSTERS = "clusters"
WORKLOAD_COSTS = "workload-costs"
CLUSTER_COST = "cluster-cost"
CLUSTER_PRICES = "cluster-prices"
DEFAULT_PRICING = "default-pricing"
DISCOUNTS = "discounts"
ENTERPRISE_ORGANIZATIONS = "enterprise-organizations"
PLATFORM_USAGE = "platform-usage"
LABEL_NAMES = "workload-label-names"

# Schema-metadata key of a workload-costs table: JSON list of the InputWarnings met while fetching it.
INPUT_WARNINGS_KEY = b"castai_focus.input_warnings"
DUPLICATE_WORKLOAD = "duplicate-workload"
CONTROL_CHARACTERS_IN_LABELS = "control-characters-in-labels"
MISSING_WORKLOAD_IDENTITY = "missing-workload-identity"
# Correctly spaced buckets whose uptimeMinutes* exceed the step (uptime may count pod-minutes): kept.
UPTIME_OVER_STEP = "uptime-over-step"
# Not a repair but a fact the day must show: Cast AI listed no workload for the cluster (see `no_data`).
NO_DATA = "no-data"

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
_MAX_MESSAGE_CHARS = 300
_USER_AGENT = "castai-focus-dagster/0.1"

T = TypeVar("T")


class CastAIError(RuntimeError):
    """A Cast AI call that failed for good. `reason` is short ("HTTP 404", "timeout", "invalid JSON", ...).

    `transient` is True only when the client gave up on a fault it retries (429, 502/503/504, timeouts,
    connection errors): a later attempt may succeed. Everything else (other statuses, undecodable or
    contradictory answers, an unusable request) fails the same way every time.
    """

    def __init__(
        self,
        detail: str,
        *,
        endpoint: str,
        cluster_id: str | None = None,
        field: str | None = None,
        status: int | None = None,
        reason: str | None = None,
        transient: bool = False,
    ):
        self.detail = detail
        self.transient = transient
        self.endpoint = endpoint
        self.cluster_id = cluster_id
        self.field = field
        self.status = status
        self.reason = reason or (f"HTTP {status}" if status is not None else "error")
        where = [f"Cast AI {endpoint}"]
        if cluster_id:
            where.append(f"cluster {cluster_id}")
        if field:
            where.append(f"field {field}")
        if status is not None:
            where.append(f"HTTP {status}")
        super().__init__(f"{' '.join(where)}: {detail}")


@dataclass(frozen=True)
class InputWarning:
    """Bad input repaired by a documented rule (docs/reliability.md): logged, and kept with the data
    so the asset's metadata shows it. `rule` is a stable id, `count` how many times it applied."""

    endpoint: str
    cluster_id: str | None
    rule: str
    count: int
    message: str
    detail: str = ""  # machine-readable specifics (NO_DATA: the noDataReason); left out of JSON when empty

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "detail" or v}


def input_warnings(table: pa.Table) -> list[dict[str, Any]]:
    """The InputWarnings (as JSON objects) recorded in a workload-costs table's schema metadata."""
    raw = (table.schema.metadata or {}).get(INPUT_WARNINGS_KEY)
    return list(json.loads(raw)) if raw else []


def with_input_warnings(table: pa.Table, warnings: Sequence[Mapping[str, Any]]) -> pa.Table:
    """`table` with `warnings` recorded in its schema metadata (none: no key), other metadata kept."""
    metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != INPUT_WARNINGS_KEY}
    if warnings:
        metadata[INPUT_WARNINGS_KEY] = json.dumps(list(warnings), sort_keys=True).encode()
    return table.replace_schema_metadata(metadata or None)


class _RetryableResponse(Exception):
    """429/502/503/504: retried by tenacity, converted to CastAIError when retries run out."""

    def __init__(self, status: int, detail: str, retry_after: float | None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


def _retryable(error: BaseException) -> bool:
    """The client's retry classification; `CastAIError.transient` reports it."""
    if isinstance(error, (httpx.LocalProtocolError, httpx.UnsupportedProtocol)):
        return False  # our own request is malformed: it would fail identically every time
    return isinstance(error, (_RetryableResponse, httpx.TransportError))


class _ApiKeyAuth(httpx.Auth):
    """Adds `X-API-Key` per request, so the key is not in the client's default headers (or their repr)."""

    def __init__(self, api_key: SecretStr):
        self._api_key = api_key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-API-Key"] = self._api_key.get_secret_value()
        yield request

    def __repr__(self) -> str:
        return "_ApiKeyAuth(api_key=**********)"


_request_deadline = threading.local()  # monotonic deadline of the request this thread is making


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Every socket operation of this thread's request must end within `seconds` from now, in total."""
    _request_deadline.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _request_deadline.at = None


def _remaining(timeout: float | None, error: type[Exception]) -> float | None:
    """`timeout` clamped to what the current request's deadline leaves; `error` once it has passed."""
    at: float | None = getattr(_request_deadline, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the request's total deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _remaining(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _remaining(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(
            ssl_context, server_hostname, _remaining(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend with every connect, read and write bounded by the request deadline."""

    def __init__(self, backend: httpcore.NetworkBackend):
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, _remaining(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(
            path, _remaining(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _deadline_transport(limits: httpx.Limits, proxy: str | None = None) -> httpx.HTTPTransport:
    """httpx's own transport over the deadline backend (httpx exposes no backend parameter).

    With `proxy` the pool is httpcore's proxy pool, a subclass of the plain one: the deadline then
    bounds the connection to the proxy and every read through it.
    """
    transport = httpx.HTTPTransport(limits=limits, proxy=proxy)
    pool = transport._pool
    assert isinstance(pool, httpcore.ConnectionPool), "httpx changed its transport internals"
    pool._network_backend = _DeadlineBackend(pool._network_backend)
    return transport


def _environment_proxy_mounts(limits: httpx.Limits) -> dict[str, httpx.BaseTransport | None]:
    """HTTP(S)_PROXY/ALL_PROXY/NO_PROXY as httpx reads them itself (it ignores them once a transport
    is passed): one deadline transport per proxy; a NO_PROXY pattern maps to None, the direct one."""
    return {
        pattern: None if proxy is None else _deadline_transport(limits, proxy)
        for pattern, proxy in get_environment_proxies().items()
    }


class TokenBucket:
    """Client-side rate limit shared by all threads: `rate` requests/second, bursts of up to `burst`
    (default `rate`; 1 paces requests at least 1/`rate` apart).

    A caller takes a token even when the bucket is empty (the balance goes negative) and sleeps
    outside the lock until its token is due: callers are served in arrival order, none spins.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self._rate = rate
        self._capacity = max(1.0, rate if burst is None else burst)
        self._tokens = self._capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            self._tokens -= 1.0
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or HTTP-date); None when absent or unreadable."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    return seconds if seconds > 0 else 0.0


def rfc3339(moment: datetime) -> str:
    """UTC RFC 3339 with `Z`, as Cast AI expects (`2026-09-02T00:00:00Z`)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"timestamps sent to Cast AI must be timezone-aware, got {moment!r}")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if utc.microsecond else "%Y-%m-%dT%H:%M:%SZ")


class CastAIClient:
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
        self._redact = Redactor([self._api_key])
        if not header_safe(self._api_key.get_secret_value()):
            # h11 would refuse it on every request, quoting it; settings strip and refuse such keys.
            raise CastAIError(
                "the API key holds a control or non-ASCII character (not shown): it cannot be sent "
                "as a header; strip the newline or fix the secret",
                endpoint=base_url,
            )
        self._timeout = timeout_seconds
        self._max_retries = max_retries
        self._max_concurrency = max_concurrency
        self._page_limit = page_limit
        self._max_pages = max_pages
        self._max_backoff = max_backoff_seconds
        self._jitter = tenacity.wait_random_exponential(multiplier=0.5, max=max_backoff_seconds)
        self._bucket = TokenBucket(rate_limit_rps, burst=rate_limit_burst)
        self._log = logger or logging.getLogger(__name__)
        pool = max_concurrency + 5  # cluster fetches + the parallel enrichment calls
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        self._http = httpx.Client(
            base_url=base_url,
            auth=_ApiKeyAuth(self._api_key),
            headers={"Accept": "application/json", "User-Agent": _USER_AGENT},
            timeout=httpx.Timeout(timeout_seconds),
            follow_redirects=False,  # a redirect could carry the key to another host
            transport=transport if transport is not None else _deadline_transport(limits),
            mounts=_environment_proxy_mounts(limits) if transport is None else None,
        )

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
        self._http.close()

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
        clusters = self._decoded(
            CLUSTERS, None, decode_clusters, self._get(CLUSTERS, "/v1/kubernetes/external-clusters")
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
        for page in self._paginate(WORKLOAD_COSTS, path, params, decode_workload_costs_page, cluster_id):
            self._decoded(WORKLOAD_COSTS, cluster_id, assembler.add, page.items)
            assembler.expect_count(page.count)
            assembler.note_no_data_reason(page.no_data_reason)
        table = self._decoded(WORKLOAD_COSTS, cluster_id, assembler.table)
        if assembler.single_last_bucket():
            self._probe_coarser_bucket(cluster_id, path, params, window, assembler.wanted)
        warnings = []
        if assembler.uptime_over_step:
            warnings.append(
                InputWarning(
                    WORKLOAD_COSTS,
                    cluster_id,
                    UPTIME_OVER_STEP,
                    1,
                    f"a bucket reports {assembler.uptime_over_step:g} uptime minutes, more than a "
                    f"stepSeconds={step_seconds} bucket lasts; the buckets are spaced as requested, so "
                    "they are kept (uptime may count pod-minutes)",
                )
            )
        if assembler.duplicates:
            warnings.append(
                InputWarning(
                    WORKLOAD_COSTS,
                    cluster_id,
                    DUPLICATE_WORKLOAD,
                    assembler.duplicates,
                    f"dropped {assembler.duplicates} duplicate workload(s): identical repeats of a workload "
                    "already received (kept the first copy)",
                )
            )
        if assembler.dropped_labels:
            warnings.append(
                InputWarning(
                    WORKLOAD_COSTS,
                    cluster_id,
                    CONTROL_CHARACTERS_IN_LABELS,
                    assembler.dropped_labels,
                    f"left out {assembler.dropped_labels} label(s) whose key or value holds control "
                    "characters (not valid Kubernetes labels); costs are unaffected",
                )
            )
        if assembler.missing_identity:
            warnings.append(
                InputWarning(
                    WORKLOAD_COSTS,
                    cluster_id,
                    MISSING_WORKLOAD_IDENTITY,
                    assembler.missing_identity,
                    f"{assembler.missing_identity} workload(s) without workloadName, workloadType or "
                    f"namespace exported under the placeholder {MISSING_IDENTITY!r}; their costs are kept",
                )
            )
        no_data = assembler.no_data()
        if no_data is not None:
            warnings.append(
                InputWarning(
                    WORKLOAD_COSTS,
                    cluster_id,
                    NO_DATA,
                    1,
                    f"Cast AI has no workload data for the cluster (noDataReason: {no_data}); "
                    "it is absent from the day, which does not mean it cost nothing",
                    detail=no_data,
                )
            )
        for warning in warnings:
            self._log.warning("Cast AI %s cluster %s: %s", warning.endpoint, cluster_id, warning.message)
        self._log.debug("Cast AI workload-costs cluster %s: %d rows", cluster_id, table.num_rows)
        return with_input_warnings(table, [w.to_json() for w in warnings])

    def _probe_coarser_bucket(
        self,
        cluster_id: str,
        path: str,
        params: Sequence[tuple[str, str]],
        window: BucketWindow,
        wanted: Callable[[WorkloadItem], bool],
    ) -> None:
        """Every bucket sat at the window's last timestamp: ask once for (start, end - step].

        A cluster that really ran only in the last bucket has no bucket there; any bucket in that answer
        means the lone timestamp was one coarser bucket covering the whole window (wrong step). Only
        workloads past the namespace filters count, as in the answer being checked.
        """
        step = window.step_seconds
        probe_end = window.end - timedelta(seconds=step)
        query = [(k, rfc3339(probe_end) if k == "endTime" else v) for k, v in params]
        query.append(("page.limit", str(self._page_limit)))
        body = self._get(WORKLOAD_COSTS, path, query, cluster_id=cluster_id)
        page, _ = self._decoded(WORKLOAD_COSTS, cluster_id, decode_workload_costs_page, body)
        if any(item.cost_metrics for item in page.items if wanted(item)):
            coarse = int((window.end - window.start).total_seconds())
            raise CastAIError(
                f"every bucket is at the window's last timestamp {rfc3339(window.end)}, yet the same "
                f"query for ({rfc3339(window.start)}, {rfc3339(probe_end)}] answered buckets too: "
                f"answered {coarse}s buckets, requested stepSeconds={step} (wrong bucket size)",
                endpoint=WORKLOAD_COSTS,
                cluster_id=cluster_id,
                field="timestamp",
                reason="wrong step",
            )

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
        ids = list(cluster_ids)
        if not ids:
            return
        pool = ThreadPoolExecutor(
            max_workers=min(self._max_concurrency, len(ids)), thread_name_prefix="castai"
        )
        pending: deque[tuple[str, Future[pa.Table]]] = deque()
        submitted = 0
        try:
            while pending or submitted < len(ids):
                while submitted < len(ids) and len(pending) < self._max_concurrency:
                    cluster_id = ids[submitted]
                    future = pool.submit(
                        self.workload_costs,
                        cluster_id,
                        start,
                        end,
                        step_seconds,
                        labels=labels,
                        include_namespaces=include_namespaces,
                        exclude_namespaces=exclude_namespaces,
                    )
                    pending.append((cluster_id, future))
                    submitted += 1
                cluster_id, future = pending.popleft()
                yield cluster_id, future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def workload_label_names(self, start: datetime, end: datetime, cluster_ids: Sequence[str]) -> list[str]:
        """Every Kubernetes label name on the clusters' workloads in [start, end], sorted and distinct.

        Cast AI returns a workload's labels only for the keys named in `labelsToInclude`; this listing
        (`POST /v1/cost-reports/workload-labels/names`) is how "all labels" is asked for.
        """
        params = [("startTime", rfc3339(start)), ("endTime", rfc3339(end))]
        body = json.dumps({"clusterIds": sorted(cluster_ids)}).encode()
        path = "/v1/cost-reports/workload-labels/names"
        names: set[str] = set()
        for page in self._paginate(LABEL_NAMES, path, params, decode_label_names_page, json_body=body):
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
        body = self._get(CLUSTER_COST, path, params, cluster_id=cluster_id)
        return self._decoded(CLUSTER_COST, cluster_id, decode_cost_report, body, window)

    def cluster_prices(self) -> dict[str, ClusterPrice]:
        """Custom (or default-marked) CPU/memory unit prices by cluster id."""
        path = f"/pricing/v1/organizations/{quote(self.organization_id, safe='')}/clusters/prices"
        prices: dict[str, ClusterPrice] = {}
        for page in self._paginate(CLUSTER_PRICES, path, [], decode_cluster_prices_page):
            for price in page:
                prices.setdefault(price.cluster_id, price)
        return prices

    def default_pricing(self) -> DefaultPricing | None:
        """The organization's default CPU/memory prices; None when the endpoint answers 404."""
        path = (
            f"/pricing/v1beta/organizations/{quote(self.organization_id, safe='')}"
            "/anywhere-cluster-default-pricing"
        )
        try:
            body = self._get(DEFAULT_PRICING, path)
        except CastAIError as exc:
            if exc.status == 404:
                return None
            raise
        return self._decoded(DEFAULT_PRICING, None, decode_default_pricing, body)

    def discounts(self) -> list[Discount]:
        """Every discount (enabled or not: the consumer decides); discounts without pricing are skipped."""
        discounts: list[Discount] = []
        for page in self._paginate(DISCOUNTS, "/v1/discounts", [], decode_discounts_page):
            discounts.extend(page.discounts)
            if page.unpriced_ids:
                self._log.warning(
                    "Cast AI discounts: skipped %d discount(s) without pricing: %s",
                    len(page.unpriced_ids),
                    ", ".join(page.unpriced_ids),
                )
        return discounts

    def child_organizations(self, enterprise_id: str) -> dict[str, ChildOrganization]:
        """Child organisations of an enterprise, by organisation id (the documented listing, paged)."""
        path = f"/organization-management/v1/enterprises/{quote(enterprise_id, safe='')}/organizations"
        children: dict[str, ChildOrganization] = {}
        for page in self._paginate(ENTERPRISE_ORGANIZATIONS, path, [], decode_child_organizations_page):
            for child in page:
                children.setdefault(child.id, child)
        return children

    def platform_usage(self) -> list[FeatureUsage]:
        """Current-month Cast AI platform usage per feature."""
        body = self._get(PLATFORM_USAGE, "/v1/billing/platform-usage-report")
        return self._decoded(PLATFORM_USAGE, None, decode_platform_usage, body)

    # ---------------------------------------------------------------------------------------------
    # Plumbing

    def _paginate(
        self,
        endpoint: str,
        path: str,
        params: Sequence[tuple[str, str]],
        decode_page: Callable[[bytes], tuple[T, str | None]],
        cluster_id: str | None = None,
        json_body: bytes | None = None,
    ) -> Iterator[T]:
        """Follow the page cursor until it is empty or missing; a repeated cursor is an error."""
        seen: set[str] = set()
        cursor: str | None = None
        for page_number in range(1, self._max_pages + 1):
            query = [*params, ("page.limit", str(self._page_limit))]
            if cursor:
                query.append(("page.cursor", cursor))
            body = self._get(endpoint, path, query, cluster_id=cluster_id, json_body=json_body)
            page, cursor = self._decoded(endpoint, cluster_id, decode_page, body)
            del body
            yield page
            if not cursor:
                return
            if cursor in seen:
                raise CastAIError(
                    f"cursor loop: page {page_number} returned a cursor already followed",
                    endpoint=endpoint,
                    cluster_id=cluster_id,
                    reason="cursor loop",
                )
            seen.add(cursor)
        raise CastAIError(
            f"more than {self._max_pages} pages (page.limit={self._page_limit}); giving up",
            endpoint=endpoint,
            cluster_id=cluster_id,
            reason="page cap",
        )

    def _decoded(self, endpoint: str, cluster_id: str | None, decode: Callable[..., T], *args: object) -> T:
        try:
            return decode(*args)
        except InvalidResponse as exc:
            detail = self._clean(str(exc))
            if exc.reason == "invalid JSON":
                detail = f"invalid JSON from {endpoint}: {detail.removeprefix('invalid JSON: ')}"
            raise CastAIError(
                detail, endpoint=endpoint, cluster_id=cluster_id, field=exc.field, reason=exc.reason
            ) from None

    def _get(
        self,
        endpoint: str,
        path: str,
        params: Sequence[tuple[str, str]] = (),
        *,
        cluster_id: str | None = None,
        json_body: bytes | None = None,
    ) -> bytes:
        """GET (POST with `json_body`, for read-only POSTs) with retries on 429/502/503/504, timeouts and
        connection errors; returns the 2xx body.

        HTTP 500 is not retried: Cast AI answers it to a request it cannot serve (an unknown
        organisation id), the same every time.
        """
        attempts = self._max_retries + 1
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception(_retryable),
            before_sleep=lambda state: self._log_retry(endpoint, cluster_id, attempts, state),
            reraise=True,
        )
        try:
            return retrying(self._get_once, endpoint, path, params, cluster_id, json_body)
        except _RetryableResponse as exc:
            raise CastAIError(
                f"{exc.detail} (gave up after {attempts} attempt(s))",
                endpoint=endpoint,
                cluster_id=cluster_id,
                status=exc.status,
                transient=True,
            ) from None
        except httpx.TimeoutException as exc:
            raise CastAIError(
                f"no complete answer within {self._timeout:g} s (CASTAI_TIMEOUT_SECONDS, "
                f"{type(exc).__name__}); gave up after {attempts} attempt(s)",
                endpoint=endpoint,
                cluster_id=cluster_id,
                reason="timeout",
                transient=True,
            ) from None
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
            raise CastAIError(
                f"the request itself is invalid ({type(exc).__name__}: {self._clean(str(exc))}); not retried",
                endpoint=endpoint,
                cluster_id=cluster_id,
                reason="invalid request",
            ) from None
        except httpx.TransportError as exc:
            raise CastAIError(
                f"{type(exc).__name__}: {self._clean(str(exc))} (gave up after {attempts} attempt(s))",
                endpoint=endpoint,
                cluster_id=cluster_id,
                reason="connection error",
                transient=True,
            ) from None

    def _get_once(
        self,
        endpoint: str,
        path: str,
        params: Sequence[tuple[str, str]],
        cluster_id: str | None,
        json_body: bytes | None = None,
    ) -> bytes:
        self._bucket.acquire()
        with _deadline(self._timeout):
            if json_body is None:
                response = self._http.get(path, params=list(params))
            else:
                headers = {"Content-Type": "application/json"}
                response = self._http.post(path, params=list(params), headers=headers, content=json_body)
        if response.is_success:
            return response.content
        message, field = error_message(response.content)
        detail = self._clean(message)
        if response.status_code in RETRYABLE_STATUSES:
            raise _RetryableResponse(
                response.status_code, detail, retry_after_seconds(response.headers.get("retry-after"))
            )
        raise CastAIError(
            detail, endpoint=endpoint, cluster_id=cluster_id, field=field, status=response.status_code
        )

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Capped exponential backoff with full jitter, never shorter than Retry-After (itself capped)."""
        delay = self._jitter(state)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _RetryableResponse) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return min(delay, self._max_backoff)

    def _log_retry(
        self, endpoint: str, cluster_id: str | None, attempts: int, state: tenacity.RetryCallState
    ) -> None:
        error = state.outcome.exception() if state.outcome else None
        what = f"HTTP {error.status}" if isinstance(error, _RetryableResponse) else type(error).__name__
        where = f" cluster {cluster_id}" if cluster_id else ""
        sleep = state.next_action.sleep if state.next_action else 0.0
        self._log.info(
            "Cast AI %s%s: %s, attempt %d/%d, retrying in %.2f s",
            endpoint,
            where,
            what,
            state.attempt_number,
            attempts,
            sleep,
        )

    def _clean(self, text: str) -> str:
        """Server text made safe for messages: key redacted, one line, printable, truncated."""
        text = self._redact(text)
        text = "".join(ch for ch in " ".join(text.split()) if ch.isprintable())
        return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 1] + "…"
