"""Write-audit-publish of a daily partition, key layout and FOCUS metadata, on a local folder and on S3.

The data bytes are small fakes: publication treats them as opaque, and the FOCUS transform is tested
elsewhere. Every expectation is derived from the output contract (DESIGN §4) or from the bytes written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from castai_focus_dagster.focus.schema import FOCUS_SCHEMA
from castai_focus_dagster.storage import keys as layout
from castai_focus_dagster.storage import lease as lease_module
from castai_focus_dagster.storage import legacy as legacy_module
from castai_focus_dagster.storage.keys import DataFormat
from castai_focus_dagster.storage.lease import LEASE_SECONDS
from castai_focus_dagster.storage.metadata import (
    TimeSector,
    column_definitions,
    dataset_instance_id_for,
    recency_document,
    schema_id_for,
)
from castai_focus_dagster.storage.object_store import (
    LocalObjectStore,
    ObjectStore,
    ObjectStoreError,
    S3ObjectStore,
)
from castai_focus_dagster.storage.ownership import claim_prefix
from castai_focus_dagster.storage.publish import publish_partition
from castai_focus_dagster.storage.publish_model import (
    ForeignObjectRefused,
    LeaseHeld,
    PrefixOwnedError,
    PublishError,
    PublishRequest,
    ReplacementRefused,
)
from castai_focus_dagster.storage.serialize import to_csv_bytes, to_parquet_bytes
from castai_focus_dagster_tests.s3_server import (  # noqa: F401  (pytest fixtures)
    Fault,
    FaultInjectingStore,
    HttpFaults,
    InjectedFault,
    S3TestServer,
    s3_bucket_fixture,
    s3_server_fixture,
)

ORG = "7e5b3c1a-0000-4000-8000-00000000c0de"
PREFIX = "castai/"
TERNARY = "ternary/"
DAY = date(2025, 3, 4)
T0 = datetime(2025, 3, 5, 1, 0, tzinfo=UTC)
COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("BilledCost", pa.float64()),
    ("ChargePeriodStart", pa.timestamp("us", tz="UTC")),
    ("ListUnitPrice", pa.decimal128(38, 10)),
    ("ProviderName", pa.string()),
    ("PublisherName", pa.string()),
    ("ServiceName", pa.dictionary(pa.int32(), pa.string())),
    ("Tags", pa.string()),
    ("x_CastAIClusterId", pa.string()),
)
METADATA = set(layout.metadata_keys(PREFIX).values()) | {layout.organization_marker_key(PREFIX)}


def request(
    day: date = DAY, data: bytes = b"PAR1-fake-focus-rows", *, fmt: DataFormat = "parquet",
    run_id: str = "run-1", complete: bool = True, columns: tuple[tuple[str, str], ...] = COLUMNS,
) -> PublishRequest:  # fmt: skip
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return PublishRequest(
        day=day,
        organization_id=ORG,
        fmt=fmt,
        data=data,
        row_count=1000,  # any count: the manifest must repeat it (constant: the fakes differ in size)
        totals={"BilledCost": 12.5, "EffectiveCost": 12.5, "ListCost": 15.0, "ContractedCost": 13.75},
        source_window=(start, start + timedelta(days=1)),
        step_seconds=3600,
        run_id=run_id,
        complete=complete,
        schema_columns=columns,
        generator_version="0.1.0",
        extra={"clusters": 3, "enrichmentCompleteness": 0.8, "collectedAt": start},
        provider_tag_prefixes=("castai.cluster/",),
    )


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def publish(store: ObjectStore, req: PublishRequest, *, ternary: bool = True, now: datetime = T0,
            audit: Callable[[bytes], None] | None = None) -> Any:  # fmt: skip
    return publish_partition(
        store, req, prefix=PREFIX, ternary_prefix=TERNARY if ternary else None, audit=audit, clock=at(now)
    )


def snapshot(store: ObjectStore) -> dict[str, bytes]:
    return {key: store.get(key) for key in store.list("")}


def wipe(store: ObjectStore) -> None:
    for key in store.list(""):
        store.delete(key)


def data_objects(store: ObjectStore) -> dict[str, bytes]:
    return {k: v for k, v in snapshot(store).items() if "version=focus-1.3/" in k}


def assert_consistent(store: ObjectStore, *, staging_allowed: bool = False) -> None:
    """No staging left, and every manifest lists objects that exist with exactly the listed bytes."""
    if not staging_allowed:
        assert store.list(layout.staging_dir(PREFIX)) == []
    for key in store.list(layout.manifest_dir(PREFIX)):
        manifest = json.loads(store.get(key))
        for entry in manifest["files"]:
            data = store.get(entry["key"])
            assert hashlib.sha256(data).hexdigest() == entry["sha256"] == manifest["checksumSha256"]
            assert len(data) == entry["bytes"]
        # ...and no other object of ours (hour 00) sits in the data trees; the Go exporter's hour
        # objects are the operator's to delete (see the test of DELETE_LEGACY_HOURLY_OBJECTS).
        day = layout.manifest_day(key)
        assert day is not None
        listed = {e["key"] for e in manifest["files"]}
        for tree in (PREFIX, TERNARY + PREFIX):
            prefix = layout.partition_object_prefix(tree, ORG, day)
            assert {k for k in store.list(prefix) if k[len(prefix) :].startswith("00.")} <= listed


@pytest.fixture(autouse=True)
def fakes_count_as_ours(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fakes here carry no writer mark, yet stand for our objects (publication treats the bytes as
    opaque); the tests of foreign `-00` objects ask for `real_marks` and use real files instead."""
    if "real_marks" not in request.fixturenames:
        monkeypatch.setattr(legacy_module, "written_by_this_exporter", lambda source, fmt: True)


@pytest.fixture
def real_marks() -> None:
    """Publication reads the writer's real mark (Parquet metadata, our CSV header)."""


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "out")
    else:
        server: S3TestServer = request.getfixturevalue("s3_server")
        yield S3ObjectStore(server.client(), server.new_bucket())


# Key layout --------------------------------------------------------------------------------------------


def test_keys_follow_the_output_contract() -> None:
    hive = "version=focus-1.3/year=2025/month=03/day=04"
    name = f"castai-focus-{ORG}-2025-03-04"
    assert layout.data_key(PREFIX, ORG, DAY, "parquet") == f"castai/{hive}/{name}-00.parquet"
    assert layout.data_key("", ORG, DAY, "csv", hour=7) == f"{hive}/{name}-07.csv"
    assert layout.ternary_key(TERNARY, PREFIX, ORG, DAY, "csv") == f"ternary/castai/{hive}/{name}-00.csv"
    assert layout.manifest_key(PREFIX, DAY) == (
        "castai/metadata/focus-1.3/manifests/year=2025/month=03/day=04/manifest.json"
    )
    assert layout.metadata_keys(PREFIX) == {
        "data_generator": "castai/metadata/focus-1.3/data-generator.json",
        "schema": "castai/metadata/focus-1.3/schema.json",
        "dataset_instance": "castai/metadata/focus-1.3/dataset-instance.json",
        "recency": "castai/metadata/focus-1.3/recency.json",
    }
    final = layout.data_key(PREFIX, ORG, DAY, "parquet")
    assert layout.staging_key(PREFIX, final, "r1") == f"castai/_staging/r1/{final}"
    assert layout.internal_key(PREFIX, "workload_costs", DAY, "arrow") == (
        "castai/_internal/workload_costs/year=2025/month=03/day=04/workload_costs.arrow"
    )
    assert layout.manifest_day(layout.manifest_key(PREFIX, DAY)) == DAY
    assert layout.figures_key(PREFIX, DAY) == (
        "castai/metadata/focus-1.3/figures/year=2025/month=03/day=04/figures.json"
    )
    assert layout.manifest_day(layout.figures_key(PREFIX, DAY)) is None  # not listed as a manifest
    assert layout.manifest_day(final) is None


@pytest.mark.parametrize(
    "call",
    [
        lambda: layout.data_key(PREFIX, ORG, DAY, "json"),
        lambda: layout.data_key(PREFIX, ORG, DAY, "csv", hour=24),
        lambda: layout.data_key(PREFIX, "a/b", DAY, "csv"),
        lambda: layout.staging_key(PREFIX, "k", "run/../x"),
    ],
)
def test_layout_rejects_values_that_break_the_key_space(call: Callable[[], str]) -> None:
    with pytest.raises(ValueError):
        call()


# Publication -------------------------------------------------------------------------------------------


def test_publish_writes_exactly_the_contract_keys(store: ObjectStore) -> None:
    req = request()
    result = publish(store, req)
    final = layout.data_key(PREFIX, ORG, DAY, "parquet")
    assert result.data_keys == [final]
    assert result.ternary_keys == [TERNARY + final]
    assert result.manifest_key == layout.manifest_key(PREFIX, DAY)
    figures = layout.figures_key(PREFIX, DAY)
    assert set(store.list("")) == {final, TERNARY + final, result.manifest_key, figures} | METADATA
    assert store.get(final) == req.data
    assert result.checksum_sha256 == hashlib.sha256(req.data).hexdigest() and result.bytes == len(req.data)
    assert_consistent(store)


def test_ternary_copy_has_identical_bytes_and_can_be_disabled(store: ObjectStore) -> None:
    final = layout.data_key(PREFIX, ORG, DAY, "parquet")
    publish(store, request(data=b"ternary-payload"))
    assert store.get(TERNARY + final) == store.get(final) == b"ternary-payload"
    wipe(store)
    result = publish(store, request(), ternary=False)
    assert result.ternary_keys == [] and store.list(TERNARY) == []


def test_republishing_identical_data_is_byte_identical_with_no_extra_objects(store: ObjectStore) -> None:
    publish(store, request(run_id="run-1"))
    keys_before, data_before = store.list(""), data_objects(store)
    publish(store, request(run_id="run-2"), now=T0 + timedelta(hours=6))
    assert store.list("") == keys_before
    assert data_objects(store) == data_before
    manifest = json.loads(store.get(layout.manifest_key(PREFIX, DAY)))
    assert manifest["runId"] == "run-2"
    assert_consistent(store)


def test_format_switch_removes_the_stale_object_in_both_trees(store: ObjectStore) -> None:
    publish(store, request(fmt="parquet"))
    parquet_key = layout.data_key(PREFIX, ORG, DAY, "parquet")
    other_org = layout.data_key(PREFIX, "another-org", DAY, "parquet")
    store.put(other_org, b"not ours", "application/vnd.apache.parquet")
    result = publish(store, request(fmt="csv", data=b"a,b\n1,2\n"))
    csv_key = layout.data_key(PREFIX, ORG, DAY, "csv")
    assert data_objects(store) == {
        csv_key: b"a,b\n1,2\n",
        TERNARY + csv_key: b"a,b\n1,2\n",
        other_org: b"not ours",
    }
    assert result.stale_deleted_keys == [parquet_key, TERNARY + parquet_key]
    assert result.legacy_hourly_keys == []
    manifest = json.loads(store.get(layout.manifest_key(PREFIX, DAY)))
    assert manifest["format"] == "csv" and [f["key"] for f in manifest["files"]] == [
        csv_key,
        TERNARY + csv_key,
    ]
    assert_consistent(store)


@pytest.mark.parametrize("delete", [False, True], ids=["kept-by-default", "deleted-on-opt-in"])
def test_the_go_exporters_hour_objects_are_deleted_only_when_chosen(store: ObjectStore, delete: bool) -> None:
    """The Go CronJob wrote `-HH` objects (one per run); they go only with DELETE_LEGACY_HOURLY_OBJECTS."""
    hourly = [
        layout.data_key(PREFIX, ORG, DAY, "parquet", hour=6),
        layout.data_key(PREFIX, ORG, DAY, "csv", hour=12),
        TERNARY + layout.data_key(PREFIX, ORG, DAY, "parquet", hour=18),
    ]
    other_day = layout.data_key(PREFIX, ORG, DAY + timedelta(days=1), "parquet", hour=6)
    for key in [*hourly, other_day]:
        store.put(key, b"go exporter", "application/vnd.apache.parquet")
    result = publish_partition(
        store, request(), prefix=PREFIX, ternary_prefix=TERNARY, clock=at(T0), delete_legacy_hourly=delete
    )
    final = layout.data_key(PREFIX, ORG, DAY, "parquet")
    assert sorted(result.legacy_hourly_keys) == sorted(hourly)
    assert result.legacy_deleted is delete and result.stale_deleted_keys == []
    expected = {final, TERNARY + final, other_day} | (set() if delete else set(hourly))
    assert set(data_objects(store)) == expected
    assert_consistent(store)


def test_manifest_is_written_last_and_describes_the_data(store: ObjectStore) -> None:
    recorder = FaultInjectingStore(store)
    req = request()
    publish(recorder, req, now=T0)
    writes = recorder.writes()
    manifest_key = layout.manifest_key(PREFIX, DAY)
    final = layout.data_key(PREFIX, ORG, DAY, "parquet")
    # The prefix's organisation marker comes first: the first publication claims the prefix.
    assert writes[0] == ("put", layout.organization_marker_key(PREFIX))
    # Then the day's lease, held until after the manifest.
    lease_key = layout.lease_key(PREFIX, DAY)
    assert writes[1] == ("put", lease_key)
    assert writes[2] == ("put", layout.staging_key(PREFIX, final, "run-1"))
    assert writes[3:5] == [("copy", final), ("copy", TERNARY + final)]
    assert {key for _, key in writes[5:-1]} <= METADATA | {layout.figures_key(PREFIX, DAY)}
    assert writes[-1] == ("put", manifest_key)
    after_manifest = recorder.calls[recorder.calls.index(("put", manifest_key)) + 1 :]
    assert after_manifest[-1] == ("delete", lease_key)
    assert (
        after_manifest[:-1]
        and all(  # the staging clean-up, then the lease's release
            op in ("list", "delete") and "_staging/" in key for op, key in after_manifest[:-1]
        )
    )

    manifest = json.loads(store.get(manifest_key))
    sha = hashlib.sha256(store.get(final)).hexdigest()
    expected_files = [
        {"key": k, "uri": store.describe(k), "role": role, "bytes": len(req.data), "sha256": sha,
         "rowCount": req.row_count}
        for k, role in ((final, "data"), (TERNARY + final, "ternary"))
    ]  # fmt: skip
    assert manifest["files"] == expected_files
    assert manifest["checksumSha256"] == sha and manifest["bytes"] == len(req.data)
    assert manifest["rowCount"] == req.row_count
    assert manifest["costTotals"] == req.totals
    assert manifest["sourceWindow"] == {
        "start": "2025-03-04T00:00:00Z", "end": "2025-03-05T00:00:00Z", "stepSeconds": 3600,
    }  # fmt: skip
    assert manifest["partition"] == {"day": "2025-03-04", "start": "2025-03-04T00:00:00Z",
                                     "end": "2025-03-05T00:00:00Z"}  # fmt: skip
    assert (manifest["focusVersion"], manifest["format"], manifest["complete"]) == ("1.3", "parquet", True)
    assert (manifest["generatorVersion"], manifest["runId"]) == ("0.1.0", "run-1")
    assert manifest["publishedAt"] == "2025-03-05T01:00:00Z"
    assert manifest["organizationId"] == ORG
    assert manifest["extra"] == {
        "clusters": 3,
        "enrichmentCompleteness": 0.8,
        "collectedAt": "2025-03-04T00:00:00Z",
    }
    assert (
        manifest["schemaId"] == json.loads(store.get(layout.metadata_keys(PREFIX)["schema"]))[0]["SchemaId"]
    )


def test_failed_audit_leaves_the_previous_publication_untouched(store: ObjectStore) -> None:
    publish(store, request(data=b"good-v1"))
    before = snapshot(store)
    audited: list[bytes] = []

    def audit(data: bytes) -> None:
        audited.append(data)
        raise ValueError("BilledCost is negative on 3 rows")

    with pytest.raises(ValueError, match="BilledCost is negative") as excinfo:
        publish(store, request(data=b"bad-v2", run_id="run-2"), audit=audit)
    assert audited == [b"bad-v2"]  # the audit saw the staged bytes read back from the store
    assert any("previous object is unchanged" in note for note in excinfo.value.__notes__)
    assert snapshot(store) == before


def test_corrupted_staging_read_back_aborts_before_publishing(store: ObjectStore) -> None:
    publish(store, request(data=b"good-v1"))
    before = snapshot(store)

    class Corrupting(FaultInjectingStore):
        def get(self, key: str) -> bytes:
            data = super().get(key)
            return data[:-1] + b"?" if "_staging/" in key else data

    with pytest.raises(PublishError, match="does not match the uploaded bytes"):
        publish(Corrupting(store), request(data=b"good-v2", run_id="run-2"))
    assert snapshot(store) == before


# (fault, whether the published data objects must be exactly as before the failed run)
FAULTS = {
    "staging-put": (Fault("put", "_staging/"), True),
    "staging-put-response-lost": (Fault("put", "_staging/", after=True), True),
    "final-copy": (Fault("copy", nth=1), True),
    "final-copy-response-lost": (Fault("copy", nth=1, after=True), False),
    "ternary-copy": (Fault("copy", nth=2), False),
    "stale-delete": (Fault("delete", "version=focus-1.3/"), False),
    "schema-read": (Fault("get", "schema.json"), False),
    "recency-put": (Fault("put", "recency.json"), False),
    "manifest-put": (Fault("put", "manifests/"), False),
    "manifest-put-response-lost": (Fault("put", "manifests/", after=True), False),
    "staging-delete": (Fault("delete", "_staging/"), False),
}
# The protocol logic is store-independent; S3 repeats the faults around each kind of S3 write.
S3_FAULTS = ("staging-put", "final-copy-response-lost", "ternary-copy", "manifest-put")


@pytest.mark.parametrize(
    ("store", "fault", "data_untouched"),
    [pytest.param("local", *spec, id=f"local-{name}") for name, spec in FAULTS.items()]
    + [pytest.param("s3", *FAULTS[name], id=f"s3-{name}") for name in S3_FAULTS],
    indirect=["store"],
)
def test_fault_leaves_a_consistent_state_and_a_rerun_repairs_it(
    store: ObjectStore, fault: Fault, data_untouched: bool
) -> None:
    """Day 1 and day 2 (v1) are published; re-publishing day 2 (v2, csv: a format switch) fails once."""
    day2 = DAY + timedelta(days=1)
    t1, t2, t3 = T0 + timedelta(days=1), T0 + timedelta(days=2), T0 + timedelta(days=3)

    def history(faulty: Fault | None) -> None:
        publish(store, request(DAY, b"day1-v1"), now=T0)
        publish(store, request(day2, b"day2-v1"), now=t1)
        if faulty is not None:
            before = data_objects(store)
            with pytest.raises(InjectedFault):
                publish(
                    FaultInjectingStore(store, faulty),
                    request(day2, b"day2-v2", fmt="csv", run_id="bad"),
                    now=t2,
                )
            assert_consistent(store, staging_allowed=faulty.key_contains == "_staging/")
            if data_untouched:
                assert data_objects(store) == before
            for key, value in data_objects(store).items():  # every object is whole: old or new bytes
                assert value in (b"day1-v1", b"day2-v1", b"day2-v2"), key
        publish(store, request(day2, b"day2-v2", fmt="csv", run_id="rerun"), now=t3)

    history(fault)
    repaired = snapshot(store)
    wipe(store)
    history(None)
    assert repaired == snapshot(store)  # byte for byte, metadata included
    assert_consistent(store)


def test_s3_http_failure_on_the_ternary_copy_then_clean_rerun(
    s3_server: S3TestServer, s3_bucket: str
) -> None:
    client = s3_server.client(total_attempts=1)
    store = S3ObjectStore(client, s3_bucket)
    publish(store, request(data=b"v1"))
    faults = HttpFaults(client, "CopyObject", key_contains=TERNARY, times=1)
    with (
        faults.installed(),
        pytest.raises(ObjectStoreError, match=f"CopyObject .* -> s3://{s3_bucket}/{TERNARY}"),
    ):
        publish(store, request(data=b"v2", run_id="run-2"), now=T0 + timedelta(hours=1))
    assert faults.injected == 1
    assert_consistent(store)
    assert not store.exists(layout.manifest_key(PREFIX, DAY))  # v1's manifest no longer matched the data
    publish(store, request(data=b"v2", run_id="run-3"), now=T0 + timedelta(hours=2))
    final = layout.data_key(PREFIX, ORG, DAY, "parquet")
    assert store.get(final) == store.get(TERNARY + final) == b"v2"
    assert_consistent(store)


def test_staging_left_by_a_failed_run_is_removed_by_the_next_success(store: ObjectStore) -> None:
    with pytest.raises(InjectedFault):
        publish(
            FaultInjectingStore(store, Fault("delete", "_staging/"), Fault("put", "manifests/")), request()
        )
    assert store.list(layout.staging_dir(PREFIX))  # the failed run could not clean up
    publish(store, request(run_id="run-2"))
    assert store.list(layout.staging_dir(PREFIX)) == []


def test_invalid_request_is_refused_before_anything_is_written() -> None:
    with pytest.raises(ValueError, match="totals must be finite numbers: BilledCost"):
        replace(request(), totals={"BilledCost": float("nan")})
    with pytest.raises(ValueError, match="time-zone-aware"):
        replace(request(), source_window=(datetime(2025, 3, 4), datetime(2025, 3, 5)))
    with pytest.raises(ValueError, match="JSON-serializable"):
        replace(request(), extra={"odd": object()})
    assert "PAR1" not in repr(request())  # the payload never lands in logs


# FOCUS metadata ----------------------------------------------------------------------------------------

DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def test_metadata_documents_carry_the_focus_1_3_properties(store: ObjectStore) -> None:
    publish(store, request())
    keys = layout.metadata_keys(PREFIX)
    assert json.loads(store.get(keys["data_generator"])) == {"DataGenerator": "castai-focus-dagster"}

    [instance] = json.loads(store.get(keys["dataset_instance"]))
    assert set(instance) == {"DatasetInstanceId", "DatasetInstanceName", "FocusDatasetId"}
    assert instance["FocusDatasetId"] == "CostAndUsage" and instance["DatasetInstanceName"]
    assert uuid.UUID(instance["DatasetInstanceId"]).version == 5

    [schema] = json.loads(store.get(keys["schema"]))
    assert schema["FocusVersion"] == "1.3" and schema["DataGeneratorVersion"] == "0.1.0"
    assert schema["DatasetInstanceId"] == instance["DatasetInstanceId"]
    assert uuid.UUID(schema["SchemaId"]).version == 5
    assert schema["CreationDate"] == "2025-03-05T01:00:00Z"
    columns = {c["ColumnName"]: c for c in schema["ColumnDefinition"]}
    assert [c["ColumnName"] for c in schema["ColumnDefinition"]] == [name for name, _ in COLUMNS]
    assert columns["BilledCost"] == {
        "ColumnName": "BilledCost",
        "DataType": "DECIMAL",
        "NumericPrecision": 15,
    }
    assert columns["ListUnitPrice"] == {
        "ColumnName": "ListUnitPrice", "DataType": "DECIMAL", "NumericPrecision": 38, "NumberScale": 10,
    }  # fmt: skip
    assert columns["ChargePeriodStart"] == {"ColumnName": "ChargePeriodStart", "DataType": "DATETIME"}
    assert columns["ServiceName"] == {
        "ColumnName": "ServiceName",
        "DataType": "STRING",
        "StringEncoding": "UTF-8",
    }
    assert columns["Tags"] == {
        "ColumnName": "Tags", "DataType": "JSON", "StringEncoding": "UTF-8",
        "ProviderTagPrefixes": ["castai.cluster/"],
    }  # fmt: skip
    assert columns["ProviderName"]["Deprecated"] is True and columns["PublisherName"]["Deprecated"] is True
    assert "Deprecated" not in columns["x_CastAIClusterId"]

    [recency] = json.loads(store.get(keys["recency"]))
    assert recency["DatasetInstanceId"] == instance["DatasetInstanceId"]
    assert recency["RecencyLastUpdated"] == recency["DatasetInstanceLastUpdated"] == "2025-03-05T01:00:00Z"
    assert recency["TimeSectors"] == [
        {"TimeSectorStart": "2025-03-04T00:00:00Z", "TimeSectorEnd": "2025-03-05T00:00:00Z",
         "TimeSectorComplete": True, "TimeSectorLastUpdated": "2025-03-05T01:00:00Z"}
    ]  # fmt: skip


def test_recency_tracks_partial_then_complete_days(store: ObjectStore) -> None:
    day2 = DAY + timedelta(days=1)
    publish(store, request(DAY), now=T0)
    publish(store, request(day2, complete=False), now=T0 + timedelta(hours=2))
    publish(store, request(day2, complete=True), now=T0 + timedelta(days=1))
    [recency] = json.loads(store.get(layout.metadata_keys(PREFIX)["recency"]))
    sectors = [
        (s["TimeSectorStart"], s["TimeSectorComplete"], s["TimeSectorLastUpdated"])
        for s in recency["TimeSectors"]
    ]
    assert sectors == [
        ("2025-03-04T00:00:00Z", True, "2025-03-05T01:00:00Z"),
        ("2025-03-05T00:00:00Z", True, "2025-03-06T01:00:00Z"),
    ]
    assert recency["DatasetInstanceLastUpdated"] == "2025-03-06T01:00:00Z"


def test_recency_recovers_sectors_lost_to_a_concurrent_writer(store: ObjectStore) -> None:
    """Two runs racing on recency.json can drop a sector; the next publish restores it from the manifests."""
    day2, day3 = DAY + timedelta(days=1), DAY + timedelta(days=2)
    publish(store, request(DAY), now=T0)
    publish(store, request(day2, complete=False), now=T0 + timedelta(hours=1))
    recency_key = layout.metadata_keys(PREFIX)["recency"]
    [recency] = json.loads(store.get(recency_key))
    recency["TimeSectors"] = recency["TimeSectors"][:1]  # as if day 2's writer lost the race
    store.put(recency_key, json.dumps([recency]).encode(), "application/json")
    publish(store, request(day3), now=T0 + timedelta(hours=2))
    [recency] = json.loads(store.get(recency_key))
    assert [(s["TimeSectorStart"][:10], s["TimeSectorComplete"]) for s in recency["TimeSectors"]] == [
        ("2025-03-04", True), ("2025-03-05", False), ("2025-03-06", True),
    ]  # fmt: skip
    assert recency["TimeSectors"][1]["TimeSectorLastUpdated"] == "2025-03-05T02:00:00Z"  # day 2's manifest


def test_schema_id_is_stable_and_a_schema_change_adds_a_schema_object(store: ObjectStore) -> None:
    schema_key = layout.metadata_keys(PREFIX)["schema"]
    publish(store, request(), now=T0)
    first = store.get(schema_key)
    publish(store, request(run_id="run-2"), now=T0 + timedelta(hours=1))
    assert store.get(schema_key) == first  # same columns: same SchemaId, same CreationDate, same bytes
    publish(
        store, request(columns=(*COLUMNS, ("x_CastAINamespace", pa.string()))), now=T0 + timedelta(hours=2)
    )
    schemas = json.loads(store.get(schema_key))
    assert [s["CreationDate"] for s in schemas] == ["2025-03-05T01:00:00Z", "2025-03-05T03:00:00Z"]
    assert schemas[0] == json.loads(first)[0]  # older partitions keep their schema
    manifest = json.loads(store.get(layout.manifest_key(PREFIX, DAY)))
    assert manifest["schemaId"] == schemas[1]["SchemaId"] != schemas[0]["SchemaId"]


def test_ids_are_deterministic_uuid5s() -> None:
    definitions = column_definitions(COLUMNS)
    assert schema_id_for(ORG, definitions, "0.1.0") == schema_id_for(
        ORG, column_definitions(COLUMNS), "0.1.0"
    )
    assert schema_id_for(ORG, definitions, "0.1.0") != schema_id_for(ORG, definitions, "0.2.0")
    assert schema_id_for(ORG, definitions, "0.1.0") != schema_id_for("other-org", definitions, "0.1.0")
    assert (
        dataset_instance_id_for(ORG) == dataset_instance_id_for(ORG) != dataset_instance_id_for("other-org")
    )


def test_focus_type_words_are_accepted_in_place_of_arrow_types() -> None:
    words = [("BilledCost", "Decimal"), ("ChargePeriodStart", "Date/Time"), ("Tags", "JSON"),
             ("ServiceName", "String"), ("RegionId", "STRING")]  # fmt: skip
    assert [(d["ColumnName"], d["DataType"]) for d in column_definitions(words)] == [
        ("BilledCost", "DECIMAL"), ("ChargePeriodStart", "DATETIME"), ("Tags", "JSON"),
        ("ServiceName", "STRING"), ("RegionId", "STRING"),
    ]  # fmt: skip


def test_column_definitions_come_from_the_arrow_type_objects() -> None:
    """Precision and scale are read off the pyarrow types (no type strings parsed back)."""
    columns = [("a", pa.int32()), ("b", pa.uint64()), ("c", pa.float32()), ("d", pa.date32()),
               ("e", pa.large_string()), ("f", pa.decimal256(50, 3)),
               ("Tags", pa.dictionary(pa.int8(), pa.string()))]  # fmt: skip
    assert [{k: v for k, v in d.items() if k != "ColumnName"} for d in column_definitions(columns)] == [
        {"DataType": "DECIMAL", "NumericPrecision": 10, "NumberScale": 0},
        {"DataType": "DECIMAL", "NumericPrecision": 20, "NumberScale": 0},
        {"DataType": "DECIMAL", "NumericPrecision": 6},
        {"DataType": "DATETIME"},
        {"DataType": "STRING", "StringEncoding": "UTF-8"},
        {"DataType": "DECIMAL", "NumericPrecision": 50, "NumberScale": 3},
        {"DataType": "JSON", "StringEncoding": "UTF-8"},
    ]
    with pytest.raises(ValueError, match="'double' is not a FOCUS data type word"):
        column_definitions([("x", "double")])  # an Arrow type name is not accepted as text


def test_column_types_without_a_focus_data_type_are_refused() -> None:
    with pytest.raises(ValueError, match="column 'x_Flag'"):
        column_definitions([("x_Flag", pa.bool_())])


def test_recency_refuses_overlapping_or_naive_sectors() -> None:
    start = datetime(2025, 3, 4, tzinfo=UTC)
    day = TimeSector(start, start + timedelta(days=1), True, T0)
    hour = TimeSector(start + timedelta(hours=3), start + timedelta(hours=4), True, T0)
    with pytest.raises(ValueError, match="overlap"):
        recency_document("id", [day, hour], T0)
    with pytest.raises(ValueError, match="no time zone"):
        recency_document("id", [day], datetime(2025, 3, 5))


def test_local_publication_leaves_no_empty_staging_folders(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    publish(store, request())
    assert not (tmp_path / "castai" / "_staging").exists()
    for key in METADATA | {layout.manifest_key(PREFIX, DAY)}:  # rebuilt by the next publish
        store.delete(key)
    publish(store, request(run_id="run-2"))
    assert set(store.list("")) >= METADATA


# Overlapping publications of one day ----------------------------------------------------------------------


class RunsAnotherPublicationFirst(FaultInjectingStore):
    """Before this run's first conditional manifest write, another run publishes the same day completely:
    the interleaving that used to leave this run's manifest describing the other run's object. The other
    run comes after this run's lease expired (a publication slower than LEASE_SECONDS), so it takes the
    lease over and only the conditional manifest write stands between the two."""

    def __init__(self, inner: ObjectStore, other: PublishRequest):
        super().__init__(inner)
        self.other: PublishRequest | None = other

    def put_if(self, key: str, data: bytes, content_type: str, expected: str | None) -> None:
        if self.other is not None and key.endswith("/manifest.json"):
            other, self.other = self.other, None
            publish(self.inner, other, now=T0 + timedelta(seconds=LEASE_SECONDS + 1))
        super().put_if(key, data, content_type, expected)


def test_an_overlapping_run_never_leaves_a_manifest_describing_the_other_runs_object(
    store: ObjectStore,
) -> None:
    publish(store, request(data=b"published-before"))
    slow = request(data=b"run-a-partial-day", run_id="run-a")
    fast = request(data=b"run-b-later-data", run_id="run-b")
    with pytest.raises(PublishError, match="was replaced by another run"):
        publish(RunsAnotherPublicationFirst(store, fast), slow)
    final = layout.data_key(PREFIX, ORG, DAY, "parquet")
    assert store.get(final) == fast.data and store.get(TERNARY + final) == fast.data
    manifest = json.loads(store.get(layout.manifest_key(PREFIX, DAY)))
    assert manifest["runId"] == "run-b"
    assert_consistent(store)


class ReplacesTheDataAfterTheManifest(FaultInjectingStore):
    """Another writer replaces the data object right after this run's manifest write (a run that read
    the manifest before this one wrote it, then copied): this run withdraws its manifest and fails."""

    def put_if(self, key: str, data: bytes, content_type: str, expected: str | None) -> None:
        super().put_if(key, data, content_type, expected)
        if key.endswith("/manifest.json"):
            self.inner.put(layout.data_key(PREFIX, ORG, DAY, "parquet"), b"someone-else", "x")


def test_data_replaced_after_the_manifest_write_withdraws_the_manifest(store: ObjectStore) -> None:
    with pytest.raises(PublishError, match="was replaced by another run"):
        publish(ReplacesTheDataAfterTheManifest(store), request(data=b"mine"))
    assert not store.exists(layout.manifest_key(PREFIX, DAY))  # no manifest rather than a lying one


# Replacing a published day ----------------------------------------------------------------------------------


def with_clusters(
    req: PublishRequest, clusters: dict[str, tuple[int, float]], **changes: Any
) -> PublishRequest:
    rows = sum(r for r, _ in clusters.values())
    cost = sum(c for _, c in clusters.values())
    totals = dict.fromkeys(req.totals, cost)
    return replace(req, cluster_totals=clusters, row_count=rows, totals=totals, **changes)


GOOD = {"c-1": (600, 100.0), "c-2": (300, 60.0), "c-3": (100, 11.89)}


@pytest.mark.parametrize(
    ("clusters", "needle"),
    [
        ({}, "Cast AI listed no clusters"),
        ({"c-1": (600, 100.0), "c-3": (100, 11.89)}, "no longer listed by Cast AI: c-2 (300 rows, $60.00)"),
        ({**GOOD, "c-2": (300, 1.0)}, "cluster c-2: $60.00 (300 rows) -> $1.00 (300 rows)"),
        ({**GOOD, "c-1": (600, 100.0 * 10**5)}, "cluster c-1: $100.00"),
    ],
    ids=["empty-list", "vanished-cluster", "cluster-cost-collapsed", "costs-times-1e5"],
)
def test_a_much_worse_day_is_refused_and_leaves_everything_unchanged(
    store: ObjectStore, clusters: dict[str, tuple[int, float]], needle: str
) -> None:
    publish(store, with_clusters(request(data=b"good"), GOOD))
    before = snapshot(store)
    worse = with_clusters(request(data=b"worse", run_id="run-2"), clusters)
    with pytest.raises(ReplacementRefused) as refused:
        publish(store, worse)
    assert needle in str(refused.value)
    assert "1000 rows, $171.89 from 3 cluster(s)" in str(refused.value)  # the published figures
    assert snapshot(store) == before
    kind = refused.value.changes[0].kind
    allowed = publish_partition(
        store, worse, prefix=PREFIX, ternary_prefix=TERNARY, clock=at(T0), allow_changes=frozenset({kind})
    )
    manifest = json.loads(store.get(allowed.manifest_key))
    assert manifest["clusters"] == {cid: {"rows": r, "billedCost": c} for cid, (r, c) in clusters.items()}
    assert manifest["allowedChanges"] and allowed.allowed_changes == manifest["allowedChanges"]
    assert_consistent(store)


def test_a_growing_partial_day_and_small_revisions_publish(store: ObjectStore) -> None:
    start = datetime(2025, 3, 4, tzinfo=UTC)
    two_hours = with_clusters(
        request(complete=False, data=b"at-2h"),
        {"c-1": (50, 8.0)},
        source_window=(start, start + timedelta(hours=2)),
    )
    publish(store, two_hours)
    whole_day = with_clusters(request(data=b"at-24h", run_id="run-2"), {"c-1": (600, 96.5), "c-2": (10, 0.2)})
    publish(store, whole_day)  # 12x the hours, 12x the cost, one new cluster: not refused
    revised = with_clusters(request(data=b"revised", run_id="run-3"), {"c-1": (590, 80.0), "c-2": (10, 0.0)})
    publish(store, revised)  # -17 %, and a cluster below $1 dropping to zero: within the thresholds
    assert json.loads(store.get(layout.manifest_key(PREFIX, DAY)))["runId"] == "run-3"


def test_a_manifest_without_per_cluster_figures_is_compared_by_its_totals(store: ObjectStore) -> None:
    publish(store, with_clusters(request(data=b"good"), GOOD))
    key = layout.manifest_key(PREFIX, DAY)
    old = json.loads(store.get(key))
    del old["clusters"]
    old["manifestVersion"] = 1
    store.put(key, json.dumps(old).encode(), "application/json")  # as version 1 wrote it
    with pytest.raises(ReplacementRefused, match="1 cluster\\(s\\) listed, the published day has 3"):
        publish(store, with_clusters(request(data=b"one", run_id="run-2"), {"c-1": (600, 150.0)}))
    with pytest.raises(ReplacementRefused, match="day total"):
        publish(store, with_clusters(request(data=b"half", run_id="run-3"), {**GOOD, "c-1": (600, 10.0)}))


def test_a_second_organisation_is_refused_under_the_same_prefix(store: ObjectStore) -> None:
    publish(store, request(data=b"first"))
    before = snapshot(store)
    with pytest.raises(PrefixOwnedError, match=f"organisation {ORG}"):
        publish(store, replace(request(data=b"second", run_id="run-2"), organization_id="other-org"))
    assert snapshot(store) == before


# The Go exporter's `-00` objects (its run at hour 00 wrote our key) -----------------------------------------


def go_exporter_parquet() -> bytes:
    """A real Parquet file of FOCUS columns without our writer's mark, as another writer makes one."""
    sink = io.BytesIO()
    pq.write_table(FOCUS_SCHEMA.empty_table(), sink)
    return sink.getvalue()


GO_CSV = b"BilledCost,ChargePeriodStart,x_CastAIClusterId\n1.5,2025-03-04T00:00:00Z,c1\n"


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_foreign_hour_zero_object_is_refused_untouched_by_default(
    store: ObjectStore, real_marks: None, fmt: DataFormat
) -> None:
    """Same format (would be overwritten) or the other one (would be deleted): refused, nothing written."""
    ours = to_parquet_bytes(FOCUS_SCHEMA.empty_table())
    foreign_key = layout.data_key(PREFIX, ORG, DAY, fmt)
    store.put(foreign_key, go_exporter_parquet() if fmt == "parquet" else GO_CSV, "application/octet-stream")
    before = snapshot(store)
    with pytest.raises(ForeignObjectRefused) as info:
        publish(store, request(data=ours))
    message = str(info.value)
    assert store.describe(foreign_key) in message and "DELETE_LEGACY_HOURLY_OBJECTS=true" in message
    after = snapshot(store)
    after.pop(layout.organization_marker_key(PREFIX))  # the prefix's claim, written before any data
    assert after == before  # the foreign object as it was, no staging object, no data, no manifest


def test_a_foreign_hour_zero_object_is_replaced_and_reported_on_opt_in(
    store: ObjectStore, real_marks: None
) -> None:
    ours = to_parquet_bytes(FOCUS_SCHEMA.empty_table())
    final = layout.data_key(PREFIX, ORG, DAY, "parquet")
    other_format = TERNARY + layout.data_key(PREFIX, ORG, DAY, "csv")
    store.put(final, go_exporter_parquet(), "application/vnd.apache.parquet")
    store.put(other_format, GO_CSV, "text/csv")
    result = publish_partition(
        store,
        request(data=ours),
        prefix=PREFIX,
        ternary_prefix=TERNARY,
        clock=at(T0),
        delete_legacy_hourly=True,
    )
    assert sorted(result.legacy_hourly_keys) == sorted([final, other_format]) and result.legacy_deleted
    assert result.stale_deleted_keys == []  # they were not ours
    assert data_objects(store) == {final: ours, TERNARY + final: ours}
    assert_consistent(store)


@pytest.mark.parametrize("first_fmt", ["parquet", "csv"])
def test_our_own_hour_zero_objects_are_recognised_after_a_lost_manifest(
    store: ObjectStore, real_marks: None, first_fmt: DataFormat
) -> None:
    """Our writer's mark, not the manifest alone, tells ours: a lost manifest never causes a refusal."""
    table = FOCUS_SCHEMA.empty_table()
    first = to_parquet_bytes(table) if first_fmt == "parquet" else to_csv_bytes(table)
    publish(store, request(data=first, fmt=first_fmt))
    store.delete(layout.manifest_key(PREFIX, DAY))  # lost (a run killed between copy and manifest)
    second = to_csv_bytes(table) if first_fmt == "parquet" else to_parquet_bytes(table)
    second_fmt: DataFormat = "csv" if first_fmt == "parquet" else "parquet"
    result = publish(store, request(data=second, fmt=second_fmt, run_id="run-2"))
    first_key = layout.data_key(PREFIX, ORG, DAY, first_fmt)
    assert result.stale_deleted_keys == [first_key, TERNARY + first_key]  # ours: replaced, no refusal
    assert result.legacy_hourly_keys == []
    assert_consistent(store)


@pytest.mark.parametrize("clusters", [{}, {"c-1": (600, 100.0)}], ids=["empty-list", "two-vanished"])
def test_without_its_manifest_a_day_is_still_compared_with_its_figures(
    store: ObjectStore, clusters: dict[str, tuple[int, float]]
) -> None:
    """The manifest retired, lost to a kill or withdrawn: the figures object still guards the day."""
    publish(store, with_clusters(request(data=b"good"), GOOD))
    store.delete(layout.manifest_key(PREFIX, DAY))
    before = snapshot(store)
    with pytest.raises(
        ReplacementRefused, match=re.escape("1000 rows, $171.89 from 3 cluster(s)")
    ) as refused:
        publish(store, with_clusters(request(data=b"worse", run_id="run-2"), clusters))
    assert store.describe(layout.figures_key(PREFIX, DAY)) in str(refused.value)
    assert snapshot(store) == before


def test_a_failed_changed_publication_leaves_figures_that_guard_the_next_run(store: ObjectStore) -> None:
    """A run that retires the manifest and then fails must not leave the day unguarded."""
    publish(store, with_clusters(request(data=b"good"), GOOD))
    revised = with_clusters(request(data=b"revised", run_id="run-2"), {**GOOD, "c-1": (600, 90.0)})
    with pytest.raises(InjectedFault):
        publish(FaultInjectingStore(store, Fault("copy", "castai/version=focus-1.3/")), revised)
    assert not store.exists(layout.manifest_key(PREFIX, DAY))  # retired before the copy
    with pytest.raises(ReplacementRefused, match="Cast AI listed no clusters"):
        publish(store, with_clusters(request(data=b"empty", run_id="run-3"), {}))
    assert store.get(layout.data_key(PREFIX, ORG, DAY, "parquet")) == b"good"


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_data_object_without_manifest_or_figures_is_not_replaced_silently(
    store: ObjectStore, fmt: DataFormat
) -> None:
    """Nothing to compare with, but bytes are published (the Go exporter's, or both documents lost)."""
    existing = layout.data_key(PREFIX, ORG, DAY, fmt)
    store.put(existing, b"published-by-someone", "application/octet-stream")
    claim_prefix(store, PREFIX, ORG)
    before = snapshot(store)
    empty = with_clusters(request(data=b"empty"), {})
    with pytest.raises(ReplacementRefused) as refused:
        publish(store, empty)
    message = str(refused.value)
    assert store.describe(existing) in message and "castai_focus/allow_shrink=true" in message
    assert snapshot(store) == before
    result = publish_partition(
        store, empty, prefix=PREFIX, ternary_prefix=TERNARY, clock=at(T0), allow_changes=frozenset({"shrink"})
    )
    assert result.allowed_changes and store.describe(existing) in result.allowed_changes[0]
    assert_consistent(store)


def test_a_first_publication_has_nothing_to_compare_and_publishes(store: ObjectStore) -> None:
    publish(store, with_clusters(request(data=b"first"), {}))
    manifest = json.loads(store.get(layout.manifest_key(PREFIX, DAY)))
    assert manifest["rowCount"] == 0 and "allowedChanges" not in manifest


def test_metadata_documents_keep_only_the_prefixs_organisation(store: ObjectStore) -> None:
    """After a mistyped organisation id is corrected, its entries leave the metadata documents."""
    wrong = "0badc0de-0000-4000-8000-000000000000"
    publish(store, replace(request(data=b"wrong-org"), organization_id=wrong))
    for key in store.list(PREFIX):  # the fix-up the refusal message asks for
        if wrong in key or "/manifests/" in key or key == layout.organization_marker_key(PREFIX):
            store.delete(key)
    publish(store, request(data=b"right-org", run_id="run-2"))
    keys = layout.metadata_keys(PREFIX)
    mine = dataset_instance_id_for(ORG)
    for name in ("schema", "dataset_instance", "recency"):
        entries = json.loads(store.get(keys[name]))
        assert entries and {e["DatasetInstanceId"] for e in entries} == {mine}, name


# The day's publication lease -------------------------------------------------------------------------------


class StartsAnotherPublicationAtTheManifest(FaultInjectingStore):
    """At this run's manifest write, another run (a thread) starts publishing the same day; this run
    goes on only once the other one has found the lease taken at least twice (it is waiting)."""

    def __init__(self, inner: ObjectStore, other: PublishRequest):
        super().__init__(inner)
        self.other: PublishRequest | None = other
        self.thread: threading.Thread | None = None
        self.other_outcome: list[object] = []

    def put_if(self, key: str, data: bytes, content_type: str, expected: str | None) -> None:
        if self.other is not None and key.endswith("/manifest.json"):
            other, self.other = self.other, None
            watcher = WatchesTheLease(self.inner)

            def run_other() -> None:
                try:
                    self.other_outcome.append(
                        publish_partition(
                            watcher,
                            other,
                            prefix=PREFIX,
                            ternary_prefix=TERNARY,
                            clock=at(T0),
                            lease_wait_seconds=60,
                            lease_poll_seconds=0.01,
                        )
                    )
                except Exception as exc:
                    self.other_outcome.append(exc)
                    watcher.refused.set()

            self.thread = threading.Thread(target=run_other)
            self.thread.start()
            assert watcher.refused.wait(60)
            assert not self.other_outcome or not isinstance(self.other_outcome[0], Exception)
        super().put_if(key, data, content_type, expected)


class WatchesTheLease(FaultInjectingStore):
    def __init__(self, inner: ObjectStore):
        super().__init__(inner)
        self.refused = threading.Event()
        self.lease_reads = 0

    def get(self, key: str) -> bytes:
        if key == layout.lease_key(PREFIX, DAY):
            self.lease_reads += 1
            if self.lease_reads >= 2:
                self.refused.set()
        return super().get(key)


def test_a_second_publication_of_the_day_waits_for_the_first_to_finish(store: ObjectStore) -> None:
    publish(store, request(data=b"published-before"))
    first = request(data=b"run-a-data", run_id="run-a")
    second = request(data=b"run-b-data", run_id="run-b")
    interleaving = StartsAnotherPublicationAtTheManifest(store, second)
    publish(interleaving, first)  # not "replaced by another run": the other run waited
    assert interleaving.thread is not None
    interleaving.thread.join(60)
    (outcome,) = interleaving.other_outcome
    assert not isinstance(outcome, Exception), outcome
    final = layout.data_key(PREFIX, ORG, DAY, "parquet")
    assert store.get(final) == second.data and store.get(TERNARY + final) == second.data
    assert json.loads(store.get(layout.manifest_key(PREFIX, DAY)))["runId"] == "run-b"
    assert not store.exists(layout.lease_key(PREFIX, DAY))  # released by both
    assert_consistent(store)


def lease(run_id: str, expires: datetime) -> bytes:
    document = {"runId": run_id, "expiresAt": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
    return json.dumps(document).encode()


def test_a_live_lease_of_another_run_fails_the_publication_naming_the_holder(store: ObjectStore) -> None:
    publish(store, request(data=b"published-before"))
    store.put(layout.lease_key(PREFIX, DAY), lease("run-x", T0 + timedelta(minutes=5)), "application/json")
    before = snapshot(store)
    with pytest.raises(LeaseHeld, match="run run-x is publishing the FOCUS day 2025-03-04"):
        publish_partition(
            store, request(data=b"new", run_id="run-2"), prefix=PREFIX, ternary_prefix=TERNARY,
            clock=at(T0), lease_wait_seconds=0,
        )  # fmt: skip
    assert snapshot(store) == before


def test_an_expired_lease_is_taken_over_and_released(store: ObjectStore) -> None:
    store.put(layout.lease_key(PREFIX, DAY), lease("run-dead", T0 - timedelta(seconds=1)), "application/json")
    publish(store, request(data=b"new", run_id="run-2"))
    assert store.get(layout.data_key(PREFIX, ORG, DAY, "parquet")) == b"new"
    assert not store.exists(layout.lease_key(PREFIX, DAY))
    assert_consistent(store)


def test_a_lease_left_by_a_killed_process_of_this_host_is_taken_over_at_once(store: ObjectStore) -> None:
    """The same pod re-running the day after its run was killed need not wait for the expiry."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    document = json.loads(lease("run-killed", T0 + timedelta(minutes=10)))
    document |= {
        "host": socket.gethostname(),
        "pid": int(dead.stdout),
        "pidNamespace": lease_module._pid_namespace(),
    }
    store.put(layout.lease_key(PREFIX, DAY), json.dumps(document).encode(), "application/json")
    publish_partition(
        store, request(data=b"new", run_id="run-2"), prefix=PREFIX, ternary_prefix=TERNARY,
        clock=at(T0), lease_wait_seconds=0,
    )  # fmt: skip
    assert store.get(layout.data_key(PREFIX, ORG, DAY, "parquet")) == b"new"
    assert not store.exists(layout.lease_key(PREFIX, DAY))


@pytest.mark.parametrize("holder", ["dead-pid", "own-pid", "unsaid"])
def test_a_lease_of_another_container_on_this_host_is_waited_out(store: ObjectStore, holder: str) -> None:
    """Regression: containers sharing the host's name (hostNetwork) have process tables of their own;
    a pid missing here (or equal to ours: both pid 1) said nothing, and a live run's lease was taken."""
    publish(store, request(data=b"published-before"))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    document = json.loads(lease("run-beside", T0 + timedelta(minutes=10)))
    document |= {
        "host": socket.gethostname(),
        "pid": os.getpid() if holder == "own-pid" else int(dead.stdout),
    }
    if holder != "unsaid":  # a lease written before the namespace was recorded says nothing of it
        document["pidNamespace"] = "pid:[1]"
    store.put(layout.lease_key(PREFIX, DAY), json.dumps(document).encode(), "application/json")
    before = snapshot(store)
    with pytest.raises(LeaseHeld, match="run run-beside is publishing"):
        publish_partition(
            store, request(data=b"new", run_id="run-2"), prefix=PREFIX, ternary_prefix=TERNARY,
            clock=at(T0), lease_wait_seconds=0,
        )  # fmt: skip
    assert snapshot(store) == before


def test_a_lease_this_process_failed_to_release_does_not_block_its_next_run(store: ObjectStore) -> None:
    lost = FaultInjectingStore(store, Fault("delete", "_locks/"))
    publish(lost, request(data=b"first", run_id="run-1"))  # published; the release failed (logged)
    assert store.exists(layout.lease_key(PREFIX, DAY))
    publish_partition(
        store, request(data=b"second", run_id="run-2"), prefix=PREFIX, ternary_prefix=TERNARY,
        clock=at(T0), lease_wait_seconds=0,
    )  # fmt: skip
    assert store.get(layout.data_key(PREFIX, ORG, DAY, "parquet")) == b"second"
    assert not store.exists(layout.lease_key(PREFIX, DAY))
