"""The project's own FOCUS 1.3 checks, run on every batch before publication (no external validator)."""

from __future__ import annotations

import pyarrow as pa

from castai_focus_dagster.focus.rules.common import Rule, RuleResult, columns_of, outcome
from castai_focus_dagster.focus.rules.pricing import (
    NULL_PAIRS,
    UNIT_PRICE_COLUMNS,
    USAGE_PRICING_COLUMNS,
    billing_period_contains,
    charge_period_order,
    cost_product,
    finite,
    non_negative,
    not_null,
    null_iff,
    sku_price_cascade,
    sku_price_id_on_usage,
    usage_pricing,
)
from castai_focus_dagster.focus.rules.taxonomy import (
    CHARGE_CATEGORIES,
    CHARGE_FREQUENCIES,
    PRICING_CATEGORIES,
)
from castai_focus_dagster.focus.rules.values import (
    KEY_VALUE_COLUMNS,
    allowed_values,
    charge_class_null,
    currency_codes,
    key_value_format,
    no_blank_strings,
    service_pair,
)
from castai_focus_dagster.focus.schema import FOCUS_COLUMNS, FOCUS_SCHEMA, schema_problems


def check_conformance(table: pa.Table) -> list[RuleResult]:
    """Run every rule; a rule whose columns are missing or mistyped fails instead of being skipped."""
    results = [_schema_rule(table), _custom_columns_rule(table)]
    usable = {f.name for f in table.schema if f.name in _TYPES and f.type.equals(_TYPES[f.name])}
    for rule in _RULES:
        unusable = [c for c in rule.columns if c not in usable]
        if unusable:
            results.append(
                RuleResult(
                    rule.name,
                    False,
                    table.num_rows,
                    f"cannot check ({rule.requirement}): column(s) {', '.join(unusable)} "
                    "missing or not of the FOCUS_SCHEMA type",
                )
            )
            continue
        results.append(outcome(rule.name, *rule.check(table), rule.requirement))
    return results


_TYPES = {f.name: f.type for f in FOCUS_SCHEMA}


def _schema_rule(table: pa.Table) -> RuleResult:
    problems = schema_problems(table.schema)
    if not problems:
        return RuleResult(
            "schema", True, 0, "schema is exactly FOCUS_SCHEMA (names, order, types, nullability)"
        )
    return RuleResult(
        "schema", False, table.num_rows, "schema differs from FOCUS_SCHEMA: " + "; ".join(problems)
    )


def _custom_columns_rule(table: pa.Table) -> RuleResult:
    focus_names = {c.name for c in FOCUS_COLUMNS if not c.is_custom}
    names = table.column_names
    unprefixed = [n for n in names if n not in focus_names and not n.startswith("x_")]
    custom_positions = [i for i, n in enumerate(names) if n not in focus_names]
    intermixed = bool(custom_positions) and any(n in focus_names for n in names[custom_positions[0] :])
    if not unprefixed and not intermixed:
        return RuleResult(
            "custom-columns", True, 0, "custom columns carry the x_ prefix and follow the FOCUS columns"
        )
    problems = [f"not x_-prefixed: {', '.join(unprefixed)}"] if unprefixed else []
    problems += ["custom columns are intermixed with FOCUS columns"] if intermixed else []
    return RuleResult("custom-columns", False, 0, "; ".join(problems))


_RULES: tuple[Rule, ...] = (
    Rule(
        "not-null",
        "columns the spec declares not-null have no nulls",
        tuple(f.name for f in FOCUS_SCHEMA if not f.nullable),
        not_null,
    ),
    allowed_values("ChargeCategory", CHARGE_CATEGORIES, nullable=False),
    allowed_values("ChargeFrequency", CHARGE_FREQUENCIES, nullable=False),
    allowed_values("PricingCategory", PRICING_CATEGORIES, nullable=True),
    Rule(
        "ChargeClass-null",
        "ChargeClass is null (this exporter never restates invoiced periods)",
        ("ChargeClass",),
        charge_class_null,
    ),
    Rule(
        "ServiceCategory-ServiceSubcategory-pair",
        "ServiceSubcategory is an allowed child of ServiceCategory",
        ("ServiceCategory", "ServiceSubcategory"),
        service_pair,
    ),
    cost_product("ListCost", "ListUnitPrice"),
    cost_product("ContractedCost", "ContractedUnitPrice"),
    Rule(
        "SkuPriceId-on-usage",
        "SkuPriceId is not null on Usage rows (FOCUS 1.3 null cascade)",
        ("ChargeCategory", "ChargeClass", "SkuPriceId"),
        sku_price_id_on_usage,
    ),
    Rule(
        "usage-pricing-columns",
        "Usage rows carry SkuId, quantities, units, unit prices, PricingCategory and HostProviderName",
        ("ChargeCategory", "ChargeClass", *USAGE_PRICING_COLUMNS),
        usage_pricing,
    ),
    Rule(
        "SkuPriceId-null-cascade",
        "price and quantity columns are null when SkuPriceId is null",
        (
            "SkuPriceId",
            "PricingQuantity",
            "ListUnitPrice",
            "ContractedUnitPrice",
            "PricingCategory",
            "ConsumedQuantity",
            "SkuPriceDetails",
        ),
        sku_price_cascade,
    ),
    Rule(
        "unit-prices-non-negative",
        "unit prices are >= 0",
        UNIT_PRICE_COLUMNS,
        non_negative(UNIT_PRICE_COLUMNS),
    ),
    Rule(
        "quantities-non-negative",
        "PricingQuantity and ConsumedQuantity are >= 0",
        ("PricingQuantity", "ConsumedQuantity"),
        non_negative(("PricingQuantity", "ConsumedQuantity")),
    ),
    Rule("decimals-finite", "decimal columns hold finite numbers", columns_of("Decimal"), finite),
    Rule(
        "charge-period-order",
        "ChargePeriodStart < ChargePeriodEnd",
        ("ChargePeriodStart", "ChargePeriodEnd"),
        charge_period_order,
    ),
    Rule(
        "billing-period-contains-charge-period",
        "BillingPeriodStart <= ChargePeriodStart < ChargePeriodEnd <= BillingPeriodEnd",
        columns_of("Date/Time"),
        billing_period_contains,
    ),
    Rule(
        "key-value-format",
        "Tags, AllocatedTags and SkuPriceDetails are JSON objects with unique keys and scalar values",
        KEY_VALUE_COLUMNS,
        key_value_format,
    ),
    *(null_iff(a, b) for a, b in NULL_PAIRS),
    Rule(
        "currency-codes",
        "BillingCurrency and PricingCurrency are three upper-case letters (ISO 4217)",
        ("BillingCurrency", "PricingCurrency"),
        currency_codes,
    ),
    Rule(
        "no-blank-strings",
        "no empty or whitespace-only strings (FOCUS NullHandling: null means no value)",
        columns_of("String") + columns_of("JSON"),
        no_blank_strings,
    ),
)
