"""The web console path as users take it: `dagster dev`, a backfill launched over GraphQL, its results.

`dagster dev` runs as a subprocess (webserver, daemon, code server, run process) against the sandbox
served over real HTTP by this test process; the backfill goes through the same GraphQL mutation as the
console's Materialize dialog, and the daemon executes it.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from castai_focus_dagster.castai.sandbox import SandboxOrg
from castai_focus_dagster.storage.keys import data_key
from castai_focus_dagster_tests.dagster_dev import (
    ASSET_KEYS,
    dagster_dev,
    launch_asset_backfill,
    materialization_metadata,
    wait_for_backfill,
    wait_for_code_location,
)

PREFIX = "focus/"  # the default S3_PREFIX of the original exporter

# dagster_graphql's client still passes variables the way gql 4 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gql.*")


def complete_days(count: int) -> list[str]:
    """`count` consecutive UTC days that ended at least a day ago, so every bucket is final."""
    today = datetime.now(UTC).date()
    return [(today - timedelta(days=n)).isoformat() for n in range(count + 1, 1, -1)]


def sandbox_day_total(org: SandboxOrg, key: str) -> float:
    """The sandbox's exact cost of all clusters for one UTC day: independent of the exporter."""
    start = datetime.fromisoformat(key).replace(tzinfo=UTC)
    return sum(org.expected_cluster_total(c.id, start, start + timedelta(days=1)) for c in org.clusters)


@pytest.mark.timeout(300)
def test_backfill_launched_like_the_console_materialises_each_partition(
    exporter_env: Path, sandbox_org: SandboxOrg, tmp_path: Path
) -> None:
    days = complete_days(2)
    with dagster_dev(tmp_path / "dagster_home", os.environ) as dev:
        location = wait_for_code_location(dev)
        assert "focus_export_job" in location.jobs
        assert location.assets == set(ASSET_KEYS)

        backfill_id = launch_asset_backfill(dev, days)
        backfill = wait_for_backfill(dev, backfill_id, timeout=150)
        assert backfill["status"] == "COMPLETED_SUCCESS", dev.failures() or dev.log_tail()
        assert backfill["partitionNames"] == days
        # BackfillPolicy.multi_run(max_partitions_per_run=7): two days are one run over the range.
        (run,) = backfill["runs"]
        assert run["status"] == "SUCCESS"
        tags = {t["key"]: t["value"] for t in run["tags"]}
        assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == (
            days[0],
            days[-1],
        )

        metadata = materialization_metadata(dev, "focus_cost_and_usage", days)

    assert sorted(metadata) == days
    # What the partition view shows for each day must be that day's figures, not the whole run's.
    for key in days:
        published = pq.read_table(
            exporter_env / data_key(PREFIX, sandbox_org.organization_id, date.fromisoformat(key), "parquet")
        )
        day = metadata[key]
        assert day["dagster/row_count"] == published.num_rows > 0, f"{key}: {day}"
        assert day["billed_cost"] == pytest.approx(sandbox_day_total(sandbox_org, key), abs=1e-4), (
            f"{key}: {day}"
        )
