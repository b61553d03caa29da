"""Tags and AllocatedTags: cluster tags and workload labels as FOCUS key-value JSON.

Label sets repeat across every bucket and resource of a workload, so each distinct (cluster, labels)
pair is parsed and serialised once and the text gathered to the rows.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
import numpy as np
import pyarrow as pa

from castai_focus_dagster.castai.labels import canonical_json
from castai_focus_dagster.castai.models import Cluster
from castai_focus_dagster.focus.clusters import ClusterInfo
from castai_focus_dagster.focus.source import WorkloadSource


def workload_tags(
    source: WorkloadSource, clusters: ClusterInfo, allowlist: tuple[str, ...], row: np.ndarray
) -> pa.Array:
    """Tags of the output rows (`row`: their source rows), serialized once per distinct (cluster, labels)."""
    label_texts, label_entry = source.label_entries()
    combo = source.cluster_entry.astype(np.int64) * (len(label_texts) + 1) + (label_entry + 1)
    distinct, inverse = np.unique(combo, return_inverse=True)
    values: list[str | None] = []
    of_cluster: dict[int, dict[str, str]] = {}  # each cluster's filtered tags, once
    for key in distinct.tolist():
        entry, label_index = divmod(key, len(label_texts) + 1)
        cluster = clusters.clusters[entry]
        if entry not in of_cluster:
            of_cluster[entry] = cluster_tags(cluster, allowlist)
        text = label_texts[label_index - 1] if label_index > 0 else None
        # As the original exporter: keys as they are, a workload label wins over a cluster tag.
        values.append(tags_json(of_cluster[entry] | allowed_labels(text, cluster.id, allowlist)))
    return pa.array(values, pa.string()).take(pa.array(inverse.reshape(-1)[row].astype(np.int64)))


def cluster_tags(cluster: Cluster, allowlist: tuple[str, ...]) -> dict[str, str]:
    """The cluster's Cast AI tags with their keys as they are (user-defined, like labels), filtered."""
    allowed = set(allowlist)
    return {k: v for k, v in cluster.tags.items() if not allowed or k in allowed}


def allowed_labels(text: str | None, cluster_id: str, allowlist: tuple[str, ...]) -> dict[str, str]:
    """A workload's labels (canonical JSON text) with keys as-is, filtered by the allowlist."""
    allowed = set(allowlist)
    return {k: v for k, v in parse_labels(text, cluster_id).items() if not allowed or k in allowed}


def tags_json(tags: Mapping[str, str]) -> str | None:
    """Key-value JSON as every Tags-like column carries it (`canonical_json`); null when empty."""
    return canonical_json(tags) if tags else None


_LABELS_DECODER = msgspec.json.Decoder(dict[str, str])


def parse_labels(text: str | None, cluster_id: str) -> dict[str, str]:
    """A workload's labels column (a JSON object of strings, `castai.labels.labels_json`) as a dict."""
    if not text:
        return {}
    try:
        return _LABELS_DECODER.decode(text)
    except msgspec.ValidationError as exc:
        raise ValueError(
            f"cluster {cluster_id}: workload labels must be a JSON object of strings ({exc})"
        ) from exc
    except msgspec.DecodeError as exc:
        raise ValueError(f"cluster {cluster_id}: workload labels are not valid JSON ({exc})") from exc


def allocated_tags(
    source_row: np.ndarray,
    cluster: np.ndarray,
    source: WorkloadSource,
    info: ClusterInfo,
    allowlist: tuple[str, ...],
) -> pa.Array:
    """Split mode: workload labels minus keys already in Tags (`source_row` -1: the unallocated row)."""
    label_texts, label_entry = source.label_entries()
    allocated = source_row >= 0
    combo = np.where(
        allocated,
        cluster * (len(label_texts) + 1) + label_entry[np.where(allocated, source_row, 0)] + 1,
        -1,
    )
    distinct, inverse = np.unique(combo, return_inverse=True)
    values: list[str | None] = []
    for key in distinct.tolist():
        if key < 0:
            values.append(None)
            continue
        owner = info.clusters[key // (len(label_texts) + 1)]
        label_index = key % (len(label_texts) + 1) - 1
        labels = allowed_labels(label_texts[label_index] if label_index >= 0 else None, owner.id, allowlist)
        tag_keys = cluster_tags(owner, allowlist).keys()
        values.append(tags_json({k: v for k, v in labels.items() if k not in tag_keys}))
    return pa.array(values, pa.string()).take(pa.array(inverse.reshape(-1).astype(np.int64)))
