"""The one schema diff: conformance's schema rule and the writers' refusal report the same problems."""

from __future__ import annotations

import pyarrow as pa
import pytest

from castai_focus_dagster.focus.conformance import check_conformance
from castai_focus_dagster.focus.schema import FOCUS_SCHEMA, schema_problems
from castai_focus_dagster.storage.serialize import to_parquet_bytes


def drifted() -> pa.Table:
    table = FOCUS_SCHEMA.empty_table()
    index = table.schema.get_field_index("BilledCost")
    table = table.set_column(index, pa.field("BilledCost", pa.string()), pa.array([], pa.string()))
    return table.drop_columns(["ListCost"]).append_column("Extra", pa.array([], pa.int64()))


def test_schema_problems_name_every_difference() -> None:
    assert schema_problems(FOCUS_SCHEMA) == []
    assert schema_problems(drifted().schema) == [
        "missing ListCost",
        "unexpected Extra",
        "BilledCost: string instead of double not null",
    ]
    reordered = FOCUS_SCHEMA.empty_table().select([*FOCUS_SCHEMA.names[1:], FOCUS_SCHEMA.names[0]])
    assert schema_problems(reordered.schema) == ["columns are not in FOCUS_SCHEMA order"]


def test_conformance_and_writers_report_the_same_diff() -> None:
    problems = "; ".join(schema_problems(drifted().schema))
    schema_rule = next(r for r in check_conformance(drifted()) if r.rule == "schema")
    assert not schema_rule.passed and schema_rule.message.endswith(problems)
    with pytest.raises(ValueError) as refused:
        to_parquet_bytes(drifted())
    assert str(refused.value).endswith(problems)
