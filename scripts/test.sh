#!/usr/bin/env bash
# Set up everything the tests need, then run the whole suite:
# lint, JS type-check + vitest, pytest (unit, notebooks, wheel, real-browser e2e),
# then the bare install: the wheel with no extras and the sdist without node, each in a
# fresh venv (scripts/check_bare_install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "dev,lens"
bash scripts/install-browser.sh
export HF_HUB_OFFLINE=1
export E2E_REQUIRE_BROWSER=1   # a missing browser fails the run instead of skipping
.venv/bin/ruff check attnwidget tests benchmarks
# npm install, not npm ci: npm 11 rejects its own fresh lock file in `ci` because
# optional platform packages (@rollup/rollup-android-*, ...) are listed without versions
(cd js && npm install --no-audit --no-fund && npm test)
# the slowest tests at the end of every run: where CI's time goes, run to run
.venv/bin/python -m pytest --durations=20 "$@"
bash scripts/check_bare_install.sh
