"""Tiled (online-softmax) attention against the untiled scratch version: peak memory and time.

Memory is the real resident-set growth of a fresh Python process (Linux
``/proc/self/status``): after imports, inputs and a small warm-up call, the
peak-RSS mark ``VmHWM`` is reset by writing ``5`` to ``/proc/self/clear_refs``,
the function runs once, and ``VmHWM - VmRSS(before)`` is what the call needed
at its worst moment: its scores, weights, temporaries and output. (Where
``clear_refs`` is not writable the process's ``ru_maxrss`` is used and the
method is recorded.) Torch runs single-threaded so the figures do not depend on
the thread pool's scratch buffers.

* ``untiled``: :func:`attnwidget.scratch.attention` (holds ``[N, N]`` scores and
  returns ``[N, N]`` weights): expect growth ~ a few ``N^2 x 4`` bytes.
* ``tiled``: :func:`attnwidget.scratch.tiled_attention`, block 128: expect growth
  ~ a few ``N x 128 x 4`` bytes plus the ``[N, d]`` output and accumulators.
* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention``, for reference
  (its CPU kernel is itself tiled).

Times are the median and minimum of a few calls in this process, single-threaded:
on a busy machine OpenMP's worker threads wait for each other at every small
operation, which made the tiled loop (many block-sized ops) look up to 10x
slower from one run to the next, while one thread measures the work itself.
They are reported, never asserted.

    python benchmarks/bench_scratch.py [--out benchmarks/results/scratch.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# runs in a fresh interpreter; prints one JSON line
_PROBE = r"""
import gc, json, resource, sys
import torch
import torch.nn.functional as F
from attnwidget.scratch import attention, tiled_attention
torch.set_num_threads(1)
kind, n, d, block = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fns = {
    "untiled": lambda q, k, v: attention(q, k, v),
    "tiled": lambda q, k, v: tiled_attention(q, k, v, block_size=block),
    "sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
}
fn = fns[kind]
g = torch.Generator().manual_seed(0)
Q, K, V = (torch.randn(n, d, generator=g) for _ in range(3))
fn(Q[:256], K[:256], V[:256])  # warm-up: lazy initialisation does not count

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

gc.collect()
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    method = "VmHWM after clear_refs"
except OSError:
    method = "ru_maxrss (peak of the whole process: an upper bound)"
before = status("VmRSS")
out = fn(Q, K, V)
if method.startswith("VmHWM"):
    peak = status("VmHWM")
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
print(json.dumps({"kind": kind, "n": n, "d": d, "block": block, "rss_before": before,
                  "rss_peak": peak, "growth_bytes": peak - before, "method": method}))
"""


def peak_growth(kind: str, n: int, d: int = 64, block: int = 128) -> dict:
    """Resident-memory growth (bytes) of one call of ``kind`` at ``N = n``, measured in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _PROBE, kind, str(n), str(d), str(block)],
                          capture_output=True, text=True, env=env, check=False, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe {kind} n={n} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_ms(fn, *args, repeats: int = 7) -> dict:
    fn(*args)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median": round(statistics.median(times), 2), "min": round(min(times), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scratch.json")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    args = ap.parse_args()
    import torch.nn.functional as F  # noqa: N812 (the usual name)

    from attnwidget.scratch import attention, tiled_attention

    torch.set_num_threads(1)
    d, block, mib = 64, 128, 2**20
    rows = []
    for n in args.sizes:
        g = torch.Generator().manual_seed(0)
        Q, K, V = (torch.randn(n, d, generator=g) for _ in range(3))
        row: dict = {"n": n, "d": d, "block": block,
                     "scores_matrix_mib": round(n * n * 4 / mib, 2),
                     "score_block_mib": round(n * block * 4 / mib, 2)}
        for kind in ("untiled", "tiled", "sdpa"):
            probe = peak_growth(kind, n, d, block)
            row[f"{kind}_growth_mib"] = round(probe["growth_bytes"] / mib, 2)
            row["method"] = probe["method"]
        row["untiled_over_tiled"] = round(row["untiled_growth_mib"] / max(row["tiled_growth_mib"], 1e-9), 1)
        row["untiled_ms"] = time_ms(attention, Q, K, V)
        row["tiled_ms"] = time_ms(lambda q, k, v: tiled_attention(q, k, v, block_size=block), Q, K, V)
        row["sdpa_ms"] = time_ms(F.scaled_dot_product_attention, Q, K, V)
        diff = tiled_attention(Q, K, V, block_size=block) - F.scaled_dot_product_attention(Q, K, V)
        row["max_abs_diff_tiled_vs_sdpa"] = float(diff.abs().max())
        rows.append(row)
        print(json.dumps(row))
    out = {
        "benchmark": "scratch attention vs tiled online-softmax attention, float32, one head, d = 64",
        "memory": "resident-set growth of one call in a fresh single-threaded process",
        "torch": torch.__version__, "threads_for_timing": torch.get_num_threads(), "cpus": os.cpu_count(),
        "machine": platform.machine(),
        # timings on a shared machine: the load average says how busy it was
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
