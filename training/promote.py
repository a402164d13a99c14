"""Promotion: a published version moves from the staging area into the served model directory.

Training publishes to `staging/` by default (`export.models_dir`), so a fresh model is never served by accident;
`python -m training promote NAME VERSION` makes it live. The copy is verified (card, checksums, graph outputs)
before and after, written under a hidden temporary name and renamed into place, so the service, which ignores
hidden entries, sees either nothing or the whole version; an existing served version is never overwritten.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from training.artifact import load_artifact
from training.export import ArtifactExistsError, move_into_place, temporary_version

DEFAULT_STAGING = Path("staging")
DEFAULT_MODELS = Path("models")


def promote(name: str, version: int, *, staging: Path = DEFAULT_STAGING, models: Path = DEFAULT_MODELS) -> Path:
    """Copy `staging/name/version` to `models/name/version` atomically; returns the served version directory."""
    source = staging / name / str(version)
    load_artifact(source)  # refuse a broken or half-written staged version before touching models/
    target = models / name / str(version)
    if target.exists():
        raise ArtifactExistsError(f"{target} already exists; served versions are immutable (publish a new version)")
    (models / name).mkdir(parents=True, exist_ok=True)
    with temporary_version(models / name, version) as temporary:
        shutil.copytree(source, temporary)
        for file in temporary.iterdir():
            with file.open("rb") as f:
                os.fsync(f.fileno())
        move_into_place(temporary, target)
    return target
