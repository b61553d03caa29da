"""The asset graph of one allocation mode, read from the environment when the code location loads.

Only split mode fetches the clusters' own cost reports, so only its graph has castai_cluster_costs
and a focus_cost_and_usage that reads them: a default-mode run neither calls that endpoint nor
materialises an empty asset.
"""

import os
from collections.abc import Mapping

import dagster as dg

from castai_focus_dagster.defs.castai_assets import (
    castai_cluster_costs,
    castai_clusters,
    castai_enrichment_context,
    castai_listing_prices,
    castai_workload_costs,
)
from castai_focus_dagster.defs.focus_asset import focus_asset

SPLIT = "split"


def split_mode(environ: Mapping[str, str] | None = None) -> bool:
    """FOCUS_ALLOCATION_MODE=split, as the settings read it (any other value validates when a run starts)."""
    env = os.environ if environ is None else environ
    return env.get("FOCUS_ALLOCATION_MODE", "").strip().lower() == SPLIT


def focus_assets(*, split: bool) -> list[dg.AssetsDefinition]:
    """Every asset of the graph, upstream first."""
    return [
        castai_clusters,
        castai_workload_costs,
        *([castai_cluster_costs] if split else []),
        castai_listing_prices,
        castai_enrichment_context,
        focus_asset(split=split),
    ]
