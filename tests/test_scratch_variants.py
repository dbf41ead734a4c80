"""Top-k (sparse), cross- and grouped-query attention (bonus challenges 2-4) against independent code.

Top-k against a plain Python loop over rows; cross-attention against
``torch.nn.MultiheadAttention`` with ``kdim``/``vdim``; grouped-query attention
against a per-head loop with repeated K/V and against
``scaled_dot_product_attention`` (repeated K/V, and its own ``enable_gqa``).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)

from attnwidget.scratch import (
    attention,
    causal_mask,
    cross_attention,
    grouped_query_attention,
    multi_query_attention,
    padding_mask,
    topk_attention,
)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# top-k


def topk_loop(Q, K, V, k, keep=None):
    """Plain Python: per query, sort visible keys by (score desc, index asc), softmax the first k."""
    n_q, n_k = Q.shape[0], K.shape[0]
    d = Q.shape[1]
    W = [[0.0] * n_k for _ in range(n_q)]
    for i in range(n_q):
        scores = {j: sum(float(Q[i, c] * K[j, c]) for c in range(d)) / math.sqrt(d)
                  for j in range(n_k) if keep is None or keep[i][j]}
        chosen = sorted(scores, key=lambda j: (-scores[j], j))[:k]
        if not chosen:
            continue
        top = max(scores[j] for j in chosen)
        z = sum(math.exp(scores[j] - top) for j in chosen)
        for j in chosen:
            W[i][j] = math.exp(scores[j] - top) / z
    W = torch.tensor(W, dtype=torch.float64)
    return W @ V, W


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_topk_equals_a_plain_loop_with_ties(k):
    # small integer vectors: many scores tie exactly, so the tie rule (earlier key wins) is exercised
    g = torch.Generator().manual_seed(k)
    Q, K = (torch.randint(-1, 2, (8, 4), generator=g).double() for _ in range(2))
    V = randn(8, 3, seed=k)
    scores = Q @ K.T
    assert any(len(set(row.tolist())) < 8 for row in scores)  # ties really occur
    out, w = topk_attention(Q, K, V, k)
    out_ref, w_ref = topk_loop(Q, K, V, k)
    torch.testing.assert_close(w, w_ref)
    torch.testing.assert_close(out, out_ref)
    assert ((w > 0).sum(-1) <= k).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(8, dtype=torch.float64))


def test_topk_with_a_mask_and_batches():
    Q, K, V = randn(2, 3, 10, 6, seed=1), randn(2, 3, 10, 6, seed=2), randn(2, 3, 10, 4, seed=3)
    keep = causal_mask(10)
    out, w = topk_attention(Q, K, V, 3, mask=keep)
    for b in range(2):
        for h in range(3):
            out_ref, w_ref = topk_loop(Q[b, h], K[b, h], V[b, h], 3, keep.tolist())
            torch.testing.assert_close(w[b, h], w_ref)
            torch.testing.assert_close(out[b, h], out_ref)
    # query 0 sees one key, query 1 two: fewer than k visible keys keep them all
    assert (w[..., 0, :] > 0).sum(-1).eq(1).all()
    assert (w[..., 1, :] > 0).sum(-1).eq(2).all()
    # k >= n_k is dense attention
    torch.testing.assert_close(topk_attention(Q, K, V, 10, mask=keep)[0], attention(Q, K, V, mask=keep)[0])
    torch.testing.assert_close(topk_attention(Q, K, V, 99)[1], attention(Q, K, V)[1])


def test_topk_bad_k():
    Q = randn(4, 2)
    with pytest.raises(ValueError, match=r"k: expected an int >= 1, got 0"):
        topk_attention(Q, Q, Q, 0)
    with pytest.raises(TypeError, match=r"k: expected an int >= 1, got float 2\.0"):
        topk_attention(Q, Q, Q, 2.0)


# ---------------------------------------------------------------------------------------------
# cross-attention


def torch_cross(x, context, W_q, W_k, W_v, key_padding_mask=None):
    """nn.MultiheadAttention (one head, no bias, identity output projection) with kdim/vdim."""
    d_x, d_c = x.shape[-1], context.shape[-1]
    mha = torch.nn.MultiheadAttention(d_x, 1, bias=False, kdim=d_c, vdim=d_c, batch_first=True,
                                      dtype=torch.float64)
    with torch.no_grad():
        mha.q_proj_weight.copy_(W_q.T)  # nn.Linear stores [out, in]
        mha.k_proj_weight.copy_(W_k.T)
        mha.v_proj_weight.copy_(W_v.T)
        mha.out_proj.weight.copy_(torch.eye(d_x, dtype=torch.float64))
    return mha(x, context, context, key_padding_mask=key_padding_mask, need_weights=True)


def test_cross_attention_equals_torch_multihead_attention():
    # 5 queries of width 8 look up 11 context positions of width 6; d_k = d_v = 8 (MHA's embed_dim)
    x, context = randn(2, 5, 8, seed=1), randn(2, 11, 6, seed=2)
    W_q, W_k, W_v = randn(8, 8, seed=3), randn(6, 8, seed=4), randn(6, 8, seed=5)
    out, w = cross_attention(x, context, W_q, W_k, W_v)
    assert out.shape == (2, 5, 8)
    assert w.shape == (2, 5, 11)
    ref_out, ref_w = torch_cross(x, context, W_q, W_k, W_v)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)
    # the context's padding: MHA's key_padding_mask is True where a key is *ignored*
    pad = padding_mask([11, 7], 11)[:, 0]  # [B, 1, n_c], True = real
    out, w = cross_attention(x, context, W_q, W_k, W_v, mask=pad)
    ref_out, ref_w = torch_cross(x, context, W_q, W_k, W_v, key_padding_mask=~pad[:, 0])
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)
    assert (w[1, :, 7:] == 0).all()


def test_cross_attention_widths_may_differ():
    x, context = randn(3, 4, seed=1), randn(9, 7, seed=2)
    W_q, W_k, W_v = randn(4, 5, seed=3), randn(7, 5, seed=4), randn(7, 2, seed=5)
    out, w = cross_attention(x, context, W_q, W_k, W_v, scale=False)
    q, k, v = x @ W_q, context @ W_k, context @ W_v
    # one query row by hand
    s = [float(q[1] @ k[j]) for j in range(9)]
    e = [math.exp(t - max(s)) for t in s]
    torch.testing.assert_close(w[1], torch.tensor([t / sum(e) for t in e], dtype=torch.float64))
    torch.testing.assert_close(out, w @ v)
    assert out.shape == (3, 2)


def test_cross_attention_bad_shapes():
    x, context = randn(3, 4), randn(9, 7)
    good = randn(4, 5), randn(7, 5), randn(7, 2)
    with pytest.raises(ValueError, match=r"W_q: expected a matrix \[4, width\] \(x has 4 features\), got "
                                         r"shape \(7, 5\)"):
        cross_attention(x, context, good[1], good[1], good[2])
    with pytest.raises(ValueError, match=r"W_v: expected a matrix \[7, width\] \(context has 7 features\)"):
        cross_attention(x, context, good[0], good[1], randn(4, 2))
    with pytest.raises(ValueError, match=r"W_k: expected 5 columns like W_q .* got shape \(7, 3\)"):
        cross_attention(x, context, good[0], randn(7, 3), good[2])
    with pytest.raises(TypeError, match=r"W_v: expected dtype torch\.float64 like x, got torch\.float32"):
        cross_attention(x, context, good[0], good[1], good[2].float())
    with pytest.raises(TypeError, match=r"context: expected a floating-point .* got list"):
        cross_attention(x, [[1.0]], *good)
    with pytest.raises(ValueError, match=r"mask: expected a shape that broadcasts to the scores' \(3, 9\)"):
        cross_attention(x, context, *good, mask=causal_mask(9))


# ---------------------------------------------------------------------------------------------
# multi-query / grouped-query


def gqa_loop(Q, K, V, mask=None):
    """One query head at a time, with its group's K/V head (K.repeat_interleave order)."""
    group = Q.shape[-3] // K.shape[-3]
    outs, ws = [], []
    for h in range(Q.shape[-3]):
        m = None if mask is None else (mask[..., h, :, :] if mask.ndim >= 3 and mask.shape[-3] > 1
                                       else mask[..., 0, :, :] if mask.ndim >= 3 else mask)
        o, w = attention(Q[..., h, :, :], K[..., h // group, :, :], V[..., h // group, :, :], mask=m)
        outs.append(o)
        ws.append(w)
    return torch.stack(outs, -3), torch.stack(ws, -3)


@pytest.mark.parametrize(("h_q", "h_kv"), [(8, 8), (8, 4), (8, 2), (6, 3), (8, 1)])
@pytest.mark.parametrize("masking", ["none", "causal", "per_head", "padding"])
def test_gqa_equals_repeated_kv(h_q, h_kv, masking):
    B, n, d = 2, 9, 4
    Q, K, V = randn(B, h_q, n, d, seed=1), randn(B, h_kv, n, d, seed=2), randn(B, h_kv, n, 3, seed=3)
    mask = {
        "none": None,
        "causal": causal_mask(n),
        "per_head": torch.rand(h_q, n, n, generator=torch.Generator().manual_seed(4)) > 0.3,
        "padding": padding_mask([9, 5], n),  # [B, 1, 1, n]
    }[masking]
    out, w = grouped_query_attention(Q, K, V, mask=mask)
    assert out.shape == (B, h_q, n, 3)
    assert w.shape == (B, h_q, n, n)
    ref_out, ref_w = gqa_loop(Q, K, V, mask)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)
    group = h_q // h_kv
    Kr, Vr = K.repeat_interleave(group, dim=-3), V.repeat_interleave(group, dim=-3)
    if masking != "per_head":  # a random mask can hide a whole row: sdpa gives NaN there, we give 0
        torch.testing.assert_close(out, F.scaled_dot_product_attention(Q, Kr, Vr, attn_mask=mask))
        torch.testing.assert_close(out, F.scaled_dot_product_attention(Q, K, V, attn_mask=mask,
                                                                       enable_gqa=True))


def test_multi_query_is_gqa_with_one_kv_head():
    Q, K, V = randn(3, 4, 6, 5, seed=1), randn(3, 1, 6, 5, seed=2), randn(3, 1, 6, 2, seed=3)
    out, w = multi_query_attention(Q, K, V, mask=causal_mask(6))
    ref = F.scaled_dot_product_attention(Q, K.expand(3, 4, 6, 5), V.expand(3, 4, 6, 2),
                                         attn_mask=causal_mask(6))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(w, grouped_query_attention(Q, K, V, mask=causal_mask(6))[1])
    with pytest.raises(ValueError, match=r"K: expected one shared head \[\.\.\., 1, n_k, d_k\], got shape "
                                         r"\(3, 2, 6, 5\)"):
        multi_query_attention(Q, K.expand(3, 2, 6, 5), V)


def test_gqa_bad_heads():
    Q, K, V = randn(2, 6, 5, 4), randn(2, 4, 5, 4), randn(2, 4, 5, 4)
    with pytest.raises(ValueError, match=r"K: expected a number of heads dividing Q's 6, got 4"):
        grouped_query_attention(Q, K, V)
    with pytest.raises(ValueError, match=r"V: expected 2 heads like K"):
        grouped_query_attention(Q, K[:, :2], V[:, :3])
    with pytest.raises(ValueError, match=r"K: expected \[\.\.\., heads, positions, features\], got shape "
                                         r"\(5, 4\)"):
        grouped_query_attention(Q, K[0, 0], V)
    with pytest.raises(ValueError, match=r"mask: expected a shape that broadcasts to the scores' "
                                         r"\(2, 6, 5, 5\)"):
        grouped_query_attention(Q, K[:, :2], V[:, :2], mask=torch.ones(2, 5, 5, dtype=torch.bool))
