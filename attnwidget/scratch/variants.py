"""Bonus 2-4: sparse (top-k) attention, cross-attention, multi-query and grouped-query attention.

Each is :func:`attnwidget.scratch.attention` with one thing changed, and takes
the same ``mask`` and ``scale`` (see its docstring for the rules).
"""

from __future__ import annotations

from typing import Any

import torch

from attnwidget.scratch._checks import (
    Attended,
    Scale,
    as_tensor,
    check_int,
    check_mask,
    check_qkv,
    masked_softmax,
    scaled_scores,
)
from attnwidget.scratch.core import attention


def topk_attention(Q: Any, K: Any, V: Any, k: int, mask: Any = None, scale: Scale = True) -> Attended:
    """Sparse attention: each query keeps only its ``k`` highest-scoring keys.

    ``Q`` ``[..., n_q, d_k]``, ``K`` ``[..., n_k, d_k]``, ``V`` ``[..., n_k, d_v]``;
    returns ``(output [..., n_q, d_v], weights [..., n_q, n_k])`` where each
    row has at most ``k`` nonzero weights: the softmax over the kept scores
    alone (renormalised, so a row still sums to 1). The scores are compared
    after scaling and masking, so a masked key is never kept; a query with fewer
    than ``k`` visible keys keeps all of them. ``k >= n_k`` is dense attention.

    Ties at the k-th place go to the earlier key (lower index), so the result
    is deterministic (``torch.topk`` does not promise an order among equal
    values). This is the "k-nearest neighbours" of the handout with the dot
    product as similarity; it still computes every score, so it saves nothing
    here: sparse kernels save by never computing the dropped ones.
    """
    Q, K, V = check_qkv(Q, K, V)
    k = check_int(k, "k")
    scores = scaled_scores(Q, K, mask, scale)  # [..., n_q, n_k]
    if k < scores.shape[-1]:
        # a stable descending sort keeps equal scores in key order: ties go to the earlier key
        order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, order, True)
        scores = scores.masked_fill(~keep, float("-inf"))
    weights = masked_softmax(scores)
    return weights @ V, weights


def cross_attention(x: Any, context: Any, W_q: Any, W_k: Any, W_v: Any, mask: Any = None,
                    scale: Scale = True) -> Attended:
    """Queries from one sequence, keys and values from another (an encoder's output, an image, ...).

    ``x`` ``[..., n_q, d_x]`` asks; ``context`` ``[..., n_c, d_c]`` answers;
    the lengths ``n_q`` and ``n_c`` and the widths ``d_x`` and ``d_c`` may all
    differ. ``Q = x @ W_q`` with ``W_q`` ``[d_x, d_k]``, ``K = context @ W_k``
    with ``W_k`` ``[d_c, d_k]``, ``V = context @ W_v`` with ``W_v`` ``[d_c, d_v]``.
    Returns ``(output [..., n_q, d_v], weights [..., n_q, n_c])``: one output
    row per *query* position, each a mix of the context's values; the weights
    are rectangular, each row a distribution over the context.

    ``mask`` broadcasts to ``[..., n_q, n_c]``: usually the context's padding
    (:func:`padding_mask` of the context lengths); a causal mask rarely makes
    sense, since the context is not the query's past.
    """
    x, context = as_tensor(x, "x"), as_tensor(context, "context")
    if context.dtype != x.dtype:
        raise TypeError(f"context: expected dtype {x.dtype} like x, got {context.dtype}")
    mats = {}
    for name, w, source, rows in (("W_q", W_q, "x", x.shape[-1]), ("W_k", W_k, "context", context.shape[-1]),
                                  ("W_v", W_v, "context", context.shape[-1])):
        w = as_tensor(w, name)
        if w.ndim != 2 or w.shape[0] != rows:
            raise ValueError(f"{name}: expected a matrix [{rows}, width] ({source} has {rows} features), "
                             f"got shape {tuple(w.shape)}")
        if w.dtype != x.dtype:
            raise TypeError(f"{name}: expected dtype {x.dtype} like x, got {w.dtype}")
        mats[name] = w
    if mats["W_q"].shape[1] != mats["W_k"].shape[1]:
        raise ValueError(f"W_k: expected {mats['W_q'].shape[1]} columns like W_q (queries and keys "
                         f"share d_k), got shape {tuple(mats['W_k'].shape)}")
    return attention(x @ mats["W_q"], context @ mats["W_k"], context @ mats["W_v"], mask=mask, scale=scale)


def grouped_query_attention(Q: Any, K: Any, V: Any, mask: Any = None, scale: Scale = True) -> Attended:
    """Grouped-query attention: ``H_q`` query heads share ``H_kv`` key/value heads.

    ``Q`` ``[..., H_q, n_q, d_k]``, ``K`` ``[..., H_kv, n_k, d_k]``, ``V``
    ``[..., H_kv, n_k, d_v]`` with ``H_q`` a multiple of ``H_kv``; query head
    ``h`` uses key/value head ``h // (H_q // H_kv)`` (consecutive query heads form
    a group, the order of ``K.repeat_interleave(H_q // H_kv, dim=-3)``,
    transformers' ``repeat_kv`` and torch's ``enable_gqa``). Returns
    ``(output [..., H_q, n_q, d_v], weights [..., H_q, n_q, n_k])``. ``mask``
    broadcasts to ``[..., H_q, n_q, n_k]``.

    ``H_kv = H_q`` is ordinary multi-head attention, ``H_kv = 1`` multi-query
    attention (:func:`multi_query_attention`). K and V are broadcast over each
    group, never copied: the point of GQA is that a cache of past keys and
    values holds ``H_kv`` heads instead of ``H_q``.
    """
    for name, t in (("Q", Q), ("K", K), ("V", V)):
        t = as_tensor(t, name)
        if t.ndim < 3:
            raise ValueError(
                f"{name}: expected [..., heads, positions, features], got shape {tuple(t.shape)}")
    Q, K, V = check_qkv(Q, K, V, lead_end=-3)
    if K.shape[-3] != V.shape[-3]:
        raise ValueError(f"V: expected {K.shape[-3]} heads like K, got shape {tuple(V.shape)}")
    h_q, h_kv = Q.shape[-3], K.shape[-3]
    if h_q % h_kv:
        raise ValueError(f"K: expected a number of heads dividing Q's {h_q}, got {h_kv} "
                         f"(shape {tuple(K.shape)})")
    group = h_q // h_kv
    n_q, n_k = Q.shape[-2], K.shape[-2]
    # [..., H_q, n_q, d] -> [..., H_kv, group, n_q, d]; K and V get a size-1 group dim that broadcasts
    Qg = Q.unflatten(-3, (h_kv, group))
    Kg, Vg = K.unsqueeze(-3), V.unsqueeze(-3)
    m = None
    if mask is not None:
        lead = torch.broadcast_shapes(Q.shape[:-3], K.shape[:-3])
        m = check_mask(mask, (*lead, h_q, n_q, n_k), Q.dtype, Q.device)
        if m.ndim >= 3 and m.shape[-3] == h_q and group > 1:
            m = m.unflatten(-3, (h_kv, group))  # a per-head mask follows its head into its group
        elif m.ndim >= 3:
            m = m.unsqueeze(-3)  # one mask for every head: size 1 in both the kv-head and group dims
    out, weights = attention(Qg, Kg, Vg, mask=m, scale=scale)
    return out.flatten(-4, -3), weights.flatten(-4, -3)


def multi_query_attention(Q: Any, K: Any, V: Any, mask: Any = None, scale: Scale = True) -> Attended:
    """Multi-query attention: every query head shares one key head and one value head.

    ``Q`` ``[..., H, n_q, d_k]``, ``K`` ``[..., 1, n_k, d_k]``, ``V``
    ``[..., 1, n_k, d_v]``; returns ``(output [..., H, n_q, d_v],
    weights [..., H, n_q, n_k])``. :func:`grouped_query_attention` with one
    key/value head: the cache of past keys and values shrinks by ``H``.
    """
    Kt = as_tensor(K, "K")
    if Kt.ndim < 3 or Kt.shape[-3] != 1:
        raise ValueError(f"K: expected one shared head [..., 1, n_k, d_k], got shape {tuple(Kt.shape)}")
    return grouped_query_attention(Q, Kt, V, mask=mask, scale=scale)
