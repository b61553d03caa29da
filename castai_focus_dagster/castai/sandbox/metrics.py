"""Metric fields, prices and tiers of the synthetic organisation, shared by its model and the server."""

from __future__ import annotations

from castai_focus_dagster.castai.models import TIERS

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
MAX_CHUNK_HOURS = 2048
NOISE_DAY, NOISE_HOUR, NOISE_SPOT, NOISE_STORAGE, NOISE_SPOT_PRICE, NOISE_SPOT_DAY = range(1, 7)
