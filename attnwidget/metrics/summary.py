"""Everything about every head in one call, and the small dict the widget shows for one panel.

Both validate the input once and reuse it for every measure, which is what
makes the whole-stack call fast: see ``benchmarks/bench_metrics.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnwidget.metrics._input import Prepared, check_int, check_threshold, prepare
from attnwidget.metrics.basic import (
    _mean_row_max,
    _normalized_rows,
    _row_entropy,
    _sparsity,
    _statistics,
    _topk,
    _topk_keys,
    _visible,
)
from attnwidget.metrics.compare import _kl
from attnwidget.metrics.flow import _mixing_of, _rollout
from attnwidget.metrics.history import _mean_entropy, _profile_measures, _received
from attnwidget.metrics.patterns import _grade, _label, _mean_spread, _scores


def head_summary(
    attention: Any, threshold: float = 0.1, k: int = 3, *, mask: Any = None, causal: bool = False
) -> dict[str, Any]:
    """Per-matrix measures for a whole stack ``[..., Q, K]`` in one pass; arrays ``[...]``.

    Keys: every :func:`compute_attention_statistics` key; ``sparsity`` (fraction
    below ``threshold``); ``max_attention``; ``sharpness`` and
    ``sharpness_relative`` with ``grade``; ``pattern`` and ``scores`` (the
    :func:`pattern_scores` dict); ``top_k`` (indices ``[..., Q, k]``) and
    ``top_k_weights``; ``row_entropy`` ``[..., Q]``.
    """
    threshold = check_threshold(threshold)
    p = prepare(attention, "attention", mask=mask, causal=causal)
    return _head_summary(p, threshold, check_int(k, "k", 1, p.w.shape[-1]))


def _head_summary(p: Prepared, threshold: float, k: int) -> dict[str, Any]:
    stats = _statistics(p)
    scores = _scores(p)
    sharp, sharp_rel = _mean_spread(p)
    idx, top_w = _topk_keys(p, k)
    out: dict[str, Any] = {key: value.numpy() for key, value in stats.items()}
    out.update(
        sparsity=_sparsity(p, threshold).numpy(),
        max_attention=_mean_row_max(p).numpy(),
        sharpness=sharp.numpy(),
        sharpness_relative=sharp_rel.numpy(),
        grade=_grade(sharp_rel.numpy()),
        pattern=_label(scores),
        scores={key: value.numpy() for key, value in scores.items()},
        top_k=idx.numpy(),
        top_k_weights=top_w.numpy(),
        row_entropy=_row_entropy(p).numpy(),
    )
    return out


def panel_metrics(
    attention: Any,
    threshold: float = 0.1,
    query: int | None = None,
    k: int = 3,
    *,
    mask: Any = None,
    causal: bool = False,
) -> dict[str, Any]:
    """The numbers shown next to one ``[Q, K]`` map, as a JSON-ready dict of plain Python values.

    Statistics (see :func:`compute_attention_statistics`), ``sparsity`` at
    ``threshold``, ``pattern`` with its ``scores``, ``sharpness`` (relative) and
    ``grade``; with ``query`` set, ``query`` block: its ``top_k`` keys and
    weights, its ``row`` (the full weight profile, a list of K floats) and the
    row's entropy and normalised entropy.
    """
    threshold = check_threshold(threshold)
    p = prepare(attention, "attention", mask=mask, causal=causal)
    if p.w.ndim != 2:
        raise ValueError(f"attention: expected one [Q, K] matrix, got shape {tuple(p.w.shape)}")
    Q, K = p.w.shape
    stats = {key: float(v) for key, v in _statistics(p).items()}
    raw_scores = _scores(p)
    scores = {key: float(v) for key, v in raw_scores.items()}
    sharp_rel = float(_mean_spread(p)[1])
    out: dict[str, Any] = {
        **stats,
        "threshold": threshold,
        "sparsity": float(_sparsity(p, threshold)),
        "pattern": _label(raw_scores).item(),
        "scores": scores,
        "sharpness": sharp_rel,
        "grade": _grade(np.asarray(sharp_rel)).item(),
        "shape": [Q, K],
    }
    if query is not None:
        q = check_int(query, "query", -Q, Q - 1) % Q
        visible = int(p.n_keys[q])
        kk = max(1, min(k, visible))
        # top-k of the selected row only: this runs on every slider move
        row_visible = None if p.dense else _visible(p).expand(p.w.shape)[q : q + 1]
        idx, weights = (t[0] for t in _topk(p.w[q : q + 1], row_visible, kk))
        norm = _normalized_rows(p)[q]
        out["query"] = {
            "index": q,
            "masked": not bool(p.rows[q]),
            "top_k": [int(i) for i in idx if i >= 0],
            "top_k_weights": [float(w) for w, i in zip(weights, idx, strict=True) if i >= 0],
            "row": [float(v) for v in p.w[q]],
            "entropy": float(_row_entropy(p)[q]),
            "normalized_entropy": None if bool(norm.isnan()) else float(norm),
        }
    return out


def analyze_stack(attention: Any, threshold: float = 0.1, k: int = 3) -> dict[str, Any]:
    """Every per-head measure of a whole ``[L, H, Q, K]`` stack, validated once, in one call.

    ``heads``: :func:`head_summary` (arrays ``[L, H]``); ``kl``: per-layer KL
    divergence between heads ``[L, H, H]`` (:func:`kl_divergence_matrix`);
    ``rollout``: :func:`attention_rollout` ``[L, Q, Q]`` (self-attention only,
    else None); ``history``: attention received per position ``[L, H, K]``, and
    for the last query its recency ratio, maximum position (absolute and
    relative) and top-10% mass, plus the mean row entropy, each ``[L, H]``.
    The Jensen-Shannon matrix and attention flow are left out: they cost far
    more (see their functions).
    """
    threshold = check_threshold(threshold)
    p = prepare(attention, "attention", min_ndim=4)
    if p.w.ndim != 4:
        raise ValueError(f"attention: expected [layers, heads, Q, K], got shape {tuple(p.w.shape)}")
    k = check_int(k, "k", 1, p.w.shape[-1])
    heads = _head_summary(p, threshold, k)
    Q, K = p.w.shape[-2:]
    history = {key: v.numpy() for key, v in _profile_measures(p, 0.25).items()}
    history["mean_entropy"] = _mean_entropy(p).numpy()
    history["received"] = _received(p).numpy()
    return {
        "heads": heads,
        "kl": _kl(p.w, p.rows, _row_entropy(p)).numpy(),
        "rollout": _rollout(_mixing_of(p.w, "mean", 0.0, True)).numpy() if Q == K else None,
        "history": history,
    }
