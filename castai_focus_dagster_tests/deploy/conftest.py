"""Fixtures of the deployment tests: the chart reference files, our value sets merged over the chart
defaults, a kubeconfig for dagster-k8s and a moto S3 server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from castai_focus_dagster_tests.deploy.helm import (
    CHART_REF,
    VALUE_SETS,
    chart_values,
    load_yaml,
)


@pytest.fixture(scope="module")
def chart_ref() -> Path:
    if not CHART_REF.is_dir():
        # A user's clone has no shared/: skip with the reason, as the validator tests do (CI has it).
        pytest.skip(f"chart reference files not found at {CHART_REF} (shared/ is not next to the repo)")
    return CHART_REF


@pytest.fixture(scope="module")
def chart_defaults(chart_ref: Path) -> dict[str, Any]:
    return load_yaml(chart_ref / "values-1.12.19.yaml")


@pytest.fixture(scope="module")
def values(chart_defaults: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each value set as the chart sees it: chart defaults, then values.yaml, then the overlay."""
    return {name: chart_values(chart_defaults, name) for name in VALUE_SETS}


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig pointing nowhere: the launcher loads it but no test talks to a cluster."""
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "none", "user": {"token": "unused"}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
