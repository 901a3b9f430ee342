#!/usr/bin/env bash
# The main job on the embedded defaults: verified CodeExec rollouts with the reference policy and the
# local sandbox. Sets itself up on first run. Extra arguments go to `gym-nemo rollout`.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"
exec gym-nemo rollout nemo/CodeExec-v0 --num-episodes 64 --num-envs 4 --out runs/codeexec_rollouts.jsonl "$@"
