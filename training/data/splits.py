"""Seeded index draws: stratified train/val/test splits and fixed-size subsets.

Stratified means per class: class c with n_c examples gives round(f * n_c) of them to a split of fraction f, so
every split keeps the class balance (and every class with enough examples appears in every split).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.data.base import DataError, ImageSet


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices of `labels` into len(fractions) + 1 parts; the last part takes the remainder.

    Part k gets round(fractions[k] * n_c) indices of each class c, drawn by a seeded shuffle. Each part's
    indices are returned sorted, so the original order (within a part) is kept.
    """
    if any(f < 0 for f in fractions) or sum(fractions) > 1.0:
        raise ValueError(f"fractions must be >= 0 and sum to at most 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for part, fraction in enumerate(fractions):
            count = min(round(fraction * len(members)), len(members) - start)
            parts[part].append(members[start : start + count])
            start += count
        parts[-1].append(members[start:])
    return [np.sort(np.concatenate(part)) if part else np.zeros(0, np.int64) for part in parts]


def subset(images: ImageSet, indices: np.ndarray) -> ImageSet:
    """The images (and labels) at `indices`."""
    labels = None if images.labels is None else images.labels[indices]
    return ImageSet(images.images[indices], labels)


def carve(images: ImageSet, fraction: float, seed: int, what: str) -> tuple[ImageSet, ImageSet]:
    """(rest, carved): a stratified `fraction` of `images` moved to a new split (e.g. validation from train)."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"{what}: the fraction to carve must be in (0, 1), got {fraction}")
    labels = images.labels if images.labels is not None else np.zeros(len(images), np.int64)
    carved, rest = stratified_split(labels, [fraction], seed)
    if len(carved) == 0 or len(rest) == 0:
        raise DataError(f"{what}: {len(images)} images are too few to carve a {fraction:g} split")
    return subset(images, rest), subset(images, carved)


def draw(count: int, available: int, seed: int, what: str) -> np.ndarray:
    """`count` distinct indices out of `available`, seeded; DataError if there are not enough."""
    if count < 0:
        raise DataError(f"{what}: cannot draw {count} samples")
    if count > available:
        raise DataError(f"{what}: asked for {count} samples but only {available} exist")
    return np.random.default_rng(seed).choice(available, size=count, replace=False)
