"""FOCUS tables to file bytes (Parquet or CSV) and back, byte-identical for identical input.

Writers refuse a table whose schema is not exactly `FOCUS_SCHEMA` (drifting types break readers that
union many days). A day is written cluster by cluster, row groups of `MIN_ROW_GROUP_ROWS` to
`MAX_ROW_GROUP_ROWS` rows, so memory holds one row group. `FORMATS` is the one place a format differs.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from castai_focus_dagster.focus.schema import FOCUS_SCHEMA, schema_problems
from castai_focus_dagster.storage.keys import DATA_FORMATS, DataFormat

MAX_ROW_GROUP_ROWS = 1_000_000
# Parquet key-value metadata of every file this exporter writes (no version: bytes stay identical).
WRITER_METADATA = {b"castai_focus_dagster.writer": b"castai-focus-dagster"}
CSV_HEADER = (",".join(FOCUS_SCHEMA.names) + "\n").encode()
# Small clusters are buffered up to this many rows (~35 MB of Arrow memory) before a row group is written.
MIN_ROW_GROUP_ROWS = 32_768
_CSV_BATCH_ROWS = 50_000  # bounds the size of one joined string buffer (int32 offsets)
# CSV readers: an unquoted empty field is null, a quoted one an empty string.
_CSV_CONVERT = pacsv.ConvertOptions(
    column_types={f.name: f.type for f in FOCUS_SCHEMA},
    strings_can_be_null=True,
    quoted_strings_can_be_null=False,
)


def _require_focus_schema(table: pa.Table) -> None:
    problems = schema_problems(table.schema)
    if problems:
        raise ValueError("table does not have the FOCUS schema: " + "; ".join(problems))


class FocusParquetWriter:
    """Appends FOCUS tables to one Snappy Parquet file; the bytes depend only on the tables written.

    Every table is checked against FOCUS_SCHEMA; tables are buffered until `MIN_ROW_GROUP_ROWS` rows,
    then written as one row group. An empty file (no rows) still carries the schema. Row groups are
    encoded and compressed on a background thread (pyarrow releases the GIL), so the caller prepares the
    next batch meanwhile; at most one row group is being written while the next one fills.
    """

    def __init__(self, sink: BinaryIO):
        self._writer = pq.ParquetWriter(
            sink,
            FOCUS_SCHEMA.with_metadata(WRITER_METADATA),
            compression="snappy",
            use_dictionary=True,
            write_statistics=True,
        )
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="focus-parquet")
        self._in_flight: Future[None] | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        _require_focus_schema(table)
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= MIN_ROW_GROUP_ROWS:
            self._flush()

    def close(self) -> None:
        try:
            self._flush()
            self._wait()
        finally:
            self._encoder.shutdown()
            self._writer.close()

    def _flush(self) -> None:
        if self._pending:
            table = pa.concat_tables(self._pending).combine_chunks()
            self._pending, self._pending_rows = [], 0
            self._wait()  # row groups are written in order, one at a time
            self._in_flight = self._encoder.submit(
                self._writer.write_table, table, row_group_size=MAX_ROW_GROUP_ROWS
            )

    def _wait(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()


class FocusCsvWriter:
    """Appends FOCUS tables to one RFC 4180 CSV stream: the header once, then every table's rows."""

    def __init__(self, sink: BinaryIO):
        self._sink = sink
        self._sink.write(CSV_HEADER)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        _require_focus_schema(table)
        for batch in table.to_batches(max_chunksize=_CSV_BATCH_ROWS):
            if batch.num_rows:
                fields = [
                    _csv_field(batch.column(i), FOCUS_SCHEMA.field(i).type) for i in range(batch.num_columns)
                ]
                lines = pc.binary_join_element_wise(pc.binary_join_element_wise(*fields, ","), "", "\n")
                self._sink.write(_concatenated(lines))
        self.rows += table.num_rows

    def close(self) -> None:
        self._sink.flush()


FocusWriter = FocusParquetWriter | FocusCsvWriter


def _parquet_is_ours(source: BinaryIO) -> bool:
    try:
        metadata = pq.ParquetFile(source).schema_arrow.metadata or {}
    except (pa.ArrowException, OSError):  # not Parquet at all: certainly not ours
        return False
    return all(metadata.get(k) == v for k, v in WRITER_METADATA.items())


def _csv_is_ours(source: BinaryIO) -> bool:
    return source.read(len(CSV_HEADER)) == CSV_HEADER


def to_parquet_bytes(table: pa.Table) -> bytes:
    """Snappy Parquet with exactly FOCUS_SCHEMA; deterministic bytes for identical input."""
    sink = io.BytesIO()
    writer = FocusParquetWriter(sink)
    writer.write(table)
    writer.close()
    return sink.getvalue()


def to_csv_bytes(table: pa.Table) -> bytes:
    """RFC 4180 CSV with a header row; nulls are empty fields, floats round-trip exactly."""
    sink = io.BytesIO()
    writer = FocusCsvWriter(sink)
    writer.write(table)
    return sink.getvalue()


def read_focus_bytes(data: bytes, fmt: str) -> pa.Table:
    """Parse a published Parquet or CSV object back into a FOCUS_SCHEMA table, as a reader would see it.

    CSV: an unquoted empty field is null, a quoted one (`""`) an empty string; timestamps and doubles
    parse back to the exact values that were written.
    """
    table = data_format(fmt).read(data)
    _require_focus_schema(table)
    return table


def iter_focus_batches(
    source: BinaryIO, fmt: str, columns: Sequence[str] | None = None
) -> Iterator[pa.Table]:
    """Read a published object back in batches (Parquet: row groups), checked like `read_focus_bytes`.

    Memory holds one batch. An object without rows yields one empty table, so every consumer sees at
    least one batch. With `columns`, batches hold only those (the object's schema is still checked
    whole); Parquet then decodes only them, CSV parses every field (its layout is by row).
    """
    empty = True
    for table in data_format(fmt).batches(source, columns):
        empty = False
        yield table
    if empty:
        yield FOCUS_SCHEMA.empty_table() if columns is None else FOCUS_SCHEMA.empty_table().select(columns)


def _read_csv(data: bytes) -> pa.Table:
    table = pacsv.read_csv(
        io.BytesIO(data),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=_CSV_CONVERT,
    )
    if table.column_names == FOCUS_SCHEMA.names:
        try:
            table = table.cast(FOCUS_SCHEMA)
        except (pa.ArrowInvalid, ValueError) as exc:
            raise ValueError(f"CSV object does not fit the FOCUS schema: {exc}") from exc
    return table


def _parquet_batches(source: BinaryIO, columns: Sequence[str] | None) -> Iterator[pa.Table]:
    parquet = pq.ParquetFile(source)
    _require_focus_schema(parquet.schema_arrow.empty_table())
    # Row group by row group: `iter_batches` reads ahead and holds about three times the memory.
    for index in range(parquet.num_row_groups):
        yield parquet.read_row_group(index, columns=columns)


def _csv_batches(source: BinaryIO, columns: Sequence[str] | None) -> Iterator[pa.Table]:
    reader = pacsv.open_csv(
        source,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=_CSV_CONVERT,
    )
    if reader.schema.names != FOCUS_SCHEMA.names:
        _require_focus_schema(reader.schema.empty_table())
    for batch in reader:
        try:
            table = pa.Table.from_batches([batch]).cast(FOCUS_SCHEMA)
        except (pa.ArrowInvalid, ValueError) as exc:
            raise ValueError(f"CSV object does not fit the FOCUS schema: {exc}") from exc
        yield table if columns is None else table.select(columns)


@dataclass(frozen=True)
class Format:
    """Everything that differs between the published formats, so no caller branches on the format."""

    name: DataFormat
    content_type: str
    writer: Callable[[BinaryIO], FocusWriter]
    read: Callable[[bytes], pa.Table]  # a whole object, unchecked
    batches: Callable[[BinaryIO, Sequence[str] | None], Iterator[pa.Table]]  # checked, one batch in memory
    is_ours: Callable[[BinaryIO], bool]  # carries this exporter's mark


PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
FORMATS: dict[str, Format] = {
    "parquet": Format(
        "parquet", PARQUET_CONTENT_TYPE, FocusParquetWriter, lambda data: pq.read_table(io.BytesIO(data)),
        _parquet_batches, _parquet_is_ours,
    ),
    "csv": Format("csv", "text/csv; charset=utf-8", FocusCsvWriter, _read_csv, _csv_batches, _csv_is_ours),
}  # fmt: skip
assert tuple(FORMATS) == DATA_FORMATS, "every S3_FORMAT needs one Format entry"


def data_format(fmt: str) -> Format:
    """The registry entry of a published format; ValueError naming the known ones otherwise."""
    try:
        return FORMATS[fmt]
    except KeyError:
        raise ValueError(
            f"unknown FOCUS object format {fmt!r} (expected {' or '.join(map(repr, FORMATS))})"
        ) from None


def focus_writer(fmt: str, sink: BinaryIO) -> FocusWriter:
    """The streaming writer of a published format."""
    return data_format(fmt).writer(sink)


def written_by_this_exporter(source: BinaryIO, fmt: str) -> bool:
    """Whether a data object carries this exporter's mark (Parquet metadata, or our exact CSV header)."""
    return data_format(fmt).is_ours(source)


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
