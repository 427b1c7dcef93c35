#!/usr/bin/env bash
# Build docker.io/library/python:3.11-slim into the project's private podman store from Debian
# packages (debootstrap minbase bookworm -> podman import -> python-base.Containerfile), so the
# FROM line of the Bento's Dockerfile resolves with --pull=never on a host that reaches no registry.
# Kept between runs: nothing is rebuilt while the image carries the hash of its current inputs.
# Needs root, podman, debootstrap, and CONTAINERS_CONF / CONTAINERS_STORAGE_CONF set (see the Makefile).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BASE=localhost/rtserve-debian-base:bookworm
IMAGE=docker.io/library/python:3.11-slim
W=$(mktemp -d /var/tmp/rtserve-python-base.XXXXXX)
trap 'rm -rf "$W"' EXIT

ctx="$W/context"
mkdir -p "$ctx/apt" "$ctx/certs"
cp -r /etc/apt/sources.list.d "$ctx/apt/"
if [ -f /etc/apt/sources.list ]; then cp /etc/apt/sources.list "$ctx/apt/"; fi
cp /usr/local/share/ca-certificates/*.crt "$ctx/certs/" 2>/dev/null || true
cp "$HERE/python-base.Containerfile" "$ctx/Containerfile"
inputs=$(cd "$ctx" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)

if [ "$(podman image inspect --format '{{ index .Labels "rtserve.inputs" }}' "$IMAGE" 2>/dev/null)" = "$inputs" ]; then
  echo "$IMAGE: present (inputs $inputs)"
  exit 0
fi
if ! podman image exists "$BASE"; then
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
  echo "debootstrap bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$W/rootfs" "$mirror" > "$W/debootstrap.log" 2>&1 \
    || { tail -20 "$W/debootstrap.log" >&2; exit 1; }
  rm -rf "$W"/rootfs/var/cache/apt/archives/*.deb "$W"/rootfs/var/lib/apt/lists/*
  tar -C "$W/rootfs" -c . | podman import - "$BASE" > /dev/null
fi
podman build --pull=never --network host --label "rtserve.inputs=$inputs" -t "$IMAGE" "$ctx" > "$W/build.log" 2>&1 \
  || { tail -30 "$W/build.log" >&2; exit 1; }
podman image prune -f > /dev/null  # the image this one replaced, and its layers
echo "$IMAGE: built (inputs $inputs)"
