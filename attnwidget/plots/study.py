"""Figures of 004's long-context study: history curves and distributions across samples."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from bokeh.models import ColumnDataSource, Legend
from bokeh.palettes import Category20_20
from bokeh.plotting import figure

from attnwidget.plots._matrix import legend_above, plural, wide_positive

#: One colour per head, up to 20 heads (Category20's dark shades first, then the light ones: each
#: distinct from the rest at a glance; Category10 gave a 12-head layer's heads 10 and 11 the
#: colours of heads 0 and 1).
PALETTE = Category20_20[::2] + Category20_20[1::2]


def history_figure(profiles: Sequence[np.ndarray], layer: int) -> figure:
    """Every head's last-query weight over its context, mean over samples (lines) ± std (bands).

    ``profiles``: one ``[heads, n]`` array per sample (context weights, summing to 1 per head);
    samples of different lengths are cut to the shortest context, aligned at the query
    (position -1 = the key just before it), so recency lines up across samples.
    """
    n = min(p.shape[-1] for p in profiles)
    stack = np.stack([p[:, -n:] for p in profiles])  # [S, H, n], aligned at the query
    mean, std = stack.mean(0), stack.std(0)
    x = np.arange(-n, 0)
    fig = figure(title=f"Last query over its context, every head of layer {layer} "
                       f"({plural(len(profiles), 'sample')}, mean ± std)",
                 width=760, height=320, x_axis_label="key position relative to the query",
                 y_axis_label="context weight")
    items = []
    for h in range(mean.shape[0]):
        colour = PALETTE[h % len(PALETTE)]
        lo = np.maximum(mean[h] - std[h], 0)  # weights are never negative
        src = ColumnDataSource({"x": x, "mean": mean[h], "lo": lo, "hi": mean[h] + std[h]})
        band = fig.varea(x="x", y1="lo", y2="hi", source=src, fill_color=colour, fill_alpha=0.15)
        line = fig.line(x="x", y="mean", source=src, color=colour, line_width=2)
        items.append((f"head {h}", [line, band]))
    fig.add_layout(Legend(items=items, click_policy="hide"), "right")
    return fig


def distribution_figure(values: np.ndarray, measure: str, layer: int) -> figure:
    """A box per head of ``values`` ``[samples, heads]``: quartiles, median, whiskers at the
    extremes, and every sample as a dot (the distribution, not only mean ± std). The y axis
    starts at 0 for a measure that is never negative; a ratio (``measure`` ending in "ratio")
    is drawn on a log axis when its values span more than a factor 100."""
    values = np.asarray(values, dtype=float)
    S, H = values.shape
    heads = [str(h) for h in range(H)]
    finite = np.where(np.isfinite(values), values, np.nan)
    with warnings.catch_warnings():  # a head with no finite value (every ratio infinite) has no box
        warnings.simplefilter("ignore", RuntimeWarning)
        q1, med, q3 = (np.nanquantile(finite, q, axis=0) for q in (0.25, 0.5, 0.75))
        lo, hi = np.nanmin(finite, axis=0), np.nanmax(finite, axis=0)
    seen = finite[np.isfinite(finite)]
    # a ratio spanning more than a factor 100 on a log axis (one of 1e7 flattened the rest); its
    # zeros (no weight on the recent quarter) are drawn a decade under the smallest positive value
    log = measure.endswith("ratio") and wide_positive(seen)
    if log:
        floor = float(seen[seen > 0].min()) / 10
        finite = np.maximum(finite, floor)
        values = np.where(np.isfinite(values), np.maximum(values, floor), values)
        q1, med, q3 = (np.maximum(x, floor) for x in (q1, med, q3))
        lo, hi = np.maximum(lo, floor), np.maximum(hi, floor)
    fig = figure(x_range=heads, title=f"{measure} across {plural(S, 'sample')}, layer {layer}",
                 width=600, height=300, x_axis_label="head", y_axis_label=measure,
                 y_axis_type="log" if log else "linear")
    box = ColumnDataSource({"head": heads, "q1": q1, "med": med, "q3": q3, "lo": lo, "hi": hi})
    fig.segment(x0="head", x1="head", y0="lo", y1="hi", source=box, color="#555")
    fig.vbar(x="head", top="q3", bottom="q1", width=0.6, source=box, fill_color="#9ecae1",
             line_color="#333")
    # the median as a line across its box (a bar of no height), as wide as the box
    fig.vbar(x="head", top="med", bottom="med", width=0.6, source=box, line_color="#08306b", line_width=3,
             legend_label="median")
    dots = ColumnDataSource({"head": [heads[h] for s in range(S) for h in range(H)],
                             "value": [values[s, h] for s in range(S) for h in range(H)]})
    fig.scatter(x="head", y="value", source=dots, size=5, color="#d62728", alpha=0.6, legend_label="a sample")
    if seen.size and seen.min() >= 0 and not log:
        fig.y_range.start = 0
    legend_above(fig, "8pt")
    return fig
