"""How the reliability tests run the exporter: the real Dagster job, the sandbox over HTTP, real storage.

Runs go through `dg.execute_job` with step retries disabled: the Cast AI assets carry a RetryPolicy
(30 s delays) that `execute_in_process` always honours, and a test of a refused input must fail in
seconds, not minutes. Everything else is the production configuration path: settings from the
environment, resources, IO manager, write-audit-publish.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pytest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from castai_focus_dagster.castai.sandbox import SandboxServer

DAY = "2026-11-01"
NO_STEP_RETRIES: dict[str, Any] = {"execution": {"config": {"retries": {"disabled": {}}}}}
# The events of a step that Dagster runs again.
RETRY_EVENTS = frozenset({"STEP_UP_FOR_RETRY", "STEP_RESTARTED"})
EXPORTER_PREFIXES = (
    "CASTAI_", "COLLECTION_", "FOCUS_", "S3_", "TERNARY_", "JOB_", "SCHEDULE_", "LOCAL_",
    "LOG_LEVEL", "DELETE_LEGACY_",
)  # fmt: skip
DATA_TREE = "version=focus-1.3/"
TERNARY_TREE = "ternary/"
METADATA_TREE = "metadata/"
# Manifest / metadata fields that name the run or the moment: everything else must be reproducible.
# (`uri` names the bucket or folder, which differs between two otherwise identical runs.)
VOLATILE_FIELDS = {
    "runId",
    "publishedAt",
    "uri",
    "CreationDate",
    "DatasetInstanceLastUpdated",
    "RecencyLastUpdated",
    "TimeSectorLastUpdated",
}


def focus_export_job() -> dg.JobDefinition:
    """Reconstructable entry point of the job (what `dg.reconstructable` imports).

    The definitions module is loaded afresh, as a code server loads it in the run's environment: it
    wires each secret as an `EnvVar` only when the variable exists, so a copy imported by an earlier
    test under another environment would ask for a secret this test does not set.
    """
    from castai_focus_dagster import definitions

    return importlib.reload(definitions).defs.resolve_job_def("focus_export_job")


@dataclass(frozen=True)
class RunOutcome:
    success: bool
    run_id: str
    events: list[dg.EventLogEntry]
    setup_error: str = ""  # a failure before any step ran (resources), with its causes

    def materialization(self, asset: str) -> dict[str, Any]:
        """The metadata (raw values) of the run's materialization of `asset`."""
        for entry in self.events:
            event = entry.dagster_event
            if event is not None and event.event_type_value == "ASSET_MATERIALIZATION":
                materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
                if materialization.asset_key.path[-1] == asset:
                    return {k: v.value for k, v in materialization.metadata.items()}
        raise AssertionError(f"no materialization of {asset} in run {self.run_id}")

    def failures(self) -> list[str]:
        """Every failure (run setup, steps) with its whole cause chain, as text."""
        texts = [self.setup_error] if self.setup_error else []
        for entry in self.events:
            event = entry.dagster_event
            if event is not None and event.event_type_value in ("STEP_FAILURE", "RUN_FAILURE"):
                error = getattr(event.event_specific_data, "error", None)
                while error is not None:
                    texts.append(error.to_string())
                    error = error.cause
        return texts

    def event_types(self) -> set[str]:
        return {e.dagster_event.event_type_value for e in self.events if e.dagster_event is not None}

    def log_messages(self, level: int | None = None) -> list[str]:
        return [
            entry.user_message
            for entry in self.events
            if entry.dagster_event is None and (level is None or entry.level == level)
        ]


def run_day(
    instance: dg.DagsterInstance,
    day: str = DAY,
    *,
    tags: Mapping[str, str] | None = None,
    step_retries: bool = False,
) -> RunOutcome:
    """One daily partition through the whole job (assets and checks), step retries off unless asked
    (a test that proves a failure is not retried runs with the production retry policy)."""
    job = dg.reconstructable(focus_export_job)
    # Dagster memoises the last loaded definition; load it again in this test's environment.
    type(job).get_definition.cache_clear()
    type(job).get_repository_definition.cache_clear()
    try:
        with dg.execute_job(
            job,
            instance=instance,
            tags={"dagster/partition": day, **(tags or {})},
            run_config={} if step_retries else NO_STEP_RETRIES,
            raise_on_error=False,
        ) as result:
            run_id = result.run_id
            success = result.success
    except dg.DagsterUserCodeExecutionError as exc:  # resource setup failed: raised despite raise_on_error
        (latest,) = instance.get_runs(limit=1)
        text = "".join(traceback.format_exception(exc))
        return RunOutcome(False, latest.run_id, list(instance.all_logs(latest.run_id)), text)
    return RunOutcome(success, run_id, list(instance.all_logs(run_id)))


def exporter_environment(
    monkeypatch: pytest.MonkeyPatch, api_url: str, api_key: str, organization_id: str, **settings: str
) -> None:
    """A clean exporter environment pointed at a sandbox as if it were the real API."""
    for name in list(os.environ):
        if name.startswith(EXPORTER_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    values = {
        "CASTAI_API_URL": api_url,
        "CASTAI_API_KEY": api_key,
        "CASTAI_ORGANIZATION_ID": organization_id,
        "CASTAI_RATE_LIMIT_RPS": "1000",
        "CASTAI_MAX_RETRIES": "1",
        "CASTAI_TIMEOUT_SECONDS": "10",
        "S3_PREFIX": "",  # keys at the root, as the trees above and the fault rules are written
        **settings,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def sandbox_environment(monkeypatch: pytest.MonkeyPatch, sandbox: SandboxServer, **settings: str) -> None:
    """`exporter_environment` pointed at `sandbox`, with its organisation's key and id."""
    exporter_environment(
        monkeypatch, sandbox.url, sandbox.org.api_key, sandbox.org.organization_id, **settings
    )


def s3_settings(endpoint_url: str, bucket: str, secret: str = "dummy-secret") -> dict[str, str]:
    return {
        "S3_BUCKET": bucket,
        "S3_ENDPOINT_URL": endpoint_url,
        "S3_ACCESS_KEY_ID": "dummy-access-key",
        "S3_SECRET_ACCESS_KEY": secret,
        "S3_REGION": "us-east-1",
    }


# Object sets ------------------------------------------------------------------------------------


def local_objects(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def bucket_objects(client: S3Client, bucket: str) -> dict[str, bytes]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in sorted(keys)}


def published(objects: Mapping[str, bytes]) -> dict[str, bytes]:
    """What consumers read: the data trees and the FOCUS metadata (not intermediates or staging)."""
    return {k: v for k, v in objects.items() if k.startswith((DATA_TREE, TERNARY_TREE, METADATA_TREE))}


def data_objects(objects: Mapping[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in objects.items() if k.startswith((DATA_TREE, TERNARY_TREE))}


def manifests(objects: Mapping[str, bytes]) -> dict[str, dict[str, Any]]:
    return {k: json.loads(v) for k, v in objects.items() if k.endswith("/manifest.json")}


def the_manifest(objects: Mapping[str, bytes]) -> dict[str, Any]:
    """The manifest of an object set that holds exactly one day."""
    (manifest,) = manifests(objects).values()
    return manifest


def without_volatile(value: Any) -> Any:
    """A JSON document with its run ids and timestamps removed, for comparing two runs."""
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE_FIELDS}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


def comparable(objects: Mapping[str, bytes]) -> dict[str, Any]:
    """Every object, JSON documents minus volatile fields, everything else as its bytes."""
    return {
        key: without_volatile(json.loads(data)) if key.endswith(".json") else data
        for key, data in objects.items()
    }


def consistency_problems(objects: Mapping[str, bytes]) -> list[str]:
    """What makes a published object set untrustworthy: a manifest listing missing or different bytes,
    a data object no manifest vouches for while a manifest exists, a staging leftover."""
    problems = []
    for key, manifest in manifests(objects).items():
        listed = {item["key"] for item in manifest["files"]}
        for item in manifest["files"]:
            data = objects.get(item["key"])
            if data is None:
                problems.append(f"{key} lists missing {item['key']}")
            elif hashlib.sha256(data).hexdigest() != item["sha256"] or len(data) != item["bytes"]:
                problems.append(f"{key} lists {item['key']} with other bytes")
        day_folder = "/" + key.split("/manifests/", 1)[1].rsplit("/", 1)[0] + "/"  # /year=/month=/day=/
        problems += [
            f"{key} does not list {k}" for k in data_objects(objects) if day_folder in k and k not in listed
        ]
    problems += [f"staging leftover {k}" for k in objects if k.startswith("_staging/")]
    return problems


def containing(texts: Iterable[str], *needles: str) -> list[str]:
    return [t for t in texts if all(n in t for n in needles)]
