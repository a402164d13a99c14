#!/bin/sh
# How the images install Python packages (see Dockerfile): `install.sh -r LOCK`. Exact pins from a lock, each file
# checked against its sha256, no resolver (--no-deps: the lock lists every package). With WHEELHOUSE=1 only the
# build context's wheelhouse/ (mounted at /wheelhouse) is read, with --no-index; otherwise PIP_INDEX_URL, plus
# TORCH_FIND_LINKS where the build declares it (torch's CPU build is not on PyPI).
set -eu
if [ "${WHEELHOUSE:-0}" = 1 ]; then
    set -- --no-index --find-links /wheelhouse "$@"
elif [ -n "${TORCH_FIND_LINKS:-}" ]; then
    set -- --find-links "$TORCH_FIND_LINKS" "$@"
fi
exec pip install --no-compile --no-deps --require-hashes "$@"
