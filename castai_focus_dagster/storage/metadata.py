"""FOCUS 1.3 metadata documents: DataGenerator, Schema, DatasetInstance and Recency.

FOCUS wants metadata retrievable without reading the data artifacts and kept outside them. Identifiers are
deterministic UUIDv5s, so re-publishing the same dataset never churns SchemaId or DatasetInstanceId; a new
SchemaId appears exactly when the columns, their types or the generator version change, which is when
FOCUS requires a new Schema object.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeAlias

import pyarrow as pa

from castai_focus_dagster.storage.keys import FOCUS_VERSION

FOCUS_DATASET_ID = "CostAndUsage"
DATA_GENERATOR = "castai-focus-dagster"
# Namespace of every UUIDv5 this exporter derives (fixed forever: changing it would churn all ids).
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:castai-focus-dagster:focus-metadata")

# FOCUS columns whose values are serialized JSON (Tags and the 1.3 JSON-object columns).
JSON_COLUMNS = frozenset(
    {"Tags", "AllocatedTags", "AllocatedMethodDetails", "SkuPriceDetails", "ContractApplied"}
)
# Deprecated in FOCUS 1.3 but still mandatory; the Schema SHOULD flag them.
DEPRECATED_COLUMNS = frozenset({"ProviderName", "PublisherName"})
# Metadata DataType of each FOCUS type word: the column tables' words ("Date/Time") and the metadata's own.
FOCUS_DATA_TYPES = {
    "String": "STRING", "Decimal": "DECIMAL", "Date/Time": "DATETIME", "JSON": "JSON",
    "STRING": "STRING", "DECIMAL": "DECIMAL", "DATETIME": "DATETIME",
}  # fmt: skip

# Significant decimal digits each binary type carries exactly, by bit width (floats: DBL_DIG and kin).
_FLOAT_PRECISION = {16: 3, 32: 6, 64: 15}
_INT_PRECISION = {8: 3, 16: 5, 32: 10, 64: 19}
_UINT_PRECISION = {8: 3, 16: 5, 32: 10, 64: 20}
_STRING_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
# A column's type: the Arrow type it is written with, or a FOCUS type word (no precision then).
ColumnType: TypeAlias = pa.DataType | str


@dataclass(frozen=True)
class TimeSector:
    """One Recency time sector: [start, end) of ChargePeriod time, whether it is final, when it changed."""

    start: datetime
    end: datetime
    complete: bool
    last_updated: datetime


def focus_datetime(value: datetime) -> str:
    """FOCUS DateTimeFormat: UTC, `YYYY-MM-DDTHH:mm:ssZ`."""
    if value.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone; FOCUS timestamps must be UTC")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_focus_datetime(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def day_sector(day: date, *, complete: bool, last_updated: datetime) -> TimeSector:
    """The time sector of one daily partition: [day 00:00Z, next day 00:00Z)."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    return TimeSector(start, start + timedelta(days=1), complete, last_updated)


def canonical_json(document: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no NaN) so identical documents are identical objects."""
    return (
        json.dumps(document, sort_keys=True, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    ).encode()


def column_definitions(
    columns: Sequence[tuple[str, ColumnType]], provider_tag_prefixes: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """ColumnDefinition entries for (column name, Arrow type or FOCUS type word) pairs, in file order."""
    definitions = []
    for name, column_type in columns:
        definition: dict[str, Any] = {"ColumnName": name, **_type_properties(name, column_type)}
        if name == "Tags" and provider_tag_prefixes:
            definition["ProviderTagPrefixes"] = sorted(set(provider_tag_prefixes))
        if name in DEPRECATED_COLUMNS:
            definition["Deprecated"] = True
        definitions.append(definition)
    return definitions


def _type_properties(name: str, column_type: ColumnType) -> dict[str, Any]:
    if isinstance(column_type, str):
        data_type = FOCUS_DATA_TYPES.get(column_type.strip())  # case-sensitive: "string" is no FOCUS word
        if data_type is None:
            raise ValueError(f"column {name!r}: {column_type!r} is not a FOCUS data type word")
        return {
            "DataType": data_type,
            **({"StringEncoding": "UTF-8"} if data_type in ("STRING", "JSON") else {}),
        }
    type_ = column_type.value_type if pa.types.is_dictionary(column_type) else column_type
    if any(is_string(type_) for is_string in _STRING_TYPES):
        return {"DataType": "JSON" if name in JSON_COLUMNS else "STRING", "StringEncoding": "UTF-8"}
    if pa.types.is_timestamp(type_) or pa.types.is_date(type_):
        return {"DataType": "DATETIME"}
    if pa.types.is_floating(type_):  # binary floating point has no fixed scale
        return {"DataType": "DECIMAL", "NumericPrecision": _FLOAT_PRECISION[type_.bit_width]}
    if pa.types.is_integer(type_):
        digits = (_INT_PRECISION if pa.types.is_signed_integer(type_) else _UINT_PRECISION)[type_.bit_width]
        return {"DataType": "DECIMAL", "NumericPrecision": digits, "NumberScale": 0}
    if pa.types.is_decimal(type_):
        return {"DataType": "DECIMAL", "NumericPrecision": type_.precision, "NumberScale": type_.scale}
    raise ValueError(
        f"column {name!r}: type {column_type} has no FOCUS data type (STRING/DECIMAL/DATETIME/JSON)"
    )


def dataset_instance_id_for(organization_id: str) -> str:
    """Stable DatasetInstanceId of one organisation's Cost and Usage dataset."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"dataset-instance|{organization_id}|{FOCUS_DATASET_ID}"))


def schema_id_for(
    organization_id: str, definitions: Sequence[dict[str, Any]], data_generator_version: str
) -> str:
    """SchemaId from the organisation, FOCUS version and a fingerprint of the column definitions."""
    fingerprint = hashlib.sha256(canonical_json([list(definitions), data_generator_version])).hexdigest()
    return str(uuid.uuid5(_ID_NAMESPACE, f"schema|{organization_id}|{FOCUS_VERSION}|{fingerprint}"))


def data_generator_document(name: str = DATA_GENERATOR) -> dict[str, str]:
    return {"DataGenerator": name}


def schema_document(
    columns: Sequence[tuple[str, ColumnType]],
    *,
    schema_id: str,
    dataset_instance_id: str,
    creation_date: datetime,
    data_generator_version: str,
    provider_tag_prefixes: Sequence[str] = (),
) -> dict[str, Any]:
    """One Schema object (the Schema metadata is a collection of these)."""
    return {
        "SchemaId": schema_id,
        "FocusVersion": FOCUS_VERSION,
        "CreationDate": focus_datetime(creation_date),
        "DataGeneratorVersion": data_generator_version,
        "DatasetInstanceId": dataset_instance_id,
        "ColumnDefinition": column_definitions(columns, provider_tag_prefixes),
    }


def dataset_instance_document(dataset_instance_id: str, name: str) -> list[dict[str, str]]:
    """The DatasetInstance collection: this exporter publishes one Cost and Usage instance."""
    return [
        {
            "DatasetInstanceId": dataset_instance_id,
            "DatasetInstanceName": name,
            "FocusDatasetId": FOCUS_DATASET_ID,
        }
    ]


def recency_document(
    dataset_instance_id: str, sectors: Sequence[TimeSector], last_updated: datetime
) -> dict[str, Any]:
    """One Recency object; sectors are sorted by start and must not overlap."""
    if not sectors:
        raise ValueError("Recency of a time-series dataset needs at least one time sector")
    ordered = sorted(sectors, key=lambda s: s.start)
    for before, after in itertools.pairwise(ordered):
        if after.start < before.end:
            raise ValueError(
                f"time sectors overlap: {focus_datetime(before.start)} and {focus_datetime(after.start)}"
            )
    return {
        "DatasetInstanceId": dataset_instance_id,
        "RecencyLastUpdated": focus_datetime(last_updated),
        "DatasetInstanceLastUpdated": focus_datetime(max(s.last_updated for s in ordered)),
        "TimeSectors": [
            {
                "TimeSectorStart": focus_datetime(s.start),
                "TimeSectorEnd": focus_datetime(s.end),
                "TimeSectorComplete": s.complete,
                "TimeSectorLastUpdated": focus_datetime(s.last_updated),
            }
            for s in ordered
        ],
    }


def sectors_from_recency(document: dict[str, Any]) -> list[TimeSector]:
    """Parse the TimeSectors of one Recency object (to merge a new sector into a published document)."""
    return [
        TimeSector(
            start=parse_focus_datetime(s["TimeSectorStart"]),
            end=parse_focus_datetime(s["TimeSectorEnd"]),
            complete=bool(s["TimeSectorComplete"]),
            last_updated=parse_focus_datetime(s["TimeSectorLastUpdated"]),
        )
        for s in document.get("TimeSectors", [])
    ]
