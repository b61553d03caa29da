"""The sandbox's discounts: their scope, their effect on a price at any second, and how they are generated."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from castai_focus_dagster.castai.models import TIERS
from castai_focus_dagster.castai.sandbox.hours import uid
from castai_focus_dagster.castai.sandbox.metrics import (
    CSP_OF_PROVIDER,
    HOUR_SECONDS,
    LIFECYCLE_OF_TIER,
)
from castai_focus_dagster.settings import SANDBOX_ORGANIZATION_ID

if TYPE_CHECKING:
    from castai_focus_dagster.castai.sandbox.clusters import SandboxCluster


@dataclass(frozen=True)
class Discount:
    """A Cast AI discount (castai.inventory.v1beta1.Discount) and whether it changes a cluster's price.

    INFERRED pricing model (the definition states the fields, not how Cast AI prices with them):
    TARGET_CPU / TARGET_MEMORY lower that resource, TARGET_INSTANCE lowers vCPU and memory (not GPUs,
    not volumes) by a percentage; a whole-instance TYPE_FIXED price or TYPE_FLAT amount cannot be split
    per vCPU and GiB and changes nothing, and so does a negative TYPE_FIXED (not a price); other
    targets change nothing. The sandbox
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
            and not (self.pricing_type in ("TYPE_FIXED", "TYPE_FLAT") and self.target == "TARGET_INSTANCE")
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


def discounted(
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


def generate_discounts(ids: random.Random, cluster_ids: Sequence[str]) -> tuple[Discount, ...]:
    """Enabled and disabled, percentage / fixed / flat, some restricted to clusters or lifecycles."""
    org = SANDBOX_ORGANIZATION_ID
    discounts = [
        Discount(uid(ids), org, "EKS compute savings plan", "aws", True, "TARGET_CPU", "TYPE_PERCENTAGE",
                 "0.15", clusters=(cluster_ids[0],), life_cycles=("LIFECYCLE_ON_DEMAND",)),
        Discount(uid(ids), org, "Azure enterprise agreement", "azure", True, "TARGET_INSTANCE",
                 "TYPE_PERCENTAGE", "0.1", regions=("westeurope",)),
        Discount(uid(ids), org, "Expired spot promotion", "aws", False, "TARGET_CPU", "TYPE_PERCENTAGE",
                 "0.3", life_cycles=("LIFECYCLE_SPOT",)),
        Discount(uid(ids), org, "GCP committed use (memory)", "gcp", True, "TARGET_MEMORY",
                 "TYPE_PERCENTAGE", "0.2"),
        Discount(uid(ids), org, "Memory credit (paused)", "aws", False, "TARGET_MEMORY", "TYPE_FLAT",
                 "0.0005"),
    ]  # fmt: skip
    if len(cluster_ids) > 4:
        discounts.append(
            Discount(uid(ids), org, "Dev cluster fixed CPU price", "aws", True, "TARGET_CPU", "TYPE_FIXED",
                     "0.025", clusters=(cluster_ids[4],), life_cycles=("LIFECYCLE_ON_DEMAND",))
        )  # fmt: skip
    # The rest of the scope a discount may carry (own id stream: the ids above stay as they were).
    more = random.Random(f"{cluster_ids[0]}-discount-scopes")
    discounts += [
        Discount(uid(more), org, "AWS m5 reserved pricing", "aws", True, "TARGET_INSTANCE",
                 "TYPE_PERCENTAGE", "0.2", families=("m5",), os=("linux",)),
        Discount(uid(more), org, "Azure support surcharge", "azure", True, "TARGET_MEMORY", "TYPE_FLAT",
                 "-0.0002"),
        Discount(uid(more), org, "GCP 2024 launch promotion", "gcp", True, "TARGET_CPU", "TYPE_PERCENTAGE",
                 "0.25", start_date="2024-01-01T00:00:00Z", end_date="2024-12-31T23:59:59Z"),
        Discount(uid(more), org, "AWS commitment", "aws", True, "TARGET_COMMITMENT", "TYPE_PERCENTAGE",
                 "0.3"),
        Discount(uid(more), org, "GKE spot CPU rebate", "gcp", True, "TARGET_CPU", "TYPE_PERCENTAGE",
                 "0.05", life_cycles=("LIFECYCLE_SPOT",)),
        Discount(uid(more), org, "AWS c5 zonal rate", "aws", True, "TARGET_CPU", "TYPE_FLAT", "0.002",
                 instance_types=("c5.xlarge",), zones=("us-east-1a",)),
    ]  # fmt: skip
    return tuple(discounts)


def relevant_discounts(cluster: SandboxCluster, discounts: Sequence[Discount]) -> tuple[Discount, ...]:
    """The discounts that change this cluster's price (the model applies them per hour)."""
    return tuple(
        d for d in discounts if any(d.applies(cluster, r, t) for r in ("cpu", "memory") for t in TIERS)
    )
