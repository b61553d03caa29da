"""`make bench`: the performance figures of issues 7 and 17, measured on this machine in one run.

Every figure is a ratio or a limit against a reference measured in the same run (never a stored
baseline), and every figure checks the work it timed: row counts derived from the sandbox's model,
and Σ cost against the sandbox's own ground truth. Prints a table, writes `benchmarks/results.json`
and refreshes the generated block of `docs/performance.md`.

1. ingest: Cast AI workload-cost JSON bytes -> columnar table (the client's own code path, replayed
   from recorded responses) vs. plain `json.loads` of the same bytes;
2. transform + Parquet write of the FOCUS rows, cluster by cluster as the pipeline does, vs.
   `pyarrow.parquet.write_table` of the identical final table;
3. end-to-end `focus_export_job` for one day of 100 clusters x 500 workloads x 24 hourly buckets, the
   exporter and the sandbox (responses rendered before timing starts) in processes of their own;
4. memory scaling: the exporter's peak RSS for 100 clusters over its peak RSS for 10;
5. fetch concurrency: 50 ms injected latency per request, default concurrency vs. sequential;
6. backfill throughput with 1, 2 and 4 concurrent runs, and the shared Cast AI budget (backfill.py);
7. the exporter side of figure 3's day (every step but the Cast AI fetches) vs. writing its rows once.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from castai_focus_dagster.castai.client import CastAIClient
from castai_focus_dagster.castai.enrichment import fetch_enrichment
from castai_focus_dagster.castai.models import TIERS, Cluster, EnrichmentContext
from castai_focus_dagster.castai.sandbox import Faults, SandboxOrg, SandboxServer
from castai_focus_dagster.castai.sandbox.hours import hour_index
from castai_focus_dagster.focus.audit import audit_focus
from castai_focus_dagster.focus.options import FocusOptions
from castai_focus_dagster.focus.source import prepare_workloads
from castai_focus_dagster.focus.transform import to_focus
from castai_focus_dagster.settings import Settings, load_settings
from castai_focus_dagster.storage.keys import data_key, manifest_key
from castai_focus_dagster.storage.serialize import FocusParquetWriter

REPO = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPO / "benchmarks" / "results.json"
DOC_PATH = REPO / "docs" / "performance.md"
DOC_START, DOC_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
COMMAND = "make bench"

PREFIX = "focus/"  # the default S3_PREFIX, set explicitly so the published keys are known
SEED = 7
STEP = 3600
BUCKETS = 24
WORKLOADS = 500  # regular workloads per cluster (the sandbox adds its three special ones somewhere)
INGEST_CLUSTERS = 4  # 20 pages of ~2.5 MB
TRANSFORM_CLUSTERS = 10
E2E_CLUSTERS = 100
SMALL_CLUSTERS = 10
FETCH_CLUSTERS, FETCH_WORKLOADS = 64, 15  # the sandbox's default cluster size: one page per cluster
LATENCY_SECONDS = 0.05
UNLIMITED_RPS = 10_000.0  # settings' maximum: figure 5 isolates concurrency from the rate limiter
REPEATS = 5
INGEST_GOAL = 0.6  # ingest may take at most this share of json.loads of the same bytes
FETCH_REPEATS = 3  # figure 5: sequential and concurrent fetches interleaved, best of each
EXPORTER_SIDE_GOAL = 1.8
MICRO = 1_000_000
# Σ of the 6-decimal costs the sandbox emitted vs the exporter's Σ: only float summation separates them.
EMITTED_TOLERANCE = 1e-4
COST_FIELDS = tuple(f"{c}{t}" for c in ("cpuCost", "ramCost", "gpuCost", "tpuCost") for t in TIERS)
EXPORTER_ENV_PREFIXES = ("CASTAI_", "COLLECTION_", "FOCUS_", "S3_", "TERNARY_", "JOB_", "SCHEDULE_")

T = TypeVar("T")


class BenchmarkError(RuntimeError):
    """The benchmark could not measure, or what it measured did not do the expected work."""


@dataclass
class Figure:
    number: int
    name: str
    value: float
    unit: str
    goal: str
    met: bool
    details: dict[str, Any] = field(default_factory=dict)
    also: str = ""  # a second measured value the goal names (figure 3: peak RSS)

    def shown(self) -> str:
        return f"{self.value:.2f} {self.unit}".strip() + (f", {self.also}" if self.also else "")


# ------------------------------------------------------------------------------------------------
# Ground truth and shared helpers


def bench_day() -> date:
    """A complete UTC day in the past (two days back: whatever the time zone of the clock)."""
    return datetime.now(UTC).date() - timedelta(days=2)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


@dataclass(frozen=True)
class Truth:
    """What the sandbox serves for a window, from its model (not from any response)."""

    listed_workloads: int  # workloads that ran or held storage (the only ones the API lists)
    buckets: int
    emitted_cost: float  # Σ of the 6-decimal costs the API emits (what the exporter can reproduce)
    exact_cost: float  # Σ of the exact hourly model
    emitted_values: int  # number of non-zero emitted cost decimals (bounds the rounding)

    @property
    def rows(self) -> int:
        return self.listed_workloads * self.buckets

    @property
    def rounding_bound(self) -> float:
        return self.emitted_values * 0.5 / MICRO


def sandbox_truth(org: SandboxOrg, start: datetime, end: datetime) -> Truth:
    first, buckets = hour_index(start), (hour_index(end) - hour_index(start))
    listed, emitted_micro, values = 0, 0, 0
    for cluster in org.clusters:
        metrics = org.bucket_metrics(cluster.id, first, buckets, 1)
        uptime = sum(metrics[f"uptimeMinutes{t}"].sum(axis=1) for t in TIERS)
        listed += int(np.count_nonzero((uptime > 0) | (metrics["storageGib"].sum(axis=1) > 0)))
        for name in (*COST_FIELDS, "storageCost"):
            micro = np.rint(metrics[name] * MICRO).astype(np.int64)
            emitted_micro += int(micro.sum())
            values += int(np.count_nonzero(micro))
    exact = sum(org.expected_cluster_total(c.id, start, end) for c in org.clusters)
    return Truth(listed, buckets, emitted_micro / MICRO, exact, values)


def workload_cost(tables: list[pa.Table]) -> float:
    """Σ over buckets of (every tier's resource costs + storage) x bucket hours, from workload tables."""
    total = 0.0
    for table in tables:
        hours = table["step_seconds"].to_numpy() / 3600.0
        hourly = sum(table[name].to_numpy() for name in (*COST_FIELDS, "storageCost"))
        total += float(np.sum(hourly * hours))
    return total


def check(condition: bool, message: str) -> None:
    if not condition:
        raise BenchmarkError(message)


def best_of(function: Callable[[], T], repeats: int = REPEATS) -> tuple[float, T]:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        timings.append(time.perf_counter() - started)
    return min(timings), result


def sandbox_settings_defaults() -> Settings:
    """The exporter's default settings (nothing configured but the sandbox)."""
    return load_settings({"CASTAI_API_URL": "sandbox"})


@dataclass(frozen=True)
class Capture:
    """Raw workload-costs responses of a window, plus the clusters and enrichment the exporter reads."""

    bodies: dict[tuple[str, str], bytes]  # (cluster id, page cursor) -> body
    clusters: list[Cluster]
    enrichment: EnrichmentContext


def capture(org: SandboxOrg, start: datetime, end: datetime) -> Capture:
    """Record what an in-process sandbox answers (untimed), to replay it without any server."""
    params = {"startTime": f"{start:%Y-%m-%dT%H:%M:%SZ}", "endTime": f"{end:%Y-%m-%dT%H:%M:%SZ}"}
    params |= {"stepSeconds": str(STEP), "page.limit": str(sandbox_settings_defaults().castai_page_limit)}
    bodies: dict[tuple[str, str], bytes] = {}
    with SandboxServer(org) as server:
        server.prerender(start, end, STEP)
        with httpx.Client(base_url=server.url, headers={"X-API-Key": org.api_key}, timeout=120) as http:
            for cluster in org.clusters:
                cursor = ""
                while True:
                    page = http.get(
                        f"/v1/cost-reports/clusters/{cluster.id}/workload-costs",
                        params=params | ({"page.cursor": cursor} if cursor else {}),
                    )
                    page.raise_for_status()
                    bodies[(cluster.id, cursor)] = page.content
                    cursor = msgspec.json.decode(page.content)["nextCursor"]
                    if not cursor:
                        break
        with CastAIClient(server.url, org.api_key, organization_id=org.organization_id) as client:
            clusters = client.list_clusters()
            enrichment = fetch_enrichment(client)
    return Capture(bodies, clusters, enrichment)


def replay_client(org: SandboxOrg, bodies: dict[tuple[str, str], bytes]) -> CastAIClient:
    """The real client over an in-memory transport that answers the recorded pages."""

    def answer(request: httpx.Request) -> httpx.Response:
        cluster_id = request.url.path.split("/")[4]
        return httpx.Response(200, content=bodies[(cluster_id, request.url.params.get("page.cursor", ""))])

    return CastAIClient(
        "http://127.0.0.1:9",
        org.api_key,
        organization_id=org.organization_id,
        rate_limit_rps=UNLIMITED_RPS,
        transport=httpx.MockTransport(answer),
    )


# ------------------------------------------------------------------------------------------------
# Figure 1: ingest


def figure_ingest(day: date) -> Figure:
    start, end = day_bounds(day)
    org = SandboxOrg.generate(SEED, clusters=INGEST_CLUSTERS, workloads_per_cluster=WORKLOADS)
    recorded = capture(org, start, end)
    client = replay_client(org, recorded.bodies)
    bodies = list(recorded.bodies.values())

    def ingest() -> list[pa.Table]:
        return [client.workload_costs(c.id, start, end, STEP) for c in org.clusters]

    def parse() -> list[Any]:
        return [json.loads(body) for body in bodies]

    ingest_seconds, parse_seconds = float("inf"), float("inf")
    tables: list[pa.Table] = []
    for _ in range(REPEATS):  # interleaved, so both see the same machine state
        seconds, tables = best_of(ingest, 1)
        ingest_seconds = min(ingest_seconds, seconds)
        parse_seconds = min(parse_seconds, best_of(parse, 1)[0])
    client.close()

    truth = sandbox_truth(org, start, end)
    rows = sum(t.num_rows for t in tables)
    check(rows == truth.rows > 0, f"ingest produced {rows} rows, the sandbox lists {truth.rows}")
    cost = workload_cost(tables)
    check(
        abs(cost - truth.emitted_cost) <= EMITTED_TOLERANCE,
        f"ingested cost {cost:.6f} != emitted {truth.emitted_cost:.6f}",
    )
    megabytes = sum(map(len, bodies)) / 1e6
    ratio = ingest_seconds / parse_seconds
    return Figure(
        1,
        "ingest: workload-cost JSON -> Arrow table, vs json.loads of the same bytes",
        ratio,
        "x",
        f"<= {INGEST_GOAL}",
        ratio <= INGEST_GOAL,
        {
            "clusters": INGEST_CLUSTERS,
            "workloads_per_cluster": WORKLOADS,
            "pages": len(bodies),
            "json_megabytes": round(megabytes, 1),
            "rows": rows,
            "ingest_seconds": round(ingest_seconds, 3),
            "json_loads_seconds": round(parse_seconds, 3),
            "ingest_mb_per_second": round(megabytes / ingest_seconds, 1),
            "cost": round(cost, 6),
            "sandbox_emitted_cost": round(truth.emitted_cost, 6),
        },
    )


# ------------------------------------------------------------------------------------------------
# Figure 2: transform + Parquet write


def figure_transform(day: date, workdir: Path) -> Figure:
    start, end = day_bounds(day)
    org = SandboxOrg.generate(SEED, clusters=TRANSFORM_CLUSTERS, workloads_per_cluster=WORKLOADS)
    recorded = capture(org, start, end)
    with replay_client(org, recorded.bodies) as client:
        per_cluster = [client.workload_costs(c.id, start, end, STEP) for c in org.clusters]
    clusters = {c.id: c for c in recorded.clusters}
    options = FocusOptions.from_settings(sandbox_settings_defaults())
    streamed, plain = workdir / "streamed.parquet", workdir / "plain.parquet"

    def transform_and_write() -> int:
        with streamed.open("wb") as sink:
            writer = FocusParquetWriter(sink)
            for workloads in per_cluster:
                writer.write(to_focus(workloads, clusters, recorded.enrichment, options))
            writer.close()
        return writer.rows

    pipeline_seconds, rows = best_of(transform_and_write, 3)
    final = pq.read_table(streamed).combine_chunks()
    write_seconds, _ = best_of(lambda: pq.write_table(final, plain), 3)

    batches = [prepare_workloads(w) for w in per_cluster]  # shared by transform and audit, as in the asset
    focus_tables = [to_focus(b, clusters, recorded.enrichment, options) for b in batches]
    audit_seconds, reports = best_of(
        lambda: [audit_focus(f, b) for f, b in zip(focus_tables, batches, strict=True)], 3
    )
    truth = sandbox_truth(org, start, end)
    billed = float(pc.sum(final["BilledCost"]).as_py())
    check(rows == final.num_rows == pq.ParquetFile(plain).metadata.num_rows > 0, "row counts disagree")
    check(abs(billed - truth.emitted_cost) <= EMITTED_TOLERANCE, f"Σ BilledCost {billed:.6f} is off")
    check(all(r.passed for r in reports), "the audit rejected the benchmark's FOCUS rows")
    ratio = pipeline_seconds / write_seconds
    return Figure(
        2,
        "transform + Parquet write (per cluster), vs pq.write_table of the final table",
        ratio,
        "x",
        "<= 2.0",
        ratio <= 2.0,
        {
            "clusters": TRANSFORM_CLUSTERS,
            "workload_buckets": sum(t.num_rows for t in per_cluster),
            "focus_rows": rows,
            "transform_and_write_seconds": round(pipeline_seconds, 3),
            "write_table_seconds": round(write_seconds, 3),
            "audit_seconds_not_in_ratio": round(audit_seconds, 3),
            "billed_cost": round(billed, 6),
            "sandbox_emitted_cost": round(truth.emitted_cost, 6),
        },
    )


# ------------------------------------------------------------------------------------------------
# Figure 5: fetch concurrency


def serve_slow_sandbox(
    clusters: int, workloads: int, start: datetime, end: datetime, connection: Connection
) -> None:
    """Child process of figure 5: the sandbox answering every API request after LATENCY_SECONDS.

    In a process of its own, so that rendering pages never competes with the client for the GIL.
    Sends its URL, serves until told to stop, then sends the number of requests it answered.
    """
    org = SandboxOrg.generate(SEED, clusters=clusters, workloads_per_cluster=workloads)
    faults = Faults(rate_slow=1.0, slow_seconds=LATENCY_SECONDS)
    with SandboxServer(org, faults=faults) as server:
        server.prerender(start, end, STEP)
        connection.send(server.url)
        connection.recv()
        connection.send(len(server.requests))


def measure_fetch(day: date, workloads: int) -> dict[str, Any]:
    """Sequential vs default-concurrency fetch of every cluster (rate limit lifted in both), checked;
    then the default concurrency at the default rate limit, for comparison."""
    start, end = day_bounds(day)
    org = SandboxOrg.generate(SEED, clusters=FETCH_CLUSTERS, workloads_per_cluster=workloads)
    defaults = sandbox_settings_defaults()
    ids = [c.id for c in org.clusters]
    spawn = multiprocessing.get_context("spawn")
    ours, theirs = spawn.Pipe()
    server = spawn.Process(
        target=serve_slow_sandbox, args=(FETCH_CLUSTERS, workloads, start, end, theirs), daemon=True
    )
    server.start()
    try:
        url = ours.recv()

        def fetch(concurrency: int, rps: float) -> tuple[float, float, list[pa.Table]]:
            """Wall seconds, this process's CPU seconds, tables."""
            with CastAIClient(
                url, org.api_key, organization_id=org.organization_id, max_concurrency=concurrency,
                rate_limit_rps=rps,
            ) as client:  # fmt: skip
                cpu, started = time.process_time(), time.perf_counter()
                tables = [t for _, t in client.workload_costs_many(ids, start, end, STEP)]
                return time.perf_counter() - started, time.process_time() - cpu, tables

        # Interleaved and best of FETCH_REPEATS: both see the same machine state (other figures' load).
        sequential_seconds, concurrent_seconds, client_cpu = float("inf"), float("inf"), 0.0
        sequential: list[pa.Table] = []
        concurrent: list[pa.Table] = []
        for _ in range(FETCH_REPEATS):
            seconds, _, sequential = fetch(1, UNLIMITED_RPS)
            sequential_seconds = min(sequential_seconds, seconds)
            seconds, cpu, concurrent = fetch(defaults.castai_max_concurrency, UNLIMITED_RPS)
            if seconds < concurrent_seconds:
                concurrent_seconds, client_cpu = seconds, cpu
        limited_seconds, _, _ = fetch(defaults.castai_max_concurrency, defaults.castai_rate_limit_rps)
        ours.send("stop")
        requests = ours.recv()
    finally:
        server.join(timeout=30)
        if server.is_alive():
            server.terminate()

    truth = sandbox_truth(org, start, end)
    for tables in (sequential, concurrent):
        rows = sum(t.num_rows for t in tables)
        check(rows == truth.rows > 0, f"fetched {rows} rows, the sandbox lists {truth.rows}")
        check(abs(workload_cost(tables) - truth.emitted_cost) <= EMITTED_TOLERANCE, "fetched cost is off")
    pages = len(ids)  # one page per cluster at these sizes
    return {
        "workloads_per_cluster": workloads,
        "requests_served": requests,
        "sequential_seconds": round(sequential_seconds, 3),
        "concurrent_seconds": round(concurrent_seconds, 3),
        "speedup": round(sequential_seconds / concurrent_seconds, 2),
        "client_cpu_ms_per_page": round(client_cpu / pages * 1000, 2),
        "concurrent_at_default_rate_limit_seconds": round(limited_seconds, 3),
    }


def figure_fetch(day: date) -> Figure:
    defaults = sandbox_settings_defaults()
    measured = measure_fetch(day, FETCH_WORKLOADS)
    speedup = measured["speedup"]
    return Figure(
        5,
        f"fetch concurrency: {LATENCY_SECONDS * 1000:.0f} ms latency, default concurrency vs sequential",
        speedup,
        "x faster",
        ">= 6",
        speedup >= 6,
        {
            "clusters": FETCH_CLUSTERS,
            "default_concurrency": defaults.castai_max_concurrency,
            "rate_limit_rps_in_both": UNLIMITED_RPS,
            "default_rate_limit_rps": defaults.castai_rate_limit_rps,
            **measured,
        },
    )


# ------------------------------------------------------------------------------------------------
# Figures 3 and 4: the Dagster job end to end, each process on its own


@contextmanager
def sandbox_process(clusters: int, start: datetime, end: datetime, log: Path) -> Iterator[str]:
    """The sandbox CLI in its own process, every response of the window rendered before it answers."""
    command = [
        sys.executable, "-m", "castai_focus_dagster.castai.sandbox", "--port", "0",
        "--clusters", str(clusters), "--workloads-per-cluster", str(WORKLOADS), "--seed", str(SEED),
        "--prerender-start", start.isoformat(), "--prerender-end", end.isoformat(),
        "--prerender-step", str(STEP),
    ]  # fmt: skip
    with log.open("wb") as errors:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=errors, text=True)
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            while line and not line.startswith("SANDBOX_URL="):
                line = process.stdout.readline()
            if not line:
                raise BenchmarkError(f"the sandbox exited before serving: {log.read_text()[-2000:]}")
            yield line.strip().split("=", 1)[1]
        finally:
            process.terminate()
            process.wait(timeout=60)


def exporter_environment(url: str, org: SandboxOrg, output: Path, home: Path) -> dict[str, str]:
    """The parent's environment without exporter settings (defaults apply), pointed at the sandbox."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(EXPORTER_ENV_PREFIXES)}
    return env | {
        "CASTAI_API_URL": url,
        "CASTAI_API_KEY": org.api_key,
        "CASTAI_ORGANIZATION_ID": org.organization_id,
        "LOCAL_OUTPUT_DIR": str(output),
        "S3_PREFIX": PREFIX,
        "DAGSTER_HOME": str(home),
        "PYTHONWARNINGS": "ignore",
    }


def run_exporter(clusters: int, day: date, workdir: Path) -> dict[str, Any]:
    """One materialisation of the day: wall time of the exporter process, and its own peak RSS."""
    start, end = day_bounds(day)
    org = SandboxOrg.generate(SEED, clusters=clusters, workloads_per_cluster=WORKLOADS)
    truth = sandbox_truth(org, start, end)
    folder = workdir / f"e2e-{clusters}"
    output, home = folder / "out", folder / "dagster_home"
    home.mkdir(parents=True)
    result_path, log = folder / "exporter.json", folder / "exporter.log"
    with sandbox_process(clusters, start, end, folder / "sandbox.log") as url:
        env = exporter_environment(url, org, output, home)
        command = [sys.executable, "-m", "benchmarks.exporter", day.isoformat(), str(result_path)]
        with log.open("wb") as sink:
            started = time.perf_counter()
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
            returncode = process.wait()
            wall = time.perf_counter() - started
    if returncode != 0:
        raise BenchmarkError(f"the exporter failed ({returncode}): {log.read_text()[-3000:]}")
    profile = json.loads(result_path.read_text())

    manifest = json.loads((output / manifest_key(PREFIX, day)).read_text())
    published_path = output / data_key(PREFIX, org.organization_id, day, "parquet")
    published = pq.ParquetFile(published_path)
    rows = published.metadata.num_rows
    billed = sum(
        float(pc.sum(published.read_row_group(i, columns=["BilledCost"])["BilledCost"]).as_py() or 0.0)
        for i in range(published.num_row_groups)
    )
    check(rows == manifest["rowCount"] > 0, f"{rows} rows published, manifest says {manifest['rowCount']}")
    check(rows >= truth.rows, f"{rows} FOCUS rows for {truth.rows} workload buckets")
    check(
        abs(billed - truth.emitted_cost) <= EMITTED_TOLERANCE,
        f"Σ BilledCost {billed:.6f} != sandbox emitted total {truth.emitted_cost:.6f}",
    )
    check(
        abs(billed - truth.exact_cost) <= truth.rounding_bound,
        f"Σ BilledCost {billed:.6f} is further than the rounding bound from {truth.exact_cost:.6f}",
    )
    return {
        "clusters": clusters,
        "workloads_per_cluster": WORKLOADS,
        "buckets": BUCKETS,
        "wall_seconds": round(wall, 2),
        "focus_rows": rows,
        "workload_buckets": truth.rows,
        "published_megabytes": round(published_path.stat().st_size / 1e6, 1),
        "row_groups": published.num_row_groups,
        "billed_cost": round(billed, 6),
        "sandbox_emitted_cost": round(truth.emitted_cost, 6),
        "sandbox_exact_cost": round(truth.exact_cost, 6),
        "rounding_bound": round(truth.rounding_bound, 6),
        "published_path": str(published_path),  # popped by the caller (figure 7 rewrites it)
        **profile,
    }


def write_once_seconds(published: Path, workdir: Path) -> float:
    """Seconds `pq.ParquetWriter` (pyarrow defaults, as `pq.write_table`) takes to write the published
    rows once, fed one row group at a time so memory stays one row group (reads are not timed)."""
    source = pq.ParquetFile(published)
    seconds = 0.0
    with pq.ParquetWriter(workdir / "write-once.parquet", source.schema_arrow) as writer:
        for index in range(source.num_row_groups):
            table = source.read_row_group(index)
            started = time.perf_counter()
            writer.write_table(table)
            seconds += time.perf_counter() - started
        started = time.perf_counter()
    return seconds + (time.perf_counter() - started)


def figure_exporter_side(large: dict[str, Any], published: Path, workdir: Path) -> Figure:
    exporter = [s for s in large["steps"] if not s["step"].startswith("castai_")]
    exporter_seconds = sum(s["seconds"] for s in exporter)
    write_seconds = write_once_seconds(published, workdir)
    ratio = exporter_seconds / write_seconds
    return Figure(
        7,
        "exporter side of figure 3's day (transform, audit, encode, publish, checks) vs writing it once",
        ratio,
        "x",
        f"<= {EXPORTER_SIDE_GOAL}",
        ratio <= EXPORTER_SIDE_GOAL,
        {
            "exporter_steps": {s["step"]: s["seconds"] for s in exporter},
            "exporter_seconds": round(exporter_seconds, 3),
            "write_once_seconds": round(write_seconds, 3),
            "focus_rows": large["focus_rows"],
        },
    )


def figures_end_to_end(day: date, workdir: Path) -> list[Figure]:
    small = run_exporter(SMALL_CLUSTERS, day, workdir)
    small.pop("published_path")
    large = run_exporter(E2E_CLUSTERS, day, workdir)
    exporter_side = figure_exporter_side(large, Path(large.pop("published_path")), workdir)
    rss_ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    end_to_end = Figure(
        3,
        f"end to end: {E2E_CLUSTERS} clusters x {WORKLOADS} workloads x {BUCKETS} h, sandbox -> Parquet",
        large["wall_seconds"],
        "s",
        "<= 60 s and peak RSS <= 1536 MB",
        large["wall_seconds"] <= 60 and large["peak_rss_mb"] <= 1536,
        large,
        also=f"peak RSS {large['peak_rss_mb']:.0f} MB",
    )
    scaling = Figure(
        4,
        f"memory scaling: peak RSS {E2E_CLUSTERS} clusters / {SMALL_CLUSTERS} clusters",
        rss_ratio,
        "x",
        "<= 1.25",
        rss_ratio <= 1.25,
        {"small": small, "large_peak_rss_mb": large["peak_rss_mb"]},
    )
    return [end_to_end, scaling, exporter_side]


# ------------------------------------------------------------------------------------------------
# Report


def machine() -> dict[str, Any]:
    models = [line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo") if "model name" in line]
    import dagster

    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": models[0] if models else platform.processor() or "unknown",
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "msgspec": msgspec.__version__,
        "dagster": dagster.__version__,
    }


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def table_lines(figures: list[Figure]) -> list[str]:
    lines = ["| # | figure | value | goal | met? |", "|---|---|---:|---|---|"]
    lines += [
        f"| {f.number} | {f.name} | {f.shown()} | {f.goal} | {'yes' if f.met else 'NO'} |"
        for f in sorted(figures, key=lambda f: f.number)
    ]
    return lines


def profile_lines(figures: list[Figure]) -> list[str]:
    e2e = next((f for f in figures if f.number == 3), None)
    if e2e is None:
        return []
    lines = [
        "",
        f"Exporter profile of figure 3 (`benchmarks/exporter.py`): import {e2e.details['import_seconds']} s, "
        f"job {e2e.details['job_seconds']} s, {e2e.details['focus_rows']:,} FOCUS rows in "
        f"{e2e.details['row_groups']} row groups.",
        "",
        "| Dagster step | seconds | peak RSS during the step (MB) |",
        "|---|---:|---:|",
    ]
    lines += [f"| {s['step']} | {s['seconds']} | {s['peak_rss_mb']} |" for s in e2e.details["steps"]]
    return lines


def render_block(report: dict[str, Any], figures: list[Figure]) -> str:
    m = report["machine"]
    lines = [
        DOC_START,
        f"Measured {report['measured_at']} with `{report['command']}` "
        f"({report['duration_seconds']:.0f} s in all) on {m['nproc']} CPU(s) ({m['cpu']}), "
        f"{m['ram_gb']} GB RAM, {m['os']}; Python {m['python']}, pyarrow {m['pyarrow']}, "
        f"numpy {m['numpy']}, msgspec {m['msgspec']}, dagster {m['dagster']}.",
        "",
        *table_lines(figures),
        *profile_lines(figures),
        DOC_END,
    ]
    return "\n".join(lines)


def update_doc(block: str) -> bool:
    if not DOC_PATH.exists():
        return False
    text = DOC_PATH.read_text()
    pattern = re.compile(re.escape(DOC_START) + ".*?" + re.escape(DOC_END), re.DOTALL)
    if not pattern.search(text):
        return False
    DOC_PATH.write_text(pattern.sub(lambda _: block, text))
    return True


def figures_backfill(day: date, workdir: Path) -> list[Figure]:
    from benchmarks.backfill import figure_backfill

    return figure_backfill(day, workdir)


# In this order: figure 5 (thread wake-ups under the GIL) first, before the memory-heavy figures load
# the machine; figure 6 last (its processes share the two cores by design).
RUNNERS: dict[int, Callable[[date, Path], list[Figure]]] = {
    5: lambda day, _workdir: [figure_fetch(day)],
    1: lambda day, _workdir: [figure_ingest(day)],
    2: lambda day, workdir: [figure_transform(day, workdir)],
    3: figures_end_to_end,  # figures 3, 4 and 7 come from the same two exporter runs
    6: figures_backfill,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        type=int,
        action="append",
        choices=sorted(RUNNERS),
        help="run only these figures (3 also yields 4 and 7); results.json and the doc are then left alone",
    )
    args = parser.parse_args(argv)
    selected = args.only or list(RUNNERS)
    day = bench_day()
    started = time.perf_counter()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="castai-focus-bench-") as tmp:
        for number in selected:
            print(f"figure {number}{', 4 and 7' if number == 3 else ''} ...", flush=True)
            figures += RUNNERS[number](day, Path(tmp))
    report = {
        "command": COMMAND,
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "day": day.isoformat(),
        "duration_seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
        "figures": [asdict(f) for f in sorted(figures, key=lambda f: f.number)],
    }
    print("\n".join(["", *table_lines(figures), *profile_lines(figures), ""]))
    if args.only is not None:
        print(json.dumps(report["figures"], indent=1, ensure_ascii=False))
    else:
        RESULTS_PATH.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        updated = update_doc(render_block(report, figures))
        print(
            f"wrote {RESULTS_PATH.relative_to(REPO)}"
            + (f" and {DOC_PATH.relative_to(REPO)}" if updated else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
