"""Time windows of a daily partition: which charge periods a day covers, clipped at "now"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta


@dataclass(frozen=True)
class DayWindow:
    day: date
    start: datetime  # 00:00 UTC of the day
    end: datetime  # end of the last complete bucket inside the day (== start when nothing is complete yet)
    step_seconds: int

    @property
    def complete(self) -> bool:
        """True when the whole day is in the past, so Cast AI has every bucket of it."""
        return self.end == self.start + timedelta(days=1)

    @property
    def is_empty(self) -> bool:
        return self.end <= self.start


def day_window(partition_key: str, step_seconds: int, now: datetime | None = None) -> DayWindow:
    """The buckets of `partition_key` (YYYY-MM-DD) that have ended by `now`."""
    day = date.fromisoformat(partition_key)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    day_end = start + timedelta(days=1)
    now = now or datetime.now(UTC)
    if now >= day_end:
        end = day_end
    else:
        elapsed = max(0, int((now - start).total_seconds()))
        end = start + timedelta(seconds=elapsed - elapsed % step_seconds)
    return DayWindow(day=day, start=start, end=end, step_seconds=step_seconds)
