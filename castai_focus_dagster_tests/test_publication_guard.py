"""The replacement guard's rules, as pure functions: what it refuses, and what it must never refuse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from castai_focus_dagster.publication_guard import (
    ALLOW_GROWTH_TAG,
    ALLOW_SHRINK_TAG,
    MAX_DROP,
    MAX_GROWTH,
    allowed_kinds,
    check_replacement,
    day_figures,
    figures_from_manifest,
)

START = datetime(2026, 11, 1, tzinfo=UTC)
costs = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
clusters = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]), st.tuples(st.integers(0, 10**6), costs), max_size=4
)


def figures(per_cluster: dict[str, tuple[int, float]], hours: int = 24, step: int = 3600):  # type: ignore[no-untyped-def]
    rows = sum(r for r, _ in per_cluster.values())
    cost = sum(c for _, c in per_cluster.values())
    return day_figures(rows, cost, (START, START + timedelta(hours=hours)), step, per_cluster)


@given(clusters)
def test_republishing_the_same_day_is_never_refused(per_cluster: dict[str, tuple[int, float]]) -> None:
    assert check_replacement(figures(per_cluster), figures(per_cluster)) == []


@given(clusters, st.integers(1, 23), st.floats(min_value=1.0, max_value=MAX_GROWTH))
def test_a_partial_day_growing_in_proportion_is_never_refused(
    per_cluster: dict[str, tuple[int, float]], hours: int, growth: float
) -> None:
    """Today's day at `hours`, then complete: more buckets, cost up to MAX_GROWTH x per hour covered."""
    scale = 24 / hours
    later = {cid: (int(r * scale) + 1, c * scale * growth * 0.999) for cid, (r, c) in per_cluster.items()}
    assert check_replacement(figures(per_cluster, hours), figures(later)) == []


@given(clusters)
def test_a_first_publication_has_nothing_to_compare(per_cluster: dict[str, tuple[int, float]]) -> None:
    assert check_replacement(None, figures(per_cluster)) == []


def test_a_granularity_switch_changes_rows_but_is_not_a_shrink() -> None:
    hourly = figures({"a": (2400, 50.0)}, step=3600)
    daily = figures({"a": (100, 50.0)}, step=86400)
    assert check_replacement(hourly, daily) == []


def test_thresholds_are_the_documented_ones() -> None:
    published = figures({"a": (1000, 100.0)})
    assert check_replacement(published, figures({"a": (1000, 100.0 * (1 - MAX_DROP) + 0.01)})) == []
    (change,) = check_replacement(published, figures({"a": (1000, 100.0 * (1 - MAX_DROP) - 0.01)}))[:1]
    assert change.kind == "shrink"
    assert check_replacement(published, figures({"a": (1000, 100.0 * MAX_GROWTH - 0.01)})) == []
    assert {c.kind for c in check_replacement(published, figures({"a": (1000, 100.0 * MAX_GROWTH + 1)}))} == {
        "growth"
    }


def test_only_a_true_tag_allows_a_change() -> None:
    assert allowed_kinds({ALLOW_SHRINK_TAG: "true", ALLOW_GROWTH_TAG: "yes"}) == frozenset({"shrink"})
    assert allowed_kinds({ALLOW_GROWTH_TAG: " TRUE "}) == frozenset({"growth"})
    assert allowed_kinds({}) == frozenset()


def test_unreadable_manifests_are_not_compared() -> None:
    assert figures_from_manifest(None) is None
    assert figures_from_manifest({"rowCount": 3}) is None
    assert figures_from_manifest({"rowCount": 3, "costTotals": {"BilledCost": "NaN"}}) is None
