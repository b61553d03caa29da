"""One cluster's workload-costs pages → one `WORKLOAD_COSTS_SCHEMA` table, checked across pages.

Filters namespaces client-side, drops an identical repeat of a workload but refuses one with other
numbers, leaves out labels with control characters, names workloads without identity, and refuses
buckets of another size than requested or pages that end before the `count` they announced.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from castai_focus_dagster.castai.columns import MetricColumns, bucket_columns
from castai_focus_dagster.castai.diagnose import workload_label
from castai_focus_dagster.castai.errors import WRONG_STEP, InvalidResponse
from castai_focus_dagster.castai.labels import exported_labels
from castai_focus_dagster.castai.models import METRIC_COLUMNS, TIERS, WORKLOAD_COSTS_SCHEMA
from castai_focus_dagster.castai.repeats import identity, placeholder, same_as_rows
from castai_focus_dagster.castai.units import MICROS_PER_SECOND, to_microseconds
from castai_focus_dagster.castai.validation import (
    BucketWindow,
    bucketed_totals,
    summary_mismatches,
    summary_problem,
    workload_bucket_problem,
)
from castai_focus_dagster.castai.wire import WorkloadCostItem, WorkloadItem


def _dictionary(values: list[str | None], owners: pa.Array) -> pa.Array:
    return pa.array(values, pa.string()).dictionary_encode().take(owners)


# Where the rows of a workload's first copy went: (index into the assembled tables, first row, rows).
_Location = tuple[int, int, int]


class WorkloadCostsAssembler:
    """Accumulates decoded workload-costs pages into one `WORKLOAD_COSTS_SCHEMA` table for a cluster.

    Applies the namespace include/exclude filters client-side (the server filter is only a hint),
    drops an identical repeat of a workload (counted in `duplicates`) but refuses a repeat with other
    numbers, leaves out labels holding control characters (counted in `dropped_labels`) and label
    names listed with different values (counted in `conflicting_labels`), and
    validates every bucket: timestamp on the requested grid and not repeated, metrics finite, >= 0
    and plausible, tier costs equal to their resource costs. `table()` refuses a page sequence that
    delivered fewer workloads than the `count` the pages announced.
    """

    def __init__(
        self,
        cluster_id: str,
        window: BucketWindow,
        *,
        include_namespaces: Sequence[str] = (),
        exclude_namespaces: Sequence[str] = (),
    ):
        self.cluster_id = cluster_id
        self.window = window
        self.duplicates = 0
        self.dropped_labels = 0
        self.conflicting_labels = 0  # label names listed twice with different values, left out
        self._include = frozenset(include_namespaces)
        self._exclude = frozenset(exclude_namespaces)
        # Every workload received (whatever its namespace) -> where its kept rows are (None: filtered out).
        self._first: dict[tuple[str, str, str], _Location | None] = {}
        self._announced = 0
        self._tables: list[pa.Table] = []
        self._grid = 0  # gcd of every bucket's offset from the window start, in seconds (0: no bucket yet)
        self._bucket_span = (np.iinfo(np.int64).max, -1)  # earliest and latest bucket timestamp (µs)
        self._max_uptime = 0.0  # the longest uptimeMinutes* of any bucket: a bucket holds at most its step
        self.missing_identity = 0  # items kept (past the namespace filters) under MISSING_IDENTITY
        self.received = 0  # items received over all pages, whatever their namespace
        self.buckets_received = 0  # costMetrics entries over every item received, whatever its namespace
        self.no_data_reason: str | None = None
        self._summary_error: InvalidResponse | None = None  # the first summary mismatch, for table()
        self.without_summary = 0  # kept workloads with buckets but no `summary`: spacing alone checked them

    def note_no_data_reason(self, reason: str | None) -> None:
        """Record a page's `noDataReason` (the last non-empty one wins)."""
        if reason and reason.strip():
            self.no_data_reason = reason.strip()

    def no_data(self) -> str | None:
        """Why the cluster has no data when no bucket arrived over all pages (no item, or items that
        carry no `costMetrics`): the reason Cast AI gave, or "none given" (protojson omits the default
        value `Unknown`); None when any bucket was received."""
        if self.buckets_received:
            return None
        return self.no_data_reason or "none given"

    def add(self, items: Sequence[WorkloadItem]) -> None:
        kept: list[WorkloadItem] = []
        repeats: list[WorkloadItem] = []
        self.received += len(items)
        self.buckets_received += sum(len(item.cost_metrics) for item in items)
        for item in items:
            missing = item.missing_identity()
            if missing:
                # Never a repeat, never dropped: each such item becomes its own placeholder workload.
                item = placeholder(item, missing, self._first)
                self._first[identity(item)] = None
                if self.wanted(item):  # COLLECTION_INCLUDE_NAMESPACES never lists "(unknown)"
                    kept.append(item)
                    self.missing_identity += 1
                continue
            key = identity(item)
            if key in self._first:
                repeats.append(item)
                continue
            self._first[key] = None
            if self.wanted(item):
                kept.append(item)
        self._add_rows(kept)
        for item in repeats:  # after _add_rows: the first copy may be on this very page
            self._check_repeat(item)

    def expect_count(self, count: int | None) -> None:
        """Record the `count` a page announced (workloads matching the request over all pages)."""
        if count is not None:
            self._announced = max(self._announced, count)

    def _step_problem(self) -> tuple[str, str] | None:
        """(message, field) when the buckets are not of the requested size.

        A coarser grid is decided over every bucket of the cluster: with two or more distinct
        timestamps the grid alone decides, and `uptimeMinutes*` never refuses (see `uptime_over_step`).
        Buckets at a single timestamp are ambiguous (a daily answer to an hourly request, or a cluster
        that only ran in that hour); there a bucket holding more uptime minutes than its step is the
        tie-breaker, and the client settles the rest with one probe request (`single_last_bucket`).
        """
        earliest, latest = self._bucket_span
        if earliest > latest:
            return None  # no bucket at all
        problem = self.window.step_problem(self._grid)
        if earliest < latest:
            return (problem, "timestamp") if problem else None
        if self._max_uptime > self.window.step_seconds / 60 + 1e-6:
            uptime = (
                f"a bucket reports {self._max_uptime:g} uptime minutes, more than a "
                f"stepSeconds={self.window.step_seconds} bucket holds"
            )
            if problem:  # the lone timestamp's offset is the coarser size; uptime confirms it
                return f"{problem}: {uptime}", "timestamp"
            return f"{uptime} (wrong bucket size)", "uptimeMinutes"
        return None

    def single_last_bucket(self) -> bool:
        """Every bucket sits at the window's last timestamp, and the window holds more than one step:
        either the cluster only ran in the last bucket or Cast AI answered one coarser bucket."""
        earliest, latest = self._bucket_span
        end = to_microseconds(self.window.end)
        start = to_microseconds(self.window.start)
        return earliest == latest == end and end - self.window.step_seconds * MICROS_PER_SECOND > start

    @property
    def uptime_over_step(self) -> float:
        """The longest `uptimeMinutes*` of a bucket when it exceeds the step on a correctly spaced answer
        (0.0 otherwise): not a refusal, since uptime may count pod-minutes; counted as an input warning."""
        earliest, latest = self._bucket_span
        if earliest < latest and self._max_uptime > self.window.step_seconds / 60 + 1e-6:
            return self._max_uptime
        return 0.0

    def table(self) -> pa.Table:
        problem = self._step_problem()
        if problem:
            raise InvalidResponse(problem[0], reason=WRONG_STEP, field=problem[1])
        if self._summary_error is not None:
            raise self._summary_error
        if len(self._first) < self._announced:
            raise InvalidResponse(
                f"pages ended after {len(self._first)} distinct workload(s), but the response counted "
                f"{self._announced}: workloads would be missing",
                reason="invalid response",
                field="count",
            )
        if not self._tables:
            return WORKLOAD_COSTS_SCHEMA.empty_table()
        return pa.concat_tables(self._tables).combine_chunks()

    def wanted(self, item: WorkloadItem) -> bool:
        """Past COLLECTION_INCLUDE/EXCLUDE_NAMESPACES (applied here, the server filter is a hint)."""
        return not (
            (self._include and item.namespace not in self._include) or item.namespace in self._exclude
        )

    def _add_rows(self, kept: Sequence[WorkloadItem]) -> None:
        counts = np.fromiter((len(item.cost_metrics) for item in kept), dtype=np.int64, count=len(kept))
        starts = np.cumsum(counts) - counts
        for item, first_row, n_rows in zip(kept, starts.tolist(), counts.tolist(), strict=True):
            self._first[identity(item)] = (len(self._tables), first_row, n_rows)
        buckets = list(itertools.chain.from_iterable(item.cost_metrics for item in kept))
        if not buckets:
            return
        owner = np.repeat(np.arange(len(kept), dtype=np.int64), counts)
        timestamps, table = bucket_columns(buckets, WorkloadCostItem, METRIC_COLUMNS)
        self._validate(kept, owner, timestamps, table)
        self._check_summaries(kept, counts, table)
        label_texts = []
        for item in kept:
            text, control, conflicting = exported_labels(item.labels)
            self.dropped_labels += control
            self.conflicting_labels += conflicting
            label_texts.append(text)
        owners = pa.array(owner)
        n = len(buckets)
        arrays = [
            pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(n, dtype=np.int32)), pa.array([self.cluster_id])
            ),
            _dictionary([item.namespace for item in kept], owners),
            _dictionary([item.workload_type for item in kept], owners),
            _dictionary([item.workload_name for item in kept], owners),
            _dictionary(label_texts, owners),
            timestamps,
            pa.array(np.full(n, self.window.step_seconds, dtype=np.int32)),
            *table.arrays(),
        ]
        self._tables.append(pa.Table.from_arrays(arrays, schema=WORKLOAD_COSTS_SCHEMA))

    def _check_summaries(
        self, kept: Sequence[WorkloadItem], counts: np.ndarray, table: MetricColumns
    ) -> None:
        """Each workload's buckets, read at the requested step, must total its `summary.totalCost`.

        The spacing of timestamps cannot tell every other bucket size (finer buckets that all fall on
        the requested grid, one coarser bucket alone); the summary can. A workload without buckets
        is no data (`no_data`), and one without a summary is checked by its spacing alone (counted).
        A mismatch is raised by `table()`, after the spacing checks, whose messages name both sizes.
        """
        present = np.fromiter((item.summary is not None for item in kept), dtype=bool, count=len(kept))
        self.without_summary += int(np.count_nonzero(~present & (counts > 0)))
        checked = present & (counts > 0)
        if not checked.any():
            return
        step = self.window.step_seconds
        stated = np.array([item.summary.total_cost if item.summary else 0.0 for item in kept])
        bucketed = bucketed_totals(table, counts, step)
        wrong = checked & summary_mismatches(bucketed, stated, counts, step)
        if wrong.any() and self._summary_error is None:
            index = int(np.argmax(wrong))
            label = workload_label(*identity(kept[index]))
            self._summary_error = InvalidResponse(
                f"{summary_problem(float(bucketed[index]), float(stated[index]), step)} (workload {label})",
                reason=WRONG_STEP,
                field="summary.totalCost",
                workload=label,
            )

    def _check_repeat(self, item: WorkloadItem) -> None:
        """An identical repeat is dropped (and counted); a repeat with other numbers is refused."""
        location = self._first[identity(item)]
        if location is None:  # the first copy was filtered out: nothing of it is exported
            same = True
        elif location[2] == 0:  # the first copy had no bucket, so no table holds it
            same = not item.cost_metrics
        else:
            same = same_as_rows(item, self._tables[location[0]].slice(*location[1:]))
        if same:
            self.duplicates += 1
            return
        label = workload_label(*identity(item))
        raise InvalidResponse(
            f"workload {label} is listed twice with different cost metrics or labels; "
            "refusing to choose one of them",
            reason="invalid response",
            field="items",
            workload=label,
        )

    def _validate(
        self, kept: Sequence[WorkloadItem], owner: np.ndarray, timestamps: pa.Array, table: MetricColumns
    ) -> None:
        def workload(row: int) -> str:
            item = kept[int(owner[row])]
            return workload_label(*identity(item))

        def refuse(row: int, field: str, problem: str) -> InvalidResponse:
            return InvalidResponse(
                f"{problem} (workload {workload(row)})",
                reason="invalid response",
                field=field,
                workload=workload(row),
            )

        micros = timestamps.cast(pa.int64()).to_numpy()
        bad_times = self.window.outside(micros)
        if bad_times.any():
            row = int(np.argmax(bad_times))
            w, moment = self.window, timestamps[row].as_py().isoformat()
            raise refuse(
                row,
                "timestamp",
                f"bucket timestamp {moment} is not in ({w.start.isoformat()}, {w.end.isoformat()}]",
            )
        # Off the requested grid (finer or shifted buckets) is decided page by page; a coarser grid only
        # once every page is in (`table()`): one page may hold only workloads of the window's last bucket.
        self._grid = self.window.grid_seconds(micros, self._grid)
        if micros.size:
            earliest, latest = self._bucket_span
            self._bucket_span = (min(earliest, int(micros.min())), max(latest, int(micros.max())))
            uptime = max(float(table[f"uptimeMinutes{tier}"].max()) for tier in TIERS)
            self._max_uptime = max(self._max_uptime, uptime)
        if self._grid % self.window.step_seconds:
            off_grid = (micros - to_microseconds(self.window.start)) % (
                self.window.step_seconds * MICROS_PER_SECOND
            )
            row = int(np.argmax(off_grid != 0)) if off_grid.any() else 0
            problem = self.window.step_problem(self._grid) or ""
            moment = timestamps[row].as_py().isoformat()
            error = refuse(row, "timestamp", f"bucket timestamp {moment} off the requested grid: {problem}")
            error.reason = WRONG_STEP
            raise error
        bad = workload_bucket_problem(table, owner, micros, lambda row: timestamps[row].as_py().isoformat())
        if bad:
            raise refuse(*bad)
