"""The Cast AI -> FOCUS 1.3 transform: row model, conservation, pricing, tags, accounts and edge cases.

Expected values are derived here from the input metrics and the documented rules (docs/focus-mapping.md),
never copied from the transform's output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from castai_focus_dagster.castai.discounts import PricingStats
from castai_focus_dagster.castai.models import (
    METRIC_COLUMNS,
    Cluster,
    ClusterPrice,
    Discount,
    EnrichmentContext,
    empty_workload_costs,
)
from castai_focus_dagster.focus.clusters import host_provider_name
from castai_focus_dagster.focus.conformance import check_conformance
from castai_focus_dagster.focus.options import FocusOptions
from castai_focus_dagster.focus.schema import FOCUS_SCHEMA
from castai_focus_dagster.focus.source import prepare_workloads
from castai_focus_dagster.focus.transform import to_focus
from castai_focus_dagster.settings import load_settings
from castai_focus_dagster.storage.serialize import to_parquet_bytes
from castai_focus_dagster_tests.focus_inputs import (
    CHILD_PAYMENTS,
    CLUSTERS,
    DAY,
    DEFAULT_PRICING,
    ORGANIZATION_ID,
    enrichment_context,
    focus_options,
    list_rate,
    listing_report,
    listing_reports,
    synthetic_org,
    workload_table,
)

COMPONENT_COSTS = [
    f"{r}Cost{t}" for r in ("cpu", "ram", "gpu", "tpu") for t in ("OnDemand", "Spot", "SpotFallback")
]
KEYS = ["cluster_id", "namespace", "workload_type", "workload_name"]


LISTING = listing_reports()


def transform(
    table: pa.Table,
    context: EnrichmentContext | None = None,
    listing: Mapping[str, pa.Table] | None = LISTING,
    **options: object,
) -> pd.DataFrame:
    out = to_focus(
        table, CLUSTERS, context or enrichment_context(), focus_options(**options), listing=listing
    )
    assert out.schema.equals(FOCUS_SCHEMA, check_metadata=True)
    return out.to_pandas()


def one_row(
    context: EnrichmentContext | None = None,
    listing: Mapping[str, pa.Table] | None = LISTING,
    stats: PricingStats | None = None,
    **fields: object,
) -> dict[str, Any]:
    """The single FOCUS row of a one-bucket input, as Python values (None for null)."""
    out = to_focus(
        workload_table([fields]),
        CLUSTERS,
        context or enrichment_context(),
        focus_options(),
        listing=listing,
        stats=stats,
    )
    assert out.num_rows == 1, out.to_pylist()
    return out.to_pylist()[0]


def test_billing_account_is_the_cluster_organisation_or_else_the_configured_one() -> None:
    nameless = {**CLUSTERS, "c-eks-prod": replace(CLUSTERS["c-eks-prod"], organization_id="")}
    rows = [
        {"cluster_id": cid, "cpuCostOnDemand": 0.5, "cpuCountOnDemand": 1.0, "costOnDemand": 0.5}
        for cid in ("c-eks-prod", "c-gke-ml")
    ]
    out = to_focus(
        workload_table(rows), nameless, enrichment_context(), focus_options(billing_account_name="")
    )
    accounts = set(
        zip(
            *(out[c].to_pylist() for c in ("x_CastAIClusterId", "BillingAccountId", "BillingAccountName")),
            strict=True,
        )
    )
    assert accounts == {
        ("c-eks-prod", ORGANIZATION_ID, ORGANIZATION_ID),  # no organizationId: the configured one
        ("c-gke-ml", CLUSTERS["c-gke-ml"].organization_id, CLUSTERS["c-gke-ml"].organization_id),
    }


def castai_cost_by_workload_day(workloads: pa.Table) -> pd.Series:
    """Cast AI's cost per workload and UTC day: (compute components + storage) × bucket hours."""
    df = workloads.to_pandas()
    for key in [*KEYS, "labels"]:
        df[key] = df[key].astype(object)
    df = df.drop_duplicates(subset=[*KEYS, "timestamp"], keep="first")
    hours = df["step_seconds"] / 3600.0
    df["cost"] = (df[COMPONENT_COSTS].sum(axis=1) + df["storageCost"]) * hours
    df["day"] = (df["timestamp"] - pd.to_timedelta(df["step_seconds"], unit="s")).dt.floor("D")
    return df.groupby([*KEYS, "day"])["cost"].sum()


def focus_cost_by_workload_day(focus: pd.DataFrame) -> pd.Series:
    keys = ["x_CastAIClusterId", "x_CastAINamespace", "x_CastAIWorkloadType", "x_CastAIWorkloadName"]
    df = focus.assign(day=focus["ChargePeriodStart"].dt.floor("D"))
    totals = df.groupby([*keys, "day"])["BilledCost"].sum()
    return totals.rename_axis([*KEYS, "day"])


# --- schema and conservation ----------------------------------------------------------------------


def test_empty_input_yields_empty_table_with_the_focus_schema() -> None:
    out = to_focus(empty_workload_costs(), CLUSTERS, enrichment_context(), focus_options())
    assert out.num_rows == 0
    assert out.schema.equals(FOCUS_SCHEMA)


def test_all_zero_workload_yields_no_rows_but_the_schema() -> None:
    out = to_focus(
        workload_table([{}, {"workload_name": "idle-2"}]), CLUSTERS, EnrichmentContext(), focus_options()
    )
    assert out.num_rows == 0
    assert out.schema.equals(FOCUS_SCHEMA)


@pytest.mark.parametrize("granularity", ["hourly", "daily"])
def test_billed_cost_per_workload_and_day_equals_castai_cost(granularity: str) -> None:
    org = synthetic_org()
    workloads = getattr(org, granularity)
    focus = transform(workloads)
    expected = castai_cost_by_workload_day(workloads)
    exported = focus_cost_by_workload_day(focus).reindex(expected.index, fill_value=0.0)
    assert expected.sum() > 100  # a realistic day, not an accidentally empty one
    np.testing.assert_allclose(exported.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-6)
    # Workloads whose every bucket is zero export nothing; no row belongs to an unknown workload.
    assert set(focus_cost_by_workload_day(focus).index) <= set(expected.index)


def test_hourly_and_daily_granularity_give_the_same_daily_totals() -> None:
    org = synthetic_org()
    hourly = focus_cost_by_workload_day(transform(org.hourly))
    daily = focus_cost_by_workload_day(transform(org.daily))
    assert set(hourly.index) == set(daily.index)
    np.testing.assert_allclose(
        hourly.sort_index().to_numpy(), daily.sort_index().to_numpy(), rtol=0, atol=1e-4
    )


def test_one_row_per_nonzero_resource_tier_charge() -> None:
    org = synthetic_org()
    df = org.hourly.to_pandas()
    pairs = [
        (f"{r}Cost{t}", f"{q}{t}")
        for r, q in (("cpu", "cpuCount"), ("ram", "ramGib"), ("gpu", "gpuCount"), ("tpu", "tpuCount"))
        for t in ("OnDemand", "Spot", "SpotFallback")
    ]
    pairs.append(("storageCost", "storageGib"))
    expected = sum(int(((df[c] != 0) | (df[q] != 0)).sum()) for c, q in pairs)
    focus = transform(org.hourly)
    assert len(focus) == expected
    assert not focus.duplicated(["ResourceId", "ChargePeriodStart", "SkuPriceId"]).any()


def test_synthetic_output_passes_every_conformance_rule() -> None:
    org = synthetic_org()
    for workloads in (org.hourly, org.daily):
        out = to_focus(workloads, org.clusters, org.context, focus_options())
        assert [r for r in check_conformance(out) if not r.passed] == []


# --- one bucket, every column ---------------------------------------------------------------------


def test_single_spot_cpu_bucket_maps_every_column() -> None:
    end = DAY + timedelta(hours=5)
    row = one_row(
        cpuCostSpot=0.5, cpuCountSpot=2.0, timestamp=end, labels={"app.kubernetes.io/name": "checkout"}
    )
    assert row["BilledCost"] == row["EffectiveCost"] == row["PricingCurrencyEffectiveCost"] == 0.5
    assert row["PricingQuantity"] == row["ConsumedQuantity"] == 2.0
    assert row["PricingUnit"] == row["ConsumedUnit"] == "vCPU-Hours"
    assert row["ChargePeriodStart"] == end - timedelta(hours=1)
    assert row["ChargePeriodEnd"] == end
    assert row["BillingPeriodStart"] == datetime(2026, 3, 1, tzinfo=UTC)
    assert row["BillingPeriodEnd"] == datetime(2026, 4, 1, tzinfo=UTC)
    assert row["ChargeCategory"] == "Usage" and row["ChargeFrequency"] == "Usage-Based"
    assert row["ChargeClass"] is None
    assert row["PricingCategory"] == "Dynamic"
    assert (row["ServiceCategory"], row["ServiceSubcategory"], row["ServiceName"]) == (
        "Compute",
        "Containers",
        "Kubernetes",
    )
    assert row["ServiceProviderName"] == row["ProviderName"] == "CAST AI"
    # FocusOptions' own defaults are the settings' (the original exporter's): "Cast AI" publishes.
    assert (row["PublisherName"], row["InvoiceIssuerName"]) == ("Cast AI", "CAST AI")
    assert row["HostProviderName"] == "AWS"
    # The cluster's own organisation, as the original exporter (not the configured one).
    assert (row["BillingAccountId"], row["BillingAccountName"]) == (CHILD_PAYMENTS.id, "Acme Corp")
    assert row["BillingCurrency"] == row["PricingCurrency"] == "USD"
    assert row["InvoiceId"] == f"CASTAI-{ORGANIZATION_ID}-2026-03"
    assert row["ResourceId"] == "castai://c-eks-prod/payments/Deployment/checkout-api"
    assert (row["ResourceName"], row["ResourceType"]) == ("checkout-api", "Deployment")
    assert (row["RegionId"], row["RegionName"]) == ("eu-central-1", "EU (Frankfurt)")
    assert row["AvailabilityZone"] is None
    assert row["SkuId"] == "castai-k8s-cpu"
    assert row["SkuPriceId"] == "castai-k8s-cpu-spot-c-eks-prod"
    assert row["SkuMeter"] == "vCPU usage"
    assert row["ChargeDescription"] == "CPU on spot capacity for Deployment payments/checkout-api"
    assert (row["SubAccountId"], row["SubAccountName"], row["SubAccountType"]) == (
        CHILD_PAYMENTS.id,
        CHILD_PAYMENTS.name,
        "Organization",
    )
    assert json.loads(row["Tags"]) == {
        "app.kubernetes.io/name": "checkout",
        "env": "prod",
        "team": "payments",
    }
    # Spot rows carry the cluster's spot listing rate; the EKS CPU discount targets on-demand only.
    assert row["ListUnitPrice"] == row["ContractedUnitPrice"] == list_rate("cpu", "Spot")
    assert row["ListCost"] == list_rate("cpu", "Spot") * 2.0
    assert row["x_CastAIPricingTier"] == "spot" and row["x_CastAIResource"] == "cpu"
    assert row["x_CastAICpuCost"] == 0.5
    assert all(
        row[c] is None
        for c in ("x_CastAIRamCost", "x_CastAIGpuCost", "x_CastAITpuCost", "x_CastAIStorageCost")
    )
    for column in (
        "AllocatedMethodDetails",
        "AllocatedMethodId",
        "AllocatedResourceId",
        "AllocatedResourceName",
        "AllocatedTags",
        "SkuPriceDetails",
    ):
        assert row[column] is None


def test_daily_bucket_scales_rates_by_24_hours_and_spans_the_day() -> None:
    row = one_row(
        ramCostOnDemand=0.25, ramGibOnDemand=4.0, step_seconds=86400, timestamp=DAY + timedelta(days=1)
    )
    assert row["BilledCost"] == 0.25 * 24
    assert row["PricingQuantity"] == 4.0 * 24
    assert row["PricingUnit"] == "GiB-Hours"
    assert row["ChargePeriodStart"] == DAY and row["ChargePeriodEnd"] == DAY + timedelta(days=1)
    assert row["x_CastAIRamCost"] == 0.25 * 24 and row["SkuId"] == "castai-k8s-memory"


def test_bucket_on_the_first_of_the_month_belongs_to_the_month_it_starts_in() -> None:
    row = one_row(cpuCostOnDemand=1.0, cpuCountOnDemand=1.0, timestamp=datetime(2026, 4, 1, tzinfo=UTC))
    assert row["BillingPeriodStart"] == datetime(2026, 3, 1, tzinfo=UTC)
    assert row["InvoiceId"].endswith("-2026-03")


def test_storage_only_workload_is_one_untiered_standard_row() -> None:
    row = one_row(storageCost=0.002, storageGib=20.0, workload_type="StatefulSet", workload_name="db")
    assert row["x_CastAIResource"] == "storage" and row["x_CastAIPricingTier"] is None
    assert row["PricingCategory"] == "Standard" and row["PricingUnit"] == "GiB-Hours"
    assert row["SkuId"] == "castai-k8s-storage" and row["SkuPriceId"] == "castai-k8s-storage-c-eks-prod"
    assert row["ChargeDescription"] == "Storage for StatefulSet payments/db"
    assert row["x_CastAIStorageCost"] == 0.002 and row["x_CastAICpuCost"] is None
    assert row["ListUnitPrice"] == row["ContractedUnitPrice"] == list_rate("storage", None)
    without_listing = one_row(listing={}, storageCost=0.002, storageGib=20.0)
    assert without_listing["ListUnitPrice"] == 0.002 / 20.0  # the effective rate


def test_gpu_only_workload_prices_at_the_effective_rate() -> None:
    row = one_row(listing={}, gpuCostSpotFallback=5.0, gpuCountSpotFallback=2.0)
    assert (row["x_CastAIResource"], row["x_CastAIPricingTier"], row["PricingCategory"]) == (
        "gpu",
        "spot-fallback",
        "Dynamic",
    )
    assert row["PricingUnit"] == "GPU-Hours" and row["SkuMeter"] == "GPU usage"
    assert row["ListUnitPrice"] == row["ContractedUnitPrice"] == 2.5
    assert row["ListCost"] == row["ContractedCost"] == 5.0
    assert row["x_CastAIGpuCost"] == 5.0


def test_tpu_row_and_all_tiers_of_one_bucket_come_in_charge_order() -> None:
    fields = {
        "cpuCostOnDemand": 1.0,
        "cpuCountOnDemand": 1.0,
        "ramCostSpot": 0.1,
        "ramGibSpot": 2.0,
        "tpuCostSpot": 3.0,
        "tpuCountSpot": 4.0,
        "storageCost": 0.01,
        "storageGib": 5.0,
    }
    df = transform(workload_table([fields]))
    assert list(zip(df["x_CastAIResource"], df["x_CastAIPricingTier"].fillna("-"), strict=True)) == [
        ("cpu", "on-demand"),
        ("memory", "spot"),
        ("tpu", "spot"),
        ("storage", "-"),
    ]
    tpu = df[df["x_CastAIResource"] == "tpu"].iloc[0]
    assert tpu["PricingUnit"] == "TPU-Hours" and tpu["x_CastAITpuCost"] == 3.0
    assert df["BilledCost"].sum() == pytest.approx(1.0 + 0.1 + 3.0 + 0.01, abs=1e-12)


def test_quantity_without_cost_is_kept_with_zero_cost() -> None:
    row = one_row(EnrichmentContext(), listing={}, gpuCountOnDemand=1.0)
    assert row["BilledCost"] == 0.0 and row["PricingQuantity"] == 1.0
    assert row["ListUnitPrice"] == 0.0
    listed = one_row(EnrichmentContext(), gpuCountOnDemand=1.0)  # the list price is known: it is published
    assert listed["ListCost"] == listed["ListUnitPrice"] == list_rate("gpu", "OnDemand")


# --- pricing --------------------------------------------------------------------------------------


def test_percentage_discount_applies_to_matching_lifecycle_only() -> None:
    df = transform(
        workload_table(
            [
                {
                    "cpuCostOnDemand": 0.3,
                    "cpuCountOnDemand": 10.0,
                    "cpuCostSpot": 0.1,
                    "cpuCountSpot": 10.0,
                    "cpuCostSpotFallback": 0.3,
                    "cpuCountSpotFallback": 10.0,
                }
            ]
        )
    )
    contracted = dict(zip(df["x_CastAIPricingTier"], df["ContractedUnitPrice"], strict=True))
    # spot-fallback runs on on-demand instances, so the LIFECYCLE_ON_DEMAND discount matches it too.
    assert contracted == {
        "on-demand": list_rate("cpu", "OnDemand") * (1 - 0.1),
        "spot": list_rate("cpu", "Spot"),
        "spot-fallback": list_rate("cpu", "SpotFallback") * (1 - 0.1),
    }
    listed = dict(zip(df["x_CastAIPricingTier"], df["ListUnitPrice"], strict=True))
    assert listed == {t: list_rate("cpu", k) for t, k in (("on-demand", "OnDemand"), ("spot", "Spot"),
                                                           ("spot-fallback", "SpotFallback"))}  # fmt: skip
    assert (df["ContractedCost"] == df["ContractedUnitPrice"] * df["PricingQuantity"]).all()
    assert (df["ListCost"] == df["ListUnitPrice"] * df["PricingQuantity"]).all()


def test_flat_discount_matches_by_region() -> None:
    gke = one_row(
        cluster_id="c-gke-ml", ramCostOnDemand=0.1, ramGibOnDemand=20.0, timestamp=DAY + timedelta(hours=9)
    )
    eks = one_row(cluster_id="c-eks-prod", ramCostOnDemand=0.1, ramGibOnDemand=20.0)
    assert gke["ContractedUnitPrice"] == list_rate("ram", "OnDemand") - 0.0005
    assert eks["ContractedUnitPrice"] == list_rate("ram", "OnDemand")


def test_discount_date_window_is_matched_per_charge_period() -> None:
    rows = [
        {
            "cluster_id": "c-gke-ml",
            "cpuCostOnDemand": 0.2,
            "cpuCountOnDemand": 6.0,
            "timestamp": DAY + timedelta(hours=h),
        }
        for h in (1, 6, 7)
    ]
    df = transform(workload_table(rows)).sort_values("ChargePeriodStart")
    # The fixed 0.02 discount runs from DAY to DAY + 6 h: periods starting at 00:00 and 05:00 are inside.
    assert df["ContractedUnitPrice"].tolist() == [0.02, 0.02, list_rate("cpu", "OnDemand")]


def _aws(discount_id: str, target: str, pricing_type: str, value: float, **scope: Any) -> Discount:
    return Discount(discount_id, None, True, target, pricing_type, value, csp="aws", **scope)


def test_discounts_compose_in_order_and_a_negative_result_is_published_as_zero_and_counted() -> None:
    discounts = [
        _aws("p", "TARGET_CPU", "TYPE_PERCENTAGE", 0.5),
        _aws("f", "TARGET_CPU", "TYPE_FLAT", 0.01),
        _aws("m", "TARGET_MEMORY", "TYPE_FLAT", 1.0),
    ]
    stats = PricingStats()
    df = transform(
        workload_table(
            [
                {
                    "cpuCostOnDemand": 0.1,
                    "cpuCountOnDemand": 5.0,
                    "ramCostOnDemand": 0.1,
                    "ramGibOnDemand": 20.0,
                }
            ]
        ),
        EnrichmentContext(discounts=discounts),
    )
    contracted = dict(zip(df["x_CastAIResource"], df["ContractedUnitPrice"], strict=True))
    assert contracted == {"cpu": list_rate("cpu", "OnDemand") * (1 - 0.5) - 0.01, "memory": 0.0}
    one_row(EnrichmentContext(discounts=discounts), stats=stats, ramCostOnDemand=0.1, ramGibOnDemand=20.0)
    assert stats.clamped_rows == 1 and stats.discounted_rows == {"m": 1}


def test_negative_flat_value_raises_the_contracted_price() -> None:
    context = EnrichmentContext(discounts=[_aws("surcharge", "TARGET_CPU", "TYPE_FLAT", -1.0)])
    row = one_row(context, cpuCostOnDemand=0.3, cpuCountOnDemand=10.0)
    assert row["ContractedUnitPrice"] == list_rate("cpu", "OnDemand") + 1.0
    assert row["ContractedCost"] == row["ContractedUnitPrice"] * row["PricingQuantity"]
    assert row["BilledCost"] == 0.3  # Cast AI's cost is never changed by a discount


def test_instance_discount_lowers_cpu_and_memory_but_not_gpu_or_storage() -> None:
    context = EnrichmentContext(discounts=[_aws("inst", "TARGET_INSTANCE", "TYPE_PERCENTAGE", 0.25)])
    fields = {
        "cpuCostOnDemand": 0.3,
        "cpuCountOnDemand": 10.0,
        "ramCostOnDemand": 0.1,
        "ramGibOnDemand": 20.0,
        "gpuCostOnDemand": 2.0,
        "gpuCountOnDemand": 1.0,
        "storageCost": 0.01,
        "storageGib": 50.0,
    }
    df = transform(workload_table([fields]), context)
    ratio = dict(zip(df["x_CastAIResource"], df["ContractedUnitPrice"] / df["ListUnitPrice"], strict=True))
    assert ratio == {"cpu": 0.75, "memory": 0.75, "gpu": 1.0, "storage": 1.0}


@pytest.mark.parametrize(
    ("discount", "why"),
    [
        (Discount("off", None, False, "TARGET_CPU", "TYPE_FIXED", 0.0, csp="aws"), "disabled"),
        (Discount("gcp", None, True, "TARGET_CPU", "TYPE_PERCENTAGE", 0.5, csp="gcp"), "another cloud"),
        (Discount("nocsp", None, True, "TARGET_CPU", "TYPE_PERCENTAGE", 0.5), "csp missing"),
        (_aws("fam", "TARGET_CPU", "TYPE_PERCENTAGE", 0.5, families=("m5",)), "families"),
        (_aws("type", "TARGET_CPU", "TYPE_PERCENTAGE", 0.5, instance_types=("m5.large",)), "instanceTypes"),
        (_aws("zone", "TARGET_CPU", "TYPE_PERCENTAGE", 0.5, zones=("eu-central-1a",)), "zones"),
        (_aws("os", "TARGET_CPU", "TYPE_PERCENTAGE", 0.5, os=("linux",)), "os"),
        (_aws("region", "TARGET_CPU", "TYPE_PERCENTAGE", 0.5, regions=("us-east-1",)), "other region"),
        (_aws("cluster", "TARGET_CPU", "TYPE_PERCENTAGE", 0.5, clusters=("c-other",)), "other cluster"),
        (_aws("spot", "TARGET_CPU", "TYPE_PERCENTAGE", 0.5, life_cycles=("LIFECYCLE_SPOT",)), "spot only"),
        (_aws("unk", "TARGET_CPU", "TYPE_PERCENTAGE", 0.5, life_cycles=("LIFECYCLE_UNKNOWN",)), "lifecycle"),
        (_aws("mem", "TARGET_MEMORY", "TYPE_PERCENTAGE", 0.5), "memory only"),
        (_aws("commit", "TARGET_COMMITMENT", "TYPE_PERCENTAGE", 0.5), "commitment"),
        (_aws("custom", "TARGET_CUSTOM_CPU", "TYPE_PERCENTAGE", 0.5), "custom instance"),
        (_aws("fixinst", "TARGET_INSTANCE", "TYPE_FIXED", 0.01), "whole-instance fixed price"),
        (_aws("flatinst", "TARGET_INSTANCE", "TYPE_FLAT", 0.01), "amount off a whole instance"),
        (_aws("negfix", "TARGET_CPU", "TYPE_FIXED", -0.01), "negative fixed price"),
        (_aws("unknown", "TARGET_CPU", "TYPE_UNKNOWN", 0.5), "pricing type"),
        (_aws("late", "TARGET_CPU", "TYPE_PERCENTAGE", 0.5, start_date=DAY + timedelta(hours=1)), "not yet"),
        (_aws("over", "TARGET_CPU", "TYPE_PERCENTAGE", 0.5, end_date=DAY), "already over"),
    ],
)
def test_a_discount_outside_its_scope_or_not_evaluable_leaves_the_eks_price(
    discount: Discount, why: str
) -> None:
    row = one_row(EnrichmentContext(discounts=[discount]), cpuCostOnDemand=0.3, cpuCountOnDemand=10.0)
    assert row["ContractedUnitPrice"] == row["ListUnitPrice"] == list_rate("cpu", "OnDemand"), why


def test_default_pricing_is_the_list_price_of_anywhere_clusters_only() -> None:
    context = enrichment_context(cluster_prices={})
    onprem = one_row(context, cluster_id="c-onprem", cpuCostOnDemand=0.3, cpuCountOnDemand=12.0)
    assert onprem["ListUnitPrice"] == onprem["ContractedUnitPrice"] == DEFAULT_PRICING.cpu_hourly_price
    fallback = one_row(context, cluster_id="c-onprem", ramCostSpotFallback=0.3, ramGibSpotFallback=12.0)
    assert fallback["ListUnitPrice"] == DEFAULT_PRICING.memory_gib_hourly_price
    spot = one_row(context, cluster_id="c-onprem", cpuCostSpot=0.1, cpuCountSpot=12.0)
    assert spot["ListUnitPrice"] == spot["ContractedUnitPrice"] == 0.1 / 12.0  # no spot default price
    # An EKS cluster without a listing report falls back to its effective rate, not to default pricing.
    eks = one_row(context, listing={}, cpuCostOnDemand=0.3, cpuCountOnDemand=12.0)
    assert eks["ListUnitPrice"] == eks["ContractedUnitPrice"] == 0.3 / 12.0


def test_custom_cluster_price_wins_on_on_demand_capacity_of_an_anywhere_cluster_only() -> None:
    fields = {
        "cpuCostOnDemand": 0.3,
        "cpuCountOnDemand": 10.0,
        "cpuCostSpot": 0.1,
        "cpuCountSpot": 10.0,
        "ramCostSpot": 0.01,
        "ramGibSpot": 4.0,
    }
    df = transform(workload_table([{"cluster_id": "c-onprem", **fields}]))
    contracted = {
        (r, t): p
        for r, t, p in zip(
            df["x_CastAIResource"], df["x_CastAIPricingTier"], df["ContractedUnitPrice"], strict=True
        )
    }
    # Cast AI's cluster prices carry no spot price: spot rows keep their effective rate.
    assert contracted == {
        ("cpu", "on-demand"): 0.0215,
        ("cpu", "spot"): 0.1 / 10.0,
        ("memory", "spot"): 0.01 / 4.0,
    }
    # The AKS cluster's ClusterPrice is ignored: the endpoint is documented for Anywhere clusters only.
    aks = transform(workload_table([{"cluster_id": "c-aks-edge", **fields}]))
    assert (aks["ContractedUnitPrice"] == aks["ListUnitPrice"]).all()
    assert 0.0275 not in aks["ContractedUnitPrice"].tolist()


def test_without_list_prices_list_is_the_effective_rate_and_discounts_do_not_apply_twice() -> None:
    context = enrichment_context(default_pricing=None)
    eks = one_row(context, listing={}, cpuCostOnDemand=0.3, cpuCountOnDemand=12.0)
    assert eks["ListUnitPrice"] == eks["ContractedUnitPrice"] == 0.3 / 12.0
    assert eks["ListCost"] == (0.3 / 12.0) * 12.0
    onprem = one_row(context, cluster_id="c-onprem", cpuCostOnDemand=0.3, cpuCountOnDemand=12.0)
    assert (onprem["ListUnitPrice"], onprem["ContractedUnitPrice"]) == (0.3 / 12.0, 0.0215)


def test_listing_rate_is_the_reports_cost_over_count_of_the_rows_bucket_tier_and_resource() -> None:
    ends = [DAY + timedelta(hours=1), DAY + timedelta(hours=2)]
    report = listing_report(ends)
    second = report.column("cpuCostSpot").to_numpy().copy()
    second[1] = 0.5 * 64.0  # the second bucket lists spot CPU at 0.5
    spot = report.schema.get_field_index("cpuCostSpot")
    report = report.set_column(spot, report.schema.field(spot), pa.array(second))
    zero = report.schema.get_field_index("gpuCountSpot")
    report = report.set_column(zero, report.schema.field(zero), pa.array([0.0, 0.0]))
    rows = [
        {"cpuCostSpot": 0.1, "cpuCountSpot": 1.0, "timestamp": ends[1]},
        {"cpuCostSpot": 0.1, "cpuCountSpot": 1.0, "timestamp": ends[0], "workload_name": "b"},
        {"gpuCostSpot": 1.0, "gpuCountSpot": 1.0, "timestamp": ends[0], "workload_name": "c"},
        {
            "cpuCostSpot": 0.1,
            "cpuCountSpot": 1.0,
            "timestamp": DAY + timedelta(hours=3),
            "workload_name": "d",
        },
    ]
    stats = PricingStats()
    out = to_focus(
        workload_table(rows), CLUSTERS, EnrichmentContext(), focus_options(), listing={"c-eks-prod": report},
        stats=stats,
    )  # fmt: skip
    price = {(r["x_CastAIWorkloadName"]): r["ListUnitPrice"] for r in out.to_pylist()}
    assert price == {
        "checkout-api": 0.5,
        "b": list_rate("cpu", "Spot"),
        "c": 1.0,  # no GPU counted in the report's bucket: the effective rate
        "d": 0.1,  # no bucket in the report: the effective rate
    }
    assert stats.list_price_rows == {"listing_report": 2, "effective_rate": 2}


def test_cost_without_quantity_keeps_cost_and_zero_rate() -> None:
    row = one_row(EnrichmentContext(), listing={}, gpuCostOnDemand=0.7)
    assert row["BilledCost"] == 0.7 and row["PricingQuantity"] == 0.0
    assert row["ListUnitPrice"] == row["ContractedUnitPrice"] == 0.0
    assert row["ListCost"] == row["ContractedCost"] == 0.0
    with_list = one_row(cpuCostOnDemand=0.7)
    assert with_list["ListUnitPrice"] == list_rate("cpu", "OnDemand") and with_list["ListCost"] == 0.0


def test_workloads_of_one_sku_price_share_its_effective_rate() -> None:
    """Regression: the effective rate was per row, so one SkuPriceId had several list prices in one
    period. Now Σ cost ÷ Σ quantity of its rows with a quantity, which a zero-quantity row also gets."""
    later = DAY + timedelta(hours=2)
    rows = [
        {"workload_name": "a", "cpuCostSpot": 0.010, "cpuCountSpot": 1.0},
        {"workload_name": "b", "cpuCostSpot": 0.030, "cpuCountSpot": 3.0},
        {"workload_name": "c", "cpuCostSpot": 0.004},  # cost without quantity: adds nothing to the rate
        {"workload_name": "d", "cpuCostSpot": 0.050, "cpuCountSpot": 1.0, "timestamp": later},
    ]
    out = to_focus(workload_table(rows), CLUSTERS, EnrichmentContext(), focus_options(), listing={})
    price = {r["x_CastAIWorkloadName"]: (r["ListUnitPrice"], r["ListCost"]) for r in out.to_pylist()}
    assert price["a"][0] == price["b"][0] == price["c"][0] == pytest.approx(0.04 / 4.0)
    assert price["a"][1] + price["b"][1] == pytest.approx(0.010 + 0.030) and price["c"][1] == 0.0
    assert price["d"][0] == pytest.approx(0.05)  # another charge period: its own rate
    assert {r["SkuPriceId"] for r in out.to_pylist()} == {"castai-k8s-cpu-spot-c-eks-prod"}


# --- tags -----------------------------------------------------------------------------------------


def test_labels_and_cluster_tags_are_merged_with_their_keys_as_they_are() -> None:
    labels = {
        "app.kubernetes.io/name": "api",
        "example.com/owner": "Zoë Ångström",
        "ünïcode": "値",
        "flag": "",
    }
    row = one_row(cpuCostOnDemand=1.0, cpuCountOnDemand=1.0, labels=labels)
    tags = json.loads(row["Tags"])
    assert tags == {**labels, "env": "prod", "team": "payments"}
    assert "Zoë Ångström" in row["Tags"]  # not \\u-escaped
    assert list(tags) == sorted(tags)


def test_missing_labels_give_cluster_tags_only_or_null() -> None:
    eks = one_row(cpuCostOnDemand=1.0, cpuCountOnDemand=1.0)
    assert json.loads(eks["Tags"]) == {"env": "prod", "team": "payments"}
    onprem = one_row(cluster_id="c-onprem", cpuCostOnDemand=1.0, cpuCountOnDemand=1.0)
    assert onprem["Tags"] is None


def test_a_workload_label_wins_over_a_cluster_tag_of_the_same_key() -> None:
    """As the original exporter: cluster tags merged with labels, the label's value kept on a clash."""
    row = one_row(cpuCostOnDemand=1.0, cpuCountOnDemand=1.0, labels={"team": "web", "env": "canary"})
    assert json.loads(row["Tags"]) == {"team": "web", "env": "canary"}  # cluster: env=prod, team=payments


def test_allowlist_filters_label_and_cluster_tag_keys_alike() -> None:
    table = workload_table(
        [{"cpuCostOnDemand": 1.0, "cpuCountOnDemand": 1.0, "labels": {"team": "web", "x": "y"}}]
    )
    kept = transform(table, tag_allowlist=("team",)).iloc[0]
    assert json.loads(kept["Tags"]) == {"team": "web"}
    cluster_only = transform(table, tag_allowlist=("env",)).iloc[0]
    assert json.loads(cluster_only["Tags"]) == {"env": "prod"}
    nothing = transform(table, tag_allowlist=("not-there",)).iloc[0]
    assert pd.isna(nothing["Tags"])


# --- accounts, regions, providers -----------------------------------------------------------------


def test_sub_account_is_the_child_organization_only_when_resolved() -> None:
    fields = {"cpuCostOnDemand": 1.0, "cpuCountOnDemand": 1.0}
    enterprise = transform(workload_table([fields]))
    assert enterprise.loc[0, "SubAccountType"] == "Organization"
    plain = transform(workload_table([fields]), enterprise_id="")
    assert tuple(plain.loc[0, ["SubAccountId", "SubAccountName", "SubAccountType"]]) == (
        "c-eks-prod",
        "eks-prod",
        "Cluster",
    )
    not_a_child = transform(workload_table([{**fields, "cluster_id": "c-onprem"}]))
    assert tuple(not_a_child.loc[0, ["SubAccountId", "SubAccountName", "SubAccountType"]]) == (
        "c-onprem",
        "onprem-lab",
        "Cluster",
    )
    no_children = transform(workload_table([fields]), enrichment_context(child_organizations={}))
    assert no_children.loc[0, "SubAccountType"] == "Cluster"


def test_cluster_without_region_has_null_region_columns() -> None:
    onprem = one_row(cluster_id="c-onprem", cpuCostOnDemand=1.0, cpuCountOnDemand=1.0)
    assert onprem["RegionId"] is None and onprem["RegionName"] is None
    assert onprem["HostProviderName"] == "Self-managed"
    aks = one_row(cluster_id="c-aks-edge", cpuCostOnDemand=1.0, cpuCountOnDemand=1.0)
    assert aks["RegionId"] == aks["RegionName"] == "westeurope"  # no display name: the name
    assert aks["HostProviderName"] == "Microsoft Azure"


@pytest.mark.parametrize(
    ("provider_type", "expected"),
    [
        ("eks", "AWS"),
        ("gke", "Google Cloud"),
        ("aks", "Microsoft Azure"),
        ("openshift", "Red Hat OpenShift"),
        ("anywhere", "Self-managed"),
        ("GKE", "Google Cloud"),
        ("rancher", "rancher"),
        ("", "CAST AI"),
    ],
)
def test_host_provider_names(provider_type: str, expected: str) -> None:
    assert host_provider_name(provider_type, "CAST AI") == expected


# --- input hygiene and determinism ----------------------------------------------------------------


def test_duplicate_buckets_are_counted_once_first_wins() -> None:
    first = {"cpuCostOnDemand": 1.0, "cpuCountOnDemand": 1.0}
    later = {"cpuCostOnDemand": 9.0, "cpuCountOnDemand": 9.0}
    other_hour = {**first, "timestamp": DAY + timedelta(hours=2)}
    df = transform(workload_table([first, later, other_hour]))
    assert df["BilledCost"].tolist() == [1.0, 1.0]
    assert prepare_workloads(workload_table([first, later, other_hour])).num_rows == 2


def test_output_does_not_depend_on_input_order_or_chunking() -> None:
    org = synthetic_org(workloads_per_cluster=4)
    reference = to_parquet_bytes(to_focus(org.hourly, org.clusters, org.context, focus_options()))
    shuffled = org.hourly.take(np.random.default_rng(1).permutation(org.hourly.num_rows))
    chunked = pa.concat_tables([shuffled.slice(0, 100), shuffled.slice(100)])  # two different dictionaries
    assert chunked.column("cluster_id").num_chunks == 2
    assert to_parquet_bytes(to_focus(chunked, org.clusters, org.context, focus_options())) == reference


def test_plain_string_key_columns_are_accepted() -> None:
    table = workload_table([{"cpuCostOnDemand": 1.0, "cpuCountOnDemand": 1.0}])
    plain = table.cast(
        pa.schema(
            [pa.field(f.name, pa.string()) if pa.types.is_dictionary(f.type) else f for f in table.schema]
        )
    )
    assert transform(plain)["BilledCost"].tolist() == [1.0]


def test_unknown_cluster_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="c-missing"):
        to_focus(
            workload_table([{"cluster_id": "c-missing", "cpuCostOnDemand": 1.0}]),
            CLUSTERS,
            EnrichmentContext(),
            focus_options(),
        )


def test_malformed_labels_are_an_error_naming_the_cluster() -> None:
    with pytest.raises(ValueError, match=r"c-eks-prod.*not valid JSON"):
        transform(workload_table([{"labels": "{not json", "cpuCostOnDemand": 1.0}]))


def test_non_positive_step_is_an_error_naming_cluster_and_workload() -> None:
    with pytest.raises(ValueError, match=r"c-eks-prod.*checkout-api.*step_seconds 0"):
        transform(workload_table([{"step_seconds": 0, "cpuCostOnDemand": 1.0}]))


def test_missing_input_column_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="storageGib"):
        to_focus(
            empty_workload_costs().drop_columns(["storageGib"]),
            CLUSTERS,
            EnrichmentContext(),
            focus_options(),
        )


def test_options_come_from_settings() -> None:
    settings = load_settings(
        {
            "CASTAI_API_URL": "sandbox",
            "FOCUS_TAG_ALLOWLIST": "team, env",
            "FOCUS_BILLING_CURRENCY": "EUR",
            "FOCUS_SERVICE_NAME": "EKS workloads",
            "FOCUS_ENTERPRISE_ID": "ent-1",
        }
    )
    options = FocusOptions.from_settings(settings)
    assert options.organization_id == settings.organization_id != ""
    assert options.billing_account_name == ""  # FOCUS_BILLING_ACCOUNT_NAME empty: each row's account id
    assert (options.billing_currency, options.service_name, options.enterprise_id) == (
        "EUR",
        "EKS workloads",
        "ent-1",
    )
    assert options.tag_allowlist == ("team", "env")
    # The original exporter's defaults: "CAST AI" as provider and issuer, "Cast AI" as publisher.
    assert (options.service_provider_name, options.publisher_name, options.invoice_issuer_name) == (
        "CAST AI",
        "Cast AI",
        "CAST AI",
    )


def test_every_metric_column_of_the_contract_is_read() -> None:
    """A bucket with every metric set exports 13 rows whose costs sum to the component costs."""
    values = {name: float(i + 1) for i, name in enumerate(METRIC_COLUMNS)}
    df = transform(workload_table([values]), EnrichmentContext())
    assert len(df) == 13
    assert df["BilledCost"].sum() == pytest.approx(sum(values[c] for c in [*COMPONENT_COSTS, "storageCost"]))


def test_cluster_tags_and_region_come_from_the_cluster_mapping() -> None:
    cluster = Cluster("c-x", "x", ORGANIZATION_ID, "gke", "europe-west1", "Belgium", {"a/b": "c"})
    out = to_focus(
        workload_table([{"cluster_id": "c-x", "cpuCostOnDemand": 1.0, "cpuCountOnDemand": 1.0}]),
        {"c-x": cluster},
        EnrichmentContext(cluster_prices={"c-x": ClusterPrice("c-x", 9, 9, True)}),
        focus_options(),
    ).to_pylist()[0]
    assert json.loads(out["Tags"]) == {"a/b": "c"}
    assert (out["RegionId"], out["RegionName"], out["x_CastAIClusterName"]) == (
        "europe-west1",
        "Belgium",
        "x",
    )
    assert out["ContractedUnitPrice"] == 1.0  # a default (is_default=True) cluster price is not custom


def test_option_defaults_are_the_settings_defaults() -> None:
    """Regression: FocusOptions() published as "CAST AI"; FOCUS_PUBLISHER_NAME defaults to "Cast AI"."""
    from_settings = FocusOptions.from_settings(load_settings({"CASTAI_API_URL": "sandbox"}))
    options = FocusOptions(organization_id="org", billing_account_name="")
    for name in ("service_provider_name", "invoice_issuer_name", "publisher_name"):
        assert getattr(options, name) == getattr(from_settings, name), name
    assert options.publisher_name == "Cast AI"


# --- gathers that take a shortcut (one cluster, one month): the general path must agree -------------


def test_a_batch_over_two_clusters_and_two_months_keeps_each_rows_own_values() -> None:
    """A batch usually holds one cluster of one day, and the transform repeats that cluster's values and
    month; a batch of several clusters or months must gather each row's own."""
    rows = [
        {"cluster_id": cid, "timestamp": moment, "cpuCostOnDemand": 1.0, "cpuCountOnDemand": 1.0}
        for cid in ("c-eks-prod", "c-gke-ml")
        for moment in (datetime(2026, 3, 31, 23, tzinfo=UTC), datetime(2026, 4, 1, 2, tzinfo=UTC))
    ]
    out = transform(workload_table(rows))
    assert len(out) == 4
    for _, row in out.iterrows():
        cluster = CLUSTERS[row["x_CastAIClusterId"]]
        assert row["x_CastAIClusterName"] == cluster.name and row["RegionId"] == cluster.region_name
        month = (row["ChargePeriodStart"].year, row["ChargePeriodStart"].month)
        assert (row["BillingPeriodStart"].year, row["BillingPeriodStart"].month) == month
        assert row["InvoiceId"].endswith(f"-{month[0]}-{month[1]:02d}")
    one = [transform(workload_table([r])).iloc[0] for r in rows]  # each row alone: the shortcut
    for alone, _ in zip(one, rows, strict=True):
        together = out[
            (out["x_CastAIClusterId"] == alone["x_CastAIClusterId"])
            & (out["ChargePeriodStart"] == alone["ChargePeriodStart"])
        ].iloc[0]
        assert together.equals(alone)


def test_the_one_cluster_shortcut_never_reads_a_negative_entry_as_the_last_cluster() -> None:
    from castai_focus_dagster.focus.transform import _gather_to

    values = pa.array(["a", "b"])
    assert _gather_to(np.array([1, 1]))(values).to_pylist() == ["b", "b"]
    with pytest.raises(pa.ArrowIndexError):
        _gather_to(np.array([-1, -1]))(values)
