"""Bucket structs → timestamp array + metric matrix: columns picked by API name, whatever the struct's
field order, and structs the copy cannot read refused when first used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from castai_focus_dagster.castai.columns import bucket_columns
from castai_focus_dagster.castai.wire import AwareDatetime

START = datetime(2026, 9, 1, tzinfo=UTC)


class Bucket(msgspec.Struct, rename="camel"):
    timestamp: AwareDatetime
    b_cost: float = 0.0
    a_cost: float = 0.0
    c_count: float = 0.0


class Unreadable(msgspec.Struct, rename="camel"):
    timestamp: AwareDatetime
    a_cost: float = 0.0
    note: str = ""


class NoTimestamp(msgspec.Struct, rename="camel"):
    a_cost: float = 0.0
    b_cost: float = 0.0


finite = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, finite, finite), min_size=1, max_size=30))
def test_columns_are_picked_by_api_name_not_by_field_order(values: list[tuple[float, float, float]]) -> None:
    buckets = [
        Bucket(START + timedelta(hours=i), b_cost=b, a_cost=a, c_count=c)
        for i, (b, a, c) in enumerate(values)
    ]
    timestamps, columns = bucket_columns(buckets, Bucket, ("aCost", "cCount", "bCost"))
    assert timestamps.to_pylist() == [b.timestamp for b in buckets]
    assert columns.values.flags.c_contiguous and columns.values.shape == (3, len(values))
    assert columns["aCost"].tolist() == [a for _, a, _ in values]
    assert columns["bCost"].tolist() == [b for b, _, _ in values]
    assert columns["cCount"].tolist() == [c for _, _, c in values]
    assert [a.to_pylist() for a in columns.arrays()] == columns.values.tolist()


def test_a_subset_of_the_fields_can_be_read() -> None:
    buckets = [Bucket(START, b_cost=1.5, a_cost=2.5, c_count=3.0)]
    _, columns = bucket_columns(buckets, Bucket, ("cCount",))
    assert np.array_equal(columns.values, [[3.0]])


def test_structs_the_copy_cannot_read_are_refused() -> None:
    with pytest.raises(TypeError, match=r"Unreadable.note is not a float field"):
        bucket_columns([Unreadable(START)], Unreadable, ("aCost",))
    with pytest.raises(TypeError, match="must begin with its timestamp"):
        bucket_columns([NoTimestamp()], NoTimestamp, ("aCost",))
