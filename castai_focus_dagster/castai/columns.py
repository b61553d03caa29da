"""Decoded bucket structs → a timestamp array and one float64 matrix of their metric fields.

The matrix has one C-contiguous row per field: each row becomes an Arrow column without a copy, and
the bucket checks run once over every field instead of once per field. Fields are read by API name
through one `operator.attrgetter`, so neither their order in the struct nor a Python loop per value
decides the result.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

_TIMESTAMP = pa.timestamp("us", tz="UTC")
_timestamp_of = operator.attrgetter("timestamp")


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
def _fields_of(struct: type[msgspec.Struct], names: tuple[str, ...]) -> Callable[[Any], tuple[float, ...]]:
    """One getter returning the fields `names` (API names) of a `struct` instance, in that order."""
    attribute = dict(zip(struct.__struct_encode_fields__, struct.__struct_fields__, strict=True))
    if len(names) < 2:
        raise ValueError("attrgetter returns a tuple only for two or more fields")
    return operator.attrgetter(*(attribute[name] for name in names))


def bucket_columns(
    buckets: Sequence[msgspec.Struct], struct: type[msgspec.Struct], names: tuple[str, ...]
) -> tuple[pa.Array, MetricColumns]:
    """(timestamp array, metric columns) of `buckets`, instances of `struct` with an aware `timestamp`
    and float fields `names`; the values are copied once, in C, from the structs into the matrix."""
    n, width = len(buckets), len(names)
    flat = np.fromiter(
        itertools.chain.from_iterable(map(_fields_of(struct, names), buckets)), np.float64, count=n * width
    )
    values = np.ascontiguousarray(flat.reshape(n, width).T)
    timestamps = pa.array(list(map(_timestamp_of, buckets)), type=_TIMESTAMP)
    return timestamps, MetricColumns(names, values)
