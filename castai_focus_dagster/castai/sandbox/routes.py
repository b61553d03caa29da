"""The sandbox API without sockets: auth, organisation scope, faults, routing and the cluster
endpoints' handlers (the organisation-wide ones are in `org_routes`).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from castai_focus_dagster.castai.sandbox import org_routes
from castai_focus_dagster.castai.sandbox.clusters import SandboxCluster
from castai_focus_dagster.castai.sandbox.faults import FaultPlan, Faults
from castai_focus_dagster.castai.sandbox.filters import (
    body_filter,
    filtered_positions,
    query_filter,
)
from castai_focus_dagster.castai.sandbox.metrics import HOUR_SECONDS
from castai_focus_dagster.castai.sandbox.protocol import (
    ApiError,
    RecordedRequest,
    Request,
    Response,
    Window,
    corrupt,
    encode_cursor,
    error,
    fault_response,
    json_bytes,
    json_str,
    page_bounds,
    parse_window,
)
from castai_focus_dagster.castai.sandbox.render import (
    RenderedWindow,
    render_window,
    workload_items,
)
from castai_focus_dagster.castai.sandbox.window_cache import WindowCache, WindowKey

if TYPE_CHECKING:
    from castai_focus_dagster.castai.sandbox.server import SandboxServer

logger = logging.getLogger(__name__)

REDACTED = "REDACTED"
_SECRET_HEADERS = ("x-api-key", "authorization")

_Handler = Callable[..., Response]


class SandboxApi:
    """Routing, auth, faults and the endpoint handlers; knows nothing about sockets."""

    def __init__(self, server: SandboxServer):
        self._server = server
        self._org = server.org
        self._windows = WindowCache()
        self._requests_lock = threading.Lock()
        clusters, organizations = (
            "/v1/cost-reports/clusters/(?P<cluster_id>[^/]+)",
            "organizations/(?P<org_id>[^/]+)",
        )
        get, get_post = frozenset({"GET"}), frozenset({"GET", "POST"})
        org = self._org
        self._routes: list[tuple[frozenset[str], re.Pattern[str], _Handler]] = [
            (get, re.compile("/v1/kubernetes/external-clusters"), self._clusters),
            (get_post, re.compile(f"{clusters}/workload-costs"), self._workload_costs),
            (get, re.compile(f"{clusters}/cost"), self._cluster_cost),
            (get, re.compile(f"/pricing/v1/{organizations}/clusters/prices"),
             partial(org_routes.cluster_prices, org)),
            (get, re.compile(f"/pricing/v1beta/{organizations}/anywhere-cluster-default-pricing"),
             partial(org_routes.default_pricing, org)),
            (get, re.compile("/v1/billing/platform-usage-report"), partial(org_routes.platform_usage, org)),
            (get, re.compile("/v1/billing/enterprise/usage-report"),
             partial(org_routes.enterprise_usage, org)),
            (get, re.compile("/organization-management/v1/enterprises/(?P<enterprise_id>[^/]+)"
                             "/organizations"), partial(org_routes.child_organizations, org)),
            (get, re.compile("/v1/discounts"), partial(org_routes.discounts, org)),
            (frozenset({"POST"}), re.compile("/v1/cost-reports/workload-labels/names"),
             partial(org_routes.label_names, org)),
        ]  # fmt: skip

    # Entry point ------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Response:
        parts = urlsplit(target)
        request = Request(method, parts.path, parse_qs(parts.query, keep_blank_values=True), headers, body)
        self._record(request)
        if request.path == "/healthz":
            return Response(200, b'{"status":"ok"}')
        plan = FaultPlan()
        try:
            scope = self._authorize(request)
            faults = self._server.faults
            plan = faults.plan(request.path, f"{method} {target}")
            response = self._answer(request, scope, plan, faults)
        except ApiError as exc:
            response = exc.response()
        except Exception:  # a sandbox bug: answer like Cast AI would, keep the traceback visible
            logger.exception("sandbox failed on %s", request.endpoint())
            response = error(500, "Internal Server Error")
        if plan.trickle_seconds:
            response = replace(response, trickle_seconds=plan.trickle_seconds)
        return response

    def _answer(self, request: Request, scope: str, plan: FaultPlan, faults: Faults) -> Response:
        if plan.delay_seconds:
            self._server.wait(plan.delay_seconds)
        if plan.status is not None:
            return fault_response(plan)
        canned = faults.canned(request.path, request.query)
        if canned is not None:
            return Response(canned.status, canned.body, canned.content_type, dict(canned.headers))
        return corrupt(self._route(request, scope), plan)

    def wait(self, seconds: float) -> bool:
        """Sleep like a fault's delay; True when the server is stopping (stop sending)."""
        return self._server.wait(seconds)

    def _record(self, request: Request) -> None:
        headers = {k: (REDACTED if k in _SECRET_HEADERS else v) for k, v in request.headers.items()}
        try:
            parsed = json.loads(request.body) if request.body else None
        except ValueError:
            parsed = None
        with self._requests_lock:
            self._server.requests.append(
                RecordedRequest(request.method, request.path, request.query, headers, parsed)
            )

    def _authorize(self, request: Request) -> str:
        """Check the API key; return the organisation the request acts for."""
        key = request.headers.get("x-api-key", "")
        authorization = request.headers.get("authorization", "")
        if not key and authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
        if not hmac.compare_digest(key.encode(), self._org.api_key.encode()):
            raise ApiError(401, "Unauthorized")
        organization = request.headers.get("x-castai-organization-id", "").strip()
        if not organization:
            return self._org.organization_id
        if organization not in self._org.known_organization_ids():
            raise ApiError(500, "Internal Server Error")
        return organization

    def _route(self, request: Request, scope: str) -> Response:
        for methods, pattern, handler in self._routes:
            match = pattern.fullmatch(request.path)
            if match:
                if request.method not in methods:
                    raise ApiError(405, f"method {request.method} not allowed on {request.path}")
                return handler(request, scope, **match.groupdict())
        raise ApiError(404, f"no such endpoint: {request.path}")

    def render(self, cluster: SandboxCluster, window: Window, *, cost_only: bool = False) -> RenderedWindow:
        """Cached render; a full render also serves `cost_only` requests. A window of the
        `active_hours` fault (tests only) is rendered afresh."""
        if window.active_hours is not None:
            return render_window(self._org, cluster, window, cost_only=cost_only)
        base = (
            cluster.id,
            window.start_hour,
            window.n_buckets,
            window.hours_per_bucket,
            window.listing,
            window.cost_scale,
        )
        if cost_only:
            full = self._windows.peek(base)
            if full is not None:
                return full
        key: WindowKey = (*base, cost_only)
        return self._windows.get(key, lambda: render_window(self._org, cluster, window, cost_only=cost_only))

    def prerender(self, cluster: SandboxCluster, window: Window) -> None:
        """Pin the workload-costs window and the /cost body at listing prices (the exporter asks both)."""
        key = (cluster.id, window.start_hour, window.n_buckets, window.hours_per_bucket)
        self._windows.pin((*key, False, 1.0, False), render_window(self._org, cluster, window))
        listing = replace(window, listing=True)
        self._windows.pin((*key, True, 1.0, True), render_window(self._org, cluster, listing, cost_only=True))

    # Endpoints --------------------------------------------------------------------------------

    def _clusters(self, request: Request, scope: str) -> Response:
        faults = self._server.faults
        clusters = [
            c
            for c in self._org.clusters_of(scope)
            if not faults.unlist_all_clusters and c.id not in faults.unlisted_clusters
        ]
        items = [c.to_api() for c in clusters]
        for item in items:
            if item["id"] in faults.deleted_clusters:
                item.update(deletedAt=faults.deleted_clusters[item["id"]], status="deleted")
        return Response(200, json_bytes({"items": items}))

    def _scoped_cluster(self, request: Request, scope: str, cluster_id: str) -> SandboxCluster:
        for cluster in self._org.clusters_of(scope):
            if cluster.id == cluster_id:
                return cluster
        raise ApiError(
            404, f"cluster {cluster_id} not found ({request.endpoint()})", [("clusterId", "not found")]
        )

    def _served_window(self, request: Request) -> Window:
        """The requested window, or (fault `answer_step_seconds`) the same span in buckets of another size;
        (fault `cost_scale`) with every cost multiplied, (fault `active_hours`) with workloads that ran
        only in some hours of the day, answered sparsely."""
        faults = self._server.faults
        window = parse_window(request)
        scaled, scale = faults.answer(faults.cost_scale, request.path)
        if scaled and scale is not None:
            window = replace(window, cost_scale=float(scale))
        active, hours = faults.answer(faults.active_hours, request.path)
        if active and hours is not None:
            window = replace(window, active_hours=frozenset(hours))
        matched, step = faults.answer(faults.answer_step_seconds, request.path)
        if not matched or step is None:
            return window
        hours_per_bucket = max(1, step // HOUR_SECONDS)
        return replace(
            window, n_buckets=max(1, window.hours // hours_per_bucket), hours_per_bucket=hours_per_bucket
        )

    def _workload_costs(self, request: Request, scope: str, cluster_id: str) -> Response:
        cluster = self._scoped_cluster(request, scope, cluster_id)
        faults = self._server.faults
        no_data, reason = faults.answer(faults.no_data, request.path)
        deleted_at = faults.deleted_clusters.get(cluster.id)
        deleted_seconds = datetime.fromisoformat(deleted_at).timestamp() if deleted_at else None
        if deleted_seconds is not None and parse_window(request).start_hour * HOUR_SECONDS >= deleted_seconds:
            no_data, reason = True, None
        if no_data:
            parse_window(request)  # still validated
            reason_field = "" if reason is None else f',"noDataReason":{json_str(reason)}'
            body = (
                f'{{"clusterId":{json_str(cluster.id)},"items":[]{reason_field},"nextCursor":"","count":"0"}}'
            )
            return Response(200, body.encode("utf-8"))
        window = self._served_window(request)
        workload_filter = body_filter(request) if request.method == "POST" else query_filter(request)
        offset, limit = page_bounds(request)
        labels_to_include = list(dict.fromkeys(request.query.get("labelsToInclude", [])))
        rendered = self.render(cluster, window)
        positions = filtered_positions(cluster, rendered.rows, workload_filter)
        page = list(positions[offset : offset + limit])
        _, omitted = faults.answer(faults.omit_identity, request.path)
        left_out = set(omitted or ())
        bare, bare_reason = faults.answer(faults.no_data_keep_items, request.path)
        reason_field = (
            "" if bare and bare_reason is None else f'"noDataReason":{json_str(bare_reason or "Unknown")},'
        )
        if faults.duplicate_workloads and 0 < offset <= len(positions):
            page.insert(0, positions[offset - 1])
        if faults.cursor_loop:
            next_cursor = encode_cursor(limit)
        else:
            next_cursor = encode_cursor(offset + limit) if offset + limit < len(positions) else ""
        items = workload_items(cluster, rendered, page, labels_to_include, left_out, bare=bare)
        body = (
            f'{{"clusterId":{json_str(cluster.id)},"items":[{",".join(items)}],{reason_field}'
            f'"nextCursor":{json_str(next_cursor)},"count":"{len(positions)}"}}'
        )
        return Response(200, body.encode("utf-8"))

    def _cluster_cost(self, request: Request, scope: str, cluster_id: str) -> Response:
        cluster = self._scoped_cluster(request, scope, cluster_id)
        window = self._served_window(request)
        return Response(200, self.render(cluster, window, cost_only=True).cluster_cost_body)
