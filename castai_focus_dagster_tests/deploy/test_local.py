"""Local evaluation (deploy/k8s, values-local.yaml) and the repo-root instance."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from castai_focus_dagster_tests.deploy.helm import (
    DEPLOY,
    PER_DAY_LIMIT,
    REPO,
    deployment,
    env_of,
    load_yaml_documents,
    moto_client,
    user_values,
)

# --------------------------------------------------------------------------------------------------
# Local evaluation and the repo-root instance
# --------------------------------------------------------------------------------------------------


def test_minio_bucket_job_creates_the_bucket_idempotently(moto_endpoint: str) -> None:
    """The bucket Job's script, run as the Job runs it (python -c) against S3 on 127.0.0.1."""
    documents = load_yaml_documents(DEPLOY / "k8s" / "minio.yaml")
    job = next(d for d in documents if d["kind"] == "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    secret = next(
        d for d in documents if d["kind"] == "Secret" and d["metadata"]["name"] == "minio-credentials"
    )
    env = {item["name"]: item["value"] for item in container["env"]}
    bucket = env["S3_BUCKET"]
    assert bucket == env_of(deployment(user_values("local")))["S3_BUCKET"]
    run_env = {**secret["stringData"], **env, "S3_ENDPOINT_URL": moto_endpoint, "PATH": "/usr/bin:/bin"}
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, *container["command"][1:], *container["args"]],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    client = moto_client(moto_endpoint)
    assert bucket in {b["Name"] for b in client.list_buckets()["Buckets"]}
    assert container["image"] == "{repository}:{tag}".format(**deployment(user_values("local"))["image"])


def test_repo_root_dagster_yaml_loads_as_an_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster import DagsterInstance

    root_config = REPO / "dagster.yaml"  # `make dev` copies it into DAGSTER_HOME
    (tmp_path / "dagster.yaml").write_text(root_config.read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_coordinator is not None
        concurrency = instance.get_concurrency_config()
        limits = concurrency.run_queue_config.tag_concurrency_limits  # type: ignore[union-attr]
        assert PER_DAY_LIMIT in limits
        (backfill,) = [limit["limit"] for limit in limits if limit["key"] == "dagster/backfill"]
        assert concurrency.pool_config.pool_granularity is not None
        assert concurrency.pool_config.pool_granularity.value == "op"
        assert backfill <= (concurrency.pool_config.default_pool_limit or 0)
