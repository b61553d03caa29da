"""S3 faults at each publication step: the run fails, what consumers read stays trustworthy, a re-run repairs.

The exporter writes to a moto S3 server on loopback through `S3FaultProxy`, which answers chosen requests
with `AccessDenied` (not retried by boto3, so the failure is immediate). Each step publishes new bytes
(the billing account name changes), so "the previous objects are intact" is a real claim: after a failed
run every data object is either exactly the previously published one or exactly the new one, the
manifest (when present) describes exactly the bytes present, and no staging object is left behind.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import pyarrow.parquet as pq
import pytest

from castai_focus_dagster.castai.sandbox import SandboxOrg, SandboxServer
from castai_focus_dagster_tests.reliability.harness import (
    bucket_objects,
    comparable,
    consistency_problems,
    data_objects,
    manifests,
    published,
    run_day,
    s3_settings,
    sandbox_environment,
)
from castai_focus_dagster_tests.reliability.s3_proxy import Rule, S3FaultProxy
from castai_focus_dagster_tests.s3_server import S3TestServer, s3_server_fixture  # noqa: F401

DATA = r"^version=focus-1\.3/.*\.parquet$"


@dataclass(frozen=True)
class Step:
    name: str
    rule: Rule
    before_publication: bool  # the fault hits before any published object is touched


STEPS = (
    Step("data upload to staging", Rule("PUT", r"^_staging/.*\.parquet$", copy=False), True),
    Step("data copy to its final key", Rule("PUT", DATA, copy=True), False),
    Step("Ternary copy", Rule("PUT", r"^ternary/version=focus-1\.3/.*\.parquet$", copy=True), False),
    Step("manifest upload", Rule("PUT", r"/manifest\.json$"), False),
)


@pytest.fixture(scope="module")
def proxy(s3_server: S3TestServer) -> Iterator[S3FaultProxy]:
    with S3FaultProxy(s3_server.endpoint_url) as running:
        yield running


def configure(
    monkeypatch: pytest.MonkeyPatch,
    sandbox: SandboxServer,
    org: SandboxOrg,
    proxy: S3FaultProxy,
    bucket: str,
    account: str,
) -> None:
    sandbox_environment(
        monkeypatch,
        sandbox,
        TERNARY_ENABLED="true",
        FOCUS_BILLING_ACCOUNT_NAME=account,
        **s3_settings(proxy.url, bucket),
    )


def billing_names(objects: dict[str, bytes]) -> set[str]:
    return {
        name
        for data in data_objects(objects).values()
        for name in pq.read_table(io.BytesIO(data), columns=["BillingAccountName"])[
            "BillingAccountName"
        ].to_pylist()
    }


def test_a_failure_at_each_step_keeps_the_published_objects_trustworthy_and_a_rerun_repairs(
    s3_server: S3TestServer,
    proxy: S3FaultProxy,
    sandbox: SandboxServer,
    org: SandboxOrg,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = s3_server.client()
    bucket = s3_server.new_bucket()
    configure(monkeypatch, sandbox, org, proxy, bucket, "account-0")
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(instance).success
        previous = bucket_objects(client, bucket)
        assert billing_names(previous) == {"account-0"} and not consistency_problems(previous)

        for number, step in enumerate(STEPS, start=1):
            name = f"account-{number}"
            monkeypatch.setenv("FOCUS_BILLING_ACCOUNT_NAME", name)
            with proxy.failing(step.rule):
                failed = run_day(instance)
            assert step.rule.matched, f"{step.name}: the fault never fired"
            assert not failed.success, f"{step.name}: the run did not fail"
            assert [t for t in failed.failures() if "AccessDenied" in t and f"s3://{bucket}/" in t], step.name
            after = bucket_objects(client, bucket)
            assert consistency_problems(after) == [], step.name
            if step.before_publication:
                assert published(after) == published(previous), step.name

            repaired = run_day(instance)
            assert repaired.success, f"{step.name}: the re-run failed"
            fixed = bucket_objects(client, bucket)
            assert consistency_problems(fixed) == [] and len(manifests(fixed)) == 1, step.name
            assert billing_names(fixed) == {name}
            assert sorted(published(fixed)) == sorted(published(previous)), "a re-run adds or loses objects"
            # No partial object at any moment: each data object was the old bytes or the new bytes.
            for key, data in data_objects(after).items():
                assert data in (previous[key], fixed[key]), f"{step.name}: {key} is neither old nor new"
            previous = fixed

    # The repaired bucket equals a bucket that never saw a fault.
    reference = s3_server.new_bucket()
    configure(monkeypatch, sandbox, org, proxy, reference, f"account-{len(STEPS)}")
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(instance).success
    assert comparable(bucket_objects(client, reference)) == comparable(previous)
