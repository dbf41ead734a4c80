"""``python -m attnwidget report``: every layer and head of one input, as an offline HTML report.

Writes into ``--out``:

* ``index.html``: provenance (the record's, then each section's map as the widget and
  :mod:`attnwidget.plots` title it), the per-head metrics table, the pattern summary,
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
from typing import TYPE_CHECKING, Any

import numpy as np

from attnwidget.maps import average_label
from attnwidget.tokens import show_invisible

if TYPE_CHECKING:
    from attnwidget.plots.export import Components

#: Longest input the report accepts, in characters, before tokenizing (the model's own
#: position limit is checked after tokenizing, with its own message).
MAX_TEXT_CHARS = 20_000
#: ``--dataset`` name of the one dataset that needs no file: the Python reference manual
#: (:func:`attnwidget.inputs.reference_manual`), real prose on any machine, offline.
BUILTIN_DATASET = "python-reference"


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
        "pattern": M.identify_attention_pattern(maps, uniform="spread"),  # the same at any length
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
        figures.append((f"layer{layer}", f"Layer {layer}: every head (rows: queries, columns: keys; colour: "
                        "the square root of the weight, each panel on its own scale)",
                        layers_grid(maps, {layer: (entropy[layer], grades[layer])}, size=PANEL_PX,
                                    sqrt=True)))
    if maps.shape[2] == maps.shape[3]:
        figures.append(("rollout", "Attention rollout", plots.rollout_figure(maps)))
    last = maps.n_layers - 1
    figures.append(("history", "Last query over the history (last layer, head 0)",
                    plots.last_query_figure(maps, last, 0)))
    figures.append(("received", "Attention received per position (last layer, head 0)",
                    plots.received_figure(maps, last, 0)))
    return figures


def _provenance_p(line: str | None) -> str:
    # the line is plain text (names and input included): escaped, in a <bdi> so no bidi run leaks out
    return "" if line is None else f'<p class="provenance"><bdi>{html.escape(line)}</bdi></p>'


def section_provenance(maps: Any, name: str) -> str | None:
    """The provenance line (:meth:`AttentionMaps.provenance`, as the widget and the figures title
    a map) of the map(s) that section ``name`` of :func:`figures_of` draws; None for the entropy
    figure, which covers every layer and head."""
    last = maps.n_layers - 1
    if name.startswith("layer"):
        return maps.provenance(int(name.removeprefix("layer")),
                               what=f"each of {maps.n_heads} heads, then the {average_label(maps.n_heads)}")
    if name == "rollout":
        return maps.provenance(last, rollout=True)
    if name in ("history", "received"):
        return maps.provenance(last, 0)
    return None


def page(maps: Any, text: str, numbers: dict[str, Any], figures: list[tuple[str, str, Any]],
         notes: str = "", serialized: Components | None = None) -> str:
    """The report's HTML: bokeh's JavaScript inlined (only the parts the figures use), every
    text from the input or the tokenizer escaped or handed to bokeh as data. ``serialized``:
    the figures' :class:`attnwidget.plots.export.Components`, when the caller has them (the
    PNG page reuses them)."""
    from collections import Counter

    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.resources import INLINE

    from attnwidget.plots.export import Components

    models = [fig for _, _, fig in figures]
    serialized = serialized or Components(models)
    script, divs = serialized.script(), serialized.divs
    resources = "".join(bundle_for_objs_and_resources(models, INLINE))  # bokeh's core, not its widgets
    counts = Counter(p for row in numbers["pattern"] for p in row)
    hints = "".join(
        f"<li>{html.escape(str(h['index']))}: {html.escape(h['hint'])} ({html.escape(h['reason'])})</li>"
        for h in numbers["hints"]
    ) or "<li>none</li>"
    sections = "".join(
        f"<h2>{html.escape(title)}</h2>{_provenance_p(section_provenance(maps, name))}{div}"
        for (name, title, _), div in zip(figures, divs, strict=True)
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
{maps.n_heads} heads · {maps.shape[2]} tokens · {html.escape(maps.masking())}</p>
<p class="text">text: <bdi>{html.escape(show_invisible(text))}</bdi></p>
{notes}
<h2>Pattern summary</h2><p>{html.escape(", ".join(f"{k}: {v}" for k, v in counts.most_common()))}</p>
<h2>Compression hints</h2><ul>{hints}</ul>
{sections}
<h2>Every head</h2>{_table(numbers, maps)}
{script}
</body></html>
"""


def build(
    text: str | None, model_spec: str, out: Path, *, png: bool = True, progress: bool = True,
    mode: str = "text", dataset: str | None = None, seq_len: int | None = None, index: int = 0,
    seed: int = 0, num_samples: int = 1, layer: int = -1, console: bool = False,
) -> Path:
    """Write the report into ``out``; returns ``out / "index.html"``.

    The sequence comes from ``mode`` (:mod:`attnwidget.inputs`): ``text`` (``text``),
    ``validation`` (window ``index`` of ``seq_len`` tokens of ``dataset``) or ``random``.
    The page shows the first sequence; with every mode the report adds 002's diagnostic
    summary of ``layer`` (``diagnostic.txt``) and 004's long-context study over the
    ``num_samples`` sequences in ``out/study/`` (figures, ``study.json``, ``insights.txt``).
    ``console`` prints the summary and the insights too.

    Raises :class:`ReportError` for a bad argument (nothing written) and
    :class:`attnwidget.plots.BrowserUnavailableError` when PNGs were asked for
    and cannot be made (``index.html`` and ``metrics.json`` are written by then).
    """

    from attnwidget.inputs import extract_sample, load_samples
    from attnwidget.plots import Exporter, check_browser
    from attnwidget.plots.export import Components
    from attnwidget.study import diagnostic_summary, sequence_block, study_samples

    if mode == "text":
        if not isinstance(text, str) or not text.strip():
            raise ReportError(f"text: expected a non-empty string, got {text!r}")
        if len(text) > MAX_TEXT_CHARS:
            raise ReportError(f"text: {len(text)} characters, the report takes at most {MAX_TEXT_CHARS}")
    elif text is not None:
        raise ReportError(f"text: --mode {mode} reads its sequences from --dataset or draws them; "
                          f"leave the text out (got {text!r:.40})")
    if dataset == BUILTIN_DATASET and not Path(dataset).exists():
        from attnwidget.inputs import reference_manual

        dataset = reference_manual()
    elif dataset is not None and mode == "validation" and not Path(dataset).exists():
        raise ReportError(
            f"--dataset: no file at {dataset!r}; expected a text or JSON-lines file (attnwidget works "
            f"offline and downloads nothing: for real prose without a file, --dataset {BUILTIN_DATASET})")
    model, tokenizer = load_model(model_spec)
    try:
        samples = load_samples(tokenizer, mode, text=text, dataset=dataset, seq_len=seq_len, index=index,
                               seed=seed, num_samples=num_samples, model=model)
        records = [extract_sample(model, s, tokenizer) for s in samples]
        maps = records[0]
        summary = diagnostic_summary(maps, layer)
        study = study_samples(records, layer=layer)
    except (ValueError, IndexError) as exc:  # bad source, too long, unknown characters, layer range
        message = str(exc).splitlines()[0]
        raise ReportError(message.replace("layer: ", "--layer: ", 1) if message.startswith("layer:")
                          else message) from exc
    out.mkdir(parents=True, exist_ok=True)
    numbers = compute(maps)
    numbers["diagnostic"] = _json(summary.to_dict())
    (out / "metrics.json").write_text(json.dumps(numbers, indent=1, allow_nan=False) + "\n")
    (out / "diagnostic.txt").write_text(str(summary) + "\n", encoding="utf-8")
    if console:
        print(sequence_block(maps) + "\n")  # 002's block: what the sequence is, before its numbers
        print(summary)
        print("\n".join(study.insights) or "No compression insight: no rule fired.")
    figures = figures_of(maps, numbers)
    notes = (f"<h2>Diagnostic summary</h2><pre>{html.escape(str(summary))}</pre>"
             f"<h2>Long-context study ({len(records)} sequence{'s' if len(records) != 1 else ''})</h2>"
             f"<pre>{html.escape(chr(10).join(study.insights) or 'No compression insight: no rule fired.')}"
             "</pre><p>Figures and numbers: <a href='study/study.json'>study/</a></p>")
    index_page = out / "index.html"
    serialized = Components([fig for _, _, fig in figures])  # once, for this page and the PNGs
    index_page.write_text(page(maps, maps.text or "", numbers, figures, notes, serialized), encoding="utf-8")
    study.save(out / "study", png=False)
    if png:
        check_browser()  # before the folder: no browser, no empty figures/
        (out / "figures").mkdir(exist_ok=True)
        items = [(fig, out / "figures" / f"{name}.png") for name, _, fig in figures]
        items += [(fig, out / "study" / f"{stem}.png") for stem, _, fig in study.figures()]
        if progress:
            print(f"report: drawing {len(items)} PNG figures in a headless browser", file=sys.stderr)
        with Exporter(scale=2) as exporter:  # one browser, one page for every figure
            exporter.export_all(items, serialized)
    return index_page


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The report's options, shared by ``attnwidget report`` and ``python -m attnwidget.report``."""
    parser.add_argument("text", nargs="?", default=None,
                        help="the input text (quote it); only with --mode text, the default")
    # handout 002 spells it as an option: --mode text --text "..."
    parser.add_argument("--text", dest="text_option", default=None, metavar="TEXT",
                        help="the input text, as an option instead of the positional argument")
    parser.add_argument("--mode", choices=("text", "validation", "random"), default="text",
                        help="where the sequence comes from: the text, window --index of --dataset, "
                             "or random token ids (seeded; for debugging)")
    parser.add_argument("--dataset", default=None,
                        help="a local text file or JSON-lines file (records under 'text') "
                             f"for --mode validation, or {BUILTIN_DATASET}: the Python reference "
                             "manual every Python installs (real prose, offline)")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="tokens per sequence for validation and random (default 128, at most what "
                             "the model takes)")
    parser.add_argument("--index", type=int, default=0, help="the first window / sample (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --mode random (default 0)")
    parser.add_argument("--num-samples", type=int, default=1,
                        help="how many sequences the long-context study reads (default 1)")
    parser.add_argument("--layer", type=int, default=-1,
                        help="the layer of the diagnostic summary and the study's figures "
                             "(default -1, the last)")
    parser.add_argument("--model", default="minilm",
                        help="minilm (embedded all-MiniLM-L6-v2), tiny (the embedded induction LM) or "
                             "a local transformers model folder (default: minilm)")
    parser.add_argument("--out", default="report", type=Path, help="output folder (default: report/)")
    parser.add_argument("--no-png", action="store_true",
                        help="skip the PNG figures (they need chromium, chromedriver and selenium)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar, and no diagnostic summary or insights on the console "
                             "(they are in the output folder either way)")


def run(args: argparse.Namespace) -> int:
    """Build the report from parsed arguments; exit status 0, 2 with one line on stderr for a bad
    argument, 1 with one line when the PNG figures need a browser that is not there."""
    from attnwidget.plots import BrowserUnavailableError

    text = args.text
    if args.text_option is not None:
        if text is not None and text != args.text_option:
            print(f"error: text: given twice, as {text!r:.40} and as --text {args.text_option!r:.40}; "
                  "expected one", file=sys.stderr)
            return 2
        text = args.text_option
    try:
        index = build(text, args.model, args.out, png=not args.no_png, progress=not args.quiet,
                      mode=args.mode, dataset=args.dataset, seq_len=args.seq_len, index=args.index,
                      seed=args.seed, num_samples=args.num_samples, layer=args.layer,
                      console=not args.quiet)
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
