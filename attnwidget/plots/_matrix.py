"""One ``[Q, K]`` matrix as a bokeh figure: an ``image`` of uint8 levels, at any length.

The picture is one ``image`` glyph of the same uint8 levels the widget sends
(:func:`attnwidget._codec.quantize`), max-pooled to at most ``max_side`` cells
a side like the widget's overview (:func:`attnwidget._codec.overview`), and
coloured through a 256-entry table that dims levels below the threshold as
the canvas does (:func:`attnwidget._codec.level_rgba`). A 4096-token head is
then 512 x 512 bytes in the document instead of 16.7 M rectangles with string
columns.

Data a figure carries (tests read it):

* the image renderer's source: ``image`` ``[[rows, cols]]`` uint8 levels (255 =
  masked), ``weight`` ``[[Q, K]]`` float32 exact values when the map is not
  pooled (single figures; grid panels carry the levels only, as the widget's
  thumbnails do), and ``pool`` (block size, 1 = full resolution);
* maps of at most :data:`CELL_LAYER_CELLS` cells, not pooled, also get a
  per-cell layer (the first renderer): ``x``, ``y``, ``weight``, ``query``,
  ``key`` (and ``text`` with ``annotate``), which the hover and the value
  labels use. Larger maps hover on the image: token names come from the axis
  position through a :class:`CustomJSHover`, whose output bokeh escapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from bokeh.models import (
    BasicTicker,
    ColorBar,
    ColumnDataSource,
    CustomJSHover,
    FixedTicker,
    Grid,
    HoverTool,
    Image,
    LinearColorMapper,
    Quad,
    Rect,
    Title,
)
from bokeh.plotting import figure

from attnwidget._codec import (
    COLORMAP_PALETTES,
    LEVELS,
    MASKED,
    colormap_hexes,
    level_rgba,
    overview,
    pool_factor,
    quantize,
    sqrt_ticks,
)
from attnwidget.maps import CAPTION_TEXT_CHARS
from attnwidget.tokens import show_invisible

#: Every colormap a figure draws with, low to high (``name + "_r"`` reverses one).
PALETTES = {name: tuple(colormap_hexes(name)) for name in COLORMAP_PALETTES}
#: Text in titles is shortened to this many characters: the provenance line's one length.
TITLE_TEXT_CHARS = CAPTION_TEXT_CHARS
#: Axis labels show at most this many characters of a token (hover shows the whole token).
AXIS_LABEL_CHARS = 32
#: A single map is drawn from at most this many cells a side, the widget's overview size
#: (attnwidget.widget.OVERVIEW_SIDE): more cells than a 520-pixel figure has pixels add
#: bytes, not detail; a single sharp weight survives the max-pooling.
OVERVIEW_SIDE = 512
#: Maps up to this many cells (32 x 32) also carry one row of data per cell (exact hover,
#: value labels): about 45 bytes a cell, 46 KB at most. Above it, per-cell string columns
#: are what made the old figures grow with the square of the length.
CELL_LAYER_CELLS = 32 * 32
#: A compact (grid) panel's map is its size less this many pixels (axes, titles, colour bar).
COMPACT_MARGIN_PX = 70
#: Tick labels of a compact panel show at most this many characters.
COMPACT_LABEL_CHARS = 8
#: Neighbouring axis labels are at least this many pixels apart (js/src/heatmap.ts LABEL_PX).
LABEL_PX = 11
#: Colour of the hatch under masked cells (the widget's fallback ``--jp-border-color1``).
MASKED_COLOUR = "#9e9e9e"


def palette(name: str) -> Sequence[str]:
    if name in PALETTES:
        return PALETTES[name]
    try:
        return colormap_hexes(name)
    except ValueError:
        raise ValueError(f"palette: expected one of {tuple(PALETTES)} (or one of them with _r for "
                         f"reversed), got {name!r}") from None


def short(text: str | None, n: int = TITLE_TEXT_CHARS) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


def thinned(count: int, plot_px: float) -> list[int]:
    """Positions ``0, step, 2 step, ...`` below ``count`` whose labels are ``LABEL_PX`` apart
    on an axis of ``plot_px`` pixels (the widget's ``thinLabels`` rule)."""
    cell = plot_px / max(count, 1)
    step = max(1, math.ceil(LABEL_PX / max(cell, 1e-9)))
    return list(range(0, count, step))


def fit_title(title: str, width_px: int, char_px: float = 7.5) -> str:
    """``title`` broken into lines at its `` · `` separators where one line would be wider than
    ``width_px`` (bokeh cuts a title at the figure's edge; about ``char_px`` a character)."""
    most = max(20, int(width_px / char_px))
    lines: list[str] = []
    for part in title.split("\n"):
        line = ""
        for piece in part.split(" · "):
            if line and len(line) + 3 + len(piece) > most:
                lines.append(line)
                line = piece
            else:
                line = f"{line} · {piece}" if line else piece
        lines.append(line)
    return "\n".join(lines)


def wide_positive(values: Any, span: float = 100.0) -> bool:
    """Whether the finite, positive ``values`` (at least two) span more than ``span`` times: a
    figure's cue for a log axis (zeros and infinities are left out of the test)."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and v.max() / v.min() > span


def legend_above(fig: Any, font_size: str = "9pt") -> None:
    """Move the figure's legend above the plot, in one row (inside, legends covered the data)."""
    fig.legend.orientation = "horizontal"
    fig.legend.label_text_font_size = font_size
    fig.add_layout(fig.legend[0], "above")


def plural(n: int, word: str) -> str:
    """``"1 sample"``, ``"3 samples"``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def pooled_note(factor: int, full: tuple[int, int], pooled: tuple[int, ...]) -> str:
    """What a pooled map's second title line says."""
    return f"max-pooled {factor}×{factor}: {full[0]}×{full[1]} → {pooled[0]}×{pooled[1]}"


def level_palette(name: str, dim_below: float = 0.0) -> list[str]:
    """The 256 colours of the uint8 levels as ``#rrggbbaa`` (masked: transparent)."""
    rgba = level_rgba(name, dim_below)
    return [f"#{r:02x}{g:02x}{b:02x}{a:02x}" for r, g, b, a in rgba]


class TokenHover:
    """Hover formatters that turn an axis position into its token, shared by a grid's panels.

    Each label list goes into the document once (as the formatter's argument),
    not once per cell; the formatter's output is escaped by bokeh (text, never HTML).
    """

    _CODE = ("const i = Math.round(value);"
             " return (i >= 0 && i < labels.length) ? labels[i] + ' (' + i + ')' : '';")

    def __init__(self, query_labels: Sequence[str], key_labels: Sequence[str]) -> None:
        self.query_labels = [show_invisible(str(t)) for t in query_labels]
        self.key_labels = [show_invisible(str(t)) for t in key_labels]
        self.query = CustomJSHover(args={"labels": self.query_labels}, code=self._CODE)
        self.key = (self.query if self.key_labels == self.query_labels
                    else CustomJSHover(args={"labels": self.key_labels}, code=self._CODE))
        self._pooled: dict[tuple[int, float, float, bool], CustomJSHover] = {}

    def pooled_value(self, pool: int, low: float, high: float, sqrt: bool = False) -> CustomJSHover:
        """Level -> ``≈value`` (and, pooled, which block it is the maximum of); ``sqrt``: the
        levels are of the square root (:func:`matrix_figure_impl`'s ``sqrt``)."""
        key = (pool, low, high, sqrt)
        if key not in self._pooled:
            block = f" (max of a {pool}×{pool} block)" if pool > 1 else ""
            level = f"low + value / {LEVELS} * (high - low)"
            self._pooled[key] = CustomJSHover(args={"low": low, "high": high, "block": block}, code=(
                f"if (value == {MASKED}) return 'masked';"
                f" const v = {f'Math.pow(Math.sqrt(high) * value / {LEVELS}, 2)' if sqrt else level};"
                " return '≈' + (Math.abs(v) >= 0.01 || v == 0 ? v.toFixed(4) : v.toExponential(2)) + block;"))
        return self._pooled[key]


@dataclass
class Shared:
    """Models a grid's panels share (one copy in the document): hover formatters, level colours."""

    hover: TokenHover
    mappers: dict[tuple[str, float], LinearColorMapper]

    def level_mapper(self, name: str, dim_below: float) -> LinearColorMapper:
        key = (name, dim_below)
        if key not in self.mappers:
            # low=0, high=256 over 256 colours: level l takes colour l exactly (powers of two)
            self.mappers[key] = LinearColorMapper(palette=level_palette(name, dim_below), low=0, high=256)
        return self.mappers[key]


def shared(query_labels: Sequence[str], key_labels: Sequence[str]) -> Shared:
    return Shared(TokenHover(query_labels, key_labels), {})


def matrix_figure_impl(
    w: Any, query_labels: Sequence[str], key_labels: Sequence[str], title: str,
    palette_name: str = "viridis", vmax: float | None = 1.0, annotate: bool = False, size: int = 520,
    colorbar_title: str = "Attention weight", low: float = 0.0, tools: bool = True,
    threshold: float | None = None, *, visible: Any = None,
    max_side: int = OVERVIEW_SIDE, share: Shared | None = None, exact: bool = True, compact: bool = False,
    names: tuple[str, str, str] = ("query", "key", "weight"), sqrt: bool = False,
) -> Any:
    """One ``[Q, K]`` matrix, queries down and keys across; see the module docstring for its data.

    ``vmax``: the value drawn with the top colour (None: the largest value).
    ``threshold``: levels below ``threshold`` are dimmed as in the widget.
    ``visible``: bool ``[Q, K]``, False where a cell is masked (drawn hatched).
    ``max_side``: the map is max-pooled to at most this many cells a side; a
    second title line then says so (:func:`pooled_note`). ``share``: formatters and colour tables of a grid.
    ``exact``: carry the float32 weights of an unpooled map (4 bytes a cell) for
    an exact hover; without, the hover reads the level (``≈``, as the widget).
    ``compact``: a grid panel: a square map ``size - 70`` pixels wide, short tick
    labels, no axis titles, a thin colour bar (its section says what it shows).
    ``names``: what rows, columns and values are, for the axis titles and the hover (a
    matrix of heads or layers is not queries and keys). ``sqrt``: colours follow the square
    root of the weight (0..``vmax``; ``low`` must be 0): a long map whose weight sits mostly on
    a few sink cells (0.4 there, 0.005 elsewhere) still shows its other structure; the colour
    bar is labelled in weights at their places on that scale, the hover gives the weights.
    """
    pal = palette(palette_name)
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"weights: expected a 2-D [queries, keys] matrix, got shape {w.shape}")
    Q, K = w.shape
    if len(query_labels) != Q or len(key_labels) != K:
        raise ValueError(f"labels: expected {Q} query and {K} key labels for a {Q} x {K} map, "
                         f"got {len(query_labels)} and {len(key_labels)}")
    if annotate and Q * K > 400:
        raise ValueError(f"annotate: value labels need a small map (at most 400 cells), got {Q} x {K}")
    if annotate and pool_factor(Q, K, max_side) > 1:
        raise ValueError(f"annotate: value labels need the map at full resolution, but {Q} x {K} is "
                         f"max-pooled to at most max_side={max_side} cells a side")
    share = share or shared(query_labels, key_labels)
    finite = np.isfinite(w)
    vis = finite if visible is None else finite & np.asarray(visible, dtype=bool)
    drawn = np.where(finite, w, 0.0).astype(np.float32)
    shown = drawn[vis] if not vis.all() else drawn
    high = (float(shown.max()) if shown.size else 1.0) if vmax is None else float(vmax)
    high = high if high > low else low + 1.0
    if sqrt and low != 0:
        raise ValueError(f"sqrt: a square-root scale starts at 0, got low={low}")
    pooled, pooled_vis, factor = overview(drawn, max_side, None if vis.all() else vis)

    def to_levels(values: np.ndarray, where: Any = None) -> np.ndarray:
        if sqrt:  # the max-pool commutes with the (monotone) square root
            return quantize(np.sqrt(np.clip(values, 0, None)), math.sqrt(high), visible=where)
        return quantize(values, high, low=low, visible=where)

    levels = to_levels(pooled, pooled_vis)
    reach = (lambda v: math.sqrt(max(v, 0.0) / high)) if sqrt else (lambda v: (v - low) / (high - low))
    dim_below = 0.0 if not threshold else reach(float(threshold)) * LEVELS
    ranges = {"x_range": (-0.5, K - 0.5), "y_range": (Q - 0.5, -0.5),
              "tools": "pan,wheel_zoom,box_zoom,reset,save" if tools else "", "toolbar_location": "above"}
    if compact:  # the map's own area is fixed and square; axes and titles go around it
        plot_px = size - COMPACT_MARGIN_PX
        fig = figure(title=title, frame_width=plot_px, frame_height=plot_px, **ranges)
        fig.title.text_font_size = "9pt"
    else:
        plot_px = size - 60  # the figure's height less its title and axis
        fig = figure(title=fit_title(title, size + 90), width=size + 90, height=size, **ranges)
    if factor > 1:  # a second, smaller title line: a grid panel's title has no room for it
        fig.add_layout(Title(text=pooled_note(factor, (Q, K), levels.shape), text_font_size="7pt",
                             text_font_style="italic"), "above")
    # glyphs go in through add_glyph: the glyph methods (fig.image, ...) add explicit
    # non-selection and muted copies of each glyph, two more models that BokehJS makes itself
    # when they are left "auto"; a grid of 13 panels had 524 models, and serializing them is
    # most of a report's build
    cells = Q * K <= CELL_LAYER_CELLS and factor == 1
    if cells:  # first renderer: the per-cell data (hover, labels) under the picture
        qi, ki = np.meshgrid(np.arange(Q), np.arange(K), indexing="ij")
        qlab, klab = share.hover.query_labels, share.hover.key_labels
        cell_source = ColumnDataSource({
            "x": ki.ravel(), "y": qi.ravel(), "weight": w.ravel(),
            "query": [qlab[i] for i in qi.ravel()], "key": [klab[k] for k in ki.ravel()],
        })
        hover_target = fig.add_glyph(cell_source, Rect(x="x", y="y", width=1, height=1, fill_alpha=0,
                                                        line_alpha=0))
    if not vis.all():  # masked cells are transparent in the image: the hatch shows through
        fig.add_glyph(Quad(left=-0.5, right=K - 0.5, top=-0.5, bottom=Q - 0.5, fill_alpha=0, line_alpha=0,
                           hatch_pattern="/", hatch_color=MASKED_COLOUR, hatch_scale=6))
    data = {"image": [levels], "pool": [factor]}
    exact = exact and factor == 1
    if exact:
        data["weight"] = [w]
    # each image pixel covers factor x factor token positions; the partial edge block is cut
    # off by the ranges, so position k is still drawn at x = k. Image row 0 sits at the
    # anchor y = -0.5, which the reversed y range puts at the top: queries run down
    image = fig.add_glyph(ColumnDataSource(data), Image(
        image="image", x=-0.5, y=-0.5, dw=levels.shape[1] * factor, dh=levels.shape[0] * factor,
        color_mapper=share.level_mapper(palette_name, dim_below)))
    if cells:
        fig.add_tools(HoverTool(renderers=[hover_target], tooltips=[
            (names[0], "@query"), (names[1], "@key"), (names[2], "@weight{0.0000}")]))
    else:
        value = (names[2], "@weight{0.0000}") if exact else (names[2], "@image{custom}")
        tips = [(names[0], "$y{custom}"), (names[1], "$x{custom}"), value]
        fig.add_tools(HoverTool(renderers=[image], tooltips=tips,
                                formatters={"$y": share.hover.query, "$x": share.hover.key,
                                            "@image": share.hover.pooled_value(factor, low, high, sqrt)}))
    q_ticks, k_ticks = thinned(Q, plot_px), thinned(K, plot_px)
    fig.yaxis.ticker = q_ticks
    fig.xaxis.ticker = k_ticks
    # labels are plain strings handed to bokeh: it draws them as text on the canvas. A long
    # token would push the map aside, so the axis shows its start (the hover shows all of it)
    qlab, klab = share.hover.query_labels, share.hover.key_labels
    chars = COMPACT_LABEL_CHARS if compact else AXIS_LABEL_CHARS
    fig.yaxis.major_label_overrides = {i: short(qlab[i], chars) for i in q_ticks}
    fig.xaxis.major_label_overrides = {i: short(klab[i], chars) for i in k_ticks}
    fig.xaxis.major_label_orientation = 1.2
    fig.center = [r for r in fig.center if not isinstance(r, Grid)]  # a map has no grid lines
    mapper = LinearColorMapper(palette=list(pal), low=low, high=math.sqrt(high) if sqrt else high)
    if compact:
        fig.axis.major_label_text_font_size = "7pt"
        bar = ColorBar(color_mapper=mapper, width=8, major_label_text_font_size="7pt",
                       ticker=BasicTicker(desired_num_ticks=4))
    else:
        fig.xaxis.axis_label = names[1]
        fig.yaxis.axis_label = names[0]
        bar = ColorBar(color_mapper=mapper, title=colorbar_title + (" (√ scale)" if sqrt else ""),
                       ticker=BasicTicker(desired_num_ticks=5))
    if sqrt:  # ticks at round weights, placed where the square-root scale puts them
        marks = sqrt_ticks(high, 4 if compact else 6)
        bar.ticker = FixedTicker(ticks=[math.sqrt(v) for v in marks])
        bar.major_label_overrides = {math.sqrt(v): f"{v:g}" for v in marks}
    fig.add_layout(bar, "right")
    if annotate:
        cell_source.data["text"] = [f"{v:.2f}" for v in w.ravel()]
        # dark text on light cells, light on dark (the colour each cell is drawn with)
        # as drawn: dimmed below the threshold; a masked cell is transparent over the light hatch
        rgba = level_rgba(palette_name, dim_below)[to_levels(drawn, None if vis.all() else vis)]
        rgba = rgba.reshape(-1, 4).astype(float)
        light = (rgba[:, :3] @ np.array([0.299, 0.587, 0.114]) > 140) | (rgba[:, 3] == 0)
        cell_source.data["ink"] = np.where(light, "#111111", "#ffffff").tolist()
        fig.text("x", "y", text="text", source=cell_source, text_align="center", text_baseline="middle",
                 text_font_size="9px", text_color="ink")
    return fig
