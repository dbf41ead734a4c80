#!/usr/bin/env bash
# Debian's chromium for the browser tests (Playwright drives it via
# executable_path; `playwright install` would download a browser and fails offline).
set -euo pipefail
# chromium for the browser tests, chromium-driver for bokeh's PNG/SVG export
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
$SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -q chromium chromium-driver
