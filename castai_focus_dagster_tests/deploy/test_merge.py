"""The value merge the deployment tests rely on: RFC 7396's own examples, and Helm's file order."""

from __future__ import annotations

from typing import Any

import pytest

from castai_focus_dagster_tests.deploy.helm import helm_values, merge_patch

# RFC 7396, Appendix A: original, patch, result (JSON written as Python).
RFC_7396_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC_7396_EXAMPLES)
def test_merge_patch_gives_the_rfc_examples(original: Any, patch: Any, result: Any) -> None:
    assert merge_patch(original, patch) == result


def test_merge_patch_leaves_its_inputs_unchanged() -> None:
    original, patch = {"a": {"b": [1]}}, {"a": {"c": [2]}}
    merged = merge_patch(original, patch)
    merged["a"]["b"].append(3)
    merged["a"]["c"].append(3)
    assert original == {"a": {"b": [1]}} and patch == {"a": {"c": [2]}}


def test_an_overlay_null_deletes_a_chart_default() -> None:
    """Files apply in order over the chart defaults: merging our files first and the defaults under them
    would bring back a default the overlay deleted."""
    defaults = {"params": {"sslmode": "prefer", "connect_timeout": 10}}
    files = [{"params": {"sslmode": "require"}}, {"params": {"sslmode": None}}]
    assert helm_values(defaults, files) == {"params": {"connect_timeout": 10}}
