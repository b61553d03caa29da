"""A workload's Kubernetes labels as the exporter keeps them: printable, as one canonical JSON object."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

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


def labels_json(labels: Sequence[Label]) -> str | None:
    """Canonical JSON object of the workload's labels (sorted keys; a repeated key keeps its last value)."""
    if not labels:
        return None
    return _LABELS_ENCODER.encode({label.name: label.value for label in labels})


# Built once (json.dumps with options builds an encoder per call): one call per workload and page.
_LABELS_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
