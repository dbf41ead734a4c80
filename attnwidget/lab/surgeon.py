"""The Attention Surgeon (handout ``003``): attention by hand, its plots, and the ablations.

Every function the handout names, with its arguments and defaults::

    from attnwidget.lab.surgeon import (
        attention, create_causal_mask, create_reverse_mask, plot_attention_heatmap,
        plot_multihead_attention, analyze_attention_patterns, experiment_scaling_factor,
        compare_masking,
    )
    out, w = attention(Q, K, V, mask=create_causal_mask(n), scale=True)
    analyze_attention_patterns(w[0])        # max (0..1), entropy (nats), diagonal % , local/global
    experiment_scaling_factor()             # the handout's table, measured, next to its numbers
    compare_masking()                       # causal vs no mask vs reverse, trained (~20 s)

The five bonus challenges, worked (from :mod:`attnwidget.scratch`, here under the same names):
``tiled_attention`` (1, flash-style tiling with an online softmax), ``topk_attention``
(2, each query keeps its k strongest keys), ``cross_attention`` (3, queries from one
sequence, keys and values from another), ``multi_query_attention`` (4, one K and V shared
by every head) and ``attention(..., dropout_p=0.1)`` / ``attention_dropout`` (5).

Thin wrappers over the core: :func:`attnwidget.scratch.attention` (the
formula, the mask rule, the ``scale`` rule), :mod:`attnwidget.scratch` masks,
:mod:`attnwidget.metrics`, :mod:`attnwidget.plots` and :mod:`attnwidget.tinylm`.

Where the handout contradicts itself, both readings work: it *builds* masks
as 0 / -inf to add to the scores (:func:`create_causal_mask` returns exactly
that) but *applies* them with ``masked_fill(mask == 0, -inf)``, which reads a
0/1 keep-mask. :func:`attention` tells the forms apart by their values (see
:func:`attnwidget.scratch.attention`): 0 / -inf is added, 0 / 1 is a
keep-mask, bool is True = may attend, and a mask mixing 0, 1 and -inf is refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnwidget import metrics as M  # noqa: N812 (the package's usual short name)
from attnwidget import scratch
from attnwidget.lab._common import distributions, labels, positive_int, save, square
from attnwidget.scratch import (
    attention_dropout,
    cross_attention,
    multi_query_attention,
    tiled_attention,
    topk_attention,
)

__all__ = [
    "GLOBAL_FLOOR",
    "HANDOUT_SCALING_TABLE",
    "MASKINGS",
    "SWEEP_LENGTHS",
    "analyze_attention_patterns",
    "attention",
    "attention_dropout",
    "compare_masking",
    "create_causal_mask",
    "create_reverse_mask",
    "cross_attention",
    "experiment_scaling_factor",
    "multi_query_attention",
    "plot_attention_heatmap",
    "plot_multihead_attention",
    "tiled_attention",
    "topk_attention",
]


# --------------------------------------------------------------------------- Task 1
def attention(
    Q: Any, K: Any, V: Any, mask: Any = None, scale: bool | float = True, *, dropout_p: float = 0.0,
    training: bool = True, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention, ``softmax(Q K^T / sqrt(d_k)) V``: ``(output, attention_weights)``.

    ``Q`` ``[batch, seq_len, d_k]``, ``K`` ``[batch, seq_len, d_k]``, ``V``
    ``[batch, seq_len, d_v]`` (any leading dims, e.g. ``[batch, heads, ...]``;
    torch tensors or numpy arrays). ``mask``: ``[seq_len, seq_len]`` or
    ``[batch, seq_len, seq_len]``, additive 0 / -inf (as :func:`create_causal_mask`
    builds it), a 0/1 keep-mask (as the handout's ``masked_fill(mask == 0, -inf)``
    reads it) or bool (True = may attend). ``scale``: True divides the scores
    by ``sqrt(d_k)``, False leaves them unscaled (the handout's ablation); a
    positive float is taken as the factor itself.

    Returns ``output`` ``[batch, seq_len, d_v]`` and ``attention_weights``
    ``[batch, seq_len, seq_len]`` (torch tensors; rows sum to 1, a fully masked
    row is all 0 where naive softmax gives NaN). This is
    :func:`attnwidget.scratch.attention`, which states the mask rule in full.

    Bonus challenge 5 (attention dropout): ``dropout_p`` zeroes each weight with
    that probability and scales the rest by ``1 / (1 - dropout_p)`` while
    ``training`` (:func:`attnwidget.scratch.attention_dropout`; ``generator``
    for a repeatable draw); the weights returned are the dropped ones, whose
    rows no longer sum to 1.
    """
    return scratch.attention(Q, K, V, mask, scale, dropout_p=dropout_p, training=training,
                             generator=generator)


# --------------------------------------------------------------------------- masks
def _additive(keep: torch.Tensor, device: Any) -> torch.Tensor:
    """bool keep-mask -> the handout's additive float form: 0 where kept, -inf where hidden."""
    return torch.zeros(keep.shape, device=device).masked_fill(~keep.to(device), float("-inf"))


def create_causal_mask(seq_len: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Causal mask ``[seq_len, seq_len]`` float32: 0 on and below the diagonal, -inf above.

    Query i may see keys 0..i (the past and itself); added to the scores it
    removes the future. This is :func:`attnwidget.scratch.causal_mask` (bool,
    True = may attend) in the handout's additive form; :func:`attention`
    accepts either.
    """
    return _additive(scratch.causal_mask(positive_int(seq_len, "seq_len")), device)


def create_reverse_mask(seq_len: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """WRONG on purpose: the reverse mask ``[seq_len, seq_len]``, 0 on and above the diagonal, -inf below.

    Query i sees itself and the *future* (keys i..n-1), so a language model
    trained with it reads the token it must predict (see :func:`compare_masking`).
    :func:`attnwidget.scratch.reverse_mask` in additive form.
    """
    return _additive(scratch.reverse_mask(positive_int(seq_len, "seq_len")), device)


# --------------------------------------------------------------------------- Task 2
def plot_attention_heatmap(
    attention_weights: Any, tokens: Sequence[str], title: str = "Attention Weights",
    *, save_path: str | Path | None = None,
) -> Any:
    """One head's weights ``[seq_len, seq_len]`` as a heat map, tokens on both axes; a bokeh figure.

    Queries run down, keys across, colours span 0..1, hover shows the tokens
    and the weight. For the output of :func:`attention` pick one matrix first
    (``weights[0]``, or ``weights[0, h]`` for head h). ``save_path``: also write
    the figure (``.html``, ``.png`` or ``.svg``).
    """
    from attnwidget.maps import AttentionMaps
    from attnwidget.plots import matrix_figure

    w = square(attention_weights, "attention_weights", 2, "[seq_len, seq_len] (pick one: weights[0])")
    names = labels(tokens, w.shape[0], "tokens", "position")
    distributions(w, "attention_weights")
    # a causal mask's cells hatched, as plot_multihead_attention draws them (a record reads every
    # weight above the diagonal being exactly 0 as causal), not as weights of 0
    record = AttentionMaps.from_tensor(np.asarray(w, dtype=np.float32)[None, None], names)
    visible = record.visible_cells() if record.causal else None
    return save(matrix_figure(w, names, names, str(title), visible=visible), save_path)


def plot_multihead_attention(
    attention_weights: Any, tokens: Sequence[str], num_heads: int,
    *, ncols: int = 4, save_path: str | Path | None = None,
) -> Any:
    """Every head ``[num_heads, seq_len, seq_len]`` in a grid (``ncols`` per row); a bokeh grid.

    Each panel is titled with its head, its mean row entropy (nats) and its
    sharpness grade; colours span each head's own range, so a diffuse head is
    still readable. Heads only: no average panel (an average of heads is not a
    head). ``num_heads`` must equal the first axis. This is
    :func:`attnwidget.plots.heads_grid` on the weights.
    """
    from attnwidget.maps import AttentionMaps
    from attnwidget.plots import heads_grid

    w = square(attention_weights, "attention_weights", 3, "[num_heads, seq_len, seq_len]")
    num_heads = positive_int(num_heads, "num_heads")
    if num_heads != w.shape[0]:
        raise ValueError(
            f"num_heads: expected {w.shape[0]}, the first axis of attention_weights {w.shape}, "
            f"got {num_heads}"
        )
    names = labels(tokens, w.shape[-1], "tokens", "position")
    maps = AttentionMaps.from_tensor(w, names, layer_names=["attention"],
                                     model_name="attention from scratch")
    grid = heads_grid(maps, 0, ncols=min(positive_int(ncols, "ncols"), num_heads), include_average=False)
    return save(grid, save_path)


#: Below this share of mass outside the window, local_vs_global is infinite: float32 rows
#: sum to 1 only to ~1e-7 per entry, so a smaller "global" share is rounding, not attention.
GLOBAL_FLOOR = 1e-6


def analyze_attention_patterns(attention_weights: Any, *, window: int = 2) -> dict[str, Any]:
    """The handout's four statistics of ``attention_weights`` ``[seq_len, seq_len]`` (or ``[..., n, n]``).

    * ``max_attention``: the largest weight, in [0, 1];
    * ``entropy``: Shannon entropy of the rows, ``-sum p ln p`` in nats,
      averaged over query rows (``ln(seq_len)`` = uniform, 0 = one-hot);
    * ``diagonal_mass``: percentage (0..100) of the attention on the diagonal,
      i.e. on the query's own position;
    * ``local_vs_global``: ratio of the mass within ``window`` positions of the
      diagonal (``|i - j| <= window``, default 2) to the mass further away;
      ``inf`` when (almost, see :data:`GLOBAL_FLOOR`) nothing goes further,
      0 when nothing stays local.

    Floats for one matrix, arrays ``[...]`` for a stack (the ``[batch, seq, seq]``
    that :func:`attention` returns gives one value per batch element).

    :func:`attnwidget.metrics.analyze_attention_patterns` reports other units
    for the same quantities, and keeps them: its ``max_attention`` is the
    *mean of the row maxima* (how peaked a typical row is), its
    ``diagonal_mass`` a fraction in [0, 1], its ``local_vs_global`` the local
    *share* ``s`` in [0, 1]. Here: the maximum, ``100 x`` the fraction, and
    ``s / (1 - s)``.
    """
    w = square(attention_weights, "attention_weights", max(2, _ndim(attention_weights)),
               "[seq_len, seq_len] (or a stack [..., seq_len, seq_len])")
    distributions(w, "attention_weights")
    core = M.analyze_attention_patterns(w, window=window)
    share = np.asarray(core["local_vs_global"], dtype=np.float64)
    outside = 1.0 - share
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(outside <= GLOBAL_FLOOR, np.inf, share / np.maximum(outside, GLOBAL_FLOOR))
    out = {
        "max_attention": M.compute_attention_statistics(w)["max"],
        "entropy": core["entropy"],
        "diagonal_mass": np.asarray(core["diagonal_mass"], dtype=np.float64) * 100.0,
        "local_vs_global": ratio,
    }
    return {k: (float(v) if np.ndim(v) == 0 else np.asarray(v)) for k, v in out.items()}


def _ndim(x: Any) -> int:
    return int(getattr(x, "ndim", np.ndim(x)))


# --------------------------------------------------------------------------- Task 3a
#: The handout's "Expected Results" table: d_k -> (max without scaling, max with scaling).
HANDOUT_SCALING_TABLE: dict[int, tuple[float, float]] = {
    16: (0.8, 0.5), 64: (0.95, 0.5), 256: (0.99, 0.5), 1024: (1.0, 0.5),
}
#: Key counts of the length sweep that explains the handout's "max ~ 0.5 with scaling".
SWEEP_LENGTHS = (2, 4, 8, 16, 64, 256)


def experiment_scaling_factor(
    d_k_values: Sequence[int] = (16, 64, 256, 1024),
    *,
    seq_len: int = 64,
    n_queries: int = 256,
    seed: int = 0,
    verbose: bool = True,
) -> dict[str, Any]:
    """The handout's scaling table, measured: largest weight, gradient, entropy, with and without the scale.

    For each ``d_k`` in ``d_k_values``, ``n_queries`` random queries attend
    over ``seq_len`` random keys (entries N(0, 1)); see
    :func:`attnwidget.scratch.scaling_experiment`, which this wraps. Prints
    (``verbose``) the measured values next to the handout's and a sweep over
    the sequence length, and returns:

    * the columns of :func:`~attnwidget.scratch.scaling_experiment` (one row per
      ``d_k`` and ``scaled``): ``d_k``, ``scaled``, ``score_std``,
      ``max_weight`` (mean over queries of the row's largest weight),
      ``grad_norm`` (size of the softmax's gradient at the scores), ``entropy`` (nats);
    * ``handout_max_weight``: the handout's value for that row (None where its
      table has no such ``d_k``);
    * ``by_length``: ``{"seq_len": [...], "max_weight": [...]}``, the scaled
      largest weight at ``d_k = 64`` for the key counts in :data:`SWEEP_LENGTHS`.

    Where it differs from the handout and why: with the scale the scores have
    unit variance at every ``d_k``, so the largest weight does not depend on
    ``d_k`` (the handout is right that it is stable) but on how many keys
    share the softmax: about 0.5 at 4 keys, about 0.1 at 64. The handout's
    "Max ~ 0.5" is a 4-key row; ``experiment_scaling_factor(seq_len=4)``
    reproduces its whole table (unscaled too) within 0.1.
    Without the scale the scores' spread grows as ``sqrt(d_k)`` and the
    largest weight climbs towards 1 while the gradient collapses.
    """
    if isinstance(d_k_values, (str, bytes)) or not isinstance(d_k_values, Sequence) or not d_k_values:
        raise ValueError(f"d_k_values: expected a non-empty list of positive ints, got {d_k_values!r}")
    dims = tuple(positive_int(d, "d_k_values") for d in d_k_values)
    seq_len = positive_int(seq_len, "seq_len")
    n_queries = positive_int(n_queries, "n_queries")
    result: dict[str, Any] = scratch.scaling_experiment(dims, n_queries=n_queries, n_keys=seq_len, seed=seed)
    result["handout_max_weight"] = [
        HANDOUT_SCALING_TABLE[d][int(s)] if d in HANDOUT_SCALING_TABLE else None
        for d, s in zip(result["d_k"], result["scaled"], strict=True)
    ]
    sweep = [scratch.scaling_experiment((64,), n_queries=n_queries, n_keys=n, seed=seed)
             for n in SWEEP_LENGTHS]
    result["by_length"] = {
        "seq_len": list(SWEEP_LENGTHS),
        "max_weight": [s["max_weight"][s["scaled"].index(True)] for s in sweep],
    }
    if verbose:
        print(_scaling_report(result, seq_len))
    return result


def _scaling_report(r: dict[str, Any], seq_len: int) -> str:
    rows = {(d, s): i for i, (d, s) in enumerate(zip(r["d_k"], r["scaled"], strict=True))}

    def handout(v: float | None) -> str:
        return "   -" if v is None else f"{v:4.2f}"

    lines = [
        f"Largest attention weight (mean over queries of the row maximum), {seq_len} keys per row:",
        "",
        "  d_k | without scaling: measured  handout | with scaling: measured  handout"
        " | gradient size: without   with",
    ]
    for d in dict.fromkeys(r["d_k"]):
        a, b = rows[(d, False)], rows[(d, True)]
        lines.append(
            f"{d:5d} | {r['max_weight'][a]:25.3f}  {handout(r['handout_max_weight'][a]):>7s} | "
            f"{r['max_weight'][b]:22.3f}  {handout(r['handout_max_weight'][b]):>7s} | "
            f"{r['grad_norm'][a]:22.2e} {r['grad_norm'][b]:6.2e}"
        )
    sweep = ", ".join(f"{n} keys {m:.2f}" for n, m in
                      zip(r["by_length"]["seq_len"], r["by_length"]["max_weight"], strict=True))
    lines += [
        "",
        "Where the measured values differ from the handout's, the sequence length is why:",
        "* with scaling the scores have unit variance at every d_k, so the largest weight is the same",
        "  at every d_k (the handout is right that it is stable), but its value depends on how many",
        "  keys share the softmax (d_k = 64):",
        f"  {sweep}.",
        f"  The handout's 'Max ~ 0.5' is a row of about 4 keys; at this run's {seq_len} keys: "
        f"{_scaled_mean(r):.2f}.",
        "* without scaling the scores' spread grows as sqrt(d_k): the largest weight climbs towards 1",
        "  and the gradient shrinks, as the handout says; over more keys it climbs more slowly",
        "  (experiment_scaling_factor(seq_len=4) comes within 0.1 of the handout's whole table).",
    ]
    return "\n".join(lines)


def _scaled_mean(r: dict[str, Any]) -> float:
    """This run's scaled largest weight, averaged over its d_k values (they agree closely)."""
    return float(np.mean([m for m, s in zip(r["max_weight"], r["scaled"], strict=True) if s]))


# --------------------------------------------------------------------------- Task 3b/3c
#: The three masks compare_masking trains with, in the handout's order.
MASKINGS = ("causal", "none", "reverse")


def compare_masking(
    steps: int = 300,
    *,
    text: str | None = None,
    held_out: str | None = None,
    prompt: str = "the cat ",
    n_new: int = 30,
    seed: int = 0,
    progress: bool = False,
    verbose: bool = True,
    threads: int | None = 1,
) -> dict[str, dict[str, Any]]:
    """Train the same tiny language model three ways and show which one learnt to predict.

    The three scenarios of the handout: ``"causal"`` (each position sees the
    past: a language model), ``"none"`` (no mask, bidirectional: it sees the
    past *and the future*) and ``"reverse"`` (it sees itself and the future).
    Each is :func:`attnwidget.tinylm.train_text_model` (2 layers x 4 heads,
    characters, context 32) on ``text`` (default: the seeded
    :func:`~attnwidget.tinylm.generated_corpus`) for ``steps`` AdamW steps
    (300: 5-7 s per model on 2 CPU cores, about 20 s for the three). ``threads``: torch threads
    while training (restored after; None leaves the setting alone). One is as
    fast as two for models this small, and does not stall when other work
    shares the cores (two threads then wait on each other, ten times slower).

    Returns ``{mask: {...}}`` for each of :data:`MASKINGS`, with

    * ``train_loss``: the last training batch's loss (nats per character);
    * ``loss_with_mask``: next-token loss on ``held_out`` (32 characters of
      unseen text, default a seeded sample) with the mask it trained with;
      what its training loss promises;
    * ``honest_loss``: :func:`~attnwidget.tinylm.honest_loss` on the same
      characters: each one predicted from the past alone, as in generation;
    * ``cheat``: ``honest_loss - loss_with_mask`` (0 for an honest model);
    * ``sample``: ``prompt`` plus ``n_new`` greedily generated characters;
    * ``losses`` (the training curve), ``model`` and ``tokenizer``.

    What it shows (checked in the tests): the causal model's two losses are
    equal, since it never saw the future; the no-mask and reverse models reach
    a far lower loss with their masks, because the character to predict is
    in view, and a far higher honest loss: both cheat the same way, and the
    bidirectional model generates no better than the reverse one.
    """
    from attnwidget.tinylm import TEXT_ALPHABET, generated_corpus

    steps = positive_int(steps, "steps")
    n_new = positive_int(n_new, "n_new")
    text = generated_corpus() if text is None else text
    held_out = generated_corpus(5, seed=99) if held_out is None else held_out
    for name, value, least in (("text", text, 34), ("held_out", held_out, 2), ("prompt", prompt, 1)):
        if not isinstance(value, str):
            raise TypeError(f"{name}: expected a str, got {type(value).__name__}")
        bad = sorted(set(value) - set(TEXT_ALPHABET))
        if bad or len(value) < least:
            raise ValueError(
                f"{name}: expected at least {least} characters from {TEXT_ALPHABET!r} (lower-case "
                f"letters, space, full stop), got {len(value)} characters"
                + (f" including {bad[:10]}" if bad else "")
            )
    results: dict[str, dict[str, Any]] = {}
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(positive_int(threads, "threads"))
    try:
        for mask in MASKINGS:
            results[mask] = _train_and_score(mask, text, held_out, prompt, n_new, steps, seed, progress)
    finally:
        torch.set_num_threads(before)
    if verbose:
        print(_masking_report(results))
    return results


def _train_and_score(
    mask: str, text: str, held_out: str, prompt: str, n_new: int, steps: int, seed: int, progress: bool
) -> dict[str, Any]:
    from attnwidget.tinylm import honest_loss, next_token_loss, train_text_model

    model, tok, losses = train_text_model(text, mask=mask, steps=steps, seed=seed, progress=progress)
    ids = torch.tensor(tok.encode(held_out))[: model.config.max_len]
    with torch.no_grad():
        with_mask = float(next_token_loss(model, ids[None]))
    honest = honest_loss(model, ids)
    sample = tok.decode(model.generate(torch.tensor(tok.encode(prompt)), n_new).tolist())
    return {
        "train_loss": losses[-1], "loss_with_mask": with_mask, "honest_loss": honest,
        "cheat": honest - with_mask, "sample": sample, "losses": losses, "model": model, "tokenizer": tok,
    }


def _masking_report(results: dict[str, dict[str, Any]]) -> str:
    names = {"causal": "causal (past)", "none": "none (bidirectional)", "reverse": "reverse (future)"}
    lines = [f"{'mask':21s} {'train loss':>10s} {'with its mask':>13s} {'honest':>7s}  sample"]
    for mask, r in results.items():
        lines.append(f"{names[mask]:21s} {r['train_loss']:10.3f} {r['loss_with_mask']:13.3f} "
                     f"{r['honest_loss']:7.3f}  {r['sample']!r}")
    n = results["causal"]["tokenizer"].vocab_size
    own = {mask: results[mask]["loss_with_mask"] for mask in results}
    honest = {mask: results[mask]["honest_loss"] for mask in results}
    lines += [
        f"Losses in nats per character (uniform guessing: ln {n} = {math.log(n):.2f}). "
        "'honest' predicts each character from the past only, as generation must.",
        "With no mask and with the reverse mask the model sees the character it must predict: with that "
        f"mask its loss is {own['none']:.2f} and {own['reverse']:.2f}",
        f"(the causal model's: {own['causal']:.2f}); from the past alone it is {honest['none']:.2f} and "
        f"{honest['reverse']:.2f} (causal: {honest['causal']:.2f}). What a loss with the future in view "
        "promises, generation cannot keep.",
    ]
    return "\n".join(lines)
