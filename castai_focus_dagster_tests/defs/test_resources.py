"""The Cast AI resource `definitions.py` chooses from CASTAI_API_URL, and what each one refuses.

Real Dagster resources initialised with `dg.build_resources`; the sandbox over real HTTP on 127.0.0.1.
Expected clusters come from the sandbox organisation's own catalogue, not from the client.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import dagster as dg
import pytest

from castai_focus_dagster.castai.sandbox import SandboxOrg, SandboxServer
from castai_focus_dagster.defs.resources import CastAIResource, SandboxCastAIResource


def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **values: str) -> None:
    for name in list(os.environ):
        if name.startswith(
            ("CASTAI_", "COLLECTION_", "FOCUS_", "S3_", "JOB_", "SCHEDULE_", "LOCAL_OUTPUT_DIR")
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_OUTPUT_DIR", str(tmp_path / "out"))
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def _loaded_castai_resource() -> object:
    from castai_focus_dagster import definitions

    return importlib.reload(definitions).defs.resources["castai"]


@pytest.mark.parametrize("url", ["sandbox", " Sandbox "])
def test_the_sandbox_setting_loads_the_sandbox_resource(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str
) -> None:
    _environment(monkeypatch, tmp_path, CASTAI_API_URL=url)
    assert type(_loaded_castai_resource()) is SandboxCastAIResource


def test_a_real_url_loads_the_real_resource(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    _environment(
        monkeypatch,
        tmp_path,
        CASTAI_API_URL=sandbox.url,
        CASTAI_API_KEY=sandbox_org.api_key,
        CASTAI_ORGANIZATION_ID=sandbox_org.organization_id,
    )
    resource = _loaded_castai_resource()
    assert type(resource) is CastAIResource
    with dg.build_resources({"castai": resource}) as resources:
        clusters = resources.castai.client.list_clusters()
    assert sorted(c.id for c in clusters) == sorted(c.id for c in sandbox_org.clusters)


def test_the_sandbox_resource_serves_the_demo_organisation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _environment(monkeypatch, tmp_path, CASTAI_API_URL="sandbox")
    demo = SandboxOrg.generate(seed=7)
    with dg.build_resources({"castai": SandboxCastAIResource()}) as resources:
        assert resources.castai.client.base_url.startswith("http://127.0.0.1:")
        clusters = resources.castai.client.list_clusters()
    assert sorted(c.id for c in clusters) == sorted(c.id for c in demo.clusters)


def test_each_resource_refuses_the_other_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    """A location loaded for one API never serves a run configured for the other (simulated costs for a
    real organisation would be plausible and wrong)."""
    _environment(
        monkeypatch,
        tmp_path,
        CASTAI_API_URL=sandbox.url,
        CASTAI_API_KEY=sandbox_org.api_key,
        CASTAI_ORGANIZATION_ID=sandbox_org.organization_id,
    )
    assert "CASTAI_API_URL names a real API" in _refusal(SandboxCastAIResource())
    monkeypatch.setenv("CASTAI_API_URL", "sandbox")
    assert "CASTAI_API_URL names sandbox" in _refusal(CastAIResource())
    assert not sandbox.requests  # neither resource called any API


def _refusal(resource: CastAIResource) -> str:
    """The description of the `dg.Failure` (not retried) that initialising `resource` raises."""
    with pytest.raises(dg.DagsterResourceFunctionError) as raised, dg.build_resources({"castai": resource}):
        pass
    failure = raised.value.user_exception
    assert isinstance(failure, dg.Failure) and not failure.allow_retries
    return failure.description or ""
