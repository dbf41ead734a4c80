"""AttentionView's methods on its record: the ablated re-run of its model, the sweep of every
head, what it sends of the shown map (the panel with a comparison record beside it, the
numbers and the text view's row, now or once the worker has them), and the export of what it
shows.

A mixin of :class:`attnwidget.widget.AttentionView` (which holds the traits named
here); split from ``widget.py`` so that each file of the widget layer keeps one job.
"""

from __future__ import annotations

import time
import weakref
from pathlib import Path
from typing import Any

from attnwidget import _messages as msg
from attnwidget._messages import OVERVIEW_SIDE
from attnwidget.maps import AttentionMaps


class RecordMethods:
    """Sweep, compare, export, ablation re-runs and the messages of the shown map; the state
    lives in AttentionView's traits."""

    # set by AttentionView.__init__: the record as first made, how to re-run its model, the
    # record :meth:`compare_with` gave, the heads ablated in the record shown
    _original: Any
    _how: Any
    _other: tuple[AttentionMaps, str] | None
    _ablated_now: list[list[int]]
    _released: bool
    _ahead: Any = None  # the worker's future of ViewSource.make_base, once asked
    _displays: int  # the browser's displays of the view now (attnwidget._lifetime)
    _timings: Any
    _batch: int
    _dirty: set[str]

    def _send_panel(self) -> None:
        s = self._state()  # one reading for the picture and its view (AttentionView._state)
        other = self._comparison() if self.compare else None
        if other is not None and s["mode"] in msg.COMPARED_MODES:
            b = msg.comparison_maps(other[0], s["mode"], s["layer"], s["head"])
            traits = msg.comparison_messages(self._shown(s), b, other[1], s["scale"], self._view(s))
        else:
            overview = self._panels.overview(self._key(s), s["scale"])
            traits = {"panel": {**overview, "view": self._view(s)}, "panel_b": {}, "panel_diff": {},
                      "caption_b": self._compare_note(other, s["mode"])}
        traits["caption"] = msg.view_caption(self.maps, s["mode"], s["layer"], s["head"])
        for name, value in traits.items():
            self.set_trait(name, value)

    def _send_text_row(self) -> None:
        s = self._state()
        query, row = s["query"], {}
        if self.show_text:  # on the panel's colour range: at pool 1 its levels equal the map row's
            received = self._panels.received(self._key(s)) if query is None else None
            row = msg.text_row_message(self._shown(s), received, query, self.panel["vmax"], s["scale"],
                                       self._view(s))
        self.set_trait("text_row", row)

    def _numbers_later(self, dirty: set[str]) -> None:
        key = self._key()

        def send(_static: Any) -> None:
            if not self._closed() and self._key() == key:  # else a newer change sent its own
                with self.hold_sync():
                    self._send_numbers(dirty)

        def fail(exc: BaseException) -> None:
            if not self._closed() and self._key() == key:
                self._show_error(exc)

        self._panels.compute_then(lambda: self._panels.metrics(key).static(), send, fail)

    def _send_numbers(self, dirty: set[str]) -> None:
        if "metrics" in dirty:
            s = self._state()  # one reading for the numbers and their view (AttentionView._state)
            self.set_trait("metrics", msg.metrics_message(self._shown(s), s, self._typical(s)))
        if "text_row" in dirty or "panel" in dirty:
            self._send_text_row()

    def _compare_note(self, other: tuple[AttentionMaps, str] | None, mode: str) -> str:
        """``caption_b`` when no B is drawn: none with compare off; in a mode without a comparison,
        that; else what would give the view something to compare."""
        if not self.compare:
            return ""
        if mode not in msg.COMPARED_MODES or other is not None:
            return msg.NOT_COMPARED
        return msg.NOTHING_TO_COMPARE if self._how is not None else msg.NOTHING_TO_COMPARE_RECORD

    def _comparison(self) -> tuple[AttentionMaps, str] | None:
        if self._other is not None:
            return self._other
        if self.ablated:
            return self._original, "original (no head ablated)"
        return None

    def _apply_ablation(self) -> None:
        """Re-run the model with the ablated heads switched off (or restore the original)."""
        self._show_ablation(*self._ablation_run())

    def _ablation_run(self) -> tuple[AttentionMaps, dict]:
        """The record and effect for the ablate controls (the model run; the original and {}
        with none); on failure or refusal the controls go back and the error is raised."""
        if not self.ablated:
            return self._original, {}
        try:
            return self._how.ablated(self.ablated, self.ablation_mode, self._original)  # type: ignore[union-attr]
        except BaseException:  # the model failed, or was refused (attnwidget._cells)
            self._revert_ablation()
            raise

    def _show_ablation(self, maps: AttentionMaps, effect: dict) -> None:
        """Make ``maps`` the record shown (what was computed from layers it shares is kept)."""
        self.set_trait("effect", effect)
        self._ablated_now = [list(p) for p in self.ablated]
        self._panels.replace(maps)

    def _revert_ablation(self) -> None:
        """The ablate controls back to the heads ablated in the record shown, so that nothing
        claims a state that was never computed (the reason shows as status); not applied again."""
        self._batch += 1
        try:
            self.ablated = self._ablated_now
        finally:
            self._batch -= 1
        self._dirty.discard("ablation")

    def _prepare_ablation(self, pairs: Any, mode: Any) -> None:
        """The pointer rests on the ablate button, or on a head thumbnail with shift held
        (``js/src/interaction.ts``, ``hintAblation``): run the model for the heads a click there
        would leave switched off, so that the click finds the run kept
        (:meth:`attnwidget._view_source.ViewSource.prepare`).

        Runs here, between the kernel's other messages, like any change, so the click that
        follows waits for it instead of starting its own; not while a cell runs
        (:mod:`attnwidget._cells`). A hint that
        no longer fits the view (another record, a bad value) is dropped; so is a failing run,
        which the click then runs again and reports.
        """
        from attnwidget._checks import check

        if self._how is None or self._closed() or self._released or self.ablation_mode != mode:
            return
        try:
            pairs = check("ablated", list(pairs), self._limits())
        except Exception:  # anything the page sent that is not [layer, head] pairs
            return
        if not pairs or pairs == self._ablated_now:
            return
        start = time.perf_counter()
        try:
            with self._panels.busy():
                self._how.prepare(pairs, mode, self._original)
        except Exception:  # a hint: the click runs it again and shows the error
            return
        finally:  # the kernel's time on the hint, for benchmarks/bench_widget.py (milliseconds)
            self._timings.append({"traits": ["prepare_ablation"], "ms": (time.perf_counter() - start) * 1e3})

    def _base_ahead(self) -> None:
        """Have the worker make the plain run the first ablation click needs, once the kernel is
        idle (:meth:`attnwidget._view_source.ViewSource.make_base`): without it the first click
        ran the model twice (at 128 tokens 170 ms against 80 for the next clicks, measured in
        JupyterLab). Asked when a display appears, after each change, and once the model is
        free again after a cell or page-asked run held it, until it is made."""
        how = self._how
        if how is None or self._released or self._closed() or not self._displays or (
                self._ahead is not None and not self._ahead.done()):
            return  # a view no display shows (yet) makes nothing ahead
        from attnwidget._worker import WORKER

        try:
            wanted = how.wants_base(self._original.shape[-1])
        except Exception:  # work ahead: it must not fail the change or display that asked
            return
        if wanted:  # a cell holding the model: asked again once the last cell has ended
            retry = weakref.WeakMethod(self._base_ahead)
            self._ahead = WORKER.submit(self._panels, how.make_base, how.forgets, retry, idle=True)

    def _forget_runs(self) -> None:
        """Drop the model runs kept for the ablation (a view closed, or letting go of its record):
        the plain run not yet made ahead is not made, one in flight is not kept."""
        if self._ahead is not None:
            self._ahead.cancel()
        if self._how is not None:
            self._how.forget()

    def sweep(self, mode: str = "zero", progress: bool = True) -> Any:
        """Ablate every head on its own (:func:`attnwidget.ablate.ablation_sweep`); returns ``[L, H]``.

        The scores also go to the view: each head thumbnail shows its own.
        """
        if self._how is None:
            raise ValueError("sweep: this view shows a record, not a model; build it from a model")
        res = self._how.sweep(mode, progress)
        self.set_trait("sweep_scores", msg.sweep_message(res["score"], res["metric"], mode))
        return res["score"]

    def export(self, path: str | Path, scale: float = 2.0) -> Path:
        """Save what the view shows (same max-pooled map, threshold, colormap and colour range,
        caption as title) as ``.html`` (offline), ``.png`` or ``.svg``; see
        :func:`attnwidget.plots.export`."""
        from attnwidget import plots

        maps, pm = self.maps, self._shown()
        # the same overview, colour range and masking as the panel the browser draws
        fig = plots.matrix_figure(
            pm.weights.numpy(), maps.query_display, maps.key_display, self.caption, palette=self.colormap,
            vmax=msg.colour_top(pm.weights, self.scale),
            threshold=(self.threshold if self.dim else 0) or None,
            visible=pm.visible(), max_side=OVERVIEW_SIDE,
        )
        return plots.export(fig, path, scale=scale, title=self.caption)

    def compare_with(self, other: AttentionMaps, label: str = "other record") -> None:
        """Show ``other`` beside this record under the same sliders, with the difference A − B.

        ``other`` needs the same layers and heads; the difference map also needs
        the same number of tokens. Turns ``compare`` on.
        """
        if not isinstance(other, AttentionMaps):
            raise TypeError(f"other: expected an AttentionMaps, got {type(other).__name__}")
        if other.shape[:2] != self.maps.shape[:2]:
            raise ValueError(
                f"other: expected {self.maps.shape[0]} layers x {self.maps.shape[1]} heads like "
                f"this view, got {other.shape[0]} x {other.shape[1]}"
            )
        self._other = (other, str(label))
        if self.compare:
            self._dirty.add("panel")
            self._flush()
        else:
            self.compare = True
