"""Decoded bucket structs → a timestamp array and one float64 matrix of their metric fields.

The matrix has one C-contiguous row per field: each row becomes an Arrow column without a copy, and
the bucket checks run once over every field instead of once per field. Each bucket's fields come out
as one tuple (`msgspec.structs.astuple`, in C) and the columns are then picked by API name, so neither
their order in the struct nor a Python loop per value decides the result.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
import pyarrow as pa
from msgspec.structs import astuple

_TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class MetricColumns:
    """Metric fields of n buckets: `values[i]` is the column of `names[i]`, shape (len(names), n)."""

    names: tuple[str, ...]
    values: np.ndarray

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[self.names.index(name)]

    def arrays(self) -> list[pa.Array]:
        """One float64 Arrow array per field, in `names` order: slices of one zero-copy array over the
        matrix (one conversion instead of one per field)."""
        n = self.values.shape[1]
        flat = pa.array(self.values.reshape(-1))
        return [flat.slice(i * n, n) for i in range(len(self.names))]


@functools.cache
def _layout(struct: type[msgspec.Struct], names: tuple[str, ...]) -> np.ndarray:
    """Where each of `names` (API names) sits among the fields of `struct` after its leading
    `timestamp`, all of which must be floats: the order in which `msgspec.structs.astuple` returns them."""
    fields = msgspec.structs.fields(struct)
    if not fields or fields[0].encode_name != "timestamp":
        raise TypeError(f"{struct.__name__} must begin with its timestamp field")
    position = {}
    for i, field in enumerate(fields[1:]):
        if field.type is not float:
            raise TypeError(f"{struct.__name__}.{field.name} is not a float field")
        position[field.encode_name] = i
    return np.array([position[name] for name in names], dtype=np.intp)


def bucket_columns(
    buckets: Sequence[msgspec.Struct], struct: type[msgspec.Struct], names: tuple[str, ...]
) -> tuple[pa.Array, MetricColumns]:
    """(timestamp array, metric columns) of `buckets`, instances of `struct` whose fields are an aware
    `timestamp` and then floats, among them `names`; each bucket's fields are read as one tuple (in C)
    and the values copied once into the matrix, then its columns picked by name."""
    layout = _layout(struct, names)
    rows = list(map(astuple, buckets))
    n, width = len(rows), len(struct.__struct_fields__) - 1
    flat = np.fromiter(itertools.chain.from_iterable(row[1:] for row in rows), np.float64, count=n * width)
    values = np.ascontiguousarray(flat.reshape(n, width)[:, layout].T)
    timestamps = pa.array([row[0] for row in rows], type=_TIMESTAMP)
    return timestamps, MetricColumns(names, values)
