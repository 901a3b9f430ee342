#!/usr/bin/env bash
# Headless Chromium for the leaderboard page's screenshot test (tests/test_eval_models.py). Debian's
# `chromium` package; nothing to do when it is installed. Needs root (apt-get); otherwise it says so and
# the screenshot test skips with that reason.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "chromium is not installed and installing it needs root; the leaderboard screenshot test will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || {
  apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null
}
echo "installed $(chromium --version)"
