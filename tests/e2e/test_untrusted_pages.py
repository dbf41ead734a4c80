"""Hostile token text in the exported figure and the HTML report, opened in headless Chromium.

The figure's hover tooltips and axis labels, and the report's text, must show every
token as text: no element is created from it, no script runs, and bidirectional and
zero-width characters appear by name instead of reordering or hiding text.
"""

from __future__ import annotations

import numpy as np
import pytest
from lab_server import watch_page
from test_widget_browser import HOSTILE_TOKENS, XSS

pytestmark = pytest.mark.e2e

# All text in the page, shadow roots included (bokeh draws its tooltips inside them).
DEEP_TEXT = """() => { const out = [];
  const walk = (n) => { if (n.shadowRoot) walk(n.shadowRoot);
    for (const c of n.childNodes) { if (c.nodeType === 3) out.push(c.textContent); else walk(c); } };
  walk(document.body); return out.join("\\n"); }"""
# Elements of these tags anywhere, shadow roots included.
DEEP_COUNT = """(sel) => { let n = 0;
  const walk = (root) => { n += root.querySelectorAll(sel).length;
    for (const e of root.querySelectorAll("*")) if (e.shadowRoot) walk(e.shadowRoot); };
  walk(document); return n; }"""
# The plot frame of the first bokeh figure, in page pixels.
FRAME = """() => { const v = [...Bokeh.index.all_views()].find((v) => v.frame);
  const b = v.frame.bbox; const c = v.el.getBoundingClientRect();
  return { x: c.left + b.left, y: c.top + b.top, w: b.width, h: b.height }; }"""


def _watch(page):
    seen = watch_page(page, allowed=("file:", "data:", "blob:"))
    return seen.dialogs, seen.external


def _assert_inert(page, dialogs, requests):
    assert page.evaluate(DEEP_COUNT, "img, iframe, object, embed") == 0
    assert page.evaluate("() => window.__pwned") is None
    assert dialogs == [], f"script ran from token text: {dialogs}"
    assert requests == [], f"the page tried to reach the network: {requests}"


def test_figure_tooltips_and_labels_show_hostile_tokens_as_text(page, tmp_path):
    from attnwidget import AttentionMaps, plots

    n = len(HOSTILE_TOKENS)
    maps = AttentionMaps(np.full((1, 1, n, n), 1 / n, dtype=np.float32), HOSTILE_TOKENS,
                         text=" ".join(HOSTILE_TOKENS), model_name=XSS)
    path = plots.save_html(plots.heatmap(maps, 0, 0), tmp_path / "figure.html")
    dialogs, requests = _watch(page)
    page.goto(path.as_uri())
    page.wait_for_function("() => window.Bokeh && [...Bokeh.index.all_views()].some((v) => v.frame)")
    frame = page.evaluate(FRAME)
    seen = set()
    for q in range(n):  # hover one cell per query row, its key on the diagonal
        page.mouse.move(frame["x"] + (q + 0.5) * frame["w"] / n, frame["y"] + (q + 0.5) * frame["h"] / n)
        page.wait_for_timeout(100)
        seen.add(page.evaluate(DEEP_TEXT))
    text = "\n".join(seen)
    for token in maps.key_display:  # each hovered token appears whole, as text
        assert token in text, token[:40]
    assert "abc⟨RLO⟩def" in text
    assert "⟨ZWSP⟩" in text
    assert "line1⏎line2" in text
    assert "\u202e" not in text
    assert "\u200b" not in text
    _assert_inert(page, dialogs, requests)


@pytest.mark.slow
def test_report_shows_hostile_text_as_text(page, tmp_path):
    pytest.importorskip("transformers")
    from attnwidget import report
    from attnwidget.tokens import show_invisible

    text = (f"The cat {XSS} sat <script>window.__pwned = 1</script> on \u202edef the\u200bmat\nend "
            + "x" * 300)
    index = report.build(text, "minilm", tmp_path, png=False, progress=False)
    dialogs, requests = _watch(page)
    page.goto(index.as_uri())
    page.wait_for_function("() => window.Bokeh && [...Bokeh.index.all_views()].length > 0")
    shown = page.locator("p.text bdi").text_content()
    assert shown == show_invisible(text)
    assert "⟨RLO⟩def" in shown
    assert "the⟨ZWSP⟩mat⏎end" in shown
    assert page.locator("p.text").bounding_box()["width"] <= page.viewport_size["width"]
    _assert_inert(page, dialogs, requests)

