"""`DailyValues`: one value per daily partition, computed or loaded only when the IO manager reaches that
day, so a multi-day run holds one day in memory at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class DailyValues(Generic[T]):
    """One value per partition key (YYYY-MM-DD), produced on demand by `produce(key)`."""

    keys: Sequence[str]
    produce: Callable[[str], T]

    def get(self, key: str) -> T:
        if key not in self.keys:
            raise KeyError(f"partition {key} is not part of this run ({', '.join(self.keys)})")
        return self.produce(key)

    def items(self) -> Iterator[tuple[str, T]]:
        for key in self.keys:
            yield key, self.produce(key)
