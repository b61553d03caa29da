"""Bucket checks in isolation: the requested grid, repeated buckets, bad and absurd values, tier sums.

Expected rows and fields are set up by hand in a numpy matrix, never read back from the checks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from castai_focus_dagster.castai.columns import MetricColumns
from castai_focus_dagster.castai.models import METRIC_COLUMNS
from castai_focus_dagster.castai.validation import MAX_HOURLY_COST, BucketWindow, workload_bucket_problem

START = datetime(2026, 9, 1, tzinfo=UTC)
WINDOW = BucketWindow(START, START + timedelta(days=1), 3600)
START_US = int(START.timestamp()) * 1_000_000
HOUR_US = 3600 * 1_000_000


def _buckets(n: int) -> tuple[MetricColumns, np.ndarray, np.ndarray]:
    """n consistent buckets of one workload, an hour apart: cost = cpu + ram cost in every tier."""
    table = MetricColumns(METRIC_COLUMNS, np.zeros((len(METRIC_COLUMNS), n)))
    for tier, cpu, ram in (("OnDemand", 0.25, 0.125), ("Spot", 0.1, 0.05), ("SpotFallback", 0.0, 0.0)):
        table[f"cpuCost{tier}"][:], table[f"ramCost{tier}"][:], table[f"cost{tier}"][:] = cpu, ram, cpu + ram
    owner = np.zeros(n, dtype=np.int64)
    micros = START_US + HOUR_US * np.arange(1, n + 1, dtype=np.int64)
    return table, owner, micros


def _problem(table: MetricColumns, owner: np.ndarray, micros: np.ndarray) -> tuple[int, str, str] | None:
    return workload_bucket_problem(table, owner, micros, lambda row: f"row{row}")


def test_consistent_buckets_pass() -> None:
    assert _problem(*_buckets(5)) is None


def test_a_bucket_listed_twice_for_one_workload_is_named() -> None:
    table, owner, micros = _buckets(4)
    micros[3] = micros[1]
    assert _problem(table, owner, micros) == (3, "timestamp", "bucket timestamp row3 appears twice")
    owner[3] = 1  # the same timestamp for another workload is fine
    assert _problem(table, owner, micros) is None


@pytest.mark.parametrize("value", [-0.01, float("nan"), float("inf")])
def test_a_negative_or_non_finite_metric_is_named(value: float) -> None:
    table, owner, micros = _buckets(3)
    table["podCountSpot"][2] = value
    row, field, problem = _problem(table, owner, micros) or (None, None, "")
    assert (row, field) == (2, "podCountSpot") and "finite number >= 0" in problem


def test_an_absurd_cost_is_refused() -> None:
    table, owner, micros = _buckets(3)
    table["storageCost"][1] = MAX_HOURLY_COST * 2
    row, field, problem = _problem(table, owner, micros) or (None, None, "")
    assert (row, field) == (1, "storageCost") and "USD per hour" in problem


def test_a_tier_cost_off_its_parts_by_more_than_rounding_is_refused() -> None:
    table, owner, micros = _buckets(3)
    table["costSpot"][0] += 4e-6  # within four 6-decimal roundings: kept
    assert _problem(table, owner, micros) is None
    table["costSpot"][2] += 6e-6
    row, field, problem = _problem(table, owner, micros) or (None, None, "")
    assert (row, field) == (2, "costSpot") and problem.endswith("at row2")
    assert "cpuCostSpot + ramCostSpot + gpuCostSpot + tpuCostSpot" in problem


def test_the_grid_is_the_gcd_of_the_bucket_offsets() -> None:
    hours = lambda *h: START_US + HOUR_US * np.array(h, dtype=np.int64)  # noqa: E731
    assert WINDOW.grid_seconds(hours(1, 2, 5)) == 3600
    assert WINDOW.grid_seconds(hours(2, 4, 8)) == 7200
    assert WINDOW.grid_seconds(hours(4), grid=7200) == 7200  # carried over from earlier pages
    assert WINDOW.grid_seconds(np.array([START_US + 1_500_000], dtype=np.int64)) == 1  # sub-second
    assert WINDOW.step_problem(3600) is None and WINDOW.step_problem(0) is None
    assert WINDOW.step_problem(86400) == (
        "answered 86400s buckets, requested stepSeconds=3600 (wrong bucket size)"
    )


def test_the_window_is_open_at_the_start_and_closed_at_the_end() -> None:
    micros = np.array([START_US, START_US + 1, START_US + 24 * HOUR_US, START_US + 24 * HOUR_US + 1])
    assert WINDOW.outside(micros).tolist() == [True, False, False, True]


def test_a_window_must_be_aware_ordered_and_stepped() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        BucketWindow(datetime(2026, 9, 1), START + timedelta(days=1), 3600)
    with pytest.raises(ValueError, match="must be after"):
        BucketWindow(START, START, 3600)
    with pytest.raises(ValueError, match="positive"):
        BucketWindow(START, START + timedelta(days=1), 0)
