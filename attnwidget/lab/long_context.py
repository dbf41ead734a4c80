"""Long-context attention analysis (handout ``004``): where the last query looks in its history.

The summary's tools, on :mod:`attnwidget.metrics.history` and :mod:`attnwidget.plots`::

    from attnwidget.lab.long_context import (
        visualize_attention_heatmap, visualize_attention_lines, sample_statistics,
        summary_statistics, visualize_summary_statistics, compression_hints, insights, save_figures,
    )
    visualize_attention_heatmap(maps, layer_idx=0)          # one panel per head
    visualize_attention_lines(maps, layer_idx=0, head_idx=0)  # last query's profile, received
    sample_statistics(maps.layer(0), causal=True)          # the per-sample numbers, per head
    summary = summary_statistics([m.weights for m in samples], causal=True)
    visualize_summary_statistics(samples, layer_idx=-1)     # recency ratio per head, ± std
    insights(summary)                                        # "INSIGHT: Strong recency bias ..."
    save_figures({"layer0_heads": fig}, "./figs/attention")  # the figures, in a folder

The history of the last query is every key it may see, its own position
included (the handout's example counts 19 context tokens for 20 positions:
it leaves the query's own key out; a causal query does read it). The
handout's "Ratio: mean(recent 25%) / mean(distant 25%)" is
:func:`attnwidget.metrics.recency_ratio`; its thresholds (ratio > 2, entropy
> 2) are :data:`attnwidget.metrics.HINT_RULES`.

Left for later (issue 20): the multi-sample study itself
(``extract_and_visualize_attention(config, model, test_dataloader,
num_samples=5, layer_idx=...)``, which runs a model over a dataset's samples).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnwidget.lab._common import figure_size, index, save
from attnwidget.maps import AttentionMaps
from attnwidget.metrics import (
    compression_hints,
    compute_attention_entropy,
    compute_attention_statistics,
    history_metrics,
    last_query_profile,
    max_position,
    recency_ratio,
)
from attnwidget.study import INSIGHTS, insight_lines

__all__ = [
    "INSIGHTS",
    "compression_hints",
    "insights",
    "sample_statistics",
    "save_figures",
    "summary_statistics",
    "visualize_attention_heatmap",
    "visualize_attention_lines",
    "visualize_summary_statistics",
]


def _as_maps(attention: Any, tokens: Sequence[str] | None = None) -> AttentionMaps:
    if isinstance(attention, AttentionMaps):
        return attention
    return AttentionMaps.from_tensor(attention, tokens)


def visualize_attention_heatmap(
    attention: Any,
    tokens: Sequence[str] | None = None,
    layer_idx: int = 0,
    figsize: tuple[float, float] = (16, 12),
    *,
    ncols: int = 4,
    save_path: str | Path | None = None,
) -> Any:
    """Per-sample heat maps: one panel per attention head of layer ``layer_idx``; a bokeh grid.

    ``attention``: an AttentionMaps, or weights ``[heads, Q, K]`` /
    ``[layers, heads, Q, K]`` with ``tokens`` (default: positions).
    ``layer_idx`` may be negative. ``figsize`` (inches, as matplotlib's) sets
    the whole grid's size; ``ncols`` panels per row. Panels are titled with the
    head's entropy and sharpness grade (:func:`attnwidget.plots.heads_grid`).
    """
    from attnwidget.plots import heads_grid

    maps = _as_maps(attention, tokens)
    li = index(layer_idx, maps.n_layers, "layer_idx")
    width, height = figure_size(figsize)
    cols = min(max(1, int(ncols)), maps.n_heads)
    rows = -(-maps.n_heads // cols)
    panel = max(120, min(width // cols, height // rows))
    return save(heads_grid(maps, li, ncols=cols, size=panel, include_average=False), save_path)


def visualize_attention_lines(
    attention: Any,
    layer_idx: int = 0,
    head_idx: int = 0,
    *,
    save_path: str | Path | None = None,
) -> Any:
    """The handout's line plots for one head: the last query's attention over its history, and
    the mean attention each position receives. A bokeh column of two figures.

    ``attention``: an AttentionMaps or weights ``[heads, Q, K]`` / ``[layers,
    heads, Q, K]``; indices may be negative.
    """
    from bokeh.layouts import column

    from attnwidget.plots import last_query_figure, received_figure

    maps = _as_maps(attention)
    li = index(layer_idx, maps.n_layers, "layer_idx")
    hi = index(head_idx, maps.n_heads, "head_idx")
    return save(column(last_query_figure(maps, li, hi), received_figure(maps, li, hi)), save_path)


def _causal(attention: Any, causal: bool | None) -> bool:
    """``causal`` as given, or (None) the record's flag / whether no weight lies above the diagonal."""
    if causal is not None:
        if not isinstance(causal, bool):
            raise TypeError(f"causal: expected True, False or None (infer), got {type(causal).__name__}")
        return causal
    return _as_maps(attention).causal


def sample_statistics(
    attention: Any, *, causal: bool | None = None, fraction: float = 0.25
) -> dict[str, Any]:
    """The handout's per-sample numbers for the last query, per matrix (floats, or arrays ``[...]``).

    ``attention``: ``[Q, K]``, ``[heads, Q, K]`` or ``[layers, heads, Q, K]``
    (or an AttentionMaps). ``causal``: only keys up to each query's position
    count; None (default) takes the record's flag, or for weights checks that
    nothing lies above the diagonal (the handout's models are causal; a
    bidirectional encoder's maps are not). Keys:

    * ``sequence_length``: Q; ``context_tokens``: the keys the last query sees (K);
    * ``mean_context_attention``: its mean weight per key (``1 / context_tokens``,
      since a row sums to 1: the baseline the other numbers compare with);
    * ``attention_std``: std of its weights (larger = more focused);
    * ``max_attention_position``: the key it attends most (lowest on ties);
    * ``recent_distant_ratio``: mean weight on the most recent ``fraction`` of
      its keys over the most distant ``fraction`` (> 2 is a strong recency bias);
    * ``attention_entropy``: entropy of its weights, nats (``ln K`` = uniform).
    """
    causal = _causal(attention, causal)
    # an AttentionMaps goes to the metrics as it is: they read its causal flag and padding
    profile = last_query_profile(attention, causal=causal)[..., None, :]  # [..., 1, K]: the last row
    stats = compute_attention_statistics(profile)
    n_queries = attention.shape[-2] if isinstance(attention, AttentionMaps) else np.shape(attention)[-2]
    return {
        "sequence_length": int(n_queries),
        "context_tokens": int(profile.shape[-1]),
        "mean_context_attention": stats["mean"],
        "attention_std": stats["std"],
        "max_attention_position": max_position(attention, causal=causal),
        "recent_distant_ratio": recency_ratio(attention, fraction, causal=causal),
        "attention_entropy": _squeeze(compute_attention_entropy(profile)),
    }


def _squeeze(rows: np.ndarray) -> Any:
    """``[..., 1]`` -> ``[...]``, a float for one matrix."""
    out = np.asarray(rows)[..., 0]
    return float(out) if out.ndim == 0 else out


def summary_statistics(
    samples: Sequence[Any], *, causal: bool | None = None, fraction: float = 0.25, bins: int = 20
) -> dict[str, Any]:
    """Statistics across samples: each measure's mean and std over ``samples``.

    ``samples``: one attention array per sample (``[layers, heads, Q, K]`` or
    any ``[..., Q, K]``; lengths may differ, the leading shape must match).
    Returns :func:`attnwidget.metrics.history_metrics`: ``recency_ratio``,
    ``max_position_relative`` (0 first key .. 1 last), ``top_mass`` (share of
    the last query's weight on its top 10% keys), ``mean_entropy`` (nats) and
    ``received`` (per relative-position bin), each ``{"mean", "std"}`` with the
    leading shape, and ``n_samples``. ``causal=None`` (default): causal when
    every sample is (see :func:`sample_statistics`).
    """
    if causal is None and isinstance(samples, Sequence) and not isinstance(samples, (str, bytes)) and samples:
        causal = all(_causal(s, None) for s in samples)
    return history_metrics(samples, fraction=fraction, bins=bins, causal=bool(causal))


def visualize_summary_statistics(
    samples: Sequence[Any],
    layer_idx: int = 0,
    *,
    causal: bool | None = None,
    save_path: str | Path | None = None,
) -> Any:
    """The recency ratio of each head of ``layer_idx`` across samples: mean with ±1 std error bars.

    ``samples``: one ``[layers, heads, Q, K]`` array (or AttentionMaps) per
    sample, lengths may differ. The handout's "Recent vs distant attention
    ratio" panel of its summary figure (:func:`attnwidget.plots.recency_figure`);
    the other measures are in :func:`summary_statistics`.
    """
    from attnwidget.plots import recency_figure

    if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence) or not samples:
        raise ValueError(
            f"samples: expected a non-empty list of attention arrays, got {type(samples).__name__}"
        )
    lead = []
    for i, sample in enumerate(samples):
        shape = sample.shape if isinstance(sample, AttentionMaps) else np.shape(sample)
        if len(shape) != 4:
            raise ValueError(f"samples[{i}]: expected [layers, heads, Q, K], got shape {tuple(shape)}")
        lead.append(shape[0])
    li = index(layer_idx, lead[0], "layer_idx")
    if causal is None:
        causal = all(_causal(s, None) for s in samples)
    return save(recency_figure(samples, causal=bool(causal), layer=li), save_path)


def insights(summary: Mapping[str, Any], *, verbose: bool = False) -> list[str]:
    """The handout's console insights from :func:`summary_statistics`, one string per hint that fires.

    Each names the matrices it holds for (e.g. ``(layer, head)`` pairs) and
    the measure against its threshold (:func:`compression_hints`). An empty
    list means no rule fired. ``verbose`` also prints them.
    """
    out = insight_lines(compression_hints(dict(summary)))
    if verbose:
        print("\n".join(out) if out else "No compression insight: no rule fired.")
    return out


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def save_figures(
    figures: Mapping[str, Any], folder: str | Path = "./figs/attention", fmt: str = "html"
) -> list[Path]:
    """Write each figure to ``folder/<name>.<fmt>`` (the folder is created); returns the paths.

    ``figures``: ``{name: bokeh figure or layout}``; names are plain file
    names (letters, digits, ``_ . -``). ``fmt``: ``"html"`` (standalone,
    offline), ``"png"`` or ``"svg"`` (need Chromium and chromedriver).
    """
    if fmt not in ("html", "png", "svg"):
        raise ValueError(f"fmt: expected 'html', 'png' or 'svg', got {fmt!r}")
    if not isinstance(figures, Mapping) or not figures:
        raise ValueError(f"figures: expected a non-empty {{name: figure}} dict, got {type(figures).__name__}")
    for name in figures:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"figures: names must be plain file names (letters, digits, _ . -), got {name!r}"
            )
    paths = []
    for name, fig in figures.items():
        path = Path(folder) / f"{name}.{fmt}"
        save(fig, path)
        paths.append(path)
    return paths
