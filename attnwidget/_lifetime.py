"""An AttentionView's displays: how it shows where no live view can (its text and PNG), and how
long it holds its record (the browser's displays of it, counted).

The browser tells the kernel when a display of a view appears (``shown``) and
when it goes (``hidden``: its output cleared, its cell re-run, its notebook
closed). A notebook keeps every view it ever showed alive (ipywidgets' registry,
IPython's ``Out``), so without this a cell re-run 20 times would hold 20 records
(75 MiB each for MiniLM at 512 tokens). A view that no display shows any more
lets go of its record and caches; a view built from a model and a text (or a
source) extracts its record again when it is needed next: a new display's
first change, :attr:`AttentionView.maps`, an export. Its traits stay, so a
display that comes back shows the same picture and numbers at once.

A view made from a record (``AttentionView(maps)``) or a generation keeps its
record: the caller's record is the caller's, and a generation is not re-run
behind the user's back. Both only drop their caches.

The liveness ping of ``js/src/link.ts`` is answered here too (and the ablation hint
routed), and the view's ``repr`` and
display bundle (a PNG snapshot beside the live view, :mod:`attnwidget.snapshot`) are made here.
"""

from __future__ import annotations

from typing import Any

from attnwidget import _panels
from attnwidget._cells import page_message


def _return_freed_memory() -> None:
    """Hand the pages freed with a record back to the OS (glibc keeps freed heap pages, and each
    worker thread's arena, as the process's own: the kernel's RSS would only grow)."""
    import ctypes
    import gc

    gc.collect()
    try:
        # the C library already loaded in this process (find_library would run ldconfig)
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to ask
        return
    trim(0)


class Lifetime:
    """Mixin of :class:`attnwidget.widget.AttentionView`: its displays and the browser's messages
    about them."""

    _displays = 0  # displays the browser says show this view now
    _released = False  # True while the record is let go of (rebuilt on demand)

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict):
            with page_message():  # the page's: model runs wait for no cell (attnwidget._cells)
                self._handle_message(content)

    def _handle_message(self, content: dict) -> None:
        kind = content.get("type")
        if kind == "ping":
            # the browser pings after each change it sends; messages are handled in order, so
            # the pong also says that the change before it has been handled (NO_REPLY_MS in js/)
            self.send({"type": "pong", "seq": content.get("seq")})
        elif kind == "shown":
            self._displays += 1
            self._base_ahead()
        elif kind == "hidden":
            self._displays = max(0, self._displays - 1)
            if self._displays == 0:
                self._let_go()
        elif kind == "prepare_ablation":  # an ablation click is coming: see _view_records
            self._prepare_ablation(content.get("ablated"), content.get("mode"))

    def _let_go(self) -> None:
        """No display shows this view: free the record and the caches (see the module's doc)."""
        panels = self._panels
        if panels is None or panels.closed or self._released:
            return
        rebuild = getattr(self._how, "rebuild", None)
        if rebuild is None:
            panels.drop_caches()
            return
        panels.close()
        self._forget_runs()
        self._original = None
        self._released = True
        _return_freed_memory()

    def _restore(self) -> None:
        """Extract the record again (the model as it is now) and re-apply the ablated heads."""
        if not self._released:
            return
        from attnwidget._cells import run_for_page

        maps = run_for_page("extracting the record again for this display", self._how.rebuild,
                            self._how.extract_s)
        self._original = maps
        self._panels = _panels.PanelStore(maps, corpus=self._corpus)
        self._released = False
        # the record shown is the plain one until the ablation below is made
        self._ablated_now = []
        self.set_trait("effect", {})
        if self.ablated:
            self._apply_ablation()

    def __repr__(self) -> str:
        # also the text a notebook shows where the live view cannot be (a reopened notebook)
        if self._closed():
            return "AttentionView(closed)"
        L, H, Q, K = self.maps.shape
        return (f"AttentionView({self.maps.model_name or 'unknown model'}, {L} layers x {H} heads, "
                f"{Q} x {K} tokens; layer {self.layer}, head {self.head}) - a live view: run the cell "
                "to see it")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # the live view plus a PNG of what it shows at display time, for front ends without
        # the widget manager (nbconvert, GitHub, nbviewer): see attnwidget.snapshot
        from attnwidget.snapshot import with_snapshot

        bundle = super()._repr_mimebundle_(**kwargs)
        return bundle if self._closed() else with_snapshot(self, bundle, kwargs)

    def _closed(self) -> bool:
        """True once :meth:`close` ran (a view that only let go of its record is not closed)."""
        panels = getattr(self, "_panels", None)
        return panels is None or (panels.closed and not self._released)
