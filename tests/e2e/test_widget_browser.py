"""AttentionView on the real MiniLM, in a real JupyterLab / Notebook 7, in headless Chromium."""

from __future__ import annotations

import pytest
from lab_server import APPS, jupyter_server, write_notebook

pytestmark = pytest.mark.e2e

XSS = "<img src=x onerror=alert(1)>"
SETUP = """
from attnwidget import AttentionView, AttentionMaps
from attnwidget.models import load_minilm
model, tok = load_minilm()
view = AttentionView(model, "The cat sat on the mat.", tokenizer=tok)
view
"""
# A view whose tokens carry markup: it must show as text and add no element.
XSS_CELL = f"""
import numpy as np
w = np.full((1, 1, 3, 3), 1 / 3, dtype=np.float32)
hostile = AttentionView(AttentionMaps(w, ["a", {XSS!r}, "c"], text={XSS!r}))
hostile
"""

PIXELS = """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const colours = new Set(); let painted = 0;
  for (let i = 0; i < d.length; i += 4) { if (d[i + 3]) painted++;
    colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]); }
  return { painted, colours: colours.size }; }"""


@pytest.mark.parametrize("app", list(APPS))
def test_view_draws_and_follows_sliders(app, page, artifacts):
    if app == "notebook7":
        pytest.importorskip("notebook", minversion="7", reason="notebook>=7 not installed")
    from playwright.sync_api import expect

    with jupyter_server(app, artifacts) as (url, token, root):
        write_notebook(root / "demo.ipynb", [SETUP, XSS_CELL])
        external: list[str] = []
        page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:"))
                else external.append(r.url))
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        try:
            page.goto(f"{url}{APPS[app][1].format('demo.ipynb')}?token={token}")
            toolbar = page.locator(".jp-NotebookPanel-toolbar")
            expect(toolbar.get_by_role("button", name="Python 3 (ipykernel)")).to_be_visible(
                timeout=90_000)
            expect(toolbar.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
                "data-status", "idle", timeout=90_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            views = page.locator(".jp-OutputArea-output .attnwidget")
            expect(views).to_have_count(2, timeout=120_000)
            view = views.nth(0)
            canvas = view.locator("canvas.aw-heatmap")
            expect(canvas).to_be_visible()
            caption = view.locator(".aw-caption")
            expect(caption).to_contain_text("all-MiniLM-L6-v2 · layer 0 · head 0")
            page.wait_for_timeout(300)  # one animation frame for the paint
            stats = canvas.evaluate(PIXELS)
            assert stats["painted"] > 10_000, stats
            assert stats["colours"] >= 16, stats  # a real map, not a blank or flat fill

            before = canvas.evaluate("c => c.toDataURL()")
            view.locator("input.aw-slider-layer").fill("4")
            expect(caption).to_contain_text("layer 4 · head 0")
            expect(view.locator(".aw-layer .aw-value")).to_have_text("4 / 5")
            view.locator("input.aw-slider-head").focus()
            page.keyboard.press("ArrowRight")  # keyboard works inside the notebook
            expect(caption).to_contain_text("layer 4 · head 1")
            page.wait_for_timeout(300)
            assert canvas.evaluate("c => c.toDataURL()") != before  # repainted

            hostile = views.nth(1)
            expect(hostile.locator(".aw-caption")).to_contain_text(XSS)
            assert page.locator("img[src='x']").count() == 0
            page.screenshot(path=str(artifacts / f"widget-{app}.png"), full_page=True)
            assert dialogs == [], f"script ran from token text: {dialogs}"
            assert external == [], f"the page tried to reach the network: {external}"
        except Exception:
            page.screenshot(path=str(artifacts / f"failure-{app}.png"), full_page=True)
            raise
