"""Long-context measures: where attention goes over the history, and what that says about compression.

A query near the end of a long input attends over its whole history. These
functions summarise that profile (how much each position receives, how much
weight goes to recent vs distant keys, where the maximum sits) per matrix,
aggregate it over several samples, and turn it into KV-cache compression hints.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from attnwidget.metrics._input import Prepared, as_output, check_int, masked_mean, prepare
from attnwidget.metrics.basic import _row_entropy, _visible

#: Compression rules: (hint, measure, threshold, why).
HINT_RULES: tuple[tuple[str, str, float, str], ...] = (
    ("keep_recent_window", "recency_ratio", 2.0,
     "the most recent quarter of the keys gets more than twice the mean weight of the most distant "
     "quarter: distant history matters least here (how much a window keeps depends on the middle "
     "keys too: see top_mass and k90)"),
    ("sample_uniformly", "mean_entropy", 2.0,
     "rows spread over many keys (entropy > 2 nats, > ~7 keys): no small set of keys stands out"),
    ("keep_top_k", "top_mass", 0.9,
     "the top 10% of keys hold more than 90% of the weight: keeping only those loses little"),
    ("group_clusters", "cluster_run", 4.0,
     "the keys holding 90% of the weight lie in two or more runs of 4+ adjacent positions: each "
     "run can be kept or summarised as a group"),
)
#: Share of the last query's weight that the recommended top-K retention keeps.
TOP_K_MASS = 0.9


def attention_received(attention: Any, *, mask: Any = None, causal: bool = False) -> np.ndarray:
    """Mean weight each key position receives over the (non-empty) query rows, ``[..., K]``.

    Sums to 1 over keys. A spike at position 0 is the usual attention sink.
    """
    p = prepare(attention, "attention", mask=mask, causal=causal)
    return _received(p).numpy()


def _received(p: Prepared) -> torch.Tensor:
    # empty rows are all 0, so the column sums already skip them; divide by the rows that count
    return p.w.sum(-2) / p.rows.sum(-1, keepdim=True).clamp(min=1).to(p.w.dtype)


def _last_row(p: Prepared) -> tuple[torch.Tensor, torch.Tensor]:
    """The last non-empty row of each matrix ``[..., K]`` and its visible keys ``[..., K]``."""
    Q = p.w.shape[-2]
    last = (p.rows * torch.arange(1, Q + 1)).amax(-1) - 1  # -1 when no row counts
    if bool((last < 0).any()):
        raise ValueError("attention: a matrix has no row with a visible key")
    idx = last[..., None, None].expand(*last.shape, 1, p.w.shape[-1])
    row = p.w.gather(-2, idx)[..., 0, :]
    vis = _visible(p).expand(p.w.shape).gather(-2, idx)[..., 0, :]
    return row, vis


def last_query_profile(attention: Any, *, mask: Any = None, causal: bool = False) -> np.ndarray:
    """The last query's attention over the history, ``[..., K]`` (the row a decoder predicts from)."""
    p = prepare(attention, "attention", mask=mask, causal=causal)
    return _last_row(p)[0].numpy()


def _profile_measures(p: Prepared, fraction: float) -> dict[str, torch.Tensor]:
    row, vis = _last_row(p)
    n = vis.sum(-1)  # visible keys of that row
    pos = vis.cumsum(-1) - 1  # rank of each visible key among the visible ones
    span = (n.to(torch.float64) * fraction).ceil().clamp(min=1).to(n.dtype)
    distant = vis & (pos < span.unsqueeze(-1))
    recent = vis & (pos >= (n - span).unsqueeze(-1))
    recent_mean = masked_mean(row, recent, 1).to(torch.float64)
    distant_mean = masked_mean(row, distant, 1).to(torch.float64)
    ratio = torch.where(
        distant_mean > 0, recent_mean / distant_mean.clamp(min=1e-300),
        torch.where(recent_mean > 0, torch.full_like(recent_mean, math.inf), torch.ones_like(recent_mean)),
    )
    masked_row = row.masked_fill(~vis, -1)
    argmax = masked_row.argmax(-1)  # first maximum: the lowest position on ties
    rank = pos.gather(-1, argmax.unsqueeze(-1))[..., 0]
    relative = rank.to(torch.float64) / (n - 1).clamp(min=1).to(torch.float64)
    k = (n.to(torch.float64) * 0.1).ceil().clamp(min=1).to(torch.int64)
    # one stable sort serves top_mass and K90 (stable: ties keep key order, so the runs are defined)
    ordered, order = masked_row.sort(dim=-1, descending=True, stable=True)
    ordered = ordered.clamp(min=0)
    top_mass = (ordered.cumsum(-1).gather(-1, (k - 1).unsqueeze(-1))[..., 0]).to(torch.float64)
    k90, runs = _top_keys_and_runs(ordered, order, vis)
    return {
        "recency_ratio": ratio,
        "max_position": argmax,
        "max_position_relative": relative,
        "top_mass": top_mass,
        "k90": k90.to(torch.float64),
        # one block is a window or a sink (other hints say so); clusters need two or more
        "cluster_run": torch.where(runs >= 2, k90.to(torch.float64) / runs.clamp(min=1).to(torch.float64),
                                   torch.zeros_like(k90, dtype=torch.float64)),
    }


def _top_keys_and_runs(
    ordered: torch.Tensor, order: torch.Tensor, vis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row ``[..., K]``: K90, the fewest keys holding :data:`TOP_K_MASS` of the weight, and
    how many runs of adjacent positions those keys form (1 = one contiguous block).

    ``ordered``/``order``: the row's weights sorted descending (hidden keys, at -1 before
    clamping, sort last and hold 0) and their key positions.
    """
    cum = ordered.to(torch.float64).cumsum(-1)
    total = cum[..., -1:]
    # the first rank whose cumulative weight reaches the target share of the row's weight
    k90 = (cum < TOP_K_MASS * total - 1e-12).sum(-1) + 1
    k90 = torch.minimum(k90, vis.sum(-1).clamp(min=1))
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(order.shape[-1]).expand_as(order))
    top = rank < k90.unsqueeze(-1)  # [..., K]: the K90 heaviest keys
    starts = top.clone()
    starts[..., 1:] &= ~top[..., :-1]  # a run starts where the previous position is not a top key
    return k90, starts.sum(-1)


def _mean_entropy(p: Prepared) -> torch.Tensor:
    """Mean row entropy per matrix ``[...]`` (float64), kept apart from the last-row measures
    because it reads every row, which recency_ratio and max_position do not need."""
    return masked_mean(_row_entropy(p), p.rows, 1).to(torch.float64)


def recency_ratio(attention: Any, fraction: float = 0.25, *, mask: Any = None, causal: bool = False) -> Any:
    """Last query: mean weight on the most recent ``fraction`` of its keys over the most distant ``fraction``.

    Per matrix ``[...]``. > 1 favours recent keys. ``inf`` when the distant keys
    get exactly 0 and the recent ones do not; 1 when both get 0.
    """
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 0.5):
        raise ValueError(f"fraction: expected a number in (0, 0.5], got {fraction!r}")
    p = prepare(attention, "attention", mask=mask, causal=causal)
    return as_output(_profile_measures(p, fraction)["recency_ratio"])


def max_position(attention: Any, *, mask: Any = None, causal: bool = False) -> Any:
    """Key position of the last query's largest weight (lowest on ties), per matrix ``[...]``."""
    p = prepare(attention, "attention", mask=mask, causal=causal)
    return as_output(_profile_measures(p, 0.25)["max_position"])


def history_metrics(
    samples: Sequence[Any],
    *,
    fraction: float = 0.25,
    bins: int = 20,
    causal: bool = False,
) -> dict[str, Any]:
    """History measures over several samples, each aggregated as mean and std.

    ``samples``: attention ``[..., Q, K]`` per sample (lengths may differ; the
    leading shape, e.g. ``[L, H]``, must match). For each measure the result has
    ``{"mean": [...], "std": [...]}`` over samples: ``recency_ratio``
    (infinite values are left out of the mean), ``max_position_relative``
    (0 = first key, 1 = last), ``top_mass`` (share of the last query's weight on
    its top 10% of keys), ``k90`` (the fewest keys holding 90% of that weight: the
    K to keep in top-K retention), ``cluster_run`` (K90 over the number of runs of
    adjacent positions those keys form, when they form two or more: their mean
    run length, large when the weight sits in a few separate contiguous groups;
    0 for a single block), ``mean_entropy`` (nats). ``received`` is the
    attention received per position, resampled onto ``bins`` equal bins of
    relative position so samples of different lengths line up: mean and std ``[..., bins]``.
    ``n_samples`` says how many went in.
    """
    bins = check_int(bins, "bins", 1, 1 << 16)
    per: dict[str, list[np.ndarray]] = {}
    for p in _checked(samples, causal):
        measures = _profile_measures(p, fraction)
        del measures["max_position"]  # absolute positions do not line up across lengths
        measures["mean_entropy"] = _mean_entropy(p)
        for key, value in measures.items():
            per.setdefault(key, []).append(value.numpy())
        per.setdefault("received", []).append(_received_bins(p, bins))
    out: dict[str, Any] = {"n_samples": len(samples)}
    for key, values in per.items():
        stack = np.stack(values)
        out[key] = finite_mean_std(stack) if key == "recency_ratio" else {"mean": stack.mean(0),
                                                                          "std": stack.std(0)}
    return out


def received_metrics(samples: Sequence[Any], *, bins: int = 20, causal: bool = False) -> dict[str, Any]:
    """:func:`history_metrics`' ``received`` alone (what each relative position receives, mean
    and std over samples ``[..., bins]``), without the other measures' work."""
    bins = check_int(bins, "bins", 1, 1 << 16)
    stack = np.stack([_received_bins(p, bins) for p in _checked(samples, causal)])
    return {"mean": stack.mean(0), "std": stack.std(0)}


def _checked(samples: Sequence[Any], causal: bool) -> Iterator[Prepared]:
    """Each sample checked as every metric's input, one at a time (a long list of samples is
    never held checked all at once); their leading shapes must match."""
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence) or len(samples) == 0:
        raise ValueError(
            f"samples: expected a non-empty sequence of attention arrays, got {type(samples).__name__}"
        )
    lead = None
    for i, sample in enumerate(samples):
        p = prepare(sample, f"samples[{i}]", causal=causal)
        if lead is None:
            lead = p.w.shape[:-2]
        elif p.w.shape[:-2] != lead:
            raise ValueError(
                f"samples[{i}]: leading shape {tuple(p.w.shape[:-2])} differs from samples[0]'s {tuple(lead)}"
            )
        yield p


def _received_bins(p: Prepared, bins: int) -> np.ndarray:
    return _binned(_received(p).to(torch.float64).numpy(), bins)


def finite_mean_std(stack: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and std over axis 0 (samples) of the finite values, as a recency ratio is aggregated:
    infinite values are left out; with none finite, ``inf`` (std 0) if any was infinite, else
    NaN (std NaN)."""
    finite = np.where(np.isfinite(stack), stack, np.nan)
    count = np.isfinite(finite).sum(0)
    infinite = np.isinf(stack).any(0)
    with np.errstate(invalid="ignore"):
        none = np.where(infinite, np.inf, np.nan)
        mean = np.where(count > 0, np.nansum(finite, 0) / np.maximum(count, 1), none)
        var = np.nansum((finite - np.where(count > 0, mean, 0)) ** 2, 0) / np.maximum(count, 1)
    return {"mean": mean, "std": np.where(count > 0, np.sqrt(var), np.where(infinite, 0.0, np.nan))}


def _binned(profile: np.ndarray, bins: int) -> np.ndarray:
    """``[..., K]`` -> ``[..., bins]``: the share of weight falling in each relative-position bin."""
    K = profile.shape[-1]
    edges = np.minimum((np.arange(K) * bins) // K, bins - 1)
    out = np.zeros((*profile.shape[:-1], bins))
    for b in range(bins):
        out[..., b] = profile[..., edges == b].sum(-1)
    return out


def compression_hints(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """KV-cache compression hints that follow from :func:`history_metrics`, as structured data.

    One dict per (matrix, rule) that fires: ``index`` (the matrix, e.g.
    ``(layer, head)``; ``()`` for a single matrix), ``hint``, ``measure``,
    ``value`` (the mean over samples that triggered it), ``threshold`` and
    ``reason``, and ``recommended_k``: for top-K retention, the mean K90 over
    samples rounded up (the fewest keys that held 90% of the last query's weight),
    when the metrics carry ``k90``. Rules (:data:`HINT_RULES`): recency ratio > 2
    -> keep a recent window; mean entropy > 2 -> sample uniformly; top 10% of keys
    hold > 90% -> keep top-k; the 90% keys lie in runs of 4+ adjacent positions
    on average -> group the clusters.
    """
    hints = []
    for hint, measure, threshold, reason in HINT_RULES:
        if measure not in metrics:
            raise ValueError(f"metrics: expected the output of history_metrics, missing {measure!r}")
        values = np.asarray(metrics[measure]["mean"], dtype=float)
        for index in zip(*np.nonzero(values > threshold), strict=True) if values.ndim else (
            [()] if values > threshold else []
        ):
            index = tuple(int(i) for i in index)
            item = {
                "index": index, "hint": hint, "measure": measure,
                "value": float(values[index]), "threshold": threshold, "reason": reason,
            }
            if "k90" in metrics:
                k90 = float(np.asarray(metrics["k90"]["mean"])[index])
                item["recommended_k"] = math.ceil(k90 - 1e-9)
            hints.append(item)
    return hints
