"""Attention fundamentals (handout ``001``): extraction, the heat map, statistics, patterns.

Everything the handout defines, under its names, arguments and defaults::

    from attnwidget.lab.fundamentals import (
        AttentionExtractor, extract_huggingface_attention, plot_attention_heatmap,
        compute_attention_statistics, identify_attention_pattern, create_synthetic_attention,
        example_attention_fundamentals,
    )

* :class:`AttentionExtractor` keeps forward hooks on a model's attention
  modules between calls (``register_hooks`` / ``get_attention`` /
  ``clear_hooks``), as the handout's class does, and is a context manager too;
  it is built on :mod:`attnwidget.extract.hooks` (the same module discovery,
  per-head weights from ``nn.MultiheadAttention``, pass-through detection).
* :func:`extract_huggingface_attention` takes a loaded model, ``"minilm"``,
  ``"tiny"`` or a local folder; we are offline, so a hub name raises an error
  that says what to pass instead. Extraction is :func:`attnwidget.extract_attention`.
* :func:`compute_attention_statistics`, :func:`identify_attention_pattern` and
  :func:`create_synthetic_attention` *are* the core functions
  (:mod:`attnwidget.metrics`, :mod:`attnwidget.synthetic`), with the
  handout's keys, labels and patterns. Two deliberate differences from the
  handout's code: the entropy is exact (``0 ln 0 = 0``, no ``+ 1e-10`` inside
  the log, so a one-hot row has entropy 0, not about ``2e-9``), and the
  ``bos`` pattern's first-column weight ``0.6 - 0.03 i`` is clipped at 0 (the
  handout's goes negative after 20 rows, which is not a probability).
* :func:`plot_attention_heatmap` returns a bokeh figure (where the handout
  calls ``plt.show()``) and honours ``save_path`` (``.html``, ``.png``, ``.svg``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attnwidget.extract._common import NoAttentionFoundError, eval_mode, no_mha_fastpath
from attnwidget.extract.hooks import (
    NAME_PATTERN,
    attention_candidates,
    hook_module,
    is_passed_through,
    layer_weights,
)
from attnwidget.lab._common import figure_size, index, labels, matrix, save
from attnwidget.metrics import compute_attention_statistics, identify_attention_pattern
from attnwidget.synthetic import create_synthetic_attention

__all__ = [
    "AttentionExtractor",
    "compute_attention_statistics",
    "create_synthetic_attention",
    "example_attention_fundamentals",
    "extract_huggingface_attention",
    "identify_attention_pattern",
    "plot_attention_heatmap",
]


# --------------------------------------------------------------------------- extraction
class AttentionExtractor:
    """Forward hooks that capture attention weights, kept on the model between forwards.

    ``AttentionExtractor(model)``; ``register_hooks(layer_names=None)`` hooks the
    attention modules; ``get_attention(input_ids, attention_mask=None)`` runs
    the model once and returns one ``[batch, heads, query_pos, key_pos]`` CPU
    tensor per attention layer, in call order; ``clear_hooks()`` removes every
    hook and forgets the weights. As a context manager it registers hooks on
    entry (auto-detected, unless already registered) and removes them on exit,
    also when the block raises; ``attention_weights`` and ``layer_names`` of
    the last forward stay readable after the block::

        with AttentionExtractor(model) as ex:
            weights = ex.get_attention(ids)     # list of [B, H, Q, K]

    Attributes: ``model``; ``attention_weights`` (the list the last forward
    filled; a new list each time, so a returned list stays valid);
    ``layer_names`` (the module name of each captured layer).

    Differences from the handout's class, each for a reason:

    * auto-detection hooks ``nn.MultiheadAttention`` and modules whose own
      name or class name contains "attn"/"attention", and keeps only modules
      whose output holds weights (a tensor ``[batch, heads, Q, K]`` whose rows
      sum to 1): the handout's version hooks every submodule with "attention"
      anywhere in its path (``...attention.output.dense`` too) and records
      whatever tensor it returns;
    * a module that passes an inner module's weights through (BERT's
      ``attention`` around ``attention.self``) is one layer, not two;
    * ``nn.MultiheadAttention`` is asked for per-head weights (by default it
      averages them or, inside ``nn.TransformerEncoderLayer``, returns none), and
      transformers models are switched to eager attention for the forward
      (sdpa returns no weights);
    * the model's train/eval flags are restored after ``get_attention`` (the
      handout leaves the model in eval mode).
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.attention_weights: list[torch.Tensor] = []
        self.layer_names: list[str] = []
        self._hooks: list[Any] = []
        self._hooked: dict[int, str] = {}  # id(module) -> name, so registering twice hooks once
        # the last captured tensor as the module returned it (on its device): an outer module
        # passing it straight through comes right after, and is recognised by its storage
        self._last: torch.Tensor | None = None

    def register_hooks(self, layer_names: Sequence[str] | None = None) -> None:
        """Hook attention modules: ``layer_names`` (from ``model.named_modules()``), or auto-detected if None.

        An unknown name raises ValueError listing similar names. Registering a
        module that is already hooked does nothing (a forward records it once).
        """
        if layer_names is not None and (
            isinstance(layer_names, str) or not isinstance(layer_names, Sequence)
        ):
            got = f"the str {layer_names!r}" if isinstance(layer_names, str) else type(layer_names).__name__
            raise TypeError(f"layer_names: expected a list of module names or None, got {got}")
        try:
            candidates, _ = attention_candidates(self.model, layer_names)
        except ValueError as exc:  # the core calls it attention_modules; the handout, layer_names
            raise ValueError(str(exc).replace("attention_modules:", "layer_names:", 1)) from None
        if not candidates:
            raise NoAttentionFoundError(
                f"layer_names: auto-detection found no attention module in {type(self.model).__name__} "
                f"(nn.MultiheadAttention, or names matching {NAME_PATTERN.pattern!r}); pass "
                "layer_names=[...] from model.named_modules()"
            )
        for name, module in candidates:
            if id(module) in self._hooked:
                continue
            self._hooked[id(module)] = name
            self._hooks.extend(hook_module(module, self._make_hook(name)))

    def _make_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            weights = layer_weights(module, args, kwargs, output)
            if weights is None or is_passed_through(weights, [] if self._last is None else [self._last]):
                return
            self._last = weights
            self.attention_weights.append(weights.detach().cpu())
            self.layer_names.append(name)
        return hook

    def clear_hooks(self) -> None:
        """Remove every hook this extractor registered and forget the captured weights."""
        self._remove_hooks()
        self.attention_weights = []
        self.layer_names = []
        self._last = None

    def _remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self._hooked = {}

    def get_attention(
        self, input_ids: Any, attention_mask: Any = None
    ) -> list[torch.Tensor]:
        """Run the model once (eval mode, no gradients) and return the captured weights.

        ``input_ids``: what the model's forward takes first, usually token ids
        ``[batch, seq_len]`` (a torch tensor or numpy array); a mapping (what a
        tokenizer returns) is passed as keyword arguments. ``attention_mask``
        (``[batch, seq_len]``, 1 = real token) is passed as ``attention_mask=``.
        Returns a list with one float tensor ``[batch, heads, query_pos,
        key_pos]`` per attention layer, in the order the layers ran (also kept
        in ``attention_weights``, with names in ``layer_names``).
        """
        from attnwidget.extract.huggingface import eager_attention, is_hf_model

        if not self._hooks:
            raise RuntimeError(
                "get_attention: no hooks are registered; call register_hooks() first "
                "(or use the extractor in a with block, which registers them)"
            )
        kwargs: dict[str, Any] = {}
        if isinstance(input_ids, Mapping):
            kwargs.update(input_ids)
            args: tuple[Any, ...] = ()
        else:
            args = (_as_tensor(input_ids, "input_ids"),)
        if attention_mask is not None:
            kwargs["attention_mask"] = _as_tensor(attention_mask, "attention_mask")
        self.attention_weights = []  # a new list: one returned earlier stays as it was
        self.layer_names = []
        hf = is_hf_model(self.model)
        try:
            with eval_mode(self.model), no_mha_fastpath(), torch.no_grad():
                if hf:
                    with eager_attention(self.model):
                        self.model(*args, **kwargs)
                else:
                    self.model(*args, **kwargs)
        finally:
            self._last = None  # holds no device memory between calls
        if not self.attention_weights:
            raise NoAttentionFoundError(
                f"get_attention: the hooked modules {sorted(self._hooked.values())} ran without "
                "returning attention weights; expected a tensor [batch, heads, queries, keys] "
                "(rows summing to 1) in each one's output"
            )
        return self.attention_weights

    def __enter__(self) -> AttentionExtractor:
        if not self._hooks:
            self.register_hooks()
        return self

    def __exit__(self, *exc: object) -> None:
        # the hooks go; the weights of the last forward stay readable after the block
        self._remove_hooks()

    def __repr__(self) -> str:
        return (f"AttentionExtractor({type(self.model).__name__}, hooked={sorted(self._hooked.values())}, "
                f"captured={len(self.attention_weights)})")


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch tensor or numpy array, got {type(x).__name__}")
    return x


def _char_tokenizer(model: nn.Module) -> Any:
    """The CharTokenizer whose alphabet fits a TinyLM's vocabulary (64: induction, 28: text), or None."""
    from attnwidget.tinylm import TEXT_ALPHABET, CharTokenizer, TinyLM

    if not isinstance(model, TinyLM):
        return None
    for alphabet in (CharTokenizer.DEFAULT, TEXT_ALPHABET):
        if len(alphabet) == model.config.vocab_size:
            return CharTokenizer(alphabet)
    return None


def extract_huggingface_attention(
    model_name: Any,
    text: str,
    layer_idx: int = -1,
    head_idx: int | None = None,
    *,
    tokenizer: Any = None,
) -> tuple[torch.Tensor, list[str]]:
    """One layer's attention for ``text``: ``(attention, tokens)`` as in the handout.

    ``model_name`` (the handout's name; it also takes a loaded model): a loaded
    model (transformers, or any PyTorch model that returns its weights, e.g. a
    :class:`attnwidget.tinylm.TinyLM`), or a name:
    ``"minilm"`` (the embedded all-MiniLM-L6-v2, 6 layers x 12 heads),
    ``"tiny"`` (the embedded tiny causal LM, 2 layers x 4 heads, characters
    ``a-zA-Z0-9-.``) or a local folder holding ``config.json``, weights and
    tokenizer files. A hub name such as ``"bert-base-uncased"`` raises
    ValueError: attnwidget works offline and never downloads
    (:func:`attnwidget.models.load`). ``tokenizer``: needed for a loaded model
    whose tokenizer cannot be found offline (a TinyLM's is picked by its vocabulary).

    ``layer_idx``: the layer, negative counting from the end (-1 = last).
    ``head_idx``: None for all heads, else one head (negative allowed).

    Returns ``attention``, a float32 torch tensor ``[num_heads, seq_len, seq_len]``
    (``head_idx=None``) or ``[seq_len, seq_len]``, rows summing to 1; and
    ``tokens``, the tokenizer's tokens including special ones (``[CLS]``,
    ``[SEP]``; ``##`` word pieces as the tokenizer writes them). As in the
    handout, input longer than the model takes is truncated (transformers models).
    """
    from attnwidget.extract import extract_attention
    from attnwidget.extract.huggingface import is_hf_model
    from attnwidget.models import load

    if isinstance(model_name, nn.Module):
        model = model_name
    elif isinstance(model_name, (str, Path)):
        model, found = load(model_name, "model_name")
        tokenizer = tokenizer if tokenizer is not None else found
    else:
        raise TypeError(
            "model_name: expected a loaded model (torch.nn.Module), 'minilm', 'tiny' or a local "
            f"folder, got {type(model_name).__name__}"
        )
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    if tokenizer is None:
        tokenizer = _char_tokenizer(model)
    options = {"truncation": True} if is_hf_model(model) else {}
    maps = extract_attention(model, text, tokenizer, **options)
    layer = index(layer_idx, maps.n_layers, "layer_idx")
    attention = torch.from_numpy(maps.layer(layer).copy())  # [H, Q, K]
    if head_idx is not None:
        attention = attention[index(head_idx, maps.n_heads, "head_idx")]  # [Q, K]
    return attention, list(maps.query_tokens)


# --------------------------------------------------------------------------- plots
def plot_attention_heatmap(
    attention: Any,
    x_tokens: Sequence[str],
    y_tokens: Sequence[str] | None = None,
    title: str = "Attention Weights",
    figsize: tuple[float, float] = (10, 8),
    cmap: str = "viridis",
    show_values: bool = False,
    save_path: str | Path | None = None,
) -> Any:
    """Heat map of one attention matrix ``[query_len, key_len]``; returns a bokeh figure.

    ``x_tokens``: key tokens (x axis, "attended to"); ``y_tokens``: query
    tokens (y axis, "attending from"), default ``x_tokens``. Colours span
    ``vmin=0, vmax=1`` as in the handout. ``figsize`` in inches, as matplotlib's
    (64 pixels per inch). ``cmap``: a colormap name as matplotlib spells it,
    one of :data:`attnwidget.plots.PALETTES` (viridis, plasma, magma, inferno,
    cividis, Greys, Blues, Greens, Oranges, Purples, Reds, turbo; any case), ``_r``
    appended for reversed. ``show_values`` writes
    each weight in its cell (maps of up to 400 cells). ``save_path``: also
    write the figure (``.html``, ``.png`` or ``.svg``). Where the handout calls
    ``plt.show()`` this returns the figure: a notebook cell shows it, or
    ``bokeh.io.show(fig)``; with ``save_path`` it prints where, as the handout does.
    """
    from attnwidget.plots import PALETTES, matrix_figure

    w = matrix(attention, "attention", 2, "[query_len, key_len]")
    Q, K = w.shape
    keys = labels(x_tokens, K, "x_tokens", "key (column)")
    queries = keys if y_tokens is None and Q == K else labels(
        y_tokens if y_tokens is not None else x_tokens, Q, "y_tokens", "query (row)")
    name = cmap.lower() if isinstance(cmap, str) else cmap
    if not isinstance(name, str) or name.removesuffix("_r") not in PALETTES:
        raise ValueError(f"cmap: expected a colormap name, one of {tuple(PALETTES)} (any case; _r appended "
                         f"for reversed), got {cmap!r}")
    if show_values and Q * K > 400:
        raise ValueError(f"show_values: values fit in the cells of at most 400 cells, got {Q} x {K}")
    width, height = figure_size(figsize)
    fig = matrix_figure(w, queries, keys, str(title), palette=name, annotate=bool(show_values))
    fig.width, fig.height = width, height
    fig.xaxis.axis_label = "Key Tokens (attended to)"
    fig.yaxis.axis_label = "Query Tokens (attending from)"
    save(fig, save_path)
    if save_path is not None:
        print(f"Figure saved to: {save_path}")
    return fig


def example_attention_fundamentals(
    save_path: str | Path | None = None, seed: int | None = 0, verbose: bool = True
) -> dict[str, Any]:
    """The handout's complete example: four synthetic patterns, their statistics, detection.

    Builds ``diagonal``, ``local``, ``broadcast`` and ``bos`` maps over the 9
    words of "The quick brown fox jumps over the lazy dog", titles each panel
    with its normalised entropy and diagonal mean, and prints "Created: ... ->
    Detected: ..." for each (``verbose``). ``seed`` fixes the noise (None: fresh
    noise, as in the handout). Returns ``{"figure": 2 x 2 bokeh grid,
    "statistics": {pattern: compute_attention_statistics dict}, "detected":
    {pattern: label}}``; ``save_path`` also writes the grid.

    Detection is the handout's rules on the handout's matrices: at 9 tokens
    each pattern is found as itself, ``bos`` under its label
    ``"beginning_of_sequence"``. (Longer ``bos`` maps fade further: at 20
    tokens the first-column mean is already under the rule's 0.4.)
    """
    from bokeh.layouts import gridplot

    from attnwidget.plots import matrix_figure

    text = "The quick brown fox jumps over the lazy dog"
    tokens = text.split()
    seq_len = len(tokens)
    panels, statistics, detected = [], {}, {}
    for pattern in ("diagonal", "local", "broadcast", "bos"):
        attention = create_synthetic_attention(seq_len, pattern=pattern, seed=seed)
        stats = compute_attention_statistics(attention)
        statistics[pattern] = stats
        detected[pattern] = identify_attention_pattern(attention)
        title = (f"{pattern.capitalize()} Pattern · Entropy: {stats['normalized_entropy']:.2f}, "
                 f"Diag: {stats['diagonal_mean']:.2f}")
        panels.append(matrix_figure(attention, tokens, tokens, title, size=300))
    if verbose:
        print("\nPattern Detection Results:")
        print("-" * 40)
        for pattern, label in detected.items():
            print(f"  Created: {pattern:12s} -> Detected: {label}")
    grid = gridplot(panels, ncols=2, toolbar_location=None)
    save(grid, save_path)
    return {"figure": grid, "statistics": statistics, "detected": detected}
