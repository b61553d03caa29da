"""A workload's Kubernetes labels as the exporter keeps them: printable, as one canonical JSON object."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import msgspec

from castai_focus_dagster.castai.wire import Label

# Kubernetes label keys and values never contain them; Tags readers would meet invisible characters.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable_labels(labels: Sequence[Label]) -> tuple[list[Label], int]:
    """The labels without control characters in key or value, and how many were left out."""
    kept = [
        label
        for label in labels
        if not _CONTROL_CHARACTERS.search(label.name) and not _CONTROL_CHARACTERS.search(label.value)
    ]
    return kept, len(labels) - len(kept)


def unambiguous_labels(labels: Sequence[Label]) -> tuple[list[Label], int]:
    """The labels without a name listed with two different values (which one holds cannot be told),
    and how many such names were left out; an identical repeat is one label."""
    values: dict[str, set[str]] = {}
    for label in labels:
        values.setdefault(label.name, set()).add(label.value)
    conflicting = {name for name, seen in values.items() if len(seen) > 1}
    if not conflicting:
        return list(labels), 0
    return [label for label in labels if label.name not in conflicting], len(conflicting)


def exported_labels(labels: Sequence[Label]) -> tuple[str | None, int, int]:
    """(labels_json, labels left out for control characters, names left out for conflicting values):
    the one rule the assembler and the repeat comparison both apply."""
    printable, control = printable_labels(labels)
    kept, conflicting = unambiguous_labels(printable)
    return labels_json(kept), control, conflicting


def labels_json(labels: Sequence[Label]) -> str | None:
    """Canonical JSON object of the workload's labels (names unique, see `exported_labels`)."""
    if not labels:
        return None
    return canonical_json({label.name: label.value for label in labels})


def canonical_json(values: Mapping[str, object]) -> str:
    """The one key-value JSON form of labels and every Tags-like column: sorted keys, compact, UTF-8
    unescaped; for string values the bytes of `json.dumps(sort_keys=True, ensure_ascii=False,
    separators=(",", ":"))`."""
    return _CANONICAL_ENCODER.encode(values).decode()


# msgspec (in C): one call per workload and page or day, about a quarter of the json module's time.
_CANONICAL_ENCODER = msgspec.json.Encoder(order="sorted")
