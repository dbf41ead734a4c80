"""AttentionView on the real MiniLM, in a real JupyterLab / Notebook 7, in headless Chromium.

The numbers in the page are checked against attnwidget.metrics computed here,
in the test process, on the same model and text (CPU float32 is deterministic).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from lab_server import (
    APPS,
    assert_inert,
    jupyter_server,
    kernel_pids,
    open_and_run_all,
    rss_mib,
    server_log,
    watch_page,
    write_notebook,
)

from attnwidget.maps import average_label

pytestmark = pytest.mark.e2e

TEXT = "The cat sat on the mat."
XSS = "<img src=x onerror=alert(1)>"
SETUP = f"""
from attnwidget import AttentionView, AttentionMaps
from attnwidget.models import load_minilm
model, tok = load_minilm()
view = AttentionView(model, {TEXT!r}, tokenizer=tok)
view
"""
# A view whose tokens are hostile or awkward: markup, script, a bidi override, a token
# that is only a zero-width space, a 3000-character word, a newline, right-to-left
# letters. They must show as text, add no element, run nothing and reorder nothing.
HOSTILE_TOKENS = ["a", XSS, "<script>window.__pwned = 1</script>", "abc\u202edef", "\u200b",
                  "x" * 3000, "line1\nline2", "مرحبا"]
XSS_CELL = f"""
import numpy as np
n = {len(HOSTILE_TOKENS)}
w = np.full((1, 1, n, n), 1 / n, dtype=np.float32)
tokens = {HOSTILE_TOKENS!r}
hostile = AttentionView(AttentionMaps(w, tokens, text=" ".join(tokens[:5]), model_name={XSS!r}), query=1)
hostile
"""

PIXELS = """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const colours = new Set(); let painted = 0;
  for (let i = 0; i < d.length; i += 4) { if (d[i + 3]) painted++;
    colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]); }
  return { painted, colours: colours.size }; }"""
# 500 alternating layer/head moves, 20 ms apart, ending on layer 2, head 9.
STORM = """async ({moves, gap_ms}) => {
  const el = document.querySelector('.jp-OutputArea-output .attnwidget');
  const set = (name, v) => { const i = el.querySelector(`input.aw-slider-${name}`);
    i.value = String(v); i.dispatchEvent(new Event('input', { bubbles: true })); };
  for (let i = 0; i < moves - 2; i++) {
    if (i % 2) set('head', (i * 7) % 12); else set('layer', (i * 5) % 6);
    await new Promise((r) => setTimeout(r, gap_ms));
  }
  set('layer', 2); set('head', 9);
}"""
# What the page showed during the storm, kept for a failure: at each message handled and each
# "rendered" stamp, the stamp, the mean entropy in the metrics panel and whether it is marked
# stale. Once (a CI run on two pytest workers) the panel held the previous head's numbers under
# the final state's stamp; this log is what tells such a case apart.
STORM_TRACE = """() => {
  const el = document.querySelector('.jp-OutputArea-output .attnwidget');
  const box = el.querySelector('.aw-metrics');
  const log = window.__awStormTrace = [];
  const note = (why) => {
    const td = box.querySelector("tr[data-key='mean_entropy'] td");
    log.push({ t: Math.round(performance.now()), why, rendered: el.dataset.rendered || null,
               entropy: td ? td.textContent : null, stale: box.classList.contains('aw-is-stale') });
    if (log.length > 400) log.shift();
  };
  el.addEventListener('aw-received', (e) => note('received ' + e.detail.name));
  el.addEventListener('aw-rendered', () => note('rendered'));
}"""
METRIC_KEYS = ("mean_entropy", "normalized_entropy", "sparsity", "sparsity_gini", "effective_tokens", "max")


@pytest.fixture(scope="module")
def reference():
    """The record and a metrics function computed in the test process."""
    pytest.importorskip("transformers")
    from attnwidget import extract_attention
    from attnwidget.metrics import panel_metrics
    from attnwidget.models import load_minilm

    model, tok = load_minilm()
    maps = extract_attention(model, TEXT, tok)
    return maps, lambda layer, head, threshold=0.1, query=None: panel_metrics(
        maps.head(layer, head), threshold, query, 5)


def state_key(mode="head", layer=0, head=0, threshold=0.1, query=None, top_k=5, ablated=()):
    """What the widget writes to data-rendered once picture and metrics belong to this state."""
    head = head if mode in ("head", "grid") else None
    return json.dumps([mode, layer, head, threshold, query, top_k, [list(p) for p in ablated]],
                      separators=(",", ":"))


def check_metrics(view, expected):
    """Every number in the metrics panel equals Python's value to its 4 shown digits."""
    for key in METRIC_KEYS:
        text = view.locator(f".aw-metrics tr[data-key='{key}'] td").inner_text()
        assert float(text) == pytest.approx(expected[key], rel=1e-3, abs=1e-9), key
    assert view.locator(".aw-metrics tr[data-key='pattern'] td").inner_text() == expected["pattern"]
    assert view.locator(".aw-metrics tr[data-key='grade'] td").inner_text() == expected["grade"]


@pytest.fixture(scope="module")
def ablated_reference(reference):
    """MiniLM's record with layer 2 head 9 switched off, and the effect, computed here."""
    from attnwidget import extract_attention
    from attnwidget.ablate import ablate_heads, ablation_effect
    from attnwidget.models import load_minilm

    model, tok = load_minilm()
    with ablate_heads(model, {2: [9]}):
        maps = extract_attention(model, TEXT, tok)
    return maps, ablation_effect(model, TEXT, {2: [9]}, tok, attention=False)


def hint_sent(page, sent: list[str], heads: list[list[int]], within_ms: int = 5000) -> bool:
    """Whether the page sent the kernel the ablation hint for ``heads`` (zero mode) among the
    WebSocket frames ``sent``, waiting up to ``within_ms`` for it."""
    hint = f'"type":"prepare_ablation","ablated":{json.dumps(heads, separators=(",", ":"))},"mode":"zero"'
    for _ in range(within_ms // 50):
        if any(hint in f.replace(" ", "") for f in sent):
            return True
        page.wait_for_timeout(50)
    return any(hint in f.replace(" ", "") for f in sent)


def check_hostile_view(page, hostile):
    """Every hostile token shows as its display form (Python's), as text, without side effects."""
    from playwright.sync_api import expect

    from attnwidget import AttentionMaps
    from attnwidget.tokens import show_invisible

    n = len(HOSTILE_TOKENS)
    shown = AttentionMaps(np.full((1, 1, n, n), 1 / n, dtype=np.float32), HOSTILE_TOKENS).key_display
    assert shown[3:7] == ("abc⟨RLO⟩def", "⟨ZWSP⟩", "x" * 3000, "line1⏎line2")
    caption = hostile.locator(".aw-caption")
    expect(caption).to_contain_text(f"{XSS} · layer 0 · head 0")  # the model name, as text
    # a record, no model: nothing to re-run, and the button says why instead of failing on a click
    expect(hostile.locator("button.aw-ablate")).to_be_disabled()
    expect(hostile.locator("button.aw-ablate")).to_have_attribute("title", re.compile("not a model"))
    expect(caption).to_contain_text(show_invisible(" ".join(HOSTILE_TOKENS[:5]))[:40])
    expect(hostile.locator(".aw-query-title")).to_contain_text(XSS)
    canvas = hostile.locator("canvas.aw-heatmap")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    tip = hostile.locator(".aw-tooltip")
    for k in range(n):  # hover row 0, every key: the tooltip names the key as Python shows it
        page.mouse.move(box["x"] + 96 + (k + 0.5) * 512 / n, box["y"] + 96 + 0.5 * 512 / n)
        expect(tip.locator("bdi.aw-tok").nth(1)).to_have_text(shown[k], use_inner_text=False)
        assert tip.bounding_box()["width"] <= 430  # a long token is cut, the weight still shows
        expect(tip).to_contain_text(": ≈")
    # the long word as the selected query: all of it is there, scrolling inside its title
    page.mouse.click(box["x"] + 96 + 0.5 * 512 / n, box["y"] + 96 + 5.5 * 512 / n)
    title = hostile.locator(".aw-query-title")
    expect(title).to_contain_text("query 5")
    assert title.evaluate("e => e.textContent").count("x") == 3000
    assert title.bounding_box()["height"] < 120
    assert hostile.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "a token widened the view"
    assert_inert(page, hostile)


@pytest.mark.parametrize("app", list(APPS))
def test_view_draws_follows_controls_and_shows_python_metrics(app, page, artifacts, reference,
                                                              ablated_reference):
    if app == "notebook7":
        pytest.importorskip("notebook", minversion="7", reason="notebook>=7 not installed")
    from playwright.sync_api import expect

    from attnwidget.metrics import panel_metrics

    maps, metrics_of = reference
    with jupyter_server(app, artifacts) as (url, token, root):
        write_notebook(root / "demo.ipynb", [SETUP, XSS_CELL])
        seen = watch_page(page, allowed=(url, "data:", "blob:"))
        dialogs, errors, external = seen.dialogs, seen.errors, seen.external
        sent: list[str] = []  # what the page sends the kernel (text or binary frames)
        page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sent.append(
            frame if isinstance(frame, str) else frame.decode("utf-8", "replace"))))
        try:
            open_and_run_all(page, url, token, app, "demo.ipynb")

            views = page.locator(".jp-OutputArea-output .attnwidget")
            expect(views).to_have_count(2, timeout=120_000)
            view = views.nth(0)
            canvas = view.locator("canvas.aw-heatmap")
            expect(canvas).to_be_visible()
            expect(view).to_have_attribute("data-rendered", state_key(), timeout=30_000)
            caption = view.locator(".aw-caption")
            expect(caption).to_contain_text("all-MiniLM-L6-v2 · layer 0 · head 0")
            stats = canvas.evaluate(PIXELS)
            assert stats["painted"] > 10_000, stats
            assert stats["colours"] >= 16, stats  # a real map, not a blank or flat fill
            check_metrics(view, metrics_of(0, 0))

            # layer slider
            before = canvas.evaluate("c => c.toDataURL()")
            view.locator("input.aw-slider-layer").fill("4")
            expect(view).to_have_attribute("data-rendered", state_key(layer=4))
            expect(caption).to_contain_text("layer 4 · head 0")
            expect(view.locator(".aw-layer .aw-value")).to_have_text("4 / 5")
            check_metrics(view, metrics_of(4, 0))
            assert canvas.evaluate("c => c.toDataURL()") != before  # repainted

            # head slider, by keyboard inside the notebook
            view.locator("input.aw-slider-head").focus()
            page.keyboard.press("ArrowRight")
            expect(view).to_have_attribute("data-rendered", state_key(layer=4, head=1))
            expect(caption).to_contain_text("layer 4 · head 1")
            check_metrics(view, metrics_of(4, 1))

            # threshold slider: the picture dims at once, the sparsity follows from Python
            before = canvas.evaluate("c => c.toDataURL()")
            view.locator("input.aw-slider-threshold").fill("0.25")
            expect(view).to_have_attribute("data-rendered", state_key(layer=4, head=1, threshold=0.25))
            check_metrics(view, metrics_of(4, 1, 0.25))
            assert canvas.evaluate("c => c.toDataURL()") != before

            # the reader opens the pattern scores: they stay open while the numbers change
            scores = view.locator("details.aw-scores")
            scores.locator("summary").click()
            expect(scores).to_have_attribute("open", "")

            # a head thumbnail
            thumbs = view.locator(".aw-heads .aw-thumb")
            expect(thumbs).to_have_count(12)
            # the strip follows the layer (it arrives just after the map) with Python's badges
            expect(view.locator(".aw-heads")).to_have_class("aw-heads")
            from attnwidget.metrics import head_badges

            badges = head_badges(maps.layer(4))
            expect(thumbs.nth(7)).to_have_text(
                f"head 7 · {badges['grade'][7]} · H {badges['entropy'][7]:.2f}")
            thumbs.nth(7).click()
            expect(view).to_have_attribute("data-rendered", state_key(layer=4, head=7, threshold=0.25))
            expect(thumbs.nth(7)).to_have_class("aw-thumb aw-selected")
            check_metrics(view, metrics_of(4, 7, 0.25))
            expect(scores).to_have_attribute("open", "")
            for name, value in metrics_of(4, 7, 0.25)["scores"].items():
                shown = scores.locator(f"tr[data-key='score-{name}'] td").inner_text()
                assert float(shown) == pytest.approx(value, rel=1e-3, abs=1e-9), name

            # hover a cell: query token -> key token: weight
            canvas.scroll_into_view_if_needed()
            box = canvas.bounding_box()
            n = maps.shape[2]
            cell = 512 / n
            qx, qy = 3, 2  # key 3, query 2
            page.mouse.move(box["x"] + 96 + (qx + 0.5) * cell, box["y"] + 96 + (qy + 0.5) * cell)
            tip = view.locator(".aw-tooltip")
            expect(tip).to_be_visible()
            weight = float(maps.head(4, 7)[qy, qx])
            expect(tip).to_contain_text(f"{maps.query_display[qy]} → {maps.key_display[qx]}: ≈")
            shown = float(tip.inner_text().split("≈")[1])
            vmax = float(maps.head(4, 7).max())
            assert shown == pytest.approx(weight, abs=vmax / 254 + 1e-3)
            # the pointer rests while the head changes (arrow keys, a script): the tooltip gives
            # the new map's weight there, not the one it showed (0.0077 here, 0.092 in head 10)
            head_input = view.locator("input.aw-slider-head")
            move = "(e, v) => { e.value = v; e.dispatchEvent(new Event('input', { bubbles: true })); }"
            head_input.evaluate(move, "10")
            expect(view).to_have_attribute("data-rendered", state_key(layer=4, head=10, threshold=0.25))
            expect(tip).to_be_visible()
            expect(tip).to_contain_text(f"{maps.query_display[qy]} → {maps.key_display[qx]}: ≈")
            shown = float(tip.inner_text().split("≈")[1])
            assert shown == pytest.approx(float(maps.head(4, 10)[qy, qx]),
                                          abs=float(maps.head(4, 10).max()) / 254 + 1e-3)
            head_input.evaluate(move, "7")
            expect(view).to_have_attribute("data-rendered", state_key(layer=4, head=7, threshold=0.25))

            # click the row: that query's top-k keys appear, as Python ranks them
            page.mouse.click(box["x"] + 96 + (qx + 0.5) * cell, box["y"] + 96 + (qy + 0.5) * cell)
            expect(view).to_have_attribute("data-rendered",
                                           state_key(layer=4, head=7, threshold=0.25, query=qy))
            expected = metrics_of(4, 7, 0.25, qy)["query"]
            for i, (k, w) in enumerate(zip(expected["top_k"], expected["top_k_weights"], strict=True)):
                row = view.locator(f".aw-query-table tr[data-key='top-{i}']")
                assert f"key {k} " in row.locator("th").inner_text()
                assert float(row.locator("td").inner_text()) == pytest.approx(w, rel=1e-3)
            expect(view.locator("canvas.aw-row-plot")).to_be_visible()

            # a storm of slider moves: whatever replies arrive late, the view ends on the
            # last values, with the picture and the numbers of that state
            (kernel,) = kernel_pids(root)
            rss_before, log_before, errors_before = rss_mib(kernel), len(server_log(root)), len(errors)
            page.evaluate(STORM_TRACE)
            page.evaluate(STORM, {"moves": 500, "gap_ms": 20})
            final = state_key(layer=2, head=9, threshold=0.25, query=qy)
            try:
                expect(view).to_have_attribute("data-rendered", final, timeout=30_000)
                expect(caption).to_contain_text("layer 2 · head 9")
                check_metrics(view, metrics_of(2, 9, 0.25))
            except AssertionError:
                (artifacts / f"storm-trace-{app}.json").write_text(json.dumps(
                    page.evaluate("() => window.__awStormTrace"), indent=0))
                raise
            # the recorder saw the storm's replies (so a failure's log would hold them too)
            assert page.evaluate("() => window.__awStormTrace.filter((e) => e.why === 'rendered').length") > 0
            expect(view.locator(".aw-stale")).to_be_hidden()
            expect(view.locator(".aw-offline")).to_be_hidden()
            # no error in the console or in the kernel's log, and the kernel did not grow
            # (every head of every layer was visited: their metrics are cached, a few KB)
            assert errors[errors_before:] == []
            storm_log = server_log(root)[log_before:]
            assert "Traceback" not in storm_log, storm_log
            assert "Error" not in storm_log, storm_log
            growth = rss_mib(kernel) - rss_before
            (artifacts / f"storm-{app}.json").write_text(json.dumps(
                {"kernel_rss_before_mib": rss_before, "kernel_rss_growth_mib": growth}))
            assert growth < 4, f"the kernel grew by {growth:.1f} MiB during the storm"

            # ablation round trip: switch layer 2 head 9 off, the model re-runs, later layers
            # change (as Python computes them), the head is marked; switch it back on
            ablated_maps, effect = ablated_reference
            # the pointer on the button tells the kernel which heads a click would switch off
            # (it runs them before the click comes); the click's numbers are checked below
            view.locator("button.aw-ablate").hover()
            assert hint_sent(page, sent, [[2, 9]]), "no hint sent on hover"
            # the same from a head thumbnail with shift held (a shift-click toggles that head)
            page.keyboard.down("Shift")
            thumbs.nth(3).hover()
            page.keyboard.up("Shift")
            assert hint_sent(page, sent, [[2, 3]]), "no hint sent on shift-hover"
            assert view.get_attribute("data-rendered") == state_key(layer=2, head=9, threshold=0.25, query=qy)
            view.locator("button.aw-ablate").click()
            ab = [(2, 9)]
            expect(view).to_have_attribute("data-rendered", state_key(
                layer=2, head=9, threshold=0.25, query=qy, ablated=ab), timeout=30_000)
            expect(thumbs.nth(9)).to_contain_text("✕ ablated")
            score = view.locator(".aw-effect tr[data-key='effect-score'] td").inner_text()
            assert float(score) == pytest.approx(effect["score"], rel=1e-3)
            effect_height = view.locator(".aw-effect").bounding_box()["height"]
            assert effect_height > 100  # the table: score, cosine, a row per layer
            view.locator("input.aw-slider-layer").fill("3")
            expect(view).to_have_attribute("data-rendered", state_key(
                layer=3, head=9, threshold=0.25, query=qy, ablated=ab))
            ablated_metrics = panel_metrics(ablated_maps.head(3, 9), 0.25, qy, 5)
            check_metrics(view, ablated_metrics)
            original_metrics = metrics_of(3, 9, 0.25)
            assert ablated_metrics["mean_entropy"] != original_metrics["mean_entropy"]
            view.locator("input.aw-check-compare").check()
            expect(view.locator("canvas.aw-heatmap-diff")).to_be_visible()
            expect(view.locator(".aw-caption-b")).to_have_text("B: original (no head ablated)")
            expect(view.locator(".aw-caption-a")).to_have_text("A: L2 H9 ablated (zero)")
            def map_top():  # within the view (the page scrolls meanwhile)
                return view.locator("canvas.aw-heatmap").bounding_box()["y"] - view.bounding_box()["y"]

            top_ablated = map_top()
            view.locator("canvas.aw-heatmap-diff").scroll_into_view_if_needed()
            page.screenshot(path=str(artifacts / f"compare-{app}.png"))
            view.locator("input.aw-slider-layer").fill("2")
            expect(view.locator("button.aw-ablate")).to_have_text("restore layer 2 head 9")
            view.locator("button.aw-ablate").click()
            expect(view).to_have_attribute("data-rendered", state_key(
                layer=2, head=9, threshold=0.25, query=qy))
            view.locator("input.aw-slider-layer").fill("3")
            expect(view).to_have_attribute("data-rendered", state_key(
                layer=3, head=9, threshold=0.25, query=qy))
            check_metrics(view, original_metrics)  # back to the original numbers
            # restored: no number of the restored run stays, and the effect's room does (the
            # notebook below does not move with each toggle)
            expect(view.locator(".aw-effect")).to_have_text("no head ablated")
            expect(view.locator(".aw-effect table")).to_have_count(0)
            assert view.locator(".aw-effect").bounding_box()["height"] == pytest.approx(effect_height, abs=1)
            # compare still on, nothing to compare: the view says what would give it something
            expect(view.locator(".aw-caption-b")).to_contain_text("nothing to compare yet: ablate a head")
            expect(view.locator("canvas.aw-heatmap-b")).to_be_hidden()
            # caption A keeps its line while comparing: the map did not move down and back up
            expect(view.locator(".aw-caption-a")).to_have_text("A: this view's record")
            assert map_top() == pytest.approx(top_ablated, abs=1)
            view.locator("input.aw-check-compare").uncheck()
            expect(view.locator(".aw-compare")).to_be_hidden()
            view.locator("input.aw-slider-layer").fill("2")

            # the head average, labelled as one
            view.locator("select.aw-select-mode").select_option("average")
            expect(view).to_have_attribute("data-rendered", state_key(
                mode="average", layer=2, head=9, threshold=0.25, query=qy))
            expect(caption).to_contain_text(average_label(12))
            expect(view.locator(".aw-metrics-title")).to_contain_text("average of heads")
            expect(view.locator(".aw-heads .aw-selected")).to_have_count(0)  # no head is shown

            page.screenshot(path=str(artifacts / f"widget-{app}.png"), full_page=True)

            # token text stays text: caption, tooltips and the query title, in the browser
            check_hostile_view(page, views.nth(1))
            assert dialogs == [], f"script ran from token text: {dialogs}"
            assert external == [], f"the page tried to reach the network: {external}"
            assert [e for e in errors if "attnwidget" in e or "aw-" in e] == [], errors
        except Exception:
            page.screenshot(path=str(artifacts / f"failure-{app}.png"), full_page=True)
            raise
