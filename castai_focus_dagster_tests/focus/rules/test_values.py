"""The blank-string rule reads Arrow buffers directly: edge cases of that reading."""

from __future__ import annotations

import pyarrow as pa
import pytest

from castai_focus_dagster.focus.rules.values import no_blank_strings
from castai_focus_dagster.focus.schema import FOCUS_SCHEMA


def one_string_column(values: list[str | None]) -> pa.Table:
    """A FOCUS table whose every string column is null except ChargeDescription."""
    table = pa.Table.from_arrays(
        [pa.nulls(len(values), f.type) for f in FOCUS_SCHEMA], schema=FOCUS_SCHEMA.remove_metadata()
    )
    index = table.schema.get_field_index("ChargeDescription")
    return table.set_column(index, table.schema.field(index), pa.array(values, pa.string()))


@pytest.mark.parametrize(
    ("values", "blank"),
    [
        (["", "", None], [True, True, False]),  # only empty strings: an empty data buffer
        (["a", " ", "\u00a0", None, "x\u3000", "\u3000"], [False, True, True, False, False, True]),
        ([None, None], [False, False]),  # all null
        (["ok", "\tx", "\t\n"], [False, False, True]),
    ],
)
def test_blank_strings_are_found_exactly(values: list[str | None], blank: list[bool]) -> None:
    failing, sample = no_blank_strings(one_string_column(values))
    assert failing.tolist() == blank
    assert ("ChargeDescription" in sample) == any(blank)


def test_a_sliced_column_reads_its_own_values() -> None:
    table = one_string_column(["fine", " ", "also fine", ""]).slice(1, 2)
    assert no_blank_strings(table)[0].tolist() == [True, False]
