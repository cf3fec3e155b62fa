#!/usr/bin/env bash
# Build the local base image: a minimal Debian bookworm root filesystem with Python 3.11,
# made with debootstrap and loaded with `docker import`. No registry is needed, only a
# Debian mirror (or a local one: MIRROR=http://your-mirror/debian).
#
#   docker/build-base.sh [IMAGE]        default IMAGE: imdb-edge/python:3.11-bookworm
#
# Air-gapped users who already have a Python 3.11 image skip this and pass it to the image
# builds instead: --build-arg BASE_IMAGE=their/image. The rootfs is a build artifact under
# docker/.build/ (gitignored) and is removed once imported.
set -euo pipefail
IMAGE="${1:-${BASE_IMAGE:-imdb-edge/python:3.11-bookworm}}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
here="$(cd "$(dirname "$0")" && pwd)"
work="$here/.build"
rootfs="$work/rootfs-$SUITE"

if [[ $EUID -ne 0 ]]; then
    echo "build-base.sh: debootstrap needs root" >&2
    exit 1
fi
if docker image inspect "$IMAGE" >/dev/null 2>&1 && [[ "${REBUILD:-0}" != 1 ]]; then
    echo "build-base.sh: $IMAGE exists (REBUILD=1 to rebuild)"
    exit 0
fi

mkdir -p "$work"
rm -rf "$rootfs"
trap 'rm -rf "$rootfs"' EXIT
# minbase: essential packages + apt. python3-venv brings ensurepip (pip inside a venv);
# passwd gives useradd for the images' non-root users. No compilers.
debootstrap --variant=minbase --include=python3,python3-venv,passwd "$SUITE" "$rootfs" "$MIRROR"

# Slim the tree: package caches, docs, man pages, locales other than C, Python bytecode
# caches of the system's own modules (regenerated on demand; a read-only root never needs them).
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/tmp/* "$rootfs"/var/tmp/*
find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
# debootstrap leaves the host's resolver config and hostname in place; a container gets its own.
: > "$rootfs"/etc/resolv.conf
: > "$rootfs"/etc/hostname

created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
tar --numeric-owner --xattrs -C "$rootfs" -c . | docker import \
    --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --change "LABEL org.opencontainers.image.title=imdb-edge-base org.opencontainers.image.created=$created org.opencontainers.image.description=debootstrap-bookworm-minbase-python3" \
    - "$IMAGE"
docker image ls "$IMAGE"
