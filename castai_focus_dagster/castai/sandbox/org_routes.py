"""The sandbox's organisation-wide endpoints (prices, usage, enterprise children, label names,
discounts): handlers that read only the `SandboxOrg`, bound to it by `SandboxApi`'s route table."""

from __future__ import annotations

import json

from castai_focus_dagster.castai.sandbox.billing import features, subscriptions
from castai_focus_dagster.castai.sandbox.org import SandboxOrg
from castai_focus_dagster.castai.sandbox.protocol import ApiError, Request, Response, json_bytes, paged


def known_org(org: SandboxOrg, request: Request, org_id: str) -> None:
    if org_id not in org.known_organization_ids():
        raise ApiError(
            404,
            f"organization {org_id} not found ({request.endpoint()})",
            [("organizationId", "not found")],
        )


def cluster_prices(org: SandboxOrg, request: Request, scope: str, org_id: str) -> Response:
    known_org(org, request, org_id)
    priced = [c for c in org.priced_clusters() if c in org.clusters_of(org_id)]
    page, cursor = paged(request, priced)
    return Response(200, json_bytes({"items": [c.price_to_api() for c in page], "nextPageCursor": cursor}))


def default_pricing(org: SandboxOrg, request: Request, scope: str, org_id: str) -> Response:
    known_org(org, request, org_id)
    return Response(200, json_bytes({
        "cpuHourlyPrice": f"{org.default_cpu_hourly_price:.6f}",
        "memoryGibHourlyPrice": f"{org.default_memory_gib_hourly_price:.6f}",
    }))  # fmt: skip


def platform_usage(org: SandboxOrg, request: Request, scope: str) -> Response:
    clusters = org.clusters_of(scope)
    return Response(
        200, json_bytes({"subscriptions": subscriptions(clusters), "features": features(clusters)})
    )


def enterprise_usage(org: SandboxOrg, request: Request, scope: str) -> Response:
    if scope not in (org.organization_id, org.enterprise_id):
        raise ApiError(404, f"organization {scope} is not an enterprise organization ({request.endpoint()})")
    organizations = [
        {"organizationId": child.id, "organizationName": child.name,
         "features": features(org.clusters_of(child.id))}
        for child in org.child_organizations
    ]  # fmt: skip
    return Response(200, json_bytes({"enterpriseId": org.enterprise_id, "organizations": organizations}))


def child_organizations(org: SandboxOrg, request: Request, scope: str, enterprise_id: str) -> Response:
    if enterprise_id != org.enterprise_id:
        raise ApiError(
            404,
            f"enterprise {enterprise_id} not found ({request.endpoint()})",
            [("enterpriseId", "not found")],
        )
    page, cursor = paged(request, org.child_organizations)
    items = [{"id": c.id, "name": c.name, "parentId": enterprise_id} for c in page]
    return Response(200, json_bytes({"items": items, "nextPageCursor": cursor}))


def label_names(org: SandboxOrg, request: Request, scope: str) -> Response:
    """Label names of the workloads of the body's `clusterIds` (empty: every visible cluster)."""
    missing = [(n, "required RFC 3339 date-time") for n in ("startTime", "endTime") if not request.first(n)]
    if missing:
        raise ApiError(400, f"invalid request parameters for {request.endpoint()}", missing)
    try:
        body = json.loads(request.body) if request.body.strip() else {}
    except ValueError:
        raise ApiError(400, f"invalid WorkloadLabelFilters body for {request.endpoint()}") from None
    wanted = set(body.get("clusterIds") or []) if isinstance(body, dict) else set()
    namespaces = set(body.get("namespaces") or []) if isinstance(body, dict) else set()
    names: set[str] = set()
    for cluster in org.clusters_of(scope):
        if wanted and cluster.id not in wanted:
            continue
        workloads = cluster.workloads
        for row, labels in enumerate(workloads.labels):
            if not namespaces or workloads.namespaces[row] in namespaces:
                names.update(labels)
    ordered = sorted(names)
    page, cursor = paged(request, ordered)
    return Response(
        200, json_bytes({"labelNames": list(page), "nextCursor": cursor, "count": str(len(ordered))})
    )


def discounts(org: SandboxOrg, request: Request, scope: str) -> Response:
    page, cursor = paged(request, org.discounts)
    return Response(200, json_bytes({"discounts": [d.to_api() for d in page], "nextPageToken": cursor}))
