"""Lab 02, "Attention Visualization" (handout ``000``): the visualisation toolkit, call for call.

The handout's ``src/visualization.py`` functions, under their names and with
their arguments::

    from attnwidget.lab.lab02 import (
        create_attention_heatmap, compute_attention_entropy, find_top_k_attended,
        compute_attention_sparsity, plot_heatmap,
    )
    heatmap = create_attention_heatmap(weights, tokens, tokens)   # dict for a plot
    entropy = compute_attention_entropy(weights)                  # [Q], nats
    find_top_k_attended(weights, query_idx=2, k=2)                # [2, 0]
    compute_attention_sparsity(weights, threshold=0.1)            # fraction in [0, 1]
    plot_heatmap(heatmap, save_path="heatmap.html")               # bokeh figure

The four measures *are* :mod:`attnwidget.metrics`' functions (the same
objects, not copies): numpy arrays and torch tensors alike, one matrix
``[Q, K]`` or a stack ``[..., Q, K]``, with keyword-only extras (``mask``,
``causal``, ``normalize``) the handout does not need. What each returns:

* ``create_attention_heatmap(attention_weights, query_labels, key_labels)``:
  dict with ``weights`` (numpy ``[Q, K]``), ``query_labels``, ``key_labels``
  (lists of str), ``shape``, ``vmin``/``vmax`` (the data's range) and
  ``range`` ``(0, 1)``;
* ``compute_attention_entropy(attention_weights)``: ``H = -sum p ln p`` per
  query row, in nats, numpy ``[Q]``; ``0 ln 0`` counts as 0 exactly;
* ``find_top_k_attended(attention_weights, query_idx, k=3)``: list of ``k``
  key indices, strongest first, ties to the lower position;
* ``compute_attention_sparsity(attention_weights, threshold=0.1)``: the
  fraction of weights strictly below ``threshold`` (a weight equal to it is
  not below), a float in [0, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attnwidget.lab._common import save
from attnwidget.metrics import (
    compute_attention_entropy,
    compute_attention_sparsity,
    create_attention_heatmap,
    find_top_k_attended,
)

__all__ = [
    "compute_attention_entropy",
    "compute_attention_sparsity",
    "create_attention_heatmap",
    "find_top_k_attended",
    "plot_heatmap",
]

_HEATMAP_KEYS = ("weights", "query_labels", "key_labels")


def plot_heatmap(heatmap_data: dict[str, Any], save_path: str | Path | None = None) -> Any:
    """The handout's optional ``plot_heatmap(heatmap_data)``: the dict drawn as a bokeh heat map.

    ``heatmap_data``: what :func:`create_attention_heatmap` returns (reads its
    ``weights`` ``[Q, K]``, ``query_labels`` and ``key_labels``). Queries run
    down, keys across, colours span 0..1 in the handout's Blues (light = 0), title
    "Attention Heatmap", hover shows the tokens and the weight. Where the
    handout calls ``plt.show()``, this returns the figure (show it with
    ``bokeh.io.show`` or as a cell's last value); ``save_path`` (``.html``,
    ``.png`` or ``.svg``) also writes it.
    """
    from attnwidget.metrics._input import prepare
    from attnwidget.plots import matrix_figure

    if not isinstance(heatmap_data, dict) or any(k not in heatmap_data for k in _HEATMAP_KEYS):
        got = sorted(heatmap_data) if isinstance(heatmap_data, dict) else type(heatmap_data).__name__
        raise TypeError(
            "heatmap_data: expected the dict create_attention_heatmap returns "
            f"(keys {_HEATMAP_KEYS}), got {got}"
        )
    # the dict's own checks (shape, rows, label counts) by building it again from its parts;
    # the weights first, so that an error names what the caller passed
    prepare(heatmap_data["weights"], "heatmap_data['weights']")
    data = create_attention_heatmap(heatmap_data["weights"], heatmap_data["query_labels"],
                                    heatmap_data["key_labels"])
    if data["weights"].ndim != 2:
        raise ValueError(f"heatmap_data: expected weights [Q, K], got shape {data['shape']}")
    fig = matrix_figure(data["weights"], data["query_labels"], data["key_labels"], "Attention Heatmap",
                        palette="blues")  # the handout's cmap='Blues
    fig.xaxis.axis_label = "Keys"
    fig.yaxis.axis_label = "Queries"
    return save(fig, save_path)
