"""Concurrent fetches wait on Cast AI together but decode one at a time (the sandbox over real HTTP on
127.0.0.1): decoding holds the GIL, and threads contending for it at every short release cost a
context switch each (figure 5 of `make bench`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, TypeVar

import pytest

from castai_focus_dagster.castai import client as client_module
from castai_focus_dagster.castai.assembler import WorkloadCostsAssembler
from castai_focus_dagster.castai.client import CastAIClient
from castai_focus_dagster.castai.sandbox import Faults, SandboxOrg, SandboxServer

START = datetime(2026, 9, 1, tzinfo=UTC)
END = START + timedelta(days=1)
CLUSTERS = 6
P = ParamSpec("P")
R = TypeVar("R")


class Overlap:
    """The most calls inside any of the wrapped functions at one moment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self.most = 0

    def wrap(self, function: Callable[P, R]) -> Callable[P, R]:
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            with self._lock:
                self._inside += 1
                self.most = max(self.most, self._inside)
            try:
                time.sleep(0.02)  # long enough that unserialised calls of 6 threads would meet
                return function(*args, **kwargs)
            finally:
                with self._lock:
                    self._inside -= 1

        return wrapped


def test_fetch_threads_decode_one_at_a_time_while_their_requests_overlap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    org = SandboxOrg.generate(seed=7, clusters=CLUSTERS, workloads_per_cluster=15)
    decoding, waiting = Overlap(), Overlap()
    monkeypatch.setattr(
        client_module, "decode_workload_costs_page", decoding.wrap(client_module.decode_workload_costs_page)
    )
    monkeypatch.setattr(WorkloadCostsAssembler, "add", decoding.wrap(WorkloadCostsAssembler.add))
    with (
        SandboxServer(org, faults=Faults(rate_slow=1.0, slow_seconds=0.2)) as server,
        CastAIClient(
            server.url, org.api_key, organization_id=org.organization_id, max_concurrency=CLUSTERS
        ) as client,
    ):
        client._session.get = waiting.wrap(client._session.get)  # type: ignore[method-assign]
        ids = [c.id for c in org.clusters]
        tables = dict(client.workload_costs_many(ids, START, END, 3600))
    assert sorted(tables) == sorted(ids) and all(t.num_rows > 0 for t in tables.values())
    assert waiting.most > 1  # the requests were in flight together
    assert decoding.most == 1  # their pages were decoded and assembled one at a time
