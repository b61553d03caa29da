"""The export schedule: each tick re-materialises every day overlapping the last
`COLLECTION_LOOKBACK_HOURS`, today included, because Cast AI revises recent costs."""

import os
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import dagster as dg
from croniter import croniter

from castai_focus_dagster.defs.jobs import focus_export_job
from castai_focus_dagster.defs.partitions import daily_partitions
from castai_focus_dagster.settings import SETTINGS_DOC, load_settings, schedule_cron

DEFAULT_STATUS = next(d.default for d in SETTINGS_DOC if d.env == "SCHEDULE_DEFAULT_STATUS")
# Time a tick's run may take before the asset counts as late (a day takes well under a minute).
FRESHNESS_SLACK = timedelta(hours=1)


def default_status() -> dg.DefaultScheduleStatus:
    """`SCHEDULE_DEFAULT_STATUS`, read when the code location loads (the schedule's definition needs it).

    Only `running` starts automation; any other value leaves it stopped, and the settings check fails
    the first tick with the configuration error, so a typo is loud, never a silent start.
    """
    value = os.environ.get("SCHEDULE_DEFAULT_STATUS", DEFAULT_STATUS).strip().lower()
    return dg.DefaultScheduleStatus.RUNNING if value == "running" else dg.DefaultScheduleStatus.STOPPED


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
    default_status=default_status(),
    description="Exports each day overlapping the last COLLECTION_LOOKBACK_HOURS (late data restated).",
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


def longest_tick_gap(cron: str) -> timedelta:
    """The longest time between two consecutive ticks of `cron` over a week (UTC)."""
    ticks = croniter(cron, datetime(2025, 1, 6, tzinfo=UTC))  # a Monday: the week covers every weekday
    times = [ticks.get_next(datetime) for _ in range(2)]
    while times[-1] < datetime(2025, 1, 14, tzinfo=UTC) and len(times) < 20_000:
        times.append(ticks.get_next(datetime))
    return max(b - a for a, b in pairwise(times))


def schedule_freshness_policy() -> dg.FreshnessPolicy:
    """Fresh while the schedule keeps up: WARN once a tick's run is missing, FAIL once two are."""
    gap = longest_tick_gap(schedule_cron())
    return dg.FreshnessPolicy.time_window(
        warn_window=gap + FRESHNESS_SLACK, fail_window=2 * gap + FRESHNESS_SLACK
    )
