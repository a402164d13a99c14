"""Fragments: outliers recombined from pieces of the training images, the nearest kind of OE data to an unknown class.

Every other OE source is far from the training images (clip art, drawn strokes, glyphs of other scripts), and the
held-out-class validation set (`val-heldout-classes`) shows what that leaves: handwriting of a class the net never
learnt is read as one of its classes with confidence. A fragment is built only from the training split: the part of
one training image on one side of a random line near its centre of ink, overlaid (pixel-wise maximum) on such a
part of one or two other images of *other* classes, each shifted a little, the whole re-centred by its centre of ink
as MNIST centres its digits. The result has the training images' strokes, pen and scale and is of no class: the
shape of the problem at the gate's near boundary. Fragments the net still reads as a class with near certainty are
dropped by the pool screen (`oe.screen_confidence`), as any pool image is.

`val-chimera` (the left half of one validation digit beside the right half of a digit of another class) is a
special case of this construction: with fragments in the pool it no longer measures a kind OE never saw.
"""

from __future__ import annotations

import numpy as np

from training.image.anomalies.glyphs import centre_of_ink

PIECES = (2, 3)
PIECE_WEIGHTS = (0.7, 0.3)
CUT_JITTER = 0.1  # the cut passes within this fraction of the side from the centre of ink
SHIFT = 0.15  # each piece moves by up to this fraction of the side, each axis


def _centre_of_ink(image: np.ndarray) -> tuple[float, float]:
    """(row, col) centre of mass of an H x W image; the middle for a blank one."""
    h, w = image.shape
    return centre_of_ink(image) or ((h - 1) / 2.0, (w - 1) / 2.0)


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`image` (C x H x W) moved by (dy, dx) pixels; what leaves the frame is lost, what enters is blank."""
    out = np.zeros_like(image)
    h, w = image.shape[1:]
    src_y, dst_y = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    src_x, dst_x = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
    out[:, dst_y, dst_x] = image[:, src_y, src_x]
    return out


def _piece(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The part of `image` (C x H x W, float) on one side of a random line near its centre of ink, shifted."""
    h, w = image.shape[1:]
    cy, cx = _centre_of_ink(image.sum(axis=0))
    cy += rng.uniform(-CUT_JITTER, CUT_JITTER) * h
    cx += rng.uniform(-CUT_JITTER, CUT_JITTER) * w
    angle = rng.uniform(0.0, 2.0 * np.pi)
    rows, cols = np.indices((h, w))
    keep = (rows - cy) * np.sin(angle) + (cols - cx) * np.cos(angle) > 0.0
    dy = int(rng.integers(-round(SHIFT * h), round(SHIFT * h) + 1))
    dx = int(rng.integers(-round(SHIFT * w), round(SHIFT * w) + 1))
    return _shift(image * keep, dy, dx)


def _partners(labels: np.ndarray | None, size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` distinct indices into the training set, of `count` different classes when labels allow it."""
    if labels is None or len(np.unique(labels)) < count:
        return rng.choice(size, size=count, replace=False)
    chosen: list[int] = []
    while len(chosen) < count:
        i = int(rng.integers(0, size))
        if all(labels[i] != labels[j] for j in chosen):
            chosen.append(i)
    return np.asarray(chosen)


def fragments(
    images: np.ndarray,
    labels: np.ndarray | None,
    n: int,
    seed: int,
    *,
    faintest: float = 1.0,
    full_ink_share: float = 0.0,
) -> np.ndarray:
    """n fragments (uint8, shaped like `images`: N x C x H x W, uint8 in [0, 255] or float in [0, 1]) recombined from
    `images` (the training split), partners of different classes when `labels` has them. Each piece's ink is scaled
    by a factor drawn uniformly from [`faintest`, 1] (1: full ink; lower: pen pressure varies from piece to piece),
    except in a `full_ink_share` of the fragments (each drawn with that probability), whose pieces all keep full ink.
    Deterministic in `seed`; with `full_ink_share` 0 the draws are those of the share-less construction."""
    if images.ndim != 4 or len(images) < max(PIECES):
        raise ValueError(f"fragments need at least {max(PIECES)} N x C x H x W images, got shape {images.shape}")
    if not 0.0 < faintest <= 1.0:
        raise ValueError(f"faintest must lie in (0, 1], got {faintest}")
    if not 0.0 <= full_ink_share <= 1.0:
        raise ValueError(f"full_ink_share must lie in [0, 1], got {full_ink_share}")
    scale = 1.0 if images.dtype == np.uint8 else 255.0
    rng = np.random.default_rng([seed, 0xF4A6])
    h, w = images.shape[2:]
    out = np.empty((n, *images.shape[1:]), dtype=np.uint8)
    for k in range(n):
        count = int(rng.choice(PIECES, p=PIECE_WEIGHTS))
        index = _partners(labels, len(images), count, rng)
        merged = np.zeros(images.shape[1:], dtype=np.float32)
        full = faintest == 1.0 or (full_ink_share > 0.0 and rng.random() < full_ink_share)
        for i in index:
            ink = 1.0 if full else rng.uniform(faintest, 1.0)
            merged = np.maximum(merged, _piece(images[i].astype(np.float32) * np.float32(scale * ink), rng))
        cy, cx = _centre_of_ink(merged.sum(axis=0))
        merged = _shift(merged, round((h - 1) / 2.0 - cy), round((w - 1) / 2.0 - cx))
        out[k] = np.clip(np.rint(merged), 0, 255).astype(np.uint8)
    return out
