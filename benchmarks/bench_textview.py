"""The step control and the text view in a real JupyterLab and headless Chromium.

Everything is timed in the browser with ``performance.now()``, in one run:

* ``step_move`` and ``head_switch`` on the same view: the shipped tiny LM writing 40 tokens
  after an 8-token prompt (48 positions, its limit), text view on. A step move goes from the
  step slider's ``input`` event to the first paint where the map, the metrics (with the step
  block) and the text view's shading all belong to the new state (the widget's
  ``aw-rendered``); a head switch the same from the head slider. Moves alternate (step, head,
  step, ...), each to a step or head not shown just before. ``step_over_head`` is the ratio of
  the medians: the issue asks that a step move repaints within the ratio to the transport
  floor that a head switch does, i.e. ``step_over_head`` near 1 or below.
* ``transport_floor``: a bare anywidget answering a slider value with a 512 x 512 uint8
  buffer it paints (``ECHO`` from bench_widget.py), in the same page, for the ratios.
* The text view at 4096 tokens (a synthetic causal 1 x 3 x 4096 x 4096 record, so that with
  the query near the start nearly every token is masked in the text): the same record
  shown twice, with and without the text view, and on each
  - ``query_move``: ArrowDown on the focused map (the next query) to ``aw-rendered``: Python's
    metrics, the text row (4096 levels) and, with the text view, its recolouring;
  - ``threshold_repaint``: a threshold ``input`` event to the end of the first repaint
    (``aw-painted``), then to the end of the style recalculation and layout the browser owes
    the page (forced by reading a size): the palette changes, so every span whose colour it
    changes is written again (the text view checks all 4096), and nothing waits for Python.
  Rounds alternate the two views. The difference between them is the text view's own cost.
* ``*_next_frame``: the same moves to the end of the browser's next frame (a task queued from
  its ``requestAnimationFrame``): style, layout and paint of what changed included. Headless
  Chromium here rasterises on the CPU (``--disable-gpu``).

    python benchmarks/bench_textview.py [--moves 20] [--out benchmarks/results/textview.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_widget import ECHO, wait_for_views  # noqa: E402  (the transport floor, one definition)
from lab_server import CHROMIUM_ARGS, find_chromium, jupyter_server, open_and_run_all, write_notebook  # noqa: E402

SETUP = """
import numpy as np
from attnwidget import AttentionMaps, AttentionView
from attnwidget.models import load_tiny_lm
from attnwidget.synthetic import create_synthetic_attention
model, tok = load_tiny_lm()
big = np.stack([np.asarray(create_synthetic_attention(4096, p, seed=h), np.float32)
                for h, p in enumerate(["local", "bos", "diagonal"])])[None]
big = np.tril(big)  # causal, as a language model's: a query's later keys are masked in the text
big /= big.sum(-1, keepdims=True)
record = AttentionMaps.from_tensor(big, model_name="synthetic 4096 (causal)", causal=True)
"""
CELLS = [
    SETUP,
    "gen = AttentionView(model, 'q8Zr2kLm', tokenizer=tok, generate=40, layer=1)\ngen",
    "text4096 = AttentionView(record, show_text=True, query=100)\ntext4096",
    "plain4096 = AttentionView(record, query=100)\nplain4096",
    ECHO,
]
VIEWS = {"gen": 0, "text4096": 1, "plain4096": 2}  # order of the .attnwidget elements

# each move: [slider, value] set by an input event, or ["key", name] pressed on the map;
# waits for `event` (aw-rendered or aw-painted), then forces style and layout
MOVES_JS = """
async ({index, moves, event, selector}) => {
  const el = document.querySelectorAll(selector || '.jp-OutputArea-output .attnwidget')[index];
  const out = [];
  for (const [what, value] of moves) {
    const done = new Promise((resolve) => {
      const h = (e) => { el.removeEventListener(event, h); resolve(performance.now()); };
      el.addEventListener(event, h);
    });
    const t0 = performance.now();
    if (what === 'key') {
      const canvas = el.querySelector('canvas.aw-heatmap');
      canvas.dispatchEvent(new KeyboardEvent('keydown', { key: value, bubbles: true }));
    } else {
      const input = el.querySelector(`input.aw-slider-${what}`);
      input.value = String(value);
      input.dispatchEvent(new Event('input', { bubbles: true }));
    }
    const t1 = await Promise.race([done, new Promise((r) => setTimeout(() => r(NaN), 30000))]);
    el.getBoundingClientRect(); // the style recalculation and layout the repaint left to do
    const t2 = performance.now();
    // the next frame's rendering (style, layout, paint) done: a task queued from its rAF
    await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
    const t3 = performance.now();
    out.push({ what, ms: t1 - t0, with_layout_ms: t2 - t0, frame_ms: t3 - t0 });
    await new Promise((r) => setTimeout(r, 40)); // a pause, as a user's
  }
  return out;
}
"""


def summary(values: list[float]) -> dict:
    values = [v for v in values if v == v]  # NaN: a move that never rendered
    return {"median_ms": round(statistics.median(values), 2), "min_ms": round(min(values), 2),
            "max_ms": round(max(values), 2), "n": len(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moves", type=int, default=20, help="moves of each kind")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "textview.json"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    if chromium is None:
        sys.exit("no Chromium found (apt-get install chromium, or set CHROMIUM_PATH)")
    out: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                             "platform": platform.platform(), "load_avg": os.getloadavg()}}
    artifacts = Path(tempfile.mkdtemp(prefix="aw-bench-text-"))
    n = args.moves
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(180_000)
            with jupyter_server("lab", artifacts) as (url, token, root):
                write_notebook(root / "bench.ipynb", CELLS)
                open_and_run_all(page, url, token, "lab", "bench.ipynb", timeout_ms=120_000)
                views = wait_for_views(page, 3, timeout_ms=120_000)

                def run(view: str, moves: list, event: str = "aw-rendered") -> list[dict]:
                    return page.evaluate(MOVES_JS, {"index": VIEWS[view], "moves": moves, "event": event})

                run("gen", [["step", 3], ["head", 1], ["step", 4], ["head", 0]])  # warm-up
                # alternate: step i, head h; steps walk the generation, heads cycle through the layer
                moves = [m for i in range(n) for m in (["step", (7 * i + 5) % 40], ["head", (i + 1) % 4])]
                gen = run("gen", moves)
                floor = page.evaluate(MOVES_JS, {"index": 0, "moves": [["head", i] for i in range(1, n + 1)],
                                                 "event": "aw-rendered",
                                                 "selector": ".jp-OutputArea-output .aw-echo"})
                step_frame = summary([m["frame_ms"] for m in gen if m["what"] == "step"])
                head_frame = summary([m["frame_ms"] for m in gen if m["what"] == "head"])
                step = summary([m["ms"] for m in gen if m["what"] == "step"])
                head = summary([m["ms"] for m in gen if m["what"] == "head"])
                fl = summary([m["ms"] for m in floor])
                out["tiny_lm_generation"] = {
                    "record": "tiny LM, 8-token prompt + 40 generated, 2 layers x 4 heads, text view on",
                    "step_move": step, "head_switch": head, "transport_floor": fl,
                    "step_over_head": round(step["median_ms"] / head["median_ms"], 2),
                    "step_over_floor": round(step["median_ms"] / fl["median_ms"], 2),
                    "head_over_floor": round(head["median_ms"] / fl["median_ms"], 2),
                    "step_move_next_frame": step_frame, "head_switch_next_frame": head_frame,
                    "step_over_head_next_frame": round(step_frame["median_ms"] / head_frame["median_ms"], 2),
                }
                big: dict = {"text4096": {}, "plain4096": {}}
                names = ("text4096", "plain4096")
                for name in names:
                    run(name, [["key", "ArrowDown"], ["threshold", 0.2]])  # warm-up
                runs: dict = {name: {"q": [], "th": []} for name in names}
                for r in range(4):  # rounds alternate the two views: the machine's load hits both alike
                    for name in names:
                        runs[name]["q"] += run(name, [["key", "ArrowDown"]] * (n // 4))
                        values = [round(0.05 + 0.01 * ((r * n // 4 + i) % 20), 3) for i in range(n // 4)]
                        runs[name]["th"] += run(name, [["threshold", v] for v in values], event="aw-painted")
                for name in names:
                    q, th = runs[name]["q"], runs[name]["th"]
                    big[name] = {"query_move": summary([m["ms"] for m in q]),
                                 "query_move_next_frame": summary([m["frame_ms"] for m in q]),
                                 "threshold_repaint": summary([m["ms"] for m in th]),
                                 "threshold_repaint_with_layout": summary([m["with_layout_ms"] for m in th]),
                                 "threshold_repaint_next_frame": summary([m["frame_ms"] for m in th])}
                t, pl = big["text4096"], big["plain4096"]
                big["text_view_cost_ms"] = {
                    key: round(t[key]["median_ms"] - pl[key]["median_ms"], 2)
                    for key in t if isinstance(t[key], dict)}
                big["record"] = ("synthetic causal 1 x 3 x 4096 x 4096, the same record shown with and "
                                 "without the text view")
                # the text view really shows 4096 tokens, shaded for the current state
                text = views.nth(VIEWS["text4096"])
                big["spans"] = text.locator(".aw-text-body .aw-t").count()
                big["shaded"] = text.locator(".aw-text").get_attribute("data-shown")
                out["text_view_4096"] = big
                page.screenshot(path=str(artifacts / "textview.png"), full_page=True)
        finally:
            browser.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
