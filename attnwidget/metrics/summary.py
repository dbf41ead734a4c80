"""Everything about every head in one call, and the small dict the widget shows for one panel.

Both validate the input once and reuse it for every measure, which is what
makes the whole-stack call fast: see ``benchmarks/bench_metrics.py``.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import torch

from attnwidget.metrics._input import Prepared, check_int, check_threshold, prepare
from attnwidget.metrics.basic import (
    _mean_normalized_entropy,
    _mean_row_max,
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
from attnwidget.metrics.patterns import _empty, _grade, _label, _mean_spread, _scores


def head_summary(
    attention: Any, threshold: float = 0.1, k: int = 3, *, mask: Any = None, causal: bool = False
) -> dict[str, Any]:
    """Per-matrix measures for a whole stack ``[..., Q, K]`` in one pass; arrays ``[...]``.

    Keys: every :func:`compute_attention_statistics` key; ``sparsity`` (fraction
    below ``threshold``); ``max_attention``; ``sharpness`` and
    ``sharpness_relative`` with ``grade``; ``pattern`` (uniform by
    :data:`SPREAD_UNIFORM_RULE`, which means the same at every length) and ``scores`` (the
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
        grade=_grade(sharp_rel.numpy(), _empty(p)),
        pattern=_label(scores, "spread"),
        scores={key: value.numpy() for key, value in scores.items()},
        top_k=idx.numpy(),
        top_k_weights=top_w.numpy(),
        row_entropy=_row_entropy(p).numpy(),
    )
    return out


def _json_float(value: Any) -> float | None:
    """A float for JSON: NaN and infinities (which JSON cannot carry) become None."""
    value = float(value)
    return value if math.isfinite(value) else None


#: Up to this many cells (1024 x 1024) PanelMetrics keeps the sorted weights for instant
#: threshold changes; above it the copy is dropped after the first use.
KEEP_SORTED_CELLS = 2**20


class PanelMetrics:
    """The numbers shown next to one ``[Q, K]`` map, validated once and computed on demand.

    The widget keeps one of these per shown map: the threshold-free measures are
    computed once (:meth:`static`), a new threshold is a binary search in the
    already sorted weights (:meth:`sparsity`), and a query's block reads one
    row (:meth:`query`). :func:`panel_metrics` is the one-call form.

    ``attention``: one ``[Q, K]`` matrix (numpy, torch or a single-head
    AttentionMaps); ``mask``/``causal`` as in every metric.
    """

    def __init__(self, attention: Any, *, mask: Any = None, causal: bool = False) -> None:
        p = prepare(attention, "attention", mask=mask, causal=causal)
        if p.w.ndim != 2:
            if p.w.ndim < 2 or any(d != 1 for d in p.w.shape[:-2]):
                raise ValueError(
                    f"attention: expected one [Q, K] matrix, got shape {tuple(p.w.shape)}"
                )
            # a one-head record [1, 1, Q, K] is one matrix: drop the unit axes
            Q, K = p.w.shape[-2:]
            mask2 = None if p.key_mask is None else p.key_mask.expand(p.w.shape).reshape(Q, K)
            p = Prepared(p.w.reshape(Q, K), mask2, p.rows.reshape(Q), p.n_keys.reshape(Q),
                         p.sums.reshape(Q), p.dense, {})
        self._p = p
        self._static: dict[str, Any] | None = None
        self._lock = threading.RLock()

    @property
    def shape(self) -> tuple[int, int]:
        """``(Q, K)``."""
        return tuple(self._p.w.shape)  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        """Bytes of the intermediates this object keeps beyond the weights it was given (LRU budgets)."""
        total = 0
        for t in self._p.cache.values():
            if isinstance(t, torch.Tensor):
                total += t.element_size() * t.numel()
        return total

    @property
    def weights(self) -> torch.Tensor:
        """The validated ``[Q, K]`` weights (masked cells hold 0); read, do not write."""
        return self._p.w

    def visible(self) -> np.ndarray | None:
        """bool ``[Q, K]``: cells that count (visible key in a non-empty row), or None when all do."""
        if self._p.dense:
            return None
        return _visible(self._p).expand(self._p.w.shape).numpy()

    def visible_row(self, query: int) -> np.ndarray | None:
        """bool ``[K]``: the keys of row ``query`` that count, or None when all cells do; one row of
        :meth:`visible` without building the whole ``[Q, K]`` (16 MiB at 4096 tokens)."""
        p = self._p
        Q = p.w.shape[0]
        q = check_int(query, "query", -Q, Q - 1) % Q
        if p.dense:
            return None
        keep = p.rows[q].expand(p.w.shape[1])
        return (keep if p.key_mask is None else keep & p.key_mask.expand(p.w.shape)[q]).numpy()

    def static(self) -> dict[str, Any]:
        """Threshold- and query-free measures: statistics, pattern and scores, sharpness, grade, shape.

        Thread-safe: a second caller waits for the first one's result instead of computing it again
        (the widget computes neighbouring heads ahead of time in a worker thread).
        """
        with self._lock:
            return self._compute_static()

    def has_static(self) -> bool:
        """True when :meth:`static` would return at once (computed already)."""
        return self._static is not None

    def _compute_static(self) -> dict[str, Any]:
        if self._static is None:
            p = self._p
            raw_scores = _scores(p)
            sharp_rel = float(_mean_spread(p)[1])
            self._static = {
                **{key: _json_float(v) for key, v in _statistics(p).items()},
                "pattern": _label(raw_scores, "spread").item(),
                "scores": {key: _json_float(v) for key, v in raw_scores.items()},
                "sharpness": _json_float(sharp_rel),
                "grade": _grade(np.asarray(sharp_rel), _empty(p)).item(),
                "shape": list(p.w.shape),
            }
            if p.w.numel() > KEEP_SORTED_CELLS:
                # a sorted copy as big as the map is not worth keeping: a new threshold
                # then costs one comparison pass instead of a binary search
                p.cache.pop("sorted", None)
        return self._static

    def sparsity(self, threshold: float = 0.1) -> float:
        """Fraction of visible weights strictly below ``threshold`` (:func:`compute_attention_sparsity`)."""
        threshold = check_threshold(threshold)
        with self._lock:
            self.static()  # sorts the weights (for Gini); small maps keep them for a binary search
            return float(_sparsity(self._p, threshold))

    def query(self, query: int, k: int = 3) -> dict[str, Any]:
        """One row's block: ``index``, ``masked``, ``top_k`` keys and ``top_k_weights`` (strongest
        first, ties to the lower position, at most the row's visible keys), ``row`` (K floats),
        its ``entropy`` (nats) and ``normalized_entropy`` (None with fewer than 2 visible keys)."""
        p = self._p
        Q, K = p.w.shape
        q = check_int(query, "query", -Q, Q - 1) % Q
        k = check_int(k, "k", 1, K)
        kk = max(1, min(k, int(p.n_keys[q])))
        row_visible = None if p.dense else _visible(p).expand(p.w.shape)[q : q + 1]
        idx, weights = (t[0] for t in _topk(p.w[q : q + 1], row_visible, kk))
        with self._lock:  # the entropy cache is shared with static()
            row_entropy = _row_entropy(p)
        n = float(p.n_keys[q])
        return {
            "index": q,
            "masked": not bool(p.rows[q]),
            "top_k": [int(i) for i in idx if i >= 0],
            "top_k_weights": [float(w) for w, i in zip(weights, idx, strict=True) if i >= 0],
            "row": p.w[q].tolist(),
            "entropy": float(row_entropy[q]),
            "normalized_entropy": float(row_entropy[q]) / math.log(n) if n >= 2 else None,
        }

    def at(self, threshold: float = 0.1, query: int | None = None, k: int = 3) -> dict[str, Any]:
        """Everything for one state of the view, as :func:`panel_metrics` documents it."""
        out = {**self.static(), "threshold": check_threshold(threshold)}
        out["sparsity"] = _json_float(self.sparsity(out["threshold"]))
        if query is not None:
            out["query"] = self.query(query, k)
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
    ``grade``, ``shape``; with ``query`` set, a ``query`` block: its ``top_k``
    keys and weights, its ``row`` (the full weight profile, a list of K floats)
    and the row's entropy and normalised entropy. Values JSON cannot carry
    (NaN) are None.
    """
    return PanelMetrics(attention, mask=mask, causal=causal).at(threshold, query, k)


def head_badges(attention: Any, *, mask: Any = None, causal: bool = False) -> dict[str, Any]:
    """The short per-head labels of a head grid, for every matrix of ``[..., Q, K]`` at once.

    Cheap on purpose (no sort, no pattern rules), since the widget computes it
    for a whole layer whenever the layer changes. Arrays ``[...]``:
    ``entropy`` (mean row entropy, nats), ``normalized_entropy`` (0..1),
    ``sharpness`` (relative spread, see :func:`head_sharpness`) and ``grade``.
    """
    p = prepare(attention, "attention", mask=mask, causal=causal)
    _, rel = _mean_spread(p)
    return {
        "entropy": _mean_entropy(p).numpy(),
        "normalized_entropy": _mean_normalized_entropy(p).numpy(),
        "sharpness": rel.numpy(),
        "grade": _grade(rel.numpy(), _empty(p)),
    }


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
