"""Make the README's pictures (docs/img/) from the real code paths, offline, on MiniLM.

* ``widget.png``: the live widget in a real JupyterLab in headless Chromium (the e2e
  helpers in tests/e2e/lab_server.py), on a sentence, at a previous-token-like head
  (:func:`pick_head`), a query selected, cells under 0.05 dimmed;
* ``report-layer.png``: one layer of ``python -m attnwidget report``'s figures at 510
  tokens (a paragraph read again and again), exported by :class:`attnwidget.plots.Exporter`;
  the grid panels are max-pooled 3 x 3, as in the report. The layer is the one holding
  the head that looks most at the same token in the other readings (:func:`repeat_head`);
* ``snapshot.png``: the PNG a view puts in its display data (:mod:`attnwidget.snapshot`),
  what GitHub or nbconvert show of a notebook with a view, of that head at 510 tokens.

    HF_HUB_OFFLINE=1 python docs/make_pictures.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

SENTENCE = "The quick brown fox jumps over the lazy dog, because the dog was far too lazy to chase it."
PARAGRAPH = ("Attention lets every token look at every other token of the input. Each head learns its own "
             "way of looking: some heads attend to the previous word, some to the first token, some to "
             "the same word wherever it appears again, and some spread their weight over the whole "
             "sentence. Reading the same paragraph again and again makes those heads easy to see.")


def pick_head(maps) -> tuple[int, int]:
    """The head with the highest previous-token score among those that are not one-hot
    (normalised entropy at least 0.2): a pattern anyone can read off the map, and its spread."""
    import numpy as np

    from attnwidget import metrics as M  # noqa: N812

    scores = np.asarray(M.pattern_scores(maps)["previous_token"], dtype=float)  # [L, H]
    spread = np.asarray(M.compute_attention_statistics(maps)["normalized_entropy"], dtype=float)
    scores[~(spread >= 0.2)] = -np.inf
    layer, head = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(layer), int(head)


def repeat_head(maps, period: int) -> tuple[int, int]:
    """The head whose weight falls most on the same position of the other readings of a text
    repeated every ``period`` tokens ([CLS] and [SEP] left out): parallel stripes on the map."""
    import numpy as np

    w = maps.to_numpy()  # [L, H, Q, K]
    n = w.shape[-1]
    q, k = np.arange(n)[:, None], np.arange(n)[None, :]
    inner = (q > 0) & (k > 0) & (q < n - 1) & (k < n - 1)
    stripes = ((k - q) % period == 0) & (k != q) & inner
    score = (w * stripes).sum(-1).mean(-1)  # [L, H]
    layer, head = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(layer), int(head)


def widget_picture(out: Path, layer: int, head: int) -> None:
    from lab_server import CHROMIUM_ARGS, find_chromium, jupyter_server, open_and_run_all, write_notebook
    from playwright.sync_api import expect, sync_playwright

    cell = (f"from attnwidget import AttentionView\nfrom attnwidget.models import load_minilm\n"
            f"model, tok = load_minilm()\n"
            f"view = AttentionView(model, {SENTENCE!r}, tokenizer=tok, layer={layer}, head={head}, "
            f"threshold=0.05, query=5)\nview")
    key = json.dumps(["head", layer, head, 0.05, 5, 5, []], separators=(",", ":"))
    with jupyter_server("lab", ROOT / "e2e-artifacts") as (url, token, root), sync_playwright() as p:
        write_notebook(root / "picture.ipynb", [cell])
        browser = p.chromium.launch(executable_path=find_chromium(), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1500, "height": 1300}).new_page()
        open_and_run_all(page, url, token, "lab", "picture.ipynb")
        view = page.locator(".jp-OutputArea-output .attnwidget")
        expect(view).to_have_attribute("data-rendered", key, timeout=120_000)
        expect(view.locator(".aw-heads .aw-thumb")).to_have_count(12)
        view.locator(".aw-caption").scroll_into_view_if_needed()
        page.mouse.move(0, 0)
        view.screenshot(path=str(out / "widget.png"))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    from attnwidget import AttentionView, extract_attention, plots, report, snapshot
    from attnwidget.models import load_minilm

    model, tok = load_minilm()
    layer, head = pick_head(extract_attention(model, SENTENCE, tok))
    print(f"widget: layer {layer}, head {head}")
    widget_picture(args.out, layer, head)

    long_text = " ".join([PARAGRAPH] * 10)
    ids = tok(long_text, truncation=True, max_length=512)["input_ids"]
    text = tok.decode(ids[1:-1])  # the first 510 word pieces, as text
    maps = extract_attention(model, text, tok)
    layer, head = repeat_head(maps, len(tok(PARAGRAPH)["input_ids"]) - 2)
    print(f"report: {maps.shape[2]} tokens, layer {layer}, head {head}")
    figures = {name: fig for name, _, fig in report.figures_of(maps, report.compute(maps))}
    with plots.Exporter(scale=1) as exporter:
        exporter.export(figures[f"layer{layer}"], args.out / "report-layer.png")
    view = AttentionView(maps, layer=layer, head=head, threshold=0.02, colormap="magma")
    (args.out / "snapshot.png").write_bytes(snapshot.view_png(view))
    for name in ("widget.png", "report-layer.png", "snapshot.png"):
        print(f"wrote {args.out / name}: {(args.out / name).stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
