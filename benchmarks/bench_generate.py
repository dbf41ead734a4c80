"""Generation with attention: cost against the plain generate plus one forward, same run.

    python benchmarks/bench_generate.py [--repeats 7]

For each model, the median of ``--repeats`` runs of

* ``record``: ``generate_attention`` (the whole attention record of the
  generation) and ``AttentionView(record.maps)`` (the view opened on it);
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
import platform
from pathlib import Path

import torch
from bench_metrics import timed  # run as a script, benchmarks/ is on sys.path

OUT = Path(__file__).parent / "results" / "generate.json"


def median_time(fn, repeats: int) -> float:
    """Median seconds of ``fn`` after a warm-up (bench_metrics' timer)."""
    return timed(fn, repeats)["median_ms"] / 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    import transformers as tr

    from attnwidget import AttentionView
    from attnwidget.generate import generate_attention
    from attnwidget.models import load_tiny_lm

    rows = []
    tiny, tok = load_tiny_lm()
    prompt = "q8Zr2kLm"
    ids = torch.tensor(tok.encode(prompt))

    def tiny_record():
        rec = generate_attention(tiny, prompt, tok, n_new=40)
        AttentionView(rec.maps).close()

    def tiny_plain():
        with torch.no_grad():
            out = tiny.generate(ids, 40)
            tiny(out[None])  # TinyLM returns logits; its attention is read by hooks in attnwidget

    rows.append({"model": "tiny LM", "prompt": 8, "new": 40,
                 "record_s": median_time(tiny_record, args.repeats),
                 "plain_s": median_time(tiny_plain, args.repeats)})

    torch.manual_seed(0)
    gpt = tr.GPT2LMHeadModel(tr.GPT2Config(n_embd=128, n_layer=4, n_head=4, n_positions=128,
                                           vocab_size=1000, bos_token_id=None, eos_token_id=None,
                                           attn_implementation="eager")).eval()
    prompt_ids = torch.arange(16) * 7 % 1000

    def gpt_record():
        rec = generate_attention(gpt, prompt_ids, n_new=64)
        AttentionView(rec.maps).close()

    def gpt_plain():
        with torch.no_grad():
            out = gpt.generate(prompt_ids[None], max_new_tokens=64, do_sample=False, pad_token_id=0)
            gpt(out, output_attentions=True)

    rows.append({"model": "GPT-2 shape, random weights (4 x 4, d 128)", "prompt": 16, "new": 64,
                 "record_s": median_time(gpt_record, args.repeats),
                 "plain_s": median_time(gpt_plain, args.repeats)})
    for r in rows:
        r["ratio"] = round(r["record_s"] / r["plain_s"], 2)
        r["record_s"], r["plain_s"] = round(r["record_s"], 4), round(r["plain_s"], 4)
        print(f"{r['model']}: record + view {r['record_s']} s, plain generate + forward {r['plain_s']} s, "
              f"ratio {r['ratio']} (target < 2)")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"machine": platform.machine(), "torch": torch.__version__,
                               "transformers": tr.__version__, "threads": torch.get_num_threads(),
                               "rows": rows}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
