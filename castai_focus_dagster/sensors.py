"""Gap filling: on first deployment and after outages, request the days of the last `JOB_BACKFILL_DAYS`
that have never been published."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from castai_focus_dagster.jobs import focus_export_job
from castai_focus_dagster.settings import load_settings

PUBLISHED_ASSET_KEY = dg.AssetKey("focus_cost_and_usage")


def missing_partition_keys(now: datetime, backfill_days: int, materialized: set[str]) -> list[str]:
    """Complete days in the last `backfill_days` (yesterday backwards) that have no materialisation."""
    today = now.astimezone(UTC).date()
    wanted = [(today - timedelta(days=n)).isoformat() for n in range(backfill_days, 0, -1)]
    return [key for key in wanted if key not in materialized and key >= "2025-01-01"]


@dg.sensor(
    job=focus_export_job,
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests every day of the last JOB_BACKFILL_DAYS that has no FOCUS materialisation yet.",
)
def focus_gap_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    settings = load_settings()
    now = datetime.now(UTC)
    materialized = set(context.instance.get_materialized_partitions(PUBLISHED_ASSET_KEY))
    missing = missing_partition_keys(now, settings.job_backfill_days, materialized)
    if not missing:
        return dg.SkipReason(f"no gaps in the last {settings.job_backfill_days} days")
    # The run key carries today's date: a day that failed is asked for again tomorrow, not every hour.
    stamp = now.date().isoformat()
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=key, run_key=f"gap-{key}@{stamp}", tags={"castai_focus/trigger": "gap"}
            )
            for key in missing
        ]
    )
