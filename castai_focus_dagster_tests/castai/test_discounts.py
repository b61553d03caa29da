"""Discount scope rules: pure functions, and a property of the transform (a discount never lowers a row
outside its scope, never changes BilledCost)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from castai_focus_dagster.castai import discounts as rules
from castai_focus_dagster.castai.discounts import (
    PricingStats,
    charge_mask,
    cluster_reason,
    contracted_prices,
    discount_summary,
    discounted,
    micros,
    unusable_reason,
)
from castai_focus_dagster.castai.models import Cluster, Discount, EnrichmentContext
from castai_focus_dagster.castai.sandbox import SandboxOrg
from castai_focus_dagster.castai.sandbox.clusters import SandboxCluster
from castai_focus_dagster.castai.sandbox.discounts import Discount as SandboxDiscount
from castai_focus_dagster.castai.sandbox.discounts import discounted as _sandbox_discounted
from castai_focus_dagster.castai.sandbox.hours import hour_index
from castai_focus_dagster.focus.charges import CHARGES
from castai_focus_dagster.focus.transform import to_focus
from castai_focus_dagster_tests.focus_inputs import CLUSTERS, DAY, focus_options, synthetic_org

EKS, GKE, AKS, ONPREM = (CLUSTERS[c] for c in ("c-eks-prod", "c-gke-ml", "c-aks-edge", "c-onprem"))


def discount(**fields: object) -> Discount:
    base = Discount("d", None, True, "TARGET_CPU", "TYPE_PERCENTAGE", 0.1, csp="aws")
    return replace(base, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, None),
        ({"enabled": False}, rules.DISABLED),
        ({"target": "TARGET_COMMITMENT"}, rules.UNSUPPORTED_TARGET),
        ({"target": "TARGET_CUSTOM_MEMORY"}, rules.UNSUPPORTED_TARGET),
        ({"target": "TARGET_UNKNOWN"}, rules.UNSUPPORTED_TARGET),
        ({"pricing_type": "TYPE_UNKNOWN"}, rules.UNSUPPORTED_PRICING_TYPE),
        ({"target": "TARGET_INSTANCE", "pricing_type": "TYPE_FIXED"}, rules.FIXED_INSTANCE_PRICE),
        # Regression: a flat amount off an instance was taken off every vCPU-hour and GiB-hour.
        ({"target": "TARGET_INSTANCE", "pricing_type": "TYPE_FLAT"}, rules.FLAT_INSTANCE_AMOUNT),
        (
            {"target": "TARGET_INSTANCE", "pricing_type": "TYPE_FLAT", "value": -1.0},
            rules.FLAT_INSTANCE_AMOUNT,
        ),
        ({"target": "TARGET_INSTANCE"}, None),  # a percentage applies to each part alike
        ({"pricing_type": "TYPE_FIXED", "value": -0.01}, rules.NEGATIVE_FIXED_PRICE),
        ({"pricing_type": "TYPE_FLAT", "value": -1.0}, None),  # a negative flat value is valid
        ({"families": ("n1",)}, rules.NODE_SCOPE),
        ({"instance_types": ("n1-standard-1",)}, rules.NODE_SCOPE),
        ({"zones": ("us-central1-a",)}, rules.NODE_SCOPE),
        ({"os": ("linux",)}, rules.NODE_SCOPE),
        ({"csp": ""}, rules.UNKNOWN_CSP),
        ({"csp": "ibm"}, rules.UNKNOWN_CSP),
        ({"life_cycles": ("LIFECYCLE_UNKNOWN",)}, rules.UNKNOWN_LIFECYCLE),
        ({"life_cycles": ("LIFECYCLE_FUTURE",)}, rules.UNKNOWN_LIFECYCLE),
        ({"life_cycles": ("LIFECYCLE_UNKNOWN", "LIFECYCLE_SPOT")}, None),  # the known entry still applies
        ({"life_cycles": ("LIFECYCLE_SPOT", "LIFECYCLE_ON_DEMAND")}, None),
    ],
)
def test_unusable_reason(fields: dict[str, object], reason: str | None) -> None:
    assert unusable_reason(discount(**fields)) == reason


@pytest.mark.parametrize(
    ("provider", "csp"),
    [("eks", "aws"), ("selfhostedwithec2nodes", "aws"), ("gke", "gcp"), ("aks", "azure"), ("oke", "oracle")],
)
def test_csp_is_matched_against_the_cluster_provider(provider: str, csp: str) -> None:
    cluster = replace(EKS, provider_type=provider)
    assert cluster_reason(discount(csp=csp), cluster) is None
    others = {"aws", "gcp", "azure", "oracle"} - {csp}
    assert {cluster_reason(discount(csp=o), cluster) for o in others} == {rules.OUT_OF_SCOPE}


@pytest.mark.parametrize("provider", ["anywhere", "openshift", "kops", ""])
def test_a_provider_without_known_cloud_cannot_be_evaluated(provider: str) -> None:
    cluster = replace(EKS, provider_type=provider)
    assert {cluster_reason(discount(csp=c), cluster) for c in ("aws", "gcp", "azure", "oracle")} == {
        rules.PROVIDER_WITHOUT_CSP
    }


def test_clusters_and_regions_narrow_the_scope() -> None:
    assert cluster_reason(discount(clusters=(EKS.id,)), EKS) is None
    assert cluster_reason(discount(clusters=("other",)), EKS) == rules.OUT_OF_SCOPE
    assert cluster_reason(discount(regions=("eu-central-1",)), EKS) is None
    assert cluster_reason(discount(regions=("us-east-1",)), EKS) == rules.OUT_OF_SCOPE
    assert cluster_reason(discount(regions=("eu-central-1",)), replace(EKS, region_name=None)) == (
        rules.OUT_OF_SCOPE
    )


def test_targets_and_lifecycles_select_charges() -> None:
    resources = [c.resource for c in CHARGES]
    tiers = [c.tier for c in CHARGES]

    def selected(**fields: object) -> set[tuple[str, str | None]]:
        mask = charge_mask(discount(**fields), resources, tiers)
        return {(c.resource, c.tier) for c, m in zip(CHARGES, mask, strict=True) if m}

    assert selected() == {("cpu", "on-demand"), ("cpu", "spot"), ("cpu", "spot-fallback")}
    assert selected(target="TARGET_INSTANCE", life_cycles=("LIFECYCLE_SPOT",)) == {
        ("cpu", "spot"),
        ("memory", "spot"),
    }
    # Spot-fallback capacity is on-demand instances.
    assert selected(target="TARGET_MEMORY", life_cycles=("LIFECYCLE_ON_DEMAND",)) == {
        ("memory", "on-demand"),
        ("memory", "spot-fallback"),
    }
    assert selected(target="TARGET_COMMITMENT") == set()


def test_an_unknown_lifecycle_next_to_a_known_one_matches_only_the_known_tier() -> None:
    mask = charge_mask(
        discount(life_cycles=("LIFECYCLE_UNKNOWN", "LIFECYCLE_SPOT")),
        [c.resource for c in CHARGES],
        [c.tier for c in CHARGES],
    )
    assert {(c.resource, c.tier) for c, m in zip(CHARGES, mask, strict=True) if m} == {("cpu", "spot")}


def _hours(*offsets: float) -> np.ndarray:
    return np.array([micros(DAY + timedelta(hours=h)) for h in offsets], dtype=np.int64)


def test_dates_weight_the_discount_by_the_covered_share_of_each_period() -> None:
    # Four hourly rows and one daily row; the discount runs from 01:00 to 03:00 (endDate exclusive).
    window = discount(start_date=DAY + timedelta(hours=1), end_date=DAY + timedelta(hours=3), value=0.5)
    starts, ends = _hours(0, 1, 2, 3, 0), _hours(1, 2, 3, 4, 24)
    price = np.full(5, 0.04)
    out, clamped, applied, weighted = contracted_prices(
        price, starts, ends, [window], [np.ones(5, dtype=bool)]
    )
    assert out[:4].tolist() == [0.04, 0.02, 0.02, 0.04]  # whole hours stay exact
    assert out[4] == pytest.approx(0.04 * (22 + 2 * 0.5) / 24, rel=1e-15)
    assert applied[0].tolist() == [False, True, True, False, True] and not clamped.any()
    assert weighted.tolist() == [False, False, False, False, True]
    # A discount starting at 10:30 lowers half of the 10:00 hour.
    half = discount(start_date=DAY + timedelta(hours=10, minutes=30), value=0.5)
    out, *_ = contracted_prices(np.array([0.04]), _hours(10), _hours(11), [half], [np.ones(1, dtype=bool)])
    assert out[0] == pytest.approx(0.04 * 0.75, rel=1e-15)


def test_each_discount_step_is_clamped_at_zero() -> None:
    # 0.02 - 0.03 clamps to 0 before the surcharge of 0.01 (not 0.02 - 0.03 + 0.01 = 0).
    steps = [discount(pricing_type="TYPE_FLAT", value=0.03), discount(pricing_type="TYPE_FLAT", value=-0.01)]
    ones = np.ones(1, dtype=bool)
    out, clamped, applied, _ = contracted_prices(np.array([0.02]), _hours(0), _hours(1), steps, [ones, ones])
    assert out.tolist() == [0.01] and clamped.tolist() == [True]
    assert [a.tolist() for a in applied] == [[True], [True]]


def test_rows_outside_every_mask_keep_their_list_price_exactly() -> None:
    window = discount(start_date=DAY + timedelta(hours=12), value=0.5)
    price = np.array([0.1 / 3, 0.07])
    out, _, applied, _ = contracted_prices(
        price, _hours(0, 0), _hours(24, 24), [window], [np.array([False, True])]
    )
    assert out[0] == price[0] and out[1] == pytest.approx(0.07 * 0.75, rel=1e-15)
    assert applied[0].tolist() == [False, True]


def test_pricing_types_including_negative_values() -> None:
    price = np.array([0.04])
    assert discounted(discount(value=0.25), price).tolist() == [0.04 * 0.75]
    assert discounted(discount(pricing_type="TYPE_FLAT", value=-1.0), price).tolist() == [0.04 + 1.0]
    assert discounted(discount(pricing_type="TYPE_FLAT", value=0.05), price).tolist() == [0.04 - 0.05]
    assert discounted(discount(pricing_type="TYPE_FIXED", value=0.02), price).tolist() == [0.02]


def test_discount_summary_counts_every_reason_per_day() -> None:
    catalogue = [
        discount(id="applies"),
        discount(id="off", enabled=False),
        discount(id="family", families=("m5",)),
        discount(id="oracle", csp="oracle"),
        discount(id="expired", end_date=DAY - timedelta(days=1)),
        discount(id="future", start_date=DAY + timedelta(days=2)),
        discount(id="commit", target="TARGET_COMMITMENT"),
    ]
    day = discount_summary(catalogue, [EKS, GKE, AKS, ONPREM], DAY, DAY + timedelta(days=1))
    assert day == {
        "discounts": 7,
        "in_scope": ["applies"],
        "not_applied": {
            rules.DISABLED: 1,
            rules.NODE_SCOPE: 1,
            rules.OUT_OF_SCOPE: 1,
            rules.OUTSIDE_DATES: 2,
            rules.UNSUPPORTED_TARGET: 1,
        },
    }
    only_onprem = discount_summary([discount()], [ONPREM], DAY, DAY + timedelta(days=1))
    assert only_onprem["not_applied"] == {rules.PROVIDER_WITHOUT_CSP: 1}


# --- property: a discount never lowers a row outside its scope -----------------------------------

SCOPES = st.fixed_dictionaries(
    {
        "csp": st.sampled_from(["aws", "gcp", "azure", "oracle", ""]),
        "enabled": st.booleans(),
        "target": st.sampled_from(["TARGET_CPU", "TARGET_MEMORY", "TARGET_INSTANCE", "TARGET_COMMITMENT"]),
        "pricing_type": st.sampled_from(["TYPE_PERCENTAGE", "TYPE_FLAT", "TYPE_FIXED"]),
        "value": st.floats(min_value=-1.0, max_value=1.0),
        "clusters": st.sampled_from([(), ("c-eks-prod",), ("c-gke-ml", "c-aks-edge")]),
        "regions": st.sampled_from([(), ("us-central1",), ("westeurope",)]),
        "life_cycles": st.sampled_from([(), ("LIFECYCLE_SPOT",), ("LIFECYCLE_ON_DEMAND",)]),
        "families": st.sampled_from([(), ("m5",)]),
        "zones": st.sampled_from([(), ("us-central1-a",)]),
    }
)
ORG = synthetic_org(workloads_per_cluster=4)
_CSP = {"eks": "aws", "gke": "gcp", "aks": "azure"}
_TARGETS = {"TARGET_CPU": {"cpu"}, "TARGET_MEMORY": {"memory"}, "TARGET_INSTANCE": {"cpu", "memory"}}


def _in_scope(d: Discount, cluster: Cluster, resource: str, tier: str | None) -> bool:
    """The documented scope, restated from the discount's fields."""
    lifecycle = "LIFECYCLE_SPOT" if tier == "spot" else "LIFECYCLE_ON_DEMAND"
    return (
        d.enabled
        and _CSP.get(cluster.provider_type) == d.csp
        and resource in _TARGETS.get(d.target, set())
        and not (d.families or d.zones)
        # A whole instance's fixed price or flat amount cannot be split into CPU and memory.
        and not (d.target == "TARGET_INSTANCE" and d.pricing_type in ("TYPE_FIXED", "TYPE_FLAT"))
        and not (d.pricing_type == "TYPE_FIXED" and d.value < 0)
        and (not d.clusters or cluster.id in d.clusters)
        and (not d.regions or cluster.region_name in d.regions)
        and (not d.life_cycles or lifecycle in d.life_cycles)
    )


_FLAT_INSTANCE = {
    "csp": "aws", "enabled": True, "target": "TARGET_INSTANCE", "pricing_type": "TYPE_FLAT", "value": 0.0,
    "clusters": (), "regions": (), "life_cycles": (), "families": (), "zones": (),
}  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(scope=SCOPES)
@example(scope=_FLAT_INSTANCE)  # the model once counted a flat instance amount as applied
def test_a_discount_changes_only_rows_in_its_scope_and_never_billed_cost(scope: dict[str, object]) -> None:
    d = discount(id="x", **scope)
    plain = to_focus(ORG.daily, ORG.clusters, EnrichmentContext(), focus_options(), listing=ORG.listing)
    stats = PricingStats()
    with_discount = to_focus(
        ORG.daily,
        ORG.clusters,
        EnrichmentContext(discounts=[d]),
        focus_options(),
        listing=ORG.listing,
        stats=stats,
    )
    assert with_discount["BilledCost"].equals(plain["BilledCost"])
    assert with_discount["ListUnitPrice"].equals(plain["ListUnitPrice"])
    changed = with_discount["ContractedUnitPrice"].to_numpy() != plain["ContractedUnitPrice"].to_numpy()
    rows = with_discount.select(["x_CastAIClusterId", "x_CastAIResource", "x_CastAIPricingTier"]).to_pylist()
    in_scope = np.array(
        [_in_scope(d, ORG.clusters[r["x_CastAIClusterId"]], r["x_CastAIResource"], r["x_CastAIPricingTier"])
         for r in rows]
    )  # fmt: skip
    assert not (changed & ~in_scope).any(), "a discount lowered a row outside its scope"
    assert stats.discounted_rows.get("x", 0) == int(in_scope.sum())
    assert (with_discount["ContractedUnitPrice"].to_numpy() >= 0).all()


# --- property: the transform prices every legal discount as the sandbox (our model of Cast AI) does ---

_SANDBOX = SandboxOrg.generate(seed=7)
_SANDBOX_TIER = {"on-demand": "OnDemand", "spot": "Spot", "spot-fallback": "SpotFallback"}
_FIRST_HOUR = hour_index(DAY)
_MOMENTS = st.one_of(
    st.none(), st.none(), st.integers(min_value=-6 * 60, max_value=54 * 60)
)  # minutes from DAY
LIFECYCLE_LISTS = [
    (),
    (),
    ("LIFECYCLE_SPOT",),
    ("LIFECYCLE_ON_DEMAND",),
    ("LIFECYCLE_UNKNOWN", "LIFECYCLE_SPOT"),
    ("LIFECYCLE_UNKNOWN",),
]
SANDBOX_DISCOUNTS = st.lists(
    st.fixed_dictionaries(
        {
            # Mostly in scope, so that most examples price something.
            "csp": st.sampled_from(["own", "own", "own", "other"]),
            "enabled": st.sampled_from([True, True, True, False]),
            "target": st.sampled_from(
                [*["TARGET_CPU", "TARGET_MEMORY", "TARGET_INSTANCE"] * 2, "TARGET_COMMITMENT"]
            ),
            "pricing_type": st.sampled_from(["TYPE_PERCENTAGE", "TYPE_FLAT", "TYPE_FIXED"]),
            "value": st.decimals(min_value=Decimal("-0.05"), max_value=Decimal(1), places=4).map(str),
            "clusters": st.sampled_from(["none", "own", "none", "own", "other"]),
            "regions": st.sampled_from(["none", "own", "none", "own", "other"]),
            "life_cycles": st.sampled_from(
                [
                    (),
                    ("LIFECYCLE_SPOT",),
                    ("LIFECYCLE_ON_DEMAND",),
                    ("LIFECYCLE_UNKNOWN", "LIFECYCLE_SPOT"),
                    ("LIFECYCLE_UNKNOWN",),
                ]
            ),
            "start": _MOMENTS,
            "end": _MOMENTS,
        }
    ),
    min_size=1,
    max_size=3,
)


def _pair(index: int, fields: dict[str, Any], cluster: SandboxCluster) -> tuple[SandboxDiscount, Discount]:
    """The same discount for the sandbox (API strings) and for the exporter (decoded values)."""
    csp = {"eks": "aws", "gke": "gcp", "aks": "azure"}[cluster.provider_type]
    csp = csp if fields["csp"] == "own" else ("oracle" if csp != "oracle" else "aws")
    own = {"none": (), "own": (cluster.id,), "other": ("c-other",)}
    regions = {"none": (), "own": (cluster.region_name or "",), "other": ("nowhere-1",)}
    moments = [None if m is None else DAY + timedelta(minutes=m) for m in (fields["start"], fields["end"])]
    text = [None if m is None else m.strftime("%Y-%m-%dT%H:%M:%SZ") for m in moments]
    scope = {
        "clusters": own[fields["clusters"]],
        "regions": regions[fields["regions"]],
        "life_cycles": fields["life_cycles"],
    }
    name, kind, target = f"d{index}", fields["pricing_type"], fields["target"]
    sandbox = SandboxDiscount(
        name, _SANDBOX.organization_id, name, csp, fields["enabled"], target, kind, fields["value"],
        start_date=text[0], end_date=text[1], **scope,
    )  # fmt: skip
    exporter = Discount(
        name, None, fields["enabled"], target, kind, float(fields["value"]), csp=csp,
        start_date=moments[0], end_date=moments[1], **scope,
    )  # fmt: skip
    return sandbox, exporter


@settings(max_examples=150, deadline=None)
@given(catalogue=SANDBOX_DISCOUNTS, which=st.integers(min_value=0, max_value=2))
def test_contracted_prices_equal_the_sandboxs_discounted_prices(
    catalogue: list[dict[str, Any]], which: int
) -> None:
    cluster = _SANDBOX.clusters[which]  # eks, gke, aks: cloud clusters at list price
    pairs = [_pair(i, fields, cluster) for i, fields in enumerate(catalogue)]
    priced = _SANDBOX.with_discounts([p[0] for p in pairs]).cluster(cluster.id)
    exporter = [p[1] for p in pairs]
    model = Cluster(
        cluster.id, cluster.name, cluster.organization_id, cluster.provider_type, cluster.region_name
    )
    hours = np.arange(_FIRST_HOUR, _FIRST_HOUR + 48, dtype=np.int64)
    # 48 hourly rows, then the two daily rows of the same hours.
    starts = np.concatenate([hours, hours[[0, 24]]]) * 3_600_000_000
    ends = np.concatenate([hours + 1, hours[[0, 24]] + 24]) * 3_600_000_000
    usable = [d for d in exporter if unusable_reason(d) is None and cluster_reason(d, model) is None]
    resources, tiers = [c.resource for c in CHARGES], [c.tier for c in CHARGES]
    for index, charge in enumerate(CHARGES):
        if charge.resource not in ("cpu", "memory") or charge.tier is None:
            continue
        tier = _SANDBOX_TIER[charge.tier]
        base = cluster.cpu_hourly_price if charge.resource == "cpu" else cluster.memory_gib_hourly_price
        moving = base * (1.0 + 0.01 * (hours % 7))  # hourly rows: a list rate that moves hourly
        truth = _sandbox_discounted(priced, charge.resource, tier, moving, hours)
        steady = _sandbox_discounted(priced, charge.resource, tier, np.full(hours.size, base), hours)
        masks = [np.full(starts.size, charge_mask(d, resources, tiers)[index]) for d in usable]
        row_list = np.concatenate([moving, [base, base]])  # daily rows: the steady rate
        out, *_ = contracted_prices(row_list, starts, ends, usable, masks)
        assert out[:48] == pytest.approx(truth, rel=1e-12, abs=1e-15), charge
        # A daily row pays the mean of the sandbox's hourly prices of its day.
        assert out[48:] == pytest.approx([steady[:24].mean(), steady[24:].mean()], rel=1e-12, abs=1e-15)
