"""Long, self-contained computations some tests check, started in a background process.

The suite runs on one core at a time for most of its length (one pytest process, its tests
mostly single-threaded), and CI's machine has two. A computation that needs nothing from the
tests (the tiny LM's training from its recipe, 75 s) runs in a child process at the lowest
priority (nice 19) while the other tests run, and its test waits for the result: the
scheduler gives the child only the time the suite leaves idle, so the tests around it run
as before. It starts after the browser tests (``tests/e2e`` runs first), whose timings are
the most sensitive to a busy machine, and only when the test that needs it is selected.

What is checked does not change: the child trains with the same code, recipe, torch and
thread count, and reports its own :func:`platform_fingerprint` for the bitwise check.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

TRAINING_TEST = "test_training_script_reproduces_the_shipped_model"

#: The child's program: train the induction model from its recipe and save what the test reads.
_TRAIN = """
import dataclasses, importlib.util, sys
import torch
from attnwidget.tinylm import train_induction
spec = importlib.util.spec_from_file_location("train_tiny_lm", sys.argv[2])
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)
model, losses = train_induction(progress=False)
torch.save({"state_dict": model.state_dict(), "config": dataclasses.asdict(model.config),
            "losses": losses, "fingerprint": script.platform_fingerprint()}, sys.argv[1])
"""

_started: dict[str, tuple[subprocess.Popen, Path]] = {}


def start_training() -> None:
    """Start the training child (once per session)."""
    if "training" in _started:
        return
    folder = Path(tempfile.mkdtemp(prefix="aw-background-"))
    out = folder / "trained.pt"
    log = open(folder / "log.txt", "wb")  # noqa: SIM115  # the child writes it until it exits
    proc = subprocess.Popen(
        [sys.executable, "-c", _TRAIN, str(out), str(ROOT / "scripts" / "train_tiny_lm.py")],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    with contextlib.suppress(OSError):  # lowest priority: only the time the suite leaves idle
        os.setpriority(os.PRIO_PROCESS, proc.pid, 19)
    atexit.register(_stop, proc)  # a session that ends first (interrupted) leaves no child behind
    _started["training"] = (proc, out)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def trained_induction(timeout_s: float = 1800) -> tuple[Any, list[float], dict[str, Any]]:
    """``(model, losses, fingerprint)``: the background training's result when it was started
    (waited for), else a training here."""
    import torch

    from attnwidget.tinylm import TinyConfig, TinyLM

    if "training" not in _started:
        start_training()
    proc, out = _started["training"]
    rc = proc.wait(timeout_s)
    log = (out.parent / "log.txt").read_text(errors="replace")
    if rc != 0:
        raise RuntimeError(f"the background training exited with {rc}:\n{log[-4000:]}")
    saved = torch.load(out, weights_only=True)
    model = TinyLM(TinyConfig(**saved["config"]))
    model.load_state_dict(saved["state_dict"])
    return model, saved["losses"], saved["fingerprint"]
