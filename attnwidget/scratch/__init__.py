"""Attention from scratch: the formula, its masks, why the 1/sqrt(d_k) scale is there, and its variants.

``attention(Q, K, V, mask=None, scale=True)`` is ``softmax(Q K^T / sqrt(d_k) + mask) V``
written out in plain torch, so a student can read every step; it equals
``torch.nn.functional.scaled_dot_product_attention`` on the same inputs
(checked in the tests), and it also returns the weights, which that function
does not. ``scale`` is the Attention Surgeon handout's bool (True = divide by
``sqrt(d_k)``, False = no scaling) or an explicit positive factor; masks may be
bool (True = may attend), 0/1 keep-masks or additive 0 / -inf (see
:func:`attention` for the exact rule).

Modules:

* ``core``: :func:`attention`, :func:`attention_dropout`, :func:`scaling_experiment`;
* ``masks``: :func:`causal_mask`, :func:`reverse_mask`, :func:`padding_mask`,
  :func:`sliding_window_mask` (bool, True = may attend);
* ``tiled``: :func:`tiled_attention`, the flash-attention idea (online softmax
  over key blocks, scores memory ``n_q x block`` instead of ``n_q x n_k``);
* ``variants``: :func:`topk_attention` (sparse), :func:`cross_attention`,
  :func:`grouped_query_attention` and :func:`multi_query_attention`.
"""

from __future__ import annotations

from attnwidget.scratch.core import attention, attention_dropout, scaling_experiment
from attnwidget.scratch.masks import causal_mask, padding_mask, reverse_mask, sliding_window_mask
from attnwidget.scratch.tiled import tiled_attention
from attnwidget.scratch.variants import (
    cross_attention,
    grouped_query_attention,
    multi_query_attention,
    topk_attention,
)

__all__ = [
    "attention",
    "attention_dropout",
    "causal_mask",
    "cross_attention",
    "grouped_query_attention",
    "multi_query_attention",
    "padding_mask",
    "reverse_mask",
    "scaling_experiment",
    "sliding_window_mask",
    "tiled_attention",
    "topk_attention",
]
