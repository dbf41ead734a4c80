"""Helpers shared by the extractors: input checks and model-state guards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn


class NoAttentionFoundError(LookupError):
    """The model ran, but no attention weights could be captured from it."""


def check_text(text: Any, name: str = "text") -> str:
    """A non-empty string, or a ValueError/TypeError naming ``name``."""
    if not isinstance(text, str):
        raise TypeError(f"{name}: expected a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{name}: expected a non-empty string, got {text!r}")
    return text


def check_length(n_tokens: int, limit: int | None, source: str, name: str = "text") -> None:
    """Refuse inputs longer than the model's positions instead of cutting them silently."""
    if limit is not None and n_tokens > limit:
        raise ValueError(
            f"{name}: {n_tokens} tokens after tokenization, but the model accepts at most "
            f"{limit} ({source}); shorten the text, or pass truncation=True to keep the "
            f"first {limit} tokens"
        )


def all_modules(model: nn.Module) -> list[nn.Module]:
    """The same modules as ``model.modules()`` (each once), ~3x faster.

    ``modules()`` builds a dotted name for every submodule; extraction only
    needs the objects, and on a 12 ms forward the walk is a visible cost.
    """
    out: list[nn.Module] = []
    seen: set[int] = set()
    todo = [model]
    while todo:
        module = todo.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        out.append(module)
        todo.extend(reversed([c for c in module._modules.values() if c is not None]))
    return out


@contextlib.contextmanager
def eval_mode(model: nn.Module, modules: Sequence[nn.Module] | None = None) -> Iterator[None]:
    """Run in eval mode (no dropout noise in the maps) and restore every module's flag.

    ``modules``: :func:`all_modules` of the model when the caller has it already, so
    one extraction walks the module tree once.
    """
    flags = [(m, m.training) for m in (modules if modules is not None else all_modules(model))]
    if not any(training for _, training in flags):  # the usual case; eval() costs ~1 ms
        yield
        return
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def pick_sequence(
    attn: torch.Tensor, batch_index: int | None, name: str = "batch_index"
) -> torch.Tensor:
    """``[B, H, Q, K]`` -> ``[H, Q, K]`` for one sequence of the batch."""
    B = attn.shape[0]
    if batch_index is None:
        if B != 1:
            raise ValueError(
                f"{name}: the batch holds {B} sequences; pass {name}=0..{B - 1} to pick one"
            )
        batch_index = 0
    if not isinstance(batch_index, int) or not -B <= batch_index < B:
        raise IndexError(f"{name}: expected 0..{B - 1}, got {batch_index!r}")
    return attn[batch_index]


def keep_positions(
    layers: Sequence[torch.Tensor], tokens: Sequence[str], keep: torch.Tensor | None, axis: str
) -> tuple[list[torch.Tensor], list[str]]:
    """Drop padded positions (``keep`` False) on the query or key axis of each ``[H, Q, K]`` layer."""
    if keep is None or bool(keep.all()):
        return list(layers), list(tokens)
    idx = keep.nonzero().flatten()
    dim = -2 if axis == "query" else -1
    return [w.index_select(dim, idx) for w in layers], [tokens[int(i)] for i in idx]


def sequence_layers(per_layer: Sequence[torch.Tensor], batch_index: int | None) -> list[torch.Tensor]:
    """Per-layer ``[B, H, Q, K]`` tensors -> per-layer ``[H, Q, K]`` for one sequence.

    Views, not copies: the stack at 512 tokens is 75 MB, and a fresh
    allocation that size costs more in page faults than the checks do.
    :class:`AttentionMaps` stacks them only when a caller asks for the whole stack.
    """
    for i, layer in enumerate(per_layer):
        if layer.shape[1:] != per_layer[0].shape[1:]:
            raise ValueError(
                f"attentions: layer {i} has shape {tuple(layer.shape)}, expected every layer "
                f"to match layer 0's {tuple(per_layer[0].shape)}"
            )
    return [pick_sequence(layer.detach(), batch_index) for layer in per_layer]


#: ``nn.MultiheadAttention.forward``'s parameters in order: what a positional argument means to
#: a hook or wrapper that asks it for per-head weights (extraction, ablation).
MHA_FORWARD_ARGS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
                    "average_attn_weights", "is_causal")


@contextlib.contextmanager
def no_mha_fastpath() -> Iterator[None]:
    """PyTorch's fused attention fast path off inside the block, restored after.

    In eval mode the fused nn.TransformerEncoderLayer / nn.MultiheadAttention path skips the
    module's forward, so hooks on it (extraction's and ablation's) would not fire.
    """
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)
