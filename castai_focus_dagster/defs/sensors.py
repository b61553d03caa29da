"""One sensor for the first-deployment backfill (`JOB_BACKFILL_DAYS`, once, decided by the cursor) and
for gap filling (`JOB_GAP_FILL_DAYS`, every tick: days never published, or last published before they
were complete)."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from castai_focus_dagster.defs.jobs import focus_export_job
from castai_focus_dagster.defs.partitions import PARTITIONS_START
from castai_focus_dagster.defs.schedules import default_status
from castai_focus_dagster.settings import load_settings

PUBLISHED_ASSET_KEY = dg.AssetKey("focus_cost_and_usage")
# Sensor cursor written by the first tick (whatever it requested): the backfill is never asked again.
# The value predates the cursor rule and is kept so deployments that already backfilled stay done.
FIRST_TICK_DONE = "first-deployment-backfill-requested"
# One run per day, below the default priority: the run queue starts the schedule's runs (priority 0)
# first whenever a slot frees, so a long first-deployment history does not hold them back.
BACKFILL_TAGS = {"castai_focus/trigger": "backfill", "dagster/priority": "-1"}


def complete_days(now: datetime, days: int) -> list[str]:
    """The last `days` complete UTC days (yesterday backwards), oldest first, within the partitions."""
    today = now.astimezone(UTC).date()
    wanted = [(today - timedelta(days=n)).isoformat() for n in range(days, 0, -1)]
    return [key for key in wanted if key >= PARTITIONS_START]


def missing_partition_keys(
    now: datetime, gap_days: int, materialized: set[str], partial: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """Complete days in the last `gap_days` that have no materialisation, or whose latest one is
    `partial` (published while the day was still running: the restatement schedule's later runs failed)."""
    return [key for key in complete_days(now, gap_days) if key not in materialized or key in partial]


def partial_days(instance: dg.DagsterInstance, keys: list[str]) -> set[str]:
    """Those of `keys` whose latest FOCUS materialisation says `complete_day: false`."""
    partial = set()
    for key in keys:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=PUBLISHED_ASSET_KEY, asset_partitions=[key]), limit=1
        ).records
        materialization = records[0].asset_materialization if records else None
        complete = materialization.metadata.get("complete_day") if materialization else None
        if isinstance(complete, dg.BoolMetadataValue) and complete.value is False:
            partial.add(key)
    return partial


def run_requests(
    now: datetime,
    *,
    backfill_days: int,
    gap_days: int,
    materialized: set[str],
    first_deployment: bool,
    partial: set[str] | frozenset[str] = frozenset(),
) -> list[dg.RunRequest]:
    """The runs one tick asks for: the first-deployment backfill (once) and the gaps, never a day twice."""
    stamp = now.astimezone(UTC).date().isoformat()
    gaps = missing_partition_keys(now, gap_days, materialized, partial)
    requests = {
        # The run key carries today's date: a day that failed is asked for again tomorrow, not every hour.
        key: dg.RunRequest(
            partition_key=key, run_key=f"gap-{key}@{stamp}", tags={"castai_focus/trigger": "gap"}
        )
        for key in gaps
    }
    if first_deployment and backfill_days > 0:
        for key in complete_days(now, backfill_days):
            requests.setdefault(
                key,
                dg.RunRequest(partition_key=key, run_key=f"backfill-{key}", tags=BACKFILL_TAGS),
            )
    return [requests[key] for key in sorted(requests)]


@dg.sensor(
    job=focus_export_job,
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.RUNNING
    if default_status() == dg.DefaultScheduleStatus.RUNNING
    else dg.DefaultSensorStatus.STOPPED,
    description=(
        "First deployment: requests the last JOB_BACKFILL_DAYS days once. Every hour: requests the days "
        "of the last JOB_GAP_FILL_DAYS that have no FOCUS materialisation yet, or whose latest one was "
        "published before the day was complete."
    ),
)
def focus_gap_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    settings = load_settings()
    now = datetime.now(UTC)
    materialized = set(context.instance.get_materialized_partitions(PUBLISHED_ASSET_KEY))
    window = [key for key in complete_days(now, settings.job_gap_fill_days) if key in materialized]
    first_deployment = context.cursor is None  # first tick ever (a reset cursor backfills again)
    requests = run_requests(
        now,
        backfill_days=settings.job_backfill_days,
        gap_days=settings.job_gap_fill_days,
        materialized=materialized,
        first_deployment=first_deployment,
        partial=partial_days(context.instance, window),
    )
    if first_deployment and settings.job_backfill_days > 0:
        context.log.info(f"first deployment: backfilling the last {settings.job_backfill_days} days")
    if not requests:
        return dg.SensorResult(
            skip_reason=f"no gaps in the last {settings.job_gap_fill_days} days", cursor=FIRST_TICK_DONE
        )
    return dg.SensorResult(run_requests=requests, cursor=FIRST_TICK_DONE)
