"""Bonus 1 (flash attention): the same output, never holding more than one block of scores.

Softmax needs every score of a row before it can normalise, which is why the
plain version builds all ``n_q x n_k`` of them. The online softmax gets around
that: it walks the keys block by block keeping, per query, the running maximum
``m`` and the running normaliser ``l = sum exp(s - m)``, and the running
unnormalised output ``acc = sum exp(s - m) v``. When a new block raises the
maximum to ``m'``, everything summed so far is multiplied by ``exp(m - m')``,
which is exactly what it would have been had ``m'`` been used from the start
(``exp(s - m) * exp(m - m') = exp(s - m')``). So the result is not an
approximation: ``acc / l`` at the end is the softmax-weighted sum, up to
floating-point rounding.
"""

from __future__ import annotations

from typing import Any

import torch

from attnwidget.scratch._checks import Scale, apply_mask, check_int, check_mask, check_qkv, resolve_scale

#: Default key block: 128 keys x n_q queries of float32 scores is 0.5 MiB per 1024 queries.
DEFAULT_BLOCK_SIZE = 128


def tiled_attention(Q: Any, K: Any, V: Any, mask: Any = None, scale: Scale = True, *,
                    block_size: int = DEFAULT_BLOCK_SIZE, causal: bool = False,
                    return_logsumexp: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention over key blocks with an online softmax: output ``[..., n_q, d_v]``.

    Same inputs and rules as :func:`attnwidget.scratch.attention` (``Q``
    ``[..., n_q, d_k]``, ``K`` ``[..., n_k, d_k]``, ``V`` ``[..., n_k, d_v]``;
    ``scale`` True / False / a factor; ``mask`` bool, 0/1 or additive), and the
    same output, but the scores exist only one block at a time:
    ``[..., n_q, block_size]`` instead of ``[..., n_q, n_k]``, so the memory of
    the scores grows as ``n_q x block_size``, not ``n_q x n_k``. The weights
    are never formed, so none are returned.

    ``causal=True`` applies :func:`causal_mask` block by block without building
    the ``[n_q, n_k]`` mask (a full ``mask`` argument is itself ``n_q x n_k``
    of memory, which the caller already holds). A fully masked row gives zeros.

    ``return_logsumexp=True`` also returns ``m + log(l)`` ``[..., n_q]``, the
    log of each row's softmax denominator (``-inf`` for a fully masked row):
    what a fused kernel keeps to recompute the weights in the backward pass.
    """
    Q, K, V = check_qkv(Q, K, V)
    block = check_int(block_size, "block_size")
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    factor = resolve_scale(scale, Q.shape[-1])
    n_q, n_k = Q.shape[-2], K.shape[-2]
    lead = torch.broadcast_shapes(Q.shape[:-2], K.shape[:-2], V.shape[:-2])
    scores_shape = (*torch.broadcast_shapes(Q.shape[:-2], K.shape[:-2]), n_q, n_k)
    m_full = None if mask is None else check_mask(mask, scores_shape, Q.dtype, Q.device)
    opts = {"dtype": Q.dtype, "device": Q.device}
    m = torch.full((*lead, n_q, 1), float("-inf"), **opts)  # running row max
    l = torch.zeros((*lead, n_q, 1), **opts)  # running sum of exp(s - m)  # noqa: E741
    acc = torch.zeros((*lead, n_q, V.shape[-1]), **opts)  # running sum of exp(s - m) v
    rows = torch.arange(n_q, device=Q.device)[:, None] + (n_k - n_q)  # last key each query may see
    for start in range(0, n_k, block):
        stop = min(start + block, n_k)
        s = Q @ K[..., start:stop, :].transpose(-2, -1)  # [..., n_q, b]: the only scores held
        s.mul_(factor)  # in place, here and below: one block-sized buffer, not one per step
        if m_full is not None:
            # a mask broadcast along the keys (size 1) applies to every block as it is
            s = apply_mask(s, m_full if m_full.shape[-1] == 1 else m_full[..., start:stop])
        if causal:
            s.masked_fill_(torch.arange(start, stop, device=Q.device)[None, :] > rows, float("-inf"))
        # The maxima are constants to autograd: the result does not depend on the shift (it
        # cancels between numerator and denominator), so its gradient through them is 0 anyway.
        with torch.no_grad():
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            # a row with no visible key yet has m_new = -inf; shifting by 0 there gives
            # exp(-inf) = 0 instead of exp(-inf - (-inf)) = NaN
            shift = m_new.masked_fill(torch.isneginf(m_new), 0.0)
            rescale = torch.exp(m - shift)  # exp(m - m'): brings the old sums to the new maximum
        p = s.sub_(shift).exp_()
        l = l * rescale + p.sum(dim=-1, keepdim=True)  # noqa: E741
        acc = acc * rescale + p @ V[..., start:stop, :]
        m = m_new
    # every row with a visible key has l >= 1 (its maximum contributes exp(0) = 1); a fully
    # masked row has l = 0 and acc = 0, and dividing by 1 there leaves the zeros
    out = acc / l.clamp(min=1.0)
    if return_logsumexp:
        return out, (m + torch.log(l)).squeeze(-1)
    return out
