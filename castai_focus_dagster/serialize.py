"""FOCUS tables -> file bytes (Parquet or CSV), byte-identical for identical input.

Both writers refuse a table whose schema is not exactly `FOCUS_SCHEMA`: a file with drifting
types would break readers that union many days (Athena, Spark, DuckDB globbing).

Parquet: Snappy, one row group per 1M rows, no wall-clock metadata (pyarrow writes only its
version string in `created_by`), so identical input gives identical bytes.

CSV is assembled column-wise with Arrow kernels instead of `pyarrow.csv` because FOCUS needs
control the generic writer does not give: timestamps as `YYYY-MM-DDTHH:MM:SSZ`, numbers unquoted
in shortest round-trip form with no `+` in exponents (FOCUS NumericFormat), every string quoted
(RFC 4180, embedded quotes doubled) so that an empty string and a null (empty field) differ.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from castai_focus_dagster.focus_schema import FOCUS_SCHEMA

_ROW_GROUP_SIZE = 1_000_000
_CSV_BATCH_ROWS = 50_000  # bounds the size of one joined string buffer (int32 offsets)


def _require_focus_schema(table: pa.Table) -> None:
    if table.schema.equals(FOCUS_SCHEMA):
        return
    expected = {f.name: f for f in FOCUS_SCHEMA}
    actual = {f.name: f for f in table.schema}
    problems = [f"missing {n}" for n in expected if n not in actual]
    problems += [f"unexpected {n}" for n in actual if n not in expected]
    problems += [
        f"{n}: {actual[n].type}{'' if actual[n].nullable else ' not null'} instead of "
        f"{f.type}{'' if f.nullable else ' not null'}"
        for n, f in expected.items()
        if n in actual and not actual[n].equals(f)
    ]
    if not problems and table.schema.names != FOCUS_SCHEMA.names:
        problems.append("columns are not in FOCUS_SCHEMA order")
    raise ValueError("table does not have the FOCUS schema: " + "; ".join(problems))


def to_parquet_bytes(table: pa.Table) -> bytes:
    """Snappy Parquet with exactly FOCUS_SCHEMA; deterministic bytes for identical input."""
    _require_focus_schema(table)
    sink = io.BytesIO()
    pq.write_table(
        table.combine_chunks(),
        sink,
        compression="snappy",
        row_group_size=_ROW_GROUP_SIZE,
        use_dictionary=True,
        write_statistics=True,
    )
    return sink.getvalue()


def to_csv_bytes(table: pa.Table) -> bytes:
    """RFC 4180 CSV with a header row; nulls are empty fields, floats round-trip exactly."""
    _require_focus_schema(table)
    parts = [(",".join(FOCUS_SCHEMA.names) + "\n").encode()]
    for batch in table.to_batches(max_chunksize=_CSV_BATCH_ROWS):
        if batch.num_rows == 0:
            continue
        fields = [_csv_field(batch.column(i), FOCUS_SCHEMA.field(i).type) for i in range(batch.num_columns)]
        lines = pc.binary_join_element_wise(pc.binary_join_element_wise(*fields, ","), "", "\n")
        parts.append(_concatenated(lines))
    return b"".join(parts)


def read_focus_bytes(data: bytes, fmt: str) -> pa.Table:
    """Parse a published Parquet or CSV object back into a FOCUS_SCHEMA table, as a reader would see it.

    CSV: an unquoted empty field is null, a quoted one (`""`) an empty string; timestamps and doubles
    parse back to the exact values that were written.
    """
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(data))
    elif fmt == "csv":
        table = pacsv.read_csv(
            io.BytesIO(data),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={f.name: f.type for f in FOCUS_SCHEMA},
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        if table.column_names == FOCUS_SCHEMA.names:
            try:
                table = table.cast(FOCUS_SCHEMA)
            except (pa.ArrowInvalid, ValueError) as exc:
                raise ValueError(f"CSV object does not fit the FOCUS schema: {exc}") from exc
    else:
        raise ValueError(f"unknown FOCUS object format {fmt!r} (expected 'parquet' or 'csv')")
    _require_focus_schema(table)
    return table


def _concatenated(lines: pa.Array) -> bytes:
    """All values of a string array back to back, read straight from its data buffer."""
    _, offsets_buffer, data = lines.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    return b"" if data is None else data.slice(start, end - start).to_pybytes()


def _csv_field(values: pa.Array, type_: pa.DataType) -> pa.Array:
    """One column rendered as CSV field text; null -> empty field."""
    if pa.types.is_floating(type_):
        # Arrow prints the shortest representation that parses back to the same double.
        text = values.cast(pa.string())
        if pc.any(pc.match_substring(text, "e+")).as_py():
            text = pc.replace_substring(text, "e+", "e")
        return pc.fill_null(text, "")
    # Strings and timestamps repeat a lot: format each distinct value once, then gather.
    encoded = pc.dictionary_encode(
        values.cast(pa.timestamp("s", tz="UTC")) if pa.types.is_timestamp(type_) else values
    )
    distinct = encoded.dictionary
    if pa.types.is_timestamp(type_):
        rendered = pc.strftime(distinct, format="%Y-%m-%dT%H:%M:%SZ")
    else:
        rendered = pc.binary_join_element_wise('"', pc.replace_substring(distinct, '"', '""'), '"', "")
    return pc.fill_null(rendered.take(encoded.indices), "")
