"""The sandbox's synthetic Cast AI organisation and its exact ground truth.

Every workload has an exact per-hour value for every metric, a pure function of (seed, cluster,
workload, hour), so any window, bucket size and request order see the same numbers; the expected
totals sum those exact rates, never the rounded strings the server emits. The model's choices are
described in docs/architecture.md.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np

from castai_focus_dagster.castai.models import TIERS
from castai_focus_dagster.castai.sandbox.clusters import (
    CHILD_ORGANIZATION_NAMES,
    ChildOrganization,
    SandboxCluster,
    build_cluster,
)
from castai_focus_dagster.castai.sandbox.discounts import (
    Discount,
    generate_discounts,
    relevant_discounts,
)
from castai_focus_dagster.castai.sandbox.hours import chunks, hour_index, uid
from castai_focus_dagster.castai.sandbox.metrics import (
    DEFAULT_API_KEY,
    DEFAULT_CPU_HOURLY_PRICE,
    DEFAULT_MEMORY_GIB_HOURLY_PRICE,
    HOURLY_FIELDS,
    MAX_CHUNK_HOURS,
    RESOURCE_COSTS,
    SUMMED_FIELDS,
)
from castai_focus_dagster.castai.sandbox.workloads import (
    TEMPLATES,
    model_hourly_metrics,
)
from castai_focus_dagster.settings import SANDBOX_ORGANIZATION_ID


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
        cls, seed: int = 7, clusters: int = 6, workloads_per_cluster: int = len(TEMPLATES),
        api_key: str = DEFAULT_API_KEY,
    ) -> SandboxOrg:  # fmt: skip
        """Build the organisation: `clusters` clusters of `workloads_per_cluster` regular workloads each
        (the three special workloads come on top). Same arguments -> the same organisation."""
        if clusters < 1 or workloads_per_cluster < 1:
            raise ValueError("a sandbox organisation needs at least one cluster and one workload per cluster")
        ids = random.Random(seed)
        enterprise_id = uid(ids)
        children = tuple(ChildOrganization(uid(ids), name) for name in CHILD_ORGANIZATION_NAMES)
        cluster_ids = [uid(ids) for _ in range(clusters)]
        discounts = generate_discounts(ids, cluster_ids)
        built = tuple(
            build_cluster(seed, index, cluster_ids, children, discounts, workloads_per_cluster, ids)
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
        clusters = tuple(replace(c, discounts=relevant_discounts(c, discounts)) for c in self.clusters)
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
        return model_hourly_metrics(cluster, params, np.asarray(hours, dtype=np.int64), listing=listing)

    def bucket_metrics(
        self, cluster_id: str, start_hour: int, n_buckets: int, hours_per_bucket: int,
        rows: np.ndarray | None = None, *, listing: bool = False, active_hours: Collection[int] | None = None,
    ) -> dict[str, np.ndarray]:  # fmt: skip
        """Per bucket (shape workloads x buckets): the mean of the bucket's hours for every metric, the sum
        for `uptimeMinutes*`. Bucket b covers hours [start_hour + b*h, start_hour + (b+1)*h).
        `active_hours`: only these UTC hours of the day count; every metric is 0 in the others."""
        cluster = self.cluster(cluster_id)
        n_rows = len(cluster.workloads) if rows is None else len(rows)
        out = {
            name: np.zeros((n_rows, n_buckets), dtype=np.int64 if name in SUMMED_FIELDS else np.float64)
            for name in HOURLY_FIELDS
        }
        for first, last in chunks(n_buckets, max(1, MAX_CHUNK_HOURS // hours_per_bucket)):
            hours = start_hour + np.arange(first * hours_per_bucket, last * hours_per_bucket, dtype=np.int64)
            hourly = self.hourly_metrics(cluster_id, hours, rows, listing=listing)
            if active_hours is not None:
                idle = ~np.isin(hours % 24, list(active_hours))
                for values in hourly.values():
                    values[:, idle] = 0
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
        for lo, hi in chunks(last - first, MAX_CHUNK_HOURS):
            hourly = self.hourly_metrics(cluster_id, np.arange(first + lo, first + hi, dtype=np.int64), rows)
            paid = sum(hourly[f"{cost}{tier}"] for cost in RESOURCE_COSTS for tier in TIERS)
            totals += (paid + hourly["storageCost"]).sum(axis=1)
        return totals
