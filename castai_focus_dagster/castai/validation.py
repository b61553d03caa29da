"""Checks on decoded buckets that keep a wrong number out: the requested window and bucket grid,
finite non-negative and plausible metrics, no repeated bucket, tier costs equal to their parts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from castai_focus_dagster.castai.columns import MetricColumns
from castai_focus_dagster.castai.models import METRIC_COLUMNS
from castai_focus_dagster.castai.units import (
    HALF_MICRO,
    MICROS_PER_SECOND,
    SUMMARY_RATES,
    TIER_PARTS,
    TIER_SUM_TOLERANCE,
    to_microseconds,
)

# Plausibility bounds of one workload bucket. Nothing real comes near them (a million dollars an hour
# for one workload, a billion CPUs, GiB or pod-minutes), and below them a day of float64 sums still
# carries micro-dollar precision. Beyond them the value is a unit or encoding error, not a cost.
MAX_HOURLY_COST = 1e6
MAX_QUANTITY = 1e9


@dataclass(frozen=True)
class BucketWindow:
    """The requested window: bucket timestamps must lie in (start, end] on start + k·step."""

    start: datetime
    end: datetime
    step_seconds: int

    def __post_init__(self) -> None:
        for name, moment in (("start", self.start), ("end", self.end)):
            if moment.tzinfo is None or moment.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware, got {moment!r}")
        if self.step_seconds <= 0:
            raise ValueError(f"step_seconds must be positive, got {self.step_seconds}")
        if self.end <= self.start:
            raise ValueError(f"end {self.end.isoformat()} must be after start {self.start.isoformat()}")

    def outside(self, micros: np.ndarray) -> np.ndarray:
        """Timestamps outside (start, end]."""
        return (micros <= to_microseconds(self.start)) | (micros > to_microseconds(self.end))

    def grid_seconds(self, micros: np.ndarray, grid: int = 0) -> int:
        """The bucket grid the timestamps lie on: gcd of their offsets from `start` (and of `grid`, the
        result for earlier pages), in seconds; 0 when there are none. One numpy reduction."""
        relative = micros - to_microseconds(self.start)
        step_us = self.step_seconds * MICROS_PER_SECOND
        buckets, off_grid = np.divmod(relative, step_us)
        if relative.size and relative.min() > 0 and not off_grid.any():
            # The usual case, in O(n): the gcd of the distinct bucket numbers (at most the window's).
            distinct = np.flatnonzero(np.bincount(buckets))
            return int(np.gcd(int(np.gcd.reduce(distinct)) * self.step_seconds, grid))
        if np.any(relative % MICROS_PER_SECOND):
            return 1  # sub-second offsets: a 1 s grid, never the requested step
        return int(np.gcd.reduce(np.append(relative // MICROS_PER_SECOND, grid).astype(np.int64)))

    def step_problem(self, grid: int) -> str | None:
        """Why buckets on a `grid`-second grid do not answer this request (None: they do)."""
        if grid in (0, self.step_seconds):
            return None
        return f"answered {grid}s buckets, requested stepSeconds={self.step_seconds} (wrong bucket size)"


def first_bad_metric(columns: MetricColumns) -> tuple[int, str, float] | None:
    """(row, field, value) of the first value that is not a finite number >= 0, in field order."""
    values = columns.values
    bad = ~(np.isfinite(values) & (values >= 0))
    if not bad.any():
        return None
    field, row = np.unravel_index(int(np.argmax(bad)), bad.shape)
    return int(row), columns.names[field], float(values[field, row])


def _is_cost(metric: str) -> bool:
    return metric.startswith("cost") or "Cost" in metric


_METRIC_LIMITS = np.array([MAX_HOURLY_COST if _is_cost(m) else MAX_QUANTITY for m in METRIC_COLUMNS])[:, None]


def first_repeated_bucket(owner: np.ndarray, micros: np.ndarray) -> int | None:
    """The row of a bucket whose owner (workload index) already has a bucket at its timestamp."""
    order = np.lexsort((micros, owner))
    repeated = (owner[order][1:] == owner[order][:-1]) & (micros[order][1:] == micros[order][:-1])
    return int(order[1:][np.argmax(repeated)]) if repeated.any() else None


def workload_bucket_problem(
    table: MetricColumns, owner: np.ndarray, micros: np.ndarray, moment: Callable[[int], str]
) -> tuple[int, str, str] | None:
    """(row, field, problem) of the first bucket that is repeated, not a finite number >= 0, absurdly
    large or whose tier cost is not the sum of its resource costs; None when every bucket passes.

    `table` holds the METRIC_COLUMNS of the buckets, `owner` the workload index of each row and
    `micros` its timestamp in epoch microseconds; `moment(row)` names a row's timestamp in messages.
    """
    row = first_repeated_bucket(owner, micros)
    if row is not None:
        return row, "timestamp", f"bucket timestamp {moment(row)} appears twice"
    if table.names != METRIC_COLUMNS:
        raise ValueError("workload buckets are checked on METRIC_COLUMNS, in that order")
    bad = first_bad_metric(table)
    if bad:
        row, name, value = bad
        return row, name, f"{name} must be a finite number >= 0, got {value!r}"
    absurd = table.values > _METRIC_LIMITS
    if absurd.any():
        field, bucket = np.unravel_index(int(np.argmax(absurd)), absurd.shape)
        name, limit = METRIC_COLUMNS[field], float(_METRIC_LIMITS[field, 0])
        unit = "USD per hour" if _is_cost(name) else "per bucket"
        value = float(table.values[field, bucket])
        return int(bucket), name, f"{name} = {value!r} exceeds the plausible maximum {limit:g} {unit}"
    for tier, parts in TIER_PARTS.items():
        gap = np.abs(table[f"cost{tier}"] - sum(table[part] for part in parts))
        wrong = gap > TIER_SUM_TOLERANCE
        if wrong.any():
            row = int(np.argmax(wrong))
            return (
                row,
                f"cost{tier}",
                f"cost{tier} = {float(table[f'cost{tier}'][row])!r} differs from "
                f"{' + '.join(parts)} = {float(sum(table[p][row] for p in parts))!r} "
                f"at {moment(row)}",
            )
    return None


def bucketed_totals(table: MetricColumns, counts: np.ndarray, step_seconds: int) -> np.ndarray:
    """USD per workload as the exporter reads its buckets: Σ of the `SUMMARY_RATES` of its rows times
    the requested bucket hours. `counts` are the rows of each workload, which are consecutive."""
    rates = sum(table[name] for name in SUMMARY_RATES)
    totals = np.zeros(counts.size)
    filled = counts > 0
    if filled.any():
        starts = np.cumsum(counts) - counts
        totals[filled] = np.add.reduceat(rates, starts[filled])
    return totals * (step_seconds / 3600)


def summary_mismatches(
    bucketed: np.ndarray, stated: np.ndarray, counts: np.ndarray, step_seconds: int
) -> np.ndarray:
    """Where the total of a workload's buckets at the requested step is not its summary `totalCost`.

    6-decimal rounding moves each summed rate by half a micro-unit per bucket hour and the summary by
    half a micro-unit, so a gap beyond that (or NaN) means the buckets are of another size than asked:
    read at the requested size they would export a multiple or a fraction of the real cost.
    """
    hours = step_seconds / 3600
    tolerance = HALF_MICRO * (1 + len(SUMMARY_RATES) * counts * hours) + 1e-9 * np.abs(stated)
    return ~(np.abs(bucketed - stated) <= tolerance)


def summary_problem(bucketed: float, stated: float, step_seconds: int) -> str:
    """The refusal's text: both totals and their ratio, which is the bucket size misread."""
    ratio = f" ({stated / bucketed:.4g} times the buckets' total)" if bucketed else ""
    return (
        f"summary.totalCost {stated!r} USD differs from its buckets read as stepSeconds={step_seconds} "
        f"buckets, {bucketed:.6f} USD{ratio}: the buckets are not of the requested size "
        "(wrong bucket size), or the summary is not their total; refusing both"
    )
