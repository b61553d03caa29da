"""One daily UTC partition = one UTC day of charge periods.

`end_offset=1` includes the current, partial day so the schedule can keep "today" fresh.
Never change start_date, timezone or fmt: partition keys are persisted by Dagster.
"""

import dagster as dg

PARTITIONS_START = "2025-01-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC", end_offset=1)
