"""AttentionView: the anywidget that shows attention maps with live metrics.

Traits and glue only: extraction comes from :mod:`attnwidget.extract`, numbers
from :mod:`attnwidget.metrics`, bytes from :mod:`attnwidget._codec`; the
drawing lives in ``js/src``.

Transport (see DESIGN.md): the shown map goes as one binary ``panel``
(max-pooled to at most :data:`OVERVIEW_SIDE` cells a side), the heads of the
layer as one binary ``atlas`` of thumbnails, a zoomed window at full
resolution as ``detail``; ``metrics`` is a small JSON dict. Each of them
carries the view state it belongs to, so the browser never shows an old reply
as current.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import typing
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import torch
import traitlets

from attnwidget._codec import encode_panel, pool_factor, pool_max
from attnwidget.maps import AttentionMaps, check_size
from attnwidget.metrics import PanelMetrics, attention_rollout, head_badges
from attnwidget.tokens import show_invisible

_STATIC = Path(__file__).parent / "static"
#: Input text in the caption is shortened to this many characters (the full text stays in Python).
CAPTION_TEXT_CHARS = 80
#: The main map is sent with at most this many cells a side; longer inputs are max-pooled.
OVERVIEW_SIDE = 512
#: A zoomed window is sent at full resolution up to this many cells a side.
DETAIL_SIDE = 512
#: Head thumbnails in the atlas have at most this many cells a side.
THUMB_SIDE = 64
#: Metrics objects and encoded panels are kept up to this many bytes of their own.
METRICS_CACHE_BYTES = 512 * 2**20
#: Maps with more cells than this (768 x 768) get their neighbouring heads computed ahead of
#: time in a worker thread, so that the next slider step finds them ready.
PREFETCH_CELLS = 768 * 768

MODES = ("head", "grid", "average", "rollout")
COLORMAPS = ("viridis", "magma", "inferno", "cividis", "greys")
SCALES = ("auto", "fixed")

# Shown instead of the view when the bundle was never built (a source tree without
# `pip install -e .`): importing attnwidget still works for metrics and extraction.
_MISSING_BUNDLE_ESM = """
export default { render({ el }) {
  el.textContent = "attnwidget: the JS bundle (attnwidget/static/widget.js) is missing; "
    + "build it with `pip install -e .` or `npm --prefix js run build`.";
} };
"""


def _bundle(name: str) -> str | Path:
    path = _STATIC / name
    if path.exists():
        return path
    return _MISSING_BUNDLE_ESM if name.endswith(".js") else ""


def _takes_tokenizer(model: Any) -> bool:
    """transformers models take a tokenizer with input ids (to label them); hook-based ones do not."""
    from attnwidget.extract.huggingface import is_hf_model

    return is_hf_model(model)


def _corpus_summary(corpus: Any, maps: AttentionMaps) -> Any:
    """``corpus`` as a :class:`attnwidget.corpus.HeadSummary` of the record's layers x heads, or None."""
    if corpus is None:
        return None
    from attnwidget.corpus import HeadSummary, summarize

    summary = corpus if isinstance(corpus, HeadSummary) else summarize(corpus)
    if summary.shape != maps.shape[:2]:
        raise ValueError(
            f"corpus: summarises {summary.shape[0]} layers x {summary.shape[1]} heads, but the record has "
            f"{maps.shape[0]} x {maps.shape[1]}; expected a corpus run of the same model"
        )
    return summary


def _record_mask(maps: AttentionMaps, Q: int, K: int) -> tuple[torch.Tensor | None, bool]:
    """The record's padding as a ``[Q, K]`` key mask (None when nothing is padded) and its causal flag."""
    pad = np.asarray(maps.key_padding, dtype=bool)
    mask = torch.from_numpy(~pad).expand(Q, K) if pad.any() else None
    return mask, bool(maps.causal)


class AttentionView(anywidget.AnyWidget):
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

    Every state trait syncs both ways (sliders move the attribute, setting the
    attribute moves the slider); ``metrics`` is recomputed in Python on every
    change and equals :func:`attnwidget.metrics.panel_metrics` on the shown map
    plus a ``view`` entry naming the state it belongs to (and ``typical`` with a corpus).
    """

    _esm = _bundle("widget.js")
    _css = _bundle("widget.css")

    # ---- state the user changes (both ways)
    layer = traitlets.Int(0).tag(sync=True)
    """int: the layer shown, 0..n_layers-1."""
    head = traitlets.Int(0).tag(sync=True)
    """int: the head shown, 0..n_heads-1 (ignored by the average and rollout modes)."""
    threshold = traitlets.Float(0.1).tag(sync=True)
    """float in 0..1: weights strictly below it are dimmed and counted as sparse."""
    query = traitlets.Int(None, allow_none=True).tag(sync=True)
    """int or None: the selected query row (its top-k and profile are in ``metrics['query']``)."""
    mode = traitlets.Unicode("head").tag(sync=True)
    """str: ``head`` (one head), ``grid`` (all heads of the layer), ``average`` (mean of the
    layer's heads, labelled as an average) or ``rollout`` (attention rollout up to the layer)."""
    colormap = traitlets.Unicode("viridis").tag(sync=True)
    """str: one of :data:`COLORMAPS` (perceptually uniform, plus a grey scale)."""
    scale = traitlets.Unicode("auto").tag(sync=True)
    """str: ``auto`` (colours span 0..the map's largest weight) or ``fixed`` (0..1)."""
    top_k = traitlets.Int(5).tag(sync=True)
    """int >= 1: how many keys the selected query's block lists (at most the row's visible keys)."""
    ablated = traitlets.List(traitlets.List(traitlets.Int()), default_value=[]).tag(sync=True)
    """``[[layer, head], ...]``: heads switched off (views built from a model only); the model re-runs."""
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
    sweep_scores = traitlets.Dict(read_only=True).tag(sync=True)
    """dict: ``{"score": [L][H] (None where not swept), "metric", "mode"}`` from :meth:`sweep`, or empty;
    the head strip shows each head's score."""

    def __init__(
        self, model: Any, text: Any = None, tokenizer: Any = None, *,
        source: Any = None, corpus: Any = None,
        layer: int = 0, head: int = 0, threshold: float = 0.1, query: int | None = None,
        mode: str = "head", colormap: str = "viridis", scale: str = "auto", top_k: int = 5,
        **extract_options: Any,
    ) -> None:
        self._sample = None  # the inputs.Sample a view built from a source shows (its provenance)
        if isinstance(model, AttentionMaps):
            if text is not None or tokenizer is not None or source is not None or extract_options:
                extra = sorted(extract_options) + [
                    n for n, v in (("text", text), ("tokenizer", tokenizer), ("source", source))
                    if v is not None
                ]
                raise TypeError(f"AttentionView(maps) takes no extraction arguments, got {extra}")
            maps = model
            self._source_model = None
        elif source is not None:
            from attnwidget import inputs

            if text is not None:
                raise TypeError("text: pass the text or source=..., not both")
            tokenizer = inputs.find_tokenizer(model, tokenizer)
            self._sample = inputs.resolve(source, model, tokenizer)
            maps = inputs.extract_sample(model, self._sample, tokenizer, **extract_options)
            # ablation re-runs the model on the sample's ids; the tokenizer labels them
            self._source_model = (model, self._sample.input_ids.unsqueeze(0),
                                  tokenizer if _takes_tokenizer(model) else None, extract_options)
        else:
            from attnwidget.extract import extract_attention

            maps = extract_attention(model, text, tokenizer, **extract_options)
            self._source_model = (model, text, tokenizer, extract_options)
        # not caught by AttentionMaps itself (a record may be analysed in pieces); the view's
        # caches and the browser's budget need a bound (see attnwidget.maps.check_size)
        check_size(*maps.shape, "maps")
        self._corpus = _corpus_summary(corpus, maps)
        self._maps = maps
        self._original = maps
        self._other: tuple[AttentionMaps, str] | None = None
        self._ablated_now: list[list[int]] = []  # the heads ablated in the record shown
        self._gen = 0  # bumped whenever the record changes (ablation): part of every cache key
        self._cache: OrderedDict[tuple, PanelMetrics] = OrderedDict()
        self._encoded: dict[tuple, dict[str, Any]] = {}
        self._lock = threading.RLock()  # guards _cache/_encoded against the prefetch worker
        self._prefetch: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self._rollout: np.ndarray | None = None
        self._batch = 0
        self._dirty: set[str] = set()
        super().__init__()
        with self.hold_trait_notifications():
            self.set_trait("n_layers", maps.n_layers)
            self.set_trait("n_heads", maps.n_heads)
            # display forms may come from the caller: name invisible characters here too
            self.set_trait("query_tokens", [show_invisible(t) for t in maps.query_display])
            self.set_trait("key_tokens", [show_invisible(t) for t in maps.key_display])
        self._batch += 1
        try:
            self.layer, self.head, self.threshold, self.query = layer, head, threshold, query
            self.mode, self.colormap, self.scale, self.top_k = mode, colormap, scale, top_k
        finally:
            self._batch -= 1
        self._dirty = {"atlas", "panel", "metrics"}
        self._flush()
        self.on_msg(self._on_message)

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        # the browser pings after each change it sends; messages are handled in order, so the
        # pong also says that the change before it has been handled (see NO_REPLY_MS in js/)
        if isinstance(content, dict) and content.get("type") == "ping":
            self.send({"type": "pong", "seq": content.get("seq")})

    def __repr__(self) -> str:
        # also the text a notebook shows where the live view cannot be (a reopened notebook)
        if getattr(self, "_maps", None) is None:
            return "AttentionView(closed)"
        L, H, Q, K = self._maps.shape
        return (f"AttentionView({self._maps.model_name or 'unknown model'}, {L} layers x {H} heads, "
                f"{Q} x {K} tokens; layer {self.layer}, head {self.head}) - a live view: run the cell "
                "to see it")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # the live view plus a picture of what it shows at display time (attnwidget.snapshot),
        # for front ends without the widget manager: nbconvert, GitHub, nbviewer. Drawn here,
        # once per display, not on every slider move: a notebook keeps the display data of
        # the moment it was shown, and re-displaying the view takes a new picture
        bundle = super()._repr_mimebundle_(**kwargs)
        wanted = "image/png" not in (kwargs.get("exclude") or ()) and (
            not kwargs.get("include") or "image/png" in kwargs["include"])
        if not bundle or not wanted or getattr(self, "_maps", None) is None:
            return bundle
        from attnwidget.snapshot import view_png_base64

        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        try:
            png = view_png_base64(self)
        except Exception as exc:  # no picture must not mean no live view: say why, show the view
            import warnings

            warnings.warn(f"attnwidget: no PNG snapshot in the display data: {type(exc).__name__}: {exc}",
                          stacklevel=2)
            return bundle
        return {**data, "image/png": png}, metadata

    @classmethod
    def from_tensor(cls, weights: Any, tokens: Any = None, **options: Any) -> AttentionView:
        """From raw weights ``[Q,K]``, ``[H,Q,K]`` or ``[L,H,Q,K]`` and optional tokens.

        ``options`` go to :meth:`AttentionMaps.from_tensor` (``model_name``,
        ``text``, ``causal``, ...) or to the view (``layer``, ``head``, ...).
        """
        view_keys = {"layer", "head", "threshold", "query", "mode", "colormap", "scale", "top_k"}
        view_opts = {k: options.pop(k) for k in list(options) if k in view_keys}
        return cls(AttentionMaps.from_tensor(weights, tokens, **options), **view_opts)

    @property
    def maps(self) -> AttentionMaps:
        """The record this view shows."""
        if self._maps is None:
            raise RuntimeError("this AttentionView was closed and holds no record; create a new view")
        return self._maps

    # ------------------------------------------------------------------ validation
    def _in_range(self, name: str, value: int, size: int) -> int:
        # negative values count from the end, as everywhere in Python (-1: the last layer)
        if not -size <= value < size:
            raise traitlets.TraitError(f"{name}: expected 0..{size - 1} (or -{size}..-1), got {value}")
        return value % size

    @traitlets.validate("layer")
    def _valid_layer(self, proposal: dict[str, Any]) -> int:
        return self._in_range("layer", proposal["value"], self.n_layers)

    @traitlets.validate("head")
    def _valid_head(self, proposal: dict[str, Any]) -> int:
        return self._in_range("head", proposal["value"], self.n_heads)

    @traitlets.validate("query")
    def _valid_query(self, proposal: dict[str, Any]) -> int | None:
        value = proposal["value"]
        Q = self.maps.shape[2]
        if value is not None and not -Q <= value < Q:
            raise traitlets.TraitError(f"query: expected 0..{Q - 1} (or -{Q}..-1) or None, got {value}")
        return None if value is None else value % Q

    @traitlets.validate("threshold")
    def _valid_threshold(self, proposal: dict[str, Any]) -> float:
        value = proposal["value"]
        if not 0.0 <= value <= 1.0:  # also refuses NaN
            raise traitlets.TraitError(f"threshold: expected 0..1, got {value}")
        return value

    @traitlets.validate("top_k")
    def _valid_top_k(self, proposal: dict[str, Any]) -> int:
        value = proposal["value"]
        if value < 1:
            raise traitlets.TraitError(f"top_k: expected an int >= 1 (capped at the row's keys), got {value}")
        return value

    def _one_of(self, name: str, value: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise traitlets.TraitError(f"{name}: expected one of {choices}, got {value!r}")
        return value

    @traitlets.validate("mode")
    def _valid_mode(self, proposal: dict[str, Any]) -> str:
        value = self._one_of("mode", proposal["value"], MODES)
        _, _, Q, K = self.maps.shape
        if value == "rollout" and Q != K:
            raise traitlets.TraitError(
                f"mode: 'rollout' needs self-attention (as many queries as keys), got {Q} x {K}"
            )
        return value

    @traitlets.validate("colormap")
    def _valid_colormap(self, proposal: dict[str, Any]) -> str:
        return self._one_of("colormap", proposal["value"], COLORMAPS)

    @traitlets.validate("scale")
    def _valid_scale(self, proposal: dict[str, Any]) -> str:
        return self._one_of("scale", proposal["value"], SCALES)

    @traitlets.validate("ablated")
    def _valid_ablated(self, proposal: dict[str, Any]) -> list[list[int]]:
        pairs = proposal["value"]
        if pairs and self._source_model is None:
            raise traitlets.TraitError(
                "ablated: this view shows a record, not a model; build it with "
                "AttentionView(model, text, tokenizer=...) to ablate heads"
            )
        out = set()
        L, H = self.n_layers, self.n_heads
        for pair in pairs:
            if len(pair) != 2 or not (-L <= pair[0] < L and -H <= pair[1] < H):
                raise traitlets.TraitError(
                    f"ablated: expected [layer, head] pairs with layer 0..{L - 1} and "
                    f"head 0..{H - 1} (negative from the end), got {pair}"
                )
            out.add((int(pair[0]) % L, int(pair[1]) % H))
        return [list(p) for p in sorted(out)]

    @traitlets.validate("ablation_mode")
    def _valid_ablation_mode(self, proposal: dict[str, Any]) -> str:
        from attnwidget.ablate import MODES as ABLATION_MODES

        return self._one_of("ablation_mode", proposal["value"], ABLATION_MODES)

    @traitlets.validate("viewport")
    def _valid_viewport(self, proposal: dict[str, Any]) -> list[int]:
        value = list(proposal["value"])
        _, _, Q, K = self.maps.shape
        if value and not (
            len(value) == 4 and 0 <= value[0] < value[1] <= Q and 0 <= value[2] < value[3] <= K
        ):
            raise traitlets.TraitError(
                f"viewport: expected [] or [q0, q1, k0, k1] with 0 <= q0 < q1 <= {Q} and "
                f"0 <= k0 < k1 <= {K}, got {value}"
            )
        return value

    # ------------------------------------------------------------------ updates
    _WHAT_CHANGES: typing.ClassVar[dict[str, set[str]]] = {
        "layer": {"atlas", "panel", "metrics", "detail"},
        "head": {"panel", "metrics", "detail"},
        "mode": {"panel", "metrics", "detail"},
        "scale": {"panel", "detail"},
        "threshold": {"metrics"},
        "query": {"metrics"},
        "top_k": {"metrics"},
        "viewport": {"detail"},
        "ablated": {"ablation"},
        "ablation_mode": {"ablation"},
        "compare": {"panel"},
    }

    @traitlets.observe(*_WHAT_CHANGES)
    def _on_change(self, change: dict[str, Any]) -> None:
        self._dirty |= self._WHAT_CHANGES[change["name"]]
        if not self._batch:
            self._flush()

    def set_state(self, sync_data: dict[str, Any]) -> None:
        # the browser may send several traits in one message: update once, after all of them
        self._batch += 1
        try:
            super().set_state(sync_data)
        finally:
            self._batch -= 1
        self._flush()

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        if not dirty or getattr(self, "_maps", None) is None:
            return
        try:
            if "ablation" in dirty:
                self._apply_ablation()
                dirty |= {"panel", "metrics", "detail", "atlas"}
            # panel and metrics first: they are sent as soon as they are set, so the
            # browser paints the map while the thumbnails are still being pooled
            if "panel" in dirty:
                self._send_panel()
            if "metrics" in dirty:
                self._send_metrics()
            if "detail" in dirty or "panel" in dirty:
                self._send_detail()
            if "atlas" in dirty:
                self._schedule_atlas()
            self._trim_cache()
            if "panel" in dirty:
                self._schedule_prefetch()
            if self.status:
                self.set_trait("status", "")
        except Exception as exc:  # shown in the view; the traceback still goes to the log
            self.set_trait("status", f"{type(exc).__name__}: {exc}")
            raise

    def _view_key(self) -> dict[str, Any]:
        head = self.head if self.mode in ("head", "grid") else None
        return {"mode": self.mode, "layer": self.layer, "head": head, "ablated": self.ablated}

    def _key(self) -> tuple:
        return (self.mode if self.mode != "grid" else "head", self.layer,
                self.head if self.mode in ("head", "grid") else None, self._gen)

    def _source(self, key: tuple | None = None) -> PanelMetrics:
        """Metrics object of a map (a head, the layer's average or the rollout), cached.

        ``key`` is ``(kind, layer, head)``; default: the map shown now.
        """
        key = self._key() if key is None else key
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            kind, layer, head, gen = key
            if gen != self._gen:  # a worker asking for a record that was replaced meanwhile
                raise RuntimeError("stale request")
            maps = self._maps
            _, _, Q, K = maps.shape
            mask, causal = _record_mask(maps, Q, K)
            if kind == "head":
                pm = PanelMetrics(maps.head(layer, head), mask=mask, causal=causal)
            elif kind == "average":
                mean = torch.from_numpy(maps.layer(layer)).mean(dim=0)
                pm = PanelMetrics(mean, mask=mask, causal=causal)
            else:
                if self._rollout is None:
                    self._rollout = attention_rollout(maps.weights)
                # the residual term puts weight on padded positions' own rows: only causality applies
                pm = PanelMetrics(self._rollout[layer], causal=causal)
            self._cache[key] = pm
            return pm

    def _encoded_panel(self, key: tuple, pm: PanelMetrics) -> dict[str, Any]:
        """The overview of a map as sent (max-pooled, quantised), cached per map and scale."""
        ekey = (*key, self.scale)
        with self._lock:
            if ekey in self._encoded:
                return self._encoded[ekey]
        Q, K = pm.shape
        factor = pool_factor(Q, K, OVERVIEW_SIDE)
        pooled, visible = pool_max(pm.weights, factor, pm.visible())
        view = {"mode": key[0], "layer": key[1], "head": key[2], "ablated": self.ablated}
        msg = encode_panel(pooled, vmax=self._vmax(pm), visible=visible, view=view,
                           pool=factor, full_shape=[Q, K])
        with self._lock:
            self._encoded[ekey] = msg
        return msg

    def _schedule_prefetch(self) -> None:
        """Compute the heads next to the shown one ahead of time (large maps only)."""
        for fut in self._pending:
            fut.cancel()  # only those not started yet; a running one finishes and is cached
        self._pending = []
        _, n_heads, Q, K = self._maps.shape
        if Q * K <= PREFETCH_CELLS or self.mode not in ("head", "grid"):
            return
        for head in (self.head + 1, self.head - 1):
            key = ("head", self.layer, head, self._gen)
            if 0 <= head < n_heads and key not in self._cache:
                self._pending.append(self._worker().submit(self._warm, key))

    def _warm(self, key: tuple) -> None:
        pm = self._source(key)
        pm.static()
        self._encoded_panel(key, pm)

    def close(self) -> None:
        """Close the view in every front end, stop the worker and let go of the record and caches.

        Afterwards the view holds no data (``maps`` raises); the record is freed once
        nothing else refers to it.
        """
        pool = getattr(self, "_prefetch", None)  # absent when __init__ failed early
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            self._prefetch = None
        if hasattr(self, "_cache"):
            with self._lock:
                self._cache.clear()
                self._encoded.clear()
                # a closed view keeps no reference to the data (a notebook variable may
                # still hold the view itself), so the record can be freed
                self._maps = self._original = None
                self._other = self._source_model = self._rollout = None
        super().close()

    def _cached_bytes(self, key: tuple, pm: PanelMetrics) -> int:
        # a head's weights are a view into the record; an average or rollout map is our own copy
        own = 0 if key[0] == "head" else pm.weights.element_size() * pm.weights.numel()
        encoded = self._encoded.get(key)
        return pm.nbytes + own + (len(encoded["buffer"]) if encoded else 0)

    def _trim_cache(self) -> None:
        with self._lock:
            self._trim_cache_locked()

    def _trim_cache_locked(self) -> None:
        # after the update, when the shown map's intermediates exist and count
        total = sum(self._cached_bytes(k, v) for k, v in self._cache.items())
        while total > METRICS_CACHE_BYTES and len(self._cache) > 1:
            key, old = self._cache.popitem(last=False)
            total -= self._cached_bytes(key, old)
        # also panels the prefetch worker encoded for maps evicted meanwhile
        for enc in [k for k in self._encoded if k[:4] not in self._cache]:
            del self._encoded[enc]

    def _vmax(self, pm: PanelMetrics) -> float:
        if self.scale == "fixed":
            return 1.0
        top = float(pm.weights.max())
        return top if top > 0 else 1.0

    def _send_panel(self) -> None:
        if not self._send_comparison():
            msg = self._encoded_panel(self._key(), self._source())
            # the view it belongs to, as the browser compares it (grid shows the head's map)
            self.set_trait("panel", {**msg, "view": self._view_key()})
        self.set_trait("caption", self._caption())

    def _comparison(self) -> tuple[AttentionMaps, str] | None:
        if self._other is not None:
            return self._other
        if self.ablated:
            return self._original, "original (no head ablated)"
        return None

    def _send_comparison(self) -> bool:
        """Send B and A − B when comparing; then A too, on the colour range shared with B.

        Returns whether it sent the panel A.
        """
        other = self._comparison() if self.compare else None
        if other is None or self.mode not in ("head", "grid", "average"):
            for name in ("panel_b", "panel_diff"):
                if getattr(self, name):
                    self.set_trait(name, {})
            self.set_trait("caption_b", "" if other is None else
                           "comparison: shown for one head or the head average")
            return False
        maps_b, label = other
        a = self._source().weights
        if self.mode == "average":
            b = torch.from_numpy(maps_b.layer(self.layer)).mean(dim=0)
        else:
            b = torch.from_numpy(maps_b.head(self.layer, self.head))
        Q, K = a.shape
        factor = pool_factor(Q, K, OVERVIEW_SIDE)
        pm = self._source()
        pooled_a, visible = pool_max(a, factor, pm.visible())
        pooled_b, _ = pool_max(b, factor)
        vmax = 1.0 if self.scale == "fixed" else max(float(a.max()), float(b.max()), 1e-30)
        view = self._view_key()
        self.set_trait("panel", encode_panel(pooled_a, vmax=vmax, visible=visible, view=view,
                                             pool=factor, full_shape=[Q, K]))
        self.set_trait("panel_b", encode_panel(pooled_b, vmax=vmax, view=view, pool=factor,
                                               full_shape=list(b.shape)))
        if tuple(b.shape) == (Q, K):
            diff = (a - b).numpy()
            # signed: pool the largest magnitude of each block, keeping its sign
            pooled_hi, _ = pool_max(diff, factor)
            pooled_lo, _ = pool_max(-diff, factor)
            signed = np.where(pooled_hi >= pooled_lo, pooled_hi, -pooled_lo)
            span = max(float(np.abs(signed).max()), 1e-30)
            shifted = (signed / span + 1.0) / 2.0  # -span..span -> 0..1
            self.set_trait("panel_diff", encode_panel(
                shifted, vmax=1.0, view=view, pool=factor, full_shape=[Q, K], span=span))
        elif self.panel_diff:
            self.set_trait("panel_diff", {})
        self.set_trait("caption_b", f"B: {label}" + ("" if tuple(b.shape) == (Q, K) else
                                                    " (different shape: no difference map)"))
        return True

    def sweep(self, mode: str = "zero", progress: bool = True) -> np.ndarray:
        """Ablate every head on its own (:func:`attnwidget.ablate.ablation_sweep`); returns ``[L, H]``.

        The scores also go to the view: each head thumbnail shows its own.
        """
        if self._source_model is None:
            raise ValueError("sweep: this view shows a record, not a model; build it from a model")
        from attnwidget.ablate import ablation_sweep

        model, text, tokenizer, _ = self._source_model
        res = ablation_sweep(model, text, tokenizer, mode=mode, progress=progress)
        score = res["score"]
        self.set_trait("sweep_scores", {
            "score": [[None if np.isnan(v) else float(v) for v in row] for row in score],
            "metric": res["metric"], "mode": mode,
        })
        return score

    def export(self, path: str | Path, scale: float = 2.0) -> Path:
        """Save what the view shows (same max-pooled map, threshold, colormap and colour range,
        caption as title) as ``.html`` (offline), ``.png`` or ``.svg``; see
        :func:`attnwidget.plots.export`."""
        from attnwidget import plots

        maps, pm = self.maps, self._source()
        # the same overview, colour range and masking as the panel the browser draws
        fig = plots.matrix_figure(
            pm.weights.numpy(), maps.query_display, maps.key_display, self.caption, palette=self.colormap,
            vmax=self._vmax(pm), threshold=self.threshold or None, visible=pm.visible(),
            max_side=OVERVIEW_SIDE,
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

    def _apply_ablation(self) -> None:
        """Re-run the model with the ablated heads switched off (or restore the original)."""
        if not self.ablated:
            self._maps = self._original
            self.set_trait("effect", {})
        else:
            from attnwidget.ablate import ablated_record

            model, text, tokenizer, options = self._source_model  # type: ignore[misc]
            heads: dict[int, list[int]] = {}
            for layer, head in self.ablated:
                heads.setdefault(layer, []).append(head)
            try:
                maps, effect = ablated_record(model, text, heads, tokenizer, mode=self.ablation_mode,
                                              original=self._original, **options)
            except BaseException:
                # the model failed: the controls go back to the heads really ablated, so
                # nothing claims a state that was never computed (the error shows as status)
                self._batch += 1
                try:
                    self.ablated = self._ablated_now
                finally:
                    self._batch -= 1
                self._dirty.discard("ablation")
                raise
            if self._sample is not None:  # the re-run saw the same sequence: keep its provenance
                maps = maps.with_source(self._sample.source, text=self._sample.text)
            self._maps = maps
            self.set_trait("effect", effect)
        self._ablated_now = [list(p) for p in self.ablated]
        with self._lock:
            self._gen += 1
            self._cache.clear()
            self._encoded.clear()
        self._rollout = None

    def _send_detail(self) -> None:
        vp = self.viewport
        pm = self._source()
        Q, K = pm.shape
        if not vp or pool_factor(Q, K, OVERVIEW_SIDE) == 1:
            if self.detail:
                self.set_trait("detail", {})
            return
        q0, q1, k0, k1 = vp
        factor = pool_factor(q1 - q0, k1 - k0, DETAIL_SIDE)
        window = pm.weights[q0:q1, k0:k1]
        visible = pm.visible()
        pooled, visible = pool_max(window, factor, None if visible is None else visible[q0:q1, k0:k1])
        self.set_trait("detail", encode_panel(
            pooled, vmax=self._vmax(pm), visible=visible,
            view=self._view_key(), pool=factor, origin=[q0, k0], window=vp,
        ))

    def _send_metrics(self) -> None:
        pm = self._source()
        out = pm.at(self.threshold, self.query, min(self.top_k, pm.shape[1]))
        kind = {"head": "head", "grid": "head", "average": "average of heads",
                "rollout": "attention rollout"}[self.mode]
        view = {**self._view_key(), "threshold": self.threshold, "query": self.query,
                "top_k": self.top_k}  # _view_key carries the ablated heads too
        if self._corpus is not None and self.mode in ("head", "grid"):
            out["typical"] = self._corpus.typical(self.layer, self.head)  # this head over the corpus
        self.set_trait("metrics", {**out, "kind": kind, "view": view})

    def _worker(self) -> ThreadPoolExecutor:
        if self._prefetch is None:
            self._prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnwidget-worker")
        return self._prefetch

    def _schedule_atlas(self) -> None:
        """Send the thumbnails of the shown layer: now in plain Python, from the worker in a kernel.

        In a kernel the worker thread builds them (a 4096-token layer takes a second) while
        the kernel goes on answering slider moves; the result is handed back to the kernel's
        event loop, which sets the trait unless the layer has changed meanwhile.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: nothing could deliver a result later
            self.set_trait("atlas", self._build_atlas(self.layer))
            return
        layer, gen = self.layer, self._gen
        fut = self._worker().submit(self._build_atlas, layer)
        def hand_back(f: Future) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the kernel is going away
                loop.call_soon_threadsafe(self._deliver_atlas, f, layer, gen)

        fut.add_done_callback(hand_back)

    def _deliver_atlas(self, fut: Future, layer: int, gen: int) -> None:
        stale = layer != self.layer or gen != self._gen
        if fut.cancelled() or getattr(self, "comm", None) is None or stale:
            return
        exc = fut.exception()
        if exc is not None:  # a callback has no caller to raise to: show it in the view
            self.set_trait("status", f"{type(exc).__name__}: {exc}")
        elif fut.result() is not None:
            self.set_trait("atlas", fut.result())

    def _build_atlas(self, layer_index: int) -> dict[str, Any] | None:
        """Thumbnails ``[H, h, w]`` of one layer and their badges; None if the layer is no longer shown."""
        maps = self._maps
        if maps is None or layer_index != self.layer:
            return None
        layer = torch.from_numpy(maps.layer(layer_index))  # [H, Q, K], no copy of the stack
        H, Q, K = layer.shape
        mask, causal = _record_mask(maps, Q, K)
        factor = pool_factor(Q, K, THUMB_SIDE)
        pooled, vis = pool_max(layer, factor, maps.visible_cells())  # [H, h, w], [h, w]
        badges = head_badges(layer, mask=mask, causal=causal)
        # each thumbnail on its own colour range, so weak heads still show their shape
        thumbs = [encode_panel(p, vmax=max(float(p.max()), 1e-30), visible=vis) for p in pooled]
        return {
            "buffer": memoryview(b"".join(bytes(t["buffer"]) for t in thumbs)), "dtype": "uint8",
            "shape": [H, *pooled.shape[1:]], "layer": layer_index, "pool": factor,
            "badges": [
                {"head": h, "name": show_invisible(maps.head_names[h]),
                 "entropy": float(badges["entropy"][h]),
                 "normalized_entropy": float(badges["normalized_entropy"][h]),
                 "sharpness": float(badges["sharpness"][h]), "grade": str(badges["grade"][h]),
                 **self._badge_typical(layer_index, h)}
                for h in range(H)
            ],
        }

    def _badge_typical(self, layer: int, head: int) -> dict[str, Any]:
        """``{"typical": ...}``: the badge's entropy and sharpness over the corpus (median, quartiles)."""
        if self._corpus is None:
            return {}
        t = self._corpus.typical(layer, head)
        return {"typical": {"entropy": t["mean_entropy"], "sharpness": t["sharpness"],
                            "n_sequences": t["n_sequences"]}}

    def _caption(self) -> str:
        maps = self._maps
        text = show_invisible(maps.text or "")
        if len(text) > CAPTION_TEXT_CHARS:
            text = text[: CAPTION_TEXT_CHARS - 1] + "…"
        if self.mode == "average":
            what = f"mean of {maps.n_heads} heads (AVERAGE, not a head)"
        elif self.mode == "rollout":
            what = "attention rollout to here (all heads averaged, residual 0.5)"
        else:
            what = maps.head_names[self.head] + (" (AVERAGE, not a head)" if maps.is_average else "")
        masking = "causal mask" if maps.causal else "no causal mask"
        padded = int(np.asarray(maps.key_padding).sum())
        if padded:
            masking += f", {padded} padded key{'s' if padded != 1 else ''}"
        if maps.source is not None:  # 002's form: which head on which sequence, and its length
            from attnwidget.inputs import describe_sequence

            sequence = describe_sequence(maps.source, maps.text, maps.shape[2])
            return show_invisible(
                f"{maps.model_name or 'unknown model'} · {maps.layer_names[self.layer]} · {what} on "
                f"{sequence} · {masking}"
            )
        # names are caller data too: no bidi control may reorder the line
        return show_invisible(
            f"{maps.model_name or 'unknown model'} · {maps.layer_names[self.layer]} · {what} · "
            f"{masking}" + (f" · “{text}”" if text else "")
        )
