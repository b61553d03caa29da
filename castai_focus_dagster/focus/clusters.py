"""Per-cluster FOCUS attributes (accounts, regions, host provider, custom prices), built once per cluster."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from castai_focus_dagster.castai.models import Cluster, EnrichmentContext
from castai_focus_dagster.focus.options import FocusOptions

# Cast AI `providerType` -> FOCUS HostProviderName. Unknown types keep their own (readable) name.
HOST_PROVIDER_NAMES: dict[str, str] = {
    "eks": "AWS",
    "selfhostedwithec2nodes": "AWS",
    "gke": "Google Cloud",
    "aks": "Microsoft Azure",
    "oke": "Oracle Cloud Infrastructure",
    "openshift": "Red Hat OpenShift",
    "kops": "Self-managed (kOps)",
    "anywhere": "Self-managed",
}


def is_anywhere(cluster: Cluster) -> bool:
    """A Cast AI Anywhere cluster: the only kind Cast AI's default and cluster prices are documented for."""
    return cluster.provider_type.strip().lower() == "anywhere"


def host_provider_name(provider_type: str, service_provider_name: str) -> str:
    """FOCUS: the host when exposed; when it cannot be determined, the service provider itself."""
    key = provider_type.strip().lower()
    if not key:
        return service_provider_name
    return HOST_PROVIDER_NAMES.get(key, provider_type.strip())


def billing_account_id(cluster: Cluster, configured_organization_id: str) -> str:
    """The organisation that owns the cluster (BillingAccountId, as in the original exporter); the
    configured organisation when Cast AI names none."""
    return cluster.organization_id or configured_organization_id


@dataclass(frozen=True)
class ClusterInfo:
    """Per-cluster attributes, aligned with the `cluster_id` dictionary of the source table."""

    clusters: list[Cluster]
    id: pa.Array
    name: pa.Array
    host_provider: pa.Array
    billing_account_id: pa.Array  # the cluster's organisation, as the original exporter
    billing_account_name: pa.Array
    region_id: pa.Array
    region_name: pa.Array
    sub_account_id: pa.Array
    sub_account_name: pa.Array
    sub_account_type: pa.Array
    custom_cpu_price: np.ndarray  # NaN: no custom price for this cluster
    custom_memory_price: np.ndarray
    is_anywhere: np.ndarray  # bool: a Cast AI Anywhere cluster (priced by Cast AI's cluster prices)

    @classmethod
    def build(
        cls,
        cluster_ids: list[str],
        clusters: Mapping[str, Cluster],
        context: EnrichmentContext,
        options: FocusOptions,
    ) -> ClusterInfo:
        unknown = sorted(set(cluster_ids) - set(clusters))
        if unknown:
            raise ValueError(
                f"workload costs reference cluster(s) {', '.join(unknown)} missing from the cluster list"
            )
        resolved = [clusters[cid] for cid in cluster_ids]

        def sub_account(c: Cluster) -> tuple[str, str, str]:
            child = context.child_organizations.get(c.organization_id) if options.enterprise_id else None
            if child is not None:
                return child.id, child.name, "Organization"
            return c.id, c.name, "Cluster"

        def custom(c: Cluster, attribute: str) -> float:
            # Cast AI documents cluster prices for Anywhere clusters only.
            price = context.cluster_prices.get(c.id) if is_anywhere(c) else None
            return float("nan") if price is None or price.is_default else float(getattr(price, attribute))

        subs = [sub_account(c) for c in resolved]
        accounts = [billing_account_id(c, options.organization_id) for c in resolved]
        region_ids = [c.region_name or None for c in resolved]
        return cls(
            clusters=resolved,
            id=pa.array([c.id for c in resolved], pa.string()),
            name=pa.array([c.name for c in resolved], pa.string()),
            host_provider=pa.array(
                [host_provider_name(c.provider_type, options.service_provider_name) for c in resolved],
                pa.string(),
            ),
            billing_account_id=pa.array(accounts, pa.string()),
            billing_account_name=pa.array([options.billing_account_name or a for a in accounts], pa.string()),
            region_id=pa.array(region_ids, pa.string()),
            region_name=pa.array(
                [
                    (c.region_display_name or c.region_name) if rid else None
                    for c, rid in zip(resolved, region_ids, strict=True)
                ],
                pa.string(),
            ),
            sub_account_id=pa.array([s[0] for s in subs], pa.string()),
            sub_account_name=pa.array([s[1] for s in subs], pa.string()),
            sub_account_type=pa.array([s[2] for s in subs], pa.string()),
            custom_cpu_price=np.array([custom(c, "cpu_hourly_price") for c in resolved], dtype=np.float64),
            custom_memory_price=np.array(
                [custom(c, "memory_gib_hourly_price") for c in resolved], dtype=np.float64
            ),
            is_anywhere=np.array([is_anywhere(c) for c in resolved], dtype=bool),
        )
