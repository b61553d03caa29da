"""The generated reference pages in docs/ match the code that defines them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from castai_focus_dagster.focus.schema import FOCUS_COLUMNS
from castai_focus_dagster.settings import SETTINGS_DOC
from devtools import docgen


@pytest.mark.parametrize(
    ("page", "render"),
    [("focus-mapping.md", docgen.render_focus_mapping), ("configuration.md", docgen.render_configuration)],
)
def test_committed_page_equals_generated_output(page: str, render: Callable[[], str]) -> None:
    path = docgen.DOCS_DIR / page
    assert path.exists(), f"docs/{page} is missing: run `make docs`"
    assert path.read_text(encoding="utf-8") == render(), (
        f"docs/{page} is stale: run `make docs` and commit it"
    )


def test_pages_cover_every_column_and_setting() -> None:
    mapping = docgen.render_focus_mapping()
    assert all(f"| `{c.name}` |" in mapping for c in FOCUS_COLUMNS)
    configuration = docgen.render_configuration()
    assert all(f"| `{s.env}` |" in configuration for s in SETTINGS_DOC)


def test_main_writes_both_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "docs"
    monkeypatch.setattr(docgen, "DOCS_DIR", target)
    docgen.main()
    assert (target / "focus-mapping.md").read_text(encoding="utf-8") == docgen.render_focus_mapping()
    assert (target / "configuration.md").read_text(encoding="utf-8") == docgen.render_configuration()
