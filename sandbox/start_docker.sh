#!/usr/bin/env bash
# Make a Docker engine available for the docker sandbox tests, leaving the host network untouched.
# Prints `export DOCKER_HOST=...` and `export GYM_NEMO_DOCKERD_PID=...` lines for the caller to eval.
#
# If an engine already answers (DOCKER_HOST or the default socket), it is used as is. Otherwise, as root:
# install docker.io (and runsc, gVisor, registered as a runtime) from Debian's packages when missing, start `dockerd --bridge=none --iptables=false`
# with its own data root and socket (containers get no network at all; no bridge, no iptables rules),
# and report its PID so the caller stops exactly that process. Exits non-zero, saying why, when no
# engine can be had.
set -euo pipefail
if docker version >/dev/null 2>&1; then
  echo "export DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "no Docker engine answers and starting one needs root" >&2
  exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "installing docker.io from Debian's packages" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap runsc) >&2
fi
command -v debootstrap >/dev/null 2>&1 || (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap) >&2
STATE="${GYM_NEMO_DOCKER_STATE:-/var/tmp/gym_nemo-docker}"
mkdir -p "$STATE"
SOCK="$STATE/docker.sock"
# gVisor (runsc), when installed, is registered as a runtime for DockerSandbox(runtime="runsc"); with
# Docker's network "none" it must itself run with --network=none.
if command -v runsc >/dev/null 2>&1; then
  printf '{"runtimes": {"runsc": {"path": "%s", "runtimeArgs": ["--network=none"]}}}\n' "$(command -v runsc)" \
    >"$STATE/daemon.json"
else
  echo '{}' >"$STATE/daemon.json"
fi
dockerd --config-file "$STATE/daemon.json" --bridge=none --iptables=false --ip6tables=false \
  --data-root "$STATE/data" --exec-root "$STATE/exec" --pidfile "$STATE/dockerd.pid" --host "unix://$SOCK" \
  >"$STATE/dockerd.log" 2>&1 &
PID=$!
for _ in $(seq 1 60); do
  if DOCKER_HOST="unix://$SOCK" docker version >/dev/null 2>&1; then
    echo "export DOCKER_HOST=unix://$SOCK"
    echo "export GYM_NEMO_DOCKERD_PID=$PID"
    exit 0
  fi
  if ! kill -0 "$PID" 2>/dev/null; then break; fi
  sleep 0.5
done
kill "$PID" 2>/dev/null || true
echo "dockerd did not start; its log:" >&2
tail -20 "$STATE/dockerd.log" >&2
exit 1
