"""Static attention figures with bokeh, from the same record and metrics the widget uses.

Every function takes an :class:`AttentionMaps` (or weights, where noted) and
returns a bokeh model; :func:`export` writes it as offline HTML (bokeh's
JavaScript inlined), PNG or SVG. Token text reaches the figure only as data
(axis labels, hover fields), never as HTML.

Every map is one ``image`` of the uint8 levels the widget draws, max-pooled to
at most 512 cells a side (grid panels: to the size they are drawn at), so a
figure's size does not grow with the square of the length; pooled maps say so
in their title and hover (see :mod:`attnwidget.plots._matrix` for the data a
figure carries).

Figures: :func:`heatmap` (one head), :func:`heads_grid` (small multiples of a
layer, with the head average only as an extra, labelled panel),
:func:`entropy_grid` (layer x head), :func:`similarity_matrix` (KL or JS between
heads), :func:`rollout_figure`, :func:`last_query_figure`, :func:`received_figure`,
:func:`recency_figure` (several samples, error bars), :func:`scaling_figure`
(the scaling experiment), :func:`mask_figure` (causal vs reverse mask) and
:func:`matrix_figure` (any ``[Q, K]`` map).

Export: :func:`export` (one figure), :class:`Exporter` (one browser for many;
``export_all``: their PNGs on one page), :func:`save_html`; :class:`BrowserUnavailableError`
when PNG/SVG cannot be made.
"""

from __future__ import annotations

from attnwidget.plots._matrix import (
    AXIS_LABEL_CHARS,
    CELL_LAYER_CELLS,
    OVERVIEW_SIDE,
    PALETTES,
    TITLE_TEXT_CHARS,
)
from attnwidget.plots._matrix import palette as _palette  # noqa: F401 (the single module's private names)
from attnwidget.plots._matrix import short as _short  # noqa: F401
from attnwidget.plots.export import (
    CHROMIUM_ARGS,
    BrowserUnavailableError,
    Exporter,
    _find,  # noqa: F401 (tests point it at a missing browser)
    _webdriver,  # noqa: F401
    check_browser,
    export,
    save_html,
)
from attnwidget.plots.figures import (
    _as_maps,  # noqa: F401
    caption,
    entropy_grid,
    heads_grid,
    heatmap,
    last_query_figure,
    mask_figure,
    matrix_figure,
    received_figure,
    recency_figure,
    rollout_figure,
    scaling_figure,
    similarity_matrix,
)

__all__ = [
    "AXIS_LABEL_CHARS", "CELL_LAYER_CELLS", "CHROMIUM_ARGS", "OVERVIEW_SIDE", "PALETTES", "TITLE_TEXT_CHARS",
    "BrowserUnavailableError", "Exporter", "caption", "check_browser", "entropy_grid", "export", "heads_grid",
    "heatmap", "last_query_figure", "mask_figure", "matrix_figure", "received_figure", "recency_figure",
    "rollout_figure", "save_html", "scaling_figure", "similarity_matrix",
]
