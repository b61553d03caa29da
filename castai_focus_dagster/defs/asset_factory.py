"""What every daily asset shares: IO manager keys, owners, backfill and retry policies."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from castai_focus_dagster.castai.errors import CastAIError
from castai_focus_dagster.defs.partitions import daily_partitions
from castai_focus_dagster.defs.resources import CASTAI_POOL

# One IO manager per storage concern: the Cast AI intermediates, and the published FOCUS rows.
INTERMEDIATES_IO_MANAGER_KEY = "focus_intermediates_io_manager"
PUBLICATION_IO_MANAGER_KEY = "focus_publication_io_manager"
OWNERS = ["team:finops-platform"]
# The published asset's key: checks and sensors name it without importing a mode's definition.
FOCUS_ASSET_KEY = dg.AssetKey("focus_cost_and_usage")
WINDOW_END_KEY = b"castai_focus.window_end"

# Transient HTTP faults are retried inside the client; this covers the rest (pod restart, long outage).
API_RETRY_POLICY = dg.RetryPolicy(
    max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

# Backfills fan out: one run per BACKFILL_DAYS_PER_RUN consecutive days, runs in parallel up to the
# instance's run limits; each run walks its days one by one (daily.py). See docs/scaling.md.
BACKFILL_DAYS_PER_RUN = 7
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=BACKFILL_DAYS_PER_RUN)


@contextmanager
def permanent_castai_errors_fail_fast() -> Iterator[None]:
    """Turn a permanent Cast AI error into a failure the retry policy does not repeat.

    The client already retried what can heal (`CastAIError.transient`); the policy's longer delays are
    for those faults only (a long outage, a pod restart), never for an answer that stays wrong.
    """
    try:
        yield
    except CastAIError as exc:
        if exc.transient:
            raise
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


def daily_asset(
    *,
    group_name: str,
    kinds: set[str],
    description: str,
    calls_castai: bool,
    metadata: dict[str, Any] | None = None,
    freshness_policy: dg.FreshnessPolicy | None = None,
    io_manager_key: str = INTERMEDIATES_IO_MANAGER_KEY,
    name: str | None = None,
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """The settings every asset shares; assets that call Cast AI also share its pool and retry policy."""
    return dg.asset(
        name=name,
        group_name=group_name,
        kinds=kinds,
        description=description,
        metadata=metadata,
        partitions_def=daily_partitions,
        backfill_policy=BACKFILL_POLICY,
        io_manager_key=io_manager_key,
        owners=OWNERS,
        pool=CASTAI_POOL if calls_castai else None,
        retry_policy=API_RETRY_POLICY if calls_castai else None,
        freshness_policy=freshness_policy,
    )


def require_loaded_mode(configured: str, split: bool) -> None:
    """Fail a run whose FOCUS_ALLOCATION_MODE differs from the one its asset graph was built for.

    The graph is built when the code location loads (only split mode has the cluster cost reports);
    a run that read another mode would publish rows of one mode from the inputs of the other.
    """
    loaded = "split" if split else "workload"
    if configured != loaded:
        raise dg.Failure(
            description=(
                f"configuration error: FOCUS_ALLOCATION_MODE is {configured}, but the code location was "
                f"loaded with {loaded}; reload the code location so its asset graph matches. Nothing "
                "was exported."
            ),
            allow_retries=False,
        )
