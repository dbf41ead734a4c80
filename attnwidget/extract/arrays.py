"""Raw attention arrays -> AttentionMaps.

Accepts what people already have in hand:

* ``[Q, K]``, ``[H, Q, K]``, ``[L, H, Q, K]`` arrays or tensors;
* the tuple transformers returns for ``output_attentions=True``: one
  ``[batch, H, Q, K]`` tensor per layer (or the same stacked as ``[L, B, H, Q, K]``).

For batches one sequence is picked (``batch_index``) and, given the
``attention_mask`` the model ran with, its padding positions are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from attnwidget.extract._common import keep_positions, pick_sequence, sequence_layers
from attnwidget.maps import AttentionMaps


def _tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise TypeError(f"{name}: expected a tensor or array, got {type(x).__name__}")


def is_array_like(obj: Any) -> bool:
    """True for a tensor, an array, or a non-empty tuple/list of them."""
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return True
    return (
        isinstance(obj, (tuple, list)) and len(obj) > 0
        and all(isinstance(x, (torch.Tensor, np.ndarray)) for x in obj)
    )


def from_arrays(
    weights: Any,
    tokens: Sequence[str] | None = None,
    *,
    key_tokens: Sequence[str] | None = None,
    attention_mask: Any = None,
    batch_index: int | None = None,
    **record: Any,
) -> AttentionMaps:
    """Raw weights -> :class:`AttentionMaps` (see the module docstring for shapes).

    ``attention_mask`` is ``[batch, K]`` (or ``[K]``) with 1 for real tokens and
    0 for padding, as given to a transformers model; ``tokens`` are the tokens
    of the picked sequence *including* its padding, which is then dropped.
    Remaining keyword arguments go to :class:`AttentionMaps` (model_name, text, ...).
    """
    batched = isinstance(weights, (tuple, list)) or _tensor(weights, "weights").ndim == 5
    if not batched:
        if attention_mask is not None or batch_index is not None:
            raise ValueError(
                "attention_mask/batch_index: only apply to batched weights "
                "(a per-layer tuple of [B,H,Q,K] or [L,B,H,Q,K]), got an unbatched array"
            )
        return AttentionMaps.from_tensor(weights, tokens, key_tokens, **record)

    if isinstance(weights, (tuple, list)):
        layers = [_tensor(x, f"weights[{i}]") for i, x in enumerate(weights)]
        bad = [(i, tuple(x.shape)) for i, x in enumerate(layers) if x.ndim != 4]
        if bad:
            raise ValueError(
                f"weights: expected each layer as [batch, heads, queries, keys], "
                f"got layer {bad[0][0]} with shape {bad[0][1]}"
            )
    else:
        layers = list(_tensor(weights, "weights").unbind(0))
    per_layer = sequence_layers(layers, batch_index)  # L x [H, Q, K]
    Q, K = per_layer[0].shape[-2:]

    query_padding = key_padding = None
    if attention_mask is not None:
        mask = _tensor(attention_mask, "attention_mask")
        if mask.ndim == 2:
            mask = pick_sequence(mask, batch_index)
        if mask.ndim != 1 or mask.shape[0] != K:
            raise ValueError(
                f"attention_mask: expected [batch, {K}] or [{K}] to match the key axis, "
                f"got shape {tuple(_tensor(attention_mask, 'attention_mask').shape)}"
            )
        keep = mask.bool()
        if not keep.any():
            raise ValueError("attention_mask: every position is padding; nothing to show")
        tokens = list(tokens) if tokens is not None else [str(i) for i in range(K)]
        if len(tokens) != K:
            raise ValueError(
                f"tokens: expected {K} tokens (padding included) to match attention_mask, "
                f"got {len(tokens)}"
            )
        per_layer, kept_keys = keep_positions(per_layer, tokens, keep, "key")
        if Q == K:  # self-attention: padded queries go too
            per_layer, tokens = keep_positions(per_layer, tokens, keep, "query")
            key_tokens = None
        else:
            key_tokens = kept_keys
        Q, K = per_layer[0].shape[-2:]
        query_padding = np.zeros(Q, dtype=bool)
        key_padding = np.zeros(K, dtype=bool)
    if tokens is None:
        tokens = [str(i) for i in range(Q)]
    if key_tokens is None and Q != K:
        key_tokens = [str(i) for i in range(K)]
    return AttentionMaps(
        per_layer, tokens, key_tokens,
        query_padding=query_padding, key_padding=key_padding, **record,
    )
