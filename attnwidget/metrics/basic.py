"""Per-matrix measures: entropy, sparsity, top-k, Gini, statistics, heat-map data.

Every function takes attention ``[..., Q, K]`` (numpy, torch or an
AttentionMaps) and returns one result per matrix with the same leading shape:
a 2-D input gives Python floats, a ``[L, H, Q, K]`` stack gives ``[L, H]``
arrays. Rows are queries; each row is a distribution over keys.

Masks: pass ``mask`` (bool, True = key visible) or ``causal=True``; then only
visible keys count (the normalised entropy divides by the log of the number of
visible keys) and rows with no visible key, or all-zero rows, are skipped.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from attnwidget.metrics._input import (
    Prepared,
    as_output,
    check_int,
    check_threshold,
    masked_mean,
    prepare,
)

#: Arrays with more cells than this (4 MiB of float32) are worked on in row blocks or in a
#: reused per-thread buffer: a fresh 64 MiB temporary at 4096 tokens is mapped page by page
#: on every call, which cost more than the arithmetic.
BLOCK_CELLS = 2**20
_scratch = threading.local()
#: The largest map sorted in the reused buffer (4096 x 4096: 64 MiB per thread that sorts).
SCRATCH_SORT_CELLS = 4096 * 4096


def _scratch_buffer(n: int, dtype: np.dtype) -> np.ndarray:
    """A per-thread 1-D buffer of at least ``n`` items of ``dtype``, reused between calls."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.dtype != dtype or buf.size < n:
        buf = _scratch.buf = np.empty(n, dtype=dtype)
    return buf[:n]


def _row_entropy(p: Prepared) -> torch.Tensor:
    """Entropy of every row in nats, ``[..., Q]``; ``0 ln 0 = 0`` exactly (no epsilon)."""
    if "entropy" not in p.cache:
        w = p.w.numpy()
        rows = w.reshape(-1, w.shape[-1])
        out = np.empty(rows.shape[0], dtype=w.dtype)
        step = max(1, BLOCK_CELLS // max(1, rows.shape[1]))
        logs = np.empty((min(step, rows.shape[0]), rows.shape[1]), dtype=w.dtype)
        for r0 in range(0, rows.shape[0], step):
            block = rows[r0:r0 + step]
            lg = logs[: block.shape[0]]
            lg.fill(0)
            # log only where p > 0 (the rest stays 0), so 0 log 0 is exactly 0. numpy's
            # SIMD log is ~4x faster than torch's on this CPU, which is why this is numpy.
            np.log(block, out=lg, where=block > 0)
            out[r0:r0 + step] = 0.0 - np.einsum("qk,qk->q", block, lg)  # 0, not -0, for one-hot rows
        p.cache["entropy"] = torch.from_numpy(out.reshape(w.shape[:-1]))
    return p.cache["entropy"]


def _n_visible(p: Prepared) -> torch.Tensor:
    """Visible entries per matrix ``[...]`` (float)."""
    return p.n_keys.sum(-1)


def _visible(p: Prepared) -> torch.Tensor:
    """bool ``[..., Q, K]``: entries that count (visible key in a non-empty row)."""
    keep = p.rows.unsqueeze(-1)
    return keep if p.key_mask is None else keep & p.key_mask


def compute_attention_entropy(
    attention_weights: Any, *, mask: Any = None, causal: bool = False, normalize: bool = False
) -> np.ndarray:
    """Entropy of each row, ``H = -sum_k p_k ln p_k`` in nats, shape ``[..., Q]``.

    ``0 ln 0`` is exactly 0 (the log is taken only where p > 0), with no epsilon added, so a
    one-hot row gives 0 and a uniform row over n keys gives ``ln n``. Fully
    masked rows give 0 (see :func:`normalized_entropy` to tell them apart).
    ``normalize=True`` rescales rows that do not sum to 1 instead of refusing them.
    """
    p = prepare(attention_weights, "attention_weights", mask=mask, causal=causal, normalize=normalize)
    return _row_entropy(p).numpy()


def normalized_entropy(
    attention_weights: Any, *, mask: Any = None, causal: bool = False, normalize: bool = False
) -> np.ndarray:
    """Row entropy divided by ``ln(visible keys)``, in [0, 1], shape ``[..., Q]``.

    1 is uniform over the visible keys, 0 is one-hot. Rows with fewer than two
    visible keys (no choice to spread over) and fully masked rows give NaN, so
    averages can skip them with ``np.nanmean``.
    """
    p = prepare(attention_weights, "attention_weights", mask=mask, causal=causal, normalize=normalize)
    return _normalized_rows(p).numpy()


def _normalized_rows(p: Prepared) -> torch.Tensor:
    h = _row_entropy(p)
    choice = p.n_keys >= 2
    return torch.where(choice, h / p.n_keys.clamp(min=2).log(), torch.full_like(h, math.nan))


def _mean_normalized_entropy(p: Prepared) -> torch.Tensor:
    """Mean of the normalised row entropy over rows with at least two visible keys, ``[...]``."""
    norm_rows = _normalized_rows(p)
    return masked_mean(torch.nan_to_num(norm_rows), ~torch.isnan(norm_rows), 1)


def _diagonal(p: Prepared) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The main diagonal ``[..., min(Q, K)]`` and which of its entries count (None: all of them)."""
    diag = torch.diagonal(p.w, dim1=-2, dim2=-1)
    if p.dense:
        return diag, None
    keep = p.rows[..., : diag.shape[-1]]
    if p.key_mask is not None:
        keep = keep & torch.diagonal(p.key_mask, dim1=-2, dim2=-1)
    return diag, keep


def _band_sums(w: torch.Tensor, window: int) -> tuple[torch.Tensor, ...]:
    """Sums over the band ``|i - j| <= window`` from its diagonals only (no full-size temporaries).

    Returns per matrix: band total ``[...]``; and per position t ``[..., Q]``:
    the band's row sums, column sums (padded to Q), its part of row t left of
    and on the diagonal (``j <= t``), and its part of column t above the diagonal (``i < t``).
    """
    Q, K = w.shape[-2:]
    lead = w.shape[:-2]
    row = torch.zeros(*lead, Q, dtype=w.dtype)
    col = torch.zeros(*lead, max(Q, K), dtype=w.dtype)
    row_left = torch.zeros(*lead, Q, dtype=w.dtype)
    col_above = torch.zeros(*lead, max(Q, K), dtype=w.dtype)
    for d in range(-window, window + 1):  # d = j - i
        diag = torch.diagonal(w, offset=d, dim1=-2, dim2=-1)
        if diag.shape[-1] == 0:
            continue
        i0 = max(0, -d)
        rows_i = slice(i0, i0 + diag.shape[-1])
        cols_j = slice(i0 + d, i0 + d + diag.shape[-1])
        row[..., rows_i] += diag
        col[..., cols_j] += diag
        if d <= 0:
            row_left[..., rows_i] += diag
        else:
            col_above[..., cols_j] += diag
    return row.sum(-1), row, col[..., :K], row_left, col_above[..., :Q]


def compute_attention_sparsity(
    attention_weights: Any,
    threshold: float = 0.1,
    *,
    mask: Any = None,
    causal: bool = False,
    normalize: bool = False,
) -> Any:
    """Fraction of weights strictly below ``threshold`` (in [0, 1]), one per matrix ``[...]``.

    Only visible keys of non-empty rows are counted. A float for a 2-D input;
    NaN for a map with no visible weight at all (every row fully masked).
    """
    threshold = check_threshold(threshold)
    p = prepare(attention_weights, "attention_weights", mask=mask, causal=causal, normalize=normalize)
    return as_output(_sparsity(p, threshold))


def _sparsity(p: Prepared, threshold: float) -> torch.Tensor:
    w = p.w
    if "sorted" in p.cache:  # Gini already sorted each matrix: count by binary search
        ordered = p.cache["sorted"].numpy()
        # the threshold in the weights' own dtype, as `w < threshold` compares (and a
        # float64 key would make numpy convert the whole row first)
        t = ordered.dtype.type(threshold)
        below = torch.from_numpy(
            np.array([np.searchsorted(row, t, side="left") for row in ordered], dtype=np.float64)
        ).reshape(w.shape[:-2])
    else:
        flat = w.reshape(-1, w.shape[-2] * w.shape[-1]).numpy()
        # numpy counts a boolean mask ~10x faster than torch's sum over a bool tensor here
        t = flat.dtype.type(threshold)
        below = torch.from_numpy(
            np.array([np.count_nonzero(row < t) for row in flat], dtype=np.float64)
        ).reshape(w.shape[:-2])
    # a fraction of counts, in float64: 8 of 25 is 0.32, not float32's 0.3199999928
    n_vis = _n_visible(p).double()
    if threshold > 0 and not p.dense:
        # hidden entries are 0, so below any threshold > 0: count them out
        below = below - (w.shape[-2] * w.shape[-1] - n_vis)
    # no visible weight at all (an empty map): the fraction is undefined, not 0
    return torch.where(n_vis > 0, below / n_vis.clamp(min=1), torch.full_like(below, float("nan")))


# --------------------------------------------------------------------------- top-k
def _topk(w: torch.Tensor, visible: torch.Tensor | None, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k keys of every row of ``w`` ``[..., Q, K]``: indices and weights ``[..., Q, k]``.

    Hidden keys (``visible`` False; None = all visible) are never picked; rows
    with fewer than k visible keys get index -1 and weight 0. Ties go to the
    lower position: ``topk`` on floats gives no such promise, so rows where any
    two of the top k+1 weights are equal are redone exactly (a stable sort).
    """
    K = w.shape[-1]
    kk = min(k + 1, K)
    source = w if visible is None else w.masked_fill(~visible, -1)
    vals, idx = source.topk(kk, dim=-1, sorted=True)
    no_ties = torch.zeros(vals.shape[:-1], dtype=torch.bool)
    tied = (vals[..., 1:] == vals[..., :-1]).any(-1) if kk > 1 else no_ties
    vals, idx = vals[..., :k], idx[..., :k]
    if bool(tied.any()):
        where = tied.nonzero(as_tuple=True)
        rows = source[where].numpy()
        order = np.argsort(-rows, axis=-1, kind="stable")[..., :k]
        fixed = torch.from_numpy(np.ascontiguousarray(order))
        idx = idx.clone()
        idx[where] = fixed
        vals = source.gather(-1, idx)
    idx = torch.where(vals >= 0, idx, -1)
    return idx, vals.clamp(min=0)


def _topk_keys(p: Prepared, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _topk(p.w, None if p.dense else _visible(p).expand(p.w.shape), k)


def top_k_keys(
    attention_weights: Any, k: int = 3, *, mask: Any = None, causal: bool = False, normalize: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The k most attended keys of every row: indices and weights, each ``[..., Q, k]``.

    Strongest first, ties broken by the lower position. Rows with fewer than k
    visible keys are padded with index -1 and weight 0.
    """
    p = prepare(attention_weights, "attention_weights", mask=mask, causal=causal, normalize=normalize)
    k = check_int(k, "k", 1, p.w.shape[-1])
    idx, weights = _topk_keys(p, k)
    return idx.numpy(), weights.numpy()


def find_top_k_attended(
    attention_weights: Any,
    query_idx: int,
    k: int = 3,
    *,
    return_weights: bool = False,
    mask: Any = None,
    causal: bool = False,
    normalize: bool = False,
) -> Any:
    """The ``k`` key positions that query ``query_idx`` attends to most, strongest first.

    Ties go to the lower position. Returns int indices ``[..., k]`` (a list of
    ints for a 2-D input), or ``(indices, weights)`` with ``return_weights=True``.
    ``query_idx`` may be negative (counted from the end). Errors: ``query_idx``
    outside the rows, ``k`` outside 1..(visible keys of that query), or a fully
    masked query row.
    """
    p = prepare(attention_weights, "attention_weights", mask=mask, causal=causal, normalize=normalize)
    Q = p.w.shape[-2]
    q = check_int(query_idx, "query_idx", -Q, Q - 1) % Q
    row_ok = p.rows[..., q]
    if not bool(row_ok.all()):
        raise ValueError(f"query_idx: row {q} is fully masked (no visible key), so it attends nowhere")
    visible_keys = int(p.n_keys[..., q].min())
    k = check_int(k, "k", 1, visible_keys)
    visible = _visible(p).expand(p.w.shape)[..., q : q + 1, :]
    idx, weights = _topk(p.w[..., q : q + 1, :], visible, k)
    idx, weights = idx[..., 0, :], weights[..., 0, :]
    if p.w.ndim == 2:
        out_idx: Any = [int(i) for i in idx]
        out_w: Any = [float(v) for v in weights]
    else:
        out_idx, out_w = idx.numpy(), weights.numpy()
    return (out_idx, out_w) if return_weights else out_idx


# --------------------------------------------------------------------------- Gini
@functools.lru_cache(maxsize=2)
def _ranks(n: int, dtype: torch.dtype) -> torch.Tensor:
    """``1..n`` as floats; the widget asks for the same length on every head, so keep the last two."""
    return torch.arange(1, n + 1, dtype=dtype)


#: From this many weights on, one map's sort runs as two half-sorts on two threads and one merge.
PARALLEL_SORT_CELLS = 2**21
_sorting = threading.local()


@contextlib.contextmanager
def single_thread_sorts(on: bool = True) -> Iterator[None]:
    """Within this block, this thread's large sorts (:func:`_sort_large`) use one thread (``on``)
    or two. The widget's worker sorts on one while it prefetches (work nobody waits for must not
    take the core the reply to a slider needs) and on two for the numbers a view is waiting for."""
    before = getattr(_sorting, "single", False)
    _sorting.single = on
    try:
        yield
    finally:
        _sorting.single = before


def _sort_large(buf: np.ndarray) -> None:
    """Sort the 1-D ``buf`` in place: with two cores and at least :data:`PARALLEL_SORT_CELLS`
    items, each half on its own thread (numpy's sort releases the GIL), then timsort
    (``kind="stable"``), which finds the two sorted runs and merges them in one pass. The result
    is the same sorted array; at 4096 x 4096 random weights 0.47 s instead of 0.70 s here.
    One thread inside :func:`single_thread_sorts`."""
    if buf.size < PARALLEL_SORT_CELLS or (os.cpu_count() or 1) < 2 or getattr(_sorting, "single", False):
        buf.sort()
        return
    half = buf.size // 2
    other = threading.Thread(target=buf[:half].sort, name="attnwidget-sort")
    other.start()
    try:
        buf[half:].sort()
    finally:
        other.join()
    buf.sort(kind="stable")


#: The fewest weights for which one map's sort may be torch's radix sort (below, either is fast).
RADIX_MIN_CELLS = 2**16
_radix_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _radix_is_faster() -> bool:
    """Whether torch's stable sort of int32 keys (a radix sort) beats numpy's float32 sort here,
    on one trial of :data:`RADIX_MIN_CELLS` weights after a warm-up; measured once (about 5 ms).
    The two give the same sorted array; which is faster depends on the CPU: numpy's AVX-512 sort
    runs at std::sort speed on AMD Zen 4 (``vpcompressps`` to memory is microcoded there), where
    the radix sort is 2-5x faster."""
    import time

    with _radix_lock:  # one trial, not two competing ones from two threads
        x = np.random.default_rng(0).random(RADIX_MIN_CELLS, dtype=np.float32)
        keys = torch.from_numpy(x).view(torch.int32)
        best = {"numpy": float("inf"), "radix": float("inf")}
        runs = (("numpy", lambda: np.sort(x)), ("radix", lambda: torch.sort(keys, stable=True)))
        for i in range(4):  # the first round warms both up and is not counted
            for name, run in runs:
                t0 = time.perf_counter()
                run()
                if i:
                    best[name] = min(best[name], time.perf_counter() - t0)
        return best["radix"] * 1.5 < best["numpy"]


def _sort_one_map(flat: np.ndarray) -> torch.Tensor:
    """``flat`` ``[1, n]`` sorted ascending, exactly: numpy's sort, or where that is slower
    (:func:`_radix_is_faster`, maps of :data:`RADIX_MIN_CELLS` weights or more) torch's radix
    sort of the float32 bit patterns, which order as the values do for weights >= 0 (a -0.0
    sorts first, with the zeros). In the widget's worker torch sorts on that thread's one
    OpenMP thread (attnwidget._worker), as its numpy sorts do."""
    if (flat.dtype == np.float32 and flat.size >= RADIX_MIN_CELLS and _radix_is_faster()
            and flat.min() >= 0):
        # 1-D: torch takes its radix sort for a flat tensor (a [1, n] row along dim=-1 took
        # another path, 15x slower here)
        keys = torch.from_numpy(flat.reshape(-1)).view(torch.int32)
        return torch.sort(keys, stable=True)[0].view(torch.float32).reshape(flat.shape)
    return torch.from_numpy(np.sort(flat, axis=-1))


def _ranked_sum(ordered: np.ndarray) -> tuple[float, float]:
    """``(sum_i (i + 1) * ordered[i], sum_i ordered[i])`` in float64, :data:`BLOCK_CELLS` items
    at a time (no float64 copy of a whole 4096 x 4096 map)."""
    ranks = _ranks(BLOCK_CELLS, torch.float64).numpy()  # 1 .. BLOCK_CELLS, kept
    weighted = total = 0.0
    for i0 in range(0, ordered.size, BLOCK_CELLS):
        block = ordered[i0:i0 + BLOCK_CELLS].astype(np.float64)
        block_sum = float(block.sum())
        # (i0 + j + 1) x_j summed: the block's offset times its sum, plus (j + 1) x_j
        weighted += i0 * block_sum + float(np.dot(block, ranks[: block.size]))
        total += block_sum
    return weighted, total


def _gini(p: Prepared) -> torch.Tensor:
    """Exact Gini coefficient of the visible weights of each matrix, ``[...]``.

    ``G = 2 sum_i i x_(i) / (n sum x) - (n + 1) / n`` over the ascending order
    ``x_(1..n)`` of the n visible weights. The order comes from numpy's sort
    (x86-simd-sort on AVX-512/AVX2 CPUs; a whole stack's rows at once), or for
    one map of up to :data:`BLOCK_CELLS` weights, where it is faster on this
    CPU, from torch's radix sort of the weights' bit patterns
    (:func:`_sort_one_map`); both are exact and give the same array. Hidden
    entries are 0 and sort first together with any visible zeros; zeros add
    nothing to the sum, so shifting every rank down by the number of hidden
    entries is exact.
    """
    w = p.w
    lead = w.shape[:-2]
    n_total = w.shape[-2] * w.shape[-1]
    flat = w.reshape(-1, n_total).numpy()
    if flat.shape[0] == 1 and BLOCK_CELLS < n_total <= SCRATCH_SORT_CELLS:
        # one large map (the widget's): sorted in a reused buffer, and not kept (see BLOCK_CELLS)
        buf = _scratch_buffer(flat.size, flat.dtype)
        buf[...] = flat.reshape(-1)
        _sort_large(buf)
        ordered = torch.from_numpy(buf.reshape(flat.shape))
    else:  # kept: a threshold then counts by binary search (compute_sparsity)
        # one map up to BLOCK_CELLS may take the radix sort: its int64 indices are 2x the map
        # (larger maps than the scratch buffer takes, up to 8192 x 8192, stay on numpy's sort)
        one = flat.shape[0] == 1 and n_total <= BLOCK_CELLS
        ordered = _sort_one_map(flat) if one else torch.from_numpy(np.sort(flat, axis=-1))
        p.cache["sorted"] = ordered
    if n_total > BLOCK_CELLS:
        # millions of ranked terms: float32 lost digits (5.6e-5 on a near-uniform 2048 x 2048
        # map's Gini of 0.008, where the two terms of G cancel), and ranks over 2^24 are inexact
        # (the total too: float32 row sums summed moved a 4096 x 4096 map's Gini by 1e-7)
        sums = torch.tensor([_ranked_sum(row) for row in ordered.reshape(-1, n_total).numpy()],
                            dtype=torch.float64)
        weighted, total = sums[:, 0].reshape(lead), sums[:, 1].reshape(lead)
    else:
        # BLAS accumulates in blocks: at 262144 terms the float32 sum is within ~1e-6
        # relative of a float64 one (checked in the tests), at a tenth of the time
        weighted = torch.mv(ordered, _ranks(n_total, w.dtype)).reshape(lead).to(torch.float64)
        total = p.sums.sum(-1).to(torch.float64)
    n = _n_visible(p).to(torch.float64)
    weighted = weighted - (n_total - n) * total
    ok = (total > 0) & (n > 0)
    g = 2 * weighted / (n * total).clamp(min=1e-300) - (n + 1) / n.clamp(min=1)
    return torch.where(ok, g, torch.zeros_like(g)).clamp(min=0).to(w.dtype)


def gini_coefficient(
    attention_weights: Any, *, mask: Any = None, causal: bool = False, normalize: bool = False
) -> Any:
    """Gini coefficient of each matrix's weights, ``[...]``: 0 uniform, near 1 all on one entry.

    Exact (a full sort per matrix, see :func:`_gini`); only visible keys of non-empty rows count.
    """
    p = prepare(attention_weights, "attention_weights", mask=mask, causal=causal, normalize=normalize)
    return as_output(_gini(p))


# --------------------------------------------------------------------------- statistics
STATISTICS_KEYS = (
    "mean", "std", "max", "min", "diagonal_mean", "diagonal_std", "mean_entropy",
    "max_entropy", "normalized_entropy", "sparsity_gini", "effective_tokens",
)


def _moments(p: Prepared) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the visible weights per matrix (population std)."""
    if "moments" not in p.cache:
        w = p.w
        if p.dense:
            mean = w.sum(dim=(-2, -1)) / (w.shape[-2] * w.shape[-1])
            std = _centred_rms(w, mean)
        else:
            n = _n_visible(p).clamp(min=1)
            mean = p.sums.sum(-1) / n
            # hidden entries are 0: sum of squares over all entries is over the visible ones
            sq = torch.linalg.vector_norm(w, dim=(-2, -1)) ** 2
            std = (sq / n - mean**2).clamp(min=0).sqrt()
        p.cache["moments"] = (mean, std)
    return p.cache["moments"]


def _centred_rms(w: torch.Tensor, mean: torch.Tensor, chunk: int = 2**20) -> torch.Tensor:
    """Population std of each matrix ``[...]`` given its mean: a second pass in cache-sized chunks.

    Two passes keep the accuracy of ``torch.std_mean`` (no cancellation for
    near-uniform maps) at a fraction of its time: centring a chunk that stays
    in L2 and taking its dot product with itself runs at memory speed.
    """
    flat = w.reshape(-1, w.shape[-2] * w.shape[-1])
    centre = mean.reshape(-1)
    out = torch.empty(flat.shape[0], dtype=torch.float64)
    buf = torch.empty(min(chunk, flat.shape[1]), dtype=w.dtype)
    for m in range(flat.shape[0]):
        acc = 0.0
        for start in range(0, flat.shape[1], chunk):
            part = flat[m, start : start + chunk]
            d = torch.sub(part, centre[m], out=buf[: part.shape[0]])
            acc += float(torch.dot(d, d))
        out[m] = acc
    return (out / flat.shape[1]).sqrt().to(w.dtype).reshape(mean.shape)


def _statistics(p: Prepared) -> dict[str, torch.Tensor]:
    w = p.w
    mean, std = _moments(p)
    zero = torch.zeros((), dtype=w.dtype)
    if p.dense:
        # two vectorised reductions; aminmax along a flattened dim is ~10x slower on CPU
        w_min, w_max = w.amin(dim=(-2, -1)), w.amax(dim=(-2, -1))
    else:
        vis = _visible(p).expand(w.shape)
        has_any = _n_visible(p) > 0
        big = torch.finfo(w.dtype).max
        w_max = torch.where(has_any, w.amax(dim=(-2, -1)), zero)
        w_min = torch.where(has_any, w.masked_fill(~vis, big).amin(dim=(-2, -1)), zero)

    diag, diag_keep = _diagonal(p)
    if diag_keep is None:
        diag_std, diag_mean = torch.std_mean(diag, dim=-1, correction=0)
    else:
        diag_mean = masked_mean(diag, diag_keep, 1)
        diag_std = masked_mean((diag - diag_mean[..., None]) ** 2, diag_keep, 1).sqrt()

    h = _row_entropy(p)
    mean_h = masked_mean(h, p.rows, 1)
    max_h = p.n_keys.amax(dim=-1).clamp(min=1).log()
    norm_h = _mean_normalized_entropy(p)
    out = {
        "mean": mean, "std": std, "max": w_max, "min": w_min,
        "diagonal_mean": diag_mean, "diagonal_std": diag_std,
        "mean_entropy": mean_h, "max_entropy": max_h, "normalized_entropy": norm_h,
        "sparsity_gini": _gini(p), "effective_tokens": masked_mean(h.exp(), p.rows, 1),
    }
    empty = ~p.rows.any(dim=-1)  # [...]: every row fully masked
    if bool(empty.any()):
        # nothing is attended: a mean, an entropy or a Gini over no weights is undefined,
        # and 0 would read as "one sharp key"
        out = {k: v.masked_fill(empty, float("nan")) for k, v in out.items()}
    return out


def compute_attention_statistics(
    attention: Any, *, mask: Any = None, causal: bool = False, normalize: bool = False
) -> dict[str, Any]:
    """Summary numbers of each matrix, as a dict with exactly these keys.

    ``mean``, ``std``, ``max``, ``min`` (over visible weights); ``diagonal_mean``,
    ``diagonal_std`` (the main diagonal, a token's weight on itself);
    ``mean_entropy`` (mean row entropy, nats); ``max_entropy`` (``ln K``: the
    entropy of a uniform row; with a mask, ``ln`` of the most visible keys of
    any row); ``normalized_entropy`` (mean over rows with at least two visible
    keys of ``H / ln(visible keys)``, in [0, 1]); ``sparsity_gini`` (Gini
    coefficient of all visible weights, exact); ``effective_tokens`` (mean of
    ``exp(row entropy)``: how many keys a row spreads over).

    Values are floats for a 2-D input and arrays ``[...]`` for a stack. Every
    value is NaN for a matrix whose rows are all fully masked: nothing is
    attended, so there are no weights to summarise (see ``pattern == "empty"``).
    """
    p = prepare(attention, "attention", mask=mask, causal=causal, normalize=normalize)
    return {k: as_output(v) for k, v in _statistics(p).items()}


def create_attention_heatmap(
    attention_weights: Any, query_labels: Sequence[str], key_labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """Everything a heat-map plot needs, as a dict.

    ``weights`` (numpy ``[..., Q, K]``), ``query_labels`` and ``key_labels``
    (lists of str, one per query/key; ``key_labels`` defaults to the query
    labels for self-attention), ``shape`` (tuple), ``vmin``/``vmax`` (the data's
    value range) and ``range`` ((0, 1): the fixed range probabilities live in).
    """
    p = prepare(attention_weights, "attention_weights")
    Q, K = p.w.shape[-2:]
    q_labels = _labels(query_labels, Q, "query_labels")
    k_labels = q_labels if key_labels is None and Q == K else _labels(key_labels, K, "key_labels")
    return {
        "weights": p.w.numpy(),
        "query_labels": q_labels,
        "key_labels": k_labels,
        "shape": tuple(p.w.shape),
        "vmin": float(p.w.min()),
        "vmax": float(p.w.max()),
        "range": (0.0, 1.0),
    }


def _labels(labels: Any, n: int, name: str) -> list[str]:
    if labels is None or isinstance(labels, str):
        raise TypeError(f"{name}: expected a sequence of {n} strings, got {type(labels).__name__}")
    out = [str(x) for x in labels]
    if len(out) != n:
        raise ValueError(f"{name}: expected {n} labels to match the weights, got {len(out)}")
    return out


def analyze_attention_patterns(
    weights: Any, *, window: int = 2, mask: Any = None, causal: bool = False, normalize: bool = False
) -> dict[str, Any]:
    """Four summary measures per matrix, as a dict of floats (2-D) or arrays ``[...]``.

    ``max_attention``: mean over rows of the row's largest weight (how peaked
    the rows are). ``entropy``: mean row entropy (nats). ``diagonal_mass``:
    mean weight a query puts on its own position. ``local_vs_global``: share of
    the attention mass within ``window`` positions of the diagonal
    (``|i - j| <= window``, default 2, the same window the pattern rules use);
    ``1 - local_vs_global`` is the share that goes further.

    Not the Attention Surgeon handout's function of the same name, which has other
    units (``diagonal_mass`` in percent, ``local_vs_global`` a ratio, ``max_attention``
    over the whole matrix): that one is :func:`attnwidget.lab.surgeon.analyze_attention_patterns`.
    """
    window = check_int(window, "window", 0, 1 << 30)
    p = prepare(weights, "weights", mask=mask, causal=causal, normalize=normalize)
    rows = p.rows
    diag = torch.diagonal(p.w, dim1=-2, dim2=-1)
    band_rows = _band_sums(p.w, window)[1]  # each row's mass within the window
    return {
        "max_attention": as_output(_mean_row_max(p)),
        "entropy": as_output(masked_mean(_row_entropy(p), rows, 1)),
        "diagonal_mass": as_output(masked_mean(diag, rows[..., : diag.shape[-1]], 1)),
        "local_vs_global": as_output(masked_mean(band_rows, rows, 1)),
    }


def _mean_row_max(p: Prepared) -> torch.Tensor:
    """Mean over the rows that count of each row's largest weight, ``[...]``."""
    return masked_mean(p.w.amax(dim=-1), p.rows, 1)
