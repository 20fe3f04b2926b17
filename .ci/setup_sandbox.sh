#!/usr/bin/env bash
# Install Debian's bubblewrap, so candidate workers run in its sandbox (docs/anticheat.md) and CI tests the
# sandboxed path. Idempotent and quiet: does nothing when bwrap is already on PATH; prints one line either way.
set -euo pipefail
if command -v bwrap >/dev/null 2>&1; then
    echo "bubblewrap: $(command -v bwrap) already installed"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null
echo "bubblewrap: $(command -v bwrap) installed ($(bwrap --version))"
