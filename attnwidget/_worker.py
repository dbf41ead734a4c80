"""The one worker thread of a kernel's views: thumbnails and prefetched heads, off the event loop.

One thread for every view, not one per view: the work is sequential anyway (two views cannot
both use the cores), and each thread of its own would keep a malloc arena whose freed pages
stay in the kernel's RSS. The view the user touched last goes first: a notebook that just made
six views queues their prefetches, and a slider moved on one of them must not wait behind the
other five. Among one view's jobs the order is the order they were asked for (thumbnails of a
new layer, then its heads nearest to the shown one).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class Worker:
    """A daemon thread running submitted calls, the most recent owner's first."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Future, Callable[..., Any], tuple]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._epoch = 0  # grows each time another owner submits: its jobs sort first
        self._last: weakref.ref | None = None
        self._thread: threading.Thread | None = None

    def submit(self, owner: object, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(*args)`` on the thread; ``owner``'s jobs go before those of anyone who
        submitted before it. Cancelling the future before it starts skips the call."""
        fut: Future = Future()
        with self._cv:
            if self._last is None or self._last() is not owner:
                self._epoch += 1
                self._last = weakref.ref(owner)
            heapq.heappush(self._heap, (-self._epoch, next(self._seq), fut, fn, args))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="attnwidget-worker", daemon=True)
                self._thread.start()
            self._cv.notify()
        return fut

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    self._cv.wait()
                _, _, fut, fn, args = heapq.heappop(self._heap)
            if not fut.set_running_or_notify_cancel():
                continue  # cancelled while queued
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # handed to whoever waits on the future
                fut.set_exception(exc)


#: The kernel's worker.
WORKER = Worker()
