"""The organisation and sandbox most reliability modules run their days against."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from castai_focus_dagster.castai.sandbox import SandboxOrg, SandboxServer


@pytest.fixture(scope="module")
def org(request: pytest.FixtureRequest) -> SandboxOrg:
    """Small enough that a whole day runs in seconds; a module sets `ORG_CLUSTERS` for another size."""
    clusters = getattr(request.module, "ORG_CLUSTERS", 2)
    return SandboxOrg.generate(seed=11, clusters=clusters, workloads_per_cluster=3)


@pytest.fixture
def sandbox(org: SandboxOrg) -> Iterator[SandboxServer]:
    """The sandbox of `org`, fresh for each test: no fault and no recorded request carries over."""
    with SandboxServer(org) as server:
        yield server
