#!/usr/bin/env bash
# Build pyscore's image with podman (the Containerfile): bash scripts/image.sh [TAG]
# (default localhost/pyscore:<version>). Prints the tag.
#   BASE=docker.io/library/python:3.12-slim  the Containerfile's default base (needs a registry);
#   unset: a local Debian bookworm base made by mmdebstrap (no registry needed), kept as
#   localhost/pyscore-base:bookworm.
#   PYSCORE_IMAGE_CACHE: where pip's cache is kept between builds (mounted into the build, not
#   kept in the image); default ~/.cache/pyscore/image.
#   Extra podman build options may follow in PYSCORE_IMAGE_BUILD_ARGS (e.g. --no-cache).
# Reproducible: file times and the image's date are the last commit's (SOURCE_DATE_EPOCH), so
# two builds of one commit and lock on one base give identical layers.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/containers.conf}
VERSION=$(sed -n 's/^__version__ = "\([^"]*\)".*/\1/p' src/pyscore/__init__.py)
TAG=${1:-localhost/pyscore:$VERSION}
CACHE=${PYSCORE_IMAGE_CACHE:-$HOME/.cache/pyscore/image}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}

need=()
for pair in podman:podman runc:runc mmdebstrap:mmdebstrap skopeo:skopeo; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ -z "${BASE:-}" ]; then
  BASE=localhost/pyscore-base:bookworm
  if ! podman image exists "$BASE"; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "image.sh: making the base $BASE with mmdebstrap (about a minute)" >&2
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      bookworm "$work/rootfs.tar"
    podman import --quiet --change 'CMD ["/bin/bash"]' "$work/rootfs.tar" "$BASE" >/dev/null
  fi
fi

build=(--pull=never --format docker --network host --timestamp "$SOURCE_DATE_EPOCH"
       --build-arg "BASE=$BASE" --build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
       -v "$CACHE/pip:/root/.cache/pip")
mkdir -p "$CACHE/pip"
# a network whose TLS needs a CA bundle of its own (PIP_CERT here): the build's pip gets it too
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
  build+=(-v "$PIP_CERT:/etc/ssl/build-ca.crt:ro" --build-arg PIP_CERT=/etc/ssl/build-ca.crt)
fi
# shellcheck disable=SC2086
podman build --quiet "${build[@]}" ${PYSCORE_IMAGE_BUILD_ARGS:-} -t "$TAG" -f Containerfile . >/dev/null
echo "$TAG"
