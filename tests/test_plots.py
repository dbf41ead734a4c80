"""attnwidget.plots: figure contents equal the metrics, offline HTML, token text kept as data."""

from __future__ import annotations

import re

import numpy as np
import pytest
from bokeh.models import ColorBar, ColumnDataSource, HoverTool, LinearColorMapper, Whisker

from attnwidget import AttentionMaps, plots
from attnwidget import metrics as M  # noqa: N812
from attnwidget.scratch import scaling_experiment

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def maps():
    rng = np.random.default_rng(0)
    e = np.exp(rng.normal(size=(2, 3, 5, 5)) * 2)
    w = (e / e.sum(-1, keepdims=True)).astype(np.float32)
    return AttentionMaps(w, ["a", XSS, "c", "d", "e"], model_name="toy", text="a b c d e")


def sources(fig):
    found = [getattr(r, "data_source", None) for r in fig.renderers]
    return [s for s in found if isinstance(s, ColumnDataSource)]


def test_heatmap_shows_the_head_with_its_provenance(maps):
    fig = plots.heatmap(maps, 1, 2)
    assert fig.title.text == "toy · layer 1 · head 2 · no causal mask · “a b c d e”"
    data = sources(fig)[0].data
    np.testing.assert_allclose(np.asarray(data["weight"]).reshape(5, 5), maps.head(1, 2), rtol=1e-6)
    assert list(data["query"][:5]) == ["a"] * 5
    assert fig.yaxis[0].major_label_overrides[1] == XSS  # a label, drawn as text by bokeh
    bar = next(x for x in fig.right if isinstance(x, ColorBar))
    assert bar.title == "Attention weight"
    assert (bar.color_mapper.low, bar.color_mapper.high) == (0.0, 1.0)
    hover = next(t for t in fig.tools if isinstance(t, HoverTool))
    assert [name for name, _ in hover.tooltips] == ["query", "key", "weight"]
    adaptive = plots.heatmap(maps, 1, 2, adaptive=True)
    mapper = next(x for x in adaptive.right if isinstance(x, ColorBar)).color_mapper
    assert mapper.high == pytest.approx(float(maps.head(1, 2).max()))
    labelled = plots.heatmap(maps, annotate=True)
    assert f"{maps.head(0, 0)[0, 0]:.2f}" in sources(labelled)[0].data["text"]


def test_heads_grid_titles_every_head_and_labels_the_average(maps):
    grid = plots.heads_grid(maps, 1)
    figs = [child[0] for child in grid.children]
    titles = [f.title.text for f in figs]
    entropy = M.compute_attention_statistics(maps.layer(1))["mean_entropy"]
    grades = M.sharpness_grade(maps.layer(1))
    assert titles[:3] == [f"L1 H{h} · H={float(entropy[h]):.2f} · {grades[h]}" for h in range(3)]
    assert titles[3] == "L1 AVERAGE of 3 heads (not a head)"
    assert len(plots.heads_grid(maps, None, include_average=False).children) == 6


def test_summary_figures_equal_the_metrics(maps):
    ent = np.asarray(sources(plots.entropy_grid(maps))[0].data["weight"]).reshape(2, 3)
    np.testing.assert_allclose(ent, M.compute_attention_statistics(maps)["mean_entropy"], rtol=1e-6)
    js = np.asarray(sources(plots.similarity_matrix(maps, 1))[0].data["weight"]).reshape(3, 3)
    np.testing.assert_allclose(js, M.js_distance_matrix(maps.layer(1)), rtol=1e-6)
    roll = np.asarray(sources(plots.rollout_figure(maps))[0].data["weight"]).reshape(5, 5)
    np.testing.assert_allclose(roll, M.attention_rollout(maps)[-1], rtol=1e-6)
    line = sources(plots.last_query_figure(maps, 1, 0))[0].data
    np.testing.assert_allclose(line["y"], maps.head(1, 0)[-1], rtol=1e-6)
    bars = sources(plots.received_figure(maps, 0, 1))[0].data
    np.testing.assert_allclose(bars["top"], maps.head(0, 1).mean(0), rtol=1e-6)
    w = maps.to_numpy()
    rec = plots.recency_figure([w, w[:, :, :4, :4] / w[:, :, :4, :4].sum(-1, keepdims=True)], causal=False)
    whisker = next(x for x in rec.center if isinstance(x, Whisker))
    hist = M.history_metrics([w, w[:, :, :4, :4] / w[:, :, :4, :4].sum(-1, keepdims=True)], causal=False)
    np.testing.assert_allclose(whisker.source.data["mean"], np.asarray(hist["recency_ratio"]["mean"])[0])


def test_teaching_figures():
    res = scaling_experiment(d_k=(16, 256))
    panels = plots.scaling_figure(res).children
    assert [p.title.text for p in panels] == [
        "largest weight (1 = saturated)", "gradient size at the scores", "entropy (nats)"]
    lines = [r.data_source.data for r in panels[0].renderers if type(r.glyph).__name__ == "Line"]
    assert list(lines[0]["y"]) == [v for v, s in zip(res["max_weight"], res["scaled"], strict=True) if not s]
    causal, reverse = plots.mask_figure(4).children
    np.testing.assert_array_equal(np.asarray(sources(causal)[0].data["weight"]).reshape(4, 4), np.tri(4))
    np.testing.assert_array_equal(np.asarray(sources(reverse)[0].data["weight"]).reshape(4, 4), np.tri(4).T)


def test_html_is_offline_and_keeps_tokens_as_data(maps, tmp_path):
    path = plots.save_html(plots.heads_grid(maps, 0), tmp_path / "sub" / "grid.html", "grid")
    html = path.read_text()
    assert not re.search(r"<script[^>]+src=", html)  # bokeh is inlined
    assert not re.search(r"<link[^>]+href=[\"']https?:", html)
    assert "cdn.bokeh.org" not in html
    assert "Bokeh" in html
    assert len(html) > 500_000
    assert XSS not in html  # the token only appears escaped inside the JSON document


def test_bad_arguments(maps):
    with pytest.raises(ValueError, match=r"palette: expected one of \('viridis'"):
        plots.heatmap(maps, palette="jet")
    with pytest.raises(ValueError, match="method: expected 'js' or 'kl', got 'cos'"):
        plots.similarity_matrix(maps, method="cos")
    big = AttentionMaps.from_tensor(np.full((1, 1, 30, 30), 1 / 30, np.float32))
    with pytest.raises(ValueError, match=r"annotate: value labels need a small map \(at most 400 cells\)"):
        plots.heatmap(big, annotate=True)
    assert isinstance(next(x for x in plots.heatmap(big).right if isinstance(x, ColorBar)).color_mapper,
                      LinearColorMapper)


@pytest.mark.slow
def test_png_and_svg_export_with_debian_chromium(maps, tmp_path):
    import xml.etree.ElementTree as ET

    from PIL import Image

    if plots._find("CHROMEDRIVER_PATH", ("chromedriver",)) is None:
        pytest.skip("chromedriver is not installed (scripts/install-browser.sh installs it)")
    png = plots.export(plots.heatmap(maps, 1, 0, size=300), tmp_path / "head.png", scale=2)
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape[0] >= 2 * 300  # publication resolution: scale x the figure's size
    assert image.shape[1] >= 2 * 390
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20  # a real picture, not blank
    svg = plots.export(plots.heads_grid(maps, 0, size=150), tmp_path / "grid.svg")
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    texts = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    assert "L0 H1" in texts  # titles are there as SVG text
    single = plots.export(plots.heatmap(maps, 0, 0, size=200), tmp_path / "head.svg")
    labels = [t.text for t in ET.parse(single).getroot().iter() if t.tag.endswith("text")]
    assert "toy · layer 0 · head 0 · no causal mask · “a b c d e”" in labels  # the title
    assert {"a", "c", "Attention weight"} <= set(labels)  # tick labels and the colour bar title
    with pytest.raises(ValueError, match=r"path: expected a \.html, \.png or \.svg file name, got 'x\.pdf'"):
        plots.export(plots.heatmap(maps), tmp_path / "x.pdf")


@pytest.mark.slow
def test_view_export_saves_what_is_shown(tmp_path):
    from attnwidget import AttentionView

    rng = np.random.default_rng(3)
    e = np.exp(rng.normal(size=(2, 2, 4, 4)))
    w = (e / e.sum(-1, keepdims=True)).astype(np.float32)
    view = AttentionView.from_tensor(w, list("wxyz"), model_name="toy", layer=1, head=1,
                                     threshold=0.3, colormap="magma", mode="average")
    html = view.export(tmp_path / "view.html").read_text()
    assert "mean of 2 heads (AVERAGE, not a head)" in html
    assert "cdn.bokeh.org" not in html
    fig = plots.matrix_figure(w[1].mean(0), list("wxyz"), list("wxyz"), "t", threshold=0.3)
    data = next(r.data_source.data for r in fig.renderers)
    np.testing.assert_array_equal(data["alpha"], np.where(w[1].mean(0).ravel() < 0.3, 0.2, 1.0))
    if plots._find("CHROMEDRIVER_PATH", ("chromedriver",)) is not None:
        from PIL import Image

        png = view.export(tmp_path / "view.png", scale=1)
        assert Image.open(png).size[0] > 500
