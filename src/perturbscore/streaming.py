"""Overlap reading with computing: run a producer in a thread behind a bounded queue.

Numpy releases the GIL while it copies selected values out of a memory-mapped
block (the page faults happen there), so reading block ``k + 1`` on one core while
block ``k`` is scored on another shortens a run towards the slower of the two.
At most ``depth`` finished items wait in the queue, plus one being produced: that is
what the memory plan counts.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

A = TypeVar("A")
T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Yield ``items`` in order while a background thread produces the next ones.

    Parameters
    ----------
    items : iterable
        Produced in the background thread (its code must be safe to run there).
    depth : int
        Items produced ahead of the consumer; ``0`` runs everything in the caller's
        thread.

    Notes
    -----
    An exception in the producer is raised in the consumer at the item where it
    happened.  If the consumer stops early (an exception, or ``close()``), the producer
    is told to stop and is joined before this generator finishes.
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # carried to the consumer
            put(_Failure(exc))

    thread = threading.Thread(target=produce, name="perturbscore-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def ordered_map(
    fn: Callable[[A], T], items: Iterable[A], workers: int, ahead: int | None = None
) -> Iterator[T]:
    """``map(fn, items)`` on ``workers`` threads, results in order, at most ``ahead`` pending.

    ``workers <= 0`` runs in the caller's thread.  Bounding the tasks in flight bounds
    memory: each finished result waits until the consumer takes it.  If the consumer
    stops early, pending tasks are cancelled and the pool is shut down before this
    generator finishes; an exception in ``fn`` is raised at its item.
    """
    if workers <= 0:
        yield from map(fn, items)
        return
    limit = max(1, ahead if ahead is not None else workers)
    pending: deque[Future[T]] = deque()
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="perturbscore-reader") as pool:
        try:
            for item in it:
                pending.append(pool.submit(fn, item))
                if len(pending) >= limit:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
