#!/usr/bin/env bash
# CI step (run by scripts/test.sh after the test suite): what a user gets from
# `pip install attnwidget` with no extras, on a fresh venv.
#
#  1. build the sdist and the wheel from it (the bundle is built once, by npm, and
#     travels in the sdist);
#  2. install the wheel with NO extras into a fresh venv, and run the report on the
#     tiny model (--no-png), AttentionView.from_tensor and a head sweep on the tiny LM;
#  3. install the sdist into another fresh venv with node and npm off the PATH, and
#     check that the installed package carries the bundle.
#
# Needs the project venv (.venv, from scripts/setup.sh) for the build tools.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PY="${PYTHON:-python3}"

echo "== bare install: build sdist and wheel"
.venv/bin/python -m build --no-isolation --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 \
  || { cat "$WORK/build.log"; exit 1; }
WHEEL="$(ls "$WORK"/dist/attnwidget-*.whl)"
SDIST="$(ls "$WORK"/dist/attnwidget-*.tar.gz)"

quiet() {  # pip's notes about this machine's optional local package folders are noise here
  grep -v "^WARNING: Location 'file:///opt/" || true
}

fresh_venv() {  # $1: folder. torch first: the CPU build on disk (unpinned torch pulls CUDA)
  "$PY" -m venv "$1"
  "$1/bin/python" -m pip install -q "torch==2.13.0" 2>&1 | quiet
}

echo "== bare install: wheel, no extras"
fresh_venv "$WORK/bare"
"$WORK/bare/bin/python" -m pip install -q "$WHEEL" 2>&1 | quiet
cd "$WORK"  # away from the checkout, so that only the installed package can be imported
"$WORK/bare/bin/python" - <<'PY'
import importlib.util
for extra in ("transformers", "selenium", "transformer_lens"):
    assert importlib.util.find_spec(extra) is None, f"{extra} is installed: this is not a bare install"
PY
"$WORK/bare/bin/attnwidget" --version
"$WORK/bare/bin/attnwidget" report "q8Zr2kLmxTq8Zr2kLmxT" --model tiny --no-png --quiet --out "$WORK/report"
test -s "$WORK/report/index.html"
test -s "$WORK/report/metrics.json"
"$WORK/bare/bin/python" - <<'PY'
import json, pathlib, numpy as np, torch
import attnwidget
from attnwidget import AttentionView, AttentionMaps
from attnwidget.ablate import ablation_sweep
from attnwidget.models import load_tiny_lm

assert "site-packages" in attnwidget.__file__, attnwidget.__file__
assert (pathlib.Path(attnwidget.__file__).parent / "static" / "widget.js").stat().st_size > 1000
assert (pathlib.Path(attnwidget.__file__).parent / "py.typed").exists()
rng = np.random.default_rng(0)
w = rng.random((2, 3, 5, 5)); w /= w.sum(-1, keepdims=True)
view = AttentionView.from_tensor(w, list("abcde"))
assert view.metrics["shape"] == [5, 5] and view.panel["shape"] == [5, 5]
view.layer, view.head = 1, 2
assert abs(view.metrics["max"] - float(w[1, 2].max())) < 1e-6
model, tok = load_tiny_lm()
sweep = ablation_sweep(model, "q8Zr2kLmxTq8Zr2kLmxT", tok, progress=True)
assert sweep["score"].shape == (2, 4), sweep["score"].shape
numbers = json.loads(pathlib.Path("report/metrics.json").read_text())
assert numbers["shape"] == [2, 4, 20, 20], numbers["shape"]
print("bare install: report, from_tensor and the tiny-LM sweep work; sweep scores", np.round(sweep["score"], 3).tolist())
PY
cd "$ROOT"

echo "== bare install: sdist without node"
# a venv with nothing but the sdist (no dependencies: this step checks what the build does)
"$PY" -m venv "$WORK/sdist"
# only the venv on the PATH: if the build wanted npm or node, it would fail here
test -z "$(env -i PATH="$WORK/sdist/bin" /bin/bash -c 'command -v npm; command -v node')"
env -i HOME="$HOME" PATH="$WORK/sdist/bin" "$WORK/sdist/bin/python" -m pip install -q --no-deps "$SDIST" \
  2>&1 | quiet
SITE="$("$WORK/sdist/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
test -s "$SITE/attnwidget/static/widget.js"
test -s "$SITE/attnwidget/static/widget.css"
echo "sdist installs without node and carries the bundle: $SITE/attnwidget/static/widget.js"
echo "== bare install: ok"
