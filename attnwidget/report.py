"""``python -m attnwidget report``: every layer and head of one input, as an offline HTML report.

Writes into ``--out``:

* ``index.html``: provenance, the per-head metrics table, the pattern summary,
  entropy by layer x head, every layer's heads as small multiples, rollout,
  the last query's history and attention received, and compression hints.
  bokeh's JavaScript is inlined (opens offline); every text from the input or
  the tokenizer is HTML-escaped or handed to bokeh as data.
* ``metrics.json``: the same numbers, from :mod:`attnwidget.metrics`.
* ``figures/*.png``: the figures at print resolution (``--no-png`` skips them),
  made by one headless Chromium for all of them. Without Chromium,
  chromedriver or selenium the report still writes the two files above and
  then stops with one line saying what to install (exit status 1).

Every map is a bokeh ``image`` of the widget's uint8 levels (see
:mod:`attnwidget.plots`): the grid panels are max-pooled to the size they are
drawn at and the rollout to 512 cells a side, so the page's size and the
browser's work stay bounded at any length (about 4 MB at 510 tokens).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from attnwidget.tokens import show_invisible

#: Longest input the report accepts, in characters, before tokenizing (the model's own
#: position limit is checked after tokenizing, with its own message).
MAX_TEXT_CHARS = 20_000


#: Grid panels are drawn this many CSS pixels wide and max-pooled to as many cells a side.
PANEL_PX = 200


class ReportError(Exception):
    """A bad argument: printed as one line, exit status 2."""


def load_model(spec: str) -> tuple[Any, Any]:
    """``minilm``, ``tiny`` or a local transformers folder -> ``(model, tokenizer)``."""
    from attnwidget.models import load_minilm, load_tiny_lm

    if spec == "minilm":
        return load_minilm()
    if spec == "tiny":
        return load_tiny_lm()
    path = Path(spec)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ReportError(
            f"--model: no model at {spec!r}; expected minilm, tiny or a local transformers folder "
            "with a config.json"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    try:
        model = AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # one line, whatever transformers raised
        message = f"--model: could not load {spec!r}: {type(exc).__name__}: {exc}"
        raise ReportError(message.splitlines()[0]) from exc
    return model, tokenizer


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if np.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def compute(maps: Any) -> dict[str, Any]:
    """Everything the report shows, JSON-ready: per-head statistics, pattern, grade, history, hints."""
    from attnwidget import metrics as M  # noqa: N812

    stats = M.compute_attention_statistics(maps)  # dict of [L, H]
    history = M.history_metrics([maps.weights.numpy()], causal=maps.causal)
    return _json({
        "model": maps.model_name, "text": maps.text, "causal": maps.causal,
        "shape": list(maps.shape), "tokens": list(maps.query_tokens),
        "statistics": stats,
        "pattern": M.identify_attention_pattern(maps),
        "sharpness": M.head_sharpness(maps, relative=True),
        "grade": M.sharpness_grade(maps),
        "history": {k: v for k, v in history.items() if isinstance(v, dict)},
        "hints": [{**h, "index": list(h["index"])} for h in M.compression_hints(history)],
    })


def _table(numbers: dict[str, Any], maps: Any) -> str:
    cols = ("mean_entropy", "normalized_entropy", "sparsity_gini", "effective_tokens", "max",
            "diagonal_mean")
    head = "".join(f"<th>{c}</th>" for c in ("layer", "head", "pattern", "grade", *cols))
    rows = []
    for layer in range(maps.n_layers):
        for h in range(maps.n_heads):
            cells = [str(layer), html.escape(show_invisible(maps.head_names[h])),
                     html.escape(str(numbers["pattern"][layer][h])),
                     html.escape(str(numbers["grade"][layer][h]))]
            values = [numbers["statistics"][c][layer][h] for c in cols]
            cells += ["–" if v is None else f"{v:.4g}" for v in values]  # None: an empty map
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table class='metrics'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def figures_of(maps: Any, numbers: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """``(name, section title, bokeh figure)`` of everything the report draws, from ``numbers``
    (:func:`compute`) where it has them, so no metric is computed twice."""
    from attnwidget import plots
    from attnwidget.plots.figures import entropy_figure, layers_grid

    entropy, grades = numbers["statistics"]["mean_entropy"], numbers["grade"]
    figures: list[tuple[str, str, Any]] = [
        ("entropy", "Entropy by layer and head", entropy_figure(maps, entropy))]
    for layer in range(maps.n_layers):
        figures.append((f"layer{layer}", f"Layer {layer}: every head",
                        layers_grid(maps, {layer: (entropy[layer], grades[layer])}, size=PANEL_PX)))
    if maps.shape[2] == maps.shape[3]:
        figures.append(("rollout", "Attention rollout", plots.rollout_figure(maps)))
    last = maps.n_layers - 1
    figures.append(("history", "Last query over the history (last layer, head 0)",
                    plots.last_query_figure(maps, last, 0)))
    figures.append(("received", "Attention received per position (last layer, head 0)",
                    plots.received_figure(maps, last, 0)))
    return figures


def page(maps: Any, text: str, numbers: dict[str, Any], figures: list[tuple[str, str, Any]]) -> str:
    """The report's HTML: bokeh's JavaScript inlined (only the parts the figures use), every
    text from the input or the tokenizer escaped or handed to bokeh as data."""
    from collections import Counter

    from bokeh.embed import components
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.resources import INLINE

    models = [fig for _, _, fig in figures]
    script, divs = components(models)
    resources = "".join(bundle_for_objs_and_resources(models, INLINE))  # bokeh's core, not its widgets
    counts = Counter(p for row in numbers["pattern"] for p in row)
    hints = "".join(
        f"<li>{html.escape(str(h['index']))}: {html.escape(h['hint'])} ({html.escape(h['reason'])})</li>"
        for h in numbers["hints"]
    ) or "<li>none</li>"
    sections = "".join(
        f"<h2>{html.escape(title)}</h2>{div}" for (_, title, _), div in zip(figures, divs, strict=True)
    )
    model_name = html.escape(show_invisible(str(maps.model_name)))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>attnwidget report</title>
{resources}
<style>body{{font-family:sans-serif;margin:2em}} table.metrics{{border-collapse:collapse;font-size:12px}}
table.metrics td,table.metrics th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}
p.text,p.provenance{{overflow-wrap:anywhere}}</style>
</head><body>
<h1>Attention report</h1>
<p class="provenance">model: <bdi>{model_name}</bdi> · {maps.n_layers} layers ×
{maps.n_heads} heads · {maps.shape[2]} tokens · {"causal mask" if maps.causal else "no causal mask"}</p>
<p class="text">text: <bdi>{html.escape(show_invisible(text))}</bdi></p>
<h2>Pattern summary</h2><p>{html.escape(", ".join(f"{k}: {v}" for k, v in counts.most_common()))}</p>
<h2>Compression hints</h2><ul>{hints}</ul>
{sections}
<h2>Every head</h2>{_table(numbers, maps)}
{script}
</body></html>
"""


def build(text: str, model_spec: str, out: Path, *, png: bool = True, progress: bool = True) -> Path:
    """Write the report for ``text`` on ``model_spec`` into ``out``; returns ``out / "index.html"``.

    Raises :class:`ReportError` for a bad argument (nothing written) and
    :class:`attnwidget.plots.BrowserUnavailableError` when PNGs were asked for
    and cannot be made (``index.html`` and ``metrics.json`` are written by then).
    """
    from tqdm.auto import tqdm

    from attnwidget.extract import extract_attention
    from attnwidget.plots import Exporter, check_browser

    if not isinstance(text, str) or not text.strip():
        raise ReportError(f"text: expected a non-empty string, got {text!r}")
    if len(text) > MAX_TEXT_CHARS:
        raise ReportError(f"text: {len(text)} characters, the report takes at most {MAX_TEXT_CHARS}")
    model, tokenizer = load_model(model_spec)
    try:
        maps = extract_attention(model, text, tokenizer)
    except ValueError as exc:  # too long for the model, characters the tokenizer lacks, ...
        raise ReportError(str(exc).splitlines()[0]) from exc
    out.mkdir(parents=True, exist_ok=True)
    numbers = compute(maps)
    (out / "metrics.json").write_text(json.dumps(numbers, indent=1, allow_nan=False) + "\n")
    figures = figures_of(maps, numbers)
    index = out / "index.html"
    index.write_text(page(maps, text, numbers, figures), encoding="utf-8")
    if png:
        check_browser()  # before the folder: no browser, no empty figures/
        (out / "figures").mkdir(exist_ok=True)
        with Exporter(scale=2) as exporter:  # one browser for every figure
            for name, _, fig in tqdm(figures, desc="report: PNG figures", disable=not progress):
                exporter.export(fig, out / "figures" / f"{name}.png")
    return index


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The report's options, shared by ``attnwidget report`` and ``python -m attnwidget.report``."""
    parser.add_argument("text", help="the input text (quote it)")
    parser.add_argument("--model", default="minilm",
                        help="minilm (embedded all-MiniLM-L6-v2), tiny (the embedded induction LM) or "
                             "a local transformers model folder (default: minilm)")
    parser.add_argument("--out", default="report", type=Path, help="output folder (default: report/)")
    parser.add_argument("--no-png", action="store_true",
                        help="skip the PNG figures (they need chromium, chromedriver and selenium)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Build the report from parsed arguments; exit status 0, 2 with one line on stderr for a bad
    argument, 1 with one line when the PNG figures need a browser that is not there."""
    from attnwidget.plots import BrowserUnavailableError

    try:
        index = build(args.text, args.model, args.out, png=not args.no_png, progress=not args.quiet)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrowserUnavailableError as exc:  # the page and the numbers are written: say so, in one line
        print(f"wrote {args.out / 'index.html'} and {args.out / 'metrics.json'}")
        print(f"error: no PNG figures: {exc}; or add --no-png to skip them", file=sys.stderr)
        return 1
    print(f"wrote {index}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="attnwidget report",
        description="Write an offline HTML report of every layer's and head's attention for one input.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
