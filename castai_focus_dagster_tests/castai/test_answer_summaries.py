"""Bucket sizes the spacing of timestamps cannot reveal, caught by the answer's own `summary`.

Cast AI does not promise the bucket size asked for. Finer buckets that all fall on the requested grid,
or one coarser bucket alone, look like a correct answer; read at the requested size they export a
multiple or a fraction of the real cost. Each workload's `summary.totalCost` (and the cluster cost
report's) does not depend on the bucket size, so the buckets read at the requested step must total it.
The sandbox gives these answers (`Faults.active_hours` with `answer_step_seconds`, scripted `responses`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import numpy as np
import pyarrow.compute as pc
import pytest

from castai_focus_dagster.castai.assembler import WorkloadCostsAssembler
from castai_focus_dagster.castai.client import CastAIClient
from castai_focus_dagster.castai.columns import bucket_columns
from castai_focus_dagster.castai.decode import decode_cost_report
from castai_focus_dagster.castai.errors import WRONG_STEP, CastAIError, InvalidResponse
from castai_focus_dagster.castai.input_warnings import SUMMARY_MISSING, input_warnings
from castai_focus_dagster.castai.models import METRIC_COLUMNS
from castai_focus_dagster.castai.sandbox import CannedResponse, SandboxOrg, SandboxServer
from castai_focus_dagster.castai.validation import BucketWindow, bucketed_totals, summary_mismatches
from castai_focus_dagster.castai.wire import WorkloadCostItem, WorkloadItem

START = datetime(2026, 11, 1, tzinfo=UTC)
END = START + timedelta(days=1)
HOURLY = BucketWindow(START, END, 3600)


def _item(name: str, minutes: tuple[int, ...], rate: str, summary: str | None) -> WorkloadItem:
    """A workload with one bucket ending `minutes` after START each, at `rate` USD an hour."""
    buckets = [
        {
            "timestamp": (START + timedelta(minutes=m)).isoformat(),
            "costOnDemand": rate,
            "cpuCostOnDemand": rate,
        }
        for m in minutes
    ]
    item: dict[str, Any] = {
        "namespace": "ns",
        "workloadType": "Job",
        "workloadName": name,
        "costMetrics": buckets,
    }
    if summary is not None:
        item["summary"] = {"totalCost": summary}
    return msgspec.convert(item, WorkloadItem, strict=False)


def _table(*items: WorkloadItem, window: BucketWindow = HOURLY) -> Any:
    assembler = WorkloadCostsAssembler("c1", window)
    assembler.add(list(items))
    return assembler.table(), assembler


# ------------------------------------------------------------------------------------------------
# Pure functions


def test_the_buckets_total_each_workload_at_the_requested_step() -> None:
    items = [
        _item("a", (60, 120), "0.250000", None),
        _item("b", (), "0", None),
        _item("c", (60,), "1.5", None),
    ]
    buckets = [b for item in items for b in item.cost_metrics]
    _, columns = bucket_columns(buckets, WorkloadCostItem, METRIC_COLUMNS)
    counts = np.array([2, 0, 1])
    assert bucketed_totals(columns, counts, 3600).tolist() == [0.5, 0.0, 1.5]
    assert bucketed_totals(columns, counts, 86400).tolist() == [12.0, 0.0, 36.0]


def test_rounding_passes_and_any_other_bucket_size_or_nan_does_not() -> None:
    counts = np.array([24, 24, 24, 24, 1])
    bucketed = np.array([10.0, 10.0, 10.0, 10.0, 0.0])
    # 24 hourly buckets of 4 six-decimal rates: at most 24 x 4 x 0.5e-6 + 0.5e-6 apart.
    stated = np.array([10.0 + 4.8e-5, 10.0 - 4.9e-5, 20.0, 5.0, np.nan])
    assert summary_mismatches(bucketed, stated, counts, 3600).tolist() == [False, True, True, True, True]


# ------------------------------------------------------------------------------------------------
# The assembler: answers whose spacing looks right


def test_half_hour_buckets_that_all_fall_on_the_hour_are_refused() -> None:
    """A job that ran 00:30-01:00 and 05:30-06:00, answered in 30-minute buckets: both timestamps sit on
    the hourly grid, so spacing accepts them; read as hourly buckets they would export twice its cost."""
    half_hours = _item("cron", (60, 360), "0.150000", "0.150000")  # 2 x 0.15 $/h x 0.5 h
    with pytest.raises(InvalidResponse) as info:
        _table(half_hours)
    error = info.value
    assert (error.reason, error.field, error.workload) == (WRONG_STEP, "summary.totalCost", "ns/Job/cron")
    assert "0.300000 USD" in str(error) and "0.15" in str(error) and "stepSeconds=3600" in str(error)
    hourly = _item("cron", (60, 360), "0.150000", "0.300000")  # the same buckets, truly hourly
    table, _ = _table(hourly)
    assert pc.sum(table["costOnDemand"]).as_py() == pytest.approx(0.3)


def test_one_two_hour_bucket_alone_is_refused() -> None:
    """One 2-hour bucket at 02:00 (a workload that ran 01:00-02:00): one timestamp, not the window's
    last, uptime within an hour; read as one hourly bucket it would export half its cost."""
    with pytest.raises(InvalidResponse) as info:
        _table(_item("api", (120,), "0.150000", "0.300000"))
    assert info.value.reason == WRONG_STEP and info.value.field == "summary.totalCost"


def test_one_hourly_bucket_answering_a_daily_request_is_refused() -> None:
    """A cluster that ran only 23:00-24:00, answered hourly for a daily request: one bucket at the
    window's end, on the daily grid; read as a daily bucket it would export 24 times its cost."""
    daily = BucketWindow(START, END, 86400)
    with pytest.raises(InvalidResponse) as info:
        _table(_item("late", (1440,), "0.150000", "0.150000"), window=daily)
    assert info.value.reason == WRONG_STEP and "stepSeconds=86400" in str(info.value)
    table, _ = _table(_item("late", (1440,), "0.150000", "3.600000"), window=daily)
    assert table.num_rows == 1


def test_the_spacing_refusal_still_names_both_bucket_sizes() -> None:
    """Daily buckets at two timestamps answering an hourly request: the spacing message wins."""
    with pytest.raises(InvalidResponse) as info:
        _table(_item("a", (1440,), "1", "24"), _item("b", (1440, 2880), "1", "48"))
    assert info.value.field == "timestamp"


def test_a_workload_without_summary_is_checked_by_spacing_alone_and_counted() -> None:
    table, assembler = _table(_item("a", (60, 120), "1", None), _item("b", (60,), "1", "1.000000"))
    assert table.num_rows == 3 and assembler.without_summary == 1


def test_a_summary_without_buckets_is_no_data_not_a_refusal() -> None:
    table, assembler = _table(_item("a", (), "0", "5.000000"))
    assert table.num_rows == 0 and assembler.no_data() == "none given"


def test_a_bucketless_workload_listed_twice_is_one_workload() -> None:
    """Regression: a repeat of a workload without buckets raised a bare IndexError (no table held it)."""
    _, assembler = _table(_item("a", (), "0", None), _item("a", (), "0", None))
    assert assembler.duplicates == 1
    with pytest.raises(InvalidResponse) as info:
        _table(_item("a", (), "0", None), _item("a", (60,), "1", None))
    assert "listed twice" in str(info.value)


# ------------------------------------------------------------------------------------------------
# The client against the sandbox over HTTP


def _client(server: SandboxServer, org: SandboxOrg) -> CastAIClient:
    return CastAIClient(server.url, org.api_key, organization_id=org.organization_id, max_retries=0)


@pytest.mark.parametrize(
    ("step", "answered", "hours"),
    [(86400, 3600, {23}), (3600, 7200, {1})],
    ids=["hourly-for-daily-last-hour-only", "two-hourly-for-hourly-one-hour-only"],
)
def test_the_client_refuses_a_sparse_answer_of_another_bucket_size(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, step: int, answered: int, hours: set[int]
) -> None:
    cluster = sandbox_org.clusters[0].id
    sandbox.faults.active_hours = {rf"/{cluster}/workload-costs$": frozenset(hours)}
    sandbox.faults.answer_step_seconds = {rf"/{cluster}/workload-costs$": answered}
    with _client(sandbox, sandbox_org) as client, pytest.raises(CastAIError) as info:
        client.workload_costs(cluster, START, END, step)
    error = info.value
    assert (error.reason, error.cluster_id, error.endpoint) == (WRONG_STEP, cluster, "workload-costs")
    assert "summary.totalCost" in str(error) and f"stepSeconds={step}" in str(error)


def test_a_sparse_answer_of_the_requested_size_is_exported_whole(
    sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    """The same cluster, active only in the last hour and answered in hourly buckets: every workload
    has one bucket at the window's end; the summaries and the probe both accept it."""
    cluster = sandbox_org.clusters[0].id
    sandbox.faults.active_hours = {rf"/{cluster}/workload-costs$": frozenset({23})}
    with _client(sandbox, sandbox_org) as client:
        table = client.workload_costs(cluster, START, END, 3600)
    assert table.num_rows > 0
    assert set(table["timestamp"].cast("int64").to_pylist()) == {int(END.timestamp()) * 1_000_000}
    assert not input_warnings(table)


def test_the_client_warns_of_workloads_without_summary(
    sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    cluster = sandbox_org.clusters[0].id
    page = {"items": [msgspec.to_builtins(_item("a", (60, 120), "1", None))], "nextCursor": "", "count": "1"}
    body = json.dumps(page).encode()
    sandbox.faults.responses = {rf"/{cluster}/workload-costs$": lambda _q: CannedResponse(body=body)}
    with _client(sandbox, sandbox_org) as client:
        table = client.workload_costs(cluster, START, END, 3600)
    [warning] = input_warnings(table)
    assert (warning["rule"], warning["count"], warning["cluster_id"]) == (SUMMARY_MISSING, 1, cluster)


# ------------------------------------------------------------------------------------------------
# The cluster cost report


def _report_body(sandbox: SandboxServer, org: SandboxOrg, step: int) -> dict[str, Any]:
    """The sandbox's raw answer for the first cluster, to alter one field of it."""
    response = httpx.get(
        f"{sandbox.url}/v1/cost-reports/clusters/{org.clusters[0].id}/cost",
        params={"startTime": "2026-11-01T00:00:00Z", "endTime": "2026-11-02T00:00:00Z", "stepSeconds": step},
        headers={"X-API-Key": org.api_key},
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("step", [3600, 86400])
def test_the_cost_report_must_total_its_summary(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, step: int
) -> None:
    window = BucketWindow(START, END, step)
    body = _report_body(sandbox, sandbox_org, step)
    assert decode_cost_report(json.dumps(body).encode(), window).num_rows == 86400 // step
    total = float(body["summary"]["totalCost"])
    body["summary"]["totalCost"] = f"{total * 2:.6f}"  # what one half-size bucket per step would total
    with pytest.raises(InvalidResponse) as info:
        decode_cost_report(json.dumps(body).encode(), window)
    assert (info.value.reason, info.value.field) == (WRONG_STEP, "summary.totalCost")


def test_a_cost_report_bucket_listed_twice_is_refused(
    sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    """Regression: the listing-price path used the first of two buckets at one timestamp silently."""
    body = _report_body(sandbox, sandbox_org, 3600)
    body["items"].append(dict(body["items"][3], costOnDemand="0.300000"))
    with pytest.raises(InvalidResponse) as info:
        decode_cost_report(json.dumps(body).encode(), HOURLY)
    assert info.value.field == "timestamp" and "appears twice" in str(info.value)
