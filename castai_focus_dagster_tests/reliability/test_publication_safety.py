"""A good published day is never replaced by a worse one unnoticed, and a prefix holds one organisation.

Through the real job (`dg.execute_job`), the sandbox over HTTP and a moto S3 server on loopback (or a
local folder): publish a good day, then make Cast AI answer what it may legally answer (an empty cluster
list, a list missing one cluster), or misconfigure the exporter (an include-list typo, another
organisation id, a missing bucket), and compare the published bytes before and after.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import dagster as dg
import pyarrow.parquet as pq
import pytest

from castai_focus_dagster.castai.sandbox import SandboxOrg, SandboxServer
from castai_focus_dagster.storage.publication_guard import ALLOW_SHRINK_TAG
from castai_focus_dagster_tests.reliability.harness import (
    DAY,
    RETRY_EVENTS,
    bucket_objects,
    consistency_problems,
    manifests,
    published,
    run_day,
    s3_settings,
    sandbox_environment,
    the_manifest,
)
from castai_focus_dagster_tests.reliability.s3_proxy import Rule, S3FaultProxy, S3Request
from castai_focus_dagster_tests.s3_server import (  # noqa: F401
    DUMMY_CREDENTIALS,
    REGION,
    S3TestServer,
    s3_server_fixture,
)

ORG_CLUSTERS = 3  # the `org` fixture's size (conftest.py)


def castai_requests(sandbox: SandboxServer) -> int:
    return sum(1 for r in sandbox.requests if r.path.startswith(("/v1/", "/pricing/")))


def test_an_empty_or_shorter_cluster_list_cannot_replace_a_published_day(
    s3_server: S3TestServer, sandbox: SandboxServer, org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, bucket = s3_server.client(), s3_server.new_bucket()
    sandbox_environment(monkeypatch, sandbox, **s3_settings(s3_server.endpoint_url, bucket))
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(instance).success
        good = bucket_objects(client, bucket)
        manifest = the_manifest(good)
        per_cluster = manifest["clusters"]
        assert sorted(per_cluster) == sorted(c.id for c in org.clusters)
        assert sum(c["rows"] for c in per_cluster.values()) == manifest["rowCount"]
        assert sum(c["billedCost"] for c in per_cluster.values()) == pytest.approx(
            manifest["costTotals"]["BilledCost"], abs=1e-6
        )

        # 1. Cast AI answers 200 {"items": []}.
        sandbox.faults.unlist_all_clusters = True
        refused = run_day(instance)
        assert not refused.success
        texts = [t for t in refused.failures() if "Cast AI listed no clusters" in t]
        assert texts, refused.failures()
        assert all(c.id in texts[0] for c in org.clusters)
        assert f"{manifest['rowCount']} rows" in texts[0] and ALLOW_SHRINK_TAG in texts[0]
        after = bucket_objects(client, bucket)
        assert published(after) == published(good)  # byte for byte: data, Ternary, manifest, metadata
        assert consistency_problems(after) == []  # and no staging leftover
        sandbox.faults.unlist_all_clusters = False

        # 2. The list misses one cluster.
        gone = sorted(per_cluster, key=lambda cid: per_cluster[cid]["billedCost"])[-1]
        sandbox.faults.unlisted_clusters = frozenset({gone})
        refused = run_day(instance)
        assert not refused.success
        texts = [t for t in refused.failures() if "no longer listed" in t and gone in t]
        assert texts, refused.failures()
        assert f"${per_cluster[gone]['billedCost']:.2f}" in texts[0]
        assert published(bucket_objects(client, bucket)) == published(good)

        # 3. The operator confirms a real deletion: the same answer publishes, and the manifest says so.
        allowed = run_day(instance, tags={ALLOW_SHRINK_TAG: "true"})
        assert allowed.success
        restated = bucket_objects(client, bucket)
        new_manifest = the_manifest(restated)
        assert gone not in new_manifest["clusters"]
        assert new_manifest["rowCount"] == manifest["rowCount"] - per_cluster[gone]["rows"]
        assert any(gone in change for change in new_manifest["allowedChanges"])
        assert consistency_problems(restated) == []


def test_an_include_list_naming_an_unknown_cluster_is_a_configuration_error(
    tmp_path: object, sandbox: SandboxServer, org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = str(tmp_path) + "/out"
    real = org.clusters[0].id
    sandbox_environment(
        monkeypatch,
        sandbox,
        LOCAL_OUTPUT_DIR=out,
        COLLECTION_INCLUDE_CLUSTER_IDS=f"{real},0000-typo-cluster",
    )
    with dg.DagsterInstance.ephemeral() as instance:
        outcome = run_day(instance, step_retries=True)
    assert not outcome.success
    texts = [t for t in outcome.failures() if "COLLECTION_INCLUDE_CLUSTER_IDS" in t]
    assert texts and "0000-typo-cluster" in texts[0] and org.organization_id in texts[0]
    assert real not in texts[0].split("does not have:")[1]  # only the unknown id is named
    assert not outcome.event_types() & RETRY_EVENTS  # a configuration error is not retried


def test_another_organisation_cannot_publish_under_a_claimed_prefix(
    s3_server: S3TestServer, sandbox: SandboxServer, org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, bucket = s3_server.client(), s3_server.new_bucket()
    settings = s3_settings(s3_server.endpoint_url, bucket)
    sandbox_environment(monkeypatch, sandbox, **settings)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(instance).success
        first = bucket_objects(client, bucket)
        marker = json.loads(first["metadata/organization.json"])
        assert marker["organizationId"] == org.organization_id

        other = "11111111-2222-4333-8444-555555555555"
        monkeypatch.setenv("CASTAI_ORGANIZATION_ID", other)
        sandbox.requests.clear()
        refused = run_day(instance, step_retries=True)
        assert not refused.success
        texts = [t for t in refused.failures() if "One S3_PREFIX holds one organisation" in t]
        assert texts and org.organization_id in texts[0] and other in texts[0]
        assert "S3_PREFIX" in texts[0] and "delete its objects" in texts[0]
        assert bucket_objects(client, bucket) == first  # nothing written, not even intermediates
        assert castai_requests(sandbox) == 0  # refused at start, before calling Cast AI
        assert not refused.event_types() & RETRY_EVENTS

        # A prefix published before markers existed: its manifests name the organisation.
        client.delete_object(Bucket=bucket, Key="metadata/organization.json")
        legacy = bucket_objects(client, bucket)
        refused = run_day(instance)
        assert not refused.success
        assert [t for t in refused.failures() if "One S3_PREFIX holds one organisation" in t]
        assert bucket_objects(client, bucket) == legacy


def test_a_missing_bucket_fails_at_start_without_retries(
    s3_server: S3TestServer, sandbox: SandboxServer, org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = s3_settings(s3_server.endpoint_url, "focus-bucket-that-was-never-created")
    sandbox_environment(monkeypatch, sandbox, **settings)
    with dg.DagsterInstance.ephemeral() as instance:
        outcome = run_day(instance, step_retries=True)
    assert not outcome.success
    texts = [t for t in outcome.failures() if "focus-bucket-that-was-never-created does not exist" in t]
    assert texts, outcome.failures()
    assert not outcome.event_types() & RETRY_EVENTS
    assert castai_requests(sandbox) == 0


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 16 KiB tmpfs (needs mount privileges, as root in the dev container; skipped elsewhere)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_fails_at_once_naming_the_path_without_retries(
    small_filesystem: Path, sandbox: SandboxServer, org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox_environment(monkeypatch, sandbox, LOCAL_OUTPUT_DIR=str(small_filesystem))
    with dg.DagsterInstance.ephemeral() as instance:
        outcome = run_day(instance, step_retries=True)
    assert not outcome.success
    texts = [t for t in outcome.failures() if "No space left on device" in t]
    assert texts and str(small_filesystem) in texts[0], outcome.failures()
    assert not outcome.event_types() & RETRY_EVENTS


def test_a_read_only_output_folder_fails_at_start_without_retries(
    small_filesystem: Path, sandbox: SandboxServer, org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_filesystem)], check=True)
    sandbox_environment(monkeypatch, sandbox, LOCAL_OUTPUT_DIR=str(small_filesystem))
    with dg.DagsterInstance.ephemeral() as instance:
        outcome = run_day(instance, step_retries=True)
    assert not outcome.success
    texts = [t for t in outcome.failures() if "is not writable" in t and str(small_filesystem) in t]
    assert texts and "Read-only file system" in texts[0], outcome.failures()
    assert not outcome.event_types() & RETRY_EVENTS
    assert castai_requests(sandbox) == 0  # found before calling Cast AI


def test_leftovers_of_a_killed_run_are_removed_by_the_next_run_of_the_day(
    tmp_path: Path, sandbox: SandboxServer, org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    sandbox_environment(monkeypatch, sandbox, LOCAL_OUTPUT_DIR=str(out))
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(instance).success
        (data,) = [p for p in out.rglob("*.parquet") if "version=focus-1.3" in p.parts[-5]]
        good = data.read_bytes()
        # What a kill -9 leaves: a staging copy of a dead run, its store's temporary file, and the hidden
        # temporary file older versions wrote next to the data object.
        dead_staging = out / "_staging" / "dead-run" / data.relative_to(out)
        dead_staging.parent.mkdir(parents=True)
        dead_staging.write_bytes(good[:100])
        stale_tmp = out / ".castai-focus-tmp" / f"{data.name}.dead.tmp"
        stale_tmp.parent.mkdir(exist_ok=True)
        stale_tmp.write_bytes(good[:100])
        legacy_tmp = data.parent / f".{data.name}.dead.tmp"
        legacy_tmp.write_bytes(good[:100])
        long_ago = time.time() - 2 * 3600
        for path in (stale_tmp, legacy_tmp):
            os.utime(path, (long_ago, long_ago))

        assert run_day(instance).success
    assert not dead_staging.exists() and not (out / "_staging").exists()
    assert not stale_tmp.exists() and not legacy_tmp.exists()
    tree = next(
        p for p in out.iterdir() if p.name == "version=focus-1.3" or (p / "version=focus-1.3").exists()
    )
    assert [p for p in tree.rglob("*") if p.is_file()] and not [p for p in tree.rglob(".*")]
    assert data.read_bytes() == good  # the re-run is byte-identical


def test_the_override_tag_through_the_cli_as_operators_use_it(
    tmp_path: Path, sandbox: SandboxServer, org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    sandbox_environment(monkeypatch, sandbox, LOCAL_OUTPUT_DIR=str(out))
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(instance).success
    (manifest_path,) = out.rglob("manifest.json")
    gone = org.clusters[0].id
    sandbox.faults.unlisted_clusters = frozenset({gone})
    (tmp_path / "home").mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}

    def execute(tags: dict[str, str]) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            "-m",
            "dagster",
            "job",
            "execute",
            "-m",
            "castai_focus_dagster.definitions",
        ]
        command += ["-j", "focus_export_job", "--tags", json.dumps({"dagster/partition": DAY, **tags})]
        return subprocess.run(command, capture_output=True, text=True, env=env, check=False)

    before = manifest_path.read_bytes()
    refused = execute({})
    assert refused.returncode != 0
    assert "no longer listed by Cast AI" in refused.stdout + refused.stderr
    assert manifest_path.read_bytes() == before
    allowed = execute({ALLOW_SHRINK_TAG: "true"})
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert gone not in json.loads(manifest_path.read_bytes())["clusters"]


CHILD = """
import sys
import boto3
import dagster as dg
from castai_focus_dagster_tests.reliability.harness import run_day

with dg.DagsterInstance.get() as instance:
    outcome = run_day(instance, sys.argv[1])
sys.exit(0 if outcome.success else 1)
"""
REPO = Path(__file__).resolve().parents[2]


def test_overlapping_runs_of_one_day_publish_one_after_the_other(
    s3_server: S3TestServer,
    sandbox: SandboxServer,
    org: SandboxOrg,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run A (a process) reaches its manifest write; the proxy holds that request while run B (another
    process, other data) reaches its publication and finds the day's lease taken (it reads the lease
    twice: it is waiting); then A's request goes on. A completes, B publishes after it: both succeed,
    and what stays is B's data with B's manifest. (Before the lease, B published in between and A
    failed with "was replaced by another run".)"""
    client, bucket = s3_server.client(), s3_server.new_bucket()
    with S3FaultProxy(s3_server.endpoint_url) as proxy:

        def configure(account: str) -> None:
            sandbox_environment(
                monkeypatch,
                sandbox,
                FOCUS_BILLING_ACCOUNT_NAME=account,
                **s3_settings(proxy.url, bucket),
            )

        def child(account: str, home: Path) -> tuple[list[str], dict[str, str]]:
            home.mkdir()
            env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
            env |= {"DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO), "FOCUS_BILLING_ACCOUNT_NAME": account}
            return [sys.executable, "-c", CHILD, DAY], env

        configure("before")
        with dg.DagsterInstance.ephemeral() as instance:
            assert run_day(instance).success

        b_result: list[subprocess.CompletedProcess[bytes]] = []
        b_thread: list[threading.Thread] = []

        def lease_reads() -> int:
            with proxy.lock:
                return sum(1 for r in proxy.requests if r.method == "GET" and r.key.startswith("_locks/"))

        def start_b_and_wait_until_it_waits(request: S3Request) -> bool:
            command, env = child("run-b", tmp_path / "home-b")
            seen = lease_reads()
            thread = threading.Thread(
                target=lambda: b_result.append(
                    subprocess.run(command, env=env, cwd=REPO, capture_output=True, timeout=600)
                )
            )
            thread.start()
            b_thread.append(thread)
            while lease_reads() < seen + 2 and thread.is_alive():
                time.sleep(0.1)
            return False  # then forward A's manifest write

        command, env = child("run-a", tmp_path / "home-a")
        rule = Rule(
            "PUT", r"/manifest\.json$", times=1, on_match=start_b_and_wait_until_it_waits, forward=True
        )
        with proxy.failing(rule):
            a_result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, timeout=600)
            (thread,) = b_thread
            thread.join(600)
    assert rule.matched == 1
    a_output = (a_result.stdout + a_result.stderr).decode(errors="replace")
    assert a_result.returncode == 0, a_output[-3000:]
    (b,) = b_result
    assert b.returncode == 0, (b.stdout + b.stderr)[-3000:]
    final = bucket_objects(client, bucket)
    assert consistency_problems(final) == []  # the manifest describes exactly the bytes present
    names = {
        name
        for key, data in final.items()
        if key.startswith("version=focus-1.3/")
        for name in pq.read_table(io.BytesIO(data), columns=["BillingAccountName"])[
            "BillingAccountName"
        ].to_pylist()
    }
    assert names == {"run-b"}
    assert not any(key.startswith("_locks/") for key in final)  # both released the lease


def test_a_day_whose_manifest_is_gone_is_still_guarded(
    s3_server: S3TestServer, sandbox: SandboxServer, org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest retired, lost or withdrawn: an empty cluster list still cannot replace the day."""
    client, bucket = s3_server.client(), s3_server.new_bucket()
    sandbox_environment(monkeypatch, sandbox, **s3_settings(s3_server.endpoint_url, bucket))
    with dg.DagsterInstance.ephemeral() as instance:
        sandbox.faults.unlist_all_clusters = True
        first = run_day(instance)  # a true first publication of an empty list: nothing to compare
        assert first.success, first.failures()
        (empty_manifest,) = manifests(bucket_objects(client, bucket)).values()
        assert empty_manifest["rowCount"] == 0
        sandbox.faults.unlist_all_clusters = False
        assert run_day(instance).success
        (manifest_key,) = manifests(bucket_objects(client, bucket))
        client.delete_object(Bucket=bucket, Key=manifest_key)
        good = bucket_objects(client, bucket)

        sandbox.faults.unlist_all_clusters = True
        refused = run_day(instance)
        assert not refused.success
        texts = [t for t in refused.failures() if "Cast AI listed no clusters" in t and "figures.json" in t]
        assert texts, refused.failures()
        assert published(bucket_objects(client, bucket)) == published(good)


def rejecting_conditional_puts() -> tuple[Rule, Rule]:
    """What MinIO-like stores without conditional writes answer to If-Match / If-None-Match."""
    return (
        Rule("PUT", r".", copy=False, status=501, code="NotImplemented", header="if-none-match"),
        Rule("PUT", r".", copy=False, status=400, code="InvalidArgument", header="if-match"),
    )


def test_a_store_rejecting_conditional_writes_still_publishes_every_day(
    s3_server: S3TestServer, sandbox: SandboxServer, org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, bucket = s3_server.client(), s3_server.new_bucket()
    with S3FaultProxy(s3_server.endpoint_url) as proxy:
        sandbox_environment(monkeypatch, sandbox, **s3_settings(proxy.url, bucket))
        with (
            proxy.failing(*rejecting_conditional_puts()) as rules,
            dg.DagsterInstance.ephemeral() as instance,
        ):
            first = run_day(instance)  # the marker, the lease and the manifest: If-None-Match
            assert first.success, first.failures()
            second = run_day(instance)  # the manifest again
            assert second.success, second.failures()
            # Each run's store learns it at its first conditional write (the lease), then stops asking.
            assert rules[0].matched >= 2
    objects = bucket_objects(client, bucket)
    assert consistency_problems(objects) == []
    (manifest,) = manifests(objects).values()
    assert manifest["runId"] == second.run_id


def test_the_fallback_keeps_the_version_check_and_warns_once(
    s3_server: S3TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    from castai_focus_dagster.storage.object_store import PreconditionFailed, S3ObjectStore

    bucket = s3_server.new_bucket()
    with (
        S3FaultProxy(s3_server.endpoint_url) as proxy,
        proxy.failing(*rejecting_conditional_puts()) as rules,
    ):
        client = boto3.client("s3", endpoint_url=proxy.url, region_name=REGION, **DUMMY_CREDENTIALS)
        store = S3ObjectStore(client, bucket)
        with caplog.at_level("WARNING", logger="castai_focus_dagster.storage.object_store"):
            store.put_if("m.json", b"1", "application/json", None)
            first = store.version("m.json")
            with pytest.raises(PreconditionFailed):
                store.put_if("m.json", b"2", "application/json", None)  # exists: refused
            with pytest.raises(PreconditionFailed):
                store.put_if("m.json", b"2", "application/json", '"not-the-etag"')
            store.put_if("m.json", b"3", "application/json", first)
            warnings = [r for r in caplog.records if "does not support If-Match" in r.getMessage()]
            assert len(warnings) == 1 and bucket in warnings[0].getMessage()
            fresh = S3ObjectStore(client, bucket)  # its first conditional write is an If-Match
            fresh.put_if("m.json", b"4", "application/json", store.version("m.json"))
            assert rules[1].matched == 1
            with pytest.raises(PreconditionFailed):
                fresh.put_if("m.json", b"5", "application/json", first)
    assert store.get("m.json") == b"4"
