"""Attention rollout and attention flow (Abnar & Zuidema, 2020).

Both follow attention through the layers, adding the residual connection as
half of each layer's mixing. Caveat: attention is not explanation. These
numbers say how information *could* be routed by the attention weights; they
ignore the values, the MLPs and the output projection, and they can disagree
with gradient- or ablation-based attributions (Jain & Wallace 2019; Wiegreffe
& Pinter 2019). Read them as a picture of routing, not as proof of importance.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from attnwidget.metrics._input import check_int, prepare

FUSIONS = ("mean", "max", "min")


def _mixing(attention: Any, head_fusion: str, discard_ratio: float, residual: bool) -> torch.Tensor:
    """Per layer ``[L, Q, Q]`` mixing matrices: fused heads, discarded low weights, + identity, rows = 1."""
    if head_fusion not in FUSIONS:
        raise ValueError(f"head_fusion: expected one of {FUSIONS}, got {head_fusion!r}")
    if not (isinstance(discard_ratio, (int, float)) and 0 <= discard_ratio < 1):
        raise ValueError(f"discard_ratio: expected a number in [0, 1), got {discard_ratio!r}")
    w = prepare(attention, "attention", min_ndim=4).w
    return _mixing_of(w, head_fusion, discard_ratio, residual)


#: Rows of the fused map built at a time, in cells (16 MiB of float32): rollout's working
#: memory beyond its result stays this small even for an 8192 x 8192 map.
MIXING_BLOCK_CELLS = 2**22


def _mixing_of(w: torch.Tensor, head_fusion: str, discard_ratio: float, residual: bool) -> torch.Tensor:
    if w.ndim != 4:
        raise ValueError(f"attention: expected [layers, heads, Q, K], got shape {tuple(w.shape)}")
    L, _, Q, K = w.shape
    if Q != K:
        raise ValueError(f"attention: rollout needs self-attention (Q == K), got Q={Q}, K={K}")
    reduce = {"mean": torch.mean, "max": torch.amax, "min": torch.amin}[head_fusion]
    n_drop = int(discard_ratio * K)
    mix = torch.empty(L, Q, Q, dtype=w.dtype)
    step = max(1, MIXING_BLOCK_CELLS // Q)
    # Built in row blocks, in place in the result: whole-map temporaries (fused heads, the
    # identity, the residual sum, the normalised copy) would cost several maps' worth of
    # memory at 8192 tokens.
    for layer in range(L):
        for r0 in range(0, Q, step):
            r1 = min(r0 + step, Q)
            block = mix[layer, r0:r1]  # [b, Q], a view into the result
            reduce(w[layer, :, r0:r1], 0, out=block)
            rows = torch.arange(r1 - r0)
            diag = torch.arange(r0, r1)  # each row's own position
            if n_drop:
                # per row, drop the weakest share of keys (never the query's own position)
                low = block.clone()
                low[rows, diag] = float("inf")
                block.scatter_(-1, low.topk(n_drop, dim=-1, largest=False).indices, 0.0)
            if residual:
                block.mul_(0.5)
                block[rows, diag] += 0.5
            sums = block.sum(-1)
            block.div_(sums.clamp(min=1e-30).unsqueeze(-1))
            # an all-zero row (fully masked query without residual) keeps its own token only
            empty = sums <= 0
            if bool(empty.any()):
                block[empty] = 0.0
                block[rows[empty], diag[empty]] = 1.0
    return mix


def attention_rollout(
    attention: Any, head_fusion: str = "mean", discard_ratio: float = 0.0, residual: bool = True
) -> np.ndarray:
    """Attention rollout after every layer, ``[L, Q, Q]``; the last entry is the full rollout.

    ``attention``: ``[L, H, Q, Q]`` (or an AttentionMaps of self-attention).
    Per layer the heads are fused (``head_fusion``: mean, max or min), the
    weakest ``discard_ratio`` share of each row is zeroed, the identity is added
    for the residual stream (``A = 0.5 W + 0.5 I``) and rows are renormalised;
    then ``R_l = A_l R_(l-1)``. Row i of ``R_l`` says how much of token i's
    representation after layer l traces back to each input token; every row sums to 1.
    See the module docstring: attention is not explanation.
    """
    return _rollout(_mixing(attention, head_fusion, discard_ratio, residual)).numpy()


def _rollout(mix: torch.Tensor) -> torch.Tensor:
    """``R_l = A_l R_(l-1)`` over ``mix [L, Q, Q]``, in place (``mix`` becomes the rollout).

    One ``[Q, Q]`` product is alive at a time, so the memory beyond the result is one map.
    """
    for layer in range(1, mix.shape[0]):
        mix[layer] = mix[layer] @ mix[layer - 1]
    return mix


def attention_flow(
    attention: Any,
    outputs: Sequence[int] | None = None,
    head_fusion: str = "mean",
    residual: bool = True,
    workers: int | None = None,
) -> np.ndarray:
    """Attention flow: maximum flow from each input token to each chosen output position.

    Builds the layered graph of Abnar & Zuidema: a node per (layer boundary,
    position), an edge from position j below layer l to position i above it
    with capacity ``A_l[i, j]`` (heads fused, residual added, rows normalised as
    in :func:`attention_rollout`). ``flow[o, j]`` is the maximum flow from input
    token j to output position ``outputs[o]`` at the top, computed with
    networkx (shortest augmenting paths, reusing one residual network). Returns ``[len(outputs), Q]``
    (all positions by default). Each max-flow is a separate solve, so the cost
    grows as ``Q^2`` solves on a graph with ``L Q^2`` edges: keep Q small (tens of tokens).

    ``workers``: processes that share the outputs (default: the CPU count, at
    most one per output; 1 = in this process). The solves are pure Python, so
    threads would not run them in parallel; on Linux the workers are forked
    (they touch only numpy and networkx), elsewhere the solves run here.
    See the module docstring: attention is not explanation.
    """
    mix = _mixing(attention, head_fusion, 0.0, residual).to(torch.float64).numpy()
    Q = mix.shape[1]
    targets = list(range(Q)) if outputs is None else [check_int(o, "outputs", -Q, Q - 1) % Q for o in outputs]
    n = len(targets) if workers is None else check_int(workers, "workers", 1, 1024)
    n = min(n, os.cpu_count() or 1, len(targets)) if workers is None else min(n, len(targets))
    if n > 1 and "fork" in multiprocessing.get_all_start_methods():
        chunks = [targets[w::n] for w in range(n)]
        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(n, mp_context=ctx) as pool:
            parts = list(pool.map(_flows, [mix] * n, chunks))
        flow = np.zeros((len(targets), Q))
        for w, part in enumerate(parts):
            flow[w::n] = part
        return flow
    return _flows(mix, targets)


def _flows(mix: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """Max-flow from every input to each target position, ``[len(targets), Q]`` (see attention_flow)."""
    import networkx as nx
    from networkx.algorithms.flow import build_residual_network, shortest_augmenting_path

    L, Q, _ = mix.shape
    graph = nx.DiGraph()
    for layer in range(L):
        for i in range(Q):
            for j in range(Q):
                if mix[layer, i, j] > 0:
                    graph.add_edge((layer, j), (layer + 1, i), capacity=float(mix[layer, i, j]))
    residual_net = build_residual_network(graph, "capacity")
    flow = np.zeros((len(targets), Q))
    for o, i in enumerate(targets):
        for j in range(Q):
            if (0, j) in graph and (L, i) in graph:
                r = shortest_augmenting_path(graph, (0, j), (L, i), residual=residual_net)
                flow[o, j] = r.graph["flow_value"]
    return flow
