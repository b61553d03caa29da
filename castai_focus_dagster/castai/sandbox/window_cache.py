"""The cache of rendered windows, so repeated pages and days of one window are rendered once."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from castai_focus_dagster.castai.sandbox.render import RenderedWindow

# cluster, start hour, buckets, hours per bucket, listing prices, cost scale, /cost body only
WindowKey = tuple[str, int, int, int, bool, float, bool]


class WindowCache:
    """Rendered windows: a small LRU for on-demand renders plus pinned (prerendered) entries.

    One lock per key so that concurrent pages of one cluster render it once, while different
    clusters render in parallel."""

    def __init__(self, capacity: int = 8):
        self._capacity = capacity
        self._recent: OrderedDict[WindowKey, RenderedWindow] = OrderedDict()
        self._pinned: dict[WindowKey, RenderedWindow] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[WindowKey, threading.Lock] = {}

    def get(self, key: WindowKey, build: Callable[[], RenderedWindow]) -> RenderedWindow:
        with self._lock:
            cached = self._lookup(key)
            if cached is not None:
                return cached
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                cached = self._lookup(key)
            if cached is not None:
                return cached
            rendered = build()
            with self._lock:
                self._recent[key] = rendered
                while len(self._recent) > self._capacity:
                    self._recent.popitem(last=False)
                self._key_locks.pop(key, None)
            return rendered

    def peek(self, key: tuple[str, int, int, int, bool, float]) -> RenderedWindow | None:
        """A full render of this window if one is cached (it also holds the /cost body)."""
        with self._lock:
            return self._lookup((*key, False))

    def pin(self, key: WindowKey, rendered: RenderedWindow) -> None:
        with self._lock:
            self._pinned[key] = rendered

    def _lookup(self, key: WindowKey) -> RenderedWindow | None:
        if key in self._pinned:
            return self._pinned[key]
        if key in self._recent:
            self._recent.move_to_end(key)
            return self._recent[key]
        return None
