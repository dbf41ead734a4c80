"""The lab material's per-head numpy functions, as published (epsilon entropy, np.sort Gini).

An independent implementation for the tests to compare against, and the
per-head baseline of benchmarks/bench_metrics.py.
"""

from __future__ import annotations

import numpy as np


def lab_statistics(attention: np.ndarray) -> dict:
    stats = {
        "mean": float(np.mean(attention)), "std": float(np.std(attention)),
        "max": float(np.max(attention)), "min": float(np.min(attention)),
    }
    diagonal = np.diag(attention)
    stats["diagonal_mean"] = float(np.mean(diagonal))
    stats["diagonal_std"] = float(np.std(diagonal))
    entropy_per_row = -np.sum(attention * np.log(attention + 1e-10), axis=1)
    stats["mean_entropy"] = float(np.mean(entropy_per_row))
    stats["max_entropy"] = float(np.log(attention.shape[1]))
    stats["normalized_entropy"] = stats["mean_entropy"] / stats["max_entropy"]
    x = np.sort(attention.flatten())
    n = len(x)
    np.cumsum(x)  # computed and unused in the published gini(); kept so the baseline costs the same
    stats["sparsity_gini"] = float(2 * np.sum(np.arange(1, n + 1) * x) / (n * np.sum(x)) - (n + 1) / n)
    stats["effective_tokens"] = float(np.mean(np.exp(entropy_per_row)))
    return stats


def lab_pattern(attention: np.ndarray) -> str:
    n = attention.shape[0]
    diagonal_mean = np.mean(np.diag(attention))
    first_col_mean = np.mean(attention[:, 0])
    off_diagonal_mean = np.mean(attention[~np.eye(n, dtype=bool)])
    local_mask = np.abs(np.arange(n)[:, None] - np.arange(n)) <= 2
    local = np.sum(attention[local_mask]) / np.sum(attention)
    max_col_ratio = np.max(np.sum(attention, axis=0)) / n
    if diagonal_mean > 0.5 and diagonal_mean > 3 * off_diagonal_mean:
        return "diagonal"
    if first_col_mean > 0.4:
        return "beginning_of_sequence"
    if max_col_ratio > 0.6:
        return "broadcast"
    if local > 0.8:
        return "local"
    if np.std(attention) < 0.1:
        return "uniform"
    return "mixed"


