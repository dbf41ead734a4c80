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


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode (no dropout noise in the maps) and restore every module's flag."""
    flags = [(m, m.training) for m in model.modules()]
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
    stack: torch.Tensor, tokens: Sequence[str], keep: torch.Tensor | None, axis: str
) -> tuple[torch.Tensor, list[str]]:
    """Drop padded positions (``keep`` False) along the query or key axis of ``[..., Q, K]``."""
    if keep is None or bool(keep.all()):
        return stack, list(tokens)
    idx = keep.nonzero().flatten()
    dim = -2 if axis == "query" else -1
    return stack.index_select(dim, idx), [tokens[int(i)] for i in idx]


def stack_layers(per_layer: Sequence[torch.Tensor], batch_index: int | None) -> torch.Tensor:
    """Per-layer ``[B, H, Q, K]`` tensors -> float32 ``[L, H, Q, K]`` for one sequence.

    One copy into a preallocated tensor: the stack at 512 tokens is 75 MB, so
    an extra intermediate (stack then cast) would cost as much as the checks.
    """
    first = pick_sequence(per_layer[0], batch_index)
    out = torch.empty((len(per_layer), *first.shape), dtype=torch.float32)
    for i, layer in enumerate(per_layer):
        if layer.shape[1:] != per_layer[0].shape[1:]:
            raise ValueError(
                f"attentions: layer {i} has shape {tuple(layer.shape)}, expected every layer "
                f"to match layer 0's {tuple(per_layer[0].shape)}"
            )
        out[i].copy_(pick_sequence(layer.detach(), batch_index))
    return out
