"""Extraction overhead on MiniLM: extract_attention vs the bare forward it wraps.

For each length the two are timed interleaved in the same process (so machine
noise hits both alike): the bare call is ``model(**inputs, output_attentions=True)``
on an eager model with pre-tokenized inputs. Extraction is timed on the same
inputs, ``extract_attention(model, inputs, tokenizer)`` (the headline: what
extraction adds to that call: checks, the eval/eager guards, the record and its
validation), and from text, ``extract_attention(model, text, tokenizer)``,
which also tokenizes. The three calls run back to back in rotating order.

    python benchmarks/bench_extract.py [--repeats 15] [--out benchmarks/results/extract.json]
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
from attnwidget.models import load_minilm

LENGTHS = (64, 128, 256, 510)


def text_of(tokenizer, n_tokens: int) -> str:
    """A text that tokenizes to exactly n_tokens with [CLS]/[SEP]."""
    words = ("attention heads look back at earlier words in the sentence " * 200).split()
    for k in range(n_tokens, 0, -1):
        text = " ".join(words[:k])
        if len(tokenizer(text)["input_ids"]) <= n_tokens:
            break
    assert len(tokenizer(text)["input_ids"]) == n_tokens, n_tokens
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "extract.json")
    args = parser.parse_args()

    model, tok = load_minilm("eager")
    rows = []
    for n in LENGTHS:
        text = text_of(tok, n)
        inputs = tok(text, return_tensors="pt")
        bare_t, extract_t, inputs_t = [], [], []

        def bare(inputs=inputs) -> float:
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = model(**inputs, output_attentions=True)
            t = time.perf_counter() - t0
            del out
            return t

        def extraction(source, n=n):
            def timed() -> float:
                t0 = time.perf_counter()
                maps = extract_attention(model, source, tok)
                t = time.perf_counter() - t0
                assert maps.shape == (6, 12, n, n)
                del maps
                return t
            return timed

        extract, from_inputs = extraction(text), extraction(inputs)

        calls = (bare, from_inputs, extract)
        for i in range(args.repeats + 2):  # 2 warm-up rounds
            # rotate the order so no call always runs on a warmer (or colder) cache
            order = [calls[(i + k) % 3] for k in range(3)]
            times = {f: f() for f in order}
            if i >= 2:
                bare_t.append(times[bare])
                inputs_t.append(times[from_inputs])
                extract_t.append(times[extract])
        row = {"tokens": n, "repeats": args.repeats}
        # each triple ran back to back, so its ratios cancel slow drifts in machine speed
        row["overhead_pct_paired_median"] = round(
            100 * statistics.median(e / b - 1 for b, e in zip(bare_t, inputs_t, strict=True)), 1
        )
        row["overhead_with_tokenization_pct_paired_median"] = round(
            100 * statistics.median(e / b - 1 for b, e in zip(bare_t, extract_t, strict=True)), 1
        )
        for stat in ("median", "min"):
            pick = statistics.median if stat == "median" else min
            b, e, x = pick(bare_t), pick(inputs_t), pick(extract_t)
            row[f"bare_forward_ms_{stat}"] = round(b * 1e3, 2)
            row[f"extract_from_inputs_ms_{stat}"] = round(e * 1e3, 2)
            row[f"extract_from_text_ms_{stat}"] = round(x * 1e3, 2)
        rows.append(row)
        print(json.dumps(rows[-1]))
    result = {
        "benchmark": "extract_attention vs bare forward, MiniLM (6x12), median",
        "target": "overhead < 10 % of the bare forward",
        "headline": "overhead_pct_paired_median: median over back-to-back runs of "
                    "extract_attention(model, inputs, tok) / model(**inputs, output_attentions=True) - 1 "
                    "(same inputs); overhead_with_tokenization_pct_paired_median: the same for "
                    "extract_attention(model, text, tok), which also tokenizes",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.machine(), "cpus": os.cpu_count(),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
