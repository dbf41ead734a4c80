"""Head ablation on the real MiniLM: one toggle (Python side) at 128 and 510 tokens, and the sweep.

* ``toggle``: :func:`attnwidget.ablate.ablated_record` for one head with the plain run
  kept (what a view does on a toggle before it repaints: the model re-run with the head
  off, the new record, the effect numbers). Measured twice in the same run, alternating
  head by head: with the replay (:mod:`attnwidget._replay`: the plain run's linear layers
  given back below the ablated head) and with it turned off (``REPLAY_BYTES = 0``: every
  layer computed, as before the replay). ``by_layer`` has the medians per ablated layer.
  The browser round trip (click -> repainted map and metrics) is in ``bench_widget.py``.
* ``sweep``: :func:`attnwidget.ablate.ablation_sweep` over all 72 heads at 128 tokens,
  with and without the replay. Target < 30 s.

    python benchmarks/bench_ablate.py [--out benchmarks/results/ablate.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from attnwidget import _replay, extract_attention
from attnwidget.ablate import ablated_record, ablation_sweep, unablated_run
from attnwidget.models import load_minilm

WORDS = ("attention heads look back at earlier words in the sentence " * 80).split()
HEADS = [(0, 3), (2, 5), (4, 7), (1, 0), (3, 11), (5, 2), (2, 9), (0, 0), (4, 4), (1, 8), (3, 6), (5, 10)]


def text_of(tok, n: int) -> str:
    for k in range(n, 0, -1):
        text = " ".join(WORDS[:k])
        if len(tok(text)["input_ids"]) <= n:
            return text
    raise AssertionError(n)


@contextlib.contextmanager
def replay_budget(nbytes: int) -> Iterator[None]:
    """Plain runs made inside record at most ``nbytes`` for the replay (0: off)."""
    saved, _replay.REPLAY_BYTES = _replay.REPLAY_BYTES, nbytes
    try:
        yield
    finally:
        _replay.REPLAY_BYTES = saved


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 1)


def toggles(model, tok, n: int, rounds: int) -> dict:
    text = text_of(tok, n)
    original = extract_attention(model, text, tok)
    replayed = unablated_run(model, text, tok)
    with replay_budget(0):
        computed = unablated_run(model, text, tok)
    times: dict[str, dict[int, list[float]]] = {"replay": {}, "computed": {}}
    for _ in range(rounds):
        for layer, head in HEADS:  # alternate, so both see the same machine
            for name, base in (("replay", replayed), ("computed", computed)):
                t0 = time.perf_counter()
                ablated_record(model, text, {layer: [head]}, tok, original=original, base=base)
                times[name].setdefault(layer, []).append((time.perf_counter() - t0) * 1e3)
    every = {name: [t for ts in by.values() for t in ts] for name, by in times.items()}
    return {
        "tokens": int(original.shape[-1]),
        "replay_ms": median(every["replay"]), "computed_ms": median(every["computed"]),
        "ratio": round(statistics.median(every["replay"]) / statistics.median(every["computed"]), 2),
        "by_layer": {str(layer): {name: median(times[name][layer]) for name in times}
                     for layer in sorted(times["replay"])},
        "replay_mb": round(replayed.replay.nbytes / 2**20, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ablate.json")
    args = ap.parse_args()
    model, tok = load_minilm()
    toggle = {str(n): toggles(model, tok, n, rounds) for n, rounds in ((128, 5), (510, 2))}
    text = text_of(tok, 128)
    sweeps = {}
    for name, budget in (("replay", _replay.REPLAY_BYTES), ("computed", 0)):
        with replay_budget(budget):
            t0 = time.perf_counter()
            sweep = ablation_sweep(model, text, tok, progress=False)
            sweeps[name] = round(time.perf_counter() - t0, 2)
    out = {
        "benchmark": "head ablation on MiniLM (6 x 12): one toggle at 128 and 510 tokens, the 72-head sweep",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "toggle_python": toggle,
        "sweep_72_heads_s": sweeps, "target_sweep_s": "< 30",
        "sweep_score_max": float(sweep["score"].max()), "metric": sweep["metric"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
