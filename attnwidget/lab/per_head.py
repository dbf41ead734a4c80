"""Per-head visualisation with full context (handout ``002``): heads, not their average.

The guide's point: plot every head on its own, say which sequence it is, and
treat a head average as what it is (an average, which turns sharp heads that
look at different keys into a uniform-looking map). What it names that the
core supports, under the guide's words::

    from attnwidget.lab.per_head import (
        row_std, sharpness_grade, head_average, kl_divergence_matrix, caption, per_head_figure,
    )
    row_std(maps.layer(0))                # [heads]: mean over rows of the row's std
    sharpness_grade(maps.layer(0))        # "SHARP" / "MEDIUM" / "UNIFORM" per head
    avg = head_average(maps)              # an AttentionMaps marked as a head AVERAGE
    kl_divergence_matrix(maps.layer(0))   # [heads, heads], nats
    per_head_figure(maps, layer=0, sequence_label="WikiText-2 validation excerpt",
                    save_path="attention_with_context.html")
    print(diagnostic_summary(maps, layer=-1))   # "ATTENTION DIAGNOSTIC SUMMARY"
    generate_interpretability_outputs(model=model, sample_batch=val_batch, tokenizer=tokenizer)

The guide's input modes are :func:`load_samples` (``mode="text"``,
``"validation"`` with a local file or :func:`reference_manual`, ``"random"``),
and on the command line ``python -m attnwidget report --mode validation
--dataset FILE`` (:mod:`attnwidget.report`).

About the guide's numbers: its summary prints ``row_std = 0.234`` for a head
over 128 keys, which cannot happen. A row's weights sum to 1, so their
standard deviation is largest for a one-hot row, ``sqrt(n - 1) / n``: 0.088 at
128 keys (0.234 needs rows of at most 16 keys). That bound is per row, over the
keys the row may see: a causal record's early rows see few keys, so its mean
row_std can reach more (0.152 at 128 tokens; ``DiagnosticSummary.max_row_std``
gives a record's own bound). :func:`row_std` follows the
definition; the grade uses the std relative to that one-hot maximum, which
means the same at every length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attnwidget.inputs import load_samples, reference_manual
from attnwidget.lab._common import index, named, save, sequences
from attnwidget.maps import AttentionMaps
from attnwidget.metrics import GRADES, head_sharpness, kl_divergence_matrix, sharpness_grade
from attnwidget.study import diagnostic_summary, sequence_block

__all__ = [
    "GRADES",
    "caption",
    "diagnostic_summary",
    "generate_interpretability_outputs",
    "head_average",
    "kl_divergence_matrix",
    "load_samples",
    "per_head_figure",
    "reference_manual",
    "row_std",
    "sharpness_grade",
]

def row_std(attention: Any, *, relative: bool = False, causal: bool = False) -> Any:
    """The guide's ``row_std`` per head: mean over query rows of the std of the row's weights.

    ``attention``: ``[Q, K]``, ``[heads, Q, K]``, ``[layers, heads, Q, K]`` or
    an AttentionMaps; returns a float or an array of the leading shape (one
    value per head). Over ``n`` visible keys the value lies in
    ``[0, sqrt(n - 1) / n]``: 0 for uniform rows, the maximum for one-hot
    rows (0.088 at 128 keys, so the guide's 0.234 there is impossible); a causal
    record's mean can reach more, its early rows seeing few keys.
    ``relative=True`` divides each row's std by that maximum: 0 uniform,
    1 one-hot, comparable across lengths (what :func:`sharpness_grade` grades).
    ``causal=True`` counts only the keys each query may see.
    This is :func:`attnwidget.metrics.head_sharpness`.
    """
    return head_sharpness(attention, relative=relative, causal=causal)


def _as_maps(attention: Any) -> AttentionMaps:
    return attention if isinstance(attention, AttentionMaps) else AttentionMaps.from_tensor(attention)


def head_average(attention: Any, heads: list[int] | None = None) -> AttentionMaps:
    """The mean over heads per layer, as an AttentionMaps marked as an AVERAGE ``[layers, 1, Q, K]``.

    ``attention``: an AttentionMaps, or weights ``[heads, Q, K]`` /
    ``[layers, heads, Q, K]``. ``heads``: which heads to average (default all).
    The result's head name says "mean of N heads" and its ``averaged_heads``
    lists them, so figures and the widget label it as an average, never as a
    head (:meth:`attnwidget.AttentionMaps.head_mean`). Its ``row_std`` is
    usually far below its heads' (the guide's "averaging destroys patterns").
    """
    return _as_maps(attention).head_mean(heads)


def caption(
    maps: AttentionMaps, layer: int = 0, head: int | None = None, *, sequence_label: str | None = None,
    what: str | None = None,
) -> str:
    """A figure caption that says what the sequence is, as the guide asks.

    ``sequence_label`` names the source (e.g. "WikiText-103 validation
    excerpt"); then the token count and the provenance line of
    :func:`attnwidget.plots.caption`: model, layer, which head (or "head
    average"), whether a causal mask hides the future, and the start of the
    text (:data:`attnwidget.maps.CAPTION_TEXT_CHARS`). ``layer``/``head`` may
    be negative (counted from the end); ``head=None`` means the head average. ``what``
    overrides the head's words (a figure of every head: "every head (12)").
    """
    from attnwidget.plots import caption as provenance
    from attnwidget.tokens import show_invisible

    if not isinstance(maps, AttentionMaps):
        raise TypeError(f"maps: expected an AttentionMaps, got {type(maps).__name__}")
    li = index(layer, maps.n_layers, "layer")
    hi = None if head is None else index(head, maps.n_heads, "head")
    label = f"{show_invisible(str(sequence_label))} " if sequence_label else ""
    line = provenance(maps, li, hi) if what is None else maps.provenance(li, hi, what=what)
    n = len(maps.query_tokens)
    count = f"({n} token{'s' if n != 1 else ''})"  # as the provenance line spells it
    # a sampled record's provenance already gives the count: once is enough
    return f"{label}{'' if count in line else count + ' · '}{line}"


def per_head_figure(
    attention: Any,
    layer: int = 0,
    *,
    sequence_label: str | None = None,
    ncols: int = 4,
    save_path: str | Path | None = None,
) -> Any:
    """The guide's figure, one layer, top to bottom; returns a bokeh layout.

    1. the sequence: :func:`caption` and the tokens;
    2. every head on its own (titles: entropy and sharpness grade);
    3. the head average, titled as an AVERAGE, beside each head's ``row_std``
       and grade and the average's, so the loss of sharpness is in numbers;
    4. the KL divergence between heads (nats; :func:`kl_divergence_matrix`).

    ``attention``: an AttentionMaps (tokens, text and model name come with it)
    or weights ``[heads, Q, K]`` / ``[layers, heads, Q, K]`` (tokens are then
    positions). ``layer`` may be negative. ``save_path``: ``.html``, ``.png`` or ``.svg``.
    """
    from bokeh.layouts import column, row
    from bokeh.models import Div

    from attnwidget.plots import heads_grid, matrix_figure, similarity_matrix
    from attnwidget.plots.figures import average_title

    maps = _as_maps(attention)
    li = index(layer, maps.n_layers, "layer")
    one = maps.select(layers=[li])
    w = one.layer(0)  # [H, Q, K]
    average = one.head_mean()
    causal = maps.causal
    stds, grades = row_std(w, causal=causal), sharpness_grade(w, causal=causal)
    avg_w = average.head(0, 0)
    avg_std, avg_grade = row_std(avg_w, causal=causal), sharpness_grade(avg_w, causal=causal)

    def div(text: str, width: int = 900) -> Any:
        # Div.text is HTML: token text reaches it only through html.escape
        import html

        return Div(text=html.escape(text).replace("\n", "<br>"), width=width)

    tokens = " | ".join(maps.query_display[:64]) + (" …" if len(maps.query_display) > 64 else "")
    # the figure shows every head (the average is one panel among them): the header says so
    every = f"every head ({maps.n_heads}) and their average"
    header = div(f"{caption(maps, li, None, sequence_label=sequence_label, what=every)}\nTokens: {tokens}")
    heads = heads_grid(maps, li, ncols=ncols, include_average=False)  # titled with the layer's own number
    avg_fig = matrix_figure(avg_w, maps.query_display, maps.key_display,
                            average_title(f"{maps.layer_names[li]} ·", maps.n_heads),
                            adaptive=True, size=320)
    lines = [f"{maps.head_names[h]}: row_std = {float(stds[h]):.4f}  [{grades[h]}]" for h in range(len(w))]
    lines.append(f"AVERAGED: row_std = {float(avg_std):.4f}  [{avg_grade}]  (an average, not a head)")
    stats = div("\n".join(lines), width=420)
    kl = similarity_matrix(one, 0, method="kl")
    return save(column(header, heads, row(avg_fig, stats), kl), save_path)


def generate_interpretability_outputs(
    model: Any,
    sample_batch: Any,
    tokenizer: Any = None,
    *,
    layer: int = -1,
    sequence_label: str | None = None,
    save_path: str | Path | None = "attention_with_context.html",
    verbose: bool = True,
) -> dict[str, Any]:
    """The guide's outputs for a paper, from one real batch: its first sequence's record, the
    diagnostic summary, the four-row figure and its caption.

    ``sample_batch``: what a validation loader yields (``(input_ids, target_ids)``,
    ``[batch, seq_len]`` token ids, a mapping of model inputs, or texts); its batch element 0
    is shown, as in the guide (``input_ids[0:1]``), and the caption says which element of how
    many. ``tokenizer``: decodes the tokens (found offline for transformers models and the
    embedded ones). ``layer``: the layer of the figure and the summary (negative from the end).
    ``sequence_label``: what the sequence is ("WikiText-103 validation excerpt"); the caption
    adds the decoded text, the length, the layer and the masking. ``save_path``: the figure
    (``.html``, ``.png`` or ``.svg``; None: not saved). ``verbose`` prints the sequence block
    and the summary, as the guide's script does.

    Returns ``{"maps", "summary" (DiagnosticSummary), "figure", "caption", "path"}``.
    """
    from attnwidget.extract import extract_attention
    from attnwidget.inputs import find_tokenizer

    rows = sequences(sample_batch, "sample_batch")
    if not rows:
        raise ValueError("sample_batch: it holds no sequence")
    tokenizer = find_tokenizer(model, tokenizer)
    maps = extract_attention(model, rows[0], tokenizer)
    # the summary and the figures say what the sequence is: the label, else the argument's name
    labelled = named(maps, sequence_label or (None if isinstance(rows[0], str) else "sample_batch"))
    in_source = bool(sequence_label) and labelled is not maps
    maps = labelled
    ids = rows[0].get("input_ids") if isinstance(rows[0], dict) else rows[0]
    if not maps.text and hasattr(ids, "tolist") and callable(getattr(tokenizer, "decode", None)):
        # ids carry no text: decode it, so that the caption can quote the sequence
        flat = ids.reshape(-1).tolist()
        try:
            decoded = tokenizer.decode(flat, skip_special_tokens=True)
        except TypeError:  # a tokenizer without special tokens (attnwidget.tinylm.CharTokenizer)
            decoded = tokenizer.decode(flat)
        maps = maps.with_source(maps.source, text=decoded)
    li = index(layer, maps.n_layers, "layer")
    which = f"batch element 0 of {len(rows)}"
    label = f"{sequence_label} ({which})" if sequence_label else which
    words = which if in_source else label  # where the source names the sequence: not twice
    summary = diagnostic_summary(maps, li)
    fig = per_head_figure(maps, li, sequence_label=words, save_path=save_path)
    text = caption(maps, li, None, sequence_label=words)
    if verbose:
        print(sequence_block(maps, label) + "\n")
        print(summary)
        if save_path is not None:
            print(f"✓ Saved: {save_path}")
    return {"maps": maps, "summary": summary, "figure": fig, "caption": text,
            "path": None if save_path is None else Path(save_path)}
