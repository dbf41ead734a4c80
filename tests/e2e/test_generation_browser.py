"""A generation in the view, in a real JupyterLab / Notebook 7, in headless Chromium.

The tiny LM writes 7 tokens after a repeated segment; the page's step control, text view,
metrics and marks are checked against :func:`attnwidget.generate.generate_attention` and the
codec computed here, in the test process (CPU float32 and greedy decoding are deterministic).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from lab_server import APPS, assert_inert, jupyter_server, open_and_run_all, watch_page, write_notebook

pytestmark = pytest.mark.e2e

SEGMENT = "q8Zr2kLmxT"
PROMPT = SEGMENT + SEGMENT[:3]
P = len(PROMPT)
N_NEW = 7
SETUP = f"""
from attnwidget import AttentionView, AttentionMaps
from attnwidget.models import load_tiny_lm
model, tok = load_tiny_lm()
view = AttentionView(model, {PROMPT!r}, tokenizer=tok, generate={N_NEW}, layer=1, head=0)
view
"""
# run again by the test, after the rest: Python moves the step and the page follows
AGAIN = """
if "again" in globals():
    view.step = 4
again = True
"""
XSS = "<img src=x onerror=alert(1)>"
HOSTILE_TOKENS = ["a", XSS, "<script>window.__pwned = 1</script>", "abc\u202edef", "\u200b",
                  "x" * 3000, "line1\nline2", "مرحبا"]
HOSTILE_CELL = f"""
import numpy as np
n = {len(HOSTILE_TOKENS)}
w = np.tril(np.ones((n, n), dtype=np.float32))
w = (w / w.sum(-1, keepdims=True))[None, None]
hostile = AttentionView(AttentionMaps(w, {HOSTILE_TOKENS!r}, causal=True), show_text=True, query=5)
hostile
"""
# every token span's computed colours, and the marks on it
SPANS = """box => Array.from(box.querySelectorAll('.aw-t')).map(s => ({
  i: Number(s.dataset.i), text: s.textContent, bg: getComputedStyle(s).backgroundColor,
  cls: s.className }))"""
PIXEL = "(c, [x, y]) => Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data)"
# a storm of pointer moves over the text, `gap_ms` apart, each over another token, ending on `last`
HOVER_STORM = """async (body, {moves, gap_ms, last}) => {
  const spans = body.querySelectorAll('.aw-t');
  for (let i = 0; i < moves; i++) {
    const s = i === moves - 1 ? spans[last] : spans[(i * 7) % spans.length];
    s.dispatchEvent(new MouseEvent('mousemove', { bubbles: true, clientX: i + 1, clientY: 1 }));
    await new Promise((r) => setTimeout(r, gap_ms));
  }
}"""


def state_key(layer=1, head=0, query=None, threshold=0.1, mode="head", top_k=5):
    """What the widget writes to data-rendered once picture, numbers and text belong to this state."""
    return json.dumps([mode, layer, head, threshold, query, top_k, []], separators=(",", ":"))


@pytest.fixture(scope="module")
def generation():
    from attnwidget.generate import generate_attention
    from attnwidget.models import load_tiny_lm

    model, tok = load_tiny_lm()
    return generate_attention(model, PROMPT, tok, n_new=N_NEW)


def expected_colours(values, vmax, visible_upto, threshold, background):
    """The CSS colour of each token: its level (the panel's codec) in the map's palette."""
    from attnwidget._codec import level_rgba, quantize

    levels = quantize(np.asarray(values, dtype=np.float32), vmax)
    palette = level_rgba("viridis", threshold / vmax * 254, background)
    out = [f"rgb({r}, {g}, {b})" for r, g, b, _ in palette[levels]]
    return [c if i <= visible_upto else "rgba(0, 0, 0, 0)" for i, c in enumerate(out)], levels


def theme_background(page, view) -> tuple[int, int, int]:
    """The notebook's --jp-layout-color0 as RGB, normalised by a canvas (as the widget reads it)."""
    return tuple(view.evaluate("""el => { const c = document.createElement('canvas').getContext('2d');
      c.fillStyle = getComputedStyle(el).getPropertyValue('--jp-layout-color0').trim() || '#ffffff';
      const h = c.fillStyle; return [1, 3, 5].map(i => parseInt(h.slice(i, i + 2), 16)); }"""))


def check_text_colours(view, expected):
    spans = view.locator(".aw-text-body").evaluate(SPANS)
    assert [s["bg"] for s in spans] == expected


def check_hostile_text(page, hostile):
    """Every hostile token shows in the text view as its display form, as text, running nothing."""
    from attnwidget import AttentionMaps

    n = len(HOSTILE_TOKENS)
    shown = AttentionMaps(np.full((1, 1, n, n), 1 / n, dtype=np.float32), HOSTILE_TOKENS).key_display
    body = hostile.locator(".aw-text-body")
    body.scroll_into_view_if_needed()
    spans = body.evaluate(SPANS)
    assert [s["text"] for s in spans] == list(shown)
    assert spans[3]["text"] == "abc⟨RLO⟩def"
    assert spans[4]["text"] == "⟨ZWSP⟩"
    assert spans[6]["text"] == "line1⏎line2"
    assert hostile.locator(".aw-step").is_hidden()  # no generation: no step control
    assert hostile.locator(".aw-gen-start").count() == 0
    assert_inert(page, hostile)
    assert hostile.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "a token widened the view"
    # the query's row shades keys 0..5; the long word is the query
    assert "aw-query" in spans[5]["cls"]
    assert all("aw-masked" in s["cls"] for s in spans[6:])


@pytest.mark.parametrize("app", list(APPS))
def test_step_control_text_view_and_marks(app, page, artifacts, generation):
    if app == "notebook7":
        pytest.importorskip("notebook", minversion="7", reason="notebook>=7 not installed")
    from playwright.sync_api import expect

    from attnwidget.metrics import attention_received

    maps = generation.maps
    head = maps.head(1, 0)  # [T, T]
    T = P + N_NEW
    vmax = float(head.max())
    with jupyter_server(app, artifacts) as (url, token, root):
        write_notebook(root / "gen.ipynb", [SETUP, HOSTILE_CELL, AGAIN])
        seen = watch_page(page)
        dialogs, errors = seen.dialogs, seen.errors
        try:
            open_and_run_all(page, url, token, app, "gen.ipynb")
            views = page.locator(".jp-OutputArea-output .attnwidget")
            expect(views).to_have_count(2, timeout=120_000)
            view = views.nth(0)
            expect(view).to_have_attribute("data-rendered", state_key(), timeout=30_000)
            background = theme_background(page, view)

            # the text: every token as text, generated ones after the start mark
            text = view.locator(".aw-text")
            expect(text).to_be_visible()
            spans = view.locator(".aw-text-body").evaluate(SPANS)
            assert [s["text"] for s in spans] == list(maps.key_display)
            assert ["aw-gen" in s["cls"] for s in spans] == [i >= P for i in range(T)]
            start = view.locator(".aw-gen-start")
            expect(start).to_have_count(1)
            assert start.evaluate("e => e.nextElementSibling.dataset.i") == str(P)
            # no query: shaded by the attention each token receives, on its own range (no
            # dimming until the threshold is moved: the view's dim trait starts off)
            received = attention_received(head, causal=True)
            expected, _ = expected_colours(received, float(received.max()), T, 0.0, background)
            check_text_colours(view, expected)
            expect(view.locator(".aw-text-title")).to_contain_text("attention it receives")

            # the generation start on the map: a solid line down column P
            canvas = view.locator("canvas.aw-heatmap")
            mark = json.loads(canvas.evaluate("c => c.dataset.generationStart"))
            assert mark["P"] == P
            cell = 512 / T
            column = [tuple(canvas.evaluate(PIXEL, [mark["x"], int(96 + (q + 0.5) * cell)]))
                      for q in range(0, T, 3)]
            assert len(set(column)) == 1, column  # the heatmap's cells differ; the line does not

            # the step control: shown for a generation, moves the query to P + step - 1
            step = view.locator("input.aw-slider-step")
            expect(step).to_be_visible()
            step.fill("2")
            q = P + 1
            expect(view).to_have_attribute("data-rendered", state_key(query=q))
            step_value = view.locator(".aw-step .aw-value")
            expect(step_value).to_have_text(f"2 / {N_NEW - 1} “{maps.key_display[P + 2]}”")
            # the highlighted row on the map: the accent frame's left edge at row q, not elsewhere
            accent = canvas.evaluate(PIXEL, [94, int(96 + (q + 0.5) * cell)])
            assert accent[3] == 255
            assert canvas.evaluate(PIXEL, [94, int(96 + (q - 3.5) * cell)])[3] == 0
            # ... on every head thumbnail: a line at the query's height
            thumb = view.locator(".aw-heads canvas").nth(3)
            y = int((q + 0.5) / T * 56)
            line = {tuple(thumb.evaluate(PIXEL, [x, y])) for x in (2, 20, 40, 54)}
            assert line == {tuple(accent)}, line
            # ... and in the text: the query and the token it wrote
            spans = view.locator(".aw-text-body").evaluate(SPANS)
            assert "aw-query" in spans[q]["cls"]
            assert "aw-written" in spans[q + 1]["cls"]
            # the text's colours are the map row's levels (same vmax, same codec, pool 1) ...
            expected, levels = expected_colours(head[q], vmax, q, 0.0, background)
            check_text_colours(view, expected)
            # ... which are the row's weights to the quantisation ...
            np.testing.assert_allclose(levels[: q + 1] / 254 * vmax, head[q, : q + 1], atol=vmax / 508 + 1e-7)
            # ... and equal the map's own pixels at the centre of each cell of the row
            y_row = int(96 + (q + 0.5) * cell)
            cells = [tuple(canvas.evaluate(PIXEL, [int(96 + (k + 0.5) * cell), y_row]))[:3]
                     for k in range(q + 1)]
            assert [f"rgb({r}, {g}, {b})" for r, g, b in cells] == expected[: q + 1]
            # the metrics panel: the step's top-k keys and its prompt / generated shares (Python's)
            ref = generation.step(2, layer=1, head=0, k=5)
            share = view.locator(".aw-step-table tr[data-key='step-prompt_share'] td").inner_text()
            assert float(share) == pytest.approx(ref["prompt_share"], rel=1e-3)
            gen_share = view.locator(".aw-step-table tr[data-key='step-generated_share'] td").inner_text()
            assert float(gen_share) == pytest.approx(ref["generated_share"], rel=1e-3, abs=1e-9)
            for i, (k, w) in enumerate(zip(ref["top_k"], ref["top_k_weights"], strict=True)):
                row = view.locator(f".aw-step-table tr[data-key='step-top-{i}']")
                assert f"key {k} " in row.locator("th").inner_text()
                assert ("(prompt)" if k < P else "(generated)") in row.locator("th").inner_text()
                assert float(row.locator("td").inner_text()) == pytest.approx(w, rel=1e-3)
            expect(view.locator(".aw-step-title")).to_contain_text(
                f"step 2: wrote “{maps.key_display[P + 2]}” at {P + 2}, chosen by query {q}")

            # moving the threshold turns dimming on: the text dims as the map does
            view.locator("input.aw-slider-threshold").fill("0.3")
            expect(view).to_have_attribute("data-rendered", state_key(query=q, threshold=0.3))
            check_text_colours(view, expected_colours(head[q], vmax, q, 0.3, background)[0])

            # hover a token: it becomes the query; leaving the text restores the step's query
            body = view.locator(".aw-text-body")
            body.locator("[data-i='4']").hover()
            expect(view).to_have_attribute("data-rendered", state_key(query=4, threshold=0.3))
            expect(view.locator(".aw-step .aw-value")).to_have_text(f"– / {N_NEW - 1}")
            check_text_colours(view, expected_colours(head[4], vmax, 4, 0.3, background)[0])
            page.mouse.move(5, 5)
            expect(view).to_have_attribute("data-rendered", state_key(query=q, threshold=0.3))
            # click pins: hovering elsewhere then changes nothing; a second click unpins
            body.locator(f"[data-i='{P + 4}']").click()
            expect(view).to_have_attribute("data-rendered", state_key(query=P + 4, threshold=0.3))
            expect(body.locator(f"[data-i='{P + 4}']")).to_have_class("aw-t aw-gen aw-query aw-pinned")
            expect(view.locator(".aw-step .aw-value")).to_contain_text(f"5 / {N_NEW - 1}")
            body.locator("[data-i='2']").hover()
            page.mouse.move(5, 5)
            expect(view).to_have_attribute("data-rendered", state_key(query=P + 4, threshold=0.3))
            body.locator(f"[data-i='{P + 4}']").click()
            expect(body.locator(f"[data-i='{P + 4}']")).not_to_have_class("aw-t aw-gen aw-query aw-pinned")
            body.locator("[data-i='7']").hover()
            expect(view).to_have_attribute("data-rendered", state_key(query=7, threshold=0.3))
            # keys on the focused text: ArrowRight moves the query one token, Escape clears it
            body.focus()
            page.keyboard.press("ArrowRight")
            expect(view).to_have_attribute("data-rendered", state_key(query=8, threshold=0.3))
            page.keyboard.press("Escape")
            expect(view).to_have_attribute("data-rendered", state_key(threshold=0.3))
            # a storm of hovers (one request in flight, the latest wins): the view ends on the last
            errors_before = len(errors)
            body.evaluate(HOVER_STORM, {"moves": 150, "gap_ms": 5, "last": P + 5})
            expect(view).to_have_attribute("data-rendered", state_key(query=P + 5, threshold=0.3))
            expect(body.locator(".aw-query")).to_have_count(1)
            assert body.locator(".aw-query").get_attribute("data-i") == str(P + 5)
            expect(step_value).to_contain_text(f"6 / {N_NEW - 1}")
            assert errors[errors_before:] == []

            # Python moves the step (the last cell, run again): the slider, map and text follow
            page.locator(".jp-Cell").nth(2).locator(".jp-InputArea-editor").click()
            page.keyboard.press("Control+Enter")
            expect(view).to_have_attribute("data-rendered", state_key(query=P + 3, threshold=0.3))
            expect(step_value).to_have_text(f"4 / {N_NEW - 1} “{maps.key_display[P + 4]}”")
            assert step.input_value() == "4"
            expect(body.locator(f"[data-i='{P + 3}']")).to_have_class("aw-t aw-gen aw-query")
            page.screenshot(path=str(artifacts / f"generation-{app}.png"), full_page=True)
            check_hostile_text(page, views.nth(1))
            assert dialogs == [], f"script ran from token text: {dialogs}"
            assert [e for e in errors if "attnwidget" in e or "aw-" in e] == [], errors
        except Exception:
            page.screenshot(path=str(artifacts / f"failure-generation-{app}.png"), full_page=True)
            raise
