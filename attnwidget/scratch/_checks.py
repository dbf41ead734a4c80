"""Input rules shared by every attention function of ``attnwidget.scratch``.

One place decides what ``Q``, ``K``, ``V``, ``scale`` and ``mask`` may be, so the
plain, tiled, top-k, cross and grouped-query versions accept the same inputs
and refuse the same mistakes with the same words.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

#: The ``scale`` argument of every attention function: ``True``/``None`` (``1 / sqrt(d_k)``),
#: ``False`` (none) or a positive factor; :func:`resolve_scale` applies the rules.
Scale = bool | float | None
#: What the attention functions return: ``(output [..., n_q, d_v], weights [..., n_q, n_k])``.
Attended = tuple[torch.Tensor, torch.Tensor]

#: The forms of mask every function here accepts, quoted by every mask error.
MASK_FORMS = (
    "a bool mask (True = may attend), a 0/1 keep-mask (int or float, 1 = may attend) "
    "or an additive float mask (0 where allowed, -inf where masked, optionally other finite biases)"
)


def as_tensor(x: Any, name: str) -> torch.Tensor:
    """``x`` as a floating-point torch tensor with at least 2 dims; numpy arrays are wrapped, not copied."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(
            f"{name}: expected a floating-point torch tensor (or numpy array) [..., positions, features], "
            f"got {got}"
        )
    if x.ndim < 2:
        raise ValueError(
            f"{name}: expected at least 2 dimensions [..., positions, features], got shape {tuple(x.shape)}"
        )
    return x


def check_qkv(Q: Any, K: Any, V: Any, lead_end: int = -2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate ``Q [..., n_q, d_k]``, ``K [..., n_k, d_k]``, ``V [..., n_k, d_v]`` together.

    The dims before ``lead_end`` must broadcast (-3 for grouped heads, whose head counts differ).
    """
    Q, K, V = as_tensor(Q, "Q"), as_tensor(K, "K"), as_tensor(V, "V")
    d_k = Q.shape[-1]
    if K.shape[-1] != d_k:
        raise ValueError(
            f"K: expected {d_k} features like Q ([..., n_k, {d_k}]), got shape {tuple(K.shape)}")
    if V.shape[-2] != K.shape[-2]:
        raise ValueError(
            f"V: expected {K.shape[-2]} positions like K ([..., {K.shape[-2]}, d_v]), got shape "
            f"{tuple(V.shape)}")
    for name, t in (("K", K), ("V", V)):
        if t.dtype != Q.dtype:
            raise TypeError(f"{name}: expected dtype {Q.dtype} like Q, got {t.dtype}")
    try:
        torch.broadcast_shapes(Q.shape[:lead_end], K.shape[:lead_end], V.shape[:lead_end])
    except RuntimeError:
        raise ValueError(
            f"Q, K, V: expected leading (batch, head) dims that broadcast together, got shapes "
            f"{tuple(Q.shape)}, {tuple(K.shape)}, {tuple(V.shape)}") from None
    return Q, K, V


def resolve_scale(scale: Any, d_k: int) -> float:
    """The factor the scores are multiplied by.

    ``True`` (or ``None``, torch's spelling of the default) -> ``1 / sqrt(d_k)``;
    ``False`` -> ``1.0``; a positive finite real number -> that factor.
    """
    if scale is None or isinstance(scale, (bool, np.bool_)):
        return 1.0 / math.sqrt(d_k) if scale is None or bool(scale) else 1.0
    # torch.Tensor is not a numbers.Real, so a tensor (even 0-dim) falls through to the TypeError:
    # a tensor here is almost always a mask passed in the wrong position
    if isinstance(scale, numbers.Real):
        factor = float(scale)
        if not math.isfinite(factor) or factor <= 0:
            raise ValueError(
                f"scale: expected True (divide by sqrt(d_k)), False (no scaling) or a positive finite "
                f"factor, got {scale!r}")
        return factor
    raise TypeError(
        f"scale: expected True (divide by sqrt(d_k)), False (no scaling) or a positive finite "
        f"factor (float), got {type(scale).__name__} {scale!r}"[:300])


def check_mask(mask: Any, scores_shape: torch.Size | tuple[int, ...], dtype: torch.dtype,
               device: torch.device, name: str = "mask") -> torch.Tensor:
    """Read a mask as either a bool keep-mask (True = may attend) or an additive float bias.

    Returns a bool tensor or a float tensor of ``dtype``, on ``device``, *not*
    broadcast (a ``[n_q, n_k]`` mask stays that size). The rule:

    * bool: True = may attend;
    * integer: must hold only 0 and 1, a keep-mask (1 = may attend);
    * float with only 0s and 1s, at least one 1, and no -inf: a keep-mask
      (the handout's ``masked_fill(mask == 0, -inf)`` use);
    * float with only 0s: additive, masks nothing (read as a keep-mask it would
      hide every key, which no one means; pass a bool mask of False for that);
    * any other float without NaN or +inf: additive (0 / -inf masks, ALiBi-style
      finite biases, and both at once);
    * refused as ambiguous: a float mask holding 0, 1 and -inf together (a
      keep-mask and an additive mask added up?).
    """
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name}: expected a torch tensor or numpy array, {MASK_FORMS}; "
                        f"got {type(mask).__name__}")
    shape = tuple(scores_shape)
    try:
        fits = torch.broadcast_shapes(mask.shape, shape) == shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"{name}: expected a shape that broadcasts to the scores' {shape} "
            f"([..., n_q, n_k]), got {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        return mask.to(device)
    if mask.is_complex():
        raise TypeError(f"{name}: expected {MASK_FORMS}; got a {mask.dtype} tensor")
    zero, one = mask == 0, mask == 1
    if not mask.is_floating_point():  # integers cannot hold -inf: only a keep-mask makes sense
        if not (zero | one).all():
            bad = mask[~(zero | one)].unique()[:5].tolist()
            raise ValueError(f"{name}: an integer mask must be a 0/1 keep-mask (1 = may attend), "
                             f"got values {bad}; expected {MASK_FORMS}")
        return (~zero).to(device)
    if torch.isnan(mask).any() or torch.isposinf(mask).any():
        raise ValueError(f"{name}: got NaN or +inf values; expected {MASK_FORMS}")
    neginf = torch.isneginf(mask)
    has_zero, has_one, has_neginf = bool(zero.any()), bool(one.any()), bool(neginf.any())
    only_01 = bool((zero | one | neginf).all())
    if only_01 and has_one and not has_neginf:
        return (~zero).to(device)  # 0/1 keep-mask
    if only_01 and has_zero and has_one and has_neginf:
        raise ValueError(
            f"{name}: ambiguous float mask: it holds 0, 1 and -inf together, so it is neither a 0/1 "
            f"keep-mask nor a 0/-inf additive mask; expected {MASK_FORMS}")
    return mask.to(device=device, dtype=dtype)


def apply_mask(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scores with a :func:`check_mask` result applied: hidden keys at -inf, or the bias added."""
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
    return scores + mask


def scaled_scores(Q: torch.Tensor, K: torch.Tensor, mask: Any, scale: Any) -> torch.Tensor:
    """``Q K^T`` times the resolved ``scale``, with ``mask`` checked and applied: ``[..., n_q, n_k]``."""
    scores = (Q @ K.transpose(-2, -1)) * resolve_scale(scale, Q.shape[-1])
    if mask is not None:
        scores = apply_mask(scores, check_mask(mask, scores.shape, scores.dtype, scores.device))
    return scores


def masked_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim; a row whose scores are all -inf gets zeros, not NaN.

    Naive softmax ``exp(s_j - max s) / sum exp(s - max s)`` computes
    ``-inf - (-inf)`` there, which is NaN (or, without the max shift, ``0 / 0``).
    Such rows happen with padding queries or a window that is empty.
    """
    # a row is all -inf exactly when its max is (a NaN row's max is NaN): one float reduction,
    # a third of the time of isneginf().all(); with the fills skipped when no row is empty,
    # training the tiny LM (scripts/train_tiny_lm.py) takes a third less time, to the same bits
    if scores.shape[-1] == 0:  # no keys at all: no weights (and no max to take)
        return torch.softmax(scores, dim=-1)
    empty = scores.detach().amax(dim=-1, keepdim=True) == float("-inf")
    if not empty.any():  # the usual case: the fills below would copy the scores and change nothing
        return torch.softmax(scores, dim=-1)
    return torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """A plain (not bool) integer ``>= minimum``, or an error naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def check_probability(value: Any, name: str) -> float:
    """A real number in ``[0, 1]`` (not bool), as a float, or an error naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a probability in [0, 1] (float), got {type(value).__name__} "
                        f"{value!r}"[:300])
    if not 0.0 <= float(value) <= 1.0:  # also refuses NaN
        raise ValueError(f"{name}: expected a probability in [0, 1], got {value!r}")
    return float(value)
