"""Corpus statistics on the real MiniLM at 128 tokens: batched vs a plain loop, and dask vs local.

* ``throughput``: sequences per second of :func:`attnwidget.corpus.run` (batched,
  whole pipeline: tokenizing the dataset, padded batches, every head's numbers,
  Parquet shards) against a plain loop of ``extract_attention`` +
  ``metrics.analyze_stack`` per sequence on the same token ids. Rounds alternate
  the two, so load from other processes on the machine falls on both; the
  ratio of the medians is reported. A corpus round covers ``--num-corpus``
  sequences (a run pays once for tokenizing the whole dataset, ~0.4 s here,
  which a corpus spreads over many sequences); a loop round ``--num``, the
  loop's rate being the same at any count. Target: at least 2x.
* ``dask``: the same run on ``num_dask`` sequences locally and on a 2-worker
  ``distributed.LocalCluster`` (processes, one thread each), in the same process,
  alternating (local, dask, local, dask, ...). The first dask round includes each
  worker loading MiniLM by name (later rounds find it loaded); the cluster's own
  start-up is reported apart. Target: dask time at most 1.5x the local time.

Data: windows of the Python reference manual (``attnwidget.inputs.reference_manual()``,
``pydoc_data.topics`` of the running interpreter).

    python benchmarks/bench_corpus.py [--num 48] [--num-corpus 192] [--num-dask 512] [--rounds 5]
                                      [--out benchmarks/results/corpus.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from attnwidget import corpus, extract_attention, inputs
from attnwidget.metrics import analyze_stack
from attnwidget.models import load_minilm

SEQ_LEN = 128


def plain_loop(model, tok, windows, positions) -> float:
    """Seconds for extract_attention + analyze_stack, one sequence at a time."""
    t0 = time.perf_counter()
    for i in positions:
        analyze_stack(extract_attention(model, windows.ids(i)[None], tok))
    return time.perf_counter() - t0


def corpus_run(model, tok, manual, index, num, work: Path, **options) -> float:
    """Seconds for a fresh corpus.run over windows index .. index + num - 1."""
    out = Path(tempfile.mkdtemp(dir=work))
    t0 = time.perf_counter()
    corpus.run(model, manual, tok, out=out, seq_len=SEQ_LEN, index=index, num_samples=num, progress=False,
               **options)
    seconds = time.perf_counter() - t0
    shutil.rmtree(out)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=48, help="sequences per plain-loop round")
    ap.add_argument("--num-corpus", type=int, default=192, help="sequences per corpus round")
    ap.add_argument("--num-dask", type=int, default=512, help="sequences of the dask comparison")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dask-rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "corpus.json")
    args = ap.parse_args()
    model, tok = load_minilm()
    manual = inputs.reference_manual()
    windows = inputs.Windows(manual, tok, SEQ_LEN)
    work = Path(tempfile.mkdtemp(prefix="bench_corpus_"))
    load_before = os.getloadavg()

    # warm-up: first calls pay for lazy imports and allocator growth
    plain_loop(model, tok, windows, range(2))
    corpus_run(model, tok, manual, 0, 4, work)
    loop_s, batched_s, loads = [], [], []
    for r in range(args.rounds):
        start = r * args.num  # fresh windows each round, the loop's among the corpus run's
        loop_s.append(plain_loop(model, tok, windows, range(start, start + args.num)))
        batched_s.append(corpus_run(model, tok, manual, start, args.num_corpus, work))
        loads.append(round(os.getloadavg()[0], 2))  # other processes on the machine, for the record
        rates = f"loop {args.num / loop_s[-1]:.2f} seq/s, corpus {args.num_corpus / batched_s[-1]:.2f} seq/s"
        print(f"round {r}: {rates}", flush=True)
    loop_rate = args.num / statistics.median(loop_s)
    batched_rate = args.num_corpus / statistics.median(batched_s)

    import distributed

    t0 = time.perf_counter()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        cluster_start_s = time.perf_counter() - t0
        local_runs, dask_runs, dask_loads = [], [], []
        for _ in range(args.dask_rounds):
            local_runs.append(corpus_run(model, tok, manual, 0, args.num_dask, work))
            dask_runs.append(corpus_run("minilm", None, manual, 0, args.num_dask, work, scheduler="dask",
                                        client=client))
            dask_loads.append(round(os.getloadavg()[0], 2))
            print(f"{args.num_dask} sequences: local {local_runs[-1]:.1f} s, dask {dask_runs[-1]:.1f} s",
                  flush=True)
    local_s, dask_s = statistics.median(local_runs), statistics.median(dask_runs)
    shutil.rmtree(work, ignore_errors=True)

    out = {
        "benchmark": "corpus statistics on MiniLM (6 x 12) at 128 tokens, Python reference manual windows",
        "tokens": SEQ_LEN, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "machine": platform.machine(), "python": sys.version.split()[0],
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "throughput": {
            "sequences_per_round": {"plain_loop": args.num, "corpus": args.num_corpus}, "rounds": args.rounds,
            "plain_loop_seq_per_s": round(loop_rate, 2),
            "corpus_seq_per_s": round(batched_rate, 2),
            "ratio": round(batched_rate / loop_rate, 2),
            "target_ratio": ">= 2",
            "plain_loop_s": [round(s, 2) for s in loop_s], "corpus_s": [round(s, 2) for s in batched_s],
            "ratio_per_round": [round((args.num_corpus / b) / (args.num / a), 2)
                                for a, b in zip(loop_s, batched_s, strict=True)],
            "load_average_per_round": loads,
            "plain_loop": "extract_attention(model, ids) + metrics.analyze_stack, one sequence at a time",
            "corpus": "corpus.run(batch_size=16, shard_size=64): tokenizing the whole dataset, batches on "
                      "every core, every column, Parquet",
        },
        "dask": {
            "sequences": args.num_dask, "workers": 2, "threads_per_worker": 1, "processes": True,
            "rounds": args.dask_rounds, "local_s_per_round": [round(v, 1) for v in local_runs],
            "dask_s_per_round": [round(v, 1) for v in dask_runs], "load_average_per_round": dask_loads,
            "local_s": round(local_s, 1), "dask_s": round(dask_s, 1),
            "overhead": round(dask_s / local_s, 2), "target_overhead": "<= 1.5",
            "local_seq_per_s": round(args.num_dask / local_s, 2),
            "dask_seq_per_s": round(args.num_dask / dask_s, 2),
            "cluster_start_s": round(cluster_start_s, 1),
            "dask_includes": "round 1: each worker loading MiniLM by name; no round: the cluster start",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
