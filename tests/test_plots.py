"""attnwidget.plots: figure contents equal the metrics (exactly, or on the pooled image where a map
is pooled), offline HTML, token text kept as data, one browser per export call, and one line
saying what to install when there is no browser."""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from bokeh.embed import json_item
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    CustomJSHover,
    HoverTool,
    LinearColorMapper,
    Title,
    Whisker,
)

from attnwidget import AttentionMaps, plots
from attnwidget import metrics as M  # noqa: N812
from attnwidget.maps import average_label
from attnwidget.scratch import scaling_experiment

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def maps():
    rng = np.random.default_rng(0)
    e = np.exp(rng.normal(size=(2, 3, 5, 5)) * 2)
    w = (e / e.sum(-1, keepdims=True)).astype(np.float32)
    return AttentionMaps(w, ["a", XSS, "c", "d", "e"], model_name="toy", text="a b c d e")


def long_maps(n, layers=1, heads=1, seed=0, causal=False):
    """``[layers, heads, n, n]`` with a sharp diagonal, a sharp column at key 7 and noise."""
    rng = np.random.default_rng(seed)
    w = rng.random((layers, heads, n, n), dtype=np.float32) * 0.01
    idx = np.arange(n)
    w[..., idx, idx] += 1.0
    w[..., :, 7] += 0.5
    if causal:
        w *= np.tril(np.ones((n, n), np.float32))
    w /= w.sum(-1, keepdims=True)
    return AttentionMaps(w, [f"w{i}" for i in range(n)], model_name="toy", text="long", causal=causal)


def sources(fig):
    found = [getattr(r, "data_source", None) for r in fig.renderers]
    return [s for s in found if isinstance(s, ColumnDataSource)]


def image_of(fig):
    """The image renderer of a matrix figure: (its data, its glyph)."""
    r = next(r for r in fig.renderers if type(r.glyph).__name__ == "Image")
    return r.data_source.data, r.glyph


def notes(fig):
    """A figure's second title lines (the pooling note)."""
    return [t.text for t in fig.above if isinstance(t, Title) and t is not fig.title]


def levels_expected(w, vmax, low=0.0):
    """Independent uint8 quantisation: round((w - low) / (vmax - low) * 254), clipped."""
    out = np.empty(w.shape, np.uint8)
    for idx in np.ndindex(w.shape):
        ratio = min(1.0, max(0.0, (float(w[idx]) - low) / (vmax - low)))
        out[idx] = int(np.rint(ratio * 254))
    return out


def block_max(w, f):
    """Max over f x f blocks (edge blocks partial), by padding with -inf and reshaping."""
    Q, K = w.shape
    rows, cols = math.ceil(Q / f), math.ceil(K / f)
    pad = np.full((rows * f, cols * f), -np.inf, np.float32)
    pad[:Q, :K] = w
    return pad.reshape(rows, f, cols, f).max(axis=(1, 3))


def test_heatmap_shows_the_head_with_its_provenance(maps):
    fig = plots.heatmap(maps, 1, 2)
    assert fig.title.text == "toy · layer 1 · head 2 · no causal mask · “a b c d e”"
    cells = sources(fig)[0].data  # small maps: one row per cell, under the picture
    np.testing.assert_allclose(np.asarray(cells["weight"]).reshape(5, 5), maps.head(1, 2), rtol=1e-6)
    assert list(cells["query"][:5]) == ["a"] * 5
    assert list(cells["key"][:5]) == ["a", XSS, "c", "d", "e"]  # data, drawn as text
    image, glyph = image_of(fig)
    np.testing.assert_array_equal(image["image"][0], levels_expected(maps.head(1, 2), 1.0))
    np.testing.assert_array_equal(image["weight"][0], maps.head(1, 2))  # exact: not pooled
    assert image["pool"] == [1]
    assert (glyph.x, glyph.y, glyph.dw, glyph.dh) == (-0.5, -0.5, 5, 5)
    assert fig.yaxis[0].major_label_overrides[1] == XSS  # a label, drawn as text by bokeh
    bar = next(x for x in fig.right if isinstance(x, ColorBar))
    assert bar.title == "Attention weight"
    assert (bar.color_mapper.low, bar.color_mapper.high) == (0.0, 1.0)
    hover = next(t for t in fig.tools if isinstance(t, HoverTool))
    assert [name for name, _ in hover.tooltips] == ["query", "key", "weight"]
    adaptive = plots.heatmap(maps, 1, 2, adaptive=True)
    top = float(maps.head(1, 2).max())
    mapper = next(x for x in adaptive.right if isinstance(x, ColorBar)).color_mapper
    assert mapper.high == pytest.approx(top)
    np.testing.assert_array_equal(image_of(adaptive)[0]["image"][0], levels_expected(maps.head(1, 2), top))
    labelled = plots.heatmap(maps, annotate=True)
    assert f"{maps.head(0, 0)[0, 0]:.2f}" in sources(labelled)[0].data["text"]


def test_threshold_dims_through_the_colour_table_as_the_widget_does(maps):
    from bokeh.palettes import Magma256

    w = maps.head(0, 1)
    fig = plots.matrix_figure(w, list("abcde"), list("abcde"), "t", palette="magma", threshold=0.3)
    image, glyph = image_of(fig)
    table = glyph.color_mapper.palette
    assert (glyph.color_mapper.low, glyph.color_mapper.high, len(table)) == (0, 256, 256)
    below = 0.3 * 254  # levels strictly below the threshold's level are dimmed (heatmap.ts)
    for level in (0, 50, 76, 77, 200, 254):
        hex_ = Magma256[math.floor(level * 255 / 254 + 0.5)]
        rgb = np.array([int(hex_[i:i + 2], 16) for i in (1, 3, 5)], float)
        if level < below:
            rgb = rgb * 0.18 + 255 * 0.82
        assert table[level] == "#" + "".join(f"{int(np.rint(c)):02x}" for c in rgb) + "ff", level
    assert table[255].endswith("00")  # masked: transparent, the hatch shows through
    np.testing.assert_array_equal(image["image"][0], levels_expected(w, 1.0))


def test_long_maps_are_pooled_images_whose_size_does_not_grow_with_the_length():
    sizes = {}
    for n in (1100, 4096):
        big = long_maps(n)
        fig = plots.heatmap(big, adaptive=True)
        f = math.ceil(n / 512)
        image, glyph = image_of(fig)
        vmax = float(big.head(0, 0).max())
        np.testing.assert_array_equal(image["image"][0], levels_expected(block_max(big.head(0, 0), f), vmax))
        assert "weight" not in image  # pooled: the exact weights stay in Python
        assert image["pool"] == [f]
        assert (glyph.dw, glyph.dh) == (math.ceil(n / f) * f,) * 2  # position k drawn at x = k
        rows = math.ceil(n / f)
        assert fig.title.text == "toy · layer 0 · head 0 · no causal mask · “long”"
        assert notes(fig) == [f"max-pooled {f}×{f}: {n}×{n} → {rows}×{rows}"]
        assert len(sources(fig)) == 1  # no per-cell layer
        # the sharp column and the diagonal survive the pooling: they stand out of the noise
        levels = image["image"][0]
        assert np.median(levels) <= 2
        assert levels[:, 7 // f].min() >= 20
        assert np.diagonal(levels).min() >= 60
        hover = next(t for t in fig.tools if isinstance(t, HoverTool))
        assert dict(hover.tooltips)["weight"] == "@image{custom}"
        fmt = hover.formatters["@image"]
        assert isinstance(fmt, CustomJSHover)
        assert fmt.args["block"] == f" (max of a {f}×{f} block)"
        assert hover.formatters["$y"].args["labels"][n - 1] == f"w{n - 1}"  # tokens as data, once
        ticks = fig.yaxis[0].ticker.ticks
        assert (ticks[1] - ticks[0]) * (520 - 60) / n >= 11  # labels 11 px apart, as in the widget
        assert fig.yaxis[0].major_label_overrides[ticks[1]] == f"w{ticks[1]}"
        sizes[n] = len(json.dumps(json_item(fig)))
    assert sizes[4096] < 1.25 * sizes[1100]
    assert sizes[4096] < 700_000  # 512 x 512 bytes and 4096 labels, base64 in JSON


def test_causal_maps_hatch_what_is_masked():
    big = long_maps(700, causal=True)
    fig = plots.heatmap(big)
    image, _ = image_of(fig)
    levels = image["image"][0]  # f = 2: a block is masked when all its cells are
    assert levels[0, 1] == 255
    assert levels[1, 0] != 255
    assert levels[5, 5] != 255  # a diagonal block has visible cells
    quads = [r for r in fig.renderers if type(r.glyph).__name__ == "Quad"]
    assert len(quads) == 1
    assert quads[0].glyph.hatch_pattern == "/"


def test_heads_grid_titles_every_head_and_labels_the_average(maps):
    grid = plots.heads_grid(maps, 1)
    figs = [child[0] for child in grid.children]
    titles = [f.title.text for f in figs]
    entropy = M.compute_attention_statistics(maps.layer(1))["mean_entropy"]
    grades = M.sharpness_grade(maps.layer(1))
    assert titles[:3] == [f"L1 H{h} · ent {float(entropy[h]):.2f} · {grades[h]}" for h in range(3)]
    assert titles[3].replace("\n", " ") == f"L1 {average_label(3)}"  # on two lines, all of it
    assert notes(figs[0]) == []  # not pooled
    assert len(plots.heads_grid(maps, None, include_average=False).children) == 6
    for h, fig in enumerate(figs[:3]):
        w = maps.head(1, h)
        np.testing.assert_array_equal(image_of(fig)[0]["image"][0], levels_expected(w, float(w.max())))


def test_grid_panels_are_pooled_to_what_they_are_drawn_at_and_share_their_models():
    big = long_maps(510, heads=3)
    grid = plots.heads_grid(big, 0, size=200)
    figs = [child[0] for child in grid.children]
    for h, fig in enumerate(figs[:3]):
        image, _ = image_of(fig)
        w = big.head(0, h)
        np.testing.assert_array_equal(image["image"][0], levels_expected(block_max(w, 3), float(w.max())))
        assert notes(fig) == ["max-pooled 3×3: 510×510 → 170×170"]
    mean = big.layer(0).mean(0)
    np.testing.assert_array_equal(image_of(figs[3])[0]["image"][0],
                                  levels_expected(block_max(mean, 3), float(mean.max())))
    # one copy of the token labels and of the colour table for the whole grid
    formatters = {id(next(t for t in f.tools if isinstance(t, HoverTool)).formatters["$x"]) for f in figs}
    mappers = {id(image_of(f)[1].color_mapper) for f in figs}
    assert len(formatters) == len(mappers) == 1
    assert plots.heads_grid(big, 0, size=200, max_side=600).children[0][0].title.text.startswith("L0 H0")


def test_summary_figures_equal_the_metrics(maps):
    ent = np.asarray(sources(plots.entropy_grid(maps))[0].data["weight"]).reshape(2, 3)
    np.testing.assert_allclose(ent, M.compute_attention_statistics(maps)["mean_entropy"], rtol=1e-6)
    js = np.asarray(sources(plots.similarity_matrix(maps, 1))[0].data["weight"]).reshape(3, 3)
    np.testing.assert_allclose(js, M.js_distance_matrix(maps.layer(1)), rtol=1e-6)
    roll = np.asarray(sources(plots.rollout_figure(maps))[0].data["weight"]).reshape(5, 5)
    np.testing.assert_allclose(roll, M.attention_rollout(maps)[-1], rtol=1e-6)
    # the last query's context: the keys before it, renormalised (004's reading), own key in the title
    last_query = plots.last_query_figure(maps, 1, 0)
    row = maps.head(1, 0)[-1].astype(np.float64)
    (line,) = [d.data for d in sources(last_query) if len(d.data.get("y", [])) == 4]  # the share, 4 keys
    np.testing.assert_allclose(line["y"], row[:-1] / row[:-1].sum(), rtol=1e-6)
    assert f"own key {row[-1]:.2f}, not drawn" in last_query.title.text
    share = row[:-1] / row[:-1].sum()  # 4 context keys: one distant (position 0), one recent (3)
    assert f"recent / distant {share[3] / share[0]:.2f}" in last_query.title.text
    bars = sources(plots.received_figure(maps, 0, 1))[0].data
    np.testing.assert_allclose(bars["top"], maps.head(0, 1).mean(0), rtol=1e-6)
    w = maps.to_numpy()
    rec = plots.recency_figure([w, w[:, :, :4, :4] / w[:, :, :4, :4].sum(-1, keepdims=True)], causal=False)
    whisker = next(x for x in rec.center if isinstance(x, Whisker))
    # 004's ratio: of the last query's context (keys before it, renormalised), as the study's
    from attnwidget.study import context_history, context_of

    short_w = w[:, :, :4, :4] / w[:, :, :4, :4].sum(-1, keepdims=True)
    hist = context_history([context_of(x) for x in (w, short_w)])
    np.testing.assert_allclose(whisker.source.data["mean"], np.asarray(hist["recency_ratio"]["mean"])[0])
    ctx = w[0, 0, -1, :-1] / w[0, 0, -1, :-1].sum()  # 4 context keys: recent = key 3, distant = key 0
    ctx_short = short_w[0, 0, -1, :-1] / short_w[0, 0, -1, :-1].sum()  # 3 keys: 2 over 0
    expected = (ctx[3] / ctx[0] + ctx_short[2] / ctx_short[0]) / 2
    assert whisker.source.data["mean"][0] == pytest.approx(expected, rel=1e-5)
    big = long_maps(600, layers=2)  # rollout of a long input: the pooled image of the metric
    roll = M.attention_rollout(big)[-1]
    image, _ = image_of(plots.rollout_figure(big))
    np.testing.assert_array_equal(image["image"][0], levels_expected(block_max(roll, 2), float(roll.max())))


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
    np.testing.assert_array_equal(image_of(causal)[0]["image"][0], np.tri(4) * 254)


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
    with pytest.raises(ValueError, match=r"weights: expected a 2-D \[queries, keys\] matrix, got shape \("):
        plots.matrix_figure(np.ones((2, 2, 2)), ["a", "b"], ["a", "b"], "t")
    with pytest.raises(ValueError, match=r"labels: expected 2 query and 2 key labels for a 2 x 2 map, got 1"):
        plots.matrix_figure(np.ones((2, 2)), ["a"], ["a", "b"], "t")
    with pytest.raises(ValueError, match=r"path: expected a \.html, \.png or \.svg file name, got 'x\.pdf'"):
        plots.export(plots.heatmap(maps), "x.pdf")
    with pytest.raises(ValueError, match=r"scale: expected a number in \(0, 8\], got 0"):
        plots.Exporter(scale=0)


def test_no_browser_one_line_saying_what_to_install(maps, tmp_path, monkeypatch):
    fig = plots.heatmap(maps)
    monkeypatch.setenv("CHROMEDRIVER_PATH", str(tmp_path / "no-such-chromedriver"))
    with pytest.raises(plots.BrowserUnavailableError) as info:
        plots.export(fig, tmp_path / "a.png")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("PNG/SVG export needs chromedriver, not found (")
    assert "apt-get install chromium chromium-driver" in message
    monkeypatch.setenv("CHROMIUM_PATH", str(tmp_path / "no-such-chromium"))
    with pytest.raises(plots.BrowserUnavailableError, match="needs chromium and chromedriver, not found"):
        plots.export(fig, tmp_path / "a.svg")
    monkeypatch.delenv("CHROMIUM_PATH")
    if plots._find("CHROMIUM_PATH", ("chromium",)) is not None:
        # a chromedriver that exits at once: one line, and the fresh profile made for it is gone
        broken = tmp_path / "broken-chromedriver"
        broken.write_text("#!/bin/sh\nexit 3\n")
        broken.chmod(0o755)
        monkeypatch.setenv("CHROMEDRIVER_PATH", str(broken))
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
        (tmp_path / "tmp").mkdir()
        with pytest.raises(plots.BrowserUnavailableError, match=r"could not start .* with .*broken"):
            plots.export(fig, tmp_path / "a.png")
        assert not any((tmp_path / "tmp").iterdir())
    monkeypatch.delenv("CHROMEDRIVER_PATH")
    monkeypatch.setitem(sys.modules, "selenium", None)  # as if selenium were not installed
    with pytest.raises(plots.BrowserUnavailableError,
                       match=r"needs selenium, which is not installed .*attnwidget\[export\]"):
        plots.export(fig, tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()
    assert plots.export(fig, tmp_path / "a.html").stat().st_size > 10_000  # HTML needs no browser


@pytest.mark.slow
def test_export_all_draws_each_figure_as_bokehs_export_png_does_without_toolbars(maps, tmp_path):
    """Ours puts every PNG of a call on one page; bokeh's export_png (an independent renderer of the
    same figure, one page per figure) is the reference, in the same browser. Two of the figures
    come serialized for another page already, toolbars on (as the report hands them over)."""
    from bokeh.io import export_png
    from bokeh.models import GridPlot, Plot
    from PIL import Image

    from attnwidget.plots.export import Components

    if plots._find("CHROMEDRIVER_PATH", ("chromedriver",)) is None:
        pytest.skip("chromedriver is not installed (scripts/install-browser.sh installs it)")
    figs = {"head": plots.heatmap(maps, 1, 0, size=220), "grid": plots.heads_grid(maps, 0, size=120),
            "wide": plots.heatmap(long_maps(700), size=1500), "entropy": plots.entropy_grid(maps)}

    def toolbars() -> list:
        return [m.toolbar_location for f in figs.values() for m in [f, *f.select({"type": Plot})]
                if isinstance(m, (Plot, GridPlot))]

    before = toolbars()
    assert "right" in before or "above" in before  # there are toolbars to leave out
    page = Components([figs["head"], figs["grid"]])  # the report's page: with its toolbars
    assert '"toolbar_location":"above"' in page.script()
    assert '"toolbar_location":"above"' not in page.script(printed=True)
    with plots.Exporter(scale=2) as exporter:
        paths = exporter.export_all([(f, tmp_path / f"{name}.png") for name, f in figs.items()]
                                    + [(figs["head"], tmp_path / "head.html"),
                                       (figs["grid"], tmp_path / "again" / "grid.png")], page)
        assert [p.name for p in paths[-2:]] == ["head.html", "grid.png"]
        assert (tmp_path / "again" / "grid.png").read_bytes() == (tmp_path / "grid.png").read_bytes()
        assert exporter.drivers_started == 1
        assert toolbars() == before  # put back
        for name, fig in figs.items():  # bokeh's export, the toolbars off by hand
            for m in [fig, *fig.select({"type": Plot})]:
                if isinstance(m, (Plot, GridPlot)):
                    m.toolbar_location = None
            export_png(fig, filename=str(tmp_path / f"bokeh-{name}.png"), webdriver=exporter.driver(),
                       scale_factor=2)
    for name in figs:
        ours = np.asarray(Image.open(tmp_path / f"{name}.png").convert("RGB")).astype(int)
        theirs = np.asarray(Image.open(tmp_path / f"bokeh-{name}.png").convert("RGB")).astype(int)
        assert ours.shape == theirs.shape, name  # the whole figure at 2x, nothing cut or added
        # the same page content drawn by the same browser; a few anti-aliased edge pixels may
        # differ (the figure sits at another place on the page), the picture may not
        same = (np.abs(ours - theirs).max(axis=-1) <= 8).mean()
        assert same > 0.995, (name, same)
    assert Image.open(tmp_path / "wide.png").size[0] >= 2 * 1500  # wider than the window


def test_components_draw_a_figure_listed_twice_once(maps):
    from attnwidget.plots.export import Components

    head = plots.heatmap(maps, 1, 0, size=220)
    both = Components([head, plots.entropy_grid(maps), head])
    assert len(both.figs) == len(both.divs) == 2  # a root is one div on the page
    assert both.figs[0] is head


@pytest.mark.slow
def test_png_and_svg_export_with_debian_chromium(maps, tmp_path):
    import xml.etree.ElementTree as ET

    from PIL import Image

    if plots._find("CHROMEDRIVER_PATH", ("chromedriver",)) is None:
        pytest.skip("chromedriver is not installed (scripts/install-browser.sh installs it)")
    with plots.Exporter(scale=2) as exporter:  # one browser for all of them
        png = exporter.export(plots.heatmap(maps, 1, 0, size=300), tmp_path / "head.png")
        svg = exporter.export(plots.heads_grid(maps, 0, size=150), tmp_path / "grid.svg")
        single = exporter.export(plots.heatmap(maps, 0, 0, size=200), tmp_path / "head.svg")
        big = exporter.export(plots.heatmap(long_maps(1100), size=300), tmp_path / "long.png")
        assert exporter.drivers_started == 1
        profile = Path(exporter.driver().profile_dir)
        assert profile.is_dir()  # Chromium's own, fresh: not the user's
    assert not profile.exists()  # quitting the browser removed it
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape[0] >= 2 * 300  # publication resolution: scale x the figure's size
    assert image.shape[1] >= 2 * 390
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20  # a real picture, not blank
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    texts = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    assert "L0 H1" in texts  # titles are there as SVG text
    labels = [t.text for t in ET.parse(single).getroot().iter() if t.tag.endswith("text")]
    # the title, broken at a separator to fit the 290-pixel figure (bokeh would cut it)
    assert {"toy · layer 0 · head 0", "no causal mask · “a b c d e”"} <= set(labels)
    assert {"a", "c", "Attention weight"} <= set(labels)  # tick labels and the colour bar title
    # the long map's diagonal shows: along it the picture is the colormap's top (yellow)
    pixels = np.asarray(Image.open(big).convert("RGB")).astype(int)
    yellowish = (pixels[..., 0] > 200) & (pixels[..., 1] > 200) & (pixels[..., 2] < 100)
    assert yellowish.sum() > 300


@pytest.mark.slow
def test_view_export_and_the_figures_title_a_map_alike(maps, tmp_path, monkeypatch):
    from attnwidget import AttentionView

    captured = []
    monkeypatch.setattr(plots, "export", lambda fig, path, **kw: captured.append(fig) or path)
    view = AttentionView(maps, layer=1, head=2)
    view.export(tmp_path / "head.png")
    assert captured[-1].title.text == plots.heatmap(maps, 1, 2).title.text == view.caption
    assert plots.last_query_figure(maps, 1, 2).title.text.endswith("\n" + view.caption)
    assert plots.received_figure(maps, 1, 2).title.text.endswith("\n" + view.caption)
    view.mode = "average"
    view.export(tmp_path / "average.png")
    # the same line, broken at its separators where the figure is narrower than it
    assert captured[-1].title.text.replace("\n", " · ") == plots.caption(maps, 1, None) == maps.provenance(1)
    assert average_label(3) in captured[-1].title.text


def test_view_export_saves_what_is_shown(tmp_path, monkeypatch):
    from attnwidget import AttentionView

    rng = np.random.default_rng(3)
    e = np.exp(rng.normal(size=(2, 2, 4, 4)))
    w = (e / e.sum(-1, keepdims=True)).astype(np.float32)
    view = AttentionView.from_tensor(w, list("wxyz"), model_name="toy", layer=1, head=1,
                                     threshold=0.3, colormap="magma", mode="average")
    html = view.export(tmp_path / "view.html").read_text()
    assert f"toy · layer 1 · {average_label(2)} · no causal mask" in html
    assert "cdn.bokeh.org" not in html
    captured = []
    monkeypatch.setattr(plots, "export", lambda fig, path, **kw: captured.append(fig) or path)
    for n, colormap in ((4, "magma"), (1500, "cividis")):
        if n > 4:
            big = long_maps(n, heads=2, causal=True)
            view = AttentionView(big, head=1, threshold=0.05, colormap=colormap)
        view.export(tmp_path / "v.png")
        fig = captured[-1]
        image, glyph = image_of(fig)
        sent = np.frombuffer(bytes(view.panel["buffer"]), np.uint8).reshape(view.panel["shape"])
        np.testing.assert_array_equal(image["image"][0], sent)  # the very levels the canvas draws
        assert image["pool"] == [view.panel["pool"]]
        bar = next(x for x in fig.right if isinstance(x, ColorBar)).color_mapper
        assert bar.high == pytest.approx(view.panel["vmax"])
        from attnwidget._codec import level_rgba

        dimmed = level_rgba(colormap, view.threshold / view.panel["vmax"] * 254)
        assert glyph.color_mapper.palette[10] == "#" + "".join(f"{c:02x}" for c in dimmed[10])
        assert fig.title.text == view.caption
        assert notes(fig) == ([] if n == 4 else ["max-pooled 3×3: 1500×1500 → 500×500"])
    if plots._find("CHROMEDRIVER_PATH", ("chromedriver",)) is not None:
        from PIL import Image

        monkeypatch.undo()
        png = view.export(tmp_path / "view.png", scale=1)
        assert Image.open(png).size[0] > 500


def test_distribution_boxes_start_at_zero_and_a_wide_ratio_goes_on_a_log_axis():
    from bokeh.models import LogScale

    from attnwidget.plots.study import distribution_figure

    values = np.array([[0.2, 0.5, 3.0], [0.3, 0.4, 2.0e7]])  # [samples, heads]
    ratio = distribution_figure(values, "recent_distant_ratio", 0)
    assert isinstance(ratio.y_scale, LogScale)
    entropy = distribution_figure(values[:, :2], "attention_entropy", 0)
    assert not isinstance(entropy.y_scale, LogScale)
    assert entropy.y_range.start == 0
    assert [str(f) for f in entropy.x_range.factors] == ["0", "1"]
    assert entropy.xaxis[0].axis_label == "head"
    assert "2 samples" in entropy.title.text


def test_a_square_root_scale_shows_what_sits_beside_a_sink():
    from bokeh.models import ColorBar

    from attnwidget._codec import quantize

    w = np.full((40, 40), 0.2 / 39, dtype=np.float32)  # every row: 0.8 on key 0, the rest spread
    w[:, 0] = 0.8
    labels = [f"t{i}" for i in range(40)]
    lin = plots.matrix_figure(w, labels, labels, "linear", adaptive=True)
    root = plots.matrix_figure(w, labels, labels, "sqrt", adaptive=True, sqrt=True, threshold=0.02)
    lin_levels, _ = image_of(lin)
    root_levels, _ = image_of(root)
    assert lin_levels["image"][0][0, 1] == 2  # 0.005 of 0.8 on a linear scale: nearly the bottom colour
    np.testing.assert_array_equal(root_levels["image"][0], quantize(np.sqrt(w), math.sqrt(0.8)))
    assert root_levels["image"][0][0, 1] == 20  # sqrt(0.005 / 0.8) of the way up: visible
    bar = next(x for x in root.right if isinstance(x, ColorBar))
    assert bar.title.endswith("(√ scale)")
    # ticks at round weights, each where the square-root scale puts it
    assert {bar.major_label_overrides[t] for t in bar.ticker.ticks} >= {"0", "0.5"}
    for t in bar.ticker.ticks:
        assert float(bar.major_label_overrides[t]) == pytest.approx(t * t)


def test_square_root_ticks_reach_near_the_top_of_the_bar():
    from attnwidget.plots._matrix import sqrt_ticks

    for high in (1e-7, 0.003, 0.05, 0.3, 0.8, 1.0, 100.0):
        for most in (4, 6):
            marks = sqrt_ticks(high, most)
            assert marks[0] == 0
            assert marks == sorted(set(marks))
            assert marks[-1] <= high
            assert len(marks) <= most + 1
            assert math.sqrt(marks[-1] / high) >= 0.6, (high, most, marks)  # the top labelled
            for v in marks[1:]:  # round weights: 1, 2 or 5 times a power of ten
                assert f"{v:.0e}"[0] in "125"
                assert float(f"{v:.0e}") == pytest.approx(v)


def test_value_labels_read_on_dimmed_and_masked_cells():
    w = np.array([[0.9, 0.05, 0.05], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype=np.float32)
    visible = np.ones((3, 3), dtype=bool)
    visible[1, 2] = False
    labels = list("abc")
    for sqrt in (False, True):
        fig = plots.matrix_figure(w, labels, labels, "t", annotate=True, threshold=0.2, visible=visible,
                                  sqrt=sqrt)
        ink = next(r.data_source for r in fig.renderers if "ink" in r.data_source.data).data["ink"]
        assert ink[1] == ink[2] == "#111111"  # 0.05: dimmed, near white -> dark text
        assert ink[5] == "#111111"  # masked: transparent over the light hatch -> dark text
        assert ink[0] == "#111111"  # 0.9: viridis yellow-green, light
    with pytest.raises(ValueError, match="annotate: value labels need the map at full resolution"):
        plots.matrix_figure(np.full((20, 20), 0.05, np.float32), [str(i) for i in range(20)],
                            [str(i) for i in range(20)], "t", annotate=True, max_side=10)


def test_history_figures_of_a_one_token_record_and_a_zero_ratio():
    from bokeh.models import LogScale

    from attnwidget.plots.study import distribution_figure

    one = AttentionMaps(np.ones((1, 1, 1, 1), dtype=np.float32), ["only"])
    assert "none (one token)" in plots.last_query_figure(one).title.text
    # a ratio of 0 (no weight on the recent quarter) beside ratios 1e4 apart: still a log axis
    fig = distribution_figure(np.array([[0.0, 2.0], [1e-4, 1.0]]), "recent_distant_ratio", 0)
    assert isinstance(fig.y_scale, LogScale)
