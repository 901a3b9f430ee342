#!/usr/bin/env bash
# The test suite: lint, format check, import layers (lint-imports), pytest. Sets itself up on first run. Extra arguments go to pytest.
# As root it also provides a Docker engine for the docker sandbox tests (sandbox/start_docker.sh: an
# engine with --bridge=none --iptables=false and its own data root, or the one already running), builds the
# sandbox image offline (sandbox/build_image.sh), and stops the engine it started by PID afterwards.
# Docker tests skip, saying why, only when no engine can be had at all.
set -euo pipefail
GYM_NEMO_EXTRAS=test,suite,judge,docker,hf,serve,ray,vllm,eval,trl,docs,agents,games,tensorboard,wandb,trackio,export,nemo-gym
source "$(dirname "$0")/setup.sh"
bash "$ROOT/scripts/vllm_fixup.sh" "$VENV/bin/python"
bash "$ROOT/scripts/fetch_openrlhf.sh" "$VENV/bin/python"
# verl's own venv (it pins transformers<5.11): tests/test_integrations_verl.py runs NemoAgentLoop through it.
bash "$ROOT/scripts/setup_verl.sh" >/dev/null || echo "the verl venv could not be made; the verl run test will skip" >&2
cd "$ROOT"
ruff check .
ruff format --check .
lint-imports  # the import layers in .importlinter (docs/architecture.md); exits non-zero on a broken contract
NO_MKDOCS_2_WARNING=1 mkdocs build --strict  # the docs site into build/site (gitignored); any warning fails (no --quiet: it hides them)
bash scripts/install_chromium.sh  # headless Chromium for the leaderboard screenshot test (root only; quick once installed)

if [ "${GYM_NEMO_DOCKER:-1}" = 1 ]; then
  if docker_env="$(bash sandbox/start_docker.sh)"; then
    eval "$docker_env"
    if [ -n "${GYM_NEMO_DOCKERD_PID:-}" ]; then
      stop_dockerd() {
        kill "$GYM_NEMO_DOCKERD_PID" 2>/dev/null || return 0
        for _ in $(seq 1 100); do kill -0 "$GYM_NEMO_DOCKERD_PID" 2>/dev/null || return 0; sleep 0.2; done
      }
      trap stop_dockerd EXIT
    fi
    if image="$(bash sandbox/build_image.sh)"; then
      echo "sandbox image: $image"
    else
      echo "sandbox image build failed; docker tests will skip" >&2
    fi
  else
    echo "no Docker engine could be started; docker sandbox tests will skip" >&2
  fi
fi

# NeMo Gym's own servers run from a separate Python >= 3.12 venv (.venv-nemo-gym; ~3-4 min to create once, then a
# stamp makes this a no-op). Without such a Python the tests that need it skip, saying why.
if python -c "from gym_nemo.nemo_gym.runtime import find_python; find_python()" 2>/dev/null; then
  gym-nemo nemo-gym setup offline
else
  echo "no Python >= 3.12 found: the NeMo Gym server tests will skip" >&2
fi

python -m pytest "$@"
