"""Parquet and CSV bytes: deterministic, schema-enforcing, and read back exactly by real readers."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import get_args

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from castai_focus_dagster.focus.schema import FOCUS_SCHEMA
from castai_focus_dagster.focus.transform import to_focus
from castai_focus_dagster.settings import OutputFormat
from castai_focus_dagster.storage.serialize import (
    FORMATS,
    iter_focus_batches,
    read_focus_bytes,
    to_csv_bytes,
    to_parquet_bytes,
    written_by_this_exporter,
)
from castai_focus_dagster_tests.focus_inputs import focus_options, synthetic_org


@pytest.fixture(scope="module")
def focus() -> pa.Table:
    org = synthetic_org(workloads_per_cluster=5)
    return to_focus(org.hourly, org.clusters, org.context, focus_options())


def with_column(table: pa.Table, name: str, values: list[object]) -> pa.Table:
    index = table.schema.get_field_index(name)
    field = table.schema.field(index)
    return table.set_column(index, field, pa.array(values, field.type))


def test_parquet_is_snappy_deterministic_and_round_trips(focus: pa.Table) -> None:
    data = to_parquet_bytes(focus)
    assert data == to_parquet_bytes(focus)
    assert data == to_parquet_bytes(
        pa.concat_tables([focus.slice(0, 7), focus.slice(7)])
    )  # chunking is irrelevant
    parquet = pq.ParquetFile(io.BytesIO(data))
    assert {
        parquet.metadata.row_group(0).column(i).compression for i in range(parquet.metadata.num_columns)
    } == {"SNAPPY"}
    back = read_focus_bytes(data, "parquet")
    assert back.schema.equals(FOCUS_SCHEMA) and back.equals(focus)


def test_empty_table_writes_the_same_schema_in_both_formats() -> None:
    empty = FOCUS_SCHEMA.empty_table()
    assert pq.read_schema(io.BytesIO(to_parquet_bytes(empty))).equals(FOCUS_SCHEMA)
    assert to_csv_bytes(empty) == (",".join(FOCUS_SCHEMA.names) + "\n").encode()
    assert read_focus_bytes(to_csv_bytes(empty), "csv").schema.equals(FOCUS_SCHEMA)


def test_writers_refuse_a_table_without_the_focus_schema(focus: pa.Table) -> None:
    drifted = focus.set_column(0, "AllocatedMethodDetails", pa.nulls(focus.num_rows, pa.null()))
    for write in (to_parquet_bytes, to_csv_bytes):
        with pytest.raises(ValueError, match="AllocatedMethodDetails"):
            write(drifted)
        with pytest.raises(ValueError, match="missing BilledCost"):
            write(focus.drop_columns(["BilledCost"]))


def test_csv_layout_quoting_nulls_and_timestamps(focus: pa.Table) -> None:
    tricky = with_column(
        focus, "ChargeDescription", ['He said "hi", then\nleft', "", *([None] * (focus.num_rows - 2))]
    )
    text = to_csv_bytes(tricky).decode()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == FOCUS_SCHEMA.names
    assert len(rows) == focus.num_rows + 1
    col = {name: i for i, name in enumerate(rows[0])}
    assert rows[1][col["ChargeDescription"]] == 'He said "hi", then\nleft'
    assert '"He said ""hi"", then\nleft"' in text
    assert ',"",' in text.splitlines()[3]  # an empty string is quoted ...
    assert rows[3][col["ChargeClass"]] == ""  # ... a null is an empty field
    for name in ("ChargePeriodStart", "ChargePeriodEnd", "BillingPeriodStart", "BillingPeriodEnd"):
        assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", r[col[name]]) for r in rows[1:])
    back = read_focus_bytes(text.encode(), "csv")
    assert back.column("ChargeDescription").to_pylist()[:3] == ['He said "hi", then\nleft', "", None]
    assert back.equals(tricky)


def test_csv_floats_round_trip_exactly_without_exponent_plus(focus: pa.Table) -> None:
    extremes = [1e20, 1.23e12, 5e-324, 0.1 + 0.2, 123456789.123456789, 1 / 3, -2.5, 0.0]
    values = extremes + focus.column("BilledCost").to_pylist()[len(extremes) :]
    table = with_column(focus, "BilledCost", values)
    text = to_csv_bytes(table).decode()
    assert "e+" not in text
    column = [r[FOCUS_SCHEMA.names.index("BilledCost")] for r in csv.reader(io.StringIO(text, newline=""))][
        1:
    ]
    assert [float(v) for v in column] == values
    assert column[0] == "1e20"


def test_readers_recompute_list_and_contracted_cost_exactly(tmp_path: Path, focus: pa.Table) -> None:
    """DuckDB (as Athena/Spark-style readers do) recomputes unit price × quantity from both files."""
    folder = tmp_path
    (folder / "f.parquet").write_bytes(to_parquet_bytes(focus))
    (folder / "f.csv").write_bytes(to_csv_bytes(focus))
    query = """
        SELECT count(*) AS n,
               count(*) FILTER (WHERE ListCost <> ListUnitPrice * PricingQuantity) AS list_off,
               count(*) FILTER (WHERE ContractedCost <> ContractedUnitPrice * PricingQuantity) AS c_off,
               sum(BilledCost) AS billed
        FROM {source}
    """
    expected_billed = float(np.sum(focus.column("BilledCost").to_numpy()))
    with duckdb.connect() as con:
        for source in (
            f"read_parquet('{folder / 'f.parquet'}')",
            f"read_csv('{folder / 'f.csv'}', header=true)",
        ):
            row = con.execute(query.format(source=source)).fetchone()
            assert row is not None
            n, list_off, contracted_off, billed = row
            assert (n, list_off, contracted_off) == (focus.num_rows, 0, 0)
            assert billed == pytest.approx(expected_billed, rel=1e-12)


def test_unknown_format_is_rejected(focus: pa.Table) -> None:
    with pytest.raises(ValueError, match="xlsx"):
        read_focus_bytes(b"", "xlsx")


def test_the_format_registry_covers_every_s3_format_and_tells_our_objects_apart(focus: pa.Table) -> None:
    """Each S3_FORMAT has one registry entry whose writer, readers and writer mark agree; an object of
    the other format, or a foreign file, is not taken for ours."""
    assert set(FORMATS) == set(get_args(OutputFormat)) == {"parquet", "csv"}
    assert {name: f.content_type for name, f in FORMATS.items()} == {
        "parquet": "application/vnd.apache.parquet",
        "csv": "text/csv; charset=utf-8",
    }
    written = {}
    for name, entry in FORMATS.items():
        sink = io.BytesIO()
        writer = entry.writer(sink)
        writer.write(focus)
        writer.close()
        written[name] = sink.getvalue()
        back = pa.concat_tables(iter_focus_batches(io.BytesIO(written[name]), name))
        assert back.num_rows == focus.num_rows and back.schema.equals(FOCUS_SCHEMA)
    assert written["parquet"] == to_parquet_bytes(focus) and written["csv"] == to_csv_bytes(focus)
    for name in FORMATS:
        other = "csv" if name == "parquet" else "parquet"
        assert written_by_this_exporter(io.BytesIO(written[name]), name)
        assert not written_by_this_exporter(io.BytesIO(written[other]), name)
        assert not written_by_this_exporter(io.BytesIO(b"hour,cost\n01,2.5\n"), name)
    foreign = io.BytesIO()
    pq.write_table(focus, foreign)  # a Parquet file with the FOCUS schema, not written by us
    assert not written_by_this_exporter(io.BytesIO(foreign.getvalue()), "parquet")
