"""Tags text: the encoder is msgspec's, and its bytes must stay those of the json module's canonical
form (sorted keys, compact, UTF-8 unescaped) that published days and label texts were written in."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from castai_focus_dagster.castai.labels import labels_json
from castai_focus_dagster.castai.wire import Label
from castai_focus_dagster.focus.tags import parse_labels, tags_json

_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=16)


@given(st.dictionaries(_TEXT, _TEXT, min_size=1, max_size=8))
def test_tags_json_writes_the_json_modules_canonical_bytes(tags: dict[str, str]) -> None:
    expected = json.dumps(tags, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert tags_json(tags) == expected


@given(st.dictionaries(_TEXT, _TEXT, min_size=1, max_size=8))
def test_label_texts_read_back_unchanged(labels: dict[str, str]) -> None:
    text = labels_json([Label(k, v) for k, v in labels.items()])
    assert parse_labels(text, "c-1") == labels
    assert tags_json(parse_labels(text, "c-1")) == text


def test_empty_tags_are_null() -> None:
    assert tags_json({}) is None and parse_labels(None, "c-1") == {} and parse_labels("", "c-1") == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [("{", "not valid JSON"), ("[1]", "JSON object of strings"), ('{"a": 1}', "JSON object of strings")],
)
def test_unreadable_label_texts_name_the_cluster(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=f"cluster c-1: workload labels .*{problem}"):
        parse_labels(text, "c-1")
