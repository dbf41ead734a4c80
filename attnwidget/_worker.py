"""The one worker thread of a kernel's views: thumbnails and prefetched heads, off the event loop.

One thread for every view, not one per view: the work is sequential anyway (two views cannot
both use the cores), and each thread of its own would keep a malloc arena whose freed pages
stay in the kernel's RSS. The view the user touched last goes first: a notebook that just made
six views queues their prefetches, and a slider moved on one of them must not wait behind the
other five. Among one view's jobs the order is the order they were asked for (thumbnails of a
new layer, then its heads nearest to the shown one). Other views' jobs wait until the kernel
has been quiet for :data:`QUIET_S`: on two cores, their work would slow the replies of the view
in use (the kernel, the server and the browser all need a core to get a reply on screen); the
view in use's own jobs wait :data:`REPLY_S`, for its reply to get on screen first.
"""

from __future__ import annotations

import atexit
import contextlib
import heapq
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

#: Jobs of a view other than the one in use start only after this long without a change (s).
QUIET_S = 0.3
#: Jobs of the view in use start this long after its change (s): the reply to the change gets
#: through the server and is painted first (about the transport floor's time).
REPLY_S = 0.03
#: The interpreter's switch interval (s) while a job runs: how long a thread that handles the
#: browser's messages may wait for the GIL the worker holds (Python's default is 5 ms).
SWITCH_S = 0.0005


class Worker:
    """A daemon thread running submitted calls, the most recent owner's first."""

    def __init__(self) -> None:
        # (-epoch, idle, seq, future, fn, args): the latest owner first, its idle work last
        self._heap: list[tuple[int, bool, int, Future, Callable[..., Any], tuple]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._epoch = 0  # grows each time another owner submits: its jobs sort first
        self._last: weakref.ref | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._touched = 0.0  # time.monotonic() of the last change of any view
        self._running = False
        self._busy = 0  # changes being handled on the event loop (:meth:`busy`)

    def _own(self, owner: object) -> None:
        if self._last is None or self._last() is not owner:
            self._epoch += 1
            self._last = weakref.ref(owner)

    @contextlib.contextmanager
    def busy(self, owner: object) -> Iterator[None]:
        """``owner``'s view is handling a change: no job starts until it is done, and then
        :data:`REPLY_S` (its own jobs) or :data:`QUIET_S` (the others') later.

        A job started during a long change (an ablation's forward, tens of ms) competes with
        it for the cores, and is often for the record the change is about to replace; a job
        already running finishes.
        """
        with self._cv:
            self._own(owner)
            self._busy += 1
            self._touched = time.monotonic()
        try:
            yield
        finally:
            with self._cv:
                self._busy -= 1
                self._touched = time.monotonic()  # the reply is sent: the waits count from here
                self._cv.notify_all()

    def submit(self, owner: object, fn: Callable[..., Any], *args: Any, idle: bool = False) -> Future:
        """Run ``fn(*args)`` on the thread; ``owner``'s jobs go before those of anyone who
        submitted before it. ``idle=True``: only once the kernel has been quiet for
        :data:`QUIET_S` (work that may never be needed). Cancelling the future before it starts
        skips the call."""
        fut: Future = Future()
        with self._cv:
            self._own(owner)
            heapq.heappush(self._heap, (-self._epoch, idle, next(self._seq), fut, fn, args))
            if self._stopping:
                fut.cancel()
                return fut
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="attnwidget-worker", daemon=True)
                self._thread.start()
            self._cv.notify()
        return fut

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until nothing is queued or running (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._heap or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.05))
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel what is queued and wait (at most ``timeout`` s) for the running call: at exit a
        thread still inside torch while the interpreter is torn down aborts the process."""
        with self._cv:
            self._stopping = True
            for _, _, _, fut, *_ in self._heap:
                fut.cancel()
            self._heap.clear()
            self._cv.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        from attnwidget.metrics.basic import single_thread_sorts

        _one_openmp_thread_here()
        with single_thread_sorts():  # prefetches sort on one core; what a view waits for on two
            self._loop()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while (not self._heap or self._busy) and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return
                # the view in use's own work (else another view's, or work for when it is idle)
                mine = -self._heap[0][0] == self._epoch and not self._heap[0][1]
                wait = self._touched + (REPLY_S if mine else QUIET_S) - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                _, _, _, fut, fn, args = heapq.heappop(self._heap)
                self._running = True
            try:
                if fut.set_running_or_notify_cancel():  # else cancelled while queued
                    try:
                        with _short_gil_turns():
                            fut.set_result(fn(*args))
                    except BaseException as exc:  # handed to whoever waits on the future
                        fut.set_exception(exc)
                # held until the next job otherwise: a bound method keeps its view's record
                fut = fn = args = None  # type: ignore[assignment]
            finally:
                with self._cv:
                    self._running = False
                    self._cv.notify_all()


@contextlib.contextmanager
def _short_gil_turns() -> Iterator[None]:
    """While a job runs, a thread waiting for the GIL gets it after :data:`SWITCH_S` at most.

    The jobs are numpy and torch work with much Python between the calls, and numpy holds the
    GIL on small arrays; the kernel's message threads (the shell channel's, the comm
    subshell's, IOPub's) need it for every message, so with Python's 5 ms a reply to a slider
    move waited behind a thumbnail job. Measured (``bench_widget.py``, the interval set in the
    kernel): layer moves at 512 tokens 24.8 and 26.6 ms against 28.2-30.7 ms in four runs
    without, the 4096-token metrics 4.3-5.2x the floor against 5.9-8.1x. Only while a job
    runs (an idle worker holds no GIL), and a value someone else set meanwhile is kept. The
    interval is the process's: a cell running Python threads of its own meanwhile switches
    between them as often (a little more switching, the same shares).
    """
    import sys

    before = sys.getswitchinterval()
    if before <= SWITCH_S:
        yield
        return
    sys.setswitchinterval(SWITCH_S)
    try:
        yield
    finally:
        if sys.getswitchinterval() == SWITCH_S:  # else changed by someone else meanwhile: theirs
            sys.setswitchinterval(before)


def _one_openmp_thread_here() -> None:
    """Torch work in the calling thread runs on one OpenMP thread; the process default (the
    kernel's main thread, threads made later) stays as it was.

    A worker with a team of OpenMP threads of its own, even idle, made the main thread's torch
    work (the model's forward in an ablation) a third slower on two cores (measured).
    ``torch.set_num_threads`` would also change the default of every later thread, so this
    sets the OpenMP count of this thread only, in torch's own libgomp, after torch has set up
    this thread (its first parallel loop); and MKL's count of this thread
    (``MKL_Set_Num_Threads_Local``), which wins over the process-wide one that
    ``torch.set_num_threads`` sets (else a matmul here made a team after a user's
    ``torch.set_num_threads(n)``). Other builds (no libgomp found, no MKL) are left alone.
    """
    import ctypes
    import glob
    import os

    import torch

    torch.get_num_threads()  # torch sets this thread's OpenMP count here, before any parallel loop
    lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    for path in glob.glob(os.path.join(lib, "libgomp*.so*")):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(path).omp_set_num_threads(1)
    for path in glob.glob(os.path.join(lib, "libtorch_cpu.*")):  # MKL is linked in statically
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(path).MKL_Set_Num_Threads_Local(1)  # the C entry (by value)


#: The kernel's worker.
WORKER = Worker()
atexit.register(WORKER.stop)
