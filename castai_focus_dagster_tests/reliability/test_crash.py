"""A run killed between writing the data and writing the manifest: the next run completes, the final state
equals a clean run.

The export runs in a child process (the job on a persistent DAGSTER_HOME, as in production) against
moto S3 through `S3FaultProxy`. When the child's manifest PUT reaches the proxy, the test SIGKILLs the
child before the request is answered: data and metadata are written, the manifest is not, the staging
object is orphaned. No hook exists in the product for this; the trigger is the S3 traffic itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from castai_focus_dagster.castai.sandbox import SandboxOrg, SandboxServer
from castai_focus_dagster_tests.reliability.harness import (
    DAY,
    bucket_objects,
    comparable,
    consistency_problems,
    data_objects,
    manifests,
    run_day,
    s3_settings,
    sandbox_environment,
)
from castai_focus_dagster_tests.reliability.s3_proxy import Rule, S3FaultProxy, S3Request
from castai_focus_dagster_tests.s3_server import S3TestServer, s3_server_fixture  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
CHILD = """
import sys
import dagster as dg
from castai_focus_dagster_tests.reliability.harness import run_day

with dg.DagsterInstance.get() as instance:
    outcome = run_day(instance, sys.argv[1])
sys.exit(0 if outcome.success else 1)
"""


def test_a_run_killed_before_its_manifest_is_repaired_by_the_next_run(
    s3_server: S3TestServer,
    sandbox: SandboxServer,
    org: SandboxOrg,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = s3_server.client()
    home = tmp_path / "dagster_home"
    home.mkdir()
    with S3FaultProxy(s3_server.endpoint_url) as proxy:

        def configure(bucket: str, account: str) -> None:
            sandbox_environment(
                monkeypatch,
                sandbox,
                TERNARY_ENABLED="true",
                FOCUS_BILLING_ACCOUNT_NAME=account,
                **s3_settings(proxy.url, bucket),
            )

        # What a run that never crashed leaves behind.
        reference = s3_server.new_bucket()
        configure(reference, "after")
        assert run_day(dg.DagsterInstance.ephemeral()).success
        clean = bucket_objects(client, reference)

        # A bucket with a previous publication; then the run that dies.
        bucket = s3_server.new_bucket()
        configure(bucket, "before")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert run_day(instance).success
        before = bucket_objects(client, bucket)

        configure(bucket, "after")
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
        child_env |= {"DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
        log = (tmp_path / "child.log").open("wb")
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, DAY], env=child_env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )

        def kill_the_exporter(request: S3Request) -> bool:
            os.kill(child.pid, signal.SIGKILL)
            return True  # and never answer

        with proxy.failing(Rule("PUT", r"/manifest\.json$", on_match=kill_the_exporter)) as rules:
            try:
                returncode = child.wait(timeout=120)
            finally:
                child.kill()
                log.close()
        output = (tmp_path / "child.log").read_text(errors="replace")
        assert rules[0].matched == 1, output
        assert returncode == -signal.SIGKILL, output

        crashed = bucket_objects(client, bucket)
        # Killed after the data copy and before the manifest: new data, no manifest vouching for it.
        assert data_objects(crashed) == data_objects(clean)
        assert not manifests(crashed)
        assert [k for k in crashed if k.startswith("_staging/")], "the killed run left its staging object"
        assert [p for p in consistency_problems(crashed) if not p.startswith("staging leftover")] == []
        assert manifests(before), "the previous publication had a manifest"

        # The next run (same instance and settings; a new process in production) repairs everything.
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert run_day(instance).success
        repaired = bucket_objects(client, bucket)
    assert consistency_problems(repaired) == []
    assert sorted(repaired) == sorted(clean)
    assert comparable(repaired) == comparable(clean)
