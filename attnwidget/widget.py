"""AttentionView: the anywidget that shows attention maps with live metrics.

Traits, validators, the public methods, and which trait change needs which
message (:attr:`AttentionView._WHAT_CHANGES`). The rest of the widget layer
lives in its own rooms:

* :mod:`attnwidget._view_source`: the record from a model, a text, a source or a
  generation; ablated re-runs of the model;
* :mod:`attnwidget._view_records`: the methods on the record (sweep, compare, export,
  the ablated re-run);
* :mod:`attnwidget._panels`: each map's metrics and encoded overview, cached
  under a byte budget, prefetched and the thumbnails built in a worker thread;
* :mod:`attnwidget._messages`: the one reply key and every message's payload;
* :mod:`attnwidget._codec`: every byte; ``js/src``: the drawing.

Transport: ``docs/DESIGN.md``. Every message carries the view state it belongs to,
so the browser never shows an old reply as current.
"""

from __future__ import annotations

import collections
import time
import typing
from typing import Any

import anywidget
import traitlets

from attnwidget import _checks, _panels
from attnwidget import _messages as msg
from attnwidget._cells import ModelInUseError, page_message
from attnwidget._lifetime import Lifetime
from attnwidget._messages import COLORMAPS, DETAIL_SIDE, OVERVIEW_SIDE, SCALES, THUMB_SIDE, VIEW_MODES
from attnwidget._view_records import RecordMethods
from attnwidget._view_source import ViewSource, bundle, corpus_summary, open_record
from attnwidget.maps import CAPTION_TEXT_CHARS, AttentionMaps

#: The sparsity threshold of a new view (the handouts' 0.1).
DEFAULT_THRESHOLD = 0.1

__all__ = ["CAPTION_TEXT_CHARS", "COLORMAPS", "DETAIL_SIDE", "OVERVIEW_SIDE", "SCALES", "THUMB_SIDE",
           "VIEW_MODES", "AttentionView"]


class AttentionView(Lifetime, RecordMethods, anywidget.AnyWidget):
    """Attention maps on a canvas, with layer/head/threshold sliders and live metrics.

    ``AttentionView(model, text, tokenizer=None, **extract_options)`` extracts
    with :func:`attnwidget.extract_attention`; ``AttentionView(model,
    source=...)`` takes the sequence from a source instead of a text (an
    :class:`attnwidget.inputs.Sample`, or a dict of
    :func:`attnwidget.inputs.load_samples` arguments such as ``{"mode":
    "validation", "dataset": "valid.txt", "index": 3, "seq_len": 128}``), and the
    caption names it; ``AttentionView(maps)`` shows any :class:`AttentionMaps`;
    :meth:`from_tensor` takes raw weights ``[Q, K]``, ``[H, Q, K]`` or ``[L, H, Q, K]``.

    ``corpus=``: a :class:`attnwidget.corpus.HeadSummary` (or a corpus table, run
    or folder, summarised here) of the same model: each head thumbnail's badge and
    the metrics of a head then carry ``typical``, the head's median and quartiles
    over the corpus, next to this text's value.

    ``AttentionView(model, prompt, tokenizer=tok, generate=N, greedy=True, seed=0)``: the causal
    LM writes N tokens (:func:`attnwidget.generate.generate_attention`; bad input is refused
    before any forward) and the view shows prompt + generated tokens, with a step control
    (``step``), the generation start marked, and the text view on.

    Every state trait syncs both ways (sliders move the attribute, setting the
    attribute moves the slider); ``metrics`` is recomputed in Python on every
    change and equals :func:`attnwidget.metrics.panel_metrics` on the shown map
    plus a ``view`` entry naming the state it belongs to (and ``typical`` with a corpus).
    """

    _esm = bundle("widget.js")
    _css = bundle("widget.css")

    # ---- state the user changes (both ways)
    layer = traitlets.Int(0).tag(sync=True)
    """int: the layer shown, 0..n_layers-1."""
    head = traitlets.Int(0).tag(sync=True)
    """int: the head shown, 0..n_heads-1 (ignored by the average and rollout modes)."""
    threshold = traitlets.Float(DEFAULT_THRESHOLD).tag(sync=True)
    """float in 0..1: weights strictly below it count as sparse (the handout's sparsity
    threshold) and, with ``dim``, are dimmed on the map."""
    dim = traitlets.Bool(False).tag(sync=True)
    """bool: dim the weights below ``threshold`` on the map and the text view. Off at first
    (at 512 tokens nearly every weight is below the default 0.1, so a dimmed first picture
    would be one flat tone); moving the threshold (slider or attribute) turns it on."""
    query = traitlets.Int(None, allow_none=True).tag(sync=True)
    """int or None: the selected query row (its top-k and profile are in ``metrics['query']``)."""
    step = traitlets.Int(None, allow_none=True).tag(sync=True)
    """int or None: the generated token selected, 0..n_new-1 (generation views only). Step ``i`` is the
    token at position ``prompt_length + i``, chosen by query row ``prompt_length + i - 1``: setting it
    selects that query, and a query that chose no generated token makes it None
    (``metrics['step']``: its top-k keys and its weight on the prompt vs on generated text)."""
    show_text: bool = traitlets.Bool(False).tag(sync=True)  # type: ignore[assignment]
    """bool: the text view under the map (self-attention only; on by default for a generation)."""
    mode = traitlets.Unicode("head").tag(sync=True)
    """str: ``head`` (one head), ``grid`` (all heads of the layer), ``average`` (mean of the
    layer's heads, labelled as an average) or ``rollout`` (attention rollout up to the layer)."""
    colormap = traitlets.Unicode("viridis").tag(sync=True)
    """str: one of :data:`COLORMAPS` (perceptually uniform, plus a grey scale)."""
    scale = traitlets.Unicode("auto").tag(sync=True)
    """str: ``auto`` (colours span 0..the map's largest weight), ``fixed`` (0..1) or ``sqrt``
    (0..the largest, following the square root of the weight: a long text's head that puts
    most of its weight on a sink token shows the rest of its pattern)."""
    top_k = traitlets.Int(5).tag(sync=True)
    """int >= 1: how many keys the selected query's block lists (at most the row's visible keys)."""
    ablated = traitlets.List(traitlets.List(traitlets.Int()), default_value=[]).tag(sync=True)
    """``[[layer, head], ...]``: heads switched off (views built from a model only); the model re-runs."""
    can_ablate = traitlets.Bool(False, read_only=True).tag(sync=True)
    """bool: the view can re-run its model (built from one), so heads can be ablated."""
    ablation_mode = traitlets.Unicode("zero").tag(sync=True)
    """str: ``zero`` or ``mean`` (see :mod:`attnwidget.ablate`)."""
    compare = traitlets.Bool(False).tag(sync=True)
    """bool: show the comparison record (the unablated original, or :meth:`compare_with`'s) beside
    this one, with their difference."""
    viewport = traitlets.List(traitlets.Int(), default_value=[]).tag(sync=True)
    """``[q0, q1, k0, k1]`` (end exclusive) of a zoomed window, or ``[]``; set by the browser."""

    # ---- what Python sends (read-only)
    n_layers = traitlets.Int(1, read_only=True).tag(sync=True)
    n_heads = traitlets.Int(1, read_only=True).tag(sync=True)
    panel = traitlets.Dict(read_only=True).tag(sync=True)
    """dict: the shown ``[Q, K]`` map as binary (see :mod:`attnwidget._codec`), with ``view``,
    ``pool`` (block size of the max-pooling, 1 = full resolution) and ``full_shape``."""
    detail = traitlets.Dict(read_only=True).tag(sync=True)
    """dict: the zoomed window at full resolution (``origin`` = its ``[q0, k0]``), or empty."""
    atlas = traitlets.Dict(read_only=True).tag(sync=True)
    """dict: thumbnails ``[H, h, w]`` of the layer's heads as one binary block, with ``badges``.

    Inside a kernel a worker thread builds it after a layer change, so it arrives after the
    map and the metrics (its ``layer`` says which layer it shows) and no slider move waits
    for it."""
    metrics = traitlets.Dict(read_only=True).tag(sync=True)
    """dict: :func:`panel_metrics` of the shown map plus ``view`` and ``kind``."""
    query_tokens = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    """list[str]: display forms of the query tokens (rendered as text)."""
    key_tokens = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    """list[str]: display forms of the key tokens (rendered as text)."""
    caption = traitlets.Unicode("", read_only=True).tag(sync=True)
    """str: provenance under the map: model, layer, head, masking, input text."""
    status = traitlets.Unicode("", read_only=True).tag(sync=True)
    """str: an error from the last update, shown in the view (empty when all is well)."""
    effect = traitlets.Dict(read_only=True).tag(sync=True)
    """dict: what the ablation changed (:func:`attnwidget.ablate.ablated_record`), empty with none."""
    panel_b = traitlets.Dict(read_only=True).tag(sync=True)
    """dict: the comparison record's map at the same layer/head (same colour range), or empty."""
    panel_diff = traitlets.Dict(read_only=True).tag(sync=True)
    """dict: this map minus the comparison's, symmetric range ``[-vmax, vmax]``, or empty."""
    caption_b = traitlets.Unicode("", read_only=True).tag(sync=True)
    """str: what the comparison record is."""
    generation = traitlets.Dict(read_only=True).tag(sync=True)
    """dict: ``prompt_length`` (P, the first generated position), ``n_new``, ``greedy``, ``seed``,
    ``cached`` of a view built with ``generate=N``; empty otherwise."""
    text_row = traitlets.Dict(read_only=True).tag(sync=True)
    """dict: the text view's shading as one binary uint8 row ``[1, T]`` (the panel's codec): the selected
    query's row on the panel's colour range, or without a query the attention each token receives
    (``kind``: ``query`` or ``received``); its ``view`` is the picture's key plus ``query``. Empty when
    ``show_text`` is off."""
    sweep_scores = traitlets.Dict(read_only=True).tag(sync=True)
    """dict: ``{"score": [L][H] (None where not swept), "metric", "mode"}`` from :meth:`sweep`, or empty;
    the head strip shows each head's score."""

    def __init__(
        self, model: Any, text: Any = None, tokenizer: Any = None, *,
        source: Any = None, corpus: Any = None,
        layer: int = 0, head: int = 0, threshold: float = DEFAULT_THRESHOLD, query: int | None = None,
        mode: str = "head", colormap: str = "viridis", scale: str = "auto", top_k: int = 5,
        step: int | None = None, show_text: bool | None = None, dim: bool | None = None,
        **extract_options: Any,
    ) -> None:
        traits = sorted(set(extract_options) & set(self.class_trait_names(sync=True)))
        if traits:  # else extraction would refuse it in its own words ("extract_hf() got ...")
            raise TypeError(f"{traits[0]}: not an AttentionView(...) argument; set it on the view "
                            f"after making it (view.{traits[0]} = ...)")
        maps, how, gen = open_record(model, text, tokenizer, source, extract_options)
        self._how: ViewSource | None = how  # how to run the model again (None for a record)
        self._corpus = corpus_summary(corpus, maps)
        self._original = maps
        self._other: tuple[AttentionMaps, str] | None = None
        self._ablated_now: list[list[int]] = []  # the heads ablated in the record shown
        self._panels = _panels.PanelStore(maps, corpus=self._corpus)
        self._batch = 0
        self._dirty: set[str] = set()
        self._timings: collections.deque[dict] = collections.deque(maxlen=1000)
        self._shown_at = (layer, head)  # the map before: a slider's direction, for the prefetch
        super().__init__()
        with self.hold_trait_notifications():
            for name, value in msg.record_traits(maps, gen).items():
                self.set_trait(name, value)
            self.set_trait("can_ablate", how is not None)
        self._batch += 1
        try:
            self.layer, self.head, self.threshold, self.query = layer, head, threshold, query
            # a threshold asked for is shown; the default one only counts sparsity until moved
            self.dim = threshold != DEFAULT_THRESHOLD if dim is None else bool(dim)
            self.mode, self.colormap, self.scale, self.top_k = mode, colormap, scale, top_k
            self.show_text = gen is not None if show_text is None else show_text
            if step is not None:
                self.step = step
        finally:
            self._batch -= 1
        self._dirty = {"atlas", "panel", "metrics", "text_row"}
        self._flush()
        self.on_msg(self._on_message)

    @classmethod
    def from_tensor(cls, weights: Any, tokens: Any = None, **options: Any) -> AttentionView:
        """From raw weights ``[Q,K]``, ``[H,Q,K]`` or ``[L,H,Q,K]`` and optional tokens.

        ``options`` go to :meth:`AttentionMaps.from_tensor` (``model_name``,
        ``text``, ``causal``, ...) or to the view (``layer``, ``head``, ...).
        """
        view_keys = {"layer", "head", "threshold", "query", "mode", "colormap", "scale", "top_k", "dim",
                     "show_text"}
        view_opts = {k: options.pop(k) for k in list(options) if k in view_keys}
        return cls(AttentionMaps.from_tensor(weights, tokens, **options), **view_opts)

    @property
    def maps(self) -> AttentionMaps:
        """The record this view shows (extracted again if the view let go of it, see
        :mod:`attnwidget._lifetime`)."""
        self._restore()
        if self._panels.maps is None:
            raise RuntimeError("this AttentionView was closed and holds no record; create a new view")
        return self._panels.maps

    # ------------------------------------------------------------------ validation
    @traitlets.validate(*_checks.RULES)
    def _valid(self, proposal: dict[str, Any]) -> Any:
        # the rules and their messages: attnwidget._checks
        return _checks.check(proposal["trait"].name, proposal["value"], self._limits())

    def _limits(self) -> dict[str, Any]:
        # sizes from traits: a closed view has none
        return {"layers": self.n_layers, "heads": self.n_heads, "queries": len(self.query_tokens),
                "keys": len(self.key_tokens), "model": self._how is not None,
                "steps": self.generation.get("n_new", 0)}

    # ------------------------------------------------------------------ updates
    #: Which message each trait change needs ("ablation": re-run the model first).
    _WHAT_CHANGES: typing.ClassVar[dict[str, set[str]]] = {
        "layer": {"atlas", "panel", "metrics", "detail"},
        "head": {"panel", "metrics", "detail"},
        "mode": {"panel", "metrics", "detail"},
        "scale": {"panel", "detail"},
        "threshold": {"metrics"},
        "query": {"metrics", "text_row"},
        "show_text": {"text_row"},
        "top_k": {"metrics"},
        "viewport": {"detail"},
        "ablated": {"ablation"},
        "ablation_mode": {"ablation"},
        "compare": {"panel"},
    }

    @traitlets.observe("threshold")
    def _threshold_moved(self, _change: dict[str, Any]) -> None:
        if not self._batch:  # set from Python after the constructor: show it on the map
            self.dim = True

    @traitlets.observe(*_WHAT_CHANGES)
    def _on_change(self, change: dict[str, Any]) -> None:
        self._dirty |= self._WHAT_CHANGES[change["name"]]
        if not self._batch:
            self._flush()

    def set_state(self, sync_data: dict[str, Any]) -> None:
        # the browser may send several traits in one message: update once, after all of them
        start, cpu = time.perf_counter(), time.thread_time()
        with page_message():  # the page's: model runs wait for no cell (attnwidget._cells)
            self._batch += 1
            try:
                super().set_state(sync_data)
            finally:
                self._batch -= 1
            self._flush()
        # kernel-side share of each change, for benchmarks/bench_widget.py (milliseconds)
        self._timings.append({"traits": sorted(sync_data), "ms": (time.perf_counter() - start) * 1e3,
                              "cpu_ms": (time.thread_time() - cpu) * 1e3})

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        if not dirty or self._closed():
            return
        try:
            # no background work starts while the change is handled (an ablation's forward
            # needs both cores, and the queued work is for the record it replaces); the
            # worker's waits count from the end
            with self._panels.busy():
                self._handle(dirty)
        except ModelInUseError as exc:  # a page-asked run while a cell runs: refused, not a failure
            self._dirty |= dirty  # the rest is shown with the next change
            self._revert_ablation()  # also when refused before _apply_ablation (a rebuild)
            self._show_error(exc)
        except Exception as exc:  # shown in the view; the traceback still goes to the log
            self._show_error(exc)
            raise

    def _handle(self, dirty: set[str]) -> None:
        """Send what the changes in ``dirty`` need (:attr:`_WHAT_CHANGES`), then queue the work ahead."""
        self._restore()  # a view that let go of its record (no display showed it) rebuilds it
        # One message per step (hold_sync), each message one round of the transport: the
        # picture first, then the numbers when they still need computing (in the worker:
        # the browser paints the new map meanwhile and marks the metrics as updating, and
        # the kernel keeps answering the sliders); both in one message when the numbers are
        # ready; an ablation's effect goes with its picture. The thumbnails come later from
        # the worker. The model runs before the hold: hold_sync's buffer is the widget's, and
        # the worker's replies land in it from the main thread meanwhile.
        ablation = self._ablation_run() if "ablation" in dirty else None
        with self.hold_sync():
            if ablation is not None:
                self._show_ablation(*ablation)
                dirty |= {"panel", "metrics", "detail", "atlas"}
            later = "metrics" in dirty and "panel" in dirty and not self._panels.ready(self._key())
            if "panel" in dirty:
                self._send_panel()
            if "detail" in dirty or "panel" in dirty:
                s = self._state()
                self.set_trait("detail", msg.detail_message(self._shown(s), self.viewport, s["scale"],
                                                            self._view(s)))
            if self.status:
                self.set_trait("status", "")
            if not later:
                self._send_numbers(dirty)
        if later:
            self._numbers_later(dirty)
        if "atlas" in dirty:
            self._panels.schedule_atlas(self.layer, self._set_atlas, self._show_error)
        self._panels.trim()
        if "panel" in dirty and self.mode in msg.HEAD_MODES:
            self._panels.prefetch(self.layer, self.head, self.scale, self._shown_at)
            self._shown_at = (self.layer, self.head)
        self._base_ahead()

    @traitlets.observe("step", "query")
    def _step_or_query(self, change: dict[str, Any]) -> None:
        # step and query name one row of a generation (query = prompt_length + step - 1); a step
        # cleared by the user clears its query, one cleared because the query moved does not
        gen, new, old = self.generation, change["new"], change["old"]
        if change["name"] == "query":
            self.step = msg.step_of_query(new, gen)
        elif new is not None:
            self.query = msg.query_of_step(new, gen)
        elif self.query == msg.query_of_step(old, gen):
            self.query = None

    def _set_atlas(self, atlas: dict[str, Any]) -> None:
        self.set_trait("atlas", atlas)

    def _show_error(self, exc: BaseException) -> None:
        self.set_trait("status", f"{type(exc).__name__}: {exc}")

    def _state(self) -> dict[str, Any]:
        """The view's state, read once. A message takes what it shows and the ``view`` it carries
        from one such reading: a change handled on another thread meanwhile (ipykernel handles a
        view's first message on the main thread and later ones on a subshell, and the worker's
        results are delivered on the loop that asked) then makes the message old, never mixed."""
        return {"mode": self.mode, "layer": self.layer, "head": self.head, "ablated": self.ablated,
                "threshold": self.threshold, "query": self.query, "top_k": self.top_k,
                "generation": self.generation, "scale": self.scale}

    def _view(self, s: dict[str, Any] | None = None) -> dict[str, Any]:
        s = s or self._state()
        return msg.panel_view(s["mode"], s["layer"], s["head"], s["ablated"], s["scale"])

    def _key(self, s: dict[str, Any] | None = None) -> tuple:
        s = s or self._state()
        return self._panels.key(*msg.map_key(s["mode"], s["layer"], s["head"]))

    def _shown(self, s: dict[str, Any] | None = None) -> Any:
        """The :class:`PanelMetrics` of the map shown now (of state ``s``)."""
        return self._panels.metrics(self._key(s))

    def _typical(self, s: dict[str, Any] | None = None) -> dict | None:
        s = s or self._state()
        if self._corpus is None or s["mode"] not in msg.HEAD_MODES:
            return None
        return self._corpus.typical(s["layer"], s["head"])  # this head over the corpus

    # ------------------------------------------------------------------ public methods
    def close(self) -> None:
        """Close the view in every front end, stop the worker and let go of the record and caches.

        Afterwards the view holds no data (``maps`` raises); the record is freed once
        nothing else refers to it.
        """
        if getattr(self, "_panels", None) is not None:  # absent when __init__ failed early
            self._panels.close()
            self._forget_runs()
            self._released = False
            # a closed view keeps no reference to the data (a notebook variable may
            # still hold the view itself), so the record can be freed
            self._original = self._other = self._how = self._corpus = None
        super().close()
