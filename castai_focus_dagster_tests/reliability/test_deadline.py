"""A Cast AI answer that trickles cannot hold a run: each request has one total deadline.

The sandbox sends one cluster's workload costs one byte a second, which passes every per-read
timeout; the run must fail within a few deadlines (attempts of `CASTAI_TIMEOUT_SECONDS` each), naming
the cluster and the timeout, instead of keeping a run slot and a `castai_api` pool slot for hours.
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from castai_focus_dagster.castai.sandbox import Faults, SandboxOrg, SandboxServer
from castai_focus_dagster_tests.reliability.harness import containing, run_day, sandbox_environment

DEADLINE_SECONDS = 2


@pytest.mark.timeout(240)
def test_a_trickling_cluster_fails_the_run_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = SandboxOrg.generate(seed=7, clusters=2, workloads_per_cluster=3)
    slow = org.clusters[1].id
    with SandboxServer(org) as server:
        sandbox_environment(
            monkeypatch,
            server,
            LOCAL_OUTPUT_DIR=str(tmp_path / "out"),
            CASTAI_TIMEOUT_SECONDS=str(DEADLINE_SECONDS),
            CASTAI_MAX_RETRIES="1",
        )
        server.faults = Faults(
            trickle_paths=f"/clusters/{slow}/workload-costs$", trickle_seconds_per_byte=1.0
        )
        with dg.DagsterInstance.ephemeral() as instance:
            started = time.monotonic()
            outcome = run_day(instance)
            elapsed = time.monotonic() - started
        assert server.faults.injected["trickle"] == 2  # the first attempt and its one retry
    assert not outcome.success
    assert containing(
        outcome.failures(), f"Cast AI workload-costs cluster {slow}", "no complete answer within 2 s"
    )
    # Two attempts of 2 s, the backoff between them (< 1 s) and the run's own work: far below the hours
    # the answer would take, with room for a loaded machine.
    assert elapsed < 60
