"""attnwidget.metrics on the real MiniLM stack (6 x 12 x 512 x 512) against per-head and per-row loops.

Baselines, timed in the same run on the same weights:

* ``lab_loop``: the lab material's own numpy code, one head at a time:
  ``compute_attention_statistics`` and ``identify_attention_pattern`` for each
  of the 72 heads, written as the lab material publishes them (epsilon
  entropy, ``np.sort`` Gini, masks built per call). The target for
  ``analyze_stack`` (everything except flow and the JS matrix) is 5x faster.
* ``row_loop``: a plain per-row numpy loop of entropy, sparsity, top-3 and
  Gini (each row on its own). Target for entropy + sparsity + top-k of the
  whole stack: 10x faster.

Also: one panel's metrics after a slider move (N = 512; target < 5 ms),
rollout of the stack (< 100 ms), attention flow for 6 layers at 32 tokens
(< 10 s), and the JS distance matrix (reported, no target).

    python benchmarks/bench_metrics.py [--out benchmarks/results/metrics.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from attnwidget import extract_attention
from attnwidget import metrics as M  # noqa: N812 (short name used throughout)
from attnwidget.models import load_minilm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from lab_reference import lab_pattern, lab_statistics


def lab_loop(stack: np.ndarray) -> list:
    return [(lab_statistics(head), lab_pattern(head)) for layer in stack for head in layer]


def row_loop(stack: np.ndarray, threshold: float = 0.1, k: int = 3) -> None:
    for layer in stack:
        for head in layer:
            for row in head:
                nz = row[row > 0]
                -np.sum(nz * np.log(nz))
                np.mean(row < threshold)
                np.argsort(-row, kind="stable")[:k]
                x = np.sort(row)
                n = len(x)
                2 * np.sum(np.arange(1, n + 1) * x) / (n * np.sum(x)) - (n + 1) / n


def ours_row_measures(stack: np.ndarray) -> None:
    M.compute_attention_entropy(stack)
    M.compute_attention_sparsity(stack, 0.1)
    M.top_k_keys(stack, 3)


def timed(fn, repeats: int) -> dict:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_ms": round(statistics.median(times) * 1e3, 2), "min_ms": round(min(times) * 1e3, 2),
            "repeats": repeats}


def text_of(tokenizer, n_tokens: int) -> str:
    words = ("the model reads every word and looks back at the words before it " * 100).split()
    for k in range(n_tokens, 0, -1):
        text = " ".join(words[:k])
        if len(tokenizer(text)["input_ids"]) <= n_tokens:
            return text
    raise AssertionError(n_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "metrics.json")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model, tok = load_minilm("eager")
    maps = extract_attention(model, text_of(tok, 512), tok)
    stack = maps.to_numpy()
    small = extract_attention(model, text_of(tok, 32), tok).to_numpy()
    r = args.repeats
    res = {
        "lab_loop": timed(lambda: lab_loop(stack), r),
        "analyze_stack": timed(lambda: M.analyze_stack(stack), r),
        # the lab loop's own work (statistics + pattern), vectorised over the stack
        "statistics_and_pattern": timed(
            lambda: (M.compute_attention_statistics(stack), M.identify_attention_pattern(stack)), r
        ),
        "row_loop": timed(lambda: row_loop(stack), 1),
        "entropy_sparsity_topk": timed(lambda: ours_row_measures(stack), r),
        "panel_metrics": timed(lambda: M.panel_metrics(stack[3, 7], 0.1, query=100), 50),
        "rollout": timed(lambda: M.attention_rollout(stack), r),
        "flow_6x32": timed(lambda: M.attention_flow(small), 1),
        "js_matrix": timed(lambda: M.js_distance_matrix(stack), 1),
    }
    speedup_all = res["lab_loop"]["median_ms"] / res["analyze_stack"]["median_ms"]
    speedup_rows = res["row_loop"]["median_ms"] / res["entropy_sparsity_topk"]["median_ms"]
    result = {
        "benchmark": "attnwidget.metrics on MiniLM attention, 6 x 12 x 512 x 512 (flow: 6 x 12 x 32 x 32)",
        "shape": list(stack.shape),
        "torch": torch.__version__, "numpy": np.__version__, "threads": torch.get_num_threads(),
        "machine": platform.machine(), "cpus": os.cpu_count(),
        "results": res,
        "checks": {
            "analyze_stack_speedup_vs_lab_loop": round(speedup_all, 1), "target_analyze_stack": ">= 5x",
            "statistics_and_pattern_speedup_vs_lab_loop": round(
                res["lab_loop"]["median_ms"] / res["statistics_and_pattern"]["median_ms"], 1
            ),
            "row_measures_speedup_vs_row_loop": round(speedup_rows, 1), "target_row_measures": ">= 10x",
            "panel_metrics_ms": res["panel_metrics"]["median_ms"], "target_panel_ms": "< 5",
            "rollout_ms": res["rollout"]["median_ms"], "target_rollout_ms": "< 100",
            "flow_s": round(res["flow_6x32"]["median_ms"] / 1e3, 2), "target_flow_s": "< 10",
        },
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
