#!/usr/bin/env bash
# Create .venv and install attnwidget (editable, so the JS bundle is built by
# hatch-jupyter-builder) with the extras named in $1 (default: transformers).
# Safe to re-run. Works offline-but-for-registries: PyPI, npm, Debian.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-transformers}"
PY="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of torch lies on this machine's disk; installed first, later
# requirements (torch>=2.2) are already satisfied and pull no CUDA wheels.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[${extras}]"
