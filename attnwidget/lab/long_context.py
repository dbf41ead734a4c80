"""Long-context attention analysis (handout ``004``): where the last query looks in its history.

The summary's tools, on :mod:`attnwidget.study`, :mod:`attnwidget.metrics.history` and
:mod:`attnwidget.plots`::

    from attnwidget.lab.long_context import (
        extract_and_visualize_attention, visualize_attention_heatmap, visualize_attention_lines,
        sample_statistics, summary_statistics, visualize_summary_statistics, compression_hints,
        insights, save_figures,
    )
    study = extract_and_visualize_attention(config, model, test_dataloader, num_samples=5,
                                            layer_idx=0)       # the whole tool: console + ./figs/attention
    visualize_attention_heatmap(maps, layer_idx=0)          # one panel per head
    visualize_attention_lines(maps, layer_idx=0, head_idx=0)  # last query's profile, received
    sample_statistics(maps.layer(0), causal=True)          # the per-sample numbers, per head
    summary = summary_statistics([m.weights for m in samples], causal=True)
    visualize_summary_statistics(samples, layer_idx=-1)     # the four measures per head, across samples
    insights(summary)                                        # "INSIGHT: Strong recency bias ..."
    save_figures({"layer0_heads": fig}, "./figs/attention")  # the figures, in a folder

The context of the last query is the handout's: the keys *before* it (20
positions give 19 context tokens; the query's own key is left out and the
rest renormalised to sum to 1), so the mean context attention is
``1 / context_tokens`` and position 18 is the last context token, as in its
example output. :class:`attnwidget.study.LongContextStudy` and the report use
the same definition (:func:`attnwidget.study.context_of`). The handout's
"Ratio: mean(recent 25%) / mean(distant 25%)" is
:func:`attnwidget.metrics.recency_ratio` of that context; its thresholds
(ratio > 2, entropy > 2) are :data:`attnwidget.metrics.HINT_RULES`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnwidget.lab._common import figure_size, index, named, save, sequences
from attnwidget.maps import AttentionMaps
from attnwidget.metrics import compression_hints
from attnwidget.metrics.history import finite_mean_std, received_metrics
from attnwidget.study import INSIGHTS, MEASURES, context_history, context_measures, context_of, insight_lines

__all__ = [
    "INSIGHTS",
    "compression_hints",
    "extract_and_visualize_attention",
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
    """The handout's line plots for one head: the last query's attention over its history (the
    keys before it, as shares of the context weight, as :func:`sample_statistics` reads them,
    with the uniform share and the recent and distant quarters marked), and the mean attention
    each position receives. A bokeh column of two figures.

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
    (or an AttentionMaps). ``causal``: keys above the diagonal must hold 0
    (checked); None (default) takes the record's flag, or for weights whether
    nothing lies above the diagonal. The context is the keys before the last
    query, renormalised (the module's doc). Keys:

    * ``sequence_length``: Q; ``context_tokens``: the keys before the last query (K - 1);
    * ``mean_context_attention``: the mean weight per context token, ``1 / context_tokens``
      (the baseline the other numbers compare with: the handout's 0.0526 for 19);
    * ``attention_std``: std of the context weights (larger = more focused);
    * ``max_attention_position``: the context key attended most (lowest on ties);
    * ``recent_distant_ratio``: mean weight on the most recent ``fraction`` of the
      context over the most distant ``fraction`` (> 2 is a strong recency bias);
    * ``attention_entropy``: entropy of the context weights, nats (``ln(context_tokens)`` = uniform).
    """
    causal = _causal(attention, causal)
    profile = context_of(attention, "attention", causal=causal)  # [..., 1, K - 1]
    measures = context_measures(profile, fraction)
    n_queries = attention.shape[-2] if isinstance(attention, AttentionMaps) else np.shape(attention)[-2]
    out: dict[str, Any] = {"sequence_length": int(n_queries), "context_tokens": int(profile.shape[-1])}
    for key in ("mean_context_attention", "attention_std", "max_attention_position",
                "recent_distant_ratio", "attention_entropy"):
        value = np.asarray(measures[key])
        out[key] = value if value.ndim else (int(value) if key == "max_attention_position" else float(value))
    return out


def _samples(samples: Any) -> list[Any]:
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence) or not samples:
        raise ValueError(
            f"samples: expected a non-empty list of attention arrays, got {type(samples).__name__}"
        )
    return list(samples)


def summary_statistics(
    samples: Sequence[Any], *, causal: bool | None = None, fraction: float = 0.25, bins: int = 20
) -> dict[str, Any]:
    """Statistics across samples: each measure's mean and std over ``samples``.

    ``samples``: one attention array per sample (``[layers, heads, Q, K]`` or
    any ``[..., Q, K]``, or AttentionMaps; lengths may differ, the leading shape
    must match). On each sample's context (the module's doc), returns

    * the handout's summary measures, each ``{"mean", "std"}`` with the leading
      shape: ``mean_context_attention``, ``attention_std`` (concentration),
      ``attention_entropy`` (nats) and ``recent_distant_ratio`` (infinite ratios
      left out), as :func:`sample_statistics` gives them per sample;
    * :func:`attnwidget.metrics.history_metrics` of the contexts, which
      :func:`insights` reads: ``recency_ratio``, ``max_position_relative`` (0
      first key .. 1 last), ``top_mass``, ``k90``, ``cluster_run``,
      ``mean_entropy`` and ``context_bins`` (the last query's context weight per
      relative-position bin);
    * ``received``: what each position receives from every query of the whole map, per
      relative-position bin (:func:`attnwidget.metrics.history.received_metrics`);
    * ``n_samples``.

    ``causal=None`` (default): causal when every sample is (see :func:`sample_statistics`).
    """
    samples = _samples(samples)
    if causal is None:
        causal = all(_causal(s, None) for s in samples)
    profiles = [context_of(s, f"samples[{i}]", causal=bool(causal)) for i, s in enumerate(samples)]
    out = context_history(profiles, fraction=fraction, bins=bins)
    # what each position receives is a property of the whole map, not of the last query's context
    out["received"] = received_metrics(samples, bins=bins, causal=bool(causal))
    per = [context_measures(p, fraction) for p in profiles]
    for key in ("mean_context_attention", "attention_std", "attention_entropy", "recent_distant_ratio"):
        out[key] = finite_mean_std(np.stack([np.asarray(m[key], dtype=float) for m in per]))
    return out


#: The panels of :func:`visualize_summary_statistics`, in the handout's order.
SUMMARY_PANELS = ("mean_context_attention", "attention_std", "attention_entropy", "recent_distant_ratio")


def visualize_summary_statistics(
    samples: Sequence[Any],
    layer_idx: int = 0,
    *,
    causal: bool | None = None,
    save_path: str | Path | None = None,
) -> Any:
    """The handout's summary figure for one layer: its four measures across samples, per head.

    ``samples``: one ``[layers, heads, Q, K]`` array (or AttentionMaps) per
    sample, lengths may differ. Four panels (a bokeh grid, two per row), each a
    box per head over the samples with every sample as a dot
    (:func:`attnwidget.plots.study.distribution_figure`): the mean context
    attention, the concentration (std), the entropy and the recent/distant
    ratio, as :func:`sample_statistics` gives them.
    """
    from bokeh.layouts import gridplot

    from attnwidget.plots.study import distribution_figure

    samples = _samples(samples)
    lead = []
    for i, sample in enumerate(samples):
        shape = sample.shape if isinstance(sample, AttentionMaps) else np.shape(sample)
        if len(shape) != 4:
            raise ValueError(f"samples[{i}]: expected [layers, heads, Q, K], got shape {tuple(shape)}")
        if lead and tuple(shape[:2]) != lead[0]:
            raise ValueError(f"samples[{i}]: {shape[0]} layers x {shape[1]} heads, expected "
                             f"{lead[0][0]} x {lead[0][1]} like samples[0]")
        lead.append(tuple(shape[:2]))
    li = index(layer_idx, lead[0][0], "layer_idx")
    if causal is None:
        causal = all(_causal(s, None) for s in samples)
    per = [sample_statistics(s, causal=bool(causal)) for s in samples]
    panels = []
    for key in SUMMARY_PANELS:
        fig = distribution_figure(np.stack([np.asarray(m[key], dtype=float)[li] for m in per]), key, li)
        fig.width, fig.height = 460, 280
        fig.add_layout(_subtitle(MEASURES[key]), "above")
        panels.append(fig)
    return save(gridplot(panels, ncols=2), save_path)


def _subtitle(text: str, chars: int = 60) -> Any:
    """An italic line under a panel's title, wrapped at ``chars`` (bokeh cuts a title at the edge)."""
    import textwrap

    from bokeh.models import Title

    return Title(text="\n".join(textwrap.wrap(text, chars)), text_font_style="italic", text_font_size="9pt")


def _place(index: Sequence[int]) -> str:
    """A hint's matrix in words: ``layer 0 head 2``, ``head 2``, or ``the matrix``."""
    index = tuple(int(i) for i in index)
    if len(index) == 2:
        return f"layer {index[0]} head {index[1]}"
    if len(index) == 1:
        return f"head {index[0]}"
    return "the matrix" if not index else str(index)


def insights(summary: Mapping[str, Any], *, verbose: bool = True) -> list[str]:
    """The handout's console insights from :func:`summary_statistics`, one string per hint that
    fires; printed (as the handout's tool does) unless ``verbose=False``.

    Each names where it holds (``layer 0 head 2`` for a ``[layers, heads]``
    summary) and the measure against its threshold (:func:`compression_hints`).
    An empty list means no rule fired.
    """
    out = insight_lines(compression_hints(dict(summary)), _place)
    if verbose:
        print("\n".join(out) if out else "No compression insight: no rule fired.")
    return out


def extract_and_visualize_attention(
    config: Any,
    model: Any,
    test_dataloader: Any,
    num_samples: int = 5,
    layer_idx: int | None = None,
    *,
    tokenizer: Any = None,
    save_dir: str | Path | None = "./figs/attention",
    png: bool | None = None,
    verbose: bool = True,
) -> Any:
    """The handout's whole tool: run ``model`` over ``num_samples`` sequences of ``test_dataloader``,
    print each sample's numbers, the statistics across samples and the insights, save the figures
    in ``save_dir``; returns the :class:`attnwidget.study.LongContextStudy`.

    ``config``: the handout passes its training config; attnwidget reads what it needs from the
    model and the data, so any value (None too) is accepted and not used. ``model``: any model
    :func:`attnwidget.extract_attention` takes (transformers, TransformerLens, or a PyTorch
    module whose attention modules return their weights). ``test_dataloader``: any iterable of
    texts, token id tensors (``[seq_len]`` or ``[batch, seq_len]``: each row is a sample),
    mappings of model inputs (``{"input_ids": ..., "attention_mask": ...}``, split by row), or
    ``(inputs, targets)`` tuples; the first ``num_samples`` sequences are read. ``tokenizer``:
    for texts (found offline for transformers models and the embedded ones).

    ``layer_idx``: the layer of the console's per-head lines and of the figures (negative from
    the end); None (the default) puts every layer in the numbers and the last in the figures.
    ``save_dir``: a folder per call, ``save_dir/layer<i>`` (``all_layers`` for None), so the
    handout's loop over layers keeps each layer's results: ``study.json``, ``insights.txt``,
    the study's figures (``.html``, and ``.png`` when ``png``; None: PNG when a browser is
    installed) and per sample its heads' heat maps and each head's line plots (``.html``);
    None saves nothing. The samples need the same layers and heads; their lengths may differ.
    """
    from attnwidget.extract import extract_attention
    from attnwidget.study import study_samples

    del config  # accepted for the handout's call; nothing in it is needed here
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples: expected a positive int, got {num_samples!r}")
    try:
        items = iter(test_dataloader)
    except TypeError:
        raise TypeError(f"test_dataloader: expected an iterable of samples (a DataLoader, a list), got "
                        f"{type(test_dataloader).__name__}") from None
    inputs: list[Any] = []
    for item in items:
        inputs.extend(sequences(item, "test_dataloader"))
        if len(inputs) >= num_samples:
            break
    if not inputs:
        raise ValueError("test_dataloader: it yielded no sample")
    if any(isinstance(x, str) for x in inputs):
        from attnwidget.inputs import find_tokenizer

        tokenizer = find_tokenizer(model, tokenizer)
    # a sample given as token ids is named by where it came from, not called a "text sequence"
    samples = [named(extract_attention(model, x, tokenizer),
                     None if isinstance(x, str) else "test_dataloader") for x in inputs[:num_samples]]
    if layer_idx is not None:
        index(layer_idx, samples[0].n_layers, "layer_idx")  # the error in the handout's word
    study = study_samples(samples, layer=layer_idx)
    if len(inputs) < num_samples and verbose:
        print(f"test_dataloader: {len(inputs)} sequences, fewer than num_samples={num_samples}; "
              "studied them all")
    if verbose:
        print(study)
    if save_dir is not None:
        # one folder per layer studied: the handout calls this once per layer, and each call
        # would otherwise overwrite the last one's study.json and insights.txt
        li = study.layer if study.layer is not None else samples[0].n_layers - 1
        folder = Path(save_dir) / (f"layer{li}" if study.layer is not None else "all_layers")
        written = study.save(folder, png=_png_wanted(png, verbose))
        from bokeh.layouts import column

        figures = {}
        for s, maps in enumerate(study.samples):  # the per-sample figures: heads, then lines
            figures[f"sample{s + 1}_heads"] = visualize_attention_heatmap(maps, layer_idx=li)
            figures[f"sample{s + 1}_lines"] = column([visualize_attention_lines(maps, li, h)
                                                      for h in range(maps.n_heads)])
        written += save_figures(figures, folder, "html")
        if verbose:
            print(f"Saved {len(written)} files in {folder}")
    return study


def _png_wanted(png: bool | None, verbose: bool) -> bool:
    """``png`` as given; None: PNG when a browser is installed (said once, when it is not)."""
    if png is not None:
        return bool(png)
    from attnwidget.plots import BrowserUnavailableError, check_browser

    try:
        check_browser()
        return True
    except BrowserUnavailableError as exc:
        if verbose:
            print(f"figures as HTML only: {exc}")
        return False


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
    from attnwidget.plots import Exporter

    with Exporter() as exporter:  # PNG/SVG: one browser, and the PNGs on one page
        return exporter.export_all([(fig, Path(folder) / f"{name}.{fmt}") for name, fig in figures.items()])
