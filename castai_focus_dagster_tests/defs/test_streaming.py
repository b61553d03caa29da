"""Streaming a day cluster by cluster (DESIGN §7.5): the same bytes and totals as the whole-day path,
with memory held to one batch. Real files, a real local folder and S3 on moto, real Parquet readers."""

from __future__ import annotations

import io
import json
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from castai_focus_dagster.castai.input_warnings import INPUT_WARNINGS_KEY
from castai_focus_dagster.castai.models import WORKLOAD_COSTS_SCHEMA
from castai_focus_dagster.focus.audit import audit_focus, combine_reports
from castai_focus_dagster.focus.conformance import check_conformance
from castai_focus_dagster.focus.rules.common import combine_results
from castai_focus_dagster.focus.schema import FOCUS_SCHEMA
from castai_focus_dagster.focus.transform import to_focus
from castai_focus_dagster.focus.windows import DayWindow
from castai_focus_dagster.storage import serialize
from castai_focus_dagster.storage.focus_day import decode_check, encode_focus_day
from castai_focus_dagster.storage.intermediates import (
    WorkloadCostsDay,
    workload_costs_from_file,
    workload_costs_to_file,
)
from castai_focus_dagster.storage.keys import DataFormat
from castai_focus_dagster.storage.object_store import (
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
)
from castai_focus_dagster.storage.publish import publish_partition
from castai_focus_dagster.storage.publish_model import PublishRequest
from castai_focus_dagster_tests.focus_inputs import SyntheticOrg, focus_options, synthetic_org
from castai_focus_dagster_tests.s3_server import (  # noqa: F401  (pytest fixtures)
    S3TestServer,
    s3_bucket_fixture,
    s3_server_fixture,
)

ORG = "7e5b3c1a-0000-4000-8000-00000000c0de"


@pytest.fixture(scope="module")
def org() -> SyntheticOrg:
    return synthetic_org(workloads_per_cluster=8)


def per_cluster(workloads: pa.Table) -> list[pa.Table]:
    """The day split as the pipeline streams it: one table per cluster, clusters in id order."""
    ids = sorted(pc.unique(workloads["cluster_id"].cast(pa.string())).to_pylist())
    return [workloads.filter(pc.equal(workloads["cluster_id"].cast(pa.string()), cid)) for cid in ids]


def day_window(org: SyntheticOrg) -> DayWindow:
    start = org.day
    return DayWindow(day=start.date(), start=start, end=start + timedelta(days=1), step_seconds=3600)


def encode(org: SyntheticOrg, batches: list[pa.Table], fmt: DataFormat = "parquet") -> tuple[bytes, int]:
    options = focus_options()
    tables = ((to_focus(w, org.clusters, org.context, options), w) for w in batches)
    audited = ((table, audit_focus(table, w)) for table, w in tables)
    day = encode_focus_day(day_window(org), audited, fmt, enrichment_completeness=1.0, enrichment_missing={})
    try:
        assert day.audit.passed, day.audit.summary()
        day.data.seek(0)
        return day.data.read(), day.row_count
    finally:
        day.discard()


def test_a_day_streamed_per_cluster_holds_exactly_the_whole_day_transform(org: SyntheticOrg) -> None:
    whole = to_focus(org.hourly, org.clusters, org.context, focus_options())
    data, rows = encode(org, per_cluster(org.hourly))
    streamed = serialize.read_focus_bytes(data, "parquet")
    assert rows == whole.num_rows == streamed.num_rows > 0
    assert streamed.equals(whole)  # same rows in the same order: clusters sorted, then the transform's order
    assert data == encode(org, per_cluster(org.hourly))[0]  # deterministic bytes


def test_csv_streamed_per_cluster_is_the_whole_day_csv(org: SyntheticOrg) -> None:
    whole = to_focus(org.hourly, org.clusters, org.context, focus_options())
    data, _ = encode(org, per_cluster(org.hourly), fmt="csv")
    assert data == serialize.to_csv_bytes(whole)  # the header once, then every cluster's rows


def test_small_batches_share_row_groups_and_memory_is_bounded_by_the_threshold(
    org: SyntheticOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = to_focus(org.hourly, org.clusters, org.context, focus_options())
    monkeypatch.setattr(serialize, "MIN_ROW_GROUP_ROWS", whole.num_rows // 3)
    sink = io.BytesIO()
    writer = serialize.FocusParquetWriter(sink)
    for start in range(0, whole.num_rows, 50):
        writer.write(whole.slice(start, 50))
    writer.close()
    parquet = pq.ParquetFile(io.BytesIO(sink.getvalue()))
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    assert sum(sizes) == whole.num_rows and len(sizes) in (3, 4)
    assert all(size >= whole.num_rows // 3 for size in sizes[:-1])
    assert parquet.read().equals(whole)


def test_an_empty_day_is_a_valid_file_with_the_schema_and_one_empty_batch() -> None:
    for fmt in ("parquet", "csv"):
        sink = io.BytesIO()
        writer = serialize.focus_writer(fmt, sink)
        writer.write(FOCUS_SCHEMA.empty_table())
        writer.close()
        sink.seek(0)
        batches = list(serialize.iter_focus_batches(sink, fmt))
        assert len(batches) == 1 and batches[0].num_rows == 0 and batches[0].schema.equals(FOCUS_SCHEMA)


def test_the_streaming_writer_refuses_a_drifted_schema(org: SyntheticOrg) -> None:
    table = to_focus(org.hourly, org.clusters, org.context, focus_options())
    writer = serialize.FocusParquetWriter(io.BytesIO())
    with pytest.raises(ValueError, match="missing BilledCost"):
        writer.write(table.drop_columns(["BilledCost"]))
    writer.close()


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_batches_read_back_equal_the_object_and_decode_check_counts_rows_and_cost(
    org: SyntheticOrg, fmt: DataFormat
) -> None:
    data, rows = encode(org, per_cluster(org.hourly), fmt=fmt)
    back = pa.concat_tables(serialize.iter_focus_batches(io.BytesIO(data), fmt))
    assert back.equals(serialize.read_focus_bytes(data, fmt)) and back.num_rows == rows
    billed = pc.sum(back["BilledCost"]).as_py()
    assert billed > 1
    with tempfile.TemporaryFile() as staged:
        staged.write(data)
        staged.seek(0)
        decode_check(staged, fmt, rows, billed)  # a file payload, as publication stages it
        staged.seek(0)
        with pytest.raises(ValueError, match=f"holds {rows} rows, expected {rows + 1}"):
            decode_check(staged, fmt, rows + 1, billed)
        staged.seek(0)
        with pytest.raises(ValueError, match="Σ BilledCost"):
            decode_check(staged, fmt, rows, billed + 0.01)


def test_reports_of_cluster_batches_add_up_to_the_whole_day_report(org: SyntheticOrg) -> None:
    options = focus_options()
    whole = audit_focus(to_focus(org.hourly, org.clusters, org.context, options), org.hourly)
    combined = combine_reports(
        [audit_focus(to_focus(w, org.clusters, org.context, options), w) for w in per_cluster(org.hourly)]
    )
    assert [r.rule for r in combined.results] == [r.rule for r in whole.results]
    assert combined.passed and whole.passed
    assert combined.workloads == whole.workloads and combined.clusters == whole.clusters
    assert combined.source_total == pytest.approx(whole.source_total, rel=1e-12)
    for name, total in whole.totals.items():
        assert combined.totals[name] == pytest.approx(total, rel=1e-12)


def test_a_rule_failing_in_one_batch_fails_the_day_with_summed_rows(org: SyntheticOrg) -> None:
    table = to_focus(org.hourly, org.clusters, org.context, focus_options())
    index = table.schema.get_field_index("ResourceName")
    blank = table.set_column(
        index, table.schema.field(index), pa.array(["\u00a0", "\u3000\t", *([" x"] * (table.num_rows - 2))])
    )
    results = combine_results([check_conformance(table), check_conformance(blank), check_conformance(blank)])
    rule = next(r for r in results if r.rule == "no-blank-strings")
    assert not rule.passed and rule.failing_rows == 4 and "ResourceName" in rule.message
    assert all(r.passed for r in results if r.rule != "no-blank-strings")


def test_blank_strings_are_found_wherever_they_hide() -> None:
    """Empty or whitespace-only (Unicode too) is blank, as Python's str.strip() sees it; null is not."""
    values = ["", " ", "\t\n", "a", " a", "a ", None, "\u00a0", "\u2003 ", "é", "\u00a0x", "\x1f", "\u3000"]
    chunks = [pa.array(values[:5], pa.string()), pa.array(values[4:], pa.string()).slice(1)]  # an offset
    column = pa.chunked_array(chunks)
    table = pa.table(
        {f.name: pa.nulls(len(column), f.type) for f in FOCUS_SCHEMA if f.name != "ResourceName"}
        | {"ResourceName": column}
    ).select(FOCUS_SCHEMA.names)
    expected = sum(v is not None and not v.strip() for v in column.to_pylist())
    rule = next(r for r in check_conformance(table) if r.rule == "no-blank-strings")
    assert expected > 0 and rule.failing_rows == expected


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "out")
    server: S3TestServer = request.getfixturevalue("s3_server")
    return S3ObjectStore(server.client(), server.new_bucket())


def test_files_stream_into_and_out_of_the_store(store: ObjectStore) -> None:
    payload = bytes(range(256)) * 5000
    with tempfile.TemporaryFile() as source:
        source.write(payload)
        source.seek(0)
        store.put_file("a/b.bin", source, "application/octet-stream")
    assert store.get("a/b.bin") == payload
    with tempfile.TemporaryFile() as sink:
        store.get_file("a/b.bin", sink)
        sink.seek(0)
        assert sink.read() == payload
        with pytest.raises(ObjectNotFound, match=r"a/missing\.bin"):
            store.get_file("a/missing.bin", sink)
    store.copy("a/b.bin", "c/d.bin")
    assert store.get("c/d.bin") == payload


def test_publishing_from_a_file_writes_what_publishing_the_bytes_writes(
    store: ObjectStore, tmp_path: Path
) -> None:
    data = b"PAR1" + bytes(range(256)) * 300
    start = datetime(2025, 3, 4, tzinfo=UTC)

    def request(payload: bytes | io.BufferedRandom) -> PublishRequest:
        return PublishRequest(
            day=date(2025, 3, 4), organization_id=ORG, fmt="parquet", data=payload, row_count=7,
            totals={"BilledCost": 1.5}, source_window=(start, start + timedelta(days=1)), step_seconds=3600,
            run_id="run-1", complete=True, schema_columns=[("BilledCost", pa.float64())],
            generator_version="0",
        )  # fmt: skip

    clock = lambda: start + timedelta(days=1)  # noqa: E731
    audited: list[bytes] = []
    from_bytes = publish_partition(store, request(data), prefix="", ternary_prefix="t/", clock=clock)
    first = {key: store.get(key) for key in store.list("")}
    with tempfile.TemporaryFile() as payload:
        payload.write(data)
        from_file = publish_partition(
            store, request(payload), prefix="", ternary_prefix="t/", clock=clock,
            audit=lambda staged: audited.append(staged.read()),
        )  # fmt: skip
    assert audited == [data]  # the audit read the staged copy, from its start
    assert (from_file.checksum_sha256, from_file.bytes) == (from_bytes.checksum_sha256, from_bytes.bytes)
    assert {key: store.get(key) for key in store.list("")} == first
    manifest = json.loads(store.get(from_file.manifest_key))
    assert manifest["bytes"] == len(data) and [f["bytes"] for f in manifest["files"]] == [len(data)] * 2


def test_workload_costs_are_stored_one_row_group_per_cluster_and_read_back_lazily(org: SyntheticOrg) -> None:
    clusters = per_cluster(org.hourly)
    warning = {"rule": "duplicate-workload", "count": 1}
    marked = clusters[0].replace_schema_metadata({INPUT_WARNINGS_KEY: json.dumps([warning]).encode()})
    day = WorkloadCostsDay(
        clusters=iter([marked, *clusters[1:]]), metadata={b"castai_focus.window_end": b"x"}
    )
    with tempfile.TemporaryFile() as data:
        facts = workload_costs_to_file(day, data)
        assert facts == {"rows": org.hourly.num_rows, "clusters": len(clusters), "input_warnings": [warning]}
        data.seek(0)
        parquet = pq.ParquetFile(data)
        assert [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)] == [
            t.num_rows for t in clusters
        ]
        data.seek(0)
        stored = workload_costs_from_file(data)
        assert stored.metadata[b"castai_focus.window_end"] == b"x"
        back = list(stored.clusters)
    assert [t.schema.equals(WORKLOAD_COSTS_SCHEMA) for t in back] == [True] * len(clusters)
    assert pa.concat_tables(back).equals(pa.concat_tables(clusters).cast(WORKLOAD_COSTS_SCHEMA))


def test_a_stored_day_without_clusters_reads_back_as_one_empty_table() -> None:
    with tempfile.TemporaryFile() as data:
        assert workload_costs_to_file(WorkloadCostsDay(clusters=iter([])), data)["rows"] == 0
        data.seek(0)
        back = list(workload_costs_from_file(data).clusters)
    assert len(back) == 1 and back[0].num_rows == 0 and back[0].schema.equals(WORKLOAD_COSTS_SCHEMA)


@pytest.mark.parametrize("batching", ["per cluster", "whole day"])
def test_cluster_totals_are_the_rows_and_cost_of_each_cluster_in_the_encoded_object(
    org: SyntheticOrg, batching: str
) -> None:
    options = focus_options()
    batches = per_cluster(org.hourly) if batching == "per cluster" else [org.hourly]
    audited = (
        (t, audit_focus(t, w))
        for t, w in ((to_focus(w, org.clusters, org.context, options), w) for w in batches)
    )
    silent = "cluster-listed-without-rows"
    day = encode_focus_day(
        day_window(org), audited, "parquet", enrichment_completeness=1.0, enrichment_missing={},
        cluster_ids=[*org.clusters, silent],
    )  # fmt: skip
    try:
        day.data.seek(0)
        table = pq.read_table(day.data, columns=["x_CastAIClusterId", "BilledCost"])
    finally:
        day.discard()
    grouped = table.group_by("x_CastAIClusterId").aggregate([("BilledCost", "sum"), ("BilledCost", "count")])
    expected = {
        cid: (rows, cost)
        for cid, cost, rows in zip(
            *(grouped[c].to_pylist() for c in ("x_CastAIClusterId", "BilledCost_sum", "BilledCost_count")),
            strict=True,
        )
    }
    assert len(expected) > 1 and day.cluster_totals is not None
    assert day.cluster_totals.pop(silent) == (0, 0.0)
    assert day.cluster_totals.keys() == expected.keys()
    for cid, (rows, cost) in day.cluster_totals.items():
        assert rows == expected[cid][0] and cost == pytest.approx(expected[cid][1], rel=1e-12)
