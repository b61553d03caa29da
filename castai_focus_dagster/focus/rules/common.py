"""What every FOCUS rule shares: its result, its shape (a per-row failure mask and a sample) and helpers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.focus.schema import FOCUS_COLUMNS


@dataclass(frozen=True)
class RuleResult:
    rule: str
    passed: bool
    failing_rows: int
    message: str


# A check returns the per-row failure mask and a short sample of what failed.
Check = Callable[[pa.Table], tuple[np.ndarray, str]]


@dataclass(frozen=True)
class Rule:
    name: str
    requirement: str
    columns: tuple[str, ...]
    check: Check


def outcome(name: str, failing: np.ndarray, sample: str, requirement: str) -> RuleResult:
    """A rule's result: passed when no row fails; a failure names the count, the requirement and a sample."""
    count = int(np.count_nonzero(failing))
    message = requirement if count == 0 else f"{count} row(s) violate: {requirement}; e.g. {sample}"
    return RuleResult(name, count == 0, count, message)


def combine_results(batches: Sequence[Sequence[RuleResult]]) -> list[RuleResult]:
    """The results of a table checked in batches: a rule passes if it passed on every batch.

    Failing rows add up; a rule's message is that of its first failing batch (else its first message).
    """
    by_rule: dict[str, list[RuleResult]] = {}
    for results in batches:
        for result in results:
            by_rule.setdefault(result.rule, []).append(result)
    combined = []
    for rule, parts in by_rule.items():
        failed = [p for p in parts if not p.passed]
        combined.append(
            RuleResult(
                rule=rule,
                passed=not failed,
                failing_rows=sum(p.failing_rows for p in parts),
                message=(failed or parts)[0].message,
            )
        )
    return combined


def valid(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name)
    if column.null_count == 0:
        return np.ones(len(column), dtype=bool)
    return pc.is_valid(column).to_numpy(zero_copy_only=False)


def floats(table: pa.Table, name: str) -> np.ndarray:
    """Float column as numpy with NaN for nulls."""
    return table.column(name).to_numpy()


def equals(table: pa.Table, name: str, value: str) -> np.ndarray:
    return pc.fill_null(pc.equal(table.column(name), value), False).to_numpy(zero_copy_only=False)


def sample(table: pa.Table, failing: np.ndarray, columns: tuple[str, ...]) -> str:
    if not failing.any():
        return ""
    i = int(np.argmax(failing))
    values = ", ".join(f"{c}={table.column(c)[i].as_py()!r}" for c in columns)
    return f"row {i}: {values}"


def columns_of(focus_type: str) -> tuple[str, ...]:
    return tuple(c.name for c in FOCUS_COLUMNS if c.focus_type == focus_type)


def value_codes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Integer codes equal exactly when the values are (null: -1), for any column type."""
    if pa.types.is_floating(column.type):
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        return np.where(np.isnan(values), np.int64(-1), (values + 0.0).view(np.int64))
    if pa.types.is_timestamp(column.type) or pa.types.is_integer(column.type):
        return pc.fill_null(column.cast(pa.int64()), -1).to_numpy(zero_copy_only=False).astype(np.int64)
    encoded = pc.dictionary_encode(column)
    indices = encoded.combine_chunks().indices if isinstance(encoded, pa.ChunkedArray) else encoded.indices
    return pc.fill_null(indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def dense_codes(codes: np.ndarray) -> np.ndarray:
    """0..k-1 codes in value order (small enough to combine two into one int64)."""
    return np.unique(codes, return_inverse=True)[1].reshape(-1).astype(np.int64)


def pair_codes(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Dense codes of (first, second) pairs, both dense codes."""
    return dense_codes(first * (int(second.max(initial=0)) + 1) + second)
