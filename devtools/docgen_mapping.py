"""`docs/focus-mapping.md` rendered from `FOCUS_COLUMNS` and the transform's constants
(`make docs` runs `devtools.docgen`)."""

from __future__ import annotations

from castai_focus_dagster.castai.wire import MISSING_IDENTITY
from castai_focus_dagster.focus.charges import CHARGES
from castai_focus_dagster.focus.clusters import HOST_PROVIDER_NAMES
from castai_focus_dagster.focus.schema import FOCUS_COLUMNS, FOCUS_VERSION, FocusColumn
from devtools.markdown import GENERATED, markdown_table


def _value(column: FocusColumn) -> str:
    """A column's Value cell: a constant as the transform fills it (from the schema), then its source."""
    constant = column.constant
    if constant is None:
        return column.source
    if constant.option:
        shown = f"constant: `FOCUS_{constant.option.upper()}`"
    elif constant.value is None:
        shown = "constant: null"
    else:
        shown = f"constant: `{constant.value}`"
    return f"{shown} ({column.source})" if column.source else shown


def render_focus_mapping() -> str:
    columns = markdown_table(
        ("Column", "FOCUS type", "Level", "Nullable", "Value"),
        [
            (f"`{c.name}`", c.focus_type, c.level, "yes" if c.nullable else "no", _value(c))
            for c in FOCUS_COLUMNS
        ],
    )
    charges = markdown_table(
        ("Resource", "Tier", "Cast AI cost field", "Cast AI quantity field", "PricingCategory", "SkuPriceId"),
        [
            (
                c.resource,
                c.tier or "—",
                f"`{c.cost_field}`",
                f"`{c.quantity_field}`",
                c.pricing_category,
                f"`{c.sku_price_prefix}-{{clusterId}}`",
            )
            for c in CHARGES
        ],
    )
    hosts = markdown_table(
        ("Cast AI `providerType`", "HostProviderName"),
        [(f"`{k}`", v) for k, v in HOST_PROVIDER_NAMES.items()]
        + [("anything else", "the `providerType` as reported"), ("empty", "ServiceProviderName")],
    )
    missing = MISSING_IDENTITY
    return f"""{GENERATED}

# FOCUS {FOCUS_VERSION} mapping

Every data file (Parquet or CSV) has exactly the columns below, in this order, with these types:
FOCUS columns first (alphabetical), then `x_` columns. Timestamps are `timestamp[us, tz=UTC]`,
decimals are float64, JSON columns are serialized UTF-8 JSON objects. An empty day has the same
schema. Conditional columns for features Cast AI does not have — commitment discounts, capacity
reservations, contract commitments (`ContractApplied`), several billing-account types — are
omitted, not filled with placeholders. Null always means "no value"; `0` and `""` are never used
as placeholders.

## Row model

One row per **cluster × workload × charge period × pricing tier × resource** (the default,
`FOCUS_ALLOCATION_MODE=workload`; for FOCUS 1.3 split cost allocation with explicit idle rows see
[allocation.md](allocation.md)). Cast AI reports
average hourly rates per bucket; a bucket of `stepSeconds` ends at its `timestamp` and lasts
`h = stepSeconds / 3600` hours, so

- `BilledCost = EffectiveCost = {{cost field}} × h`
- `PricingQuantity = ConsumedQuantity = {{quantity field}} × h`

Rows whose cost and quantity are both zero are omitted. A bucket a workload lists twice (same
timestamp) is refused by the client; an identical repeat of a whole workload is dropped (its first copy
kept, counted as input warning `duplicate-workload`), and a repeat with other numbers is refused.
Storage is not tiered: one storage row per workload and period. For every workload and day the
sum of `BilledCost` equals Cast AI's cost (compute + storage, × hours), and hourly and daily
granularity give the same daily total. Rows are sorted by cluster, namespace, workload type,
workload name and period, then in the order of this table, so an unchanged input always yields
the same bytes.

{charges}

## Answers checked before they become rows

Cast AI does not promise the bucket size asked for, so `h` is never taken on trust: every bucket
`timestamp` of a cluster's answer must lie in the requested window on the grid `start + k ×
stepSeconds`, and the grid the answer actually uses (the greatest common divisor of all its offsets from
the window start, over all pages) must be `stepSeconds` itself. Anything else (daily buckets answering
an hourly request, hourly ones answering a daily request, shifted buckets) fails the run without
retries, naming the cluster, the endpoint and both bucket sizes; the cluster cost report of split mode
is checked the same way. When the buckets sit at two or more timestamps, their spacing alone decides:
`uptimeMinutes*` above the step (the definition does not say whether uptime counts pod-minutes) never
refuses such an answer; it is kept and counted in the `uptime-over-step` input warning. Buckets that all
sit at one single timestamp are ambiguous: a coarser answer (one daily bucket for an hourly request), or
a cluster that only ran in that hour. There a bucket with more uptime minutes than its step holds is
refused. When that timestamp is the window's last, the client also asks Cast AI once more, with the same
query for (start, end − step], reading its pages until one holds a bucket (an empty page may still carry a
cursor): a cluster that really ran only in the last bucket has no bucket there, so any bucket in that
answer means the lone timestamp was one coarser bucket, and the run fails the same
way (both bucket sizes named).

Spacing cannot reveal every other bucket size: finer buckets that all fall on the requested grid (a job
that ran 00:30–01:00 and 05:30–06:00, answered in 30-minute buckets), one coarser bucket alone that is
not the window's last, or one hourly bucket answering a daily request for a cluster that ran only in
the last hour. Read at the requested size they would export a multiple or a fraction of the cost. So
every answer is also checked against its own total, which does not depend on the bucket size: each
workload's buckets, read at the requested step (Σ (`costOnDemand` + `costSpot` + `costSpotFallback` +
`storageCost`) × h), must equal its `summary.totalCost`, within what 6-decimal rounding allows (half a
micro-dollar per summed rate and bucket hour, plus half for the summary). A mismatch fails the run the
same way, naming the workload and both totals (their ratio is the misread bucket size); it is raised
after the spacing checks, whose messages name both sizes. A workload listed without buckets is no data
(above), not checked; one sent without a `summary` is checked by its spacing alone and counted in the
`summary-missing` input warning. The cluster cost report (split mode, and the listing-price report of
`useListingPrices`) is checked the same way against its `summary.totalCost`, and a bucket timestamp it
lists twice is refused; a wrong bucket size there fails the day too instead of falling back to the
effective rate. Cast AI's definition gives the workload summary no description: that `totalCost` is
the buckets' rates times their hours, storage included, is inferred from the cluster report, whose
summary was checked against a live answer. If Cast AI's workload summary ever meant something else,
every run would fail with this message (never a wrong number).

Workload identity: the definition requires none of `workloadName`, `workloadType` and `namespace`.
A workload lacking one (or sending it blank) is exported with `{missing}` in its place (parentheses
cannot occur in Kubernetes names, namespaces or kinds, so it never collides with a real workload):
e.g. `ResourceId` `castai://{{clusterId}}/{{namespace}}/{{workloadType}}/{missing}` for a missing name,
`ResourceName` and the `x_CastAI*` columns likewise. Several such workloads of one cluster are
numbered (`(unknown 2)`, ...) in the order Cast AI lists them, never merged and never taken for
duplicates; their cost is always kept. (With `COLLECTION_INCLUDE_NAMESPACES` set, a workload without
namespace is outside every listed namespace and is left out like any other workload there.)
They are counted in `workloads_missing_identity` (materialisation metadata and manifest `extra`) and
in the `missing-workload-identity` input warning.

A cluster whose answer holds no bucket at all over all pages (no workload listed, or workloads listed
with empty `costMetrics`) has **no data** at Cast AI, which is not the same as costing nothing: the day
publishes the other clusters, and the cluster with the `noDataReason` Cast AI gave (`Unknown`,
`NoMetricsServer`, `AgentOutdated`; `none given` when the field is absent) is listed in
`clusters_without_data` (manifest `extra` and materialisation metadata) and named by the WARN-severity
asset check `focus_clusters_with_data`. A cluster the cluster list marks deleted (`deletedAt`) before the
day began is expected to have no data and is not listed, so it does not warn every day after its
deletion; on the day of its deletion it is still listed when it has no data.

## Prices

FOCUS {FOCUS_VERSION} requires `ListCost = ListUnitPrice × PricingQuantity` and
`ContractedCost = ContractedUnitPrice × PricingQuantity` without any tolerance. Both costs are
computed as exactly that float64 product, the same operation a reader performs, so a recomputation
matches bit for bit (CSV numbers are written in shortest round-trip form).

**What the three costs mean.** Cast AI's costs are already discounted: its cost reports take a
`useListingPrices` flag, "use listing prices instead of discounted prices", which is off by default.
So

- `BilledCost = EffectiveCost` is Cast AI's cost as reported (discounts included). Prices never change it.
- `ListCost` is the cost at list price, before any discount (Cast AI's listing prices for cloud
  clusters, Cast AI's default pricing for Anywhere clusters).
- `ContractedCost` is the list price less the discounts the exporter can attribute to the row (the
  negotiated rate). Where every discount that Cast AI applied is attributable, it equals BilledCost up
  to Cast AI's 6-decimal rounding; `ContractedCost − BilledCost` is the cost of discounts the exporter
  could not attribute (counted in the metadata, see below).

**ListUnitPrice**, by cluster kind:

1. Cloud clusters (every `providerType` except `anywhere`: eks, gke, aks, oke, openshift, kops, …):
   the cluster cost report at listing prices, `GET /v1/cost-reports/clusters/{{id}}/cost` with
   `useListingPrices=true`, fetched for the same window and bucket size as the workload costs (asset
   `castai_listing_prices`, one request per cluster and day). Per bucket, tier and resource the list
   unit price is the report's listing cost ÷ count (`cpuCostSpot ÷ cpuCountSpot`, `ramCost ÷ ramGib`,
   `gpuCost ÷ gpuCount`, `tpuCost ÷ tpuCount`, `storageCost ÷ storageGib`): the cluster's average list
   rate, the same for every workload of the cluster in that bucket. Spot rows get the spot list rate,
   so `ListCost` is what the same capacity lists at, not an on-demand comparison.
2. Anywhere clusters: Cast AI's default pricing (`anywhere-cluster-default-pricing`, documented "for
   Cast Anywhere clusters") for on-demand and spot-fallback CPU and memory rows. It is never used for
   cloud clusters, nor for spot rows: Cast AI's default and cluster prices carry no spot price, so an
   Anywhere spot row keeps its effective rate (rule 3) rather than an invented one.
3. Otherwise (no listing report — the request failed, or the bucket is missing, or the report counts
   zero of that resource — or spot and GPU/TPU/storage rows of Anywhere clusters): the effective rate
   of the row's SKU price, Σ BilledCost ÷ Σ PricingQuantity over the cluster's rows of the same
   resource, tier and charge period. FOCUS requires one list price per `SkuPriceId`, and a rate per
   row would give the workloads of one SKU price several. Over those rows ListCost sums to BilledCost,
   up to float rounding. A single row's ListCost is that rate × its quantity: the cluster's average,
   as under rule 1.
4. A row with cost but zero quantity adds nothing to that rate and gets it as its ListUnitPrice
   (`0` when no row of the group has a quantity); PricingQuantity
   stays the `0` Cast AI reported, ListCost is `0` and BilledCost keeps Cast AI's cost. FOCUS forbids a
   null unit price on a usage row, and inventing a quantity would misstate usage. (With a list price
   from rule 1 or 2 such a row keeps that price, and ListCost is `0` as well; a row with quantity but
   zero cost keeps its list price, so its ListCost shows what the usage lists at.)

**ContractedUnitPrice**, in order:

1. On-demand and spot-fallback CPU and memory rows of an Anywhere cluster with a custom price (Cast
   AI cluster price with `default: false`; the cluster-price listing is documented for Anywhere
   clusters only, so a cluster price of a cloud cluster is ignored): that price.
2. Rows with a list price from rule 1 or 2 above: the list price less every discount in scope, in
   the order Cast AI lists them. `TYPE_PERCENTAGE` multiplies by `1 − value`, `TYPE_FLAT` subtracts
   `value` (a negative value, e.g. `"-1"`, is valid and raises the price), `TYPE_FIXED` replaces the
   price. Each step is clamped at `0`: a price is never negative, and the next discount (a surcharge
   or a fixed price) applies to what the resource then costs, so `0.02 − 0.03` then a `"-0.01"`
   surcharge gives `0.01`. Rows where a step was clamped are counted (`negative_price_clamped_rows`,
   with a warning). A negative `TYPE_FIXED` value is not a price: never applied
   (`negative_fixed_price`). The sandbox prices Cast AI's discounted costs by the same rules, so
   ContractedCost equals Cast AI's cost wherever every discount of a row is evaluable.
3. Otherwise: ListUnitPrice (the effective rate already includes Cast AI's discounts: none is applied
   twice).

A discount is **in scope** of a row when all of these hold (an empty list is no constraint):

- `enabled`: true.
- `csp` (required): the cluster's cloud. eks and selfHostedWithEc2Nodes → `aws`, gke → `gcp`,
  aks → `azure`, oke → `oracle`. anywhere, openshift, kops and other providers may run on any cloud
  or on premises: their cloud is unknown, so no discount is evaluated for them.
- `target`: `TARGET_CPU` → CPU rows, `TARGET_MEMORY` → memory rows, `TARGET_INSTANCE` → CPU and
  memory rows (an instance is billed for its vCPUs and memory; GPUs and volumes are priced
  separately). Not applied: `TARGET_COMMITMENT` (a commitment-based discount, which FOCUS excludes
  from ContractedUnitPrice), `TARGET_CUSTOM_*` (custom instance shapes the rows cannot see),
  `TARGET_UNKNOWN`, and a `TYPE_FIXED` price or a `TYPE_FLAT` amount on `TARGET_INSTANCE` (a
  whole-instance price cannot be split into vCPU and GiB prices, and an amount off an instance's
  price, subtracted from every vCPU-hour and GiB-hour, would be taken off many times).
- `lifeCycles`: `LIFECYCLE_ON_DEMAND` matches on-demand and spot-fallback rows (spot-fallback
  capacity is on-demand instances started when spot was unavailable; its PricingCategory stays
  `Dynamic`), `LIFECYCLE_SPOT` matches spot rows. The list holds alternatives: `LIFECYCLE_UNKNOWN`
  (or an unknown value) matches no row while the known entries still apply; a list of unknown
  values only cannot be evaluated: not applied (`unknown_lifecycle`).
- `clusters`: contains the cluster id. `regions`: contains the cluster's region (a cluster without
  region matches no region list).
- `startDate` / `endDate` (`endDate` exclusive): the discount lowers the part of the charge period
  they cover. A row whose period a date cuts (a daily row and a discount from 10:30) gets the
  time-weighted mean: each part pays the list price less the discounts active over it, weighted by
  its share of the period. Cast AI's cost (as the sandbox models it) weights each moment by usage,
  which a daily row does not carry: such a row is exact when usage is even over the day (with the
  sandbox's diurnal usage a 50 % discount from 10:30 puts single daily rows up to 8.5 % off) and is
  counted (`time_weighted_rows`, with a warning). With `COLLECTION_GRANULARITY=hourly` only the hour
  a date falls in is weighted, and Cast AI's hourly buckets carry no finer usage than the hour.
- `families`, `instanceTypes`, `zones`, `os`: must be empty. They narrow the discount to nodes, and a
  workload row carries no node, so such a discount is **never applied** (applying it to the whole
  cluster would lower rows outside its scope).

**Metadata.** Each published day records what these rules did, in the materialisation metadata
(`pricing`) and the manifest (`extra.pricing`): `list_price_rows` (rows per list price source:
`listing_report`, `anywhere_default_pricing`, `effective_rate`), `listing_missing` (cloud clusters
without a listing report, which fell back to the effective rate; each also logged as a warning),
`discounted_rows` (rows each discount lowered), `negative_price_clamped_rows`, `time_weighted_rows`
(rows a discount date cuts, priced as the time-weighted mean; also logged as a warning), `discounts` (how many
Cast AI listed), `in_scope` (ids of those that may apply to the day's clusters) and `not_applied`,
every other discount counted by its reason: `disabled`, `unsupported_target`,
`unsupported_pricing_type`, `fixed_instance_price`, `flat_instance_amount`, `negative_fixed_price`,
`node_scope`, `unknown_csp`, `unknown_lifecycle`, `provider_without_csp` (the day's clusters are all
of a provider without known cloud), `out_of_scope` (csp, clusters or regions exclude every cluster of
the day) and `outside_dates`.

**Why this source, and the alternatives.** The definition offers listing prices on several cost
endpoints. The cluster cost report was chosen because it is one small, unpaged request per cluster
and day (one row per bucket, whatever the number of workloads), the split allocation mode already
fetches the same report, and its per-tier counts give a unit price per bucket, tier and resource.
Workload costs with `useListingPrices=true` would give a per-workload list price but double the
largest, paged fetch of the export; the on-demand rate of the cluster's instances is not in the
definition; the effective rate alone (kept as the fallback) makes ListCost sum to BilledCost and
shows no discount at all. Measured on the demo organisation (six clusters, four of them
cloud clusters, one hourly day): four requests added per day, 67 for a 100-cluster organisation;
timings in [performance](performance.md#list-prices).

`PricingCurrency` equals `BillingCurrency`, and the `PricingCurrency*` prices and cost equal their
billing-currency counterparts.

## SKUs

`SkuId` is `castai-k8s-{{resource}}`: one SKU per resource, identical across pricing categories as
FOCUS requires. `SkuPriceId` adds the tier and the cluster (prices differ per cluster and tier) and is
never null, so every FOCUS {FOCUS_VERSION} rule that cascades from a null SkuPriceId stays satisfied.
`SkuPriceDetails` is null.

## Tags

`Tags` is a JSON object with sorted keys, built as the original castai-focus did: the cluster's
Cast AI tags merged with the workload's Kubernetes labels, keys and values exactly as Cast AI
returned them (dots, slashes and unicode untouched, no prefix: both are user-defined and form the one
user-defined tag scheme). When a label and a cluster tag share a key, the workload label wins.

Which labels: with `FOCUS_TAG_ALLOWLIST` empty (the default), **all** of them. Cast AI returns a
workload's labels only for the keys named in `labelsToInclude`, so each day first lists the label
names of the day's clusters (`POST /v1/cost-reports/workload-labels/names`) and asks for all of them.
With `FOCUS_TAG_ALLOWLIST` set, only the listed keys are asked for and kept (for labels and cluster
tags alike). `Tags` is null when nothing remains. Tags are finalised by Cast AI (the labels it
reports for the workload); no inheritance is applied here.

In split mode (`FOCUS_ALLOCATION_MODE=split`) `Tags` holds the cluster tags (they are the same on the
cluster charge and its allocated rows, as FOCUS requires) and `AllocatedTags` the workload's labels
whose key is not already a cluster tag: there, the cluster tag wins.

## Accounts and providers

As in the original exporter, `BillingAccountId` is the organization that owns the cluster (the
cluster's `organizationId`; `CASTAI_ORGANIZATION_ID` for a cluster that names none, counted as
`clusters_without_organization_id` in the `castai_clusters` metadata) and `BillingAccountName` is
`FOCUS_BILLING_ACCOUNT_NAME`, else that id. `SubAccount*` is the enterprise child organization that
owns the cluster (type `Organization`, id and name) when `FOCUS_ENTERPRISE_ID` is set and the
enterprise's child-organization listing
(`GET /organization-management/v1/enterprises/{{enterpriseId}}/organizations`, followed over its pages)
names it; otherwise the cluster itself (type `Cluster`, cluster id and name). A listing answered
without `items`, or with an item without `id`, is a wrong shape: recorded as missing enrichment
(`enterprise_organizations` in `enrichment_missing`), logged, and the clusters fall back to
`Cluster` sub-accounts; it is never read as "no child organizations". The undocumented enterprise
usage report (`/v1/billing/enterprise/usage-report`) is no longer called: its path and shape are not
in the published definition, and the listing supersedes the only thing it was used for.
`InvoiceId` is `CASTAI-{{organizationId}}-{{YYYY}}-{{MM}}` of the billing period.

{hosts}

## Columns

{columns}
"""
