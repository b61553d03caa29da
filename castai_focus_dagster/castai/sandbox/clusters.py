"""The sandbox's clusters and child organisations, as specified and as Cast AI lists them."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

from castai_focus_dagster.castai.sandbox.discounts import (
    Discount,
    relevant_discounts,
)
from castai_focus_dagster.castai.sandbox.hours import uid
from castai_focus_dagster.castai.sandbox.metrics import (
    DEFAULT_CPU_HOURLY_PRICE,
    DEFAULT_MEMORY_GIB_HOURLY_PRICE,
    LIST_PRICES,
)
from castai_focus_dagster.castai.sandbox.workloads import (
    Workloads,
    build_workloads,
)


class ClusterSpec(NamedTuple):
    name: str
    provider: str
    region: str | None
    region_display: str | None
    zones: tuple[str, ...]
    tags: dict[str, str]
    custom_price: tuple[float, float] | None  # (cpu, memory GiB) hourly; None = org default price
    child: int  # index of the owning child organisation
    gpu_hourly_price: float
    storage_gib_month_price: float


CLUSTER_SPECS: tuple[ClusterSpec, ...] = (
    ClusterSpec("prod-eks-eu", "eks", "eu-central-1", "EU (Frankfurt)", ("eu-central-1a", "eu-central-1b"),
                 {"env": "prod", "team": "platform", "cost-center": "cc-100"}, None, 0, 0.526, 0.08),
    ClusterSpec("prod-gke-us", "gke", "us-central1", "Iowa (us-central1)",
                 ("us-central1-a", "us-central1-b"),
                 {"env": "prod", "team": "data"}, None, 1, 0.35, 0.10),
    ClusterSpec("staging-aks-weu", "aks", "westeurope", "West Europe", ("westeurope-1", "westeurope-2"),
                 {"env": "staging", "cost-center": "cc-200"}, None, 0, 0.526, 0.0754),
    ClusterSpec("onprem-anywhere", "anywhere", None, None, (), {}, (0.021500, 0.002900), 1, 0.40, 0.05),
    ClusterSpec("dev-eks-us", "eks", "us-east-1", "US East (N. Virginia)", ("us-east-1a",),
                 {"env": "dev", "owner": "platform-team"}, None, 1, 0.526, 0.08),
    # An Anywhere cluster on the org's default pricing (the default organisation has all six specs).
    ClusterSpec("edge-anywhere", "anywhere", None, None, (), {"env": "edge"}, None, 0, 0.40, 0.05),
)  # fmt: skip

CHILD_ORGANIZATION_NAMES = ("Acme Platform", "Acme Data & Analytics")


@dataclass(frozen=True)
class ChildOrganization:
    id: str
    name: str


@dataclass(frozen=True, eq=False)
class SandboxCluster:
    """One cluster: API identity (`to_api`), prices, idle share and its workloads."""

    index: int
    id: str
    name: str
    organization_id: str
    provider_type: str
    region_name: str | None
    region_display_name: str | None
    zones: tuple[str, ...]
    tags: dict[str, str]
    credentials_id: str
    provider_account: str
    created_at: str
    cpu_hourly_price: float  # list price (cloud) or ClusterPrice (Anywhere: custom or the org default)
    memory_gib_hourly_price: float
    price_is_default: bool
    price_id: str
    gpu_hourly_price: float
    storage_gib_hourly_price: float
    spot_ratio: float  # spot price / on-demand price, before hourly movement
    idle_share: float  # share of the cluster's capacity (and cost) that no workload requests
    noise_key: int
    workloads: Workloads
    discounts: tuple[Discount, ...] = ()  # enabled discounts that change this cluster's prices

    def to_api(self) -> dict[str, Any]:
        """`externalcluster.v1.Cluster`; `region` is null for the anywhere cluster."""
        region = (
            {"name": self.region_name, "displayName": self.region_display_name} if self.region_name else None
        )
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "organizationId": self.organization_id,
            "credentialsId": self.credentials_id,
            "clusterNameId": f"{self.name}-{self.id[:8]}",
            "createdAt": self.created_at,
            "deletedAt": None,
            "firstOperationAt": self.created_at,
            "agentSnapshotReceivedAt": "2026-01-01T00:00:00.000000Z",
            "agentStatus": "online",
            "status": "ready",
            "providerType": self.provider_type,
            "region": region,
            "zones": [{"id": zone, "name": zone} for zone in self.zones],
            "tags": dict(self.tags),
            "kubernetesVersion": "1.31",
            "managedBy": "terraform" if self.index % 2 == 0 else "console",
            "providerNamespaceId": self.provider_account,
            "isPhase2": self.provider_type != "anywhere",
        }
        data[self.provider_type] = self._provider_block()
        return data

    def _provider_block(self) -> dict[str, Any]:
        if self.provider_type == "eks":
            return {"accountId": self.provider_account, "clusterName": self.name, "region": self.region_name}
        if self.provider_type == "gke":
            return {"clusterName": self.name, "location": self.region_name,
                    "projectId": self.provider_account, "region": self.region_name}  # fmt: skip
        if self.provider_type == "aks":
            return {"clusterResourceGroup": f"rg-{self.name}", "nodeResourceGroup": f"MC_rg-{self.name}",
                    "region": self.region_name, "subscriptionId": self.provider_account}  # fmt: skip
        return {"clusterName": self.name, "kubeSystemNamespaceId": self.provider_account}

    def price_to_api(self) -> dict[str, Any]:
        """`castai.inventory.v1beta1.ClusterPrice`."""
        return {
            "id": self.price_id,
            "organizationId": self.organization_id,
            "clusterId": self.id,
            "memoryGibHourlyPrice": f"{self.memory_gib_hourly_price:.6f}",
            "cpuHourlyPrice": f"{self.cpu_hourly_price:.6f}",
            "createTime": self.created_at,
            "updateTime": self.created_at,
            "default": self.price_is_default,
        }

    def provisioned_cpus(self) -> float:
        """Average provisioned vCPUs (requested base load plus idle), the unit of billing usage."""
        p = self.workloads.params
        requested = float(np.sum(p.base_pods.sum(axis=1) * p.cpu_per_pod))
        return requested / (1.0 - self.idle_share)


def build_cluster(
    seed: int, index: int, cluster_ids: Sequence[str], children: Sequence[ChildOrganization],
    discounts: Sequence[Discount], workloads_per_cluster: int, ids: random.Random,
) -> SandboxCluster:  # fmt: skip
    spec = CLUSTER_SPECS[index % len(CLUSTER_SPECS)]
    rng = np.random.default_rng([seed, index])
    suffix = "" if index < len(CLUSTER_SPECS) else f"-{index // len(CLUSTER_SPECS):02d}"
    cpu_price, memory_price = spec.custom_price or LIST_PRICES.get(
        spec.provider, (DEFAULT_CPU_HOURLY_PRICE, DEFAULT_MEMORY_GIB_HOURLY_PRICE)
    )
    created = datetime(2025, 1 + index % 12, 1 + index % 28, 8 + index % 10, 0, 0, tzinfo=UTC)
    cluster = SandboxCluster(
        index=index,
        id=cluster_ids[index],
        name=spec.name + suffix,
        organization_id=children[spec.child].id,
        provider_type=spec.provider,
        region_name=spec.region,
        region_display_name=spec.region_display,
        zones=spec.zones,
        tags=dict(spec.tags),
        credentials_id=uid(ids),
        provider_account=f"{ids.getrandbits(40):012d}",
        created_at=created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        cpu_hourly_price=cpu_price,
        memory_gib_hourly_price=memory_price,
        price_is_default=spec.custom_price is None,
        price_id=uid(ids),
        gpu_hourly_price=spec.gpu_hourly_price,
        storage_gib_hourly_price=spec.storage_gib_month_price / 730.0,
        spot_ratio=float(rng.uniform(0.36, 0.44)),
        idle_share=float(rng.uniform(0.10, 0.30)),
        noise_key=int(rng.integers(0, 2**63)),
        workloads=build_workloads(rng, index, len(cluster_ids), workloads_per_cluster, spec),
    )
    return replace(cluster, discounts=relevant_discounts(cluster, discounts))
