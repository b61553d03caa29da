"""One prepared batch for transform and audit: sharing it changes neither the rows nor the report."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa

from castai_focus_dagster.focus.audit import audit_focus
from castai_focus_dagster.focus.rules.conservation import check_castai_consistency
from castai_focus_dagster.focus.source import prepare_workloads, prepared
from castai_focus_dagster.focus.transform import to_focus
from castai_focus_dagster.storage.serialize import to_parquet_bytes
from castai_focus_dagster_tests.focus_inputs import DAY, focus_options, synthetic_org, workload_table


def test_shared_batch_gives_the_same_bytes_and_report() -> None:
    org = synthetic_org(workloads_per_cluster=6)
    # Input in reverse order with a duplicate bucket: preparation has real work to do.
    raw = pa.concat_tables([org.hourly.slice(0, 5), org.hourly]).take(
        pa.array(range(org.hourly.num_rows + 4, -1, -1))
    )
    batch = prepare_workloads(raw)
    assert batch.num_rows == org.hourly.num_rows

    alone = to_focus(raw, org.clusters, org.context, focus_options(), listing=org.listing)
    shared = to_focus(batch, org.clusters, org.context, focus_options(), listing=org.listing)
    assert to_parquet_bytes(shared) == to_parquet_bytes(alone)

    report = audit_focus(shared, batch)
    assert report.passed, report.summary()
    assert report == audit_focus(alone, raw)
    assert prepared(batch) is batch  # no second preparation


def test_consistency_rule_still_reads_every_received_bucket() -> None:
    """A contradictory duplicate bucket is dropped from the rows, but the audit still reports it."""
    good = {"costOnDemand": 1.0, "cpuCostOnDemand": 1.0, "cpuCountOnDemand": 1.0}
    contradictory = {**good, "costOnDemand": 5.0}  # same workload and bucket: the duplicate
    other_hour = {**good, "timestamp": DAY + timedelta(hours=2)}
    raw = workload_table([good, contradictory, other_hour])
    batch = prepare_workloads(raw)
    assert batch.num_rows == 2
    assert check_castai_consistency(batch).failing_rows == check_castai_consistency(raw).failing_rows == 1
