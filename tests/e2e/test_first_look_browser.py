"""What a newcomer sees, and what a long session costs, in a real browser.

* The default view of a 512-token MiniLM text shows its pattern (a spread of
  colours, not one dimmed tone), and the threshold is marked on the colour bar
  even when it lies above every weight.
* Re-running a view's cell 20 times does not grow the kernel by the records of
  the views whose displays are gone.
* Outside JupyterLab (no ``--jp-*`` variables: VS Code, Colab, a plain page) the
  widget follows the page's ``prefers-color-scheme``, light and dark.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from lab_server import jupyter_server, kernel_pids, open_and_run_all, rss_mib, write_notebook

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PARAGRAPH = ("Attention lets every token look at every other token and decide how much of each to read. "
             "Some heads look at the previous word, some at the first token, some at repeated names.")
SETUP = f"""
from attnwidget import AttentionView
from attnwidget.models import load_minilm
model, tok = load_minilm()
words = {PARAGRAPH!r}.split()
text = " ".join(words[i % len(words)] for i in range(2000))
# 510 word pieces: with [CLS] and [SEP], the 512 positions the model takes
text = tok.decode(tok(text, truncation=True, max_length=512)["input_ids"][1:-1])
"""
VIEW = "view = AttentionView(model, text, tokenizer=tok)\nview"
FIRST_STATE = '["head",0,0,0.1,null,5,[]]'  # the view's state key at default settings
# The plot area of the map and the colour bar, in CSS pixels on the canvas (js/src/heatmap.ts).
PLOT = (96, 96, 512)  # left, top, side
BAR_X = 96 + 512 + 14


def canvas_png(locator) -> np.ndarray:
    """RGB pixels of an element as the page shows it."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(int)


def open_view(page, url: str, token: str, root: Path, name: str):
    """Run the notebook [SETUP, VIEW] in JupyterLab; the view, once its first state is painted."""
    from playwright.sync_api import expect

    write_notebook(root / name, [SETUP, VIEW])
    open_and_run_all(page, url, token, "lab", name)
    view = page.locator(".jp-OutputArea-output .attnwidget")
    expect(view).to_have_attribute("data-rendered", FIRST_STATE, timeout=180_000)
    return view


def test_first_look_at_512_tokens_shows_the_pattern_and_the_threshold(page, artifacts):
    from playwright.sync_api import expect

    with jupyter_server("lab", artifacts) as (url, token, root):
        view = open_view(page, url, token, root, "first.ipynb")
        canvas = view.locator("canvas.aw-heatmap")
        first = canvas_png(canvas)
        page.screenshot(path=str(artifacts / "first-look-512.png"), full_page=True)
        left, top, side = PLOT
        cells = first[top:top + side, left:left + side].reshape(-1, 3)
        # a pattern, not one tone: many colours, and no single colour covering most of the map
        colours, counts = np.unique(cells, axis=0, return_counts=True)
        assert len(colours) > 40, f"only {len(colours)} colours on the default map"
        assert counts.max() / counts.sum() < 0.6, "one colour covers most of the default map"
        # the threshold (0.1) is above every weight of this map: marked at the bar's top all the same
        bar = first[top - 40:top + 20, BAR_X - 6:BAR_X + 20]
        accent_css = view.evaluate("e => getComputedStyle(e).getPropertyValue('--aw-accent').trim()")
        accent = np.array([int(accent_css[i:i + 2], 16) for i in (1, 3, 5)])  # the theme's, e.g. #1976d2
        assert (np.abs(bar - accent).sum(axis=-1) < 60).sum() > 10, "no threshold mark on the colour bar"

        # a paint leaves an unchanged map as drawn (js/src/view.ts, changed); a canvas the browser
        # gives back blank (its 2D context lost and restored) is drawn again, the same pixels
        canvas.evaluate("""c => new Promise((resolve) => { c.width = c.width;
            c.dispatchEvent(new Event('contextrestored'));
            requestAnimationFrame(() => requestAnimationFrame(() => resolve(true))); })""")
        again = canvas_png(canvas)
        assert np.array_equal(again, first), "the restored canvas is not the map it showed"

        # the square-root scale: the weight beside the strongest keys reaches further up the
        # colormap, so no colour covers as much of the map; its colour bar says so
        view.evaluate("""el => { window.__awSqrt = new Promise((resolve) => {
            const h = (e) => { if (e.detail.name === 'panel') { el.removeEventListener('aw-received', h);
              requestAnimationFrame(() => requestAnimationFrame(() => resolve(true))); } };
            el.addEventListener('aw-received', h); }); }""")
        view.locator("select.aw-select-scale").select_option("sqrt")
        page.evaluate("() => window.__awSqrt")
        rooted = canvas_png(canvas)
        page.screenshot(path=str(artifacts / "first-look-512-sqrt.png"), full_page=True)
        _, root_counts = np.unique(rooted[top:top + side, left:left + side].reshape(-1, 3), axis=0,
                                   return_counts=True)
        assert root_counts.max() / root_counts.sum() < counts.max() / counts.sum()
        view.locator("select.aw-select-scale").select_option("auto")
        expect(view).to_have_attribute("data-rendered", FIRST_STATE)
        page.wait_for_timeout(300)

        # moving the threshold turns dimming on: then the same map is mostly one dimmed tone,
        # which is what the first look must not be
        slider = view.locator("input.aw-slider-threshold")
        slider.fill("0.1")
        expect(view).to_have_attribute("data-rendered", FIRST_STATE)
        page.wait_for_timeout(200)
        dimmed = canvas_png(canvas)[top:top + side, left:left + side].reshape(-1, 3)
        _, dim_counts = np.unique(dimmed, axis=0, return_counts=True)
        assert dim_counts.max() / dim_counts.sum() > counts.max() / counts.sum()
        assert "(not dimming)" not in view.locator(".aw-controls").inner_text()

        # a notebook narrower than the map (a side panel): the map is shown smaller, colour bar
        # and all, and a click still selects the row it is on
        size = page.viewport_size
        page.set_viewport_size({"width": 640, "height": size["height"]})
        page.wait_for_timeout(500)
        canvas.scroll_into_view_if_needed()
        out, box = view.locator("xpath=..").bounding_box(), canvas.bounding_box()
        drawn = canvas.evaluate("c => parseFloat(c.style.width)")
        assert box["width"] < 0.95 * drawn  # shown smaller
        assert box["x"] + box["width"] <= out["x"] + out["width"] + 1  # nothing cut at the right
        aspect = canvas.evaluate("c => c.height / c.width")
        assert box["height"] == pytest.approx(box["width"] * aspect, abs=2)  # its shape kept
        s = box["width"] / drawn
        cell = PLOT[2] / 512  # one row a drawn pixel at 512 tokens
        page.mouse.click(box["x"] + (PLOT[0] + 200.5 * cell) * s, box["y"] + (PLOT[1] + 300.5 * cell) * s)
        title = view.locator(".aw-query-title")
        expect(title).to_contain_text("query ")
        row = int(title.inner_text().split("query ")[1].split()[0].strip(":·,"))
        assert abs(row - 300) <= 1, row  # unscaled, the click would have selected row ~180
        page.set_viewport_size(size)


def test_rerunning_a_view_cell_does_not_keep_the_old_records(page, artifacts):
    from playwright.sync_api import expect

    with jupyter_server("lab", artifacts) as (url, token, root):
        view = open_view(page, url, token, root, "rerun.ipynb")
        (kernel,) = kernel_pids(root)
        record_mib = 6 * 12 * 512 * 512 * 4 / 2**20  # one view's record: 6 layers x 12 heads x 512^2
        cell = page.locator(".jp-Cell").nth(1)

        rss, runs = [], 20
        for run in range(runs):
            cell.click()
            page.keyboard.press("Control+Enter")
            # a new view of the same state replaces the old one (its display goes)
            expect(page.locator(".jp-OutputArea-output .attnwidget")).to_have_count(1)
            expect(view).to_have_attribute("data-rendered", FIRST_STATE, timeout=120_000)
            if run < 3 or run >= runs - 3:  # the readings compared below
                page.wait_for_timeout(500)  # the old display's "hidden" reaches the kernel
            rss.append(rss_mib(kernel))
        # medians of three at each end: one reading moves by tens of MiB with the allocator's timing
        start, end = float(np.median(rss[:3])), float(np.median(rss[-3:]))
        (artifacts / "rerun-memory.json").write_text(json.dumps(
            {"kernel_rss_mib": rss, "growth_mib": end - start, "record_mib": record_mib}))
        assert end - start < record_mib, f"20 re-runs grew the kernel by {end - start:.0f} MiB (a record: " \
            f"{record_mib:.0f}): {rss}"


PAGE = """<!doctype html><html><head><meta charset="utf-8">
<meta name="color-scheme" content="light dark"><style>{css}</style></head>
<body><div id="host"></div></body></html>"""
MOUNT = """async ({ source, state, buffers, later }) => {
  // a minimal stand-in for the host's widget model: the synced state, buffers as DataViews
  for (const [path, b64] of buffers) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    let at = state;
    for (const p of path.slice(0, -1)) at = at[p];
    at[path[path.length - 1]] = new DataView(bytes.buffer);
  }
  const listeners = {};
  const model = {
    get: (k) => state[k],
    set: (k, v) => { state[k] = v; (listeners[`change:${k}`] || []).forEach((f) => f()); },
    save_changes: () => {}, send: () => {},
    on: (e, f) => { (listeners[e] = listeners[e] || []).push(f); }, off: () => {},
  };
  const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  const mod = await import(url);
  // JupyterLab renders an output's view before it attaches it: `later` does the same, and
  // nothing else happens after the attach that would repaint the view
  const host = document.getElementById("host");
  const el = later ? document.createElement("div") : host;
  mod.default.render({ model, el });
  if (later) {
    await new Promise((r) => setTimeout(r, 50));
    host.append(el);
  }
  window.awView = el; // for a test that takes the view out of the page and puts it back
  await new Promise((r) => setTimeout(r, 100));
  const css = getComputedStyle(el);
  return { color: css.color, fg: css.getPropertyValue("--aw-fg").trim() };
}"""


def _luminance(css_rgb: str) -> float:
    r, g, b = (int(v) for v in css_rgb[css_rgb.index("(") + 1:css_rgb.index(")")].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


@pytest.mark.parametrize("attach", ["in-page", "attached-later", "out-and-back"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_without_jupyterlab_the_widget_follows_the_page_colour_scheme(page, artifacts, scheme, attach):
    from ipywidgets.widgets.widget import _remove_buffers

    from attnwidget import AttentionView
    from attnwidget.synthetic import create_synthetic_attention

    view = AttentionView.from_tensor(np.asarray(create_synthetic_attention(48, "local", seed=1), np.float32),
                                     [f"tok{i}" for i in range(48)])
    state, paths, buffers = _remove_buffers(view.get_state())
    static = ROOT / "attnwidget" / "static"
    page.emulate_media(color_scheme=scheme)
    page.set_content(PAGE.format(css=(static / "widget.css").read_text()))
    no_lab = "() => getComputedStyle(document.body).getPropertyValue('--jp-ui-font-color1')"
    assert page.evaluate(no_lab) == ""  # none of JupyterLab's variables
    got = page.evaluate(MOUNT, {"source": (static / "widget.js").read_text(), "state": state,
                                "buffers": [[p, base64.b64encode(bytes(b)).decode()] for p, b in
                                            zip(paths, buffers, strict=True)],
                                "later": attach != "in-page"})
    page.screenshot(path=str(artifacts / f"no-jupyterlab-{scheme}-{attach}.png"), full_page=True)
    text = _luminance(got["color"])
    assert (text < 0.3) if scheme == "light" else (text > 0.7), got
    assert _labels_read(page, scheme)
    # the page switches scheme under the live view: the canvas follows (the view keeps its
    # colours between paints, and must read them again when the scheme changes)
    other = "dark" if scheme == "light" else "light"
    if attach == "out-and-back":  # the switch while a host has the view out of the page
        # (JupyterLab's windowed notebook detaches cells scrolled away); it repaints there,
        # with no computed style, and must read the colours again once it is back
        page.evaluate("() => window.awView.remove()")
        page.wait_for_timeout(100)
    page.emulate_media(color_scheme=other)
    page.wait_for_timeout(300)
    if attach == "out-and-back":
        page.evaluate("() => document.getElementById('host').append(window.awView)")
        page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / f"no-jupyterlab-{scheme}-{attach}-then-{other}.png"), full_page=True)
    assert _labels_read(page, other)
    view.close()


def _labels_read(page, scheme: str) -> bool:
    """The token labels left of the map are dark on a light page, light on a dark one."""
    labels = canvas_png(page.locator("canvas.aw-heatmap"))[96:96 + 300, 0:90]
    page_bg = np.median(labels.reshape(-1, 3), axis=0)
    ink = labels.reshape(-1, 3)[np.abs(labels.reshape(-1, 3) - page_bg).sum(axis=1) > 150]
    assert len(ink) > 50, "no token labels drawn"
    ink_lum = float(np.mean(ink @ np.array([0.2126, 0.7152, 0.0722]))) / 255
    bg_lum = float(page_bg @ np.array([0.2126, 0.7152, 0.0722])) / 255
    return (ink_lum < bg_lum) if scheme == "light" else (ink_lum > bg_lum)
