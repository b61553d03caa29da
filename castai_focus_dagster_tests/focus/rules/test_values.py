"""The blank-string and currency rules read Arrow buffers directly: edge cases of that reading, and the
currency reader against the regular expression that defines an ISO 4217 code's shape."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from castai_focus_dagster.focus.rules.values import currency_codes, no_blank_strings, three_capitals
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


def _as_regex_says(values: list[str | None]) -> list[bool]:
    return [v is not None and re.fullmatch(r"[A-Z]{3}", v) is not None for v in values]


@given(
    st.lists(
        st.none()
        | st.text(alphabet=st.sampled_from("AZ@[az0\u00c4\u0391 "), max_size=4)
        | st.sampled_from(["USD", "EUR", "usd", "US", "USDX", "ÄUR", "U D"]),
        max_size=12,
    ),
    st.integers(min_value=0, max_value=3),
)
def test_three_capitals_agrees_with_the_regular_expression(values: list[str | None], cut: int) -> None:
    column = pa.chunked_array([pa.array(values, pa.string())]).slice(min(cut, len(values)))
    expected = _as_regex_says(values[min(cut, len(values)) :])
    assert three_capitals(column).tolist() == expected


def test_currency_codes_reject_a_bad_billing_or_pricing_currency_and_allow_a_null_pricing_one() -> None:
    base = one_string_column(["x", "y", "z"])

    def with_currencies(billing: list[str | None], pricing: list[str | None]) -> pa.Table:
        table = base
        for name, values in (("BillingCurrency", billing), ("PricingCurrency", pricing)):
            index = table.schema.get_field_index(name)
            table = table.set_column(index, table.schema.field(index), pa.array(values, pa.string()))
        return table

    failing, sample = currency_codes(with_currencies(["USD", "usd", None], ["EUR", "EUR", None]))
    assert failing.tolist() == [False, True, True] and "usd" in sample
    failing, _ = currency_codes(with_currencies(["USD"] * 3, [None, "EU", "EURO"]))
    assert failing.tolist() == [False, True, True]
