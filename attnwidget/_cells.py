"""The kernel's running cells, and where the model runs the page asks for happen.

A view runs its model when the page asks (an ablation click, the ablation hint, a
record extracted again for a display that came back). While such a run lasts
the model carries the view's hooks (the ablated heads, the replay's recording)
and is in eval mode with eager attention.

JupyterLab 4.4+ hands widget messages to a kernel subshell when the kernel has
them (ipykernel 7, the ``commsOverSubshells`` setting, on by default), and
ipykernel routes a widget's messages to the thread that last sent for it: after
a view's first reply its messages are handled on a thread of their own, beside
whatever cell is running. Two things follow, both measured in JupyterLab 4.6
with ipykernel 7.4 on two cores:

* **A run beside a cell changes what the cell computes.** A cell calling the
  model in a loop got an ablated output while ablate was clicked. So a page-asked
  run while a cell runs is refused with :class:`ModelInUseError` (the view shows
  why, its controls go back to what was computed, and a click after the cell
  runs); waiting instead would hold the view's thread for as long as the cell
  runs, a training loop for minutes. This holds on any thread: without subshells
  (VS Code, the classic Notebook) ipykernel 7 handles a widget message on the main
  thread while an async cell awaits, and what it awaits may be using the model.
* **A second thread doing torch work halves the speed of the first.** Each
  thread that runs a parallel torch op gets its own OpenMP team. Once two teams
  exist there are more OpenMP threads than cores, and libgomp's idle threads stop
  spinning between parallel regions and sleep, so every region has to wake them:
  after a few slider moves, MiniLM's forward at 128 tokens in a cell took 45 ms
  instead of 24. So the thread a handler runs on, if not the main one, does its
  torch work on one OpenMP thread (and MKL's) and makes no team
  (:func:`page_message`; other widgets whose messages JupyterLab sends to the same
  comm subshell get one thread there too), and a page-asked run expected to last
  :data:`HOP_MIN_S` or more is handed to the kernel's main thread, whose event
  loop runs it between cells with all of torch's threads. A shorter one runs
  where it is asked: handing it over costs more than the second thread saves.
  Measured in JupyterLab (ablation click to repaint, MiniLM): at 128 tokens 58 ms
  where asked and 66 ms handed over; at 510 tokens 168 and 142 ms. A run the main
  thread does not take within :data:`START_S` (a GUI event loop holds it) is made
  where it was asked, unless a cell runs by then. The kernel's interrupt does not
  stop a run on the main thread's event loop; it lasts what a click's run lasts.

Runs asked for from Python (``view.ablated = ...``, ``view.maps``, :meth:`sweep`)
run where they are asked, ungated. Outside IPython no cell is tracked.

Runs nobody asked for yet (a view's plain run made ahead of its first ablation
click, :meth:`attnwidget._view_source.ViewSource.make_base`) go through
:func:`run_ahead`: only in a kernel, only while no cell runs, and never waiting
for the model.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

#: A page-asked run expected to last this long or more (s) is handed to the kernel's main
#: thread (all of torch's threads); a shorter one runs on the asking thread (one thread).
HOP_MIN_S = 0.08

#: How long a page-asked run waits for the kernel's main thread to take it (s); it is idle
#: between cells and takes it at once. If it does not (a cell began meanwhile, or a GUI event
#: loop holds it), the run is refused while a cell runs, else made where it was asked.
START_S = 0.5

_lock = threading.RLock()  # held by a page-asked run; a starting cell waits for it
_running: collections.Counter[int] = collections.Counter()  # thread id -> cells running on it
_watching = False
_local = threading.local()  # .page: page messages being handled here; .settled: one OpenMP thread
_retry_lock = threading.Lock()
_retries: list[Callable[[], Any]] = []  # run_ahead's refused asks, each giving its callback


class ModelInUseError(RuntimeError):
    """The page asked for a model run while a cell is running."""


def watch_cells() -> None:
    """Follow the kernel's cells (once per process): called when a view with a model is made.

    A view made on the main thread is made by a running cell whose ``pre_run_cell`` came
    before the hooks: it counts as running until its ``post_run_cell``.
    """
    global _watching
    try:
        from IPython import get_ipython
    except ImportError:  # no IPython: nothing runs cells
        return
    shell = get_ipython()
    with _lock:
        if _watching or shell is None or not hasattr(shell, "events"):
            return
        shell.events.register("pre_run_cell", cell_starts)
        shell.events.register("post_run_cell", cell_ends)
        if threading.current_thread() is threading.main_thread():
            _running[threading.get_ident()] += 1
        _watching = True


def cell_starts(_info: Any = None) -> None:
    """IPython's ``pre_run_cell``: waits for a page-asked run in flight, then counts the cell
    (a cell run from a cell counts twice)."""
    with _lock:
        _running[threading.get_ident()] += 1


def cell_ends(_result: Any = None) -> None:
    """IPython's ``post_run_cell``."""
    with _lock:
        me = threading.get_ident()
        _running[me] -= 1
        if _running[me] <= 0:
            del _running[me]
        free = not _running
    if free:
        _model_free()


@contextlib.contextmanager
def page_message() -> Iterator[None]:
    """Around the handling of a message from the page: model runs asked for meanwhile are the
    page's (:func:`run_for_page`). On a thread other than the main one (a kernel subshell),
    torch runs on one OpenMP thread from then on: a team of its own would slow every parallel
    op of the main thread's team, and this thread's, about twice (see the module's doc). That
    holds for every widget whose messages the thread handles (JupyterLab gives all of them one
    comm subshell). It must come before the thread's first parallel op: a team once made stays.
    """
    if threading.current_thread() is not threading.main_thread() and not getattr(_local, "settled", False):
        from attnwidget._worker import _one_openmp_thread_here

        _local.settled = True
        _one_openmp_thread_here()
    _local.page = getattr(_local, "page", 0) + 1
    try:
        yield
    finally:
        _local.page -= 1


def run_for_page(what: str, fn: Callable[[], T], expected_s: float | None = None) -> T:
    """``fn()``, a model run (``what`` names it in a refusal; ``expected_s``: how long it should
    take, None if unknown). Asked from Python (not within :func:`page_message`), it runs as
    asked. Asked by the page: refused with :class:`ModelInUseError` while a cell runs (on any
    thread: an async cell awaits on the main one); from another thread than the kernel's main
    one, a run of :data:`HOP_MIN_S` or more (or unknown) is handed to the main thread; any
    other runs here. Either way it holds the lock a starting cell waits for."""
    if not getattr(_local, "page", 0):
        return fn()
    try:
        loop = _main_loop() if expected_s is None or expected_s >= HOP_MIN_S else None
        if loop is not None:
            job = _Job(fn, what)
            with _lock:
                _refuse_if_a_cell_runs(what)
                loop.add_callback(job.run)
            if job.taken(START_S):
                return job.result()
        with _lock:  # here: a short run, no kernel, or the main thread did not take it
            _refuse_if_a_cell_runs(what)
            return fn()
    finally:
        _model_free()


def run_ahead(fn: Callable[[], Any], retry: Callable[[], Any] | None = None) -> bool:
    """``fn()``, a model run nobody has asked for yet (work made ahead of a click), only in a
    kernel whose cells are followed, while no cell runs and no page-asked run is in flight; it
    does not wait for them (a cell starting meanwhile waits for it, as for a page-asked run).
    Code that is not a cell (another widget's callback, a thread of the user's) is not seen.
    Returns whether it ran; if a cell or a page-asked run held the model, ``retry`` (a
    ``weakref.WeakMethod`` or any callable returning the callback, or None) is called once
    the last cell has ended or that run is over."""
    if not _lock.acquire(blocking=False):
        _later(retry)
        return False
    try:
        if not _watching:
            return False
        if _running:
            _later(retry)
            return False
        fn()
        return True
    finally:
        _lock.release()


def _later(retry: Callable[[], Any] | None) -> None:
    if retry is not None:
        with _retry_lock:
            _retries.append(retry)


def _model_free() -> None:
    """Call the retries :func:`run_ahead` left (outside every lock; a dead reference is skipped)."""
    with _retry_lock:
        if not _retries:
            return
        due = list(_retries)
        _retries.clear()
    for ref in due:
        callback = ref()
        if callback is not None:
            callback()


def _refuse_if_a_cell_runs(what: str) -> None:
    if _running:
        raise ModelInUseError(
            f"{what}: not run, the model may be in use by the cell that is running (a run now "
            "would change what that cell computes); try again when the cell has finished")


def _main_loop() -> Any:
    """The kernel's main event loop (tornado's, thread-safe ``add_callback``) when called from
    another thread inside ipykernel; else None."""
    if threading.current_thread() is threading.main_thread():
        return None
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    loop = getattr(getattr(get_ipython(), "kernel", None), "io_loop", None)
    return loop if callable(getattr(loop, "add_callback", None)) else None


class _Job:
    """``fn`` handed to the main thread: taken there, or cancelled by the asking thread first."""

    def __init__(self, fn: Callable[[], Any], what: str) -> None:
        self.fn: Callable[[], Any] | None = fn
        self.what = what
        self.state = "queued"  # -> "running" -> "done", or -> "cancelled"
        self.value: Any = None
        self.error: BaseException | None = None
        self._cv = threading.Condition()

    def run(self) -> None:
        """On the main thread."""
        with self._cv:
            if self.state != "queued":  # the asking thread gave up on it
                return
            self.state = "running"
            self._cv.notify_all()
        try:
            with _lock:  # checked again: an async cell may await on this thread now
                _refuse_if_a_cell_runs(self.what)
                self.value = self.fn()  # type: ignore[misc]  # set: the job was not cancelled
        except BaseException as exc:  # handed to the asking thread
            self.error = exc
        finally:
            with self._cv:
                self.state = "done"
                self._cv.notify_all()

    def taken(self, timeout: float) -> bool:
        """Whether the main thread took the job within ``timeout`` s; if not, it never will."""
        with self._cv:
            if self._cv.wait_for(lambda: self.state != "queued", timeout):
                return True
            self.state = "cancelled"
            self.fn = None  # the queued callback stays on the main loop until reached: hold nothing
            return False

    def result(self) -> Any:
        with self._cv:
            self._cv.wait_for(lambda: self.state == "done")
        if self.error is not None:
            raise self.error
        return self.value
