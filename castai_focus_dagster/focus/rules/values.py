"""Rules on values: allowed values, the service taxonomy, currency codes, key-value JSON, blank strings."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.castai.labels import canonical_json
from castai_focus_dagster.focus.rules.common import Rule, sample, valid
from castai_focus_dagster.focus.rules.taxonomy import ALLOWED_SERVICE_PAIRS
from castai_focus_dagster.focus.schema import FOCUS_COLUMNS

KEY_VALUE_COLUMNS = ("Tags", "AllocatedTags", "SkuPriceDetails")


def allowed_values(column: str, allowed: frozenset[str], nullable: bool) -> Rule:
    def check(table: pa.Table) -> tuple[np.ndarray, str]:
        ok = pc.is_in(table.column(column), value_set=pa.array(sorted(allowed), pa.string()))
        ok = pc.fill_null(ok, nullable).to_numpy(zero_copy_only=False)
        return ~ok, sample(table, ~ok, (column,))

    values = ", ".join(sorted(allowed))
    return Rule(
        f"{column}-allowed-values",
        f"{column} is one of {values}{' or null' if nullable else ''}",
        (column,),
        check,
    )


def charge_class_null(table: pa.Table) -> tuple[np.ndarray, str]:
    failing = valid(table, "ChargeClass")
    return failing, sample(table, failing, ("ChargeClass",))


def service_pair(table: pa.Table) -> tuple[np.ndarray, str]:
    pairs = pc.binary_join_element_wise(
        table.column("ServiceCategory"), table.column("ServiceSubcategory"), "\x1f"
    )
    allowed = pa.array(sorted(f"{c}\x1f{s}" for c, s in ALLOWED_SERVICE_PAIRS), pa.string())
    ok = pc.fill_null(pc.is_in(pairs, value_set=allowed), False).to_numpy(zero_copy_only=False)
    return ~ok, sample(table, ~ok, ("ServiceCategory", "ServiceSubcategory"))


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("duplicate keys")
    return value


# Built once: json.loads with a hook builds a decoder per call, which costs more than the parse.
_KEY_VALUE_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


# A canonical text (`castai.labels.canonical_json`, what Tags carry) proves itself: decoded as a flat
# object and encoded again it gives back the same text, which a repeated key or a nested value cannot.
# Any other text takes the full parse below.
_FLAT_OBJECT = msgspec.json.Decoder(dict[str, str | int | float | bool | None])


def _is_canonical_flat_object(text: str) -> bool:
    try:
        return canonical_json(_FLAT_OBJECT.decode(text)) == text
    except (msgspec.DecodeError, UnicodeEncodeError):
        return False


def _key_value_problem(text: str) -> str | None:
    if _is_canonical_flat_object(text):
        return None
    try:
        value = _KEY_VALUE_DECODER.decode(text)
    except ValueError as exc:
        return f"not a JSON object with unique keys ({exc})"
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__}, not an object"
    nested = [k for k, v in value.items() if isinstance(v, (dict, list))]
    return f"nested value under {nested[0]!r}" if nested else None


def key_value_format(table: pa.Table) -> tuple[np.ndarray, str]:
    """Parsed once per distinct value: label sets repeat across every bucket and resource."""
    failing = np.zeros(table.num_rows, dtype=bool)
    samples = []
    for name in KEY_VALUE_COLUMNS:
        encoded = pc.dictionary_encode(table.column(name)).combine_chunks()
        problems = [_key_value_problem(t) if t is not None else None for t in encoded.dictionary.to_pylist()]
        bad_entries = np.array([p is not None for p in problems], dtype=bool)
        if not bad_entries.any():
            continue
        indices = encoded.indices.to_numpy(zero_copy_only=False)
        present = valid(table, name)
        failing |= present & bad_entries[np.where(present, indices, 0).astype(np.int64)]
        samples.append(f"{name}: {next(p for p in problems if p)}")
    return failing, "; ".join(samples)


def currency_codes(table: pa.Table) -> tuple[np.ndarray, str]:
    failing = np.zeros(table.num_rows, dtype=bool)
    for name in ("BillingCurrency", "PricingCurrency"):
        ok = three_capitals(table.column(name))
        if name == "PricingCurrency":  # nullable
            ok |= ~valid(table, name)
        failing |= ~ok
    return failing, sample(table, failing, ("BillingCurrency", "PricingCurrency"))


def string_buffers(chunk: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string array's offsets (len + 1, into `data`) and UTF-8 bytes, as numpy views of its buffers."""
    _validity, offsets_buffer, data_buffer = chunk.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[chunk.offset : chunk.offset + len(chunk) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer else np.zeros(0, dtype=np.uint8)
    return offsets, data


def three_capitals(values: pa.ChunkedArray) -> np.ndarray:
    """Rows holding exactly three ASCII capitals, `^[A-Z]{3}$` (null: False).

    Read from the Arrow buffers (lengths from the offsets, capitals counted by a running sum over the
    bytes) instead of running a regular expression over a day's millions of rows.
    """
    parts = []
    for chunk in values.chunks:
        if chunk.null_count == len(chunk):
            parts.append(np.zeros(len(chunk), dtype=bool))
            continue
        offsets, data = string_buffers(chunk)
        capitals = np.zeros(data.size + 1, dtype=np.int64)
        np.cumsum((data - np.uint8(ord("A"))) < 26, out=capitals[1:])  # uint8 wraps below "A"
        starts, ends = offsets[:-1], offsets[1:]
        ok = (ends - starts == 3) & (capitals[ends] - capitals[starts] == 3)
        if chunk.null_count:
            ok &= chunk.is_valid().to_numpy(zero_copy_only=False)
        parts.append(ok)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def _blank(values: pa.ChunkedArray) -> np.ndarray:
    """Rows holding an empty or whitespace-only string (null: not blank).

    Reads only the first byte of every value from the Arrow buffers; the Unicode whitespace test runs
    on the few values whose first byte could start a blank string (ASCII controls and space, DEL, and
    any non-ASCII lead byte such as U+00A0's or U+3000's), instead of scanning every byte.
    """
    parts = []
    for chunk in values.chunks:
        blank = np.zeros(len(chunk), dtype=bool)
        if chunk.null_count == len(chunk):  # all null (a null constant column): nothing to read
            parts.append(blank)
            continue
        offsets, data = string_buffers(chunk)
        data = data if data.size else np.zeros(1, dtype=np.uint8)  # only empty strings: none to read
        # uint8 arithmetic wraps: lead - 0x21 < 0x5E exactly for the printable ASCII bytes 0x21..0x7E.
        lead = np.take(data, offsets[:-1], mode="clip") - np.uint8(0x21)
        candidate = (offsets[1:] == offsets[:-1]) | (lead >= np.uint8(0x5E))
        if chunk.null_count:
            candidate &= chunk.is_valid().to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(candidate)
        if rows.size:
            suspects = chunk.take(pa.array(rows))
            blank[rows] = pc.or_(
                pc.equal(pc.binary_length(suspects), 0), pc.utf8_is_space(suspects)
            ).to_numpy(zero_copy_only=False)
        parts.append(blank)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def no_blank_strings(table: pa.Table) -> tuple[np.ndarray, str]:
    failing = np.zeros(table.num_rows, dtype=bool)
    offenders = []
    for column in FOCUS_COLUMNS:
        if column.focus_type in ("String", "JSON") and column.name in table.column_names:
            blank = _blank(table.column(column.name))
            if blank.any():
                offenders.append(column.name)
                failing |= blank
    return failing, "blank in " + ", ".join(offenders) if offenders else ""
