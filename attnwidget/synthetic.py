"""Synthetic attention patterns with known structure, for tests and teaching."""

from __future__ import annotations

from typing import Any

import torch

SYNTHETIC_PATTERNS = ("diagonal", "local", "broadcast", "bos", "uniform", "block")


def create_synthetic_attention(
    seq_len: int, pattern: str = "diagonal", noise_level: float = 0.05, seed: int | None = None
) -> torch.Tensor:
    """A ``[seq_len, seq_len]`` float32 attention matrix with a known pattern; rows sum to 1.

    Patterns (:data:`SYNTHETIC_PATTERNS`): ``diagonal`` (each token on itself),
    ``local`` (weight falling off with distance: 0.4 on itself, 0.25 at 1, 0.1 at 2,
    0.01 further), ``broadcast`` (every token on position ``seq_len // 3``),
    ``bos`` (every token on the first one, fading down the rows), ``uniform``,
    ``block`` (two halves that attend within themselves). ``noise_level``
    (>= 0) adds uniform noise in ``[0, noise_level)`` before the rows are
    normalised. ``seed`` makes the noise reproducible (a private generator; the
    global torch RNG is left alone). ``local`` and ``block`` carry no noise.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len: expected an int >= 1, got {seq_len!r}")
    if pattern not in SYNTHETIC_PATTERNS:
        raise ValueError(f"pattern: expected one of {SYNTHETIC_PATTERNS}, got {pattern!r}")
    if not isinstance(noise_level, (int, float)) or isinstance(noise_level, bool) or not noise_level >= 0:
        raise ValueError(f"noise_level: expected a number >= 0, got {noise_level!r}")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    n = seq_len

    def noise() -> torch.Tensor:
        return torch.rand(n, n, generator=gen) * noise_level

    i = torch.arange(n)
    dist = (i[:, None] - i[None, :]).abs()
    eye = torch.eye(n)
    a: Any
    if pattern == "diagonal":
        a = eye * 0.7 + noise()
    elif pattern == "local":
        a = torch.full((n, n), 0.01)
        a[dist == 2] = 0.1
        a[dist == 1] = 0.25
        a[dist == 0] = 0.4
    elif pattern == "broadcast":
        a = torch.zeros(n, n)
        a[:, n // 3] = 0.7
        a = a + eye * 0.15 + noise()
    elif pattern == "bos":
        a = torch.zeros(n, n)
        a[:, 0] = (0.6 - i * 0.03).clamp(min=0.0)  # fades down the rows, never negative
        a = a + eye * 0.2 + noise()
    elif pattern == "uniform":
        a = torch.ones(n, n) + noise()
    else:  # block
        a = torch.zeros(n, n)
        mid = max(n // 2, 1)
        a[:mid, :mid] = 0.7 / mid
        if n > mid:
            a[mid:, mid:] = 0.7 / (n - mid)
        a = a + eye * 0.15
    a = a.to(torch.float32)
    return a / a.sum(dim=1, keepdim=True)
