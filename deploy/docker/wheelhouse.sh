#!/usr/bin/env bash
# The wheelhouse: every file the images install, downloaded on the host and checked against the locks' hashes.
#   deploy/docker/wheelhouse.sh [DIR [LOCK...]]   # default wheelhouse/ (git-ignored, in the build context) and the
#                                                 # CPU images' locks (service, train, data); cuda.lock for CUDA=1
# Then `make image WHEELHOUSE=wheelhouse` (or `--build-arg WHEELHOUSE=wheelhouse`) installs with
# `pip --no-index --find-links`, so the build needs no package index at all: for air-gapped sites (copy the
# repository with its wheelhouse/), and for machines where pip inside a build cannot reach or verify the index.
# TORCH_FIND_LINKS is where torch's CPU build comes from (default PyTorch's CPU wheel page). PIP overrides the pip
# used (it must run Python 3.11 on x86_64 Linux, the images' platform; default: python3 -m pip).
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-wheelhouse}
shift || true
locks=("$@")
[ ${#locks[@]} -gt 0 ] || locks=(requirements/service.lock requirements/train.lock requirements/data.lock)
pip=${PIP:-python3 -m pip}
torch_links=${TORCH_FIND_LINKS:-https://download.pytorch.org/whl/cpu/torch/}
mkdir -p "$dir"
split=$(mktemp -d)
trap 'rm -rf "$split"' EXIT
# --no-deps: the locks list every package; --require-hashes: a file whose sha256 is not in its lock is refused.
# torch alone is looked up on TORCH_FIND_LINKS (one page; where it cannot be reached, pip's retries cost once).
for lock in "${locks[@]}"; do
    name=$(basename "$lock" .lock)
    awk '/^torch==/ {t = 1} /^[a-z]/ && !/^torch==/ {t = 0} t' "$lock" >"$split/$name-torch.txt"
    awk '/^torch==/ {t = 1} /^[a-z]/ && !/^torch==/ {t = 0} !t' "$lock" >"$split/$name-rest.txt"
    $pip download --quiet --no-deps --require-hashes --dest "$dir" -r "$split/$name-rest.txt"
    if [ -s "$split/$name-torch.txt" ]; then
        $pip download --quiet --no-deps --require-hashes --find-links "$torch_links" --dest "$dir" \
            -r "$split/$name-torch.txt"
    fi
done
echo "wheelhouse $dir: $(find "$dir" -maxdepth 1 -type f | wc -l) files, $(du -sh "$dir" | cut -f1)"
