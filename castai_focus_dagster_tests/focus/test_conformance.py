"""The built-in FOCUS checks: a clean export passes every rule, and each rule catches a broken table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from castai_focus_dagster.focus.conformance import check_conformance
from castai_focus_dagster.focus.rules.common import RuleResult
from castai_focus_dagster.focus.schema import FOCUS_SCHEMA
from castai_focus_dagster.focus.transform import to_focus
from castai_focus_dagster_tests.focus_inputs import focus_options, synthetic_org


@pytest.fixture(scope="module")
def clean() -> pa.Table:
    org = synthetic_org(workloads_per_cluster=3)
    table = to_focus(org.daily, org.clusters, org.context, focus_options()).slice(0, 12)
    assert table.num_rows == 12
    return table


def by_rule(results: list[RuleResult]) -> dict[str, RuleResult]:
    return {r.rule: r for r in results}


def with_values(table: pa.Table, name: str, change: Callable[[list[Any]], None]) -> pa.Table:
    """`table` with column `name` edited in Python (the field keeps its FOCUS type and nullability)."""
    values = table.column(name).to_pylist()
    change(values)
    index = table.schema.get_field_index(name)
    return table.set_column(
        index, table.schema.field(index), pa.array(values, table.schema.field(index).type)
    )


def set_first(name: str, value: Any) -> Callable[[pa.Table], pa.Table]:
    def edit(table: pa.Table) -> pa.Table:
        return with_values(table, name, lambda v: v.__setitem__(0, value))

    return edit


def next_float_up(name: str) -> Callable[[pa.Table], pa.Table]:
    """One ulp off: the FOCUS 1.3 cost products allow no tolerance at all."""
    return lambda t: with_values(t, name, lambda v: v.__setitem__(0, float(np.nextafter(v[0], np.inf))))


def non_usage_without_sku_price(table: pa.Table) -> pa.Table:
    return set_first("SkuPriceId", None)(set_first("ChargeCategory", "Credit")(table))


def swap_charge_period(table: pa.Table) -> pa.Table:
    start, end = table.column("ChargePeriodStart"), table.column("ChargePeriodEnd")
    table = table.set_column(table.schema.get_field_index("ChargePeriodStart"), "ChargePeriodStart", end)
    return table.set_column(table.schema.get_field_index("ChargePeriodEnd"), "ChargePeriodEnd", start).cast(
        FOCUS_SCHEMA
    )


def bill_next_month(table: pa.Table) -> pa.Table:
    column = table.column("BillingPeriodStart").to_pylist()
    return set_first("BillingPeriodStart", column[0].replace(month=column[0].month + 1))(table)


BROKEN: dict[str, tuple[Callable[[pa.Table], pa.Table], int]] = {
    # rule name -> (how to break a clean table, rows that must fail)
    "not-null": (set_first("BilledCost", None), 1),
    "ChargeCategory-allowed-values": (set_first("ChargeCategory", "Refund"), 1),
    "ChargeFrequency-allowed-values": (set_first("ChargeFrequency", "Hourly"), 1),
    "PricingCategory-allowed-values": (set_first("PricingCategory", "Spot"), 1),
    "ChargeClass-null": (set_first("ChargeClass", "Correction"), 1),
    "ServiceCategory-ServiceSubcategory-pair": (
        set_first("ServiceSubcategory", "Kubernetes Optimization"),
        1,
    ),
    "ListCost-equals-ListUnitPrice-x-PricingQuantity": (next_float_up("ListCost"), 1),
    "ContractedCost-equals-ContractedUnitPrice-x-PricingQuantity": (next_float_up("ContractedCost"), 1),
    "SkuPriceId-on-usage": (set_first("SkuPriceId", None), 1),
    "usage-pricing-columns": (set_first("PricingCategory", None), 1),
    "SkuPriceId-null-cascade": (non_usage_without_sku_price, 1),
    "unit-prices-non-negative": (set_first("ContractedUnitPrice", -0.01), 1),
    "quantities-non-negative": (set_first("ConsumedQuantity", -1.0), 1),
    "decimals-finite": (set_first("EffectiveCost", float("inf")), 1),
    "charge-period-order": (swap_charge_period, 12),
    "billing-period-contains-charge-period": (bill_next_month, 1),
    "key-value-format": (set_first("Tags", '{"a": {"nested": 1}}'), 1),
    "RegionName-null-iff-RegionId-null": (set_first("RegionName", None), 1),
    "PricingUnit-null-iff-PricingQuantity-null": (set_first("PricingUnit", None), 1),
    "ConsumedUnit-null-iff-ConsumedQuantity-null": (set_first("ConsumedQuantity", None), 1),
    "SubAccountName-null-iff-SubAccountId-null": (set_first("SubAccountName", None), 1),
    "SubAccountType-null-iff-SubAccountId-null": (set_first("SubAccountId", None), 1),
    "ResourceType-null-iff-ResourceId-null": (set_first("ResourceType", None), 1),
    "currency-codes": (set_first("PricingCurrency", "usd"), 1),
    "no-blank-strings": (set_first("ResourceName", "  "), 1),
}


def test_clean_export_and_empty_table_pass_every_rule(clean: pa.Table) -> None:
    for table in (clean, FOCUS_SCHEMA.empty_table()):
        results = check_conformance(table)
        assert [r for r in results if not r.passed] == []
        assert {r.rule for r in results} >= set(BROKEN) | {"schema", "custom-columns"}


@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_each_rule_catches_its_broken_table(clean: pa.Table, rule: str) -> None:
    breaker, failing_rows = BROKEN[rule]
    result = by_rule(check_conformance(breaker(clean)))[rule]
    assert not result.passed
    assert result.failing_rows == failing_rows
    assert "violate" in result.message


@pytest.mark.parametrize(
    "tags",
    # Compact and sorted like a canonical text, the last two still hold a repeated key or a nested value.
    [
        "[1, 2]",
        "not json",
        '{"a": 1, "a": 2}',
        '{"a": [1]}',
        '"text"',
        '{"a":"1","a":"2"}',
        '{"a":{"b":"c"}}',
    ],
)
def test_key_value_format_rejects_non_objects_duplicates_and_nesting(clean: pa.Table, tags: str) -> None:
    result = by_rule(check_conformance(set_first("Tags", tags)(clean)))["key-value-format"]
    assert (result.passed, result.failing_rows) == (False, 1)


def test_schema_drift_fails_schema_and_dependent_rules(clean: pa.Table) -> None:
    drifted = clean.set_column(
        clean.schema.get_field_index("BilledCost"),
        "BilledCost",
        clean.column("BilledCost").cast(pa.decimal128(20, 10)),
    )
    results = by_rule(check_conformance(drifted))
    assert not results["schema"].passed and "BilledCost" in results["schema"].message
    assert not results["not-null"].passed and "cannot check" in results["not-null"].message
    missing = by_rule(check_conformance(clean.drop_columns(["ListCost"])))
    assert "missing ListCost" in missing["schema"].message
    assert not missing["ListCost-equals-ListUnitPrice-x-PricingQuantity"].passed


def test_custom_columns_must_be_prefixed_and_last(clean: pa.Table) -> None:
    unprefixed = clean.append_column("ClusterName", clean.column("x_CastAIClusterName"))
    result = by_rule(check_conformance(unprefixed))["custom-columns"]
    assert not result.passed and "ClusterName" in result.message
    names = clean.column_names
    intermixed = clean.select([names[-1], *names[:-1]])
    result = by_rule(check_conformance(intermixed))["custom-columns"]
    assert not result.passed and "intermixed" in result.message


@pytest.mark.parametrize(
    "tags",
    ['{"a":"1","b":2,"c":null}', '{"b": "1", "a": true}', '{ "a" : 1.5 }', '{"\\u00e9":"x"}', "{}"],
)
def test_key_value_format_accepts_any_flat_object_canonical_or_not(clean: pa.Table, tags: str) -> None:
    result = by_rule(check_conformance(set_first("Tags", tags)(clean)))["key-value-format"]
    assert result.passed, result.message
