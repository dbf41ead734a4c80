"""Attention from scratch: the formula, its masks, and why the 1/sqrt(d_k) scale is there.

``attention(Q, K, V)`` is ``softmax(Q K^T * scale + mask) V`` written out in
plain torch, so a student can read every step; it equals
``torch.nn.functional.scaled_dot_product_attention`` on the same inputs
(checked in the tests), and it also returns the weights, which that function
does not.

Masks are boolean, True where a query may look at a key (the convention of
``scaled_dot_product_attention``), shaped to broadcast against ``[..., Q, K]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def _check(t: Any, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point torch tensor, got {type(t).__name__}")
    if t.ndim < 2:
        raise ValueError(
            f"{name}: expected at least 2 dimensions [..., positions, features], got {tuple(t.shape)}"
        )
    return t


def attention(
    Q: torch.Tensor,
    K: torch.Tensor,
    V: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention: ``(output [..., Q, d_v], weights [..., Q, K])``.

    ``Q`` ``[..., n_q, d_k]``, ``K`` ``[..., n_k, d_k]``, ``V`` ``[..., n_k, d_v]``.
    ``mask``: bool, broadcastable to ``[..., n_q, n_k]``, True = may attend
    (see :func:`causal_mask`, :func:`reverse_mask`, :func:`padding_mask`,
    :func:`sliding_window_mask`), or a float tensor added to the scores.
    ``scale``: multiplies the scores, default ``1 / sqrt(d_k)``.

    A row whose keys are all masked gets zero weights and a zero output.
    Naive softmax gives NaN there: every score is ``-inf``, and softmax
    ``exp(s_j - max s) / sum exp(s - max s)`` computes ``-inf - (-inf)``, which
    is NaN (or, without the max shift, ``0 / 0``). Such rows happen with
    padding queries or a window that is empty; they are set to 0 explicitly.
    """
    Q, K, V = _check(Q, "Q"), _check(K, "K"), _check(V, "V")
    d_k = Q.shape[-1]
    if K.shape[-1] != d_k:
        raise ValueError(f"K: expected {d_k} features like Q, got shape {tuple(K.shape)}")
    if V.shape[-2] != K.shape[-2]:
        raise ValueError(f"V: expected {K.shape[-2]} positions like K, got shape {tuple(V.shape)}")
    if scale is None:
        scale = 1.0 / math.sqrt(d_k)
    scores = (Q @ K.transpose(-2, -1)) * scale  # [..., n_q, n_k]
    if mask is not None:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask: expected a torch tensor, got {type(mask).__name__}")
        try:
            torch.broadcast_shapes(mask.shape, scores.shape)
        except RuntimeError:
            raise ValueError(
                f"mask: shape {tuple(mask.shape)} does not broadcast to the scores' {tuple(scores.shape)}"
            ) from None
        # bool: hide the masked keys; float: an additive bias (e.g. -inf or ALiBi-style)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    empty = torch.isneginf(scores).all(dim=-1, keepdim=True)  # fully masked rows
    weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    return weights @ V, weights


def causal_mask(n_q: int, n_k: int | None = None) -> torch.Tensor:
    """bool ``[n_q, n_k]``: query i sees keys up to its own position (aligned at the last key)."""
    from attnwidget.metrics._input import causal_key_mask  # the metrics' own definition

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


def scaling_experiment(
    d_k: tuple[int, ...] = (16, 64, 256, 1024),
    n_queries: int = 64,
    n_keys: int = 64,
    seed: int = 0,
) -> dict[str, list]:
    """What the ``1/sqrt(d_k)`` scale does, with and without it, for each key width.

    Queries and keys have independent N(0, 1) entries, so a raw score
    ``q . k`` has variance ``d_k``: without the scale the scores grow with
    ``d_k`` and the softmax saturates (one weight near 1, the rest near 0),
    which also kills its gradient. Returns columns (lists of equal length, one
    row per ``d_k`` and ``scaled``), ready for a table or a plot:

    * ``d_k``, ``scaled`` (bool);
    * ``score_std``: standard deviation of the scores fed to the softmax;
    * ``max_weight``: mean over queries of the largest weight (1 = saturated);
    * ``grad_norm``: mean over queries of the norm of d(weights . g)/d(scores)
      for a fixed random upstream gradient g (how much signal flows back);
    * ``entropy``: mean row entropy in nats (``ln(n_keys)`` = uniform).
    """
    columns: dict[str, list] = {k: [] for k in
                                ("d_k", "scaled", "score_std", "max_weight", "grad_norm", "entropy")}
    gen = torch.Generator().manual_seed(seed)
    upstream = torch.randn(n_queries, n_keys, generator=gen, dtype=torch.float64)
    for d in d_k:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"d_k: expected positive ints, got {d!r}")
        q = torch.randn(n_queries, d, generator=gen, dtype=torch.float64)
        k = torch.randn(n_keys, d, generator=gen, dtype=torch.float64)
        for scaled in (False, True):
            scores = (q @ k.T) * (1 / math.sqrt(d) if scaled else 1.0)
            scores.requires_grad_(True)
            w = torch.softmax(scores, dim=-1)
            (w * upstream).sum().backward()
            grad = scores.grad
            ent = -(w * torch.log(w.clamp(min=1e-300))).sum(-1)
            columns["d_k"].append(d)
            columns["scaled"].append(scaled)
            columns["score_std"].append(float(scores.detach().std()))
            columns["max_weight"].append(float(w.detach().max(-1).values.mean()))
            columns["grad_norm"].append(float(grad.norm(dim=-1).mean()))
            columns["entropy"].append(float(ent.detach().mean()))
    return columns
