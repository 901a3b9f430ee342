#!/usr/bin/env bash
# Downloads the OpenRLHF 0.11.2 wheel (no dependencies: they need CUDA builds) into $VENV/gym_nemo_wheels/, where
# gym_nemo.testing.openrlhf_harness finds it: the tests load its openrlhf/utils/agent.py (plain Python) to check
# the OpenRLHF adapter against OpenRLHF's own executor. Skipped when the wheel is already there.
set -euo pipefail
PYTHON="${1:-python}"
DEST="$("$PYTHON" -c 'import sys; print(sys.prefix)')/gym_nemo_wheels"
if ! ls "$DEST"/openrlhf-0.11.2-*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps -d "$DEST" openrlhf==0.11.2 ||
    echo "could not download the openrlhf wheel; the OpenRLHF adapter tests will skip" >&2
fi
