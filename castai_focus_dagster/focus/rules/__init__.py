"""FOCUS rules, grouped by concern; `conformance.check_conformance` runs the table-wide set."""
