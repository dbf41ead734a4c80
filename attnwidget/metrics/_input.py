"""Input handling shared by every metric: accept numpy, torch or AttentionMaps; validate once.

Every metric takes attention shaped ``[..., Q, K]`` (rows are queries, each a
probability distribution over keys) and works on all leading dimensions at
once. This module turns what the caller passed into one float tensor plus the
masks that say which keys and rows count.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch

from attnwidget.maps import ROW_SUM_ATOL, AttentionMaps
from attnwidget.masks import causal_key_mask, padding_key_mask


class Prepared(NamedTuple):
    """Validated attention and the masks every metric reads.

    w : float32/float64 tensor ``[..., Q, K]`` (masked keys and empty rows hold 0)
    key_mask : bool tensor broadcastable to ``w`` (True: the key is visible), or None
    rows : bool tensor ``[..., Q]``: the row has at least one visible key and mass 1
    n_keys : float tensor ``[..., Q]``: visible keys per row (0 for empty rows)
    sums : tensor ``[..., Q]``: row sums (1 or 0)
    dense : True when every key of every row is visible (no mask, no empty row)
    cache : per-call store for intermediate results several measures share

    Hidden entries (masked keys, empty rows) are exactly 0, so sums over all
    entries equal sums over the visible ones; only counts need the masks.
    """

    w: torch.Tensor
    key_mask: torch.Tensor | None
    rows: torch.Tensor
    n_keys: torch.Tensor
    sums: torch.Tensor
    dense: bool
    cache: dict


def to_tensor(x: Any, name: str) -> torch.Tensor:
    """numpy/torch/AttentionMaps/nested lists -> a CPU float tensor (float64 kept, others float32)."""
    if isinstance(x, AttentionMaps):
        x = x.weights
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}"
            ) from exc
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"{name}: expected numeric weights, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex():
        raise TypeError(f"{name}: expected real weights, got dtype {t.dtype}")
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    return t.to(device="cpu", dtype=dtype)


def prepare(
    x: Any,
    name: str = "attention_weights",
    *,
    mask: Any = None,
    causal: bool = False,
    normalize: bool | None = None,
    min_ndim: int = 2,
) -> Prepared:
    """Validate attention ``[..., Q, K]`` and work out which keys and rows count.

    ``mask``: bool, broadcastable to ``[..., Q, K]``, True where the query may
    see the key. ``causal=True`` adds the causal mask. An AttentionMaps brings
    its own causal flag and padding. A row whose weights are all 0 counts as
    fully masked (that is how AttentionMaps stores them) and is skipped.

    Errors (ValueError naming ``name``): fewer than ``min_ndim`` dims, an empty
    axis, NaN/inf, negative weights, rows that do not sum to 1 within
    :data:`attnwidget.maps.ROW_SUM_ATOL` (unless ``normalize=True``, which
    divides each row by its sum), weight on a masked key. ``normalize=None``: the
    caller has no ``normalize`` option, so the row-sum error does not offer one.
    """
    record = x if isinstance(x, AttentionMaps) else None
    w = to_tensor(x, name)
    if w.ndim < min_ndim:
        raise ValueError(
            f"{name}: expected at least {min_ndim} dimensions [..., queries, keys], "
            f"got {w.ndim}-D with shape {tuple(w.shape)}"
        )
    if w.numel() == 0:
        raise ValueError(f"{name}: every axis needs at least one entry, got shape {tuple(w.shape)}")
    Q, K = w.shape[-2:]

    key_mask = None
    if record is not None:
        causal = causal or bool(record.causal)
        key_mask = padding_key_mask(record.key_padding, Q)
    if mask is not None:
        # a copy: masks may be read-only broadcast views, which torch cannot wrap
        m = mask if isinstance(mask, torch.Tensor) else torch.from_numpy(np.array(mask))
        if m.dtype != torch.bool:
            raise TypeError(f"mask: expected booleans (True = key visible), got dtype {m.dtype}")
        try:
            torch.broadcast_shapes(m.shape, w.shape)
        except RuntimeError:
            raise ValueError(
                f"mask: shape {tuple(m.shape)} does not broadcast to {name}'s {tuple(w.shape)}"
            ) from None
        key_mask = m if key_mask is None else key_mask & m
    if causal:
        c = causal_key_mask(Q, K)
        key_mask = c if key_mask is None else key_mask & c

    sums = w.sum(dim=-1)
    finite = bool(torch.isfinite(sums).all())
    if not finite:
        bad = ~torch.isfinite(w)
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name}: expected finite weights, got {w[where].item()} at index {where}")
    lowest = float(w.amin())
    if lowest < 0:
        where = tuple(int(i) for i in (w < 0).nonzero()[0])
        raise ValueError(
            f"{name}: expected probabilities >= 0, got {lowest:.4g} at index {where} "
            "(pass softmax output, not scores)"
        )
    if key_mask is not None and bool((w.masked_fill(key_mask, 0) > 0).any()):
        where = tuple(int(i) for i in (w.masked_fill(key_mask, 0) > 0).nonzero()[0])
        raise ValueError(
            f"{name}: weight {w[where].item():.4g} on a masked key at index {where}; "
            "expected 0 wherever mask/causal hides a key"
        )
    empty = sums == 0
    if normalize:
        w = w / torch.where(empty, 1.0, sums).unsqueeze(-1)
        sums = torch.where(empty, 0.0, 1.0).to(w.dtype)
    else:
        off = (sums - 1).abs() > ROW_SUM_ATOL
        off &= ~empty
        if bool(off.any()):
            where = tuple(int(i) for i in off.nonzero()[0])
            raise ValueError(
                f"{name}: rows must sum to 1 (within {ROW_SUM_ATOL}), but row {where} sums to "
                f"{float(sums[where]):.6g}; " + (
                    "pass normalize=True to rescale rows" if normalize is not None
                    else "expected softmax output; divide each row by its sum first to use these")
            )
    if key_mask is None:
        n_keys = torch.full(sums.shape, float(K), dtype=w.dtype)
    else:
        n_keys = key_mask.expand(w.shape).sum(dim=-1).to(w.dtype)
    rows = ~empty & (n_keys > 0)
    n_keys = n_keys.masked_fill(~rows, 0)
    dense = key_mask is None and bool(rows.all())
    return Prepared(w, key_mask, rows, n_keys, sums, dense, {})


def as_output(t: torch.Tensor) -> Any:
    """Tensor result -> numpy array, or a Python scalar for a 0-d result."""
    arr = t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    return arr.item() if arr.ndim == 0 else arr


def check_threshold(threshold: Any, name: str = "threshold") -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a number in [0, 1], got {type(threshold).__name__}")
    value = float(threshold)
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"{name}: expected a number in [0, 1], got {threshold!r}")
    return value


def check_int(value: Any, name: str, low: int, high: int) -> int:
    """An int in ``[low, high]`` (inclusive), or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int in {low}..{high}, got {type(value).__name__}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name}: expected an int in {low}..{high}, got {value}")
    return int(value)


def masked_mean(values: torch.Tensor, keep: torch.Tensor, dims: int) -> torch.Tensor:
    """Mean of ``values`` over the last ``dims`` dims where ``keep``; 0 where nothing is kept."""
    keep = keep.expand(values.shape)
    axes = tuple(range(-dims, 0))
    count = keep.sum(dim=axes)
    total = values.masked_fill(~keep, 0).sum(dim=axes)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
