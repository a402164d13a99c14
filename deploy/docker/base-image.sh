#!/usr/bin/env bash
# A Python 3.11 base image made locally, for machines with no image registry (CI runners, air-gapped sites):
#   deploy/docker/base-image.sh [TAG]            # default TAG oegate-base:bookworm; a no-op when the image exists
# Debian bookworm from debootstrap (--variant=minbase) with python3, python3-venv (the images install into a venv:
# Debian's python3 refuses pip installs outside one), passwd (useradd) and ca-certificates, imported with a full
# PATH. Build the images on it with `--build-arg PYTHON_IMAGE=oegate-base:bookworm`. DEBIAN_MIRROR overrides the
# mirror (an apt cache or a local mirror for air-gapped sites). Needs root, debootstrap and a Docker engine.
set -euo pipefail
tag=${1:-oegate-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
docker=${DOCKER:-docker}

if "$docker" image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag exists"
    exit 0
fi
root=$(mktemp -d /tmp/oegate-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,passwd,ca-certificates \
    bookworm "$root/rootfs" "$mirror" >"$root/debootstrap.log" 2>&1 \
    || { tail -n 30 "$root/debootstrap.log" >&2; exit 1; }
# What an image needs no copy of: apt's lists and downloaded .debs, docs, man pages.
rm -rf "$root"/rootfs/var/lib/apt/lists/* "$root"/rootfs/var/cache/apt/archives/*.deb \
    "$root"/rootfs/usr/share/doc/* "$root"/rootfs/usr/share/man/*
tar -C "$root/rootfs" --numeric-owner -c . | "$docker" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
echo "built base image $tag ($("$docker" image inspect --format '{{.Size}}' "$tag") bytes)"
