"""Units of Cast AI answers, defined once: timestamps in epoch microseconds, tier costs and their parts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from castai_focus_dagster.castai.models import TIERS

MICROS_PER_SECOND = 1_000_000
MICROS_PER_HOUR = 3600 * MICROS_PER_SECOND
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# cost{Tier} versus cpu + ram + gpu + tpu cost of the tier: four 6-decimal strings round apart by < 5e-6.
TIER_SUM_TOLERANCE = 5e-6
# Half the last of the 6 decimals of Cast AI's strings: how far one rounded value may be from its own.
HALF_MICRO = 0.5e-6
# The hourly rates whose sum, times the bucket hours, a summary's totalCost totals: every tier and storage.
SUMMARY_RATES: tuple[str, ...] = (*(f"cost{tier}" for tier in TIERS), "storageCost")
# The resource costs whose sum is a tier's cost, per tier (`cost{Tier}` = Σ parts).
TIER_PARTS: dict[str, tuple[str, ...]] = {
    tier: tuple(f"{part}{tier}" for part in ("cpuCost", "ramCost", "gpuCost", "tpuCost")) for tier in TIERS
}


def to_microseconds(moment: datetime) -> int:
    """Epoch microseconds of an aware datetime, exactly (no float on the way)."""
    return (moment - EPOCH) // _MICROSECOND


def rfc3339(moment: datetime) -> str:
    """UTC RFC 3339 with `Z`, as Cast AI expects (`2026-09-02T00:00:00Z`)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"timestamps sent to Cast AI must be timezone-aware, got {moment!r}")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if utc.microsecond else "%Y-%m-%dT%H:%M:%SZ")
