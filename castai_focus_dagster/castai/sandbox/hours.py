"""Hour arithmetic of the sandbox and its deterministic noise: a pure function of (key, hour, stream)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np

from castai_focus_dagster.castai.sandbox.metrics import (
    HOUR_SECONDS,
)


def hour_index(moment: datetime | str) -> int:
    """Whole hours since the epoch of an aware datetime (or RFC 3339 string) that falls on an hour."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        raise ValueError(f"{moment.isoformat()} has no UTC offset")
    seconds = moment.timestamp()
    if seconds % HOUR_SECONDS:
        raise ValueError(f"{moment.isoformat()} is not on a whole hour (the sandbox models hourly rates)")
    return int(seconds) // HOUR_SECONDS


def hour_timestamp(hour: int) -> str:
    return datetime.fromtimestamp(hour * HOUR_SECONDS, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for first in range(0, total, size):
        yield first, min(first + size, total)


def uid(ids: random.Random) -> str:
    return str(uuid.UUID(int=ids.getrandbits(128), version=4))


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def noise(key: np.ndarray | int, when: np.ndarray, stream: int) -> np.ndarray:
    """Uniform [0, 1) that depends only on (key, when, stream): a stateless, vectorised hash."""
    with np.errstate(over="ignore"):
        keyed = _splitmix(
            np.asarray(key, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(stream)
        )
        mixed = _splitmix(keyed ^ np.asarray(when).astype(np.uint64))
    return (mixed >> np.uint64(11)).astype(np.float64) * 2.0**-53
