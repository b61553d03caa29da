"""Object keys of the published FOCUS dataset: one place, so every writer and reader agrees.

Data objects live under `{prefix}version=focus-1.3/year=YYYY/month=MM/day=DD/` (Hive partitions that
Athena, DuckDB and Spark discover). Everything that is not FOCUS data (metadata, manifests, staging
copies, Dagster intermediates) lives outside that tree so a `version=focus-1.3/` crawler never reads it.
Keys are deterministic: re-publishing a partition overwrites its own objects, never adds a second copy.
"""

from __future__ import annotations

from datetime import date
from typing import get_args

from castai_focus_dagster.focus.schema import FOCUS_VERSION
from castai_focus_dagster.settings import OutputFormat

VERSION_SEGMENT = f"version=focus-{FOCUS_VERSION}"
# The published formats are the S3_FORMAT choices; each is also its objects' file suffix.
DataFormat = OutputFormat
DATA_FORMATS: tuple[DataFormat, ...] = get_args(OutputFormat)


def _day_path(day: date) -> str:
    return f"year={day:%Y}/month={day:%m}/day={day:%d}"


def partition_dir(prefix: str, day: date) -> str:
    """Hive folder of one daily partition, ending in "/"."""
    return f"{prefix}{VERSION_SEGMENT}/{_day_path(day)}/"


def partition_object_prefix(prefix: str, organization_id: str, day: date) -> str:
    """Key prefix shared by every data object of one organisation's partition, whatever its format or hour.

    Used to find stale objects (a previous format, hour files) without touching another organisation's
    objects that share the same `S3_PREFIX`.
    """
    _check_segment("organization_id", organization_id)
    return f"{partition_dir(prefix, day)}castai-focus-{organization_id}-{day:%Y-%m-%d}-"


def data_key(prefix: str, organization_id: str, day: date, fmt: str, hour: int = 0) -> str:
    """`{prefix}version=focus-1.3/year=YYYY/month=MM/day=DD/castai-focus-{orgId}-{YYYY-MM-DD}-{HH}.{fmt}`."""
    if fmt not in DATA_FORMATS:
        raise ValueError(f"data format must be one of {DATA_FORMATS}, got {fmt!r}")
    if not 0 <= hour <= 23:
        raise ValueError(f"hour must be 0..23, got {hour}")
    return f"{partition_object_prefix(prefix, organization_id, day)}{hour:02d}.{fmt}"


def ternary_key(
    ternary_prefix: str, prefix: str, organization_id: str, day: date, fmt: str, hour: int = 0
) -> str:
    """The Ternary copy: the same key under `TERNARY_PATH_PREFIX`."""
    return ternary_prefix + data_key(prefix, organization_id, day, fmt, hour)


def metadata_dir(prefix: str) -> str:
    return f"{prefix}metadata/focus-{FOCUS_VERSION}/"


def organization_marker_key(prefix: str) -> str:
    """Records the one organisation whose export the prefix holds (written at the first publication)."""
    return f"{prefix}metadata/organization.json"


def manifest_dir(prefix: str) -> str:
    """Folder holding every partition manifest (listed to reconcile Recency)."""
    return f"{metadata_dir(prefix)}manifests/"


def manifest_key(prefix: str, day: date) -> str:
    """Per-partition manifest, outside the data tree: `{prefix}metadata/focus-1.3/manifests/year=.../`."""
    return f"{manifest_dir(prefix)}{_day_path(day)}/manifest.json"


def figures_key(prefix: str, day: date) -> str:
    """The day's published figures, which the replacement guard reads when the manifest is missing.

    Outside the manifests folder and never retired: a manifest is deleted before a changed
    publication, but the guard must still know what the day held.
    """
    return f"{metadata_dir(prefix)}figures/{_day_path(day)}/figures.json"


def manifest_day(key: str) -> date | None:
    """Inverse of `manifest_key` for the day part; None for keys that are not manifests."""
    parts = key.rsplit("/", 4)
    if len(parts) != 5 or parts[4] != "manifest.json":
        return None
    year, month, day = parts[1], parts[2], parts[3]
    if not (year.startswith("year=") and month.startswith("month=") and day.startswith("day=")):
        return None
    try:
        return date(int(year[5:]), int(month[6:]), int(day[4:]))
    except ValueError:
        return None


def metadata_keys(prefix: str) -> dict[str, str]:
    """FOCUS metadata documents (DataGenerator, Schema, DatasetInstance, Recency collections)."""
    base = metadata_dir(prefix)
    return {
        "data_generator": f"{base}data-generator.json",
        "schema": f"{base}schema.json",
        "dataset_instance": f"{base}dataset-instance.json",
        "recency": f"{base}recency.json",
    }


def lease_key(prefix: str, day: date) -> str:
    """The day's publication lease (one run publishes a day at a time), outside the data tree."""
    return f"{prefix}_locks/day={day:%Y-%m-%d}.json"


def staging_dir(prefix: str) -> str:
    return f"{prefix}_staging/"


def staging_key(prefix: str, final_key: str, run_id: str) -> str:
    """Where a run uploads and audits an object before publishing: `{prefix}_staging/{run_id}/{final_key}`."""
    _check_segment("run_id", run_id)
    return f"{staging_dir(prefix)}{run_id}/{final_key}"


def internal_key(prefix: str, asset_name: str, day: date, ext: str) -> str:
    """Dagster intermediates (not consumer data): `{prefix}_internal/{asset}/year=.../{asset}.{ext}`."""
    _check_segment("asset_name", asset_name)
    _check_segment("ext", ext)
    return f"{prefix}_internal/{asset_name}/{_day_path(day)}/{asset_name}.{ext}"


def _check_segment(what: str, value: str) -> None:
    if not value or "/" in value or value in (".", ".."):
        raise ValueError(f"{what} must be a non-empty key segment without '/', got {value!r}")
