"""The formula itself: ``softmax(Q K^T * scale + mask) V``, and dropout on its weights."""

from __future__ import annotations

import math
from typing import Any

import torch

from attnwidget.scratch._checks import (
    Attended,
    Scale,
    check_probability,
    check_qkv,
    masked_softmax,
    scaled_scores,
)


def attention(Q: Any, K: Any, V: Any, mask: Any = None, scale: Scale = True, *, dropout_p: float = 0.0,
              training: bool = True, generator: torch.Generator | None = None) -> Attended:
    """Scaled dot-product attention: ``(output [..., n_q, d_v], weights [..., n_q, n_k])``.

    ``Q`` ``[..., n_q, d_k]``, ``K`` ``[..., n_k, d_k]``, ``V`` ``[..., n_k, d_v]``:
    floating-point torch tensors (numpy arrays are wrapped) of one dtype, whose
    leading (batch, head) dims broadcast. The handout's ``[batch, seq_len, d_k]``
    is the case of one leading dim. The output has ``V``'s width ``d_v``: it is
    a weighted average of value rows.

    ``scale`` (the handout's bool):

    * ``True`` (default; ``None`` means the same, as in torch): divide the
      scores by ``sqrt(d_k)``, so they keep unit variance whatever ``d_k``;
    * ``False``: no scaling (the handout's ablation: the softmax saturates);
    * a positive finite number (int or float, not bool): multiply the scores by
      it, e.g. ``scale=1 / temperature``. Anything else raises.

    ``mask``: broadcastable to the scores ``[..., n_q, n_k]`` (a ``[n_q, n_k]``
    mask serves every batch and head). The handout uses two forms, both accepted:
    it *builds* its causal mask additively (0 on and below the diagonal, -inf
    above, added to the scores) but *applies* masks as
    ``masked_fill(mask == 0, -inf)`` (a 0/1 keep-mask). The rule:

    * bool: True = may attend (as in :func:`causal_mask`, :func:`reverse_mask`,
      :func:`padding_mask`, :func:`sliding_window_mask`, and
      ``scaled_dot_product_attention``);
    * int, or float holding only 0s and 1s (at least one 1): a keep-mask,
      1 = may attend, 0 = hidden;
    * float holding -inf (and otherwise 0 or any finite bias), or finite values
      that are not all 0/1: added to the scores (additive masks and ALiBi-style
      biases); an all-zero float mask is additive and masks nothing;
    * refused: a float mask with 0, 1 and -inf together (which convention?), NaN
      or +inf, or a shape that does not broadcast to the scores.

    A row whose keys are all masked gets zero weights and a zero output, where
    naive softmax gives NaN (every score is -inf and ``-inf - (-inf)`` is NaN).

    ``dropout_p``: probability of zeroing each weight after the softmax (see
    :func:`attention_dropout`), applied only when ``training`` is True; the
    returned weights are then the dropped ones that multiplied ``V``.
    ``generator`` seeds the dropout.

    Without dropout this equals ``torch.nn.functional.scaled_dot_product_attention``
    (checked in the tests) and also returns the weights, which that function does not.
    """
    Q, K, V = check_qkv(Q, K, V)
    scores = scaled_scores(Q, K, mask, scale)  # [..., n_q, n_k]
    weights = masked_softmax(scores)
    weights = attention_dropout(weights, check_probability(dropout_p, "dropout_p"),
                                training=training, generator=generator)
    return weights @ V, weights


def attention_dropout(
    weights: torch.Tensor,
    p: float,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Dropout on attention weights ``[..., n_q, n_k]``; returns the same shape.

    In training each weight is zeroed independently with probability ``p`` and
    the survivors are divided by ``1 - p``: ``w' = w * B / (1 - p)`` with
    ``B ~ Bernoulli(1 - p)``, so ``E[w'] = w`` and the expected output
    ``E[w' @ V] = w @ V`` is unchanged; a single draw's rows no longer sum to 1.
    In eval (``training=False``) or with ``p = 0`` it is the identity and
    returns ``weights`` itself. ``p = 1`` gives zeros (nothing survives).

    ``generator``: a ``torch.Generator`` on the weights' device, for
    reproducible masks.
    """
    if not isinstance(weights, torch.Tensor) or not weights.is_floating_point():
        raise TypeError(f"weights: expected a floating-point torch tensor, got {type(weights).__name__}")
    p = check_probability(p, "p")
    if not isinstance(training, bool):
        raise TypeError(f"training: expected a bool, got {type(training).__name__}")
    if not training or p == 0.0:
        return weights
    if p == 1.0:
        return torch.zeros_like(weights)
    # rand is uniform on [0, 1), so P(rand >= p) = 1 - p exactly: the keep probability
    keep = torch.rand(weights.shape, generator=generator, dtype=weights.dtype,
                      device=weights.device) >= p
    return weights * keep / (1.0 - p)


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
