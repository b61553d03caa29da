"""Secrets never leak: everything a run produced is searched for the API key and the S3 secret.

Distinctive fake secrets are configured the production way (environment, `EnvVar` wiring) for runs that
succeed and runs that fail (Cast AI 500 on a cluster, a missing bucket, a configuration error). Then
stdout/stderr, the instance's files (event log and run storage, SQLite on disk), every event, run config
and materialization metadata, every object written, the failure texts and what the Cast AI server saw
in its logs are searched. The API key also must not travel over plain http except to loopback, nor
follow a redirect.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import dagster as dg
import httpx
import pytest
from dagster._serdes import serialize_value

from castai_focus_dagster.castai.client import CastAIClient
from castai_focus_dagster.castai.errors import CastAIError
from castai_focus_dagster.castai.sandbox import CannedResponse, Faults, SandboxOrg, SandboxServer
from castai_focus_dagster.settings import ConfigError, load_settings
from castai_focus_dagster_tests.reliability.harness import (
    RunOutcome,
    bucket_objects,
    containing,
    exporter_environment,
    run_day,
    s3_settings,
)
from castai_focus_dagster_tests.s3_server import S3TestServer, s3_server_fixture  # noqa: F401

API_KEY = "castai-key-LEAKCANARY-7f3a9c1e5b2d"
S3_SECRET = "s3-secret-LEAKCANARY-2d8e4b6a0c9f"
SECRETS = (API_KEY, S3_SECRET)


@pytest.fixture(scope="module")
def org() -> SandboxOrg:
    return SandboxOrg.generate(seed=7, clusters=2, workloads_per_cluster=3, api_key=API_KEY)


@pytest.fixture(scope="module")
def sandbox(org: SandboxOrg) -> Iterator[SandboxServer]:
    with SandboxServer(org) as server:
        yield server


def leaks(haystack: dict[str, bytes]) -> list[str]:
    """Where a secret (or its first half: a truncated or split copy) appears."""
    needles = [s.encode() for s in SECRETS] + [s[: len(s) // 2].encode() for s in SECRETS]
    return [
        f"{where}: {needle.decode()!r}"
        for where, data in haystack.items()
        for needle in needles
        if needle in data
    ]


def everything_a_run_left(
    instance: dg.DagsterInstance, home: Path, outcomes: list[RunOutcome]
) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        found[f"instance file {path.relative_to(home)}"] = path.read_bytes()
    for run in instance.get_runs():
        found[f"run {run.run_id} config and tags"] = serialize_value(run).encode()
        for entry in instance.all_logs(run.run_id):
            found[f"event {entry.run_id}/{entry.timestamp}"] = serialize_value(entry).encode()
    for outcome in outcomes:
        found[f"failures of {outcome.run_id}"] = "\n".join(outcome.failures()).encode()
        found[f"log of {outcome.run_id}"] = "\n".join(outcome.log_messages()).encode()
    return found


def test_no_secret_in_anything_a_run_produced(
    s3_server: S3TestServer,
    sandbox: SandboxServer,
    org: SandboxOrg,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    bucket = s3_server.new_bucket()
    home = tmp_path / "dagster_home"
    home.mkdir()

    def configure(**extra: str) -> None:
        exporter_environment(
            monkeypatch,
            sandbox.url,
            API_KEY,
            org.organization_id,
            TERNARY_ENABLED="true",
            LOG_LEVEL="debug",
            **s3_settings(s3_server.endpoint_url, bucket, secret=S3_SECRET) | extra,
        )

    outcomes: list[RunOutcome] = []
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        configure()
        outcomes.append(run_day(instance))
        assert outcomes[-1].success, outcomes[-1].failures()

        # Cast AI fails for good on one cluster: the failure text names it, never the key.
        sandbox.faults = Faults(fail_paths={f"{org.clusters[0].id}/workload-costs": 500})
        outcomes.append(run_day(instance))
        sandbox.faults = Faults()
        assert not outcomes[-1].success
        assert [t for t in outcomes[-1].failures() if org.clusters[0].id in t and "HTTP 500" in t]

        # S3 refuses (no such bucket) while the client holds the secret.
        configure(S3_BUCKET="no-such-bucket-leakcanary")
        outcomes.append(run_day(instance))
        assert not outcomes[-1].success
        assert [t for t in outcomes[-1].failures() if "NoSuchBucket" in t]

        # A broken configuration that carries both secrets.
        configure(CASTAI_API_URL="http://api.example.com", COLLECTION_GRANULARITY=API_KEY)
        outcomes.append(run_day(instance))
        assert not outcomes[-1].success
        assert [t for t in outcomes[-1].failures() if "invalid configuration" in t]

        haystack = everything_a_run_left(instance, home, outcomes)
    captured = capfd.readouterr()
    haystack["stdout"], haystack["stderr"] = captured.out.encode(), captured.err.encode()
    haystack |= {f"object {key}": data for key, data in bucket_objects(s3_server.client(), bucket).items()}
    haystack["Cast AI requests as the server logged them"] = repr(sandbox.requests).encode()

    assert (
        len([k for k in haystack if k.startswith("event ")]) > 50 and captured.err
    )  # we searched real output
    assert [k for k in haystack if k.startswith("object version=focus-1.3/")]
    assert leaks({"control": f"config {API_KEY} {S3_SECRET}".encode()}), (
        "the search must find a planted secret"
    )
    assert leaks(haystack) == []


def test_the_key_travels_over_plain_http_only_to_loopback() -> None:
    real_api = {"CASTAI_API_KEY": API_KEY, "CASTAI_ORGANIZATION_ID": "o", "S3_BUCKET": "b", "S3_REGION": "r"}
    for url in ("http://api.cast.ai", "http://10.0.0.8:8080", "http://castai.internal"):
        with pytest.raises(ConfigError) as config_error:
            load_settings({"CASTAI_API_URL": url, **real_api})
        assert "CASTAI_API_URL: plain http" in str(config_error.value) and API_KEY not in str(
            config_error.value
        )

        sent: list[httpx.Request] = []
        with pytest.raises(CastAIError) as client_error:
            CastAIClient(url, API_KEY, organization_id="o", transport=httpx.MockTransport(sent.append))  # type: ignore[arg-type]
        assert "refusing to send the API key" in str(client_error.value) and not sent
        assert API_KEY not in str(client_error.value)

    for url in (
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://[::1]:8080",
        "https://api.eu.cast.ai",
    ):
        load_settings({"CASTAI_API_URL": url, **real_api})
        CastAIClient(url, API_KEY, organization_id="o").close()


def test_a_redirect_never_carries_the_key_elsewhere(sandbox: SandboxServer, org: SandboxOrg) -> None:
    elsewhere = SandboxOrg.generate(seed=8, clusters=1, workloads_per_cluster=1, api_key="another-key")
    with SandboxServer(elsewhere) as other:
        location = f"{other.url}/v1/kubernetes/external-clusters"
        redirect = CannedResponse(302, b"", "text/plain", (("Location", location),))
        sandbox.faults = Faults(responses={"external-clusters": lambda _query: redirect})
        try:
            with (
                CastAIClient(sandbox.url, API_KEY, organization_id=org.organization_id) as client,
                pytest.raises(CastAIError) as info,
            ):
                client.list_clusters()
        finally:
            sandbox.faults = Faults()
        assert info.value.status == 302 and API_KEY not in str(info.value)
        assert other.requests == []


def _renderings(secret: str) -> list[bytes]:
    """How an error or a serialised event can show `secret`, plus its readable runs (split copies)."""
    shown = {
        secret,
        secret.strip(),
        repr(secret)[1:-1],
        repr(secret.encode())[2:-1],
        json.dumps(secret)[1:-1],
        json.dumps(json.dumps(secret))[1:-1],
        quote(secret, safe=""),
        quote_plus(secret),
        *re.findall(r"[A-Za-z0-9._~-]{8,}", secret),
    }
    return [s.encode() for s in shown if s]


def _found(haystack: dict[str, bytes], secret: str) -> list[str]:
    return [
        f"{where}: {needle!r}"
        for where, data in haystack.items()
        for needle in _renderings(secret)
        if needle in data
    ]


def test_keys_as_kubectl_stores_them_never_leak_and_never_hang(
    sandbox: SandboxServer,
    org: SandboxOrg,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The keys that leaked: a trailing newline (`kubectl create secret --from-file`) works; a control
    character inside fails the run at once, by configuration, not as minutes of connection retries."""
    newline_key = API_KEY + "\n"
    broken_keys = (
        API_KEY[:17] + "\r\n" + API_KEY[17:],
        API_KEY[:11] + "\x07" + API_KEY[11:],
        API_KEY[:20] + "\x1b[0m" + API_KEY[20:],  # (an environment variable cannot hold NUL)
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    outcomes: list[RunOutcome] = []
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        exporter_environment(
            monkeypatch, sandbox.url, newline_key, org.organization_id, LOCAL_OUTPUT_DIR=str(tmp_path / "out")
        )
        outcomes.append(run_day(instance))
        assert outcomes[-1].success, outcomes[-1].failures()
        assert sandbox.requests and all(r.headers["x-api-key"] == "REDACTED" for r in sandbox.requests)

        for key in broken_keys:
            monkeypatch.setenv("CASTAI_API_KEY", key)
            sandbox.requests.clear()
            outcomes.append(run_day(instance, step_retries=True))  # the production retry policy
            failed = outcomes[-1]
            assert not failed.success
            assert containing(failed.failures(), "CASTAI_API_KEY: ", "control or non-ASCII character")
            retried = [
                e
                for e in failed.events
                if e.dagster_event and e.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"
            ]
            assert retried == [] and sandbox.requests == []  # refused before any request, never retried

        haystack = everything_a_run_left(instance, home, outcomes)
    captured = capfd.readouterr()
    haystack["stdout"], haystack["stderr"] = captured.out.encode(), captured.err.encode()
    assert len([k for k in haystack if k.startswith("event ")]) > 50  # we searched real output
    assert [k for k in haystack if k.startswith("instance file ")]
    assert _found({"control": repr(broken_keys[0].encode()).encode()}, broken_keys[0])  # the search works
    for key in (newline_key, *broken_keys):
        assert _found(haystack, key) == []
