"""Daily UTC partitions, today's partial day included (`end_offset=1`). Dagster persists the keys:
never change the start date, timezone or format."""

import dagster as dg

PARTITIONS_START = "2025-01-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC", end_offset=1)
