"""Chaos: under 429s (with Retry-After), gateway errors and slow answers a day still publishes, byte for byte.

The sandbox answers 30 % of API requests 429, 10 % 502/503/504 and delays 5 %, with keyed draws: the
faults depend on the seed and the request, not on thread timing, so the run meets the same faults every
time. The same day is exported once against a fault-free sandbox and once against the chaotic one, into
separate folders; the objects must be identical (run ids and timestamps aside).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from castai_focus_dagster.castai.sandbox import Faults, SandboxOrg, SandboxServer
from castai_focus_dagster_tests.reliability.harness import (
    comparable,
    data_objects,
    local_objects,
    run_day,
    sandbox_environment,
)

CHAOS = {
    "rate_429": 0.30,
    "retry_after_seconds": 0.0,
    "rate_5xx": 0.10,
    "rate_slow": 0.05,
    "slow_seconds": 0.3,
    "seed": 2026,
    "keyed": True,
}
# One workload per page: many requests, so the rates above mean many faults.
CLIENT = {"CASTAI_PAGE_LIMIT": "1", "CASTAI_MAX_RETRIES": "12", "CASTAI_MAX_CONCURRENCY": "4"}


def export(org: SandboxOrg, faults: Faults, out: Path, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    with SandboxServer(org, faults=faults) as server, dg.DagsterInstance.ephemeral() as instance:
        sandbox_environment(monkeypatch, server, LOCAL_OUTPUT_DIR=str(out), **CLIENT)
        outcome = run_day(instance)
        assert outcome.success, outcome.failures()
        assert outcome.materialization("focus_cost_and_usage")["dagster/row_count"] > 0
    return server


def distinct_requests(server: SandboxServer) -> set[tuple[str, str]]:
    return {(r.path, repr(sorted(r.query.items()))) for r in server.requests}


def test_a_chaotic_day_is_byte_identical_to_a_calm_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = SandboxOrg.generate(seed=7, clusters=3, workloads_per_cluster=5)
    calm = export(org, Faults(), tmp_path / "calm", monkeypatch)
    chaos = export(org, Faults(**CHAOS), tmp_path / "chaos", monkeypatch)  # type: ignore[arg-type]

    injected = chaos.faults.injected
    assert injected["429"] >= 5 and injected["5xx"] >= 2 and injected["slow"] >= 1, injected
    # Every 429 and 5xx cost exactly one extra request; nothing else changed in what was asked.
    assert len(chaos.requests) == len(calm.requests) + injected["429"] + injected["5xx"]
    assert distinct_requests(chaos) == distinct_requests(calm)

    calm_objects, chaos_objects = local_objects(tmp_path / "calm"), local_objects(tmp_path / "chaos")
    assert data_objects(calm_objects) and data_objects(chaos_objects) == data_objects(calm_objects)
    assert comparable(chaos_objects) == comparable(calm_objects)
