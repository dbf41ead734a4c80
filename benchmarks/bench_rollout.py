"""Peak memory and time of attention rollout on large maps, against the plain formula.

    python benchmarks/bench_rollout.py [--sizes 2048 4096 8192] [--layers 1 4]

Each case runs in a fresh process (ru_maxrss is a per-process high-water mark)
and reports the peak resident memory above what the process held once the
record existed, next to the same figure for the plain whole-map formula
(fuse heads, add the identity, normalise, multiply: ``reference`` below), which is
what attention_rollout computed before it worked in row blocks. Writes
benchmarks/results/rollout.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "rollout.json"


def reference(w):
    """Rollout written as whole-map tensor expressions (mean fusion, residual 0.5)."""
    import torch

    fused = w.mean(1)
    eye = torch.eye(w.shape[-1], dtype=w.dtype)
    mix = 0.5 * fused + 0.5 * eye
    mix = mix / mix.sum(-1, keepdim=True)
    out = torch.empty_like(mix)
    acc = out[0] = mix[0]
    for layer in range(1, mix.shape[0]):
        acc = mix[layer] @ acc
        out[layer] = acc
    return out


def one(n: int, layers: int, which: str) -> dict:
    import torch

    from attnwidget.metrics import attention_rollout  # imported before the clock starts

    torch.manual_seed(0)
    w = torch.rand(layers, 1, n, n)  # allocated once, normalised in place: no hidden temporaries
    w /= w.sum(-1, keepdim=True)
    mib = 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    result = attention_rollout(w) if which == "attnwidget" else reference(w).numpy()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"n": n, "layers": layers, "impl": which, "seconds": round(seconds, 3),
            "record_mib": round(w.numel() * 4 / mib), "result_mib": round(result.nbytes / mib),
            "peak_over_record_mib": round((peak - before) / mib),
            "peak_over_record_and_result_mib": round((peak - before - result.nbytes) / mib)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--one", nargs=3, metavar=("N", "LAYERS", "IMPL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one[0]), int(args.one[1]), args.one[2])))
        return
    rows = []
    for n in args.sizes:
        for layers in args.layers:
            if layers * n * n * 4 > 2**30:  # keep a run under a few GiB on a 24 GiB machine
                continue
            pair = {}
            for impl in ("reference", "attnwidget"):
                res = subprocess.run([sys.executable, __file__, "--one", str(n), str(layers), impl],
                                     check=True, capture_output=True, text=True)
                pair[impl] = json.loads(res.stdout)
                rows.append(pair[impl])
            ours, ref = pair["attnwidget"], pair["reference"]
            ratio = ours["peak_over_record_mib"] / max(1, ref["peak_over_record_mib"])
            print(f"n={n:5d} L={layers}: working memory over the record {ours['peak_over_record_mib']} MiB "
                  f"(reference {ref['peak_over_record_mib']} MiB, ratio {ratio:.2f}); "
                  f"{ours['seconds']} s vs {ref['seconds']} s")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                               "rows": rows}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
