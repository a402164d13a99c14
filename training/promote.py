"""Promotion: a published version moves from the staging area into the served model directory.

Training publishes to `staging/` by default (`export.models_dir`), so a fresh model is never served by accident;
`python -m training promote NAME VERSION` makes it live. The copy is verified (card, checksums, graph outputs)
before and after, written under a hidden temporary name and renamed into place, so the service, which ignores
hidden entries, sees either nothing or the whole version; an existing served version is never overwritten.

A version retrained on captures (`pipeline --with-captures`) carries its promotion rule's verdict in its card
(`evaluation.promotion`, training/captures/promotion.py). It is refused unless that rule passed and the live version
it was compared with is still the newest served one (a comparison with an older version says nothing about the
newer); `force` overrides both, for an operator who has read the comparison report.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from training.artifact import load_artifact
from training.export import ArtifactExistsError, move_into_place, temporary_version

DEFAULT_STAGING = Path("staging")
DEFAULT_MODELS = Path("models")


class PromotionRefusedError(ValueError):
    """The staged version's promotion rule failed, or it was compared with a version that is no longer live."""


def promotion_problems(promotion: dict[str, Any], models: Path, name: str) -> list[str]:
    """Why a version with this `evaluation.promotion` record must not go live (empty: it may)."""
    problems = [
        f"{row['check']}: candidate {row['candidate']} vs live {row['live']} (needs {row['requirement']})"
        for row in promotion.get("checks", [])
        if not row["passed"]
    ]
    served = [int(p.name) for p in (models / name).glob("*") if p.is_dir() and p.name.isdigit()]
    compared = int(promotion["live"]["version"])
    if served and max(served) > compared:
        problems.append(f"it was compared with version {compared}, but version {max(served)} is served now")
    return problems


def promote(
    name: str,
    version: int,
    *,
    staging: Path = DEFAULT_STAGING,
    models: Path = DEFAULT_MODELS,
    force: bool = False,
) -> Path:
    """Copy `staging/name/version` to `models/name/version` atomically; returns the served version directory.

    PromotionRefusedError for a version whose promotion rule failed (or whose comparison is stale), unless `force`.
    """
    source = staging / name / str(version)
    artifact = load_artifact(source)  # refuse a broken or half-written staged version before touching models/
    promotion = artifact.card.evaluation.get("promotion")
    if promotion is not None and not force:
        problems = promotion_problems(promotion, models, name)
        if problems:
            raise PromotionRefusedError(
                f"{source} is not promoted: {'; '.join(problems)} (see {source / 'comparison.md'}; --force to "
                "promote anyway)"
            )
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
