#!/usr/bin/env bash
# Build the gym_nemo sandbox image with no registry: debootstrap a minimal Debian bookworm root with the
# pinned Python and packages, `docker import` it as the base, then `docker build` the rest (Dockerfile).
# Prints the image id (its content digest), which rollouts record.
#
# Usage: sandbox/build_image.sh [TAG]        (needs root, debootstrap, a running Docker engine)
# Env:   DOCKER_HOST (the engine), GYM_NEMO_DEBIAN_MIRROR (default: Debian's own), GYM_NEMO_REBUILD=1
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TAG="${1:-gym-nemo-sandbox:1}"
BASE="gym-nemo-sandbox-base:bookworm"
MIRROR="${GYM_NEMO_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Pinned by the Debian release: bookworm's python3.11 and these packages.
PACKAGES="python3-minimal,libpython3.11-stdlib,python3-numpy,g++,libc6-dev"

if [ "${GYM_NEMO_REBUILD:-0}" != 1 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  docker image inspect --format '{{.Id}}' "$TAG"
  exit 0
fi

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  ROOTFS="$(mktemp -d /var/tmp/gym_nemo_rootfs.XXXXXX)"
  trap 'rm -rf "$ROOTFS"' EXIT
  echo "debootstrap bookworm ($PACKAGES) into $ROOTFS" >&2
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOTFS" "$MIRROR" >&2
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
  tar -C "$ROOTFS" -c . | docker import - "$BASE" >&2
fi
docker build --quiet --build-arg BASE="$BASE" -t "$TAG" "$HERE" >&2
docker image inspect --format '{{.Id}}' "$TAG"
