"""The on-disk data cache: where built pools and rendered anomaly sets live, and how they are written and read.

The cache directory is `<repo>/data-cache/` (git-ignored), or `$OEGATE_DATA_CACHE` when set. Every file is an
`.npz` of arrays plus a JSON `manifest` entry whose `sha256` covers the arrays, so a torn or edited file is noticed
on load. Files are written under a temporary name in the same directory and renamed into place (atomic on POSIX).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from training.data.base import DataError

CACHE_ENV_VAR = "OEGATE_DATA_CACHE"
REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_KEY = "manifest"


def data_cache_dir() -> Path:
    """`$OEGATE_DATA_CACHE` if set, else `<repo>/data-cache`. Not created here: writers create it."""
    override = os.environ.get(CACHE_ENV_VAR)
    return Path(override) if override else REPO_ROOT / "data-cache"


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every array, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_npz_atomic(path: Path, arrays: Mapping[str, np.ndarray], manifest: Mapping[str, Any]) -> str:
    """Write `arrays` and `manifest` (+ its `sha256`) to `path` via a temporary file and a rename.

    Returns the sha256. The temporary file is removed if anything fails, so `path` is either the old file or the
    complete new one.
    """
    if MANIFEST_KEY in arrays:
        raise ValueError(f"'{MANIFEST_KEY}' is reserved for the manifest")
    sha256 = arrays_sha256(arrays)
    text = json.dumps({**manifest, "sha256": sha256}, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        payload: dict[str, Any] = {**arrays, MANIFEST_KEY: np.array(text)}
        with os.fdopen(handle, "wb") as tmp:
            np.savez_compressed(tmp, **payload)
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; the cache is shared data, not a secret
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return sha256


def load_npz_checked(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by `save_npz_atomic`; DataError if it is unreadable or its checksum does not match."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read cache file {path}: {error}; delete it and rebuild") from error
    if MANIFEST_KEY not in arrays:
        raise DataError(f"cache file {path} has no manifest; delete it and rebuild")
    manifest: dict[str, Any] = json.loads(str(arrays.pop(MANIFEST_KEY)))
    if arrays_sha256(arrays) != manifest.get("sha256"):
        raise DataError(f"cache file {path} does not match its checksum; delete it and rebuild")
    return arrays, manifest
