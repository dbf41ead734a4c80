#!/usr/bin/env bash
# Debian's chromium for the browser tests (Playwright drives it via
# executable_path; `playwright install` would download a browser and fails offline).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
$SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -q chromium chromium-driver
