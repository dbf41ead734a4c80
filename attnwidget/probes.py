"""Head scores measured by running a model on probe inputs (repeated random tokens).

Unlike :mod:`attnwidget.metrics` (pure functions of attention weights), these
run the model: extraction first (:func:`attnwidget.extract_attention`), then
the metrics' own scores on what came out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from attnwidget.metrics import duplicate_token_score, induction_score, previous_token_score


def _check_count(value: Any, name: str, low: int, high: int = 1 << 20) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int in {low}..{high}, got {type(value).__name__}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name}: expected an int in {low}..{high}, got {value}")
    return int(value)


def repeated_token_scores(
    model: Any,
    *,
    period: int = 20,
    n_samples: int = 8,
    vocab_size: int | None = None,
    bos_token_id: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Previous-token, duplicate-token and induction scores of every head, each ``[L, H]``.

    Runs ``model`` on ``n_samples`` sequences of ``period`` random tokens
    repeated twice (with ``bos_token_id`` in front when given) and averages
    the scores over the samples. Tokens are drawn from ``[0, vocab_size)``
    (default: ``model.config.vocab_size`` or ``model.cfg.d_vocab``), seeded.
    """
    from attnwidget.extract import extract_attention

    period = _check_count(period, "period", 2)
    n_samples = _check_count(n_samples, "n_samples", 1)
    if vocab_size is None:
        cfg = getattr(model, "config", None) or getattr(model, "cfg", None)
        vocab_size = getattr(cfg, "vocab_size", None) or getattr(cfg, "d_vocab", None)
    if not isinstance(vocab_size, int) or vocab_size < 2:
        raise ValueError(
            f"vocab_size: expected an int >= 2 (or a model config that has one), got {vocab_size!r}"
        )
    gen = torch.Generator().manual_seed(seed)
    prefix = 0 if bos_token_id is None else 1
    totals: dict[str, np.ndarray] = {}
    for _ in range(n_samples):
        seg = torch.randint(0, vocab_size, (period,), generator=gen)
        ids = torch.cat([seg, seg])
        if bos_token_id is not None:
            ids = torch.cat([torch.tensor([bos_token_id]), ids])
        w = extract_attention(model, ids.unsqueeze(0)).weights  # [L, H, T, T]
        scores = {
            "previous_token": previous_token_score(w, start=1 + prefix),
            "duplicate_token": duplicate_token_score(w, period, start=period + prefix),
            "induction": induction_score(w, period, start=period + prefix),
        }
        for k, v in scores.items():
            totals[k] = totals.get(k, 0) + np.asarray(v) / n_samples
    return totals
