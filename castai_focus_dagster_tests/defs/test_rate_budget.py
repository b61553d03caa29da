"""One Cast AI budget for the organisation: concurrent runs split it by the `castai_api` pool's slots.

Real parts: Dagster instances (SQLite) whose pool limits are set as operators set them, the Cast AI
resource initialised as a run initialises it, and the sandbox over loopback HTTP recording when each
request arrived.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import dagster as dg
import pytest

from castai_focus_dagster.castai.sandbox import Faults, SandboxOrg, SandboxServer
from castai_focus_dagster.defs import resources
from castai_focus_dagster.defs.resources import (
    CASTAI_POOL,
    PACING_GUARD,
    CastAIResource,
    castai_pool_slots,
    run_rate_limit,
)

BUDGET = 8
RUNS = 4
REQUESTS_PER_RUN = 8


def pools(default_limit: int) -> dict[str, Any]:
    return {"concurrency": {"pools": {"granularity": "op", "default_limit": default_limit}}}


def test_slots_are_read_from_the_instance() -> None:
    with dg.instance_for_test(overrides=pools(4)) as instance:
        assert castai_pool_slots(instance) == 4
        # `dagster instance concurrency set castai_api 3` (or the UI) overrides the default.
        instance.event_log_storage.set_concurrency_slots(CASTAI_POOL, 3)
        assert castai_pool_slots(instance) == 3
    with dg.instance_for_test() as instance:
        assert castai_pool_slots(instance) is None  # no limit: the run takes the whole budget
    assert castai_pool_slots(dg.DagsterInstance.ephemeral()) is None
    assert castai_pool_slots(None) is None


@pytest.mark.parametrize(
    ("budget", "slots", "share"),
    [(20, None, 20), (20, 1, 20), (20, 4, 5), (20, 3, 6), (8, 4, 2), (2, 4, 0.5), (0.5, None, 0.5)],
)
def test_each_run_gets_a_whole_share_of_the_budget(budget: float, slots: int | None, share: float) -> None:
    assert run_rate_limit(budget, slots) == pytest.approx(share / (1 + PACING_GUARD))


def busiest_second(arrivals: list[float]) -> int:
    """The most requests that arrived within any half-open 1-second window."""
    arrivals = sorted(arrivals)
    most, first = 0, 0
    for last, moment in enumerate(arrivals):
        while arrivals[first] <= moment - 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.fixture
def slow_sandbox(sandbox_org: SandboxOrg) -> Iterator[SandboxServer]:
    with SandboxServer(sandbox_org, faults=Faults(rate_slow=1.0, slow_seconds=0.05)) as server:
        yield server


def fetch_concurrently(instance: dg.DagsterInstance) -> None:
    """RUNS resources initialised as concurrent runs do, each sending REQUESTS_PER_RUN requests at once."""
    with ExitStack() as stack:
        contexts = [dg.build_init_resource_context(instance=instance) for _ in range(RUNS)]
        resources = [stack.enter_context(CastAIResource().yield_for_execution(c)) for c in contexts]
        with ThreadPoolExecutor(max_workers=RUNS * REQUESTS_PER_RUN) as pool:
            futures = [
                pool.submit(r.client.list_clusters) for r in resources for _ in range(REQUESTS_PER_RUN)
            ]
            for future in futures:
                assert future.result(), "the sandbox lists clusters"


def test_concurrent_runs_stay_within_the_one_budget(
    exporter_env: Any, slow_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASTAI_API_URL", slow_sandbox.url)
    monkeypatch.setenv("CASTAI_RATE_LIMIT_RPS", str(BUDGET))
    # What is checked is the split by slots; a wide jitter guard keeps the scheduling delays of a busy
    # test machine (a request leaving its thread late, bunching with the next) out of the outcome.
    monkeypatch.setattr(resources, "PACING_GUARD", 0.5)

    with dg.instance_for_test(overrides=pools(RUNS)) as instance:
        fetch_concurrently(instance)
    shared = [r.received for r in slow_sandbox.requests if r.path.startswith("/v1/")]
    assert len(shared) == RUNS * REQUESTS_PER_RUN
    assert busiest_second(shared) <= BUDGET

    # The same runs on an instance without the pool limit each take the whole budget: the window
    # check above is what catches it.
    slow_sandbox.requests.clear()
    with dg.instance_for_test() as instance:
        fetch_concurrently(instance)
    alone = [r.received for r in slow_sandbox.requests if r.path.startswith("/v1/")]
    assert len(alone) == RUNS * REQUESTS_PER_RUN
    assert busiest_second(alone) > BUDGET
