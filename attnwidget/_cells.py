"""The kernel's running cells and the model runs the page asks for: never both at once.

A view runs its model when the page asks (an ablation click, the ablation hint, a
record extracted again for a display that came back). While that run lasts the
model carries the view's hooks (the ablated heads, the replay's recording) and is
in eval mode with eager attention. A cell that used the same model meanwhile
would get those outputs, silently.

Before subshells that could not happen: the kernel handled the page's messages on
its main thread, between cells. JupyterLab 4.4+ sends widget messages to a kernel
subshell when the kernel has them (ipykernel 7: ``commsOverSubshells``, on by
default), and ipykernel then routes a widget's messages to the thread that last
sent for it. So after the first slider move the view's messages run on a thread
of their own, beside whatever cell is running. Measured in JupyterLab 4.6 with
ipykernel 7.4: a cell calling the model in a loop got an ablated output while
ablate was clicked.

So the two wait for each other:

* a cell that starts waits for a page-asked run in flight (IPython's
  ``pre_run_cell``; the runs last tens of milliseconds);
* a page-asked run while a cell runs on another thread is refused with
  :class:`ModelInUseError`: the view shows why and its controls go back to what was
  computed; a click after the cell has finished runs it. (Waiting instead would
  hold the view's thread for as long as the cell runs, a training loop for
  minutes.)

Runs asked for from Python (``view.ablated = ...`` in a cell, :meth:`sweep`) are
on the cell's own thread and go ahead. Outside IPython nothing is tracked.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

_lock = threading.RLock()
_running: set[int] = set()  # threading.get_ident() of each thread running a cell now
_watching = False


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
    """IPython's ``pre_run_cell``: waits for a model run the page asked for, then counts the cell."""
    with _lock:
        _running.add(threading.get_ident())


def cell_ends(_result: Any = None) -> None:
    """IPython's ``post_run_cell``."""
    with _lock:
        _running.discard(threading.get_ident())


@contextlib.contextmanager
def page_run(what: str) -> Iterator[None]:
    """Around a model run the page asked for (``what`` names it in the refusal): no cell starts
    until it ends. Raises :class:`ModelInUseError` while a cell runs on another thread."""
    with _lock:
        if _running - {threading.get_ident()}:
            raise ModelInUseError(
                f"{what}: not run, the model may be in use by the cell that is running (a run now "
                "would change what that cell computes); try again when the cell has finished")
        yield
