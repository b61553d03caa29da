"""focus_published_conformance: it trusts the pre-publication audit only for the bytes the audit vouched
for, runs every rule again on a day published without that record, and compares counts and totals.

Each test publishes a real day through the job (sandbox over HTTP), then edits the published object or
its manifest the way an older version, a hand-made publication or a damaged upload would leave them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from castai_focus_dagster.castai.sandbox import SandboxOrg, SandboxServer
from castai_focus_dagster.defs.checks import DayVerdict, published_conformance
from castai_focus_dagster.focus.schema import FOCUS_SCHEMA
from castai_focus_dagster.storage.local_store import LocalObjectStore
from castai_focus_dagster.storage.serialize import FocusParquetWriter
from castai_focus_dagster_tests.reliability.harness import DAY, exporter_environment, run_day


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxOrg.generate(seed=11, clusters=2, workloads_per_cluster=3)) as server:
        yield server


@pytest.fixture
def root(sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "out"
    org = sandbox.org
    exporter_environment(
        monkeypatch, sandbox.url, org.api_key, org.organization_id, LOCAL_OUTPUT_DIR=str(out)
    )
    with dg.instance_for_test() as instance:
        assert run_day(instance, DAY).success
    return out


def _paths(root: Path) -> tuple[Path, Path]:
    (manifest,) = root.glob(f"metadata/focus-1.3/manifests/**/day={DAY[-2:]}/manifest.json")
    (data,) = root.glob(f"version=focus-1.3/**/day={DAY[-2:]}/*.parquet")
    return manifest, data


def _edit_manifest(root: Path, edit: Any) -> None:
    path, _ = _paths(root)
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def _replace_object(root: Path, table: pa.Table) -> None:
    """Publish other bytes under the day's key, with a manifest entry that matches them exactly."""
    _, data = _paths(root)
    with data.open("wb") as sink:
        writer = FocusParquetWriter(sink)
        writer.write(table)
        writer.close()
    content = data.read_bytes()

    def listed(document: dict[str, Any]) -> None:
        document["files"][0].update(sha256=hashlib.sha256(content).hexdigest(), bytes=len(content))

    _edit_manifest(root, listed)


def _verdict(root: Path) -> DayVerdict:
    return published_conformance(LocalObjectStore(root), "", "parquet", DAY)


def test_a_published_day_is_vouched_for_by_the_audit_it_passed(root: Path) -> None:
    manifest_path, _ = _paths(root)
    record = json.loads(manifest_path.read_text())["extra"]["audit"]
    assert record["passed"] is True
    assert {"conservation", "currency-codes", "no-blank-strings"} <= set(record["rules"])
    verdict = _verdict(root)
    assert verdict.passed, verdict.metadata
    assert verdict.metadata["rules"] == len(record["rules"])
    assert verdict.metadata["conformance"].startswith("audited before publication")


def test_without_an_audit_record_every_rule_runs_on_the_objects(root: Path) -> None:
    _edit_manifest(root, lambda document: document["extra"].pop("audit"))
    verdict = _verdict(root)
    assert verdict.passed, verdict.metadata
    assert verdict.metadata["rules"] == "all"

    _, data = _paths(root)
    table = pq.read_table(data).cast(FOCUS_SCHEMA)
    column = table.schema.get_field_index("BillingCurrency")
    lower = pa.array(["usd"] * table.num_rows, pa.string())
    _replace_object(root, table.set_column(column, table.schema.field(column), lower))
    verdict = _verdict(root)
    assert not verdict.passed
    assert any(problem.startswith("currency-codes") for problem in verdict.metadata["problems"].data)


def test_rows_or_cost_that_disagree_with_the_manifest_fail_even_when_audited(root: Path) -> None:
    manifest_path, _ = _paths(root)
    listed = json.loads(manifest_path.read_text())["files"][0]["rowCount"]

    def one_row_more(document: dict[str, Any]) -> None:
        document["files"][0]["rowCount"] += 1

    _edit_manifest(root, one_row_more)
    verdict = _verdict(root)
    assert not verdict.passed
    assert f"holds {listed} rows, the manifest lists {listed + 1}" in " ".join(
        verdict.metadata["problems"].data
    )

    def restore_and_add_a_cent(document: dict[str, Any]) -> None:
        document["files"][0]["rowCount"] -= 1
        document["costTotals"]["BilledCost"] += 0.01

    _edit_manifest(root, restore_and_add_a_cent)
    verdict = _verdict(root)
    assert not verdict.passed
    assert "Σ BilledCost" in " ".join(verdict.metadata["problems"].data)
