"""attnwidget.snapshot: the PNG a view puts beside the live widget in its display data.

Its pixels are checked against an independent computation: the weights quantised by hand,
looked up in bokeh's published palette (the widget's js/src/colormaps.ts tables), dimmed
below the threshold as js/src/heatmap.ts does, masked cells hatched.
"""

from __future__ import annotations

import base64
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
from bokeh import palettes
from PIL import Image

from attnwidget import AttentionMaps, AttentionView, snapshot
from attnwidget._codec import colormap_rgb

ROOT = Path(__file__).resolve().parents[1]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def causal_maps(n=12, layers=2, heads=3, seed=0):
    rng = np.random.default_rng(seed)
    e = np.exp(rng.normal(size=(layers, heads, n, n)) * 2) * np.tril(np.ones((n, n)))
    w = (e / e.sum(-1, keepdims=True)).astype(np.float32)
    return AttentionMaps(w, [f"tok{i}" for i in range(n)], model_name="toy", text="a causal toy", causal=True)


def expected_colour(weight, vmax, threshold, hexes, sqrt=False):
    """One visible cell's colour, computed from scratch (``sqrt``: on the square-root scale, the
    level from float32 square roots, as the panel's encoding takes them)."""
    if sqrt:
        root = np.float32(np.sqrt(np.float32(weight)) * np.float32(254 / math.sqrt(vmax)))
        level = int(np.rint(min(np.float32(254), root)))
    else:
        level = int(np.rint(min(1.0, max(0.0, weight / vmax)) * 254))
    h = hexes[math.floor(level * 255 / 254 + 0.5)]
    rgb = np.array([int(h[i:i + 2], 16) for i in (1, 3, 5)], float)
    if threshold > 0 and level < (math.sqrt(threshold / vmax) if sqrt else threshold / vmax) * 254:
        rgb = rgb * 0.18 + 255 * (1 - 0.18)  # heatmap.ts's arithmetic, to the last bit
    return tuple(int(c) for c in np.rint(rgb))


def picture(view_or_bytes):
    data = view_or_bytes if isinstance(view_or_bytes, bytes) else snapshot.view_png(view_or_bytes)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def test_colour_bar_ticks_are_written_as_the_widget_writes_them():
    # the cases of js/tests/heatmap.test.ts (formatTick)
    cases = {0: "0", 0.002: "0.002", 0.01: "0.01", 0.02: "0.02", 0.05: "0.05", 0.052341: "0.0523",
             0.8: "0.8", 1.0: "1", 4e-4: "4.0e-4"}
    assert {v: snapshot.format_tick(v) for v in cases} == cases


def test_colours_are_the_widgets_tables():
    source = (ROOT / "js" / "src" / "colormaps.ts").read_text()
    for name in ("viridis", "magma", "inferno", "cividis", "greys"):
        hexes = re.search(rf'{name}: "([0-9A-F]+)"', source).group(1)
        table = np.frombuffer(bytes.fromhex(hexes), np.uint8).reshape(256, 3)
        np.testing.assert_array_equal(colormap_rgb(name), table, err_msg=name)


@pytest.mark.parametrize(("colormap", "threshold", "scale"),
                         [("magma", 0.15, "auto"), ("viridis", 0.0, "fixed"), ("greys", 0.4, "auto"),
                          ("inferno", 0.05, "sqrt")])
def test_pixels_are_the_panel_through_the_palette_with_threshold_dimming(colormap, threshold, scale):
    maps = causal_maps()
    view = AttentionView(maps, layer=1, head=2, threshold=threshold, colormap=colormap, scale=scale)
    img = picture(view)
    w = maps.head(1, 2)
    vmax = 1.0 if scale == "fixed" else float(w.max())
    hexes = (list(palettes.Greys256)[::-1] if colormap == "greys"
             else getattr(palettes, colormap.capitalize() + "256"))
    n = 12
    cell = 512 / n
    hatch = {(255, 255, 255), (158, 158, 158)}
    for q in range(n):
        for k in range(n):
            top, left = snapshot.MARGIN_TOP + q * cell, snapshot.MARGIN_LEFT + k * cell
            # the cell's inside (a pixel off its edges): one colour, or the hatch where masked
            rows = slice(math.ceil(top) + 1, math.floor(top + cell) - 1)
            block = img[rows, math.ceil(left) + 1: math.floor(left + cell) - 1]
            colours = {tuple(c) for c in block.reshape(-1, 3)}
            if k > q:  # above the diagonal: masked by the causal mask
                assert colours == hatch, (q, k)
            else:
                assert colours == {expected_colour(w[q, k], vmax, threshold, hexes, scale == "sqrt")}, (q, k)


def test_a_long_map_is_the_pooled_panel_and_shows_its_pattern():
    n = 1300
    rng = np.random.default_rng(1)
    w = rng.random((1, 1, n, n), dtype=np.float32) * 0.01
    idx = np.arange(n)
    w[..., idx, idx] = 1.0
    w[..., :, 40] += 0.6
    w /= w.sum(-1, keepdims=True)
    view = AttentionView(AttentionMaps.from_tensor(w, model_name="toy"), threshold=0.0)
    assert view.panel["pool"] == 3
    img = picture(view)
    vmax = float(w.max())
    cell = 512 / n
    hexes = palettes.Viridis256
    for py, px in ((0, 0), (2, 2), (275, 275), (511, 511), (354, 16), (1, 354), (511, 5), (100, 7)):
        # nearest-neighbour: a pixel shows the token under its centre, i.e. that token's 3 x 3 block
        q, k = int((py + 0.5) / cell), int((px + 0.5) / cell)
        block = w[0, 0, q // 3 * 3: q // 3 * 3 + 3, k // 3 * 3: k // 3 * 3 + 3].max()  # the pooled value
        colour = img[snapshot.MARGIN_TOP + py, snapshot.MARGIN_LEFT + px]
        assert tuple(colour) == expected_colour(float(block), vmax, 0.0, hexes), (py, px)
    # the pattern shows: every pixel of the diagonal and of the key-40 column is far from the
    # colour of a weight of 0, and the rest of the map is that colour
    diag = np.array([img[snapshot.MARGIN_TOP + i, snapshot.MARGIN_LEFT + i] for i in range(512)])
    column = img[snapshot.MARGIN_TOP: snapshot.MARGIN_TOP + 512, snapshot.MARGIN_LEFT + int(40.5 * cell)]
    zero = np.array(expected_colour(0.0, vmax, 0.0, hexes))
    assert np.abs(diag - zero).sum(1).min() > 150
    assert np.abs(column - zero).sum(1).min() > 100
    off = img[snapshot.MARGIN_TOP + 300, snapshot.MARGIN_LEFT + 100: snapshot.MARGIN_LEFT + 250]
    assert np.abs(off - zero).sum(1).max() < 30


def test_the_display_data_carries_the_picture_beside_the_live_view():
    view = AttentionView(causal_maps(), threshold=0.2, colormap="magma")
    data, metadata = view._repr_mimebundle_()
    assert set(data) == {"text/plain", WIDGET_MIME, "image/png"}
    assert data[WIDGET_MIME]["model_id"] == view.model_id  # the live view is still what a kernel shows
    first = base64.b64decode(data["image/png"])
    assert first == snapshot.view_png(view)
    assert isinstance(metadata, dict)
    # taken at display time: the state then, not the state of the view's creation
    view.layer, view.head, view.threshold, view.colormap = 1, 0, 0.05, "cividis"
    again = base64.b64decode(view._repr_mimebundle_()[0]["image/png"])
    assert again != first
    assert again == snapshot.view_png(view)
    w = view.maps.head(1, 0)
    img = picture(again)
    y, x = snapshot.MARGIN_TOP + int(0.5 * 512 / 12), snapshot.MARGIN_LEFT + int(0.5 * 512 / 12)
    assert tuple(img[y, x]) == expected_colour(float(w[0, 0]), float(w.max()), 0.05, palettes.Cividis256)
    # a front end that asks for less gets less
    assert "image/png" not in view._repr_mimebundle_(exclude=["image/png"])[0]
    assert "image/png" not in view._repr_mimebundle_(include=["text/plain", WIDGET_MIME])[0]


def test_picture_has_tokens_caption_colour_bar_and_grid_mode():
    view = AttentionView(causal_maps(), threshold=0.2)
    img = picture(view)
    dark = (img.sum(-1) < 300)
    top, left = snapshot.MARGIN_TOP, snapshot.MARGIN_LEFT
    assert dark[top: top + 512, : left - 2].sum() > 200  # query tokens
    assert dark[: top - 2, left: left + 512].sum() > 200  # key tokens
    assert dark[snapshot.MARGIN_TOP + 512 + 8:].sum() > 200  # the caption under the map
    bar_x = snapshot.MARGIN_LEFT + snapshot.PLOT_PX + snapshot.BAR_GAP + snapshot.BAR_W // 2
    top, bottom = img[snapshot.MARGIN_TOP + 2, bar_x], img[snapshot.MARGIN_TOP + 511, bar_x]
    assert tuple(top) == tuple(colormap_rgb("viridis")[255])
    assert tuple(bottom) == tuple(colormap_rgb("viridis")[0])
    view.mode = "grid"
    grid = picture(view)
    assert grid.shape[1] == 512  # three thumbnails a row (ceil(sqrt(3)) = 2 columns of 256)
    thumbs = view.atlas
    t0 = np.frombuffer(bytes(thumbs["buffer"]), np.uint8).reshape(thumbs["shape"])[0]
    assert t0[0, 1] == 255  # masked in the atlas: hatched in the picture
    colour = colormap_rgb("viridis")[math.floor(int(t0[0, 0]) * 255 / 254 + 0.5)]
    assert tuple(grid[14 + 2 + 3, 2 + 3]) == tuple(int(c) for c in colour)


def test_hostile_tokens_are_pixels_and_bad_input_is_refused():
    n = 6
    tokens = ["<script>x</script>", "a\u202eb", "\u200b", "x" * 300, "line\nbreak", "مرحبا"]
    maps = AttentionMaps(np.full((1, 1, n, n), 1 / n, np.float32), tokens, text="\u202e" + "y" * 400)
    view = AttentionView(maps)
    img = picture(view)
    assert img.shape[1] == snapshot.MARGIN_LEFT + snapshot.PLOT_PX + snapshot.BAR_GAP + snapshot.BAR_W + 52
    assert snapshot.shorten("x" * 300) == "x" * 11 + "…"
    assert snapshot.shorten("line\nbreak") == "line break"
    with pytest.raises(ValueError, match=r"levels: expected a 2-D uint8 array, got float64 with shape \("):
        snapshot.render(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"threshold, vmax: expected threshold >= 0 and vmax > 0, got -1"):
        snapshot.render(np.zeros((2, 2), np.uint8), threshold=-1)
    with pytest.raises(ValueError, match=r"colormap: expected one of \('viridis'"):
        snapshot.render(np.zeros((2, 2), np.uint8), colormap="jet")


@pytest.mark.slow
def test_an_executed_notebook_keeps_the_picture_for_nbconvert(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import numpy as np\nfrom attnwidget import AttentionView\n"
        "w = np.tril(np.ones((1, 2, 8, 8), np.float32)); w /= w.sum(-1, keepdims=True)\n"
        "view = AttentionView.from_tensor(w, list('abcdefgh'), model_name='toy', head=1, colormap='magma')\n"
        "view")]
    where = {"metadata": {"path": str(tmp_path)}}
    # as JupyterLab saves a notebook by default: the outputs, not the widgets' state (with
    # that state, nbconvert would embed the live view instead, through a script from a CDN)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources=where,
                            store_widget_state=False).execute()
    (output,) = [o for o in nb.cells[0].outputs if o["output_type"] == "execute_result"]
    assert {"text/plain", WIDGET_MIME, "image/png"} <= set(output["data"])
    png = Image.open(io.BytesIO(base64.b64decode(output["data"]["image/png"])))
    assert png.size[0] == snapshot.MARGIN_LEFT + snapshot.PLOT_PX + snapshot.BAR_GAP + snapshot.BAR_W + 52
    body, _ = HTMLExporter().from_notebook_node(nb)  # what nbconvert (and nbviewer) make of it
    assert re.search(r'<img [^>]*src="data:image/png;base64,', body)
