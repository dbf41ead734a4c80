"""The report, figures and export at 128 and 510 tokens (MiniLM) and 512 / 4096-token views.

Measured in one run, so that the targets of issue 17 are ratios on the same machine state:

* ``report``: ``python -m attnwidget report TEXT --model minilm --no-png`` as a user runs it
  (a fresh interpreter: imports, model load, extraction, metrics, figures, the page), at
  128 and 510 tokens: wall time, the process's peak resident memory, ``index.html``'s size;
  then the page opened in headless Chromium: the time until every bokeh document is idle
  and no main-thread task has run for a second (``PerformanceObserver('longtask')``), the
  longest task and the JS heap (CDP ``Performance.getMetrics``).
  Targets: HTML at 510 tokens at most 10 MB; build(510) <= 2 x build(128); render(510) <=
  2 x render(128).
* ``png_stage``: the report's PNG figures of the same record, made by
  :meth:`attnwidget.plots.Exporter.export_all` (one browser, one page for all), against
  bokeh's own ``export_png`` of the same figures (a page each) with one reused driver started
  the same way, toolbars off on both; both include starting their browser, rounds
  alternate; and the smallest share of identical pixels between the two, over the figures.
  Target: ours <= 1.5 x bokeh's (made before the one-page export; now well below 1).
* ``view_export``: ``AttentionView.export("x.png")`` of a synthetic ``[1, 2, N, N]`` stack
  at N = 512 and 4096 (one browser start each, as a user's call). Target: 4096 < 2 x 512.
  Also the PNG snapshot a display of the view carries (:mod:`attnwidget.snapshot`): time, size.

    python benchmarks/bench_report.py [--rounds 3] [--out benchmarks/results/report.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from lab_server import CHROMIUM_ARGS, find_chromium  # noqa: E402

SENTENCE = ("the cat sat on the mat and the dog ran in the park while a bird sang from the old tree "
            "near the river where the children played with a red ball until the sun went down over "
            "the hill and every house in the town was quiet")
LONGTASKS = """window.__long = [];
new PerformanceObserver((l) => { for (const e of l.getEntries())
  window.__long.push({start: e.startTime, end: e.startTime + e.duration, duration: e.duration}); })
  .observe({ type: "longtask", buffered: true });"""
IDLE = """() => !!window.Bokeh && Bokeh.documents.length > 0 && Bokeh.documents.every((d) => d.is_idle)"""


def text_of(tokens: int) -> str:
    """A text that MiniLM's tokenizer turns into exactly ``tokens`` tokens ([CLS] and [SEP] included)."""
    from attnwidget.models import load_minilm

    _, tok = load_minilm()
    words = [w for w in SENTENCE.split() if len(tok.tokenize(w)) == 1]
    text = " ".join((words * (tokens // len(words) + 1))[: tokens - 2])
    assert len(tok(text)["input_ids"]) == tokens, "every word is one token"
    return text


def run_report(text: str, out: Path) -> dict:
    """The command as a user runs it; wall time and the child's peak resident memory (wait4)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "attnwidget", "report", text, "--model", "minilm",
                             "--out", str(out), "--quiet", "--no-png"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"report failed: {proc.stderr.read().decode()[-2000:]}")
    proc.stderr.close()
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "html_mb": round((out / "index.html").stat().st_size / 1e6, 2)}


def render(browser, index: Path) -> dict:
    """Open the page; time until bokeh is idle and the main thread has had no task for 1 s."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.add_init_script(LONGTASKS)
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")
    t0 = time.perf_counter()
    page.goto(index.as_uri(), wait_until="load", timeout=600_000)
    page.wait_for_function(IDLE, timeout=600_000, polling=50)
    idle_at = page.evaluate("performance.now()")
    while True:  # quiet for a second after the last long task
        time.sleep(0.25)
        last = page.evaluate("Math.max(0, ...window.__long.map((t) => t.end))")
        now = page.evaluate("performance.now()")
        if now - max(last, idle_at) > 1000:
            break
    wall = time.perf_counter() - t0
    tasks = page.evaluate("window.__long")
    heap = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}["JSHeapUsedSize"]
    roots = page.evaluate("Bokeh.documents.reduce((n, d) => n + d.roots().length, 0)")
    context.close()
    longest = max([t["duration"] for t in tasks], default=0)
    return {"rendered_ms": round(max(idle_at, last)), "longest_task_ms": round(longest),
            "js_heap_mib": round(heap / 2**20, 1), "bokeh_roots": roots,
            "wall_s_incl_quiet_second": round(wall, 2)}


def png_stage(maps, rounds: int, folder: Path) -> dict:
    """The report's PNG figures: Exporter.export_all (one browser, one page) vs bokeh's export_png
    with one reused driver (a page per figure), the toolbars off on both; and whether the two
    drew the same pixels."""
    import numpy as np
    from bokeh.io import export_png
    from PIL import Image

    from attnwidget import plots, report
    from attnwidget.plots.export import _printed

    figures = report.figures_of(maps, report.compute(maps))

    def ours() -> float:
        t0 = time.perf_counter()
        with plots.Exporter(scale=2) as exporter:
            exporter.export_all([(fig, folder / f"ours-{name}.png") for name, _, fig in figures])
        return time.perf_counter() - t0

    def bokeh_own() -> float:
        t0 = time.perf_counter()
        driver = plots._webdriver(2.0)  # the same browser, flags and device scale
        try:
            for name, _, fig in figures:
                with _printed(fig):  # no toolbars, as ours prints them
                    export_png(fig, filename=str(folder / f"bokeh-{name}.png"), webdriver=driver,
                               scale_factor=2)
        finally:
            driver.quit()
        return time.perf_counter() - t0

    ours_s, bokeh_s = [], []
    for _ in range(rounds):
        ours_s.append(ours())
        bokeh_s.append(bokeh_own())
    same = []
    for name, _, _ in figures:
        a, b = (np.asarray(Image.open(folder / f"{who}-{name}.png").convert("RGB"))
                for who in ("ours", "bokeh"))
        same.append(float((a == b).all(axis=-1).mean()) if a.shape == b.shape else 0.0)
    return {"figures": len(figures), "ours_s": [round(t, 2) for t in ours_s],
            "bokeh_export_png_s": [round(t, 2) for t in bokeh_s],
            "ratio_median": round(statistics.median(ours_s) / statistics.median(bokeh_s), 3),
            "identical_pixels_min": round(min(same), 6)}


def view_export(n: int, rounds: int, folder: Path) -> dict:
    import torch

    from attnwidget import AttentionView

    torch.manual_seed(0)
    w = torch.rand(1, 2, n, n)
    idx = torch.arange(n)
    w[..., idx, idx] += 50.0  # a diagonal that must survive the pooling
    w /= w.sum(-1, keepdim=True)
    from attnwidget import snapshot

    view = AttentionView.from_tensor(w, threshold=0.05)
    times, snaps = [], []
    for r in range(rounds):
        t0 = time.perf_counter()
        view.export(folder / f"view-{n}-{r}.png")
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        png = snapshot.view_png(view)  # what a display of the view adds (its image/png)
        snaps.append(time.perf_counter() - t0)
    view.close()
    return {"tokens": n, "export_png_s": [round(t, 2) for t in times],
            "median_s": round(statistics.median(times), 2),
            "snapshot_ms_median": round(1000 * statistics.median(snaps), 1),
            "snapshot_kb": round(len(png) / 1024, 1),
            "png_kb": round((folder / f"view-{n}-0.png").stat().st_size / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "report.json")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    from playwright.sync_api import sync_playwright

    from attnwidget import extract_attention
    from attnwidget.models import load_minilm

    result: dict = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                "load_average_at_start": os.getloadavg()},
                    "report": {}, "png_stage": {}, "view_export": {}}
    texts = {n: text_of(n) for n in (128, 510)}
    with tempfile.TemporaryDirectory(prefix="aw-bench-report-") as tmp:
        tmp_path = Path(tmp)
        builds: dict[int, list[dict]] = {128: [], 510: []}
        for r in range(args.rounds):  # alternate sizes: both see the same machine state
            for n in (128, 510):
                builds[n].append(run_report(texts[n], tmp_path / f"report-{n}-{r}"))
                print(n, builds[n][-1], flush=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=find_chromium(), headless=True, args=CHROMIUM_ARGS)
            renders: dict[int, list[dict]] = {128: [], 510: []}
            for r in range(args.rounds):
                for n in (128, 510):
                    renders[n].append(render(browser, tmp_path / f"report-{n}-{r}" / "index.html"))
                    print(n, renders[n][-1], flush=True)
            browser.close()
        for n in (128, 510):
            result["report"][str(n)] = {
                "build": builds[n], "build_median_s": statistics.median(b["wall_s"] for b in builds[n]),
                "html_mb": builds[n][0]["html_mb"],
                "render": renders[n],
                "render_median_ms": statistics.median(x["rendered_ms"] for x in renders[n]),
            }
        rep = result["report"]
        result["targets"] = {
            "html_mb_510_at_most_10": rep["510"]["html_mb"],
            "build_ratio_510_over_128_at_most_2": round(rep["510"]["build_median_s"]
                                                        / rep["128"]["build_median_s"], 3),
            "render_ratio_510_over_128_at_most_2": round(rep["510"]["render_median_ms"]
                                                         / rep["128"]["render_median_ms"], 3),
        }
        model, tok = load_minilm()
        for n in (128, 510):
            maps = extract_attention(model, texts[n], tok)
            result["png_stage"][str(n)] = png_stage(maps, args.rounds, tmp_path)
            print("png", n, result["png_stage"][str(n)], flush=True)
        for n in (512, 4096):
            result["view_export"][str(n)] = view_export(n, args.rounds, tmp_path)
            print("view.export", result["view_export"][str(n)], flush=True)
        result["targets"]["png_stage_ratio_at_most_1_5"] = {
            n: v["ratio_median"] for n, v in result["png_stage"].items()}
        result["targets"]["view_export_ratio_4096_over_512_below_2"] = round(
            result["view_export"]["4096"]["median_s"] / result["view_export"]["512"]["median_s"], 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["targets"], indent=2))


if __name__ == "__main__":
    main()
