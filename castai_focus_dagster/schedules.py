"""Restatement schedule: Cast AI keeps revising recent costs, so every tick re-materialises each day
that overlaps the last `COLLECTION_LOOKBACK_HOURS` (and today's partial day)."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from castai_focus_dagster.jobs import focus_export_job
from castai_focus_dagster.partitions import daily_partitions
from castai_focus_dagster.settings import load_settings, schedule_cron


def restated_partition_keys(now: datetime, lookback_hours: int) -> list[str]:
    """Daily partition keys whose day overlaps [now - lookback, now], oldest first."""
    now = now.astimezone(UTC)
    first = (now - timedelta(hours=lookback_hours)).date()
    keys = []
    day = first
    while day <= now.date():
        keys.append(day.isoformat())
        day += timedelta(days=1)
    valid = set(daily_partitions.get_partition_keys(current_time=now))
    return [k for k in keys if k in valid]


@dg.schedule(
    job=focus_export_job,
    cron_schedule=schedule_cron(),  # an invalid SCHEDULE_CRON fails the load with the settings' message
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Re-materialise each day overlapping the last COLLECTION_LOOKBACK_HOURS (late Cast AI data).",
)
def focus_restatement_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    settings = load_settings()
    now = context.scheduled_execution_time or datetime.now(UTC)
    tick = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
    return [
        dg.RunRequest(
            partition_key=key, run_key=f"restate-{key}@{tick}", tags={"castai_focus/trigger": "schedule"}
        )
        for key in restated_partition_keys(now, settings.collection_lookback_hours)
    ]
