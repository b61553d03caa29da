"""The project's own FOCUS 1.3 checks: cheap, vectorised, no external validator needed.

The FinOps Foundation validator needs Python 3.12 and a separate virtualenv, so it cannot run on
every installation; these checks can, on every partition before it is published (Dagster asset
checks call `check_conformance`). They cover the rules a Cast AI export can realistically break:
schema drift, nulls in not-null columns, allowed values, the exact FOCUS 1.3 cost products, the
SkuPriceId cascade, signs, period ordering, key-value JSON and paired nulls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.focus.schema import FOCUS_COLUMNS, FOCUS_SCHEMA


@dataclass(frozen=True)
class RuleResult:
    rule: str
    passed: bool
    failing_rows: int
    message: str


CHARGE_CATEGORIES = frozenset({"Usage", "Purchase", "Tax", "Credit", "Adjustment"})
CHARGE_FREQUENCIES = frozenset({"One-Time", "Recurring", "Usage-Based"})
PRICING_CATEGORIES = frozenset({"Standard", "Dynamic", "Committed", "Other"})
SERVICE_SUBCATEGORIES: dict[str, tuple[str, ...]] = {
    "AI and Machine Learning": (
        "AI Platforms",
        "Bots",
        "Generative AI",
        "Machine Learning",
        "Natural Language Processing",
    ),
    "Analytics": (
        "Analytics Platforms",
        "Business Intelligence",
        "Data Processing",
        "Search",
        "Streaming Analytics",
    ),
    "Business Applications": ("Productivity and Collaboration",),
    "Compute": (
        "Containers",
        "End User Computing",
        "Quantum Compute",
        "Serverless Compute",
        "Virtual Machines",
    ),
    "Databases": (
        "Caching",
        "Data Warehouses",
        "Ledger Databases",
        "NoSQL Databases",
        "Relational Databases",
        "Time Series Databases",
    ),
    "Developer Tools": (
        "Developer Platforms",
        "Continuous Integration and Deployment",
        "Development Environments",
        "Source Code Management",
        "Quality Assurance",
    ),
    "Identity": ("Identity and Access Management",),
    "Integration": ("API Management", "Messaging", "Workflow Orchestration"),
    "Internet of Things": ("IoT Analytics", "IoT Platforms"),
    "Management and Governance": (
        "Architecture",
        "Compliance",
        "Cost Management",
        "Data Governance",
        "Disaster Recovery",
        "Endpoint Management",
        "Observability",
        "Support",
    ),
    "Media": ("Content Creation", "Gaming", "Media Streaming", "Mixed Reality"),
    "Migration": ("Data Migration", "Resource Migration"),
    "Mobile": (),
    "Multicloud": ("Multicloud Integration",),
    "Networking": (
        "Application Networking",
        "Content Delivery",
        "Network Connectivity",
        "Network Infrastructure",
        "Network Routing",
        "Network Security",
    ),
    "Security": ("Secret Management", "Security Posture Management", "Threat Detection and Response"),
    "Storage": ("Backup Storage", "Block Storage", "File Storage", "Object Storage", "Storage Platforms"),
    "Web": ("Application Platforms",),
    "Other": (),
}
# Every category also has its own "Other (<category>)" subcategory.
ALLOWED_SERVICE_PAIRS = frozenset(
    (category, sub)
    for category, subs in SERVICE_SUBCATEGORIES.items()
    for sub in (*subs, f"Other ({category})")
)

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_KEY_VALUE_COLUMNS = ("Tags", "AllocatedTags", "SkuPriceDetails")
_UNIT_PRICE_COLUMNS = (
    "ListUnitPrice",
    "ContractedUnitPrice",
    "PricingCurrencyListUnitPrice",
    "PricingCurrencyContractedUnitPrice",
)
_USAGE_PRICING_COLUMNS = (
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
_NULL_PAIRS = (
    ("RegionName", "RegionId"),
    ("PricingUnit", "PricingQuantity"),
    ("ConsumedUnit", "ConsumedQuantity"),
    ("SubAccountName", "SubAccountId"),
    ("SubAccountType", "SubAccountId"),
    ("ResourceType", "ResourceId"),
)

# A check returns the per-row failure mask and a short sample of what failed.
_Check = Callable[[pa.Table], tuple[np.ndarray, str]]


@dataclass(frozen=True)
class _Rule:
    name: str
    requirement: str
    columns: tuple[str, ...]
    check: _Check


def check_conformance(table: pa.Table) -> list[RuleResult]:
    """Run every rule; a rule whose columns are missing or mistyped fails instead of being skipped."""
    results = [_schema_rule(table), _custom_columns_rule(table)]
    for rule in _RULES:
        unusable = [
            c
            for c in rule.columns
            if c not in table.column_names
            or not table.schema.field(c).type.equals(FOCUS_SCHEMA.field(c).type)
        ]
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
        failing, sample = rule.check(table)
        count = int(np.count_nonzero(failing))
        message = (
            rule.requirement if count == 0 else f"{count} row(s) violate: {rule.requirement}; e.g. {sample}"
        )
        results.append(RuleResult(rule.name, count == 0, count, message))
    return results


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


def _schema_rule(table: pa.Table) -> RuleResult:
    if table.schema.equals(FOCUS_SCHEMA):
        return RuleResult(
            "schema", True, 0, "schema is exactly FOCUS_SCHEMA (names, order, types, nullability)"
        )
    expected = {f.name: f for f in FOCUS_SCHEMA}
    problems = [f"missing {n}" for n in expected if n not in table.column_names]
    problems += [
        f"{f.name} is {f.type}{'' if f.nullable else ' not null'}"
        for f in table.schema
        if f.name in expected and not f.equals(expected[f.name])
    ]
    problems += [f"unexpected {n}" for n in table.column_names if n not in expected]
    if not problems:
        problems.append("column order differs")
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


# --- helpers --------------------------------------------------------------------------------------


def _valid(table: pa.Table, name: str) -> np.ndarray:
    return pc.is_valid(table.column(name)).to_numpy(zero_copy_only=False)


def _floats(table: pa.Table, name: str) -> np.ndarray:
    """Float column as numpy with NaN for nulls."""
    return table.column(name).to_numpy()


def _equals(table: pa.Table, name: str, value: str) -> np.ndarray:
    return pc.fill_null(pc.equal(table.column(name), value), False).to_numpy(zero_copy_only=False)


def _sample(table: pa.Table, failing: np.ndarray, columns: tuple[str, ...]) -> str:
    if not failing.any():
        return ""
    i = int(np.argmax(failing))
    values = ", ".join(f"{c}={table.column(c)[i].as_py()!r}" for c in columns)
    return f"row {i}: {values}"


def _allowed_values(column: str, allowed: frozenset[str], nullable: bool) -> _Rule:
    def check(table: pa.Table) -> tuple[np.ndarray, str]:
        ok = pc.is_in(table.column(column), value_set=pa.array(sorted(allowed), pa.string()))
        ok = pc.fill_null(ok, nullable).to_numpy(zero_copy_only=False)
        return ~ok, _sample(table, ~ok, (column,))

    values = ", ".join(sorted(allowed))
    return _Rule(
        f"{column}-allowed-values",
        f"{column} is one of {values}{' or null' if nullable else ''}",
        (column,),
        check,
    )


def _not_null(table: pa.Table) -> tuple[np.ndarray, str]:
    names = [f.name for f in FOCUS_SCHEMA if not f.nullable and f.name in table.column_names]
    failing = np.zeros(table.num_rows, dtype=bool)
    offenders = []
    for name in names:
        nulls = ~_valid(table, name)
        if nulls.any():
            offenders.append(f"{name} ({int(nulls.sum())} null)")
            failing |= nulls
    return failing, ", ".join(offenders)


def _charge_class_null(table: pa.Table) -> tuple[np.ndarray, str]:
    failing = _valid(table, "ChargeClass")
    return failing, _sample(table, failing, ("ChargeClass",))


def _service_pair(table: pa.Table) -> tuple[np.ndarray, str]:
    pairs = pc.binary_join_element_wise(
        table.column("ServiceCategory"), table.column("ServiceSubcategory"), "\x1f"
    )
    allowed = pa.array(sorted(f"{c}\x1f{s}" for c, s in ALLOWED_SERVICE_PAIRS), pa.string())
    ok = pc.fill_null(pc.is_in(pairs, value_set=allowed), False).to_numpy(zero_copy_only=False)
    return ~ok, _sample(table, ~ok, ("ServiceCategory", "ServiceSubcategory"))


def _cost_product(cost: str, unit_price: str) -> _Rule:
    def check(table: pa.Table) -> tuple[np.ndarray, str]:
        price, quantity, value = (_floats(table, c) for c in (unit_price, "PricingQuantity", cost))
        both = _valid(table, unit_price) & _valid(table, "PricingQuantity")
        with np.errstate(invalid="ignore", over="ignore"):
            failing = both & ~(price * quantity == value)
        return failing, _sample(table, failing, (cost, unit_price, "PricingQuantity"))

    return _Rule(
        f"{cost}-equals-{unit_price}-x-PricingQuantity",
        f"{cost} == {unit_price} × PricingQuantity exactly (float64) when both are not null",
        (cost, unit_price, "PricingQuantity"),
        check,
    )


def _usage_rows(table: pa.Table) -> np.ndarray:
    return _equals(table, "ChargeCategory", "Usage") & ~_equals(table, "ChargeClass", "Correction")


def _sku_price_id_on_usage(table: pa.Table) -> tuple[np.ndarray, str]:
    failing = _usage_rows(table) & ~_valid(table, "SkuPriceId")
    return failing, _sample(table, failing, ("ChargeCategory", "SkuPriceId"))


def _usage_pricing(table: pa.Table) -> tuple[np.ndarray, str]:
    usage = _usage_rows(table)
    failing = np.zeros(table.num_rows, dtype=bool)
    offenders = []
    for name in _USAGE_PRICING_COLUMNS:
        nulls = usage & ~_valid(table, name)
        if nulls.any():
            offenders.append(name)
            failing |= nulls
    return failing, "null " + ", ".join(offenders) if offenders else ""


def _sku_price_cascade(table: pa.Table) -> tuple[np.ndarray, str]:
    no_sku_price = ~_valid(table, "SkuPriceId")
    failing = np.zeros(table.num_rows, dtype=bool)
    for name in (
        "PricingQuantity",
        "ListUnitPrice",
        "ContractedUnitPrice",
        "PricingCategory",
        "ConsumedQuantity",
        "SkuPriceDetails",
    ):
        failing |= no_sku_price & _valid(table, name)
    return failing, _sample(table, failing, ("SkuPriceId", "PricingQuantity", "ListUnitPrice"))


def _non_negative(columns: tuple[str, ...]) -> _Check:
    def check(table: pa.Table) -> tuple[np.ndarray, str]:
        failing = np.zeros(table.num_rows, dtype=bool)
        for name in columns:
            with np.errstate(invalid="ignore"):
                failing |= _floats(table, name) < 0
        return failing, _sample(table, failing, columns)

    return check


def _finite(table: pa.Table) -> tuple[np.ndarray, str]:
    failing = np.zeros(table.num_rows, dtype=bool)
    offenders = []
    for column in FOCUS_COLUMNS:
        if column.focus_type == "Decimal" and column.name in table.column_names:
            bad = _valid(table, column.name) & ~np.isfinite(_floats(table, column.name))
            if bad.any():
                offenders.append(column.name)
                failing |= bad
    return failing, ", ".join(offenders)


def _micros(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).cast(pa.int64()).fill_null(0).to_numpy()


def _charge_period_order(table: pa.Table) -> tuple[np.ndarray, str]:
    failing = ~(_micros(table, "ChargePeriodStart") < _micros(table, "ChargePeriodEnd"))
    return failing, _sample(table, failing, ("ChargePeriodStart", "ChargePeriodEnd"))


def _billing_period_contains(table: pa.Table) -> tuple[np.ndarray, str]:
    bp_start, bp_end = _micros(table, "BillingPeriodStart"), _micros(table, "BillingPeriodEnd")
    cp_start, cp_end = _micros(table, "ChargePeriodStart"), _micros(table, "ChargePeriodEnd")
    failing = ~((bp_start < bp_end) & (bp_start <= cp_start) & (cp_end <= bp_end))
    return failing, _sample(
        table, failing, ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")
    )


def _key_value_problem(text: str) -> str | None:
    def unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ValueError("duplicate keys")
        return dict(pairs)

    try:
        value = json.loads(text, object_pairs_hook=unique_keys)
    except ValueError as exc:
        return f"not a JSON object with unique keys ({exc})"
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__}, not an object"
    nested = [k for k, v in value.items() if isinstance(v, (dict, list))]
    return f"nested value under {nested[0]!r}" if nested else None


def _key_value_format(table: pa.Table) -> tuple[np.ndarray, str]:
    """Parsed once per distinct value: label sets repeat across every bucket and resource."""
    failing = np.zeros(table.num_rows, dtype=bool)
    samples = []
    for name in _KEY_VALUE_COLUMNS:
        encoded = pc.dictionary_encode(table.column(name)).combine_chunks()
        problems = [_key_value_problem(t) if t is not None else None for t in encoded.dictionary.to_pylist()]
        bad_entries = np.array([p is not None for p in problems], dtype=bool)
        if not bad_entries.any():
            continue
        indices = encoded.indices.to_numpy(zero_copy_only=False)
        valid = _valid(table, name)
        failing |= valid & bad_entries[np.where(valid, indices, 0).astype(np.int64)]
        samples.append(f"{name}: {next(p for p in problems if p)}")
    return failing, "; ".join(samples)


def _null_iff(name: str, other: str) -> _Rule:
    def check(table: pa.Table) -> tuple[np.ndarray, str]:
        failing = _valid(table, name) != _valid(table, other)
        return failing, _sample(table, failing, (name, other))

    return _Rule(
        f"{name}-null-iff-{other}-null", f"{name} is null exactly when {other} is null", (name, other), check
    )


def _currency_codes(table: pa.Table) -> tuple[np.ndarray, str]:
    failing = np.zeros(table.num_rows, dtype=bool)
    for name in ("BillingCurrency", "PricingCurrency"):
        ok = pc.match_substring_regex(table.column(name), _CURRENCY.pattern)
        failing |= ~pc.fill_null(ok, name == "PricingCurrency").to_numpy(zero_copy_only=False)
    return failing, _sample(table, failing, ("BillingCurrency", "PricingCurrency"))


# First bytes a blank string can start with: ASCII controls and space, DEL, and any non-ASCII lead byte
# (Unicode spaces such as U+00A0 or U+3000). Strings starting with any other byte are not blank.
_MAYBE_BLANK_LEAD = np.zeros(256, dtype=bool)
_MAYBE_BLANK_LEAD[:0x21] = _MAYBE_BLANK_LEAD[0x7F:] = True


def _blank(values: pa.ChunkedArray) -> np.ndarray:
    """Rows holding an empty or whitespace-only string (null: not blank).

    Reads only the first byte of every value from the Arrow buffers; the Unicode whitespace test runs
    on the few values whose first byte could start a blank string, instead of scanning every byte.
    """
    parts = []
    for chunk in values.chunks:
        _validity, offsets_buffer, data_buffer = chunk.buffers()
        offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[chunk.offset : chunk.offset + len(chunk) + 1]
        starts, lengths = offsets[:-1], np.diff(offsets)
        data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer else np.zeros(1, dtype=np.uint8)
        first = data[np.minimum(starts, data.size - 1)]
        candidate = ((lengths == 0) | _MAYBE_BLANK_LEAD[first]) & chunk.is_valid().to_numpy(
            zero_copy_only=False
        )
        blank = np.zeros(len(chunk), dtype=bool)
        rows = np.flatnonzero(candidate)
        if rows.size:
            suspects = chunk.take(pa.array(rows))
            blank[rows] = pc.or_(
                pc.equal(pc.binary_length(suspects), 0), pc.utf8_is_space(suspects)
            ).to_numpy(zero_copy_only=False)
        parts.append(blank)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def _no_blank_strings(table: pa.Table) -> tuple[np.ndarray, str]:
    failing = np.zeros(table.num_rows, dtype=bool)
    offenders = []
    for column in FOCUS_COLUMNS:
        if column.focus_type in ("String", "JSON") and column.name in table.column_names:
            blank = _blank(table.column(column.name))
            if blank.any():
                offenders.append(column.name)
                failing |= blank
    return failing, "blank in " + ", ".join(offenders) if offenders else ""


def _columns_of(focus_type: str) -> tuple[str, ...]:
    return tuple(c.name for c in FOCUS_COLUMNS if c.focus_type == focus_type)


_RULES: tuple[_Rule, ...] = (
    _Rule(
        "not-null",
        "columns the spec declares not-null have no nulls",
        tuple(f.name for f in FOCUS_SCHEMA if not f.nullable),
        _not_null,
    ),
    _allowed_values("ChargeCategory", CHARGE_CATEGORIES, nullable=False),
    _allowed_values("ChargeFrequency", CHARGE_FREQUENCIES, nullable=False),
    _allowed_values("PricingCategory", PRICING_CATEGORIES, nullable=True),
    _Rule(
        "ChargeClass-null",
        "ChargeClass is null (this exporter never restates invoiced periods)",
        ("ChargeClass",),
        _charge_class_null,
    ),
    _Rule(
        "ServiceCategory-ServiceSubcategory-pair",
        "ServiceSubcategory is an allowed child of ServiceCategory",
        ("ServiceCategory", "ServiceSubcategory"),
        _service_pair,
    ),
    _cost_product("ListCost", "ListUnitPrice"),
    _cost_product("ContractedCost", "ContractedUnitPrice"),
    _Rule(
        "SkuPriceId-on-usage",
        "SkuPriceId is not null on Usage rows (FOCUS 1.3 null cascade)",
        ("ChargeCategory", "ChargeClass", "SkuPriceId"),
        _sku_price_id_on_usage,
    ),
    _Rule(
        "usage-pricing-columns",
        "Usage rows carry SkuId, quantities, units, unit prices, PricingCategory and HostProviderName",
        ("ChargeCategory", "ChargeClass", *_USAGE_PRICING_COLUMNS),
        _usage_pricing,
    ),
    _Rule(
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
        _sku_price_cascade,
    ),
    _Rule(
        "unit-prices-non-negative",
        "unit prices are >= 0",
        _UNIT_PRICE_COLUMNS,
        _non_negative(_UNIT_PRICE_COLUMNS),
    ),
    _Rule(
        "quantities-non-negative",
        "PricingQuantity and ConsumedQuantity are >= 0",
        ("PricingQuantity", "ConsumedQuantity"),
        _non_negative(("PricingQuantity", "ConsumedQuantity")),
    ),
    _Rule("decimals-finite", "decimal columns hold finite numbers", _columns_of("Decimal"), _finite),
    _Rule(
        "charge-period-order",
        "ChargePeriodStart < ChargePeriodEnd",
        ("ChargePeriodStart", "ChargePeriodEnd"),
        _charge_period_order,
    ),
    _Rule(
        "billing-period-contains-charge-period",
        "BillingPeriodStart <= ChargePeriodStart < ChargePeriodEnd <= BillingPeriodEnd",
        _columns_of("Date/Time"),
        _billing_period_contains,
    ),
    _Rule(
        "key-value-format",
        "Tags, AllocatedTags and SkuPriceDetails are JSON objects with unique keys and scalar values",
        _KEY_VALUE_COLUMNS,
        _key_value_format,
    ),
    *(_null_iff(a, b) for a, b in _NULL_PAIRS),
    _Rule(
        "currency-codes",
        "BillingCurrency and PricingCurrency are three upper-case letters (ISO 4217)",
        ("BillingCurrency", "PricingCurrency"),
        _currency_codes,
    ),
    _Rule(
        "no-blank-strings",
        "no empty or whitespace-only strings (FOCUS NullHandling: null means no value)",
        _columns_of("String") + _columns_of("JSON"),
        _no_blank_strings,
    ),
)
