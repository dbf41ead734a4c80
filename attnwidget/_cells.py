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
  runs, a training loop for minutes.
* **A second thread doing torch work halves the speed of the first.** Each
  thread that runs a parallel torch op gets its own OpenMP team. Once two teams
  exist there are more OpenMP threads than cores, and libgomp's idle threads stop
  spinning between parallel regions and sleep, so every region has to wake them:
  after a few slider moves, MiniLM's forward at 128 tokens in a cell took 45 ms
  instead of 24. So the thread a handler runs on, if not the main one, does its
  torch work on one OpenMP thread and makes no team (:func:`handler_thread`),
  and a page-asked run expected to last :data:`HOP_MIN_S` or more is handed to
  the kernel's main thread, whose event loop runs it between cells with all of
  torch's threads. A shorter one runs where it is asked: handing it over costs
  more than the second thread saves. Measured in JupyterLab (ablation click to
  repaint, MiniLM): at 128 tokens 58 ms where asked and 66 ms handed over; at
  510 tokens 168 and 142 ms.

Runs asked for from Python (``view.ablated = ...`` in a cell, :meth:`sweep`) run
where they are asked. Outside IPython nothing is tracked and a run happens where
it is asked, one at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: A page-asked run expected to last this long or more (s) is handed to the kernel's main
#: thread (all of torch's threads); a shorter one runs on the asking thread (one thread).
HOP_MIN_S = 0.08

#: How long a page-asked run waits for the kernel's main thread to take it (s); it is idle
#: between cells and takes it at once. Longer means the main thread is busy after all (a cell
#: that began meanwhile): the run is refused rather than left to wait for the cell.
START_S = 0.5

_lock = threading.RLock()
_running: set[int] = set()  # threading.get_ident() of each thread running a cell now
_watching = False
_local = threading.local()


class ModelInUseError(RuntimeError):
    """The page asked for a model run while a cell is running."""


def watch_cells() -> None:
    """Follow the kernel's cells (once per process): called when a view with a model is made.

    The cell making the view is running already (its ``pre_run_cell`` came before the hooks),
    so it counts as running until its ``post_run_cell``.
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
        _running.add(threading.get_ident())
        _watching = True


def cell_starts(_info: Any = None) -> None:
    """IPython's ``pre_run_cell``: waits for a model run the page asked for on this thread's
    behalf (outside a kernel), then counts the cell."""
    with _lock:
        _running.add(threading.get_ident())


def cell_ends(_result: Any = None) -> None:
    """IPython's ``post_run_cell``."""
    with _lock:
        _running.discard(threading.get_ident())


def handler_thread() -> None:
    """Called where the page's messages come in. On a thread other than the main one (a kernel
    subshell), torch runs on one OpenMP thread from then on: a team of its own would slow every
    parallel op of the main thread's team, and this thread's, about twice (see the module's
    doc). Must come before the thread's first parallel op: a team once made stays."""
    if threading.current_thread() is threading.main_thread() or getattr(_local, "settled", False):
        return
    from attnwidget._worker import _one_openmp_thread_here

    _local.settled = True
    _one_openmp_thread_here()


def run_for_page(what: str, fn: Callable[[], T], expected_s: float | None = None) -> T:
    """``fn()``, a model run the page asked for (``what`` names it in a refusal; ``expected_s``:
    how long it should take, None if unknown). Asked from another thread than the kernel's
    main one, a run of :data:`HOP_MIN_S` or more (or unknown) is handed to the main thread; any
    other runs here, holding a lock that a starting cell waits for. Raises
    :class:`ModelInUseError` while a cell runs on another thread, or when the main thread does
    not take the run within :data:`START_S`."""
    loop = _main_loop() if expected_s is None or expected_s >= HOP_MIN_S else None
    if loop is None:
        with _lock:
            _refuse_if_a_cell_runs(what)
            return fn()
    job = _Job(fn)
    with _lock:
        _refuse_if_a_cell_runs(what)
        loop.add_callback(job.run)
    if not job.taken(START_S):
        raise _refusal(what)
    return job.result()


def _refusal(what: str) -> ModelInUseError:
    return ModelInUseError(
        f"{what}: not run, the model may be in use by the cell that is running (a run now would "
        "change what that cell computes); try again when the cell has finished")


def _refuse_if_a_cell_runs(what: str) -> None:
    if _running - {threading.get_ident()}:
        raise _refusal(what)


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

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
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
            self.value = self.fn()
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
            return False

    def result(self) -> Any:
        with self._cv:
            self._cv.wait_for(lambda: self.state == "done")
        if self.error is not None:
            raise self.error
        return self.value
