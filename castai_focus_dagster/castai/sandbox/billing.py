"""Synthetic billing answers (platform usage per feature, subscriptions) with fixed dates, so
responses stay byte-identical between runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from castai_focus_dagster.castai.sandbox.clusters import SandboxCluster

_FEATURES = (("phase2", "Node Autoscaler", 1.0), ("woop", "Workload Autoscaler", 0.35))
_PROVIDER_CSP = {"eks": "aws", "gke": "gcp", "aks": "azure"}


def subscriptions(clusters: Sequence[SandboxCluster]) -> list[dict[str, Any]]:
    providers = sorted({_PROVIDER_CSP[c.provider_type] for c in clusters if c.provider_type in _PROVIDER_CSP})
    return [
        {"provider": p, "startDate": "2025-01-01T00:00:00Z", "endDate": "2027-12-31T23:59:59Z"}
        for p in providers
    ]


def features(clusters: Sequence[SandboxCluster]) -> list[dict[str, Any]]:
    """FeatureUsageSummary per feature; usage in provisioned vCPUs, JSON numbers."""
    phase2_cpus = sum(c.provisioned_cpus() for c in clusters if c.provider_type != "anywhere")
    features = []
    for feature, display_name, share in _FEATURES:
        usage = round(phase2_cpus * share, 3)
        used = min(usage, 100.0)
        features.append({
            "feature": feature,
            "displayName": display_name,
            "usage": usage,
            "unit": "CPU",
            "credits": {"total": 100.0, "used": used, "remaining": round(100.0 - used, 3),
                        "resetFrequency": "monthly", "startDate": "2026-01-01T00:00:00Z",
                        "endDate": "2026-02-01T00:00:00Z", "provider": "aws"},
            "freeOfCharge": {"isFreeOfCharge": False},
            "creditsApplied": used,
            "freeOfChargePeriods": [],
            "creditPeriods": [],
        })  # fmt: skip
    return features
