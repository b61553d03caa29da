"""The replacement guard's rules, as pure functions: what it refuses, and what it must never refuse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from castai_focus_dagster.storage.publication_guard import (
    ALLOW_GROWTH_TAG,
    ALLOW_SHRINK_TAG,
    CONFIGURATION_CHANGED,
    MAX_DROP,
    MAX_GROWTH,
    allowed_kinds,
    check_replacement,
    collection_fingerprint,
    day_figures,
    figures_from_manifest,
    refused_changes,
)

START = datetime(2026, 11, 1, tzinfo=UTC)
costs = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
clusters = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]), st.tuples(st.integers(0, 10**6), costs), max_size=4
)


def figures(  # type: ignore[no-untyped-def]
    per_cluster: dict[str, tuple[int, float]], hours: int = 24, step: int = 3600, collection=None
):
    rows = sum(r for r, _ in per_cluster.values())
    cost = sum(c for _, c in per_cluster.values())
    return day_figures(rows, cost, (START, START + timedelta(hours=hours)), step, per_cluster, collection)


def fingerprint(**changed: object) -> dict[str, object]:
    values: dict[str, object] = {
        "allocation_mode": "split",
        "granularity": "hourly",
        "include_cluster_ids": (),
        "exclude_cluster_ids": (),
        "include_namespaces": (),
        "exclude_namespaces": (),
        **changed,
    }
    return collection_fingerprint(**values)  # type: ignore[arg-type]


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


def test_a_filter_in_another_order_is_the_same_configuration() -> None:
    a = fingerprint(include_cluster_ids=("b", "a", "a"), exclude_namespaces=("kube-system", "dev"))
    b = fingerprint(include_cluster_ids=("a", "b"), exclude_namespaces=("dev", "kube-system"))
    assert a == b
    published = figures({"a": (100, 50.0), "b": (100, 50.0)}, collection=a)
    assert check_replacement(published, figures({"a": (100, 1.0)}, collection=b))[0].kind == "shrink"


@given(clusters, clusters)
def test_after_a_configuration_change_only_an_empty_cluster_list_is_refused(
    before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]]
) -> None:
    published = figures(before, collection=fingerprint())
    new = figures(after, collection=fingerprint(allocation_mode="workload"))
    changes = check_replacement(published, new)
    if published.rows == 0 and published.billed_cost == 0:
        assert changes == []
        return
    assert changes[0] == changes[0].__class__(
        CONFIGURATION_CHANGED, "FOCUS_ALLOCATION_MODE split -> workload"
    )
    refused = refused_changes(changes, frozenset())
    assert [c.kind for c in refused] == (["shrink"] if not after else [])
    if refused:
        assert "Cast AI listed no clusters" in refused[0].message
    assert refused_changes(changes, frozenset({"shrink"})) == []


def test_every_changed_setting_is_named_and_old_manifests_compare_as_before() -> None:
    published = figures({"a": (2400, 100.0), "b": (2400, 100.0)}, collection=fingerprint())
    narrowed = fingerprint(include_cluster_ids=("a",), granularity="daily", exclude_namespaces=("dev",))
    (change,) = check_replacement(published, figures({"a": (100, 20.0)}, step=86400, collection=narrowed))
    assert change.kind == CONFIGURATION_CHANGED
    assert change.message == (
        "COLLECTION_EXCLUDE_NAMESPACES [] -> [dev]; COLLECTION_GRANULARITY hourly -> daily; "
        "COLLECTION_INCLUDE_CLUSTER_IDS [] -> [a]"
    )
    # Without a fingerprint on either side the figures are compared: b vanished, a lost 80 %.
    for old, new in ((None, narrowed), (fingerprint(), None)):
        before = figures({"a": (2400, 100.0), "b": (2400, 100.0)}, collection=old)
        kinds = [c.kind for c in check_replacement(before, figures({"a": (100, 20.0)}, collection=new))]
        assert kinds and set(kinds) == {"shrink"}


def test_the_fingerprint_is_read_back_from_the_manifest() -> None:
    manifest = {
        "rowCount": 3,
        "costTotals": {"BilledCost": 1.5},
        "sourceWindow": {"start": "2026-11-01T00:00:00+00:00", "end": "2026-11-02T00:00:00+00:00"},
        "extra": {"clusters": 1, "collection": fingerprint(allocation_mode="workload")},
    }
    read = figures_from_manifest(manifest)
    assert read is not None and read.collection == fingerprint(allocation_mode="workload")
    del manifest["extra"]["collection"]  # type: ignore[attr-defined]
    read = figures_from_manifest(manifest)
    assert read is not None and read.collection is None
