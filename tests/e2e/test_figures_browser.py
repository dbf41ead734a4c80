"""A long map's figure in headless Chromium: drawn as one pooled image whose hover still names
the query and key under the cursor (as text) and the pooled weight, marked as a block maximum."""

from __future__ import annotations

import re

import numpy as np
import pytest
from lab_server import watch_page
from test_untrusted_pages import DEEP_COUNT, DEEP_TEXT, FRAME
from test_widget_browser import XSS

pytestmark = pytest.mark.e2e


def test_pooled_figure_hover_names_tokens_and_the_block_maximum(page, tmp_path):
    from attnwidget import AttentionMaps, plots
    from attnwidget._codec import LEVELS

    n = 1100  # pooled 3 x 3 into 367 x 367
    rng = np.random.default_rng(0)
    w = rng.random((1, 1, n, n), dtype=np.float32) * 0.01
    w[..., np.arange(n), np.arange(n)] += 1.0
    w /= w.sum(-1, keepdims=True)
    tokens = [f"w{i}" for i in range(n)]
    tokens[600] = XSS
    maps = AttentionMaps(w, tokens, model_name="toy", text="long")
    path = plots.save_html(plots.heatmap(maps, adaptive=True), tmp_path / "long.html")
    assert path.stat().st_size < 3_000_000  # 1.2 M cells: the image and the token list, once
    dialogs = watch_page(page).dialogs
    page.goto(path.as_uri())
    page.wait_for_function("() => window.Bokeh && [...Bokeh.index.all_views()].some((v) => v.frame)")
    frame = page.evaluate(FRAME)
    vmax = float(w.max())
    for q, k in ((600, 600), (100, 900), (1099, 3)):
        before = page.evaluate(DEEP_TEXT)
        page.mouse.move(frame["x"] + (k + 0.5) * frame["w"] / n, frame["y"] + (q + 0.5) * frame["h"] / n)
        page.wait_for_function("(t) => (" + DEEP_TEXT + ")() !== t", arg=before)
        text = page.evaluate(DEEP_TEXT)
        # the cursor lands within a token of (q, k): read which ones the tooltip names
        qm = re.search(r"query: ?\n?(.+) \((\d+)\)", text)
        km = re.search(r"key: ?\n?(.+) \((\d+)\)", text)
        assert qm, text[-300:]
        assert km, text[-300:]
        qi, ki = int(qm.group(2)), int(km.group(2))
        assert abs(qi - q) <= 1
        assert abs(ki - k) <= 1
        assert qm.group(1) == tokens[qi]  # the token, as text (the markup one included)
        assert km.group(1) == tokens[ki]
        weight = float(re.search(r"≈([0-9.e+-]+) \(max of a 3×3 block\)", text).group(1))
        block = w[0, 0, qi // 3 * 3: qi // 3 * 3 + 3, ki // 3 * 3: ki // 3 * 3 + 3].max()
        assert weight == pytest.approx(round(block / vmax * LEVELS) / LEVELS * vmax, abs=1e-4)
    assert page.evaluate(DEEP_COUNT, "img, iframe, object, embed") == 0
    assert dialogs == []
