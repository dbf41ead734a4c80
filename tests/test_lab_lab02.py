"""Handout 000 (Lab 02): its example, called exactly as written, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bokeh.models import ColumnDataSource

from attnwidget import metrics
from attnwidget.lab import lab02
from attnwidget.lab.lab02 import (
    compute_attention_entropy,
    compute_attention_sparsity,
    create_attention_heatmap,
    find_top_k_attended,
    plot_heatmap,
)

# the handout's "Example Usage", verbatim
weights = np.array([
    [0.7, 0.1, 0.1, 0.1],  # Query 0 focuses on position 0
    [0.1, 0.6, 0.2, 0.1],  # Query 1 focuses on position 1
    [0.1, 0.1, 0.7, 0.1],  # Query 2 focuses on position 2
    [0.2, 0.2, 0.2, 0.4],  # Query 3 is more diffuse
])

tokens = ["The", "cat", "sat", "down"]


def plain_entropy(rows):
    return [-sum(p * math.log(p) for p in row if p > 0) for row in rows]


def test_the_handouts_example_gives_the_handouts_answers():
    heatmap = create_attention_heatmap(weights, tokens, tokens)
    entropy = compute_attention_entropy(weights)
    top_attended = find_top_k_attended(weights, query_idx=2, k=2)

    np.testing.assert_array_equal(heatmap["weights"], weights)
    assert heatmap["query_labels"] == tokens
    assert heatmap["key_labels"] == tokens
    assert heatmap["shape"] == (4, 4)
    assert (heatmap["vmin"], heatmap["vmax"]) == (0.1, 0.7)

    # H = -sum p ln p by hand: row 0 is 0.7 ln(1/0.7) + 3 x 0.1 ln 10 = 0.94045
    assert entropy.shape == (4,)
    assert entropy[0] == pytest.approx(0.7 * math.log(1 / 0.7) + 0.3 * math.log(10), abs=1e-12)
    np.testing.assert_allclose(entropy, plain_entropy(weights.tolist()), rtol=1e-12)
    assert int(np.argmax(entropy)) == 3  # "Query 3 will have higher entropy"

    assert top_attended == [2, 0]  # "Returns indices [2, 0] or similar": 0.7, then the first 0.1


def test_sparsity_counts_weights_strictly_below_the_threshold():
    # no weight of the example is below 0.1 (the 0.1s are equal to it, not below)
    assert compute_attention_sparsity(weights, threshold=0.1) == 0.0
    # below 0.15: the eight 0.1s of rows 0, 1, 2 out of 16 weights
    assert compute_attention_sparsity(weights, threshold=0.15) == 0.5
    assert compute_attention_sparsity(weights) == 0.0  # default threshold 0.1
    plain = sum(w < 0.25 for row in weights.tolist() for w in row) / 16
    assert compute_attention_sparsity(weights, threshold=0.25) == pytest.approx(plain)


def test_torch_tensors_give_the_same_answers_and_the_lab_names_are_the_core_functions():
    t = torch.tensor(weights, dtype=torch.float64)
    np.testing.assert_allclose(compute_attention_entropy(t), compute_attention_entropy(weights))
    assert find_top_k_attended(t, query_idx=2, k=2) == [2, 0]
    assert lab02.compute_attention_entropy is metrics.compute_attention_entropy  # one implementation


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"attention_weights: expected at least 2 dimensions"):
        compute_attention_entropy(np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"key_labels: expected 4 labels"):
        create_attention_heatmap(weights, tokens, tokens[:3])
    with pytest.raises(ValueError, match=r"query_idx: expected an int in -4\.\.3, got 4"):
        find_top_k_attended(weights, query_idx=4)
    with pytest.raises(ValueError, match=r"threshold: expected a number in \[0, 1\], got 2"):
        compute_attention_sparsity(weights, threshold=2)
    with pytest.raises(ValueError, match=r"attention_weights: rows must sum to 1"):
        compute_attention_entropy(weights * 2)
    with pytest.raises(TypeError, match=r"heatmap_data: expected the dict create_attention_heatmap returns"):
        plot_heatmap({"weights": weights})
    # plot_heatmap takes no normalize: its error names what was passed and offers none
    labels = [str(i) for i in range(weights.shape[-1])]
    with pytest.raises(ValueError, match=r"heatmap_data\['weights'\]: rows must sum to 1") as err:
        plot_heatmap({"weights": weights * 2, "query_labels": labels, "key_labels": labels})
    assert "normalize" not in str(err.value)
    assert "divide each row by its sum" in str(err.value)


def test_plot_heatmap_draws_the_dict_and_saves_it(tmp_path):
    heatmap_data = create_attention_heatmap(weights, tokens, tokens)
    fig = plot_heatmap(heatmap_data, save_path=tmp_path / "heatmap.html")
    assert fig.title.text == "Attention Heatmap"
    assert (fig.xaxis[0].axis_label, fig.yaxis[0].axis_label) == ("Keys", "Queries")
    data = next(r.data_source for r in fig.renderers if isinstance(r.data_source, ColumnDataSource)).data
    np.testing.assert_allclose(np.asarray(data["weight"]).reshape(4, 4), weights)
    assert list(data["key"][:4]) == tokens
    from attnwidget._codec import LEVELS, colormap_hexes

    # the image's own mapper (select() also finds the colour bar's, in no fixed order)
    levels = next(r.glyph.color_mapper for r in fig.renderers if type(r.glyph).__name__ == "Image").palette
    blues = colormap_hexes("blues")  # the handout plots with cmap="Blues": light at 0, dark at 1
    assert (levels[0], levels[LEVELS]) == (blues[0] + "ff", blues[-1] + "ff")  # RGBA, opaque
    assert (levels[0][:7], levels[LEVELS][:7]) == ("#f7fbff", "#08306b")  # matplotlib's Blues ends
    html = (tmp_path / "heatmap.html").read_text(encoding="utf-8")
    assert "Attention Heatmap" in html
    assert "cdn.bokeh.org" not in html  # offline: bokeh's JavaScript is inlined


def test_a_handouts_functions_also_import_from_attnwidget_lab():
    import attnwidget.lab as lab
    from attnwidget.lab import create_attention_heatmap as flat
    from attnwidget.lab import extract_and_visualize_attention, lab02, long_context

    assert flat is lab02.create_attention_heatmap
    assert extract_and_visualize_attention is long_context.extract_and_visualize_attention
    # one name, two handouts, two meanings: the error names both modules
    with pytest.raises(ImportError, match=r"plot_attention_heatmap is a function of two handouts .*"
                                          r"attnwidget\.lab\.fundamentals and attnwidget\.lab\.surgeon"):
        from attnwidget.lab import plot_attention_heatmap  # noqa: F401
    with pytest.raises(AttributeError, match=r"the handouts' functions are in attnwidget\.lab\.fundamentals"):
        lab.no_such_function  # noqa: B018
