"""The 13 (resource, tier) charges a Cast AI bucket splits into, and what each maps to in FOCUS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from castai_focus_dagster.castai.models import RESOURCES, TIERS

_TIER_LABELS = {"OnDemand": "on-demand", "Spot": "spot", "SpotFallback": "spot-fallback"}
_RESOURCE_LABELS = {  # resource -> (ChargeDescription word, PricingUnit, SkuMeter)
    "cpu": ("CPU", "vCPU-Hours", "vCPU usage"),
    "memory": ("Memory", "GiB-Hours", "Memory usage"),
    "gpu": ("GPU", "GPU-Hours", "GPU usage"),
    "tpu": ("TPU", "TPU-Hours", "TPU usage"),
    "storage": ("Storage", "GiB-Hours", "Storage usage"),
}


@dataclass(frozen=True)
class Charge:
    """One of the 13 (resource, tier) charges a Cast AI bucket splits into."""

    resource: str
    tier: str | None  # None: storage (untiered)
    cost_field: str
    quantity_field: str

    @property
    def pricing_category(self) -> str:
        return "Standard" if self.tier in (None, "on-demand") else "Dynamic"

    @property
    def sku_id(self) -> str:
        return f"castai-k8s-{self.resource}"

    @property
    def sku_price_prefix(self) -> str:
        return self.sku_id if self.tier is None else f"{self.sku_id}-{self.tier}"

    @property
    def pricing_unit(self) -> str:
        return _RESOURCE_LABELS[self.resource][1]

    @property
    def sku_meter(self) -> str:
        return _RESOURCE_LABELS[self.resource][2]

    @property
    def description(self) -> str:
        word = _RESOURCE_LABELS[self.resource][0]
        return word if self.tier is None else f"{word} on {self.tier} capacity"


CHARGES: tuple[Charge, ...] = tuple(
    Charge(resource, _TIER_LABELS[tier], f"{cost}{tier}", f"{quantity}{tier}")
    for resource, cost, quantity, tiered in RESOURCES
    if tiered
    for tier in TIERS
) + tuple(
    Charge(resource, None, cost, quantity) for resource, cost, quantity, tiered in RESOURCES if not tiered
)
# Per charge: not on spot capacity (custom and default prices never apply to spot rows).
NOT_SPOT = np.array([c.tier != "spot" for c in CHARGES])


def charges_of(resource: str) -> np.ndarray:
    """Per charge: whether it is one of `resource`."""
    return np.array([c.resource == resource for c in CHARGES])


def per_charge(values: Sequence[str | None], charge_idx: pa.Array) -> pa.Array:
    """One string per charge, gathered to the rows (`charge_idx`: each row's index into CHARGES)."""
    return pa.array(values, pa.string()).take(charge_idx)
