"""The sandbox's synthetic Cast AI organisation and its exact ground truth.

Why it exists: the exporter must be tested against numbers that are known independently of the
JSON it parses. Every workload has an exact per-HOUR value for every metric, a pure function of
(seed, cluster, workload, hour): `hourly_metrics` computes it with numpy for any set of hours, so
any window, any bucket size and any order of requests see the same numbers. A bucket reports the
mean of its hours (Cast AI's "average hourly" rates); `expected_workload_total` sums the exact
per-hour rates, never the rounded strings the server emits.

Model (all values synthetic, sized like a real organisation):
- Hierarchy: the API key belongs to `organization_id` (settings.SANDBOX_ORGANIZATION_ID), the
  billed organisation. It is an enterprise-wide key of enterprise `enterprise_id`, whose child
  organisations own the clusters (`Cluster.organizationId` is always a child id). INFERRED: how a
  key's own organisation relates to an enterprise is not documented (castai-api.md §1.1).
- Clusters cycle through eks / gke / aks / anywhere (no region, custom price) / eks / anywhere
  (default price) specs (the default organisation has one of each); each has tags and an idle share
  (10-30 % of its capacity runs no workload). Cloud clusters pay the list price of their provider
  (`LIST_PRICES`) less their discounts. Anywhere clusters have a ClusterPrice (Cast AI
  documents cluster prices and the default pricing "for Cast Anywhere clusters" only): a custom one
  (`default=false`) or the org's Anywhere default pricing (`default=true`).
- Per hour and pricing tier: pods = base pods x diurnal curve x daily factor x hourly jitter x the
  running fraction of the hour; spot interruptions move half the spot pods to spot-fallback for
  the hour. Counts are pods x per-pod requests; cost = count x unit price. On-demand and
  spot-fallback pay the cluster price; spot pays it x a spot ratio (~0.4) that moves hourly and
  daily. GPU price is per provider; there are no TPU workloads (TPU fields are present and zero).
  Storage (PV) is provisioned whether or not pods run and varies daily.
- INFERRED pricing rule: a cluster with a custom price pays exactly that price; any other cluster
  pays the list price less the enabled discounts that match it (csp, cluster list, region,
  lifecycle, dates to the second; TARGET_CPU / TARGET_MEMORY / TARGET_INSTANCE = vCPU and memory;
  percentage, flat (negative raises the price) and fixed types) applied in list order, never
  below 0 (see `Discount`). Spot-fallback nodes count as LIFECYCLE_ON_DEMAND. GPUs, TPUs and
  storage are never discounted. `listing=True` (Cast AI's `useListingPrices=true`) prices the same
  usage with no discount at all, so listing cost ÷ count is the list rate of each tier.
- Special workloads (exactly one each in the whole organisation, besides the regular ones): one
  GPU workload, one storage-only workload (a StatefulSet scaled to zero, PVs kept) and one
  BestEffort workload with pods but no requests (all costs zero). CronJobs/Jobs run only some
  hours (and some only every other day); several workloads never use spot or spot-fallback.
- `uptimeMinutes*` is the number of minutes in the bucket the workload ran on that tier (a bucket
  SUM, not an average), following the spec's wording "Number of minutes the workload was running".
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

from castai_focus_dagster.castai.models import TIERS
from castai_focus_dagster.settings import SANDBOX_ORGANIZATION_ID

HOUR_SECONDS = 3600
DEFAULT_API_KEY = "sandbox-api-key"
# Org default (list) prices; also what the anywhere-cluster-default-pricing endpoint returns.
DEFAULT_CPU_HOURLY_PRICE = 0.031611
DEFAULT_MEMORY_GIB_HOURLY_PRICE = 0.004237

# On-demand list prices (vCPU-hour, GiB-hour) of cloud clusters, before any discount: what Cast AI answers
# with useListingPrices=true. Deliberately unlike the Anywhere default pricing above.
LIST_PRICES: dict[str, tuple[float, float]] = {
    "eks": (0.0408, 0.00547),
    "gke": (0.033174, 0.004446),
    "aks": (0.0456, 0.00598),
}

# Per-tier metrics with an exact per-hour value; `cost{Tier}` is derived (sum of the resource costs).
TIER_METRICS: tuple[str, ...] = (
    "cpuCount", "podCount", "uptimeMinutes", "cpuCost", "ramCost", "ramGib",
    "gpuCost", "gpuCount", "tpuCost", "tpuCount",
)  # fmt: skip
RESOURCE_COSTS: tuple[str, ...] = ("cpuCost", "ramCost", "gpuCost", "tpuCost")
STORAGE_METRICS: tuple[str, ...] = ("storageCost", "storageGib")
HOURLY_FIELDS: tuple[str, ...] = tuple(f"{m}{t}" for m in TIER_METRICS for t in TIERS) + STORAGE_METRICS
# Summed, not averaged, over a bucket (and integral).
SUMMED_FIELDS: frozenset[str] = frozenset(f"uptimeMinutes{t}" for t in TIERS)
LIFECYCLE_OF_TIER = {
    "OnDemand": "LIFECYCLE_ON_DEMAND",
    "Spot": "LIFECYCLE_SPOT",
    "SpotFallback": "LIFECYCLE_ON_DEMAND",
}
CSP_OF_PROVIDER = {"eks": "aws", "gke": "gcp", "aks": "azure"}

# Hour chunks bound the memory of one computation (workloads x hours x fields float64 arrays).
_MAX_CHUNK_HOURS = 2048
_NOISE_DAY, _NOISE_HOUR, _NOISE_SPOT, _NOISE_STORAGE, _NOISE_SPOT_PRICE, _NOISE_SPOT_DAY = range(1, 7)


# ----------------------------------------------------------------------------------------------
# Catalogue of the synthetic organisation


class _ClusterSpec(NamedTuple):
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


_CLUSTER_SPECS: tuple[_ClusterSpec, ...] = (
    _ClusterSpec("prod-eks-eu", "eks", "eu-central-1", "EU (Frankfurt)", ("eu-central-1a", "eu-central-1b"),
                 {"env": "prod", "team": "platform", "cost-center": "cc-100"}, None, 0, 0.526, 0.08),
    _ClusterSpec("prod-gke-us", "gke", "us-central1", "Iowa (us-central1)",
                 ("us-central1-a", "us-central1-b"),
                 {"env": "prod", "team": "data"}, None, 1, 0.35, 0.10),
    _ClusterSpec("staging-aks-weu", "aks", "westeurope", "West Europe", ("westeurope-1", "westeurope-2"),
                 {"env": "staging", "cost-center": "cc-200"}, None, 0, 0.526, 0.0754),
    _ClusterSpec("onprem-anywhere", "anywhere", None, None, (), {}, (0.021500, 0.002900), 1, 0.40, 0.05),
    _ClusterSpec("dev-eks-us", "eks", "us-east-1", "US East (N. Virginia)", ("us-east-1a",),
                 {"env": "dev", "owner": "platform-team"}, None, 1, 0.526, 0.08),
    # An Anywhere cluster on the org's default pricing (the default organisation has all six specs).
    _ClusterSpec("edge-anywhere", "anywhere", None, None, (), {"env": "edge"}, None, 0, 0.40, 0.05),
)  # fmt: skip

_CHILD_ORGANIZATION_NAMES = ("Acme Platform", "Acme Data & Analytics")


class _WorkloadTemplate(NamedTuple):
    namespace: str
    kind: str
    name: str
    team: str | None
    cpu: float  # vCPU requested per pod
    ram_gib: float  # GiB requested per pod
    pods: tuple[float, float, float]  # base pods on-demand / spot / spot-fallback
    diurnal: float  # amplitude of the daily load curve
    run: tuple[int, int, int, int]  # runs hours [start, end) of the day, minutes per hour, every N days
    storage_gib: float = 0.0
    gpu: float = 0.0  # GPUs per pod
    interruption: float = 0.12  # share of hours with a spot interruption (spot workloads only)


_ALWAYS = (0, 24, 60, 1)
_T = _WorkloadTemplate
_FR_TEAM = "données-équipe"  # a non-ASCII label value on purpose
_TEMPLATES: tuple[_WorkloadTemplate, ...] = (
    _T("payments", "Deployment", "payments-api", "payments", 0.5, 1.0, (3, 2, 0), 0.30, _ALWAYS),
    _T("payments", "StatefulSet", "payments-db", "payments", 2.0, 8.0, (2, 0, 0), 0.0, _ALWAYS, 200),
    _T("checkout", "Deployment", "checkout-web", "web", 0.25, 0.5, (2, 4, 1), 0.40, _ALWAYS),
    _T("checkout", "Deployment", "cart-service", "web", 0.5, 1.0, (1, 3, 0), 0.35, _ALWAYS),
    _T("data-platform", "StatefulSet", "kafka", _FR_TEAM, 2.0, 6.0, (3, 0, 0), 0.0, _ALWAYS, 500),
    _T("data-platform", "CronJob", "nightly-etl", _FR_TEAM, 4.0, 16.0, (0, 2, 1), 0.0, (1, 5, 45, 1)),
    _T("data-platform", "Job", "backfill", _FR_TEAM, 1.0, 4.0, (0, 4, 0), 0.0, (10, 14, 60, 2)),
    _T("observability", "DaemonSet", "node-exporter", "sre", 0.1, 0.125, (4, 3, 1), 0.0, _ALWAYS),
    _T("observability", "StatefulSet", "prometheus", "sre", 1.0, 4.0, (1, 0, 0), 0.0, _ALWAYS, 100),
    _T("kube-system", "DaemonSet", "kube-proxy", None, 0.1, 0.1, (4, 3, 1), 0.0, _ALWAYS),
    _T("batch", "CronJob", "report-generator", "finance", 0.5, 2.0, (1, 0, 0), 0.0, (6, 18, 20, 1)),
    _T("search", "Deployment", "search-api", "search", 1.0, 2.0, (2, 2, 0), 0.25, _ALWAYS),
    _T("search", "StatefulSet", "elasticsearch", "search", 2.0, 8.0, (3, 0, 0), 0.0, _ALWAYS, 300),
    _T("web", "Deployment", "frontend", "web", 0.25, 0.5, (0, 3, 1), 0.50, _ALWAYS),
    _T("auth", "Deployment", "auth-service", "identity", 0.5, 1.0, (2, 0, 0), 0.20, _ALWAYS),
)  # fmt: skip
# Exactly one of each in the organisation: (template, index of the cluster that runs it).
_SPECIAL_WORKLOADS: tuple[tuple[_WorkloadTemplate, int], ...] = (
    (_T("ml", "Deployment", "llm-inference", "ml", 4.0, 16.0, (1, 1, 0), 0.2, _ALWAYS, 0, 1.0), 0),
    (_T("data-platform", "StatefulSet", "archive-db", _FR_TEAM, 0, 0, (0, 0, 0), 0, _ALWAYS, 1000), 1),
    (_T("default", "Deployment", "pause-placeholder", None, 0.0, 0.0, (1, 0, 0), 0.0, _ALWAYS), 2),
)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Data classes


@dataclass(frozen=True)
class ChildOrganization:
    id: str
    name: str


@dataclass(frozen=True)
class WorkloadParams:
    """Per-workload numeric parameters (one array entry per workload); `take` selects rows."""

    noise_key: np.ndarray  # uint64: identity of the workload in the noise function
    cpu_per_pod: np.ndarray
    ram_gib_per_pod: np.ndarray
    gpu_per_pod: np.ndarray
    base_pods: np.ndarray  # (W, 3) in TIERS order
    diurnal_amplitude: np.ndarray
    peak_hour: np.ndarray
    run_start_hour: np.ndarray  # int64
    run_end_hour: np.ndarray  # int64
    run_minutes: np.ndarray  # int64 minutes per running hour
    run_every_days: np.ndarray  # int64
    run_day_offset: np.ndarray  # int64
    spot_interruption_rate: np.ndarray
    storage_gib: np.ndarray

    def take(self, rows: np.ndarray) -> WorkloadParams:
        return WorkloadParams(**{name: getattr(self, name)[rows] for name in self.__dataclass_fields__})

    def __len__(self) -> int:
        return len(self.noise_key)


@dataclass(frozen=True, eq=False)
class Workloads:
    """A cluster's workloads, sorted by (namespace, workloadType, workloadName): the listing order."""

    namespaces: np.ndarray  # object arrays of str, vectorised filtering
    workload_types: np.ndarray
    workload_names: np.ndarray
    labels: tuple[dict[str, str], ...]
    params: WorkloadParams

    def __len__(self) -> int:
        return len(self.workload_names)

    def keys(self) -> list[tuple[str, str, str]]:
        return list(
            zip(
                self.namespaces.tolist(),
                self.workload_types.tolist(),
                self.workload_names.tolist(),
                strict=True,
            )
        )

    def row(self, namespace: str, workload_type: str, workload_name: str) -> int:
        mask = (
            (self.namespaces == namespace)
            & (self.workload_types == workload_type)
            & (self.workload_names == workload_name)
        )
        rows = np.flatnonzero(mask)
        if len(rows) != 1:
            raise KeyError(f"no workload {namespace}/{workload_type}/{workload_name}")
        return int(rows[0])


@dataclass(frozen=True)
class Discount:
    """A Cast AI discount (castai.inventory.v1beta1.Discount) and whether it changes a cluster's price.

    INFERRED pricing model (the definition states the fields, not how Cast AI prices with them):
    TARGET_CPU / TARGET_MEMORY lower that resource, TARGET_INSTANCE lowers vCPU and memory (not GPUs,
    not volumes); a whole-instance TYPE_FIXED price cannot be split per vCPU and GiB and changes
    nothing, and so does a negative TYPE_FIXED (not a price); other targets change nothing. The sandbox
    has no node inventory: a discount narrowed by `families`, `instanceTypes`, `zones` or `os` matches
    no sandbox node. `lifeCycles` lists alternatives: LIFECYCLE_UNKNOWN matches no tier. Each discount
    clamps the price at 0; an hour that a startDate/endDate cuts pays each part at its own price.
    """

    id: str
    organization_id: str
    name: str
    csp: str
    enabled: bool
    target: str  # TARGET_CPU | TARGET_MEMORY | TARGET_INSTANCE | TARGET_COMMITMENT | ...
    pricing_type: str  # TYPE_PERCENTAGE | TYPE_FIXED | TYPE_FLAT
    value: str  # string-encoded decimal, as in the API; may be negative ("-1")
    clusters: tuple[str, ...] = ()
    life_cycles: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    instance_types: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    os: tuple[str, ...] = ()
    start_date: str | None = "2020-01-01T00:00:00Z"
    end_date: str | None = "2035-12-31T23:59:59Z"
    created_at: str = "2025-02-01T09:00:00Z"

    def applies(self, cluster: SandboxCluster, resource: str, tier: str) -> bool:
        """Whether this discount changes `resource` ("cpu" / "memory") of `cluster` on `tier` (some hours)."""
        targets = {"TARGET_CPU": ("cpu",), "TARGET_MEMORY": ("memory",), "TARGET_INSTANCE": ("cpu", "memory")}
        return (
            self.enabled
            and cluster.price_is_default
            and CSP_OF_PROVIDER.get(cluster.provider_type) == self.csp
            and resource in targets.get(self.target, ())
            and not (self.pricing_type == "TYPE_FIXED" and self.target == "TARGET_INSTANCE")
            and not (self.pricing_type == "TYPE_FIXED" and float(self.value) < 0)
            and self.pricing_type in ("TYPE_PERCENTAGE", "TYPE_FLAT", "TYPE_FIXED")
            and not (self.families or self.instance_types or self.zones or self.os)
            and (not self.clusters or cluster.id in self.clusters)
            and (not self.regions or cluster.region_name in self.regions)
            and (not self.life_cycles or LIFECYCLE_OF_TIER[tier] in self.life_cycles)
        )

    def bounds(self) -> tuple[float | None, float | None]:
        """startDate and endDate as Unix seconds (None: unbounded)."""
        return (
            None if self.start_date is None else datetime.fromisoformat(self.start_date).timestamp(),
            None if self.end_date is None else datetime.fromisoformat(self.end_date).timestamp(),
        )

    def active(self, seconds: np.ndarray) -> np.ndarray:
        """Per moment (Unix seconds): startDate <= moment < endDate."""
        start, end = self.bounds()
        inside = np.ones(seconds.shape, dtype=bool)
        if start is not None:
            inside &= seconds >= start
        if end is not None:
            inside &= seconds < end
        return inside

    def apply(self, prices: np.ndarray) -> np.ndarray:
        """The discounted prices, never below 0 (a negative FLAT raises them)."""
        value = float(self.value)
        if self.pricing_type == "TYPE_PERCENTAGE":
            return np.maximum(prices * (1.0 - value), 0.0)
        if self.pricing_type == "TYPE_FLAT":
            return np.maximum(prices - value, 0.0)
        return np.full_like(prices, value)  # TYPE_FIXED overrides the price (a negative one never applies)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "organizationId": self.organization_id,
            "name": self.name,
            "csp": self.csp,
            "enabled": self.enabled,
            "source": "SOURCE_USER",
            "createdAt": self.created_at,
            "updatedAt": self.created_at,
            "startDate": self.start_date,
            "endDate": self.end_date,
            "target": self.target,
            "clusters": list(self.clusters),
            "lifeCycles": list(self.life_cycles),
            "families": list(self.families),
            "instanceTypes": list(self.instance_types),
            "regions": list(self.regions),
            "zones": list(self.zones),
            "os": list(self.os),
            "pricing": [{"value": self.value, "type": self.pricing_type}],
        }


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
        """`externalcluster.v1.Cluster` (castai-api.md §2); `region` is null for the anywhere cluster."""
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
        """`castai.inventory.v1beta1.ClusterPrice` (castai-api.md §4)."""
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


# ----------------------------------------------------------------------------------------------
# The organisation


@dataclass(frozen=True, eq=False)
class SandboxOrg:
    """A deterministic synthetic Cast AI organisation; `generate(seed=7)` is the demo organisation."""

    seed: int
    organization_id: str
    organization_name: str
    enterprise_id: str
    api_key: str
    child_organizations: tuple[ChildOrganization, ...]
    clusters: tuple[SandboxCluster, ...]
    discounts: tuple[Discount, ...]
    default_cpu_hourly_price: float = DEFAULT_CPU_HOURLY_PRICE
    default_memory_gib_hourly_price: float = DEFAULT_MEMORY_GIB_HOURLY_PRICE
    _by_id: dict[str, SandboxCluster] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {c.id: c for c in self.clusters})

    def __repr__(self) -> str:  # never show the API key
        return (
            f"SandboxOrg(seed={self.seed}, organization_id={self.organization_id!r}, "
            f"clusters={len(self.clusters)}, workloads={sum(len(c.workloads) for c in self.clusters)})"
        )

    @classmethod
    def generate(
        cls, seed: int = 7, clusters: int = 6, workloads_per_cluster: int = len(_TEMPLATES),
        api_key: str = DEFAULT_API_KEY,
    ) -> SandboxOrg:  # fmt: skip
        """Build the organisation: `clusters` clusters of `workloads_per_cluster` regular workloads each
        (the three special workloads come on top). Same arguments -> the same organisation."""
        if clusters < 1 or workloads_per_cluster < 1:
            raise ValueError("a sandbox organisation needs at least one cluster and one workload per cluster")
        ids = random.Random(seed)
        enterprise_id = _uuid(ids)
        children = tuple(ChildOrganization(_uuid(ids), name) for name in _CHILD_ORGANIZATION_NAMES)
        cluster_ids = [_uuid(ids) for _ in range(clusters)]
        discounts = _discounts(ids, cluster_ids)
        built = tuple(
            _build_cluster(seed, index, cluster_ids, children, discounts, workloads_per_cluster, ids)
            for index in range(clusters)
        )
        return cls(
            seed=seed,
            organization_id=SANDBOX_ORGANIZATION_ID,
            organization_name="Acme Corp (sandbox)",
            enterprise_id=enterprise_id,
            api_key=api_key,
            child_organizations=children,
            clusters=built,
            discounts=discounts,
        )

    # Lookups ----------------------------------------------------------------------------------

    def with_discounts(self, discounts: Sequence[Discount]) -> SandboxOrg:
        """The same organisation with another discount catalogue (clusters repriced accordingly)."""
        clusters = tuple(replace(c, discounts=_relevant(c, discounts)) for c in self.clusters)
        return replace(self, clusters=clusters, discounts=tuple(discounts))

    def priced_clusters(self) -> tuple[SandboxCluster, ...]:
        """Clusters with a ClusterPrice: Cast AI documents cluster prices for Anywhere clusters only."""
        return tuple(c for c in self.clusters if c.provider_type == "anywhere")

    def cluster(self, cluster_id: str) -> SandboxCluster:
        try:
            return self._by_id[cluster_id]
        except KeyError:
            raise KeyError(f"unknown sandbox cluster {cluster_id!r}") from None

    def workload_keys(self, cluster_id: str) -> list[tuple[str, str, str]]:
        """(namespace, workloadType, workloadName) of every workload of the cluster, in listing order."""
        return self.cluster(cluster_id).workloads.keys()

    def known_organization_ids(self) -> set[str]:
        return {self.organization_id, self.enterprise_id, *(c.id for c in self.child_organizations)}

    def clusters_of(self, organization_id: str) -> tuple[SandboxCluster, ...]:
        """Clusters visible to an organisation: all of them for the key's org and the enterprise."""
        if organization_id in (self.organization_id, self.enterprise_id):
            return self.clusters
        return tuple(c for c in self.clusters if c.organization_id == organization_id)

    # Exact per-hour model ---------------------------------------------------------------------

    def hourly_metrics(
        self, cluster_id: str, hours: np.ndarray, rows: np.ndarray | None = None, *, listing: bool = False
    ) -> dict[str, np.ndarray]:
        """Exact value of every `HOURLY_FIELDS` metric, shape (workloads, hours); `hours` are hour indexes
        since the epoch (UTC), `rows` optionally selects workloads. `uptimeMinutes*` are int64 minutes.
        `listing`: costs at listing prices (Cast AI's `useListingPrices=true`): no discount applied."""
        cluster = self.cluster(cluster_id)
        params = cluster.workloads.params if rows is None else cluster.workloads.params.take(rows)
        return _hourly_metrics(cluster, params, np.asarray(hours, dtype=np.int64), listing=listing)

    def bucket_metrics(
        self, cluster_id: str, start_hour: int, n_buckets: int, hours_per_bucket: int,
        rows: np.ndarray | None = None, *, listing: bool = False,
    ) -> dict[str, np.ndarray]:  # fmt: skip
        """Per bucket (shape workloads x buckets): the mean of the bucket's hours for every metric, the sum
        for `uptimeMinutes*`. Bucket b covers hours [start_hour + b*h, start_hour + (b+1)*h)."""
        cluster = self.cluster(cluster_id)
        n_rows = len(cluster.workloads) if rows is None else len(rows)
        out = {
            name: np.zeros((n_rows, n_buckets), dtype=np.int64 if name in SUMMED_FIELDS else np.float64)
            for name in HOURLY_FIELDS
        }
        for first, last in _chunks(n_buckets, max(1, _MAX_CHUNK_HOURS // hours_per_bucket)):
            hours = start_hour + np.arange(first * hours_per_bucket, last * hours_per_bucket, dtype=np.int64)
            hourly = self.hourly_metrics(cluster_id, hours, rows, listing=listing)
            for name, values in hourly.items():
                per_bucket = values.reshape(n_rows, last - first, hours_per_bucket)
                out[name][:, first:last] = (
                    per_bucket.sum(axis=2) if name in SUMMED_FIELDS else per_bucket.mean(axis=2)
                )
        return out

    # Ground truth -----------------------------------------------------------------------------

    def expected_workload_total(
        self, cluster_id: str, namespace: str, workload_type: str, workload_name: str,
        start: datetime | str, end: datetime | str,
    ) -> float:  # fmt: skip
        """USD the workload cost in [start, end): Σ per hour of compute (all tiers) + storage, exact."""
        row = self.cluster(cluster_id).workloads.row(namespace, workload_type, workload_name)
        return float(self._hourly_totals(cluster_id, start, end, np.array([row]))[0])

    def expected_cluster_total(self, cluster_id: str, start: datetime | str, end: datetime | str) -> float:
        """USD of all the cluster's workloads in [start, end) (compute + storage; idle capacity excluded)."""
        return float(self._hourly_totals(cluster_id, start, end, None).sum())

    def _hourly_totals(
        self, cluster_id: str, start: datetime | str, end: datetime | str, rows: np.ndarray | None
    ) -> np.ndarray:
        first, last = hour_index(start), hour_index(end)
        if last < first:
            raise ValueError(f"end {end} is before start {start}")
        n_rows = len(self.cluster(cluster_id).workloads) if rows is None else len(rows)
        totals = np.zeros(n_rows)
        for lo, hi in _chunks(last - first, _MAX_CHUNK_HOURS):
            hourly = self.hourly_metrics(cluster_id, np.arange(first + lo, first + hi, dtype=np.int64), rows)
            paid = sum(hourly[f"{cost}{tier}"] for cost in RESOURCE_COSTS for tier in TIERS)
            totals += (paid + hourly["storageCost"]).sum(axis=1)
        return totals


# ----------------------------------------------------------------------------------------------
# Helpers: time, ids, noise


def hour_index(moment: datetime | str) -> int:
    """Whole hours since the epoch of an aware datetime (or RFC 3339 string) that falls on an hour."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        raise ValueError(f"{moment.isoformat()} has no UTC offset")
    seconds = moment.timestamp()
    if seconds % HOUR_SECONDS:
        raise ValueError(f"{moment.isoformat()} is not on a whole hour (the sandbox models hourly rates)")
    return int(seconds) // HOUR_SECONDS


def hour_timestamp(hour: int) -> str:
    return datetime.fromtimestamp(hour * HOUR_SECONDS, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for first in range(0, total, size):
        yield first, min(first + size, total)


def _uuid(ids: random.Random) -> str:
    return str(uuid.UUID(int=ids.getrandbits(128), version=4))


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _noise(key: np.ndarray | int, when: np.ndarray, stream: int) -> np.ndarray:
    """Uniform [0, 1) that depends only on (key, when, stream): a stateless, vectorised hash."""
    with np.errstate(over="ignore"):
        keyed = _splitmix(
            np.asarray(key, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(stream)
        )
        mixed = _splitmix(keyed ^ np.asarray(when).astype(np.uint64))
    return (mixed >> np.uint64(11)).astype(np.float64) * 2.0**-53


# ----------------------------------------------------------------------------------------------
# The per-hour model


def _hourly_metrics(
    cluster: SandboxCluster, p: WorkloadParams, hours: np.ndarray, *, listing: bool = False
) -> dict[str, np.ndarray]:
    hour_of_day, day = hours % 24, hours // 24
    key = p.noise_key[:, None]
    runs_today = (day[None, :] - p.run_day_offset[:, None]) % p.run_every_days[:, None] == 0
    runs_now = (hour_of_day >= p.run_start_hour[:, None]) & (hour_of_day < p.run_end_hour[:, None])
    minutes = np.where(runs_today & runs_now, p.run_minutes[:, None], 0).astype(np.int64)
    diurnal = 1.0 + p.diurnal_amplitude[:, None] * np.sin(
        2 * math.pi * (hour_of_day - p.peak_hour[:, None]) / 24
    )
    daily = 0.9 + 0.2 * _noise(key, day[None, :], _NOISE_DAY)
    jitter = 0.95 + 0.1 * _noise(key, hours[None, :], _NOISE_HOUR)
    scale = diurnal * daily * jitter * (minutes / 60.0)
    interrupted = _noise(key, hours[None, :], _NOISE_SPOT) < p.spot_interruption_rate[:, None]
    moved = np.where(interrupted, 0.5, 0.0) * p.base_pods[:, 1:2]
    pods = {
        "OnDemand": p.base_pods[:, 0:1] * scale,
        "Spot": (p.base_pods[:, 1:2] - moved) * scale,
        "SpotFallback": (p.base_pods[:, 2:3] + moved) * scale,
    }
    spot_ratio = (
        cluster.spot_ratio
        * (0.9 + 0.2 * _noise(cluster.noise_key, hours, _NOISE_SPOT_PRICE))
        * (0.95 + 0.1 * _noise(cluster.noise_key, day, _NOISE_SPOT_DAY))
    )
    no_tpu = np.zeros((len(p), len(hours)))
    out: dict[str, np.ndarray] = {}
    for tier in TIERS:
        tier_ratio = spot_ratio if tier == "Spot" else np.ones(len(hours))
        cpu_price = cluster.cpu_hourly_price * tier_ratio
        ram_price = cluster.memory_gib_hourly_price * tier_ratio
        if not listing:
            cpu_price = _discounted(cluster, "cpu", tier, cpu_price, hours)
            ram_price = _discounted(cluster, "memory", tier, ram_price, hours)
        gpu_price = cluster.gpu_hourly_price * tier_ratio
        tier_pods = pods[tier]
        cpus = tier_pods * p.cpu_per_pod[:, None]
        ram = tier_pods * p.ram_gib_per_pod[:, None]
        gpus = tier_pods * p.gpu_per_pod[:, None]
        out[f"cpuCount{tier}"] = cpus
        out[f"podCount{tier}"] = tier_pods
        out[f"uptimeMinutes{tier}"] = np.where(tier_pods > 0, minutes, 0)
        out[f"cpuCost{tier}"] = cpus * cpu_price[None, :]
        out[f"ramCost{tier}"] = ram * ram_price[None, :]
        out[f"ramGib{tier}"] = ram
        out[f"gpuCost{tier}"] = gpus * gpu_price[None, :]
        out[f"gpuCount{tier}"] = gpus
        out[f"tpuCost{tier}"] = no_tpu
        out[f"tpuCount{tier}"] = no_tpu
    storage_gib = p.storage_gib[:, None] * (0.98 + 0.04 * _noise(key, day[None, :], _NOISE_STORAGE))
    out["storageGib"] = storage_gib
    out["storageCost"] = storage_gib * cluster.storage_gib_hourly_price
    return out


def _discounted(
    cluster: SandboxCluster, resource: str, tier: str, prices: np.ndarray, hours: np.ndarray
) -> np.ndarray:
    """Per hour: the price less the discounts active then (in list order, each clamped at 0).

    An hour a startDate/endDate falls inside pays each part of the hour at that part's price."""
    applicable = [d for d in cluster.discounts if d.applies(cluster, resource, tier)]
    if not applicable:
        return prices

    def at(moments: np.ndarray, base: np.ndarray) -> np.ndarray:
        for discount in applicable:
            base = np.where(discount.active(moments), discount.apply(base), base)
        return base

    out = at((hours * HOUR_SECONDS).astype(np.float64), prices)
    cuts = sorted({b for d in applicable for b in d.bounds() if b is not None})
    cut_hours = [int(c // HOUR_SECONDS) for c in cuts if c % HOUR_SECONDS]
    for i in np.flatnonzero(np.isin(hours, cut_hours)).tolist():
        begin, finish = float(hours[i] * HOUR_SECONDS), float((hours[i] + 1) * HOUR_SECONDS)
        inner = [c for c in cuts if begin < c < finish]
        if not inner:
            continue
        edges = [begin, *inner, finish]
        parts = np.array(edges[:-1])
        part_prices = at(parts, np.full(parts.size, prices[i]))
        out[i] = float(np.sum(np.diff(edges) / HOUR_SECONDS * part_prices))
    return out


# ----------------------------------------------------------------------------------------------
# Generation


def _discounts(ids: random.Random, cluster_ids: Sequence[str]) -> tuple[Discount, ...]:
    """Enabled and disabled, percentage / fixed / flat, some restricted to clusters or lifecycles."""
    org = SANDBOX_ORGANIZATION_ID
    discounts = [
        Discount(_uuid(ids), org, "EKS compute savings plan", "aws", True, "TARGET_CPU", "TYPE_PERCENTAGE",
                 "0.15", clusters=(cluster_ids[0],), life_cycles=("LIFECYCLE_ON_DEMAND",)),
        Discount(_uuid(ids), org, "Azure enterprise agreement", "azure", True, "TARGET_INSTANCE",
                 "TYPE_PERCENTAGE", "0.1", regions=("westeurope",)),
        Discount(_uuid(ids), org, "Expired spot promotion", "aws", False, "TARGET_CPU", "TYPE_PERCENTAGE",
                 "0.3", life_cycles=("LIFECYCLE_SPOT",)),
        Discount(_uuid(ids), org, "GCP committed use (memory)", "gcp", True, "TARGET_MEMORY",
                 "TYPE_PERCENTAGE", "0.2"),
        Discount(_uuid(ids), org, "Memory credit (paused)", "aws", False, "TARGET_MEMORY", "TYPE_FLAT",
                 "0.0005"),
    ]  # fmt: skip
    if len(cluster_ids) > 4:
        discounts.append(
            Discount(_uuid(ids), org, "Dev cluster fixed CPU price", "aws", True, "TARGET_CPU", "TYPE_FIXED",
                     "0.025", clusters=(cluster_ids[4],), life_cycles=("LIFECYCLE_ON_DEMAND",))
        )  # fmt: skip
    # The rest of the scope a discount may carry (own id stream: the ids above stay as they were).
    more = random.Random(f"{cluster_ids[0]}-discount-scopes")
    discounts += [
        Discount(_uuid(more), org, "AWS m5 reserved pricing", "aws", True, "TARGET_INSTANCE",
                 "TYPE_PERCENTAGE", "0.2", families=("m5",), os=("linux",)),
        Discount(_uuid(more), org, "Azure support surcharge", "azure", True, "TARGET_MEMORY", "TYPE_FLAT",
                 "-0.0002"),
        Discount(_uuid(more), org, "GCP 2024 launch promotion", "gcp", True, "TARGET_CPU", "TYPE_PERCENTAGE",
                 "0.25", start_date="2024-01-01T00:00:00Z", end_date="2024-12-31T23:59:59Z"),
        Discount(_uuid(more), org, "AWS commitment", "aws", True, "TARGET_COMMITMENT", "TYPE_PERCENTAGE",
                 "0.3"),
        Discount(_uuid(more), org, "GKE spot CPU rebate", "gcp", True, "TARGET_CPU", "TYPE_PERCENTAGE",
                 "0.05", life_cycles=("LIFECYCLE_SPOT",)),
        Discount(_uuid(more), org, "AWS c5 zonal rate", "aws", True, "TARGET_CPU", "TYPE_FLAT", "0.002",
                 instance_types=("c5.xlarge",), zones=("us-east-1a",)),
    ]  # fmt: skip
    return tuple(discounts)


def _build_cluster(
    seed: int, index: int, cluster_ids: Sequence[str], children: Sequence[ChildOrganization],
    discounts: Sequence[Discount], workloads_per_cluster: int, ids: random.Random,
) -> SandboxCluster:  # fmt: skip
    spec = _CLUSTER_SPECS[index % len(_CLUSTER_SPECS)]
    rng = np.random.default_rng([seed, index])
    suffix = "" if index < len(_CLUSTER_SPECS) else f"-{index // len(_CLUSTER_SPECS):02d}"
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
        credentials_id=_uuid(ids),
        provider_account=f"{ids.getrandbits(40):012d}",
        created_at=created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        cpu_hourly_price=cpu_price,
        memory_gib_hourly_price=memory_price,
        price_is_default=spec.custom_price is None,
        price_id=_uuid(ids),
        gpu_hourly_price=spec.gpu_hourly_price,
        storage_gib_hourly_price=spec.storage_gib_month_price / 730.0,
        spot_ratio=float(rng.uniform(0.36, 0.44)),
        idle_share=float(rng.uniform(0.10, 0.30)),
        noise_key=int(rng.integers(0, 2**63)),
        workloads=_build_workloads(rng, index, len(cluster_ids), workloads_per_cluster, spec),
    )
    return replace(cluster, discounts=_relevant(cluster, discounts))


def _relevant(cluster: SandboxCluster, discounts: Sequence[Discount]) -> tuple[Discount, ...]:
    """The discounts that change this cluster's price (the model applies them per hour)."""
    return tuple(
        d for d in discounts if any(d.applies(cluster, r, t) for r in ("cpu", "memory") for t in TIERS)
    )


def _build_workloads(
    rng: np.random.Generator, index: int, n_clusters: int, count: int, spec: _ClusterSpec
) -> Workloads:
    templates = [_TEMPLATES[i % len(_TEMPLATES)] for i in range(count)]
    copies = [i // len(_TEMPLATES) for i in range(count)]
    for template, cluster_index in _SPECIAL_WORKLOADS:
        if cluster_index % n_clusters == index:
            templates.append(template)
            copies.append(0)
    names = [t.name if copy == 0 else f"{t.name}-{copy}" for t, copy in zip(templates, copies, strict=True)]
    order = sorted(range(len(templates)), key=lambda i: (templates[i].namespace, templates[i].kind, names[i]))
    templates = [templates[i] for i in order]
    names = [names[i] for i in order]
    n = len(templates)

    def column(get: Any, dtype: Any = np.float64) -> np.ndarray:
        return np.array([get(t) for t in templates], dtype=dtype)

    every_days = column(lambda t: t.run[3], np.int64)
    base_pods = np.array([t.pods for t in templates], dtype=np.float64)
    spot_pods = base_pods[:, 1] > 0
    params = WorkloadParams(
        noise_key=rng.integers(0, 2**63, size=n).astype(np.uint64),
        cpu_per_pod=column(lambda t: t.cpu) * rng.uniform(0.8, 1.25, n),
        ram_gib_per_pod=column(lambda t: t.ram_gib) * rng.uniform(0.8, 1.25, n),
        gpu_per_pod=column(lambda t: t.gpu),
        base_pods=base_pods,
        diurnal_amplitude=column(lambda t: t.diurnal),
        peak_hour=rng.uniform(9.0, 20.0, n),
        run_start_hour=column(lambda t: t.run[0], np.int64),
        run_end_hour=column(lambda t: t.run[1], np.int64),
        run_minutes=column(lambda t: t.run[2], np.int64),
        run_every_days=every_days,
        run_day_offset=rng.integers(0, every_days),
        spot_interruption_rate=np.where(spot_pods, column(lambda t: t.interruption), 0.0),
        storage_gib=column(lambda t: t.storage_gib) * rng.uniform(0.8, 1.25, n),
    )
    env = spec.tags.get("env", "prod")
    labels = tuple(_labels(t, name, env) for t, name in zip(templates, names, strict=True))
    return Workloads(
        namespaces=np.array([t.namespace for t in templates], dtype=object),
        workload_types=np.array([t.kind for t in templates], dtype=object),
        workload_names=np.array(names, dtype=object),
        labels=labels,
        params=params,
    )


def _labels(template: _WorkloadTemplate, name: str, env: str) -> dict[str, str]:
    """Kubernetes labels; keys with '.' and '/' on purpose, `team` absent on system workloads."""
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": template.namespace,
        "env": env,
        "sandbox.cast.ai/workload-class": "batch" if template.kind in ("Job", "CronJob") else "service",
    }
    if template.team is not None:
        labels["team"] = template.team
    return labels
