"""Rules on amounts and their pricing: nulls, exact cost products, the SkuPriceId cascade, signs, periods."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from castai_focus_dagster.focus.rules.common import Check, Rule, equals, floats, sample, valid
from castai_focus_dagster.focus.schema import FOCUS_COLUMNS, FOCUS_SCHEMA

UNIT_PRICE_COLUMNS = (
    "ListUnitPrice",
    "ContractedUnitPrice",
    "PricingCurrencyListUnitPrice",
    "PricingCurrencyContractedUnitPrice",
)
USAGE_PRICING_COLUMNS = (
    "SkuId",
    "PricingQuantity",
    "PricingUnit",
    "ListUnitPrice",
    "ContractedUnitPrice",
    "PricingCategory",
    "ConsumedQuantity",
    "ConsumedUnit",
    "PricingCurrencyListUnitPrice",
    "PricingCurrencyContractedUnitPrice",
    "HostProviderName",
)
NULL_PAIRS = (
    ("RegionName", "RegionId"),
    ("PricingUnit", "PricingQuantity"),
    ("ConsumedUnit", "ConsumedQuantity"),
    ("SubAccountName", "SubAccountId"),
    ("SubAccountType", "SubAccountId"),
    ("ResourceType", "ResourceId"),
)


def not_null(table: pa.Table) -> tuple[np.ndarray, str]:
    names = [f.name for f in FOCUS_SCHEMA if not f.nullable and f.name in table.column_names]
    failing = np.zeros(table.num_rows, dtype=bool)
    offenders = []
    for name in names:
        nulls = ~valid(table, name)
        if nulls.any():
            offenders.append(f"{name} ({int(nulls.sum())} null)")
            failing |= nulls
    return failing, ", ".join(offenders)


def cost_product(cost: str, unit_price: str) -> Rule:
    def check(table: pa.Table) -> tuple[np.ndarray, str]:
        price, quantity, value = (floats(table, c) for c in (unit_price, "PricingQuantity", cost))
        both = valid(table, unit_price) & valid(table, "PricingQuantity")
        with np.errstate(invalid="ignore", over="ignore"):
            failing = both & ~(price * quantity == value)
        return failing, sample(table, failing, (cost, unit_price, "PricingQuantity"))

    return Rule(
        f"{cost}-equals-{unit_price}-x-PricingQuantity",
        f"{cost} == {unit_price} × PricingQuantity exactly (float64) when both are not null",
        (cost, unit_price, "PricingQuantity"),
        check,
    )


def _usage_rows(table: pa.Table) -> np.ndarray:
    return equals(table, "ChargeCategory", "Usage") & ~equals(table, "ChargeClass", "Correction")


def sku_price_id_on_usage(table: pa.Table) -> tuple[np.ndarray, str]:
    failing = _usage_rows(table) & ~valid(table, "SkuPriceId")
    return failing, sample(table, failing, ("ChargeCategory", "SkuPriceId"))


def usage_pricing(table: pa.Table) -> tuple[np.ndarray, str]:
    usage = _usage_rows(table)
    failing = np.zeros(table.num_rows, dtype=bool)
    offenders = []
    for name in USAGE_PRICING_COLUMNS:
        nulls = usage & ~valid(table, name)
        if nulls.any():
            offenders.append(name)
            failing |= nulls
    return failing, "null " + ", ".join(offenders) if offenders else ""


def sku_price_cascade(table: pa.Table) -> tuple[np.ndarray, str]:
    no_sku_price = ~valid(table, "SkuPriceId")
    failing = np.zeros(table.num_rows, dtype=bool)
    for name in (
        "PricingQuantity",
        "ListUnitPrice",
        "ContractedUnitPrice",
        "PricingCategory",
        "ConsumedQuantity",
        "SkuPriceDetails",
    ):
        failing |= no_sku_price & valid(table, name)
    return failing, sample(table, failing, ("SkuPriceId", "PricingQuantity", "ListUnitPrice"))


def non_negative(columns: tuple[str, ...]) -> Check:
    def check(table: pa.Table) -> tuple[np.ndarray, str]:
        failing = np.zeros(table.num_rows, dtype=bool)
        for name in columns:
            with np.errstate(invalid="ignore"):
                failing |= floats(table, name) < 0
        return failing, sample(table, failing, columns)

    return check


def finite(table: pa.Table) -> tuple[np.ndarray, str]:
    failing = np.zeros(table.num_rows, dtype=bool)
    offenders = []
    for column in FOCUS_COLUMNS:
        if column.focus_type == "Decimal" and column.name in table.column_names:
            bad = valid(table, column.name) & ~np.isfinite(floats(table, column.name))
            if bad.any():
                offenders.append(column.name)
                failing |= bad
    return failing, ", ".join(offenders)


def _micros(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).cast(pa.int64()).fill_null(0).to_numpy()


def charge_period_order(table: pa.Table) -> tuple[np.ndarray, str]:
    failing = ~(_micros(table, "ChargePeriodStart") < _micros(table, "ChargePeriodEnd"))
    return failing, sample(table, failing, ("ChargePeriodStart", "ChargePeriodEnd"))


def billing_period_contains(table: pa.Table) -> tuple[np.ndarray, str]:
    bp_start, bp_end = _micros(table, "BillingPeriodStart"), _micros(table, "BillingPeriodEnd")
    cp_start, cp_end = _micros(table, "ChargePeriodStart"), _micros(table, "ChargePeriodEnd")
    failing = ~((bp_start < bp_end) & (bp_start <= cp_start) & (cp_end <= bp_end))
    return failing, sample(
        table, failing, ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")
    )


def null_iff(name: str, other: str) -> Rule:
    def check(table: pa.Table) -> tuple[np.ndarray, str]:
        failing = valid(table, name) != valid(table, other)
        return failing, sample(table, failing, (name, other))

    return Rule(
        f"{name}-null-iff-{other}-null", f"{name} is null exactly when {other} is null", (name, other), check
    )
