"""The constant columns declared in `focus/schema.py` hold against real transform output, in both modes.

The settings are given distinct sentinel values through their environment variables, so a column filled
from the wrong setting, or a documented variable name that does not reach the column, fails.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from castai_focus_dagster.focus.options import FocusOptions
from castai_focus_dagster.focus.schema import FOCUS_CONSTANTS, FOCUS_SCHEMA, Constant
from castai_focus_dagster.focus.split import to_focus_split
from castai_focus_dagster.focus.transform import to_focus
from castai_focus_dagster.settings import load_settings
from castai_focus_dagster_tests.focus.test_focus_split import CLUSTER, report_table
from castai_focus_dagster_tests.focus_inputs import CLUSTERS, enrichment_context, synthetic_org

# What FOCUS 1.3 and this exporter's mapping require, written out independently of the schema.
EXPECTED_LITERALS: dict[str, str | None] = {
    "AvailabilityZone": None,
    "ChargeCategory": "Usage",
    "ChargeClass": None,
    "ChargeFrequency": "Usage-Based",
    "ServiceCategory": "Compute",
    "ServiceSubcategory": "Containers",
    "SkuPriceDetails": None,
}
SENTINELS = {  # environment variable -> the value it is set to
    "FOCUS_BILLING_CURRENCY": "CHF",
    "FOCUS_SERVICE_PROVIDER_NAME": "Provider Sentinel",
    "FOCUS_INVOICE_ISSUER_NAME": "Issuer Sentinel",
    "FOCUS_PUBLISHER_NAME": "Publisher Sentinel",
    "FOCUS_SERVICE_NAME": "Service Sentinel",
}
EXPECTED_FROM_SETTINGS: dict[str, str] = {
    "BillingCurrency": "FOCUS_BILLING_CURRENCY",
    "PricingCurrency": "FOCUS_BILLING_CURRENCY",
    "ProviderName": "FOCUS_SERVICE_PROVIDER_NAME",
    "ServiceProviderName": "FOCUS_SERVICE_PROVIDER_NAME",
    "InvoiceIssuerName": "FOCUS_INVOICE_ISSUER_NAME",
    "PublisherName": "FOCUS_PUBLISHER_NAME",
    "ServiceName": "FOCUS_SERVICE_NAME",
}


@pytest.fixture(scope="module")
def options() -> FocusOptions:
    return FocusOptions.from_settings(load_settings({"CASTAI_API_URL": "sandbox", **SENTINELS}))


@pytest.fixture(scope="module")
def outputs(options: FocusOptions) -> dict[str, pa.Table]:
    org = synthetic_org()
    workload_mode = to_focus(org.hourly, org.clusters, org.context, options, listing=org.listing)
    one_cluster = org.hourly.filter(pc.equal(org.hourly["cluster_id"].cast(pa.string()), CLUSTER))
    report = report_table([{"cpuCostOnDemand": 1e6, "cpuCountOnDemand": 1e6}])  # leaves idle capacity
    split_mode = to_focus_split(
        one_cluster, {CLUSTER: report}, CLUSTERS, enrichment_context(), options, step_seconds=3600
    )
    return {"workload": workload_mode, "split": split_mode}


def test_the_schema_declares_exactly_the_expected_constants() -> None:
    declared_literals = {n: c.value for n, c in FOCUS_CONSTANTS.items() if c.option is None}
    assert declared_literals == EXPECTED_LITERALS
    assert set(FOCUS_CONSTANTS) == set(EXPECTED_LITERALS) | set(EXPECTED_FROM_SETTINGS)
    assert all(c.value is None for c in FOCUS_CONSTANTS.values() if c.option is not None)
    assert all(FOCUS_SCHEMA.field(name).nullable for name, v in EXPECTED_LITERALS.items() if v is None)


@pytest.mark.parametrize("mode", ["workload", "split"])
def test_every_declared_constant_holds_on_every_row(mode: str, outputs: dict[str, pa.Table]) -> None:
    table = outputs[mode]
    assert table.num_rows > 0
    if mode == "split":  # the fixture covers allocated and unallocated (idle) rows
        assert pc.any(pc.is_null(table["AllocatedResourceId"])).as_py()
    expected: dict[str, Any] = EXPECTED_LITERALS | {
        name: SENTINELS[env] for name, env in EXPECTED_FROM_SETTINGS.items()
    }
    for name, value in expected.items():
        distinct = pc.unique(table[name]).to_pylist()
        assert distinct == [value], f"{mode} mode: {name} holds {distinct[:3]}, expected only {value!r}"


def test_constants_name_real_option_fields() -> None:
    fields = set(FocusOptions.__dataclass_fields__)
    for name, constant in FOCUS_CONSTANTS.items():
        assert isinstance(constant, Constant)
        assert constant.option is None or constant.option in fields, name
