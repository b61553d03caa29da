"""Property tests: random Cast AI payloads always give conformant FOCUS rows that conserve cost.

Derandomized (fixed example sequence) so a run is reproducible; the examples cover zeros, tiny and
large rates, every tier and resource, duplicates, labels with dots/slashes/unicode, hourly and
daily buckets, with and without list prices, discounts, custom prices, allowlists and enterprises.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from castai_focus_dagster.castai.models import (
    METRIC_COLUMNS,
    ClusterPrice,
    DefaultPricing,
    Discount,
    EnrichmentContext,
)
from castai_focus_dagster.focus.conformance import check_conformance
from castai_focus_dagster.focus.schema import FOCUS_COLUMNS, FOCUS_SCHEMA
from castai_focus_dagster.focus.transform import to_focus
from castai_focus_dagster_tests.focus_inputs import (
    CLUSTERS,
    DAY,
    focus_options,
    listing_reports,
    workload_table,
)

COMPONENTS = [
    f"{r}Cost{t}" for r in ("cpu", "ram", "gpu", "tpu") for t in ("OnDemand", "Spot", "SpotFallback")
]
COMPONENTS.append("storageCost")
KEYS = ("cluster_id", "namespace", "workload_type", "workload_name", "timestamp")

metric_value = st.one_of(
    st.just(0.0),
    st.just(0.0),
    st.floats(min_value=1e-9, max_value=1e-3),
    st.floats(min_value=1e-3, max_value=5e4),
)
label_key = st.sampled_from(["app", "app.kubernetes.io/name", "example.com/team", "tier", "ünï/ключ", "env"])
label_value = st.text(st.characters(codec="utf-8"), max_size=12)


@st.composite
def bucket(draw: st.DrawFn, step: int) -> dict[str, Any]:
    index = draw(st.integers(min_value=1, max_value=48 if step == 3600 else 2))
    metrics = draw(st.lists(st.sampled_from(METRIC_COLUMNS), max_size=8, unique=True))
    row: dict[str, Any] = {name: draw(metric_value) for name in metrics}
    row.update(
        cluster_id=draw(st.sampled_from(sorted(CLUSTERS))),
        namespace=draw(st.sampled_from(["payments", "ml", "kube-system"])),
        workload_type=draw(st.sampled_from(["Deployment", "StatefulSet", "Job"])),
        workload_name=draw(st.sampled_from(["api", "worker", "db"])),
        labels=draw(st.none() | st.dictionaries(label_key, label_value, max_size=4)),
        timestamp=DAY + timedelta(seconds=index * step),
        step_seconds=step,
    )
    return row


@st.composite
def payload(draw: st.DrawFn) -> list[dict[str, Any]]:
    step = draw(st.sampled_from([3600, 86400]))
    return draw(st.lists(bucket(step), max_size=25))


@st.composite
def context(draw: st.DrawFn) -> EnrichmentContext:
    price = st.floats(min_value=0.0, max_value=1.0)
    discount = st.builds(
        Discount,
        id=st.just("d"),
        name=st.none(),
        enabled=st.booleans(),
        target=st.sampled_from(["TARGET_CPU", "TARGET_MEMORY", "TARGET_INSTANCE"]),
        pricing_type=st.sampled_from(["TYPE_PERCENTAGE", "TYPE_FLAT", "TYPE_FIXED"]),
        value=st.floats(min_value=-1.0, max_value=1.0),  # negative: a FLAT surcharge (valid)
        life_cycles=st.sampled_from([(), ("LIFECYCLE_SPOT",), ("LIFECYCLE_ON_DEMAND",)]),
        csp=st.sampled_from(["aws", "gcp", "azure", ""]),
        families=st.sampled_from([(), ("m5",)]),
    )
    return EnrichmentContext(
        default_pricing=draw(st.none() | st.builds(DefaultPricing, price, price)),
        cluster_prices=draw(
            st.dictionaries(
                st.sampled_from(sorted(CLUSTERS)),
                st.builds(ClusterPrice, st.just(""), price, price, st.booleans()),
                max_size=2,
            )
        ),
        discounts=draw(st.lists(discount, max_size=3)),
    )


def castai_total(rows: list[dict[str, Any]]) -> tuple[float, int]:
    """Σ component cost × hours over distinct buckets (first duplicate wins) and the nonzero charge count."""
    seen: set[tuple[Any, ...]] = set()
    total, charges = [], 0
    pairs = [
        (f"{r}Cost{t}", f"{q}{t}")
        for r, q in (("cpu", "cpuCount"), ("ram", "ramGib"), ("gpu", "gpuCount"), ("tpu", "tpuCount"))
        for t in ("OnDemand", "Spot", "SpotFallback")
    ]
    pairs.append(("storageCost", "storageGib"))
    for row in rows:
        key = tuple(row[k] for k in KEYS)
        if key in seen:
            continue
        seen.add(key)
        hours = row["step_seconds"] / 3600
        total += [row.get(c, 0.0) * hours for c in COMPONENTS]
        charges += sum(1 for c, q in pairs if row.get(c, 0.0) != 0 or row.get(q, 0.0) != 0)
    return math.fsum(total), charges


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=payload(),
    ctx=context(),
    allowlist=st.sampled_from([(), ("app",), ("env", "tier"), ("nothing",)]),
    enterprise=st.booleans(),
    with_listing=st.booleans(),
)
def test_random_payloads_give_conformant_conserving_rows(
    rows: list[dict[str, Any]],
    ctx: EnrichmentContext,
    allowlist: tuple[str, ...],
    enterprise: bool,
    with_listing: bool,
) -> None:
    options = focus_options(tag_allowlist=allowlist, enterprise_id="ent" if enterprise else "")
    listing = listing_reports() if with_listing else None
    out = to_focus(workload_table(rows), CLUSTERS, ctx, options, listing=listing)

    assert out.schema.equals(FOCUS_SCHEMA, check_metadata=True)
    assert [r for r in check_conformance(out) if not r.passed] == []

    expected_total, expected_rows = castai_total(rows)
    assert out.num_rows == expected_rows
    billed = out.column("BilledCost").to_numpy()
    assert math.fsum(billed) == pytest.approx(expected_total, rel=1e-12, abs=1e-6 * max(out.num_rows, 1))

    quantity = out.column("PricingQuantity").to_numpy()
    assert np.all(quantity >= 0) and np.all(out.column("ConsumedQuantity").to_numpy() >= 0)
    for cost, price in (("ListCost", "ListUnitPrice"), ("ContractedCost", "ContractedUnitPrice")):
        assert np.array_equal(out.column(cost).to_numpy(), out.column(price).to_numpy() * quantity)
        assert np.all(out.column(price).to_numpy() >= 0)
    assert out.column("SkuPriceId").null_count == 0
    # A SKU price has one list and one contracted price per charge period (FOCUS: SkuPriceId "MUST allow
    # looking up ListUnitPrice and verifying ContractedUnitPrice"), whatever the workloads' own rates.
    prices = out.select(["SkuPriceId", "ChargePeriodStart", "ListUnitPrice", "ContractedUnitPrice"])
    for price in ("ListUnitPrice", "ContractedUnitPrice"):
        distinct = prices.group_by(["SkuPriceId", "ChargePeriodStart"]).aggregate([(price, "count_distinct")])
        assert pc.max(distinct[f"{price}_count_distinct"]).as_py() in (None, 1), price
    for column in FOCUS_COLUMNS:
        if not column.nullable:
            assert out.column(column.name).null_count == 0, column.name
    for text in out.column("Tags").unique().to_pylist():
        if text is not None:
            tags = json.loads(text)
            assert tags and all(not isinstance(v, (dict, list)) for v in tags.values())
            if allowlist:
                assert all(k in allowlist for k in tags)


def test_empty_payload_has_the_schema() -> None:
    out = to_focus(workload_table([]), CLUSTERS, EnrichmentContext(), focus_options())
    assert out.num_rows == 0 and out.schema.equals(FOCUS_SCHEMA)
    assert isinstance(out, pa.Table)
