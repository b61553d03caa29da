"""Shared fixtures: the Cast AI sandbox over real HTTP on 127.0.0.1 and an exporter environment."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

# Every property test is derandomised (the same examples on every run and machine) unless
# HYPOTHESIS_PROFILE=explore asks for fresh random examples while hunting for new failures.
settings.register_profile("deterministic", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

if TYPE_CHECKING:
    from castai_focus_dagster.castai.sandbox import SandboxOrg, SandboxServer

# The test markers (tiers.py), and pytester to test them.
pytest_plugins = ["castai_focus_dagster_tests.tiers", "pytester"]

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(autouse=True)
def _python_logging_enabled() -> Iterator[None]:
    """Importing the definitions applies LOG_LEVEL to the whole process (`logging.disable`): in-process
    tests must not depend on the runner's LOG_LEVEL or on import order. The CLI tests prove LOG_LEVEL."""
    logging.disable(logging.NOTSET)
    yield
    logging.disable(logging.NOTSET)


@pytest.fixture(scope="session")
def sandbox_org() -> SandboxOrg:
    from castai_focus_dagster.castai.sandbox import SandboxOrg

    return SandboxOrg.generate(seed=7)


@pytest.fixture
def sandbox(sandbox_org: SandboxOrg) -> Iterator[SandboxServer]:
    from castai_focus_dagster.castai.sandbox import Faults, SandboxServer

    with SandboxServer(sandbox_org, faults=Faults()) as server:
        yield server


@pytest.fixture
def exporter_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> Path:
    """Environment of an exporter pointed at the sandbox (as the real API) and a local output folder."""
    out = tmp_path / "out"
    for name in list(os.environ):
        exporter = ("CASTAI_", "COLLECTION_", "FOCUS_", "S3_", "TERNARY_", "JOB_", "SCHEDULE_", "LOG_LEVEL")
        if name.startswith((*exporter, "DELETE_LEGACY_", "LOCAL_OUTPUT_DIR")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CASTAI_API_URL", sandbox.url)
    monkeypatch.setenv("CASTAI_API_KEY", sandbox_org.api_key)
    monkeypatch.setenv("CASTAI_ORGANIZATION_ID", sandbox_org.organization_id)
    monkeypatch.setenv("LOCAL_OUTPUT_DIR", str(out))
    monkeypatch.setenv("CASTAI_MAX_RETRIES", "2")
    return out
