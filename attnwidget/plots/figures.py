"""The figures: one head, a layer's heads, summaries, history, and the teaching figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from bokeh.layouts import gridplot, row
from bokeh.models import ColumnDataSource, FixedTicker, HoverTool, Whisker
from bokeh.plotting import figure

from attnwidget import metrics as M  # noqa: N812 (the package's usual short name)
from attnwidget.maps import AttentionMaps, average_label
from attnwidget.plots._matrix import (
    OVERVIEW_SIDE,
    legend_above,
    matrix_figure_impl,
    plural,
    shared,
    wide_positive,
)


def _as_maps(maps: Any) -> AttentionMaps:
    if isinstance(maps, AttentionMaps):
        return maps
    return AttentionMaps.from_tensor(maps)


def _visible(maps: AttentionMaps) -> np.ndarray | None:
    """bool ``[Q, K]`` of the record's masking, or None when every cell is visible."""
    vis = maps.visible_cells()
    return None if vis.all() else vis


def caption(maps: AttentionMaps, layer: int, head: int | None) -> str:
    """Provenance line: model · layer · head · masking · “text”; ``head=None``: the head average.

    The widget's caption and the report's lines are the same call
    (:meth:`AttentionMaps.provenance`), so a figure and the view title a map alike."""
    return maps.provenance(layer, head)


def average_title(prefix: str, n_heads: int) -> str:
    """A head-average panel's title: ``prefix`` and :func:`attnwidget.maps.average_label`, broken
    before its parenthesis (on one line it is wider than a grid panel and bokeh would cut it)."""
    return f"{prefix} {average_label(n_heads)}".replace(" (", "\n(", 1)


def matrix_figure(
    weights: Any, query_labels: Sequence[str], key_labels: Sequence[str], title: str, *,
    palette: str = "viridis", adaptive: bool = False, threshold: float | None = None, size: int = 520,
    annotate: bool = False, visible: Any = None, max_side: int = OVERVIEW_SIDE, vmax: float | None = None,
    sqrt: bool = False,
) -> Any:
    """Any ``[Q, K]`` map (a head, a head average, a rollout) with tokens, colour bar and hover.

    Drawn as an image of uint8 levels, max-pooled to at most ``max_side``
    cells a side (the title then says so; the hover marks pooled values as
    block maxima). Colours span 0..1, or 0..the largest weight with
    ``adaptive=True``, or 0..``vmax`` when given. ``threshold``: weights below
    it are dimmed, as in the widget. ``visible``: bool ``[Q, K]``, False for
    masked cells (hatched). ``annotate=True`` writes each value in its cell
    (small maps only, at most 400 cells). ``sqrt=True``: colours follow the square root of the
    weight, so structure beside a few strong sink cells shows (the colour bar says so).
    """
    top = vmax if vmax is not None else None if adaptive else 1.0
    return matrix_figure_impl(weights, query_labels, key_labels, title, palette, top, annotate, size,
                              threshold=threshold, visible=visible, max_side=max_side, sqrt=sqrt)


def heatmap(
    maps: Any, layer: int = 0, head: int = 0, *, palette: str = "viridis", adaptive: bool = False,
    annotate: bool = False, size: int = 520, threshold: float | None = None, max_side: int = OVERVIEW_SIDE,
    sqrt: bool = False,
) -> Any:
    """One head: tokens on both axes, colour bar "Attention weight", hover, a provenance title.

    Colours span 0..1 unless ``adaptive=True`` (0..the head's largest weight), on a
    square-root scale with ``sqrt=True`` (:func:`matrix_figure`);
    ``annotate=True`` writes each value in its cell (small maps only). Maps
    longer than ``max_side`` tokens are max-pooled (see :func:`matrix_figure`).
    """
    maps = _as_maps(maps)
    return matrix_figure_impl(maps.head(layer, head), maps.query_display, maps.key_display,
                              caption(maps, layer, head), palette, None if adaptive else 1.0, annotate, size,
                              threshold=threshold, visible=_visible(maps), max_side=max_side, sqrt=sqrt)


def heads_grid(
    maps: Any, layer: int | None = 0, *, ncols: int = 4, palette: str = "viridis", size: int = 220,
    include_average: bool = True, max_side: int | None = None, sqrt: bool = False,
) -> Any:
    """Small multiples: every head of ``layer`` (``None``: of every layer), each titled with
    ``L{l} H{h} · ent {entropy} · {grade}`` (mean entropy, nats); the head average, when asked,
    is one extra panel titled as an average, never a replacement for the heads.

    Each panel is max-pooled to what it is drawn at (``max_side``, default
    ``size`` cells a side) and carries its uint8 levels only (hover: ``≈``
    weights, as the widget's thumbnails); token labels, hover formatters and
    colour tables are shared by the panels (one copy in the document). ``sqrt=True``: each
    panel's colours follow the square root of the weight (see :func:`matrix_figure`).
    """
    maps = _as_maps(maps)
    layers = range(maps.n_layers) if layer is None else [layer]
    numbers = {li: (M.compute_attention_statistics(maps.layer(li))["mean_entropy"],
                    M.sharpness_grade(maps.layer(li))) for li in layers}
    return layers_grid(maps, numbers, ncols=ncols, palette=palette, size=size,
                       include_average=include_average, max_side=max_side, sqrt=sqrt)


def layers_grid(
    maps: AttentionMaps, numbers: dict[int, tuple[Any, Any]], *, ncols: int = 4, palette: str = "viridis",
    size: int = 220, include_average: bool = True, max_side: int | None = None, sqrt: bool = False,
) -> Any:
    """:func:`heads_grid` of the layers in ``numbers``, ``{layer: (mean entropy [H], grades [H])}``,
    for callers that have computed them already (the report: once, for the whole stack)."""
    side = size if max_side is None else max_side
    common = shared(maps.query_display, maps.key_display)
    visible = _visible(maps)
    panels = []
    for li, (entropy, grades) in numbers.items():
        stack = maps.layer(li)  # [H, Q, K]
        for h in range(maps.n_heads):
            ent = entropy[h]  # None or NaN: an empty map (every row masked)
            shown = "–" if ent is None or not np.isfinite(float(ent)) else f"{float(ent):.2f}"
            title = f"L{li} H{h} · ent {shown} · {grades[h]}"
            panels.append(matrix_figure_impl(stack[h], maps.query_display, maps.key_display, title, palette,
                                             None, size=size, tools=False, visible=visible, max_side=side,
                                             share=common, exact=False, compact=True, sqrt=sqrt))
        if include_average:
            panels.append(matrix_figure_impl(stack.mean(0), maps.query_display, maps.key_display,
                                             average_title(f"L{li}", maps.n_heads), palette,
                                             None, size=size, tools=False, visible=visible, max_side=side,
                                             share=common, exact=False, compact=True, sqrt=sqrt))
    return gridplot(panels, ncols=ncols, toolbar_location=None)


def entropy_grid(maps: Any, *, palette: str = "viridis") -> Any:
    """Mean row entropy (nats) of every head, layers down and heads across."""
    maps = _as_maps(maps)
    return entropy_figure(maps, M.compute_attention_statistics(maps)["mean_entropy"], palette=palette)


def entropy_figure(maps: AttentionMaps, entropy: Any, *, palette: str = "viridis") -> Any:
    """:func:`entropy_grid` from mean entropies already computed, ``[L, H]`` (None or NaN: an
    empty map, drawn hatched)."""
    ent = np.array([[np.nan if v is None else float(v) for v in row] for row in entropy], dtype=float)
    return matrix_figure_impl(ent, list(maps.layer_names), list(maps.head_names),
                              f"Mean entropy per head (nats)\n{maps.model_name or ''}", palette, None,
                              size=360, colorbar_title="entropy (nats)", names=("layer", "head", "entropy"))


def similarity_matrix(maps: Any, layer: int = 0, *, method: str = "js", palette: str = "viridis") -> Any:
    """How different the heads of a layer are: Jensen-Shannon distance (``js``) or KL (``kl``)."""
    maps = _as_maps(maps)
    if method not in ("js", "kl"):
        raise ValueError(f"method: expected 'js' or 'kl', got {method!r}")
    w = maps.layer(layer)
    d = M.js_distance_matrix(w) if method == "js" else M.kl_divergence_matrix(w)
    names = list(maps.head_names)
    label = "Jensen-Shannon distance" if method == "js" else "KL divergence (nats)"
    axes = ("head a", "head b", "KL(a ‖ b)") if method == "kl" else ("head", "head", "JS distance")
    fig = matrix_figure_impl(d, names, names, f"{label} between heads · {maps.layer_names[layer]}", palette,
                             None, size=360, colorbar_title=label, names=axes)
    if method == "kl":
        fig.xaxis.axis_label = "head b (cell: KL(a ‖ b), not symmetric)"
    return fig


def rollout_figure(maps: Any, layer: int | None = None, *, palette: str = "viridis",
                   max_side: int = OVERVIEW_SIDE) -> Any:
    """Attention rollout up to ``layer`` (default: the last); see :func:`metrics.attention_rollout`."""
    maps = _as_maps(maps)
    roll = M.attention_rollout(maps)
    li = maps.n_layers - 1 if layer is None else layer
    title = f"Attention rollout to {maps.layer_names[li]} (not an explanation)"
    return matrix_figure_impl(roll[li], maps.query_display, maps.key_display, title, palette, None,
                              max_side=max_side)


def last_query_figure(maps: Any, layer: int = 0, head: int = 0, *, fraction: float = 0.25) -> Any:
    """The last query's attention over its history, as 004's numbers read it: the keys before
    the query, their weights renormalised to shares of the context (:func:`attnwidget.study.context_of`).

    The query's own key is left out of the line; its weight is in the title. A dashed line
    marks the uniform share 1 / n (n context keys; 004's mean context attention) and two bands
    the most distant and most recent ``fraction`` of the context, whose mean shares give the
    recent / distant ratio (also in the title). x: key position; y: share of the context weight.
    """
    from attnwidget.study import context_measures, context_of

    maps = _as_maps(maps)
    weights = maps.head(layer, head)
    if weights.shape[-1] < 2:  # one token: the query has no history to draw
        return figure(title=f"Last query's attention over its history: none (one token)\n"
                            f"{caption(maps, layer, head)}", width=700, height=290)
    share = context_of(weights[None], "maps", causal=maps.causal)[0, 0]  # [K - 1]
    n = len(share)
    own = float(weights[-1, -1])
    ratio = float(context_measures(share[None], fraction)["recent_distant_ratio"])
    span = max(1, int(np.ceil(n * fraction)))  # as metrics.recency_ratio counts the shares
    said = "no weight on its context" if not share.any() else f"recent / distant {ratio:.2f}"
    fig = figure(title=f"Last query's attention over its history: {said} · own key {own:.2f}, not drawn\n"
                       f"{caption(maps, layer, head)}",
                 width=700, height=290, x_axis_label="key position",
                 y_axis_label="share of the context weight")
    pct = f"{fraction:.0%}"
    top = max(float(share.max()), 1 / n) * 1.05
    # the bands and the uniform share in a legend above the plot (labels inside it sat on the line)
    fig.quad(left=-0.5, right=span - 0.5, bottom=0, top=top, fill_color="#9e9e9e", fill_alpha=0.15,
             line_alpha=0, legend_label=f"most distant {pct}")
    fig.quad(left=n - span - 0.5, right=n - 0.5, bottom=0, top=top, fill_color="#1565c0", fill_alpha=0.12,
             line_alpha=0, legend_label=f"most recent {pct}")
    fig.line([-0.5, n - 0.5], [1 / n, 1 / n], line_dash="dashed", line_color="#555",
             legend_label=f"uniform share 1/{n}")
    line = fig.line(np.arange(n), share, line_width=2, legend_label="share")
    fig.add_tools(HoverTool(renderers=[line], tooltips=[("position", "$index"), ("share", "@y{0.0000}")]))
    legend_above(fig)
    return fig


def received_figure(maps: Any, layer: int = 0, head: int = 0) -> Any:
    """Attention received per key position (mean over queries), as bars."""
    maps = _as_maps(maps)
    received = M.attention_received(maps.head(layer, head), causal=maps.causal)
    fig = figure(title=f"Attention received per position\n{caption(maps, layer, head)}", width=700,
                 height=260, x_axis_label="key position", y_axis_label="mean weight received")
    fig.vbar(x=np.arange(len(received)), top=received, width=0.8)
    return fig


def recency_figure(samples: Sequence[Any], *, causal: bool = True, layer: int = 0) -> Any:
    """Recency ratio of each head of ``layer`` over several samples: mean with ±1 std error bars.

    The ratio of 004's numbers (:func:`attnwidget.study.context_measures`): the last query's
    context (the keys before it, renormalised), mean share of its most recent quarter over its
    most distant quarter; infinite ratios are left out of the mean. A log axis when the means
    span more than a factor 100 (one head at 1e7 would flatten the rest); a tick per head.
    """
    from attnwidget.study import context_history, context_of

    profiles = [context_of(s, f"samples[{i}]", causal=causal) for i, s in enumerate(samples)]
    hist = context_history(profiles)
    mean = np.asarray(hist["recency_ratio"]["mean"], dtype=float)[layer]
    std = np.asarray(hist["recency_ratio"]["std"], dtype=float)[layer]
    x = np.arange(len(mean))
    log = wide_positive(mean)
    # a log axis has no 0: bars and whiskers start a decade under the smallest positive mean
    floor = float(mean[np.isfinite(mean) & (mean > 0)].min()) / 10 if log else 0.0
    lower = np.maximum(mean - std, floor) if log else mean - std
    source = ColumnDataSource({"x": x, "mean": mean, "lower": lower, "upper": mean + std})
    n = len(samples)
    fig = figure(title=f"Recency ratio per head over {plural(n, 'sample')} (layer {layer})",
                 width=600, height=300, x_axis_label="head", y_axis_label="recent / distant weight",
                 y_axis_type="log" if log else "linear")
    fig.vbar(x="x", top="mean", bottom=floor, width=0.7, source=source)
    fig.add_layout(Whisker(source=source, base="x", upper="upper", lower="lower"))
    fig.xaxis.ticker = FixedTicker(ticks=list(map(int, x)))
    fig.add_tools(HoverTool(tooltips=[("head", "@x"), ("ratio", "@mean{0.00}")]))
    return fig


def scaling_figure(result: dict[str, list] | None = None) -> Any:
    """The scaling experiment: max weight, gradient size and entropy against d_k, scaled vs unscaled."""
    from attnwidget.scratch import scaling_experiment

    result = result or scaling_experiment()
    panels = []
    for key, label in (("max_weight", "largest weight (1 = saturated)"),
                       ("grad_norm", "gradient size at the scores"), ("entropy", "entropy (nats)")):
        fig = figure(title=label, width=320, height=280, x_axis_type="log", x_axis_label="d_k")
        for scaled, colour, name in ((False, "#c62828", "no scale"), (True, "#1565c0", "1/sqrt(d_k)")):
            xs = [d for d, s in zip(result["d_k"], result["scaled"], strict=True) if s == scaled]
            ys = [v for v, s in zip(result[key], result["scaled"], strict=True) if s == scaled]
            fig.line(xs, ys, color=colour, legend_label=name, line_width=2)
            fig.scatter(xs, ys, color=colour, size=6)
        fig.xaxis.ticker = FixedTicker(ticks=sorted(set(result["d_k"])))  # each d_k measured
        fig.xaxis.major_label_orientation = 0.8
        # above each panel (inside, it covered the lines; above one only, the panels' heights differ)
        legend_above(fig)
        panels.append(fig)
    return row(*panels)


def mask_figure(n: int = 8) -> Any:
    """The causal and the reverse mask side by side (1 = may attend)."""
    from attnwidget.scratch import causal_mask, reverse_mask

    labels = [str(i) for i in range(n)]
    return row(
        matrix_figure_impl(causal_mask(n).float().numpy(), labels, labels, "causal: the past", "greys", 1.0,
                           size=280, colorbar_title="may attend"),
        matrix_figure_impl(reverse_mask(n).float().numpy(), labels, labels, "reverse: the future (a cheat)",
                           "greys", 1.0, size=280, colorbar_title="may attend"),
    )
