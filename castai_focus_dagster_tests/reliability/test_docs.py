"""docs/reliability.md carries exactly the bad-input table generated from the corpus."""

from __future__ import annotations

from castai_focus_dagster_tests.reliability.corpus import CASES, DOC, documented_table, render_table


def test_the_documented_table_is_the_corpus() -> None:
    documented = documented_table(DOC.read_text(encoding="utf-8"))
    assert documented, f"{DOC} lacks the generated table markers"
    assert documented == render_table(), (
        "docs/reliability.md is out of date: python -m castai_focus_dagster_tests.reliability.corpus"
    )


def test_every_case_has_a_row_with_its_outcome() -> None:
    rows = [line for line in render_table().splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == len(CASES)
    for row, case in zip(rows, CASES, strict=True):
        assert f"`{case.id}`" in row and f"**{case.outcome}**" in row
        assert case.field is None or f"`{case.field}`" in row
