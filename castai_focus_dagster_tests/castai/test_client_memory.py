"""What a fetch leaves behind: nothing of its response bodies once its table is dropped, even before
the cyclic garbage collector runs (the sandbox over real HTTP on 127.0.0.1)."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from castai_focus_dagster.castai.client import CastAIClient
from castai_focus_dagster.castai.sandbox import Faults, SandboxOrg, SandboxServer

START = datetime(2026, 9, 1, tzinfo=UTC)
END = START + timedelta(days=1)


@pytest.fixture
def gc_disabled() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_response_bodies_are_freed_without_the_cyclic_gc(gc_disabled: None) -> None:
    # httpx keeps each response in a reference cycle with its stream: a body cached on the response
    # would stay until the next full collection, which a large heap runs rarely. Per concurrent fetch
    # that is megabytes per page, so memory grew with the number of clusters fetched.
    org = SandboxOrg.generate(seed=7, clusters=1, workloads_per_cluster=200)
    cluster_id = org.clusters[0].id
    with (
        SandboxServer(org, faults=Faults()) as server,
        CastAIClient(server.url, org.api_key, organization_id=org.organization_id, page_limit=50) as client,
    ):
        client.workload_costs(cluster_id, START, END, 3600)  # warm: connection, caches, decoders
        body_bytes: list[int] = []
        get = client._session.get

        def measured_get(*args: object, **kwargs: object) -> bytes:
            body = get(*args, **kwargs)  # type: ignore[arg-type]
            body_bytes.append(len(body))
            return body

        client._session.get = measured_get  # type: ignore[method-assign]
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(3):
                table = client.workload_costs(cluster_id, START, END, 3600)
                assert table.num_rows > 0
                del table
            left = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert len(body_bytes) >= 12 and min(body_bytes) > 100_000  # several pages of real size
    assert left < 0.05 * sum(body_bytes), (left, sum(body_bytes))
