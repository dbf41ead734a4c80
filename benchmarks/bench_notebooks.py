"""Wall time of every teaching notebook, run top to bottom with a real kernel, and of training
the shipped induction model.

Targets (issue 7): the whole notebook suite under 10 minutes, training under 5 minutes.

    python benchmarks/bench_notebooks.py [--out benchmarks/results/notebooks.json] [--no-train]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    import nbclient
    import nbformat

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "notebooks.json")
    ap.add_argument("--no-train", action="store_true")
    args = ap.parse_args()
    rows = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}}).execute()
        rows[path.name] = round(time.perf_counter() - t0, 1)
        print(path.name, rows[path.name], "s", flush=True)
    out = {"notebooks_s": rows, "total_s": round(sum(rows.values()), 1), "target_total_s": "< 600"}
    if not args.no_train:
        from attnwidget.tinylm import train_induction

        t0 = time.perf_counter()
        train_induction(progress=False)
        out["train_induction_s"] = round(time.perf_counter() - t0, 1)
        out["target_train_s"] = "< 300"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
