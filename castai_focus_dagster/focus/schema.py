"""The one FOCUS 1.3 Cost-and-Usage schema every output file carries, as data (`FOCUS_COLUMNS`).

The Arrow schema, the transform's constant columns, the conformance checks and the generated
docs/focus-mapping.md all derive from this table. FOCUS columns come first (alphabetical), then `x_`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

FOCUS_VERSION = "1.3"

_TIMESTAMP = pa.timestamp("us", tz="UTC")
_ARROW_TYPES: dict[str, pa.DataType] = {
    "String": pa.string(),
    "JSON": pa.string(),  # serialized UTF-8 JSON object text
    "Decimal": pa.float64(),
    "Date/Time": _TIMESTAMP,
}


@dataclass(frozen=True)
class Constant:
    """Every row of the column holds one value: `value` (None: null), or the `FocusOptions` field `option`."""

    value: str | None = None
    option: str | None = None


NULL = Constant()


@dataclass(frozen=True)
class FocusColumn:
    name: str
    arrow_type: pa.DataType
    focus_type: str  # "String" | "Decimal" | "Date/Time" | "JSON"
    level: str  # "Mandatory" | "Recommended" | "Conditional" | "Custom"
    nullable: bool  # the spec's nullability (False: this exporter never writes a null there)
    source: str  # where the value comes from (or why, for a constant); rendered into docs/focus-mapping.md
    constant: Constant | None = None  # the transform fills such a column from here, in both modes

    @property
    def is_custom(self) -> bool:
        return self.level == "Custom"


def _col(
    name: str, focus_type: str, level: str, nullable: bool, source: str, constant: Constant | None = None
) -> FocusColumn:
    return FocusColumn(name, _ARROW_TYPES[focus_type], focus_type, level, nullable, source, constant)


_M, _R, _C, _X = "Mandatory", "Recommended", "Conditional", "Custom"

# Split cost allocation (`FOCUS_ALLOCATION_MODE=split`) is documented in docs/allocation.md.
_SPLIT = "`FOCUS_ALLOCATION_MODE=split` only (docs/allocation.md), null in workload mode: "

FOCUS_COLUMNS: tuple[FocusColumn, ...] = (
    _col(
        "AllocatedMethodDetails",
        "JSON",
        _R,
        True,
        _SPLIT + '`{"Elements":[{"AllocatedRatio":r,"UsageUnit":u,"UsageQuantity":q}]}`',
    ),
    _col(
        "AllocatedMethodId",
        "String",
        _C,
        True,
        _SPLIT + "`castai-request-based-v1` on every row (allocated and unallocated)",
    ),
    _col(
        "AllocatedResourceId",
        "String",
        _C,
        True,
        _SPLIT + "`castai://{clusterId}/{namespace}/{workloadType}/{workloadName}`; null on the "
        "unallocated (idle) row",
    ),
    _col(
        "AllocatedResourceName",
        "String",
        _C,
        True,
        _SPLIT + "workload name; null on the unallocated (idle) row",
    ),
    _col(
        "AllocatedTags",
        "JSON",
        _C,
        True,
        _SPLIT + "workload labels not already in Tags (allowlist applied); null when none and on the "
        "unallocated row",
    ),
    _col(
        "AvailabilityZone",
        "String",
        _R,
        True,
        "Cast AI reports workload costs per cluster, not per zone",
        NULL,
    ),
    _col(
        "BilledCost", "Decimal", _M, False, "`{resource}Cost{Tier}` (storage: `storageCost`) × bucket hours"
    ),
    _col(
        "BillingAccountId",
        "String",
        _M,
        False,
        "the cluster's Cast AI organization (`organizationId`); `CASTAI_ORGANIZATION_ID` when it names none",
    ),
    _col("BillingAccountName", "String", _M, True, "`FOCUS_BILLING_ACCOUNT_NAME`, else the BillingAccountId"),
    _col("BillingCurrency", "String", _M, False, "", Constant(option="billing_currency")),
    _col(
        "BillingPeriodEnd",
        "Date/Time",
        _M,
        False,
        "first day of the month after ChargePeriodStart (exclusive)",
    ),
    _col("BillingPeriodStart", "Date/Time", _M, False, "first day of the month of ChargePeriodStart"),
    _col("ChargeCategory", "String", _M, False, "every row is usage", Constant("Usage")),
    _col("ChargeClass", "String", _M, True, "no corrections of invoiced periods", NULL),
    _col(
        "ChargeDescription",
        "String",
        _M,
        True,
        "resource, capacity and workload, e.g. `CPU on spot capacity for Deployment payments/checkout-api` "
        "(split mode: the cluster, e.g. `CPU on spot capacity for Kubernetes cluster eks-prod`)",
    ),
    _col("ChargeFrequency", "String", _R, False, "metered per bucket", Constant("Usage-Based")),
    _col(
        "ChargePeriodEnd", "Date/Time", _M, False, "bucket `timestamp` (Cast AI labels a bucket with its end)"
    ),
    _col("ChargePeriodStart", "Date/Time", _M, False, "bucket `timestamp` − `stepSeconds`"),
    _col("ConsumedQuantity", "Decimal", _C, True, "= PricingQuantity"),
    _col("ConsumedUnit", "String", _C, True, "= PricingUnit"),
    _col(
        "ContractedCost",
        "Decimal",
        _M,
        False,
        "ContractedUnitPrice × PricingQuantity (float64, same operation a reader recomputes)",
    ),
    _col(
        "ContractedUnitPrice",
        "Decimal",
        _C,
        True,
        "Anywhere custom price, else list price less discounts in scope, else ListUnitPrice (see Prices)",
    ),
    _col("EffectiveCost", "Decimal", _M, False, "= BilledCost (Cast AI has no amortised commitments)"),
    _col(
        "HostProviderName",
        "String",
        _M,
        True,
        "cluster `providerType`: eks → AWS, gke → Google Cloud, "
        "aks → Microsoft Azure, … (see Host providers)",
    ),
    _col("InvoiceId", "String", _R, True, "`CASTAI-{organizationId}-{YYYY}-{MM}` of the billing period"),
    _col("InvoiceIssuerName", "String", _M, False, "", Constant(option="invoice_issuer_name")),
    _col(
        "ListCost",
        "Decimal",
        _M,
        False,
        "ListUnitPrice × PricingQuantity (float64, same operation a reader recomputes)",
    ),
    _col(
        "ListUnitPrice",
        "Decimal",
        _C,
        True,
        "cloud: listing rate (`useListingPrices`) of the bucket, tier and resource; Anywhere: default "
        "pricing (cpu, memory); else the effective rate `{resource}Cost{Tier}` ÷ quantity (see Prices)",
    ),
    _col(
        "PricingCategory",
        "String",
        _C,
        True,
        "`Standard` (on-demand, storage), `Dynamic` (spot, spot-fallback)",
    ),
    _col("PricingCurrency", "String", _C, True, "= BillingCurrency", Constant(option="billing_currency")),
    _col("PricingCurrencyContractedUnitPrice", "Decimal", _C, True, "= ContractedUnitPrice"),
    _col("PricingCurrencyEffectiveCost", "Decimal", _C, True, "= EffectiveCost"),
    _col("PricingCurrencyListUnitPrice", "Decimal", _C, True, "= ListUnitPrice"),
    _col(
        "PricingQuantity",
        "Decimal",
        _M,
        True,
        "`cpuCount{Tier}`, `ramGib{Tier}`, `gpuCount{Tier}`, `tpuCount{Tier}`, `storageGib` × bucket hours "
        "(split mode: AllocatedRatio × the cluster's quantity)",
    ),
    _col(
        "PricingUnit",
        "String",
        _M,
        True,
        "`vCPU-Hours`, `GiB-Hours` (memory, storage), `GPU-Hours`, `TPU-Hours`",
    ),
    _col(
        "ProviderName",
        "String",
        _M,
        False,
        "deprecated in 1.3, still mandatory",
        Constant(option="service_provider_name"),
    ),
    _col(
        "PublisherName",
        "String",
        _M,
        False,
        "deprecated in 1.3, still mandatory",
        Constant(option="publisher_name"),
    ),
    _col("RegionId", "String", _C, True, "cluster `region.name`; null when the cluster has no region"),
    _col(
        "RegionName",
        "String",
        _C,
        True,
        "cluster `region.displayName`, else `region.name`; null iff RegionId is",
    ),
    _col(
        "ResourceId",
        "String",
        _C,
        True,
        "`castai://{clusterId}/{namespace}/{workloadType}/{workloadName}` (split mode: `castai://{clusterId}`)",
    ),
    _col("ResourceName", "String", _C, True, "workload name (split mode: cluster name)"),
    _col(
        "ResourceType",
        "String",
        _C,
        True,
        "workload type (`Deployment`, `StatefulSet`, …; split mode: `Kubernetes Cluster`)",
    ),
    _col("ServiceCategory", "String", _M, False, "", Constant("Compute")),
    _col("ServiceName", "String", _M, False, "default `Kubernetes`", Constant(option="service_name")),
    _col("ServiceProviderName", "String", _M, False, "", Constant(option="service_provider_name")),
    _col("ServiceSubcategory", "String", _R, False, "", Constant("Containers")),
    _col(
        "SkuId",
        "String",
        _C,
        True,
        "`castai-k8s-{resource}`: one SKU per resource, the same for every pricing "
        "category (FOCUS: SkuId is consistent across PricingCategory values)",
    ),
    _col(
        "SkuMeter",
        "String",
        _C,
        True,
        "per resource: `vCPU usage`, `Memory usage`, `GPU usage`, `TPU usage`, `Storage usage`",
    ),
    _col("SkuPriceDetails", "JSON", _C, True, "Cast AI publishes no per-price attributes", NULL),
    _col(
        "SkuPriceId",
        "String",
        _C,
        True,
        "`castai-k8s-{resource}-{tier}-{clusterId}` (storage: `castai-k8s-storage-{clusterId}`); never null",
    ),
    _col(
        "SubAccountId",
        "String",
        _C,
        True,
        "child organization id (with `FOCUS_ENTERPRISE_ID`), else cluster id",
    ),
    _col("SubAccountName", "String", _C, True, "child organization name, else cluster name"),
    _col("SubAccountType", "String", _C, True, "`Organization` or `Cluster`"),
    _col(
        "Tags",
        "JSON",
        _C,
        True,
        "cluster tags merged with workload labels, keys as-is (a label wins over a cluster tag), "
        "filtered by `FOCUS_TAG_ALLOWLIST` (empty: all); null when empty (split mode: cluster tags only)",
    ),
    _col("x_CastAIClusterId", "String", _X, False, "Cast AI cluster id"),
    _col("x_CastAIClusterName", "String", _X, False, "Cast AI cluster name"),
    _col(
        "x_CastAINamespace", "String", _X, True, "Kubernetes namespace; null on split-mode unallocated rows"
    ),
    _col("x_CastAIWorkloadType", "String", _X, True, "workload type; null on split-mode unallocated rows"),
    _col("x_CastAIWorkloadName", "String", _X, True, "workload name; null on split-mode unallocated rows"),
    _col("x_CastAIPricingTier", "String", _X, True, "`on-demand`, `spot`, `spot-fallback`; null for storage"),
    _col("x_CastAIResource", "String", _X, False, "`cpu`, `memory`, `gpu`, `tpu`, `storage`"),
    _col("x_CastAICpuCost", "Decimal", _X, True, "BilledCost on cpu rows, null elsewhere"),
    _col("x_CastAIRamCost", "Decimal", _X, True, "BilledCost on memory rows, null elsewhere"),
    _col("x_CastAIGpuCost", "Decimal", _X, True, "BilledCost on gpu rows, null elsewhere"),
    _col("x_CastAITpuCost", "Decimal", _X, True, "BilledCost on tpu rows, null elsewhere"),
    _col("x_CastAIStorageCost", "Decimal", _X, True, "BilledCost on storage rows, null elsewhere"),
    _col(
        "x_CastAIUnreportedCost",
        "Decimal",
        _X,
        True,
        "split mode: the row's share of what its cluster's workloads cost beyond the cluster cost report "
        "(the origin was raised to Σ workloads, docs/allocation.md); null otherwise",
    ),
)

FOCUS_SCHEMA: pa.Schema = pa.schema(
    [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in FOCUS_COLUMNS]
)
# The constant columns by name: what the transform fills them with (`transform.constant_value`).
FOCUS_CONSTANTS: dict[str, Constant] = {c.name: c.constant for c in FOCUS_COLUMNS if c.constant is not None}


def schema_problems(schema: pa.Schema) -> list[str]:
    """How `schema` differs from `FOCUS_SCHEMA` (names, types, nullability, order); empty when equal."""
    if schema.equals(FOCUS_SCHEMA):
        return []
    expected = {f.name: f for f in FOCUS_SCHEMA}
    actual = {f.name: f for f in schema}

    def shown(f: pa.Field) -> str:
        return f"{f.type}{'' if f.nullable else ' not null'}"

    problems = [f"missing {n}" for n in expected if n not in actual]
    problems += [f"unexpected {n}" for n in actual if n not in expected]
    problems += [
        f"{n}: {shown(actual[n])} instead of {shown(f)}"
        for n, f in expected.items()
        if n in actual and not actual[n].equals(f)
    ]
    if not problems:
        problems.append("columns are not in FOCUS_SCHEMA order")
    return problems
