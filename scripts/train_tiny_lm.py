"""Train the embedded induction model and write attnwidget/data/tiny_induction.pt.

    python scripts/train_tiny_lm.py [--out attnwidget/data/tiny_induction.pt] [--no-noise]

Seeded (attnwidget.tinylm.INDUCTION_RECIPE). What reproduces where:

* on the same platform (torch version, thread count, CPU model and the CPU
  kernels torch picks, see :func:`platform_fingerprint`) retraining gives the
  shipped weights bit for bit;
* on another CPU, floating-point sums run in another order and the 3,000 steps
  amplify the last-bit differences, so the weights differ (in the second
  decimal, seen on a CPU of the same kind). What must still reproduce is the
  model's behaviour: which heads are previous-token and induction heads, the
  copy accuracy, and the final loss within the training's own noise.

The training's own noise is measured here, not guessed: the script trains a
second time with one thread instead of the default, which changes only the
order of floating-point reductions, exactly the kind of difference another CPU
makes, and records how far loss, head scores and weights moved ("noise" in the
file's meta). tests/test_tinylm.py allows a multiple of that.
About a minute per training on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from attnwidget.probes import repeated_token_scores
from attnwidget.tinylm import INDUCTION_RECIPE, TinyLM, induction_batch, train_induction

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "attnwidget" / "data" / "tiny_induction.pt"
#: A head has the role when its score is above this (scores are mean attention weights, 0..1).
ROLE_CUTOFF = 0.5


def platform_fingerprint() -> dict[str, Any]:
    """What decides the floating-point results of training: equal fingerprints, equal bits."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "machine": platform.machine(), "cpu": cpu,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def behaviour(model: TinyLM) -> dict[str, Any]:
    """The trained model's behaviour, to compare across machines.

    ``copy_accuracy``: share of correct next-token predictions inside the second copy of a
    repeated random sequence (32 sequences of 48 tokens, period 16, a fixed seed);
    ``previous_token`` and ``induction``: per-head scores ``[layer][head]`` on repeated random
    tokens; ``roles``: the heads above :data:`ROLE_CUTOFF`, per role.
    """
    gen = torch.Generator().manual_seed(11)
    ids = induction_batch(32, 48, model.config.vocab_size, gen, periods=(16, 16))
    with torch.no_grad():
        accuracy = (model(ids)[:, 16:31].argmax(-1) == ids[:, 17:32]).float().mean()
    scores = repeated_token_scores(model, period=16, n_samples=8, vocab_size=model.config.vocab_size)
    out: dict[str, Any] = {"copy_accuracy": float(accuracy)}
    roles = {}
    for name in ("previous_token", "induction"):
        out[name] = scores[name].tolist()
        roles[name] = [[int(layer), int(head)] for layer, head in zip(*(scores[name] > ROLE_CUTOFF).nonzero(),
                                                                        strict=True)]
    out["roles"] = roles
    return out


def noise(a: TinyLM, loss_a: float, b: TinyLM, loss_b: float) -> dict[str, float]:
    """How far two trainings that differ only in reduction order ended apart."""
    ba, bb = behaviour(a), behaviour(b)
    score_delta = max(abs(x - y) for name in ("previous_token", "induction")
                      for ra, rb in zip(ba[name], bb[name], strict=True) for x, y in zip(ra, rb, strict=True))
    weight = max(float((va - vb).norm() / vb.norm().clamp(min=1e-12))
                 for va, vb in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    return {"final_loss": abs(loss_a - loss_b), "copy_accuracy": abs(ba["copy_accuracy"] - bb["copy_accuracy"]),
            "head_score": score_delta, "weight_relative": weight}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--no-noise", action="store_true", help="skip the second, one-thread training")
    args = ap.parse_args()
    t0 = time.perf_counter()
    model, losses = train_induction(progress=True)
    seconds = time.perf_counter() - t0
    meta: dict[str, Any] = {**platform_fingerprint(), "train_seconds": round(seconds, 1),
                            "final_loss": losses[-1], "behaviour": behaviour(model)}
    if not args.no_noise:
        threads = torch.get_num_threads()
        torch.set_num_threads(1 if threads > 1 else 2)
        try:
            other, other_losses = train_induction(progress=True)
        finally:
            torch.set_num_threads(threads)
        meta["noise"] = noise(model, losses[-1], other, other_losses[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # plain dicts, lists and tensors only, so that torch.load(weights_only=True) can read it
    recipe = {k: list(v) if isinstance(v, tuple) else v for k, v in INDUCTION_RECIPE.items()}
    torch.save({"config": dataclasses.asdict(model.config), "recipe": recipe,
                "meta": meta, "state_dict": dict(model.state_dict())}, args.out)
    print(json.dumps({**meta, "losses": [round(v, 3) for v in losses[::10]]}, indent=1))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
