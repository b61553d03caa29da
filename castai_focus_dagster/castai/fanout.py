"""Bounded, in-order fan-out on threads: the work of many clusters with memory bounded by a few."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def in_input_order(
    work: Callable[[K], V], keys: Iterable[K], width: int, *, thread_name_prefix: str
) -> Generator[tuple[K, V], None, None]:
    """(key, work(key)) in input order, `width` at a time.

    At most `width` results are in flight or finished but not yet yielded, so memory is bounded by
    that many, not by the number of keys. The first failure is raised when its key's turn comes;
    work not yet started is cancelled.
    """
    todo = list(keys)
    if not todo:
        return
    pool = ThreadPoolExecutor(max_workers=min(width, len(todo)), thread_name_prefix=thread_name_prefix)
    pending: deque[tuple[K, Future[V]]] = deque()
    submitted = 0
    try:
        while pending or submitted < len(todo):
            while submitted < len(todo) and len(pending) < width:
                pending.append((todo[submitted], pool.submit(work, todo[submitted])))
                submitted += 1
            key, future = pending.popleft()
            yield key, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
