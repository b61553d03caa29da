"""Split cost allocation rules (FOCUS 1.3 DataGeneratorCalculatedSplitCostAllocationHandling).

The origin row is not emitted, so "allocated rows sum to the origin" is checked as: every row carries
its AllocatedRatio of every summable column's origin total, and the ratios of an origin sum to 1.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castai_focus_dagster.focus.rules.common import (
    RuleResult,
    dense_codes,
    outcome,
    pair_codes,
    sample,
    value_codes,
)
from castai_focus_dagster.focus.schema import FOCUS_COLUMNS
from castai_focus_dagster.focus.split_inputs import (
    ALLOCATION_METHOD_ID,
    REMAINDER_RELATIVE_TOLERANCE,
)

RATIO_TOLERANCE = 1e-9

# Columns of a split-mode row that describe the workload it is allocated to; all others describe the origin.
ALLOCATION_COLUMNS = (
    "AllocatedMethodDetails",
    "AllocatedMethodId",
    "AllocatedResourceId",
    "AllocatedResourceName",
    "AllocatedTags",
    "x_CastAINamespace",
    "x_CastAIWorkloadType",
    "x_CastAIWorkloadName",
)
_NON_SUMMABLE_DECIMALS = frozenset(
    {
        "ListUnitPrice",
        "ContractedUnitPrice",
        "PricingCurrencyListUnitPrice",
        "PricingCurrencyContractedUnitPrice",
    }
)
# Costs and quantities: the allocated and unallocated rows of an origin add up to it in each of them.
SUMMABLE_COLUMNS = tuple(
    c.name for c in FOCUS_COLUMNS if c.focus_type == "Decimal" and c.name not in _NON_SUMMABLE_DECIMALS
)
# Everything else must be identical on every row of an origin (FOCUS: dimensions and unit prices).
DIMENSION_COLUMNS = tuple(
    c.name for c in FOCUS_COLUMNS if c.name not in ALLOCATION_COLUMNS and c.name not in SUMMABLE_COLUMNS
)
_ORIGIN_KEY = ("ResourceId", "SkuPriceId", "ChargePeriodStart", "ChargePeriodEnd")
_NUMBER = r"[0-9][0-9.eE+-]*"
_DETAILS = (
    r'^\{"Elements":\[\{"AllocatedRatio":(?P<ratio>' + _NUMBER + r'),"UsageUnit":"(?P<unit>[^"\\]+)",'
    r'"UsageQuantity":(?P<quantity>' + _NUMBER + r")\}\]\}$"
)


def check_split_allocation(table: pa.Table) -> list[RuleResult]:
    """The split rules on a split-mode table; origins are derived by grouping on `_ORIGIN_KEY`."""
    origin = _origin_index(table)
    ratio, unit, usage_quantity = _parsed_details(table)
    return [
        outcome(
            "split-method-details",
            *_details_failures(table, ratio, unit, usage_quantity),
            _DETAILS_REQUIREMENT,
        ),
        outcome(
            "split-ratios-sum-to-one",
            *_ratio_failures(origin, ratio),
            f"AllocatedRatio of the rows of every origin charge sums to 1 (±{RATIO_TOLERANCE:g})",
        ),
        outcome(
            "split-rows-sum-to-origin",
            *_sum_failures(table, origin, ratio),
            "every summable column (costs, quantities) of a row is its AllocatedRatio of the origin total",
        ),
        outcome(
            "split-dimensions-match-origin",
            *_dimension_failures(table, origin),
            "dimension columns and unit prices are identical on every row of an origin charge",
        ),
        outcome(
            "split-allocated-tags-disjoint",
            *_tag_failures(table),
            "AllocatedTags repeats no key of Tags",
        ),
        outcome(
            "split-unallocated-rows",
            *_unallocated_failures(table, origin),
            "AllocatedResourceId is null exactly on the unallocated row (no workload columns, at most one "
            "per origin) and unique among an origin's allocated rows",
        ),
    ]


_DETAILS_REQUIREMENT = (
    f"AllocatedMethodId is {ALLOCATION_METHOD_ID!r} and AllocatedMethodDetails is "
    '{"Elements":[{"AllocatedRatio":r,"UsageUnit":PricingUnit,"UsageQuantity":q}]} with 0 <= r <= 1, q >= 0'
)


def _origin_index(table: pa.Table) -> np.ndarray:
    """Origin number 0..n-1 of every row, from the columns that identify an origin charge."""
    origin = np.zeros(table.num_rows, dtype=np.int64)
    for name in _ORIGIN_KEY:
        origin = pair_codes(origin, dense_codes(value_codes(table.column(name))))
    return origin


def _parsed_details(table: pa.Table) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """(AllocatedRatio, UsageUnit, UsageQuantity) per row; NaN / null where the JSON is not our shape."""
    parsed = pc.extract_regex(table.column("AllocatedMethodDetails").combine_chunks(), _DETAILS)

    def number(name: str) -> np.ndarray:
        return pc.cast(parsed.field(name), pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)

    return number("ratio"), parsed.field("unit"), number("quantity")


def _details_failures(
    table: pa.Table, ratio: np.ndarray, unit: pa.Array, usage_quantity: np.ndarray
) -> tuple[np.ndarray, str]:
    method_ok = pc.fill_null(pc.equal(table.column("AllocatedMethodId"), ALLOCATION_METHOD_ID), False)
    unit_ok = pc.fill_null(pc.equal(unit, table.column("PricingUnit").combine_chunks()), False)
    with np.errstate(invalid="ignore"):
        ratio_ok = (ratio >= 0) & (ratio <= 1) & (usage_quantity >= 0)
    failing = ~(method_ok.to_numpy(zero_copy_only=False) & unit_ok.to_numpy(zero_copy_only=False) & ratio_ok)
    return failing, sample(table, failing, ("AllocatedMethodId", "AllocatedMethodDetails", "PricingUnit"))


def _ratio_failures(origin: np.ndarray, ratio: np.ndarray) -> tuple[np.ndarray, str]:
    total = np.bincount(
        origin, weights=np.nan_to_num(ratio, nan=np.inf), minlength=origin.max(initial=-1) + 1
    )
    failing = ~(np.abs(total - 1.0) <= RATIO_TOLERANCE)[origin]
    return (
        failing,
        f"ratios of an origin sum to {total[origin[np.argmax(failing)]]!r}" if failing.any() else "",
    )


def _sum_failures(table: pa.Table, origin: np.ndarray, ratio: np.ndarray) -> tuple[np.ndarray, str]:
    failing = np.zeros(table.num_rows, dtype=bool)
    offenders = []
    for name in SUMMABLE_COLUMNS:
        values = np.nan_to_num(table.column(name).to_numpy(zero_copy_only=False).astype(np.float64))
        total = np.bincount(origin, weights=values, minlength=origin.max(initial=-1) + 1)[origin]
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(values - ratio * total) <= REMAINDER_RELATIVE_TOLERANCE * np.abs(total) + 1e-12)
        if bad.any():
            offenders.append(name)
            failing |= bad
    return failing, "in " + ", ".join(offenders) if offenders else ""


def _dimension_failures(table: pa.Table, origin: np.ndarray) -> tuple[np.ndarray, str]:
    """A column varies within an origin when its smallest and largest code there differ (one sort)."""
    failing = np.zeros(table.num_rows, dtype=bool)
    if table.num_rows == 0:
        return failing, ""
    order = np.argsort(origin, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(origin[order]) != 0])  # origins are 0..n-1, in order
    offenders = []
    for name in DIMENSION_COLUMNS:
        codes = value_codes(table.column(name))[order]
        varying = np.minimum.reduceat(codes, starts) != np.maximum.reduceat(codes, starts)
        if varying.any():
            offenders.append(name)
            failing |= varying[origin]
    return failing, "varying " + ", ".join(offenders) if offenders else ""


def _tag_failures(table: pa.Table) -> tuple[np.ndarray, str]:
    """Parsed once per distinct (Tags, AllocatedTags) pair: both repeat across buckets and resources."""
    tags, allocated = (
        pc.dictionary_encode(table.column(n)).combine_chunks() for n in ("Tags", "AllocatedTags")
    )
    tag_code, allocated_code = (
        pc.fill_null(a.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
        for a in (tags, allocated)
    )
    width = len(allocated.dictionary) + 1
    pairs, inverse = np.unique(tag_code * width + allocated_code, return_inverse=True)
    tag_texts, allocated_texts = tags.dictionary.to_pylist(), allocated.dictionary.to_pylist()
    clash: list[str] = []
    bad_pairs = np.zeros(len(pairs), dtype=bool)
    for p, pair in enumerate(pairs.tolist()):
        t, a = pair // width - 1, pair % width - 1
        if t < 0 or a < 0:
            continue
        common = set(_object(tag_texts[t])) & set(_object(allocated_texts[a]))
        if common:
            bad_pairs[p] = True
            clash.append(sorted(common)[0])
    return bad_pairs[inverse.reshape(-1)], f"key {clash[0]!r} in both" if clash else ""


def _object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _unallocated_failures(table: pa.Table, origin: np.ndarray) -> tuple[np.ndarray, str]:
    def valid(name: str) -> np.ndarray:
        return pc.is_valid(table.column(name)).to_numpy(zero_copy_only=False)

    allocated = valid("AllocatedResourceId")
    failing = valid("AllocatedResourceName") != allocated
    failing |= ~allocated & valid("AllocatedTags")
    for name in ("x_CastAINamespace", "x_CastAIWorkloadType", "x_CastAIWorkloadName"):
        failing |= valid(name) != allocated
    n_origins = origin.max(initial=-1) + 1
    failing |= (np.bincount(origin[~allocated], minlength=n_origins) > 1)[origin] & ~allocated
    per_workload = pair_codes(origin, dense_codes(value_codes(table.column("AllocatedResourceId"))))
    failing |= allocated & (
        np.bincount(per_workload[allocated], minlength=per_workload.size)[per_workload] > 1
    )
    return failing, sample(table, failing, ("AllocatedResourceId", "AllocatedResourceName", "AllocatedTags"))
