#!/usr/bin/env bash
# Install Debian's chromium for tests/test_report_browser.py (headless page load, DOM, console, screenshot).
# Idempotent and quiet: does nothing when a chromium is already on PATH; prints one line either way.
set -euo pipefail
for name in chromium chromium-browser; do
    if command -v "$name" >/dev/null 2>&1; then
        echo "chromium: $(command -v "$name") already installed"
        exit 0
    fi
done
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "chromium: $(command -v chromium) installed ($(chromium --version 2>/dev/null || echo 'version unknown'))"
