"""Head ablation on the real MiniLM at 128 tokens: one toggle (Python side) and the 72-head sweep.

* ``toggle``: :func:`attnwidget.ablate.ablated_record` for one head (the model
  re-run with the head off, the new record, and the effect numbers: what the
  widget does on a toggle before it repaints). The browser round trip
  (click -> repainted map and metrics) is in ``bench_widget.py``.
* ``sweep``: :func:`attnwidget.ablate.ablation_sweep` over all 72 heads. Target < 30 s.

    python benchmarks/bench_ablate.py [--out benchmarks/results/ablate.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from attnwidget import extract_attention
from attnwidget.ablate import ablated_record, ablation_sweep
from attnwidget.models import load_minilm

WORDS = ("attention heads look back at earlier words in the sentence " * 40).split()


def text_of(tok, n: int) -> str:
    for k in range(n, 0, -1):
        text = " ".join(WORDS[:k])
        if len(tok(text)["input_ids"]) <= n:
            return text
    raise AssertionError(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ablate.json")
    args = ap.parse_args()
    model, tok = load_minilm()
    text = text_of(tok, 128)
    original = extract_attention(model, text, tok)
    toggles = []
    heads = [(0, 3), (2, 5), (4, 7), (1, 0), (3, 11), (5, 2), (2, 9), (0, 0), (4, 4), (1, 8), (3, 6)]
    for layer, head in heads:
        t0 = time.perf_counter()
        ablated_record(model, text, {layer: [head]}, tok, original=original)
        toggles.append((time.perf_counter() - t0) * 1e3)
    t0 = time.perf_counter()
    sweep = ablation_sweep(model, text, tok, progress=False)
    sweep_s = time.perf_counter() - t0
    out = {
        "benchmark": "head ablation on MiniLM (6 x 12) at 128 tokens",
        "tokens": int(original.shape[-1]),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "toggle_python_ms": {"median": round(statistics.median(toggles), 1),
                             "min": round(min(toggles), 1), "max": round(max(toggles), 1)},
        "sweep_72_heads_s": round(sweep_s, 2), "target_sweep_s": "< 30",
        "sweep_score_max": float(sweep["score"].max()), "metric": sweep["metric"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
