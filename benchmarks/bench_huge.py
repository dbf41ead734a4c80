"""Huge inputs in a real JupyterLab and headless Chromium: kernel memory, browser heap, freezes.

Two cases, each a notebook run in a fresh kernel:

* ``single``: a raw ``[1, 1, 8192, 8192]`` tensor (256 MiB float32, the largest map a
  view takes: ``attnwidget.maps.MAX_MAP_CELLS``); then a zoom (full resolution on the
  window) and a threshold move.
* ``stack``: a 32-layer x 32-head stack at 1024 tokens (4 GiB float32); then 6 head
  and 3 layer moves, each to a head not shown before.

Measured: the kernel's resident memory after imports (written by the kernel), its peak
(``VmHWM``) and final resident memory (read from ``/proc``), the input's size; in the
browser, the JS heap after the interactions (CDP ``Performance.getMetrics``), the longest
main-thread task while the view first renders and while it is used
(``PerformanceObserver('longtask')``), and each interaction's latency to the
``data-rendered`` state.

    python benchmarks/bench_huge.py [single] [stack] [--out benchmarks/results/huge.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from lab_server import (  # noqa: E402
    CHROMIUM_ARGS,
    find_chromium,
    jupyter_server,
    kernel_pids,
    open_and_run_all,
    rss_mib,
    write_notebook,
)

IMPORTS = """
import json, torch
from pathlib import Path
from attnwidget import AttentionView
def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
Path("mem-{case}.json").write_text(json.dumps({{"after_imports_mib": rss_mib()}}))
"""
BUILD = {
    # softmax in place: the input is held once, as a user's own tensor would be
    "single": "torch.manual_seed(0)\nw = torch.rand(1, 1, 8192, 8192)\nw /= w.sum(-1, keepdim=True)\n"
              "view = AttentionView.from_tensor(w)\nview",
    "stack": "torch.manual_seed(0)\nw = torch.rand(32, 32, 1024, 1024)\nw /= w.sum(-1, keepdim=True)\n"
             "view = AttentionView.from_tensor(w)\nview",
}
INPUT_MIB = {"single": 8192 * 8192 * 4 / 2**20, "stack": 32 * 32 * 1024 * 1024 * 4 / 2**20}
LONGTASKS = """window.__long = [];
new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration); })
  .observe({ type: "longtask", buffered: true });"""


def state(layer: int, head: int, threshold: float = 0.1) -> str:
    return json.dumps(["head", layer, head, threshold, None, 5, []], separators=(",", ":"))


def run_case(page, url: str, token: str, root: Path, case: str) -> dict:
    from playwright.sync_api import expect

    write_notebook(root / f"{case}.ipynb", [IMPORTS.format(case=case), BUILD[case]])
    t0 = time.perf_counter()
    open_and_run_all(page, url, token, "lab", f"{case}.ipynb", timeout_ms=120_000)
    view = page.locator(".jp-OutputArea-output .attnwidget")
    expect(view).to_have_attribute("data-rendered", state(0, 0), timeout=300_000)
    first_render_s = time.perf_counter() - t0
    longest_render = max(page.evaluate("() => window.__long"), default=0.0)
    page.evaluate("() => { window.__long = []; }")
    pid = max(kernel_pids(root))  # this notebook's kernel: the newest one
    latencies = []
    detail_window = None

    def timed(action, want: str) -> None:
        t = time.perf_counter()
        action()
        expect(view).to_have_attribute("data-rendered", want, timeout=120_000)
        latencies.append(round((time.perf_counter() - t) * 1000, 1))

    if case == "single":
        canvas = view.locator("canvas.aw-heatmap")
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + 96 + 100, box["y"] + 96 + 100)
        t = time.perf_counter()
        for _ in range(12):  # zoom in until the window is under 512 cells a side
            page.mouse.wheel(0, -400)
            page.wait_for_timeout(50)
        # the full-resolution window has arrived (and its pool is 1: every cell its own)
        expect(view).to_have_attribute("data-detail", re.compile(r"^\[\d+,\d+,\d+,\d+\]$"), timeout=60_000)
        latencies.append(round((time.perf_counter() - t) * 1000, 1))
        detail_window = json.loads(view.get_attribute("data-detail"))
        timed(lambda: view.locator("input.aw-slider-threshold").fill("0.3"), state(0, 0, 0.3))
    else:
        for head in range(1, 7):
            timed(lambda h=head: view.locator("input.aw-slider-head").fill(str(h)), state(0, head))
        for layer in (1, 2, 3):
            timed(lambda lay=layer: view.locator("input.aw-slider-layer").fill(str(lay)), state(layer, 6))
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    cdp.send("HeapProfiler.collectGarbage")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    kernel_mem = json.loads((root / f"mem-{case}.json").read_text())
    return {
        "input_mib": INPUT_MIB[case],
        "kernel_after_imports_mib": round(kernel_mem["after_imports_mib"], 1),
        "kernel_peak_mib": round(rss_mib(pid, "VmHWM"), 1),
        "kernel_final_mib": round(rss_mib(pid), 1),
        "kernel_peak_over_input_mib": round(rss_mib(pid, "VmHWM") - kernel_mem["after_imports_mib"]
                                            - INPUT_MIB[case], 1),
        "first_render_s_incl_building_the_input": round(first_render_s, 2),
        "browser_js_heap_mib": round(metrics["JSHeapUsedSize"] / 2**20, 1),
        "longest_main_thread_task_ms_first_render": round(longest_render, 1),
        "longest_main_thread_task_ms_interaction": round(
            max(page.evaluate("() => window.__long"), default=0.0), 1),
        "interaction_latency_ms": latencies,
        "zoom_window_full_resolution": detail_window,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "huge.json"))
    parser.add_argument("cases", nargs="*", default=["single", "stack"], help="single and/or stack")
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no Chromium found (scripts/install-browser.sh installs it)")
    from playwright.sync_api import sync_playwright

    results = {}
    for case in args.cases:  # each in its own kernel: one big record at a time
        tmp = Path(tempfile.mkdtemp(prefix="aw-bench-huge-"))
        with jupyter_server("lab", tmp) as (url, token, root), sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.add_init_script(LONGTASKS)
            page = context.new_page()
            page.set_default_timeout(120_000)
            results[case] = run_case(page, url, token, root, case)
            print(case, json.dumps(results[case]), flush=True)
            browser.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "limits": {"MAX_RECORD_BYTES": "8 GiB", "MAX_MAP_CELLS": "8192 x 8192"},
        "cases": results,
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
