"""Answers the Cast AI API definition allows and a careless client misreads, from the wire to FOCUS.

Each is produced on demand by the sandbox (`Faults.answer_step_seconds`, `no_data`,
`no_data_keep_items`, `omit_identity`, `deleted_clusters`, scripted `responses`) over real HTTP and
driven through the decoding functions, the client, a real Dagster run and the `dagster asset
materialize` CLI: a bucket size other than the one requested is refused (a lone last bucket settled by
its uptime and one probe request), an answer without any bucket is recorded as "no data" (manifest,
metadata, WARN check) while the other clusters publish, unless the cluster was deleted before the day,
and a workload without identity fields is exported under a placeholder with its whole cost.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import msgspec
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from castai_focus_dagster.castai.assembler import WorkloadCostsAssembler
from castai_focus_dagster.castai.client import CastAIClient
from castai_focus_dagster.castai.errors import CastAIError, InvalidResponse
from castai_focus_dagster.castai.input_warnings import (
    MISSING_WORKLOAD_IDENTITY,
    NO_DATA,
    UPTIME_OVER_STEP,
    input_warnings,
)
from castai_focus_dagster.castai.models import Cluster
from castai_focus_dagster.castai.sandbox import CannedResponse, SandboxOrg, SandboxServer
from castai_focus_dagster.castai.validation import BucketWindow
from castai_focus_dagster.castai.wire import MISSING_IDENTITY, WorkloadItem
from castai_focus_dagster.storage.keys import data_key, manifest_key
from castai_focus_dagster_tests.defs.test_pipeline import DAY, PREFIX, _one_day_cli, run

START = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
END = START + timedelta(days=1)


def client_for(server: SandboxServer, org: SandboxOrg) -> CastAIClient:
    return CastAIClient(server.url, org.api_key, organization_id=org.organization_id, max_retries=0)


def micros(*hours: int) -> np.ndarray:
    start = int(START.timestamp()) * 1_000_000
    return np.array([start + h * 3_600_000_000 for h in hours], dtype=np.int64)


# ------------------------------------------------------------------------------------------------
# Pure functions


def test_the_grid_of_dense_hourly_buckets_is_the_requested_step() -> None:
    window = BucketWindow(START, END, 3600)
    grid = window.grid_seconds(micros(*range(1, 25)))
    assert grid == 3600 and window.step_problem(grid) is None


def test_a_daily_bucket_answering_an_hourly_request_is_a_wrong_step() -> None:
    window = BucketWindow(START, END, 3600)
    problem = window.step_problem(window.grid_seconds(micros(24)))
    assert problem is not None and "86400" in problem and "3600" in problem


def test_hourly_buckets_answering_a_daily_request_are_a_wrong_step() -> None:
    window = BucketWindow(START, START + timedelta(days=2), 86400)
    problem = window.step_problem(window.grid_seconds(micros(1, 2, 24)))
    assert problem is not None and "answered 3600s buckets" in problem and "86400" in problem


def test_the_grid_accumulates_over_pages() -> None:
    """A first page holding only the window's last bucket does not decide the step alone."""
    window = BucketWindow(START, END, 3600)
    first = window.grid_seconds(micros(24))
    assert first == 86400
    assert window.grid_seconds(micros(3, 4), first) == 3600


def _item(**identity: str) -> dict[str, Any]:
    bucket = {"timestamp": "2026-11-01T01:00:00Z", "costOnDemand": "1.000000", "cpuCostOnDemand": "1.000000"}
    return {**identity, "costMetrics": [bucket]}


def test_items_missing_identity_fields_become_distinct_placeholder_workloads() -> None:
    items = [
        msgspec.convert(i, WorkloadItem, strict=False)
        for i in (
            _item(namespace="ns", workloadType="Deployment"),  # no workloadName
            _item(namespace="ns", workloadType="Deployment", workloadName=""),  # blank: the same
            _item(workloadType="Job", workloadName="batch"),  # no namespace
            _item(namespace="ns", workloadType="Deployment", workloadName="api"),
        )
    ]
    assembler = WorkloadCostsAssembler("c1", BucketWindow(START, END, 3600))
    assembler.add(items)
    table = assembler.table()
    names = list(
        zip(
            *(table[c].cast("string").to_pylist() for c in ("namespace", "workload_type", "workload_name")),
            strict=True,
        )
    )
    assert names == [
        ("ns", "Deployment", MISSING_IDENTITY),
        ("ns", "Deployment", "(unknown 2)"),
        (MISSING_IDENTITY, "Job", "batch"),
        ("ns", "Deployment", "api"),
    ]
    assert assembler.missing_identity == 3
    assert pc.sum(table["costOnDemand"]).as_py() == 4.0  # nothing merged, nothing dropped


def _last_hour_item(uptime_minutes: str) -> WorkloadItem:
    bucket = {
        "timestamp": "2026-11-02T00:00:00Z",  # the window's last bucket only
        "costOnDemand": "1.000000",
        "cpuCostOnDemand": "1.000000",
        "uptimeMinutesOnDemand": uptime_minutes,
    }
    item = {"namespace": "ns", "workloadType": "Job", "workloadName": "late", "costMetrics": [bucket]}
    return msgspec.convert(item, WorkloadItem, strict=False)


def test_a_cluster_that_only_ran_in_the_last_hour_is_not_a_daily_answer() -> None:
    """Regression: one bucket at the window's end looks like a daily answer; its uptime says it is not."""
    assembler = WorkloadCostsAssembler("c1", BucketWindow(START, END, 3600))
    assembler.add([_last_hour_item("45")])
    assert assembler.table().num_rows == 1


def test_a_single_daily_bucket_is_refused_by_its_uptime() -> None:
    assembler = WorkloadCostsAssembler("c1", BucketWindow(START, END, 3600))
    assembler.add([_last_hour_item("1440")])
    with pytest.raises(InvalidResponse) as info:
        assembler.table()
    assert info.value.reason == "wrong step" and "86400s buckets" in str(info.value)
    assert "stepSeconds=3600" in str(info.value)


def test_an_empty_answer_is_no_data_with_the_reason_given_or_none() -> None:
    given = WorkloadCostsAssembler("c1", BucketWindow(START, END, 3600))
    given.add([])
    given.note_no_data_reason("NoMetricsServer")
    assert given.no_data() == "NoMetricsServer"
    silent = WorkloadCostsAssembler("c1", BucketWindow(START, END, 3600))
    silent.add([])
    assert silent.no_data() == "none given"
    listed = WorkloadCostsAssembler("c1", BucketWindow(START, END, 3600))
    listed.add([msgspec_item()])
    listed.note_no_data_reason("Unknown")  # the sandbox and Cast AI send it alongside items too
    assert listed.no_data() is None


def _hourly_item(name: str, hours: tuple[int, ...], uptime_minutes: str) -> WorkloadItem:
    buckets = [
        {
            "timestamp": (START + timedelta(hours=h)).isoformat(),
            "costOnDemand": "1.000000",
            "cpuCostOnDemand": "1.000000",
            "uptimeMinutesOnDemand": uptime_minutes,
        }
        for h in hours
    ]
    item = {
        "namespace": "ns",
        "workloadType": "Deployment",
        "workloadName": name,
        "costMetrics": buckets,
        "summary": {"totalCost": f"{len(hours):.6f}"},  # 1 USD an hour, hourly buckets
    }
    return msgspec.convert(item, WorkloadItem, strict=False)


def test_correctly_spaced_buckets_are_never_refused_for_their_uptime() -> None:
    """Regression: 600 uptime minutes in an hourly bucket (pod-minutes?) refused a well-spaced day."""
    assembler = WorkloadCostsAssembler("c1", BucketWindow(START, END, 3600))
    assembler.add([_hourly_item("a", (3, 4), "600"), _hourly_item("b", (24,), "60")])
    assert assembler.table().num_rows == 3
    assert assembler.uptime_over_step == 600.0
    assert not assembler.single_last_bucket()


def test_only_buckets_at_the_window_end_ask_for_the_probe() -> None:
    late = WorkloadCostsAssembler("c1", BucketWindow(START, END, 3600))
    late.add([_hourly_item("a", (24,), "30"), _hourly_item("b", (24,), "60")])
    assert late.table().num_rows == 2 and late.single_last_bucket()
    assert late.uptime_over_step == 0.0
    earlier = WorkloadCostsAssembler("c1", BucketWindow(START, END, 3600))
    earlier.add([_hourly_item("a", (12,), "30")])
    assert earlier.table().num_rows == 1 and not earlier.single_last_bucket()
    one_step = WorkloadCostsAssembler("c1", BucketWindow(END - timedelta(hours=1), END, 3600))
    one_step.add([_hourly_item("a", (24,), "30")])
    assert one_step.table().num_rows == 1 and not one_step.single_last_bucket()  # nothing to probe


def test_items_without_any_bucket_are_no_data() -> None:
    """Regression: listed workloads with `costMetrics: []` hid the noDataReason ($0 and no record)."""
    bare = WorkloadCostsAssembler("c1", BucketWindow(START, END, 3600))
    bare.add([_hourly_item("a", (), "0"), _hourly_item("b", (), "0")])
    bare.note_no_data_reason("NoMetricsServer")
    assert bare.table().num_rows == 0 and bare.no_data() == "NoMetricsServer"
    silent = WorkloadCostsAssembler("c1", BucketWindow(START, END, 3600))
    silent.add([_hourly_item("a", (), "0")])
    assert silent.no_data() == "none given"
    filtered = WorkloadCostsAssembler("c1", BucketWindow(START, END, 3600), include_namespaces=["other"])
    filtered.add([_hourly_item("a", (5,), "60")])  # a bucket arrived, in a namespace left out
    assert filtered.table().num_rows == 0 and filtered.no_data() is None


def msgspec_item() -> WorkloadItem:
    return msgspec.convert(
        _item(namespace="ns", workloadType="Job", workloadName="x"), WorkloadItem, strict=False
    )


# ------------------------------------------------------------------------------------------------
# The client against the sandbox over HTTP


@pytest.mark.parametrize("endpoint", ["workload-costs", "cost"])
def test_the_client_refuses_daily_buckets_for_an_hourly_request(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, endpoint: str
) -> None:
    cluster = sandbox_org.clusters[0].id
    sandbox.faults.answer_step_seconds = {rf"/{cluster}/{endpoint}$": 86400}
    with client_for(sandbox, sandbox_org) as client, pytest.raises(CastAIError) as info:
        if endpoint == "cost":
            client.cluster_cost_report(cluster, START, END, 3600)
        else:
            client.workload_costs(cluster, START, END, 3600)
    error = info.value
    assert error.reason == "wrong step" and error.cluster_id == cluster
    assert "86400s buckets" in str(error) and "stepSeconds=3600" in str(error)
    assert sandbox.faults.injected["answer"] >= 1


def test_the_client_records_no_data_and_its_reason(sandbox: SandboxServer, sandbox_org: SandboxOrg) -> None:
    quiet, silent = sandbox_org.clusters[0].id, sandbox_org.clusters[1].id
    sandbox.faults.no_data = {f"/{quiet}/": "NoMetricsServer", f"/{silent}/": None}
    with client_for(sandbox, sandbox_org) as client:
        tables = {cid: client.workload_costs(cid, START, END, 3600) for cid in (quiet, silent)}
    for cid, reason in ((quiet, "NoMetricsServer"), (silent, "none given")):
        assert tables[cid].num_rows == 0
        [warning] = input_warnings(tables[cid])
        assert (warning["rule"], warning["cluster_id"], warning["detail"]) == (NO_DATA, cid, reason)


def _page(*items: WorkloadItem) -> bytes:
    return json.dumps(
        {"items": [msgspec.to_builtins(i) for i in items], "nextCursor": "", "count": str(len(items))}
    ).encode()


@pytest.mark.parametrize("earlier", [False, True], ids=["only-last-bucket", "coarser-bucket"])
def test_the_client_settles_a_lone_last_bucket_with_one_probe(
    sandbox: SandboxServer, sandbox_org: SandboxOrg, earlier: bool
) -> None:
    """All buckets at the window's end: the same query for (start, end - step] must have none."""
    cluster = sandbox_org.clusters[0].id
    asked: list[str] = []
    probe_end = (END - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def answer(query: Any) -> CannedResponse:
        asked.append(query["endTime"][0])
        if query["endTime"][0] != probe_end:
            return CannedResponse(body=_page(_hourly_item("late", (24,), "45")))
        # A coarser (daily) answer: for a 23-hour window, still one bucket for the whole span.
        return CannedResponse(body=_page(_hourly_item("late", (24,), "45")) if earlier else _page())

    sandbox.faults.responses = {rf"/{cluster}/workload-costs$": answer}
    with client_for(sandbox, sandbox_org) as client:
        if not earlier:
            assert client.workload_costs(cluster, START, END, 3600).num_rows == 1
        else:
            with pytest.raises(CastAIError) as info:
                client.workload_costs(cluster, START, END, 3600)
            error = info.value
            assert (error.reason, error.cluster_id, error.endpoint) == (
                "wrong step",
                cluster,
                "workload-costs",
            )
            assert "86400s buckets" in str(error) and "stepSeconds=3600" in str(error)
    assert asked.count(probe_end) == 1 and len(asked) == 2


def test_the_probe_reads_past_an_empty_first_page(sandbox: SandboxServer, sandbox_org: SandboxOrg) -> None:
    """Regression: the probe read only its first page; an empty page with a cursor hid the earlier
    bucket that proves the lone last bucket a daily one (exported as hourly: 1/24 of the day)."""
    cluster = sandbox_org.clusters[0].id
    probe_end = (END - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    asked: list[tuple[str, str | None]] = []

    def answer(query: Any) -> CannedResponse:
        cursor = query.get("page.cursor", [None])[0]
        asked.append((query["endTime"][0], cursor))
        if query["endTime"][0] != probe_end:
            return CannedResponse(body=_page(_hourly_item("late", (24,), "45")))
        if cursor is None:
            return CannedResponse(body=json.dumps({"items": [], "nextCursor": "p2", "count": "1"}).encode())
        return CannedResponse(body=_page(_hourly_item("late", (23,), "45")))

    sandbox.faults.responses = {rf"/{cluster}/workload-costs$": answer}
    with client_for(sandbox, sandbox_org) as client, pytest.raises(CastAIError) as info:
        client.workload_costs(cluster, START, END, 3600)
    assert info.value.reason == "wrong step" and "86400s buckets" in str(info.value)
    assert asked[1:] == [(probe_end, None), (probe_end, "p2")]


def test_the_probe_ignores_workloads_of_excluded_namespaces(
    sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    """An excluded namespace running all day must not make a kept late workload a "coarser bucket"."""
    cluster = sandbox_org.clusters[0].id
    system = msgspec.structs.replace(_hourly_item("dns", tuple(range(1, 25)), "60"), namespace="kube-system")
    late = _hourly_item("late", (24,), "45")

    def answer(query: Any) -> CannedResponse:
        full_day = query["endTime"][0] == END.strftime("%Y-%m-%dT%H:%M:%SZ")
        return CannedResponse(body=_page(system, late) if full_day else _page(system))

    sandbox.faults.responses = {rf"/{cluster}/workload-costs$": answer}
    with client_for(sandbox, sandbox_org) as client:
        table = client.workload_costs(cluster, START, END, 3600, exclude_namespaces=["kube-system"])
    assert table["workload_name"].cast("string").to_pylist() == ["late"]
    assert sandbox.faults.injected["canned"] == 2  # the answer and its probe


def test_the_client_keeps_long_uptime_on_a_well_spaced_answer_as_a_warning(
    sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    cluster = sandbox_org.clusters[0].id
    body = _page(_hourly_item("busy", (1, 2, 3), "240"))
    sandbox.faults.responses = {rf"/{cluster}/workload-costs$": lambda _q: CannedResponse(body=body)}
    with client_for(sandbox, sandbox_org) as client:
        table = client.workload_costs(cluster, START, END, 3600)
    assert table.num_rows == 3
    [warning] = input_warnings(table)
    assert (warning["rule"], warning["cluster_id"]) == (UPTIME_OVER_STEP, cluster)


def test_the_client_records_no_data_when_workloads_are_listed_without_buckets(
    sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    quiet, silent = sandbox_org.clusters[0].id, sandbox_org.clusters[1].id
    sandbox.faults.no_data_keep_items = {f"/{quiet}/": "NoMetricsServer", f"/{silent}/": None}
    with client_for(sandbox, sandbox_org) as client:
        tables = {cid: client.workload_costs(cid, START, END, 3600) for cid in (quiet, silent)}
    for cid, reason in ((quiet, "NoMetricsServer"), (silent, "none given")):
        assert tables[cid].num_rows == 0
        [warning] = input_warnings(tables[cid])
        assert (warning["rule"], warning["cluster_id"], warning["detail"]) == (NO_DATA, cid, reason)


def test_the_client_decodes_deleted_at(sandbox: SandboxServer, sandbox_org: SandboxOrg) -> None:
    gone = sandbox_org.clusters[0].id
    sandbox.faults.deleted_clusters = {gone: "2026-10-30T08:15:00Z"}
    with client_for(sandbox, sandbox_org) as client:
        clusters = {c.id: c for c in client.list_clusters()}
    assert clusters[gone].deleted_at == datetime(2026, 10, 30, 8, 15, tzinfo=UTC)
    assert clusters[gone].deleted_by(START) and not clusters[gone].deleted_by(START - timedelta(days=2))
    assert all(c.deleted_at is None for cid, c in clusters.items() if cid != gone)
    assert Cluster.from_json(json.loads(json.dumps(clusters[gone].to_json()))) == clusters[gone]


def test_the_client_keeps_every_dollar_of_workloads_without_names(
    sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    cluster = sandbox_org.clusters[0].id
    sandbox.faults.omit_identity = {f"/{cluster}/": ("workloadName",)}
    with client_for(sandbox, sandbox_org) as client:
        table = client.workload_costs(cluster, START, END, 3600)
    hours = table["step_seconds"].to_numpy() / 3600
    compute = sum(table[f"cost{t}"].to_numpy() for t in ("OnDemand", "Spot", "SpotFallback"))
    total = float(((compute + table["storageCost"].to_numpy()) * hours).sum())
    assert total == pytest.approx(sandbox_org.expected_cluster_total(cluster, START, END), abs=1e-4)
    names = set(table["workload_name"].cast("string").to_pylist())
    assert names and all(n.startswith("(unknown") for n in names)
    [warning] = input_warnings(table)
    assert warning["rule"] == MISSING_WORKLOAD_IDENTITY
    columns = [table[c].cast("string").to_pylist() for c in ("namespace", "workload_type", "workload_name")]
    workloads = set(zip(*columns, strict=True))
    kinds = set(zip(columns[0], columns[1], strict=True))
    # One placeholder workload per nameless item: numbered within a namespace and type, none merged.
    assert warning["count"] == len(workloads) > len(kinds)


# ------------------------------------------------------------------------------------------------
# Through Dagster: the job on a real instance, the sandbox over HTTP, real files


def _published(out: Path, org: SandboxOrg) -> Path:
    return out / data_key(PREFIX, org.organization_id, date.fromisoformat(DAY), "parquet")


def _events(instance: dg.DagsterInstance, run_id: str, kind: str) -> list[Any]:
    return [
        e for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.event_type_value == kind
    ]


@pytest.mark.parametrize(
    ("endpoint", "mode"),
    [("workload-costs", "workload"), ("cost", "split"), ("cost", "workload")],
    ids=["workload-costs", "cluster-cost-in-split-mode", "listing-prices"],
)
def test_a_wrong_bucket_size_fails_the_run_and_publishes_nothing(
    exporter_env: Path,
    sandbox: SandboxServer,
    sandbox_org: SandboxOrg,
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str,
    mode: str,
) -> None:
    monkeypatch.setenv("FOCUS_ALLOCATION_MODE", mode)
    cluster = sandbox_org.clusters[0].id
    sandbox.faults.answer_step_seconds = {rf"/{cluster}/{endpoint}$": 86400}
    with dg.instance_for_test() as instance:
        result = run([DAY], instance)
        assert not result.success
        assert not _events(instance, result.run_id, "STEP_UP_FOR_RETRY")  # permanent: no retries
        failures = _events(instance, result.run_id, "STEP_FAILURE")
    # /cost feeds both the split-mode cluster costs and the listing prices: each step fails on its own.
    assert len(failures) == (2 if mode == "split" else 1)
    for failure in failures:
        text = str(failure.dagster_event.event_specific_data)
        assert cluster in text and ("cluster-cost" if endpoint == "cost" else "workload-costs") in text
        assert "86400s buckets" in text and "stepSeconds=3600" in text
    assert not _published(exporter_env, sandbox_org).exists()
    assert not (exporter_env / manifest_key(PREFIX, date.fromisoformat(DAY))).exists()


def test_a_cluster_without_data_is_recorded_and_the_others_publish(
    exporter_env: Path, sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    quiet = sandbox_org.clusters[0]
    sandbox.faults.no_data = {f"/{quiet.id}/workload-costs$": "NoMetricsServer"}
    with dg.instance_for_test() as instance:
        result = run([DAY], instance)
        assert result.success
        meta = result.asset_materializations_for_node("focus_cost_and_usage")[0].metadata
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    expected = [{"cluster_id": quiet.id, "cluster_name": quiet.name, "reason": "NoMetricsServer"}]
    manifest = json.loads((exporter_env / manifest_key(PREFIX, date.fromisoformat(DAY))).read_text())
    assert manifest["extra"]["clusters_without_data"] == expected
    assert meta["clusters_without_data"].value == expected
    check = checks["focus_clusters_with_data"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert quiet.name in (check.description or "") and "NoMetricsServer" in (check.description or "")
    assert all(c.passed for name, c in checks.items() if name != "focus_clusters_with_data")
    table = pq.read_table(_published(exporter_env, sandbox_org))
    assert quiet.id not in set(table["x_CastAIClusterId"].to_pylist())
    others = sum(sandbox_org.expected_cluster_total(c.id, START, END) for c in sandbox_org.clusters[1:])
    assert pc.sum(table["BilledCost"]).as_py() == pytest.approx(others, abs=1e-4)


@pytest.mark.parametrize(
    ("deleted_at", "listed"),
    [("2026-10-31T09:30:00Z", False), ("2026-11-01T12:00:00Z", True)],
    ids=["deleted-before-the-day", "deleted-during-the-day"],
)
def test_a_deleted_cluster_without_data_warns_only_until_its_deletion(
    exporter_env: Path, sandbox: SandboxServer, sandbox_org: SandboxOrg, deleted_at: str, listed: bool
) -> None:
    """Regression: a deleted cluster Cast AI still lists had "no data" and warned every day, forever."""
    gone = sandbox_org.clusters[0]
    sandbox.faults.deleted_clusters = {gone.id: deleted_at}
    sandbox.faults.no_data = {f"/{gone.id}/workload-costs$": None}  # also during the day of deletion
    with dg.instance_for_test() as instance:
        result = run([DAY], instance)
        assert result.success
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    manifest = json.loads((exporter_env / manifest_key(PREFIX, date.fromisoformat(DAY))).read_text())
    expected = [{"cluster_id": gone.id, "cluster_name": gone.name, "reason": "none given"}] if listed else []
    assert manifest["extra"]["clusters_without_data"] == expected
    assert checks["focus_clusters_with_data"].passed is not listed
    table = pq.read_table(_published(exporter_env, sandbox_org))
    others = sum(sandbox_org.expected_cluster_total(c.id, START, END) for c in sandbox_org.clusters[1:])
    assert pc.sum(table["BilledCost"]).as_py() == pytest.approx(others, abs=1e-4)


def test_workloads_without_names_are_published_under_the_placeholder_with_their_cost(
    exporter_env: Path, sandbox: SandboxServer, sandbox_org: SandboxOrg
) -> None:
    cluster = sandbox_org.clusters[0]
    sandbox.faults.omit_identity = {f"/{cluster.id}/workload-costs$": ("workloadName", "namespace")}
    with dg.instance_for_test() as instance:
        result = run([DAY], instance)
        assert result.success
        meta = result.asset_materializations_for_node("focus_cost_and_usage")[0].metadata
        assert all(c.passed for c in result.get_asset_check_evaluations())
    table = pq.read_table(_published(exporter_env, sandbox_org))
    mine = table.filter(pc.equal(table["x_CastAIClusterId"], cluster.id))
    assert set(mine["x_CastAINamespace"].to_pylist()) == {MISSING_IDENTITY}
    assert all(name.startswith("(unknown") for name in mine["ResourceName"].to_pylist())
    assert mine["ResourceId"].null_count == 0
    assert pc.sum(mine["BilledCost"]).as_py() == pytest.approx(
        sandbox_org.expected_cluster_total(cluster.id, START, END), abs=1e-4
    )
    total = sum(sandbox_org.expected_cluster_total(c.id, START, END) for c in sandbox_org.clusters)
    assert pc.sum(table["BilledCost"]).as_py() == pytest.approx(total, abs=1e-4)
    assert meta["workloads_missing_identity"].value == pc.count_distinct(mine["ResourceId"]).as_py() > 0


def _accounts(table: Any) -> set[tuple[str, ...]]:
    columns = (
        "x_CastAIClusterId",
        "BillingAccountId",
        "BillingAccountName",
        "SubAccountId",
        "SubAccountName",
    )
    return set(zip(*(table[c].to_pylist() for c in columns), strict=True))


def test_accounts_are_the_cluster_organisation_and_its_child_organisation(
    exporter_env: Path, sandbox_org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOCUS_ENTERPRISE_ID", sandbox_org.enterprise_id)
    monkeypatch.setenv("CASTAI_PAGE_LIMIT", "1")  # the child listing is followed over its pages
    with dg.instance_for_test() as instance:
        result = run([DAY], instance)
        assert result.success
        meta = result.asset_materializations_for_node("focus_cost_and_usage")[0].metadata
    assert meta["enrichment_missing"].value == {}
    children = {c.id: c.name for c in sandbox_org.child_organizations}
    table = pq.read_table(_published(exporter_env, sandbox_org))
    assert _accounts(table) == {
        (c.id, c.organization_id, c.organization_id, c.organization_id, children[c.organization_id])
        for c in sandbox_org.clusters
    }
    assert set(table["SubAccountType"].to_pylist()) == {"Organization"}
    # The clusters belong to the enterprise's children, not to the configured (key's) organisation.
    assert sandbox_org.organization_id not in set(table["BillingAccountId"].to_pylist())


def test_a_wrongly_shaped_child_listing_falls_back_to_clusters_and_is_recorded(
    exporter_env: Path, sandbox: SandboxServer, sandbox_org: SandboxOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOCUS_ENTERPRISE_ID", sandbox_org.enterprise_id)
    monkeypatch.setenv("FOCUS_BILLING_ACCOUNT_NAME", "Acme")
    sandbox.faults.responses = {
        "/organizations$": lambda _query: CannedResponse(body=b'{"nextPageCursor":""}')
    }
    with dg.instance_for_test() as instance:
        result = run([DAY], instance)
        assert result.success
        meta = result.asset_materializations_for_node("focus_cost_and_usage")[0].metadata
    assert meta["enrichment_missing"].value == {"enterprise_organizations": "invalid response"}
    manifest = json.loads((exporter_env / manifest_key(PREFIX, date.fromisoformat(DAY))).read_text())
    assert manifest["extra"]["enrichment_missing"] == {"enterprise_organizations": "invalid response"}
    table = pq.read_table(_published(exporter_env, sandbox_org))
    assert _accounts(table) == {(c.id, c.organization_id, "Acme", c.id, c.name) for c in sandbox_org.clusters}
    assert set(table["SubAccountType"].to_pylist()) == {"Cluster"}


# ------------------------------------------------------------------------------------------------
# Properties of the assembler: no identity gaps lose or merge money, the grid is the answer's


identity_value = st.one_of(st.none(), st.just(""), st.just("  "), st.sampled_from(["a", "b"]))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            identity_value,
            identity_value,
            identity_value,
            st.lists(st.integers(min_value=1, max_value=24), min_size=1, max_size=4, unique=True),
            st.floats(min_value=0.0, max_value=1e3),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_every_item_keeps_its_cost_and_its_own_identity(items: list[tuple[Any, ...]]) -> None:
    decoded = [
        msgspec.convert(
            {
                **{
                    k: v
                    for k, v in zip(("namespace", "workloadType", "workloadName"), ids, strict=True)
                    if v is not None
                },
                "costMetrics": [
                    {
                        "timestamp": f"2026-11-01T{h:02d}:00:00Z" if h < 24 else "2026-11-02T00:00:00Z",
                        "costOnDemand": cost,
                        "cpuCostOnDemand": cost,
                    }
                    for h in hours
                ],
            },
            WorkloadItem,
            strict=False,
        )
        for *ids, hours, cost in items
    ]
    complete = [d for d in decoded if not d.missing_identity()]
    complete_keys = {(d.namespace, d.workload_type, d.workload_name) for d in complete}
    assembler = WorkloadCostsAssembler("c1", BucketWindow(START, END, 3600))
    try:
        assembler.add(decoded)
        table = assembler.table()
    except (
        Exception
    ) as exc:  # only a conflicting repeat of a complete identity, or a coarser grid, may refuse
        assert "listed twice" in str(exc) or "wrong bucket size" in str(exc), exc
        return
    expected = sum(cost * len(hours) for *_ids, hours, cost in items)
    repeats_dropped = len(complete) - len(complete_keys)
    placeholders = [d for d in decoded if d.missing_identity()]
    assert assembler.missing_identity == len(placeholders)
    columns = [table[c].cast("string").to_pylist() for c in ("namespace", "workload_type", "workload_name")]
    identities = set(zip(*columns, strict=True))
    assert len(identities) == len(complete_keys) + len(placeholders)  # none merged
    if not repeats_dropped:
        assert pc.sum(table["costOnDemand"]).as_py() == pytest.approx(expected, rel=1e-12, abs=1e-9)
    assert all(v.strip() for column in columns for v in column)  # never blank in FOCUS


@settings(max_examples=100, deadline=None)
@given(st.sets(st.integers(min_value=1, max_value=24), min_size=1), st.sampled_from([7200, 21600, 86400]))
def test_buckets_of_a_coarser_grid_are_always_refused_and_dense_hourly_ones_never(
    hours: set[int], answered: int
) -> None:
    window = BucketWindow(START, END, 3600)
    coarse = sorted({h * 3600 // answered * answered for h in hours} - {0}) or [answered]
    problem = window.step_problem(window.grid_seconds(micros(*(s // 3600 for s in coarse))))
    assert problem is not None and "requested stepSeconds=3600" in problem
    dense = sorted(hours | {min(hours) + 1 if min(hours) < 24 else 23})  # two neighbouring hours at least
    assert window.step_problem(window.grid_seconds(micros(*dense))) is None


# ------------------------------------------------------------------------------------------------
# The same answers through the real CLI: `dagster asset materialize --select '*' --partition DAY`


def _setup_wrong_step(org: SandboxOrg, faults: Any, env: dict[str, str]) -> None:
    faults.answer_step_seconds = {rf"/{org.clusters[0].id}/workload-costs$": 86400}


def _setup_no_data(org: SandboxOrg, faults: Any, env: dict[str, str]) -> None:
    faults.no_data_keep_items = {rf"/{org.clusters[0].id}/workload-costs$": "NoMetricsServer"}


def _setup_missing_identity(org: SandboxOrg, faults: Any, env: dict[str, str]) -> None:
    faults.omit_identity = {rf"/{org.clusters[0].id}/workload-costs$": ("workloadName", "namespace")}


def _setup_child_listing(org: SandboxOrg, faults: Any, env: dict[str, str]) -> None:
    env["FOCUS_ENTERPRISE_ID"] = org.enterprise_id
    faults.responses = {"/organizations$": lambda _query: CannedResponse(body=b'{"nextPageCursor":""}')}


def _setup_all_labels(org: SandboxOrg, faults: Any, env: dict[str, str]) -> None:
    """The default: an empty FOCUS_TAG_ALLOWLIST asks for every label."""


def _check_evaluations(home: Path) -> dict[str, Any]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [record] = instance.get_run_records()
        events = _events(instance, record.dagster_run.run_id, "ASSET_CHECK_EVALUATION")
    return {
        e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data for e in events
    }


@pytest.mark.parametrize(
    "answer", ["wrong-step", "no-data", "missing-identity", "child-listing-shape", "all-labels-tags"]
)
def test_each_wire_answer_through_dagster_asset_materialize(
    exporter_env: Path, sandbox: SandboxServer, sandbox_org: SandboxOrg, tmp_path: Path, answer: str
) -> None:
    """One day from the CLI for each answer, its outcome compared with the sandbox's own truth."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    setup = {
        "wrong-step": _setup_wrong_step,
        "no-data": _setup_no_data,
        "missing-identity": _setup_missing_identity,
        "child-listing-shape": _setup_child_listing,
        "all-labels-tags": _setup_all_labels,
    }[answer]
    setup(sandbox_org, sandbox.faults, env)
    proc = _one_day_cli(env, "asset materialize", DAY)
    output = proc.stdout + proc.stderr
    published = _published(exporter_env, sandbox_org)
    manifest_path = exporter_env / manifest_key(PREFIX, date.fromisoformat(DAY))
    first = sandbox_org.clusters[0]
    total = sum(sandbox_org.expected_cluster_total(c.id, START, END) for c in sandbox_org.clusters)
    if answer == "wrong-step":
        assert proc.returncode != 0
        assert not published.exists() and not manifest_path.exists()
        assert first.id in output and "86400s buckets" in output and "stepSeconds=3600" in output
        return
    assert proc.returncode == 0, output[-3000:]
    table = pq.read_table(published)
    manifest = json.loads(manifest_path.read_text())
    mine = table.filter(pc.equal(table["x_CastAIClusterId"], first.id))
    if answer == "no-data":
        expected = [{"cluster_id": first.id, "cluster_name": first.name, "reason": "NoMetricsServer"}]
        assert manifest["extra"]["clusters_without_data"] == expected
        check = _check_evaluations(home)["focus_clusters_with_data"]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert first.name in (check.description or "") and "NoMetricsServer" in (check.description or "")
        assert mine.num_rows == 0
        others = total - sandbox_org.expected_cluster_total(first.id, START, END)
        assert pc.sum(table["BilledCost"]).as_py() == pytest.approx(others, abs=1e-4)
        return
    assert manifest["extra"]["clusters_without_data"] == []
    assert pc.sum(table["BilledCost"]).as_py() == pytest.approx(total, abs=1e-4)  # every dollar kept
    if answer == "missing-identity":
        assert set(mine["x_CastAINamespace"].to_pylist()) == {MISSING_IDENTITY}
        assert all(name.startswith("(unknown") for name in mine["ResourceName"].to_pylist())
        assert (
            manifest["extra"]["workloads_missing_identity"] == pc.count_distinct(mine["ResourceId"]).as_py()
        )
    elif answer == "child-listing-shape":
        assert manifest["extra"]["enrichment_missing"] == {"enterprise_organizations": "invalid response"}
        assert set(table["SubAccountType"].to_pylist()) == {"Cluster"}
        assert _accounts(table) == {
            (c.id, c.organization_id, c.organization_id, c.id, c.name) for c in sandbox_org.clusters
        }
    else:
        seen: set[str] = set()
        for tags in table["Tags"].to_pylist():
            seen.update(json.loads(tags) if tags else {})
        labels = {key for c in sandbox_org.clusters for row in c.workloads.labels for key in row}
        cluster_tags = {key for c in sandbox_org.clusters for key in c.tags}
        assert labels and labels | cluster_tags <= seen
