"""Generation with attention: cost against the plain generate plus one forward, same run.

    python benchmarks/bench_generate.py [--repeats 7]

For each model, ``--repeats`` runs of each, in turns (so that a load change on the shared
machine hits both alike), their medians and minima, of

* ``record``: ``AttentionView(model, prompt, tokenizer=tok, generate=N)``, the one
  call a user makes: the generation with its whole attention record
  (``generate_attention``), and the view opened on it with the step control
  and the text view (their first messages built), then closed;
* ``plain``: the model's own ``generate`` for the same tokens plus one forward
  over the final sequence with ``output_attentions=True`` (what a user without
  attnwidget would run to get the same picture).

Models: the embedded tiny LM (it takes 48 positions, so 8 prompt + 40 new
tokens) and a GPT-2-shaped transformers model with random weights (n_positions
128, 64 new tokens; its KV cache is used). Target: ``record`` under 2x
``plain``. Writes benchmarks/results/generate.json.
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

OUT = Path(__file__).parent / "results" / "generate.json"


def paired(record, plain, repeats: int) -> dict:
    """Seconds of ``record`` and ``plain`` run in turns after a warm-up of each, so that a load
    change on a shared machine hits both alike: medians, minima and the ratio of each."""
    record(), plain()
    times: dict[str, list[float]] = {"record": [], "plain": []}
    for _ in range(repeats):
        for name, fn in (("record", record), ("plain", plain)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    return {"record_s": round(med["record"], 4), "plain_s": round(med["plain"], 4),
            "ratio": round(med["record"] / med["plain"], 2),
            "record_min_s": round(low["record"], 4), "plain_min_s": round(low["plain"], 4),
            "ratio_of_minima": round(low["record"] / low["plain"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    import transformers as tr

    from attnwidget import AttentionView
    from attnwidget.models import load_tiny_lm

    rows = []
    tiny, tok = load_tiny_lm()
    prompt = "q8Zr2kLm"
    ids = torch.tensor(tok.encode(prompt))

    def tiny_record():
        AttentionView(tiny, prompt, tokenizer=tok, generate=40).close()

    def tiny_plain():
        with torch.no_grad():
            out = tiny.generate(ids, 40)
            tiny(out[None])  # TinyLM returns logits; its attention is read by hooks in attnwidget

    rows.append({"model": "tiny LM", "prompt": 8, "new": 40, **paired(tiny_record, tiny_plain, args.repeats)})

    torch.manual_seed(0)
    gpt = tr.GPT2LMHeadModel(tr.GPT2Config(n_embd=128, n_layer=4, n_head=4, n_positions=128,
                                           vocab_size=1000, bos_token_id=None, eos_token_id=None,
                                           attn_implementation="eager")).eval()
    prompt_ids = torch.arange(16) * 7 % 1000

    def gpt_record():
        AttentionView(gpt, prompt_ids, generate=64).close()

    def gpt_plain():
        with torch.no_grad():
            out = gpt.generate(prompt_ids[None], max_new_tokens=64, do_sample=False, pad_token_id=0)
            gpt(out, output_attentions=True)

    rows.append({"model": "GPT-2 shape, random weights (4 x 4, d 128)", "prompt": 16, "new": 64,
                 **paired(gpt_record, gpt_plain, args.repeats)})
    for r in rows:
        print(f"{r['model']}: record + view {r['record_s']} s, plain generate + forward {r['plain_s']} s, "
              f"ratio {r['ratio']} (target < 2)")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"machine": platform.machine(), "torch": torch.__version__,
                               "transformers": tr.__version__, "threads": torch.get_num_threads(),
                               "load_avg": os.getloadavg(), "repeats": args.repeats,
                               "rows": rows}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
