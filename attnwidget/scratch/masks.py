"""Boolean masks, True where a query may look at a key (``scaled_dot_product_attention``'s convention).

Each is ``[n_q, n_k]`` (or ``[B, 1, 1, n_k]`` for padding) and broadcasts
against scores ``[..., n_q, n_k]``. The handout's additive form (0 / -inf) of
any of them is ``torch.zeros(m.shape).masked_fill(~m, float("-inf"))``;
:func:`attnwidget.scratch.attention` accepts both.
"""

from __future__ import annotations

from typing import Any

import torch

from attnwidget.masks import causal_key_mask


def causal_mask(n_q: int, n_k: int | None = None) -> torch.Tensor:
    """bool ``[n_q, n_k]``: query i sees keys up to its own position (aligned at the last key)."""
    return causal_key_mask(n_q, n_q if n_k is None else n_k)


def reverse_mask(n: int) -> torch.Tensor:
    """bool ``[n, n]``: query i sees itself and every *later* key: the future an LM must not see."""
    return torch.ones(n, n, dtype=torch.bool).triu()


def padding_mask(lengths: Any, n_k: int) -> torch.Tensor:
    """bool ``[B, 1, 1, n_k]`` from the real length of each sequence: padded keys are hidden."""
    lengths = torch.as_tensor(lengths)
    if lengths.ndim != 1 or (lengths < 0).any() or (lengths > n_k).any():
        raise ValueError(f"lengths: expected one length in 0..{n_k} per sequence, got {lengths.tolist()}")
    return (torch.arange(n_k)[None, :] < lengths[:, None])[:, None, None, :]


def sliding_window_mask(n: int, window: int, causal: bool = True) -> torch.Tensor:
    """bool ``[n, n]``: query i sees keys within ``window`` positions (only earlier ones if causal)."""
    if window < 1:
        raise ValueError(f"window: expected >= 1, got {window}")
    i = torch.arange(n)
    dist = i[:, None] - i[None, :]
    near = dist.abs() < window
    return near & (dist >= 0) if causal else near
