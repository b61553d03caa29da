"""Generate the reference pages from the code that defines them (`make docs`).

`docs/focus-mapping.md` renders `FOCUS_COLUMNS` and the transform's constants (`docgen_mapping`);
`docs/configuration.md` renders `settings.SETTINGS_DOC`, read off the fields of `settings.Settings`.
A test keeps the committed pages identical to this output, so the documentation cannot describe a
mapping or a setting the code no longer has.
"""

from __future__ import annotations

from pathlib import Path

from castai_focus_dagster.settings import SETTINGS_DOC
from devtools.docgen_mapping import render_focus_mapping
from devtools.markdown import GENERATED, markdown_table

__all__ = ["DOCS_DIR", "main", "render_configuration", "render_focus_mapping"]

DOCS_DIR = Path(__file__).resolve().parents[1] / "docs"


def render_configuration() -> str:
    rows = [
        (f"`{d.env}`", f"`{d.default}`" if d.default else "(empty)", d.meaning, d.origin)
        for d in SETTINGS_DOC
    ]
    table = markdown_table(("Variable", "Default", "Meaning", "Origin"), rows)
    return f"""{GENERATED}

# Configuration

All configuration comes from environment variables. Every variable of the original
castai-focus CronJob keeps its name, its default and its meaning, as the original README documents
them (origin `original`); new behaviour has a new variable (origin `added`). Where an original
variable's meaning is refined (e.g. `COLLECTION_LOOKBACK_HOURS` restates whole UTC days), the table says
so; [migrating.md](migrating.md) lists every difference from the Go exporter.
Invalid configuration fails at start with one message that lists every
problem; the API key and the S3 secret never appear in logs, run config, metadata or errors.

{table}
"""


def main() -> None:
    DOCS_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("focus-mapping.md", render_focus_mapping()),
        ("configuration.md", render_configuration()),
    ):
        path = DOCS_DIR / name
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
