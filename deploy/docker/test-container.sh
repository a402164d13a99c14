#!/usr/bin/env bash
# `make test-container`: builds the images and runs them for real (tests/containers), on any Linux machine where we
# are root, with or without a Docker engine or an image registry:
#   1. a private dockerd (state under OEGATE_DOCKER_STATE, default a temporary directory) when none answers;
#   2. the local Debian base image (deploy/docker/base-image.sh) when missing, the wheelhouse, then the service,
#      train and Prometheus images, all built offline from the wheelhouse (pip in a build cannot always reach or
#      verify the package index; the wheelhouse is downloaded on the host);
#   3. pytest tests/containers (OEGATE_CONTAINER_TESTS=1: without it those tests skip);
#   4. stops the private dockerd and removes its state, unless OEGATE_DOCKER_STATE named it (kept: a warm layer
#      cache for the next run).
# PY is the Python with the dev extras (make passes the venv's).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
if [ "$(id -u)" != 0 ]; then
    echo "test-container: needs root (a private dockerd, debootstrap)" >&2
    exit 2
fi
# Debian's engine, debootstrap and docker-compose 1.29 (the test drives compose with it), when missing.
missing=""
for tool in dockerd:docker.io debootstrap:debootstrap docker-compose:docker-compose; do
    command -v "${tool%%:*}" >/dev/null || missing="$missing ${tool#*:}"
done
if [ -n "$missing" ]; then
    echo "test-container: installing$missing"
    (apt-get install -y -q --no-install-recommends $missing \
        || (apt-get update -q && apt-get install -y -q --no-install-recommends $missing)) >/dev/null
fi
if [ -z "${DOCKER:-}" ]; then
    DOCKER=docker
    # Docker 23+ clients build with BuildKit only through the buildx plugin; Debian's docker.io 20.10 has it built in.
    if ! docker buildx version >/dev/null 2>&1 && [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; fi
fi
export DOCKER

private_state=""
keep_state=0
cleanup() {
    status=$?
    if [ -n "$private_state" ]; then
        deploy/docker/dockerd.sh stop "$private_state"
        if [ "$keep_state" = 0 ]; then rm -rf "$private_state"; fi
    fi
    exit $status
}
trap cleanup EXIT INT TERM
if ! "$DOCKER" version >/dev/null 2>&1; then
    if [ -n "${OEGATE_DOCKER_STATE:-}" ]; then
        private_state=$OEGATE_DOCKER_STATE
        keep_state=1
    else
        private_state=$(mktemp -d /tmp/oegate-dockerd.XXXXXX)
    fi
    eval "$(deploy/docker/dockerd.sh start "$private_state")"
    export DOCKER_HOST
    echo "test-container: private dockerd at $DOCKER_HOST (state $private_state)"
fi

start=$(date +%s)
make --no-print-directory base-image DOCKER="$DOCKER"
make --no-print-directory wheelhouse image image-train image-prometheus \
    DOCKER="$DOCKER" PYTHON_IMAGE=oegate-base:bookworm WHEELHOUSE=1
echo "test-container: images built in $(($(date +%s) - start)) s"
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^oegate' | sort

OEGATE_CONTAINER_TESTS=1 "$PY" -m pytest -p no:cacheprovider tests/containers -v
echo "test-container: passed in $(($(date +%s) - start)) s"
