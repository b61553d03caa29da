"""The bad-input corpus: malformed Cast AI responses, each with its documented outcome and rule.

Every case starts from the sandbox's own clean answers for one cluster and one day (`Clean`) and
builds the scripted answers (`CannedResponse`s keyed by path regex) that replace them. The outcome is
one of:

- `refused`: the export fails with a `CastAIError` naming the endpoint, the cluster (per-cluster
  endpoints) and the field; nothing is published.
- `repaired`: a stated rule repairs the input; the client logs a warning, the warning travels with the
  data into the `castai_workload_costs` materialization metadata (`input_warnings`), and the money is
  exactly the clean input's.
- `recorded`: Cast AI answers that it has no data for the cluster; the day publishes without it and names
  the cluster and its reason (warning `no-data`, manifest, metadata, a WARN asset check).
- `degraded`: an enrichment endpoint is unusable; the export continues without it (warning in the run
  log, `missing` in the `castai_enrichment_context` metadata); cost rows are unaffected.
- `accepted`: valid per the API contract although unusual; exported exactly, no warning.

`docs/reliability.md` carries the table `render_table()` produces; a test keeps the two identical.
Regenerate it with `python -m castai_focus_dagster_tests.reliability.corpus`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from castai_focus_dagster.castai.endpoints import (
    CLUSTER_PRICES,
    CLUSTERS,
    DEFAULT_PRICING,
    DISCOUNTS,
    WORKLOAD_COSTS,
)
from castai_focus_dagster.castai.input_warnings import (
    CONFLICTING_LABEL_VALUES,
    CONTROL_CHARACTERS_IN_LABELS,
    DUPLICATE_WORKLOAD,
    MISSING_WORKLOAD_IDENTITY,
    NO_DATA,
    SUMMARY_MISSING,
    UPTIME_OVER_STEP,
)
from castai_focus_dagster.castai.sandbox.faults import CannedResponse, Responder

Outcome = Literal["refused", "repaired", "recorded", "degraded", "accepted"]
JSON = dict[str, Any]

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
TABLE_BEGIN = "<!-- bad-input table: generated from castai_focus_dagster_tests/reliability/corpus.py -->"
TABLE_END = "<!-- end of bad-input table -->"
TIER_FIELDS = ("costOnDemand", "costSpot", "costSpotFallback")
DELETE = object()  # as a changed value: remove the field
HTML_PAGE = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
# The EnrichmentContext field each enrichment endpoint fills (its key in `missing`).
ENRICHMENT_KEYS = {
    CLUSTER_PRICES: "cluster_prices",
    DISCOUNTS: "discounts",
    DEFAULT_PRICING: "default_pricing",
}


@dataclass(frozen=True)
class Clean:
    """The sandbox's clean answers for the corpus cluster and day, as parsed JSON."""

    cluster_id: str
    organization_id: str
    workloads: list[JSON]  # workload-costs items of the day, one page
    clusters: JSON
    cluster_prices: JSON
    discounts: JSON

    def items(self) -> list[JSON]:
        return copy.deepcopy(self.workloads)

    def paid_bucket(self) -> tuple[int, int]:
        """(workload, bucket) of the first bucket with on-demand CPU cost: where a changed number shows."""
        for i, item in enumerate(self.workloads):
            for j, bucket in enumerate(item["costMetrics"]):
                if Decimal(bucket["cpuCostOnDemand"]) > 0:
                    return i, j
        raise AssertionError("the corpus cluster has no on-demand CPU cost")

    def total(self) -> Decimal:
        """Cast AI's cost of the day, computed from the strings: Σ (cost of every tier + storage) × 1 h."""
        return sum(
            (
                sum((Decimal(bucket[f]) for f in (*TIER_FIELDS, "storageCost")), Decimal(0))
                for item in self.workloads
                for bucket in item["costMetrics"]
            ),
            Decimal(0),
        )


Build = Callable[[Clean], dict[str, Responder]]


@dataclass(frozen=True)
class BadInput:
    id: str
    endpoint: str
    bad_input: str  # what is wrong with the response, in words
    outcome: Outcome
    rule: str  # what the exporter does, and why
    build: Build = field(repr=False)
    field: str | None = None  # the field a refusal names
    warning: str | None = None  # the InputWarning rule id of a repair
    same_rows: bool = False  # the FOCUS rows equal the clean input's exactly


# Answer builders -----------------------------------------------------------------------------------


def _workload_costs_path(clean: Clean) -> str:
    return rf"/clusters/{re.escape(clean.cluster_id)}/workload-costs$"


def _body(value: JSON | bytes) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value, ensure_ascii=False).encode()


def always(body: JSON | bytes, status: int = 200, content_type: str = "application/json") -> Responder:
    answer = CannedResponse(status, _body(body), content_type)
    return lambda _query: answer


def pages(*bodies: JSON | bytes) -> Responder:
    """Page i answers the cursor "p{i}" (page 0: no cursor); JSON pages get nextCursor and count set
    unless they carry their own."""
    answers = [CannedResponse(200, _body(b)) for b in bodies]

    def respond(query: Mapping[str, list[str]]) -> CannedResponse | None:
        cursor = (query.get("page.cursor") or [""])[0]
        index = int(cursor[1:]) if cursor.startswith("p") else 0
        return answers[index] if index < len(answers) else CannedResponse(400, b'{"message":"bad cursor"}')

    return respond


def workload_pages(
    clean: Clean, *item_pages: list[JSON], count: int | None = None, **extra: Any
) -> Responder:
    """Pages of workload items chained by cursors p1, p2, ...; `count` defaults to the distinct workloads."""
    distinct = {
        (i.get("namespace"), i.get("workloadType"), i.get("workloadName")) for p in item_pages for i in p
    }
    total = len(distinct) if count is None else count
    bodies: list[JSON | bytes] = []
    for index, items in enumerate(item_pages):
        cursor = f"p{index + 1}" if index + 1 < len(item_pages) else ""
        page = {"clusterId": clean.cluster_id, "items": items, "nextCursor": cursor, "count": str(total)}
        bodies.append(page | extra)
    return pages(*bodies)


def one_page(transform: Callable[[list[JSON], Clean], object]) -> Build:
    """A single page of the clean items after `transform` changed them in place."""

    def build(clean: Clean) -> dict[str, Responder]:
        items = clean.items()
        transform(items, clean)
        return {_workload_costs_path(clean): workload_pages(clean, items)}

    return build


def in_paid_bucket(**changes: Any) -> Build:
    """Change (or DELETE) fields of the first bucket that has on-demand CPU cost."""

    def change(items: list[JSON], clean: Clean) -> None:
        i, j = clean.paid_bucket()
        for name, value in changes.items():
            if value is DELETE:
                del items[i]["costMetrics"][j][name]
            else:
                items[i]["costMetrics"][j][name] = value

    return one_page(change)


def raw_workload_costs(
    body: JSON | bytes, status: int = 200, content_type: str = "application/json"
) -> Build:
    return lambda clean: {_workload_costs_path(clean): always(body, status, content_type)}


def clean_page_cut_in_half(clean: Clean) -> dict[str, Responder]:
    body = _body({"clusterId": clean.cluster_id, "items": clean.items(), "nextCursor": ""})
    return {_workload_costs_path(clean): always(body[: len(body) // 2])}


def nan_literal(clean: Clean) -> dict[str, Responder]:
    i, j = clean.paid_bucket()
    items = clean.items()
    items[i]["costMetrics"][j]["gpuCountSpot"] = "__NAN__"
    body = _body({"clusterId": clean.cluster_id, "items": items, "nextCursor": ""})
    return {_workload_costs_path(clean): always(body.replace(b'"__NAN__"', b"NaN"))}


def split_in_two(clean: Clean, repeat: Callable[[JSON], JSON] | None = None) -> tuple[list[JSON], list[JSON]]:
    """The clean items as two pages; the second starts with (a changed copy of) the first page's last."""
    items = clean.items()
    half = max(1, len(items) // 2)
    first, second = items[:half], items[half:]
    if repeat is not None:
        second = [repeat(copy.deepcopy(first[-1])), *second]
    return first, second


def duplicate_across_pages(clean: Clean) -> dict[str, Responder]:
    first, second = split_in_two(clean, repeat=lambda item: item)
    return {_workload_costs_path(clean): workload_pages(clean, first, second)}


def duplicate_in_page(clean: Clean) -> dict[str, Responder]:
    items = clean.items()
    return {_workload_costs_path(clean): workload_pages(clean, [*items, copy.deepcopy(items[0])])}


def conflicting_duplicate(clean: Clean) -> dict[str, Responder]:
    def costlier(item: JSON) -> JSON:
        for bucket in item["costMetrics"]:
            for name in ("cpuCostOnDemand", "costOnDemand"):
                bucket[name] = f"{Decimal(bucket[name]) + Decimal('0.5'):.6f}"
        return item

    first, second = split_in_two(clean, repeat=costlier)
    return {_workload_costs_path(clean): workload_pages(clean, first, second)}


def empty_page_with_cursor(clean: Clean) -> dict[str, Responder]:
    first, second = split_in_two(clean)
    return {_workload_costs_path(clean): workload_pages(clean, first, [], second)}


def repeating_cursor(clean: Clean) -> dict[str, Responder]:
    first, second = split_in_two(clean)
    body = {"clusterId": clean.cluster_id, "items": first, "nextCursor": "p1", "count": "999"}
    loop = {"clusterId": clean.cluster_id, "items": second, "nextCursor": "p1", "count": "999"}
    return {_workload_costs_path(clean): pages(body, loop)}


def short_of_count(clean: Clean) -> dict[str, Responder]:
    items = clean.items()
    return {_workload_costs_path(clean): workload_pages(clean, items, count=len(items) + 3)}


def omit_zero_metrics(items: list[JSON], clean: Clean) -> None:
    for item in items:
        for bucket in item["costMetrics"]:
            for name in [n for n, v in bucket.items() if n != "timestamp" and Decimal(v) == 0]:
                del bucket[name]


def shift_zone(items: list[JSON], clean: Clean) -> None:
    """Every timestamp written with a +02:00 offset: the same instants."""
    for item in items:
        for bucket in item["costMetrics"]:
            hour = int(bucket["timestamp"][11:13]) + 2
            day = int(bucket["timestamp"][8:10]) + hour // 24
            bucket["timestamp"] = f"{bucket['timestamp'][:8]}{day:02d}T{hour % 24:02d}:00:00+02:00"


def _first_item(**changes: Any) -> Build:
    def change(items: list[JSON], clean: Clean) -> None:
        for name, value in changes.items():
            if value is DELETE:
                del items[0][name]
            else:
                items[0][name] = value

    return one_page(change)


def _nameless(count: int) -> Build:
    """The first `count` workloads moved into the first one's namespace and type, without a name."""

    def change(items: list[JSON], clean: Clean) -> None:
        for item in items[:count]:
            item["namespace"], item["workloadType"] = items[0]["namespace"], items[0]["workloadType"]
            del item["workloadName"]

    return one_page(change)


def _no_data(reason: str | None) -> Build:
    body: JSON = {"clusterId": "", "items": [], "nextCursor": "", "count": "0"}
    if reason is not None:
        body["noDataReason"] = reason
    return lambda clean: {_workload_costs_path(clean): always(body | {"clusterId": clean.cluster_id})}


def _listed_without_buckets(clean: Clean) -> dict[str, Responder]:
    """Every workload listed, none with a bucket, and a `noDataReason`."""
    items = clean.items()
    for item in items:
        item["costMetrics"] = []
    return {_workload_costs_path(clean): workload_pages(clean, items, noDataReason="NoMetricsServer")}


def uptime_over_step(items: list[JSON], clean: Clean) -> None:
    """Hourly buckets as requested, each claiming 600 uptime minutes (pod-minutes, perhaps)."""
    for item in items:
        for bucket in item["costMetrics"]:
            bucket["uptimeMinutesOnDemand"] = "600"


def daily_buckets(items: list[JSON], clean: Clean) -> None:
    """Each workload's day as one bucket ending at midnight: its rates averaged over the day, its uptime
    minutes summed (a bucket counts the minutes the workload ran in it)."""
    for item in items:
        buckets = item["costMetrics"]
        day = {
            name: f"{sum(Decimal(b.get(name, '0')) for b in buckets) / (1 if 'uptime' in name else 24):.6f}"
            for name in buckets[0]
            if name != "timestamp"
        }
        for tier in ("OnDemand", "Spot", "SpotFallback"):  # keep cost{Tier} = Σ its parts exactly
            parts = (f"{p}{tier}" for p in ("cpuCost", "ramCost", "gpuCost", "tpuCost"))
            day[f"cost{tier}"] = f"{sum(Decimal(day.get(p, '0')) for p in parts):.6f}"
        item["costMetrics"] = [{"timestamp": "2026-11-02T00:00:00Z", **day}]


def half_hour_summaries(items: list[JSON], clean: Clean) -> None:
    """Each summary half its buckets' total: what 30-minute buckets that all end on the hour total."""
    for item in items:
        item["summary"]["totalCost"] = f"{Decimal(item['summary']['totalCost']) / 2:.6f}"


def without_summaries(items: list[JSON], clean: Clean) -> None:
    for item in items:
        del item["summary"]


def add_bucket(timestamp: str | None = None) -> Build:
    """A copy of the first workload's first bucket, at `timestamp` (None: the same timestamp)."""

    def change(items: list[JSON], clean: Clean) -> None:
        extra = copy.deepcopy(items[0]["costMetrics"][0])
        if timestamp is not None:
            extra["timestamp"] = timestamp
        items[0]["costMetrics"].append(extra)

    return one_page(change)


def huge_label_map(items: list[JSON], clean: Clean) -> None:
    items[0]["labels"] = [{"name": f"example.com/label-{n:04d}", "value": f"v{n}"} for n in range(3000)]


def control_character_labels(items: list[JSON], clean: Clean) -> None:
    items[0]["labels"] = [
        {"name": "team", "value": "pay\u0000ments"},
        {"name": "cost\ncenter", "value": "42"},
        {"name": "app", "value": "checkout"},
    ]


def conflicting_label_values(items: list[JSON], clean: Clean) -> None:
    items[0]["labels"] = [
        {"name": "version", "value": "v1"},
        {"name": "app", "value": "checkout"},
        {"name": "version", "value": "v2"},
    ]


def invalid_utf8_label(clean: Clean) -> dict[str, Responder]:
    """A label value holding a byte that is not UTF-8 (Latin-1 "é"): JSON text must be UTF-8."""
    items = clean.items()
    items[0]["labels"] = [{"name": "team", "value": "caf__LATIN1__"}, {"name": "app", "value": "checkout"}]
    body = _body({"clusterId": clean.cluster_id, "items": items, "nextCursor": "", "count": str(len(items))})
    return {_workload_costs_path(clean): always(body.replace(b"__LATIN1__", b"\xe9"))}


def clusters_answer(change: Callable[[JSON, Clean], JSON | bytes]) -> Build:
    return lambda clean: {
        r"/v1/kubernetes/external-clusters$": always(change(copy.deepcopy(clean.clusters), clean))
    }


def without_cluster_id(body: JSON, clean: Clean) -> JSON:
    for cluster in body["items"]:
        if cluster["id"] == clean.cluster_id:
            del cluster["id"]
    return body


def negative_cluster_price(clean: Clean) -> dict[str, Responder]:
    body = copy.deepcopy(clean.cluster_prices)
    body["items"][0]["cpuHourlyPrice"] = "-0.031000"
    return {r"/clusters/prices$": always(body)}


def truncated_discounts(clean: Clean) -> dict[str, Responder]:
    body = _body(clean.discounts)
    return {r"/v1/discounts$": always(body[: len(body) // 2])}


def html_default_pricing(clean: Clean) -> dict[str, Responder]:
    return {r"/anywhere-cluster-default-pricing$": always(HTML_PAGE, content_type="text/html")}


ERROR_BODY = {"message": "Internal Server Error", "fieldViolations": []}
VIOLATION_BODY = {
    "message": "invalid request",
    "fieldViolations": [{"field": "stepSeconds", "description": "unsupported step"}],
}


# The corpus ----------------------------------------------------------------------------------------

_DECODE = "refused while decoding: the value is named, with its workload"
_PLACEHOLDER = "repaired: exported under the placeholder `(unknown)` (counted); its cost is kept"
_RECORDED = (
    "recorded: Cast AI has no data, not a zero cost; the day publishes the other clusters and names this "
    "one and its reason in the manifest, the metadata and a WARN check"
)
_LOUD = "refused: a wrong number would otherwise be exported"

CASES: tuple[BadInput, ...] = (
    # Identity of a workload
    # (The definition requires none of the identity fields: a missing one is not an error.)
    BadInput("missing-workload-name", WORKLOAD_COSTS, "a workload without `workloadName`", "repaired",
             _PLACEHOLDER, _first_item(workloadName=DELETE), warning=MISSING_WORKLOAD_IDENTITY),
    BadInput("blank-namespace", WORKLOAD_COSTS, "`namespace` is whitespace only", "repaired",
             _PLACEHOLDER + "; a blank value counts as missing (FOCUS forbids blank strings)",
             _first_item(namespace="  "), warning=MISSING_WORKLOAD_IDENTITY),
    BadInput("missing-workload-type", WORKLOAD_COSTS, "a workload without `workloadType`", "repaired",
             _PLACEHOLDER, _first_item(workloadType=DELETE), warning=MISSING_WORKLOAD_IDENTITY),
    BadInput("missing-identity-twice", WORKLOAD_COSTS, "two workloads of one namespace and type without "
             "`workloadName`", "repaired",
             "repaired: numbered placeholders `(unknown)`, `(unknown 2)`: never merged, never a duplicate",
             _nameless(2), warning=MISSING_WORKLOAD_IDENTITY),
    # No data
    BadInput("no-data-reason", WORKLOAD_COSTS, "`items: []` with `noDataReason: NoMetricsServer`",
             "recorded", _RECORDED, _no_data("NoMetricsServer"), warning=NO_DATA),
    BadInput("empty-without-reason", WORKLOAD_COSTS, "`items: []` without `noDataReason`", "recorded",
             _RECORDED + " (reason recorded as `none given`: protojson omits the default `Unknown`)",
             _no_data(None), warning=NO_DATA),
    BadInput("items-without-buckets", WORKLOAD_COSTS, "every workload listed with `costMetrics: []`, "
             "`noDataReason: NoMetricsServer`", "recorded", _RECORDED + " (no bucket over all items is no "
             "data, however many workloads are listed)", _listed_without_buckets, warning=NO_DATA),
    BadInput("uptime-over-step", WORKLOAD_COSTS, "hourly buckets as requested whose `uptimeMinutesOnDemand` "
             "is 600", "repaired", "kept, with a warning: the buckets are spaced as requested, and uptime "
             "may count pod-minutes; only a lone last bucket is judged by its uptime",
             one_page(uptime_over_step), warning=UPTIME_OVER_STEP, same_rows=True),
    BadInput("unknown-workload-type", WORKLOAD_COSTS, "`workloadType` is a kind the exporter has never seen "
             "(`SparkApplication`)", "accepted",
             "accepted: exported as ResourceType / x_CastAIWorkloadType verbatim; costs do not depend on it",
             _first_item(workloadType="SparkApplication")),
    # Missing and mistyped values
    BadInput("omitted-zero-metrics", WORKLOAD_COSTS, "every zero-valued metric omitted from the buckets",
             "accepted", "accepted: protojson may omit zero values; a missing metric is 0",
             one_page(omit_zero_metrics), same_rows=True),
    BadInput("missing-tier-cost", WORKLOAD_COSTS, "`costOnDemand` missing while its CPU and RAM costs are "
             "not zero", "refused",
             "refused: a tier cost must equal the sum of its resource costs (±5e-6 $/h)",
             in_paid_bucket(costOnDemand=DELETE), field="costOnDemand"),
    BadInput("tier-cost-mismatch", WORKLOAD_COSTS, "`costOnDemand` larger than cpu + ram + gpu + tpu cost",
             "refused", "refused: the API contradicts itself, either figure could be wrong",
             in_paid_bucket(costOnDemand="99.000000"), field="costOnDemand"),
    BadInput("metric-wrong-type", WORKLOAD_COSTS, "`cpuCountSpot` is a JSON boolean", "refused", _DECODE,
             in_paid_bucket(cpuCountSpot=True), field="cpuCountSpot"),
    BadInput("metric-is-object", WORKLOAD_COSTS, "`ramCostSpot` is an object (`{\"units\": \"0\"}`)",
             "refused", _DECODE, in_paid_bucket(ramCostSpot={"units": "0"}), field="ramCostSpot"),
    BadInput("decimal-with-unit", WORKLOAD_COSTS, "`cpuCostOnDemand` is `\"0.41 USD\"`", "refused", _DECODE,
             in_paid_bucket(cpuCostOnDemand="0.41 USD"), field="cpuCostOnDemand"),
    BadInput("decimal-comma", WORKLOAD_COSTS, "`ramGibOnDemand` is `\"4,5\"` (decimal comma)", "refused",
             _DECODE, in_paid_bucket(ramGibOnDemand="4,5"), field="ramGibOnDemand"),
    BadInput("empty-decimal", WORKLOAD_COSTS, "`storageCost` is an empty string", "refused", _DECODE,
             in_paid_bucket(storageCost=""), field="storageCost"),
    BadInput("null-decimal", WORKLOAD_COSTS, "`storageGib` is `null`", "refused", _DECODE,
             in_paid_bucket(storageGib=None), field="storageGib"),
    BadInput("nan-string", WORKLOAD_COSTS, "`ramGibSpot` is `\"NaN\"`", "refused",
             "refused: metrics must be finite numbers >= 0", in_paid_bucket(ramGibSpot="NaN"),
             field="ramGibSpot"),
    BadInput("infinity-string", WORKLOAD_COSTS, "`podCountOnDemand` is `\"Infinity\"`", "refused",
             "refused: metrics must be finite numbers >= 0", in_paid_bucket(podCountOnDemand="Infinity"),
             field="podCountOnDemand"),
    BadInput("nan-literal", WORKLOAD_COSTS, "a bare `NaN` literal (not JSON)", "refused",
             "refused: invalid JSON", nan_literal),
    BadInput("number-overflow", WORKLOAD_COSTS, "`gpuCountOnDemand` is `\"1e400\"` (overflows a double)",
             "refused", _DECODE, in_paid_bucket(gpuCountOnDemand="1e400"), field="gpuCountOnDemand"),
    BadInput("negative-cost", WORKLOAD_COSTS, "`cpuCostOnDemand` is negative", "refused",
             "refused: costs must be >= 0 (credits are not workload usage)",
             in_paid_bucket(cpuCostOnDemand="-0.010000"), field="cpuCostOnDemand"),
    BadInput("negative-count", WORKLOAD_COSTS, "`podCountOnDemand` is `\"-1\"`", "refused",
             "refused: counts must be >= 0", in_paid_bucket(podCountOnDemand="-1"), field="podCountOnDemand"),
    BadInput("absurd-cost", WORKLOAD_COSTS, "`costOnDemand` and `cpuCostOnDemand` of 10⁹ $/h", "refused",
             "refused: above 10⁶ $/h per workload a cost is a unit or encoding error",
             in_paid_bucket(costOnDemand="1000000000.000000", cpuCostOnDemand="1000000000.000000"),
             field="costOnDemand"),
    BadInput("absurd-quantity", WORKLOAD_COSTS, "`ramGibOnDemand` of 5·10¹² GiB", "refused",
             "refused: above 10⁹ a count, GiB or pod-minute figure is an error",
             in_paid_bucket(ramGibOnDemand="5000000000000"), field="ramGibOnDemand"),
    # Time
    BadInput("timestamp-outside-window", WORKLOAD_COSTS, "a bucket ending the next day", "refused",
             "refused: buckets must end in (start, end] of the requested day",
             add_bucket("2026-11-02T05:00:00Z"), field="timestamp"),
    BadInput("timestamp-unaligned", WORKLOAD_COSTS, "a bucket ending at 01:30", "refused",
             "refused: bucket ends must sit on the step grid", add_bucket("2026-11-01T01:30:00Z"),
             field="timestamp"),
    BadInput("daily-buckets-for-hourly-request", WORKLOAD_COSTS, "one daily bucket (ending 24:00) per "
             "workload for an hourly request", "refused",
             "refused (permanent, no retry): the bucket size answered is not the one requested; read as "
             "hourly it would be 1/24 of the cost", one_page(daily_buckets), field="timestamp"),
    BadInput("summary-half-the-buckets", WORKLOAD_COSTS, "hourly-spaced buckets whose `summary.totalCost` "
             "is half their total (30-minute buckets that all end on the hour)", "refused",
             "refused (permanent, no retry): the buckets do not total their summary at the requested "
             "size; read as hourly they would be twice the cost", one_page(half_hour_summaries),
             field="summary.totalCost"),
    BadInput("summary-missing", WORKLOAD_COSTS, "workloads without `summary`", "repaired",
             "kept, with a warning: their bucket size is checked by spacing alone",
             one_page(without_summaries), warning=SUMMARY_MISSING, same_rows=True),
    BadInput("timestamp-without-zone", WORKLOAD_COSTS, "a timestamp without a UTC offset", "refused",
             "refused: a local time cannot be placed in a UTC charge period",
             in_paid_bucket(timestamp="2026-11-01T01:00:00"), field="timestamp"),
    BadInput("timestamp-other-offset", WORKLOAD_COSTS, "every timestamp written with a `+02:00` offset",
             "accepted", "accepted: the same instants; charge periods are UTC", one_page(shift_zone),
             same_rows=True),
    BadInput("duplicate-bucket", WORKLOAD_COSTS, "a workload lists the same bucket twice", "refused",
             "refused: summing would double the cost, keeping one would guess", add_bucket(None),
             field="timestamp"),
    # Duplicates and paging
    BadInput("duplicate-workload-across-pages", WORKLOAD_COSTS, "the next page repeats the previous page's "
             "last workload, identical", "repaired",
             "repaired: the identical repeat is dropped (first copy kept)", duplicate_across_pages,
             warning=DUPLICATE_WORKLOAD, same_rows=True),
    BadInput("duplicate-workload-in-page", WORKLOAD_COSTS, "a page lists a workload twice, identical",
             "repaired", "repaired: the identical repeat is dropped (first copy kept)", duplicate_in_page,
             warning=DUPLICATE_WORKLOAD, same_rows=True),
    BadInput("conflicting-duplicate-workload", WORKLOAD_COSTS, "a workload repeated on the next page with "
             "other costs", "refused", "refused: no way to tell which copy is right", conflicting_duplicate,
             field="items"),
    BadInput("empty-page-with-cursor", WORKLOAD_COSTS, "an empty page that still carries a next cursor",
             "accepted", "accepted: the cursor is followed; the page cap and loop check bound it",
             empty_page_with_cursor, same_rows=True),
    BadInput("repeating-cursor", WORKLOAD_COSTS, "a page returns a cursor already followed", "refused",
             "refused: a cursor loop would never end or would repeat data", repeating_cursor),
    BadInput("fewer-workloads-than-count", WORKLOAD_COSTS, "the last page arrives with 3 workloads fewer "
             "than `count` announced", "refused", "refused: workloads would silently be missing",
             short_of_count, field="count"),
    # Whole bodies
    BadInput("truncated-json", WORKLOAD_COSTS, "the body is cut in half", "refused", "refused: invalid JSON",
             clean_page_cut_in_half),
    BadInput("empty-body", WORKLOAD_COSTS, "200 with an empty body", "refused", "refused: invalid JSON",
             raw_workload_costs(b"")),
    BadInput("html-200", WORKLOAD_COSTS, "200 with a proxy's HTML error page", "refused",
             "refused: not JSON (named as an HTML document)",
             raw_workload_costs(HTML_PAGE, content_type="text/html")),
    BadInput("html-502", WORKLOAD_COSTS, "502 with an HTML page, every time", "refused",
             "retried (502 is transient), then refused naming the status",
             raw_workload_costs(HTML_PAGE, status=502, content_type="text/html")),
    BadInput("error-body-200", WORKLOAD_COSTS, "200 whose body is Cast AI's error envelope", "refused",
             "refused: read leniently it would be a cluster without cost", raw_workload_costs(ERROR_BODY),
             field="message"),
    BadInput("error-body-200-with-violation", WORKLOAD_COSTS, "200 whose error envelope names a field",
             "refused", "refused, naming the field the envelope names", raw_workload_costs(VIOLATION_BODY),
             field="stepSeconds"),
    BadInput("items-not-a-list", WORKLOAD_COSTS, "`items` is an object", "refused", _DECODE,
             lambda clean: {_workload_costs_path(clean): always({"items": clean.items()[0]})}, field="items"),
    # Labels
    BadInput("huge-label-map", WORKLOAD_COSTS, "a workload with 3000 labels", "accepted",
             "accepted: all kept in Tags (filter them with FOCUS_TAG_ALLOWLIST)", one_page(huge_label_map)),
    BadInput("control-characters-in-labels", WORKLOAD_COSTS, "label key or value with NUL / newline",
             "repaired", "repaired: those labels are left out of Tags (Kubernetes forbids them); "
             "costs unaffected", one_page(control_character_labels), warning=CONTROL_CHARACTERS_IN_LABELS),
    BadInput("conflicting-label-values", WORKLOAD_COSTS, "a workload lists the label `version` twice, "
             "as `v1` and `v2`", "repaired", "repaired: that label is left out of Tags (which value holds "
             "cannot be told); costs unaffected", one_page(conflicting_label_values),
             warning=CONFLICTING_LABEL_VALUES),
    BadInput("invalid-utf8-label", WORKLOAD_COSTS, "a label value holding a non-UTF-8 byte (Latin-1 `é`)",
             "refused", "refused at once, not retried (the same bytes would come back): JSON text is UTF-8",
             invalid_utf8_label, field="labels"),
    # Cluster list
    BadInput("cluster-without-id", CLUSTERS, "a cluster without `id`", "refused",
             "refused: a cluster without id cannot be exported", clusters_answer(without_cluster_id),
             field="id"),
    BadInput("clusters-error-body", CLUSTERS, "200 whose body is the error envelope", "refused",
             "refused: read leniently it would be an organisation without clusters",
             clusters_answer(lambda _body, _clean: ERROR_BODY), field="message"),
    # Enrichment
    BadInput("negative-cluster-price", CLUSTER_PRICES, "a negative `cpuHourlyPrice`", "degraded",
             "degraded: prices of the list/contracted columns fall back; BilledCost unaffected",
             negative_cluster_price),
    BadInput("truncated-discounts", DISCOUNTS, "the discounts body is cut in half", "degraded",
             "degraded: contracted prices without discounts; BilledCost unaffected", truncated_discounts),
    BadInput("html-default-pricing", DEFAULT_PRICING, "200 with an HTML page", "degraded",
             "degraded: Anywhere list prices = billed rate; BilledCost unaffected", html_default_pricing),
)  # fmt: skip


# The documentation table --------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(cases: tuple[BadInput, ...] = CASES) -> str:
    """The Markdown table of docs/reliability.md, between its markers."""
    lines = [
        TABLE_BEGIN,
        "",
        "| # | case | endpoint | bad input | outcome | field named | rule |",
        "|---:|---|---|---|---|---|---|",
    ]
    for number, case in enumerate(cases, start=1):
        named = (
            f"`{case.field}`" if case.field else ("warning `" + case.warning + "`" if case.warning else "")
        )
        lines.append(
            f"| {number} | `{case.id}` | {case.endpoint} | {_cell(case.bad_input)} | **{case.outcome}** | "
            f"{named} | {_cell(case.rule)} |"
        )
    lines += ["", TABLE_END]
    return "\n".join(lines)


def documented_table(text: str) -> str:
    """The table part of a document (markers included); empty when the markers are missing."""
    start, end = text.find(TABLE_BEGIN), text.find(TABLE_END)
    return text[start : end + len(TABLE_END)] if start >= 0 and end > start else ""


def write_table(doc: Path = DOC) -> None:
    """Replace the table in docs/reliability.md by the one generated from CASES."""
    text = doc.read_text(encoding="utf-8")
    current = documented_table(text)
    if not current:
        raise SystemExit(f"{doc}: markers {TABLE_BEGIN!r} ... {TABLE_END!r} not found")
    doc.write_text(text.replace(current, render_table()), encoding="utf-8")


if __name__ == "__main__":
    write_table()
