"""How different are two heads: KL divergence and Jensen-Shannon distance matrices."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from attnwidget.metrics._input import prepare
from attnwidget.metrics.basic import _row_entropy

#: Added to the second distribution inside the log of KL(P || Q), so a key that
#: P attends and Q ignores gives a large finite penalty (-ln 1e-10 ~ 23 nats)
#: instead of infinity.
KL_EPS = 1e-10


def kl_divergence_matrix(attention: Any, eps: float = KL_EPS) -> np.ndarray:
    """``D[a, b]`` = mean over queries of ``KL(head a's row || head b's row)``, in nats.

    Input ``[..., H, Q, K]`` (one layer ``[H, Q, K]`` or a stack); output
    ``[..., H, H]``. Not symmetric. ``eps`` (:data:`KL_EPS`) keeps the log of
    head b's zero weights finite. Computed as one matrix product per layer:
    ``sum p ln p`` minus ``p . ln(q + eps)``.
    """
    p = prepare(attention, "attention", min_ndim=3)
    return _kl(p.w, p.rows, _row_entropy(p), eps).numpy()


def _kl(w: torch.Tensor, rows: torch.Tensor, entropy: torch.Tensor, eps: float = KL_EPS) -> torch.Tensor:
    """KL matrix ``[..., H, H]`` from weights ``[..., H, Q, K]``, the rows that count and row entropies."""
    H, Q, K = w.shape[-3:]
    flat = w.reshape(*w.shape[:-3], H, Q * K)
    self_term = -entropy.sum(-1)  # sum p ln p per head [..., H]
    cross = flat @ torch.log(flat + eps).transpose(-1, -2)  # [..., H(a), H(b)]
    n_rows = rows.sum(-1).clamp(min=1).to(w.dtype)  # rows of head a
    kl = (self_term.unsqueeze(-1) - cross) / n_rows.unsqueeze(-1)
    return kl.clamp(min=0)


def js_distance_matrix(attention: Any, base: float = 2.0) -> np.ndarray:
    """``D[a, b]`` = mean over queries of the Jensen-Shannon distance between the heads' rows.

    The distance is ``sqrt(JS divergence)`` with logs in ``base`` (default 2, so
    it lies in [0, 1]), the same quantity as ``scipy.spatial.distance.jensenshannon``.
    Symmetric, 0 on the diagonal, finite even where one head ignores a key the
    other attends. Input ``[..., H, Q, K]``, output ``[..., H, H]``.
    """
    _check_base(base)
    p = prepare(attention, "attention", min_ndim=3)
    return _js(p.w, p.rows, _row_entropy(p), base).numpy()


def _check_base(base: Any) -> None:
    if not (isinstance(base, (int, float)) and base > 1):
        raise ValueError(f"base: expected a number > 1, got {base!r}")


def _js(w: torch.Tensor, rows: torch.Tensor, entropy: torch.Tensor, base: float) -> torch.Tensor:
    """JS distance matrix ``[..., H, H]``; ``entropy`` is the row entropies ``[..., H, Q]``."""
    H = w.shape[-3]
    out = torch.zeros(*w.shape[:-3], H, H, dtype=w.dtype)
    for a in range(H - 1):
        others = w[..., a + 1 :, :, :]
        mix = (w[..., a : a + 1, :, :] + others) / 2
        js = torch.special.entr(mix).sum(-1) - (entropy[..., a : a + 1, :] + entropy[..., a + 1 :, :]) / 2
        dist = (js.clamp(min=0) / math.log(base)).sqrt()  # [..., H - a - 1, Q]
        keep = rows[..., a : a + 1, :] & rows[..., a + 1 :, :]
        mean = (dist * keep).sum(-1) / keep.sum(-1).clamp(min=1)
        out[..., a, a + 1 :] = mean
        out[..., a + 1 :, a] = mean
    return out


def head_similarity(attention: Any, method: str = "js", across_layers: bool = False) -> np.ndarray:
    """Pairwise head difference: ``method="js"`` (JS distance) or ``"kl"`` (KL divergence).

    ``attention`` ``[L, H, Q, K]`` (or an AttentionMaps): per layer ``[L, H, H]``,
    or with ``across_layers=True`` one ``[L*H, L*H]`` matrix over every head of
    the model (head ``l * H + h``). A ``[H, Q, K]`` layer gives ``[H, H]``.
    """
    if method not in ("js", "kl"):
        raise ValueError(f"method: expected 'js' or 'kl', got {method!r}")
    p = prepare(attention, "attention", min_ndim=3)
    w, rows, entropy = p.w, p.rows, _row_entropy(p)
    if across_layers:
        if w.ndim != 4:
            raise ValueError(f"attention: across_layers needs [L, H, Q, K], got shape {tuple(w.shape)}")
        w, rows, entropy = (t.reshape(-1, *t.shape[2:]) for t in (w, rows, entropy))
    out = _js(w, rows, entropy, 2.0) if method == "js" else _kl(w, rows, entropy)
    return out.numpy()
