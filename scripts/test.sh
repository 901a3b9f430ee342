#!/usr/bin/env bash
# The test suite: lint, format check and pytest. Sets itself up on first run. Extra arguments go to pytest.
set -euo pipefail
GYM_NEMO_EXTRAS=test,suite,judge
source "$(dirname "$0")/setup.sh"
cd "$ROOT"
ruff check .
ruff format --check .
exec python -m pytest "$@"
