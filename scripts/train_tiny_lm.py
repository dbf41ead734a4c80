"""Train the embedded induction model and write attnwidget/data/tiny_induction.pt.

    python scripts/train_tiny_lm.py [--out attnwidget/data/tiny_induction.pt]

Seeded (attnwidget.tinylm.INDUCTION_RECIPE): on the same torch version and
thread count it reproduces the shipped weights bit for bit (tests/test_tinylm.py
checks this). About a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from attnwidget.metrics import repeated_token_scores
from attnwidget.tinylm import INDUCTION_RECIPE, train_induction

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "attnwidget" / "data" / "tiny_induction.pt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    t0 = time.perf_counter()
    model, losses = train_induction(progress=True)
    seconds = time.perf_counter() - t0
    scores = repeated_token_scores(model, period=16, n_samples=8, vocab_size=model.config.vocab_size)
    meta = {"torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "train_seconds": round(seconds, 1), "final_loss": losses[-1]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # plain dicts, lists and tensors only, so that torch.load(weights_only=True) can read it
    recipe = {k: list(v) if isinstance(v, tuple) else v for k, v in INDUCTION_RECIPE.items()}
    torch.save({"config": dataclasses.asdict(model.config), "recipe": recipe,
                "meta": meta, "state_dict": dict(model.state_dict())}, args.out)
    print(json.dumps({**meta, "losses": [round(v, 3) for v in losses[::10]],
                      **{k: v.round(2).tolist() for k, v in scores.items()}}, indent=1))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
