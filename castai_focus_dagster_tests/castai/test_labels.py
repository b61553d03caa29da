"""Which of a workload's labels reach Tags: printable ones, each name with one value."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from castai_focus_dagster.castai.labels import exported_labels, unambiguous_labels
from castai_focus_dagster.castai.wire import Label


def test_a_name_with_two_values_is_left_out_and_counted() -> None:
    """Regression: `version` v1 then v2 was exported as v2 alone, silently."""
    labels = [Label("version", "v1"), Label("app", "api"), Label("version", "v2")]
    text, control, conflicting = exported_labels(labels)
    assert json.loads(text or "{}") == {"app": "api"}
    assert (control, conflicting) == (0, 1)


def test_an_identical_repeat_is_one_label() -> None:
    assert exported_labels([Label("app", "api"), Label("app", "api")]) == ('{"app":"api"}', 0, 0)


def test_only_conflicts_left_after_control_characters_count() -> None:
    """A value with a control character is left out first; what remains is not a conflict."""
    text, control, conflicting = exported_labels([Label("team", "pay\x00"), Label("team", "payments")])
    assert (text, control, conflicting) == ('{"team":"payments"}', 1, 0)


_names = st.sampled_from(["app", "team", "version"])
_values = st.sampled_from(["a", "b", ""])


@given(st.lists(st.builds(Label, _names, _values), max_size=8))
def test_kept_labels_are_exactly_the_names_with_one_value(labels: list[Label]) -> None:
    kept, conflicting = unambiguous_labels(labels)
    values: dict[str, set[str]] = {}
    for label in labels:
        values.setdefault(label.name, set()).add(label.value)
    assert {label.name for label in kept} == {name for name, seen in values.items() if len(seen) == 1}
    assert conflicting == sum(len(seen) > 1 for seen in values.values())
    assert all(values[label.name] == {label.value} for label in kept)
