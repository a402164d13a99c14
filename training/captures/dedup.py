"""Near-duplicate keys: a difference hash (dHash) for images, a normalized-text hash for texts.

dHash (Krawetz, "Kind of like that", 2013): shrink the image to 9 x 8 gray pixels (box averages) and set one bit
per horizontally adjacent pair whose right pixel is brighter, giving 64 bits that survive rescaling, recompression
and small brightness changes. Unlike the original, a pair counts as brighter only beyond `DEAD_ZONE` gray levels:
captures are often drawings on a flat background, where the original's bits are decided by noise alone. Two
images are near-duplicates when their hashes differ in at most `max_distance` bits (Hamming distance).
Texts: NFKC, case-folded, punctuation dropped and whitespace collapsed, then sha256: "Hello,  World!" and
"hello world" are duplicates.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

import numpy as np
from PIL import Image

HASH_WIDTH, HASH_HEIGHT = 9, 8
DEFAULT_MAX_DISTANCE = 4  # of 64 bits
DEAD_ZONE = 4.0  # gray levels (of 255) a right neighbour must exceed its left one by


def dhash(pixels: np.ndarray) -> int:
    """The 64-bit difference hash of a uint8 [C, H, W] image (channels averaged to gray first)."""
    gray = pixels.astype(np.float32).mean(axis=0)
    small = Image.fromarray(gray, mode="F").resize((HASH_WIDTH, HASH_HEIGHT), Image.Resampling.BOX)
    values = np.asarray(small, dtype=np.float32)
    bits = (values[:, 1:] - values[:, :-1] > DEAD_ZONE).flatten()
    return int(sum(1 << index for index, bit in enumerate(bits) if bit))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def near_duplicate_groups(hashes: Sequence[int], max_distance: int = DEFAULT_MAX_DISTANCE) -> list[int]:
    """For each hash, the index of the first earlier hash within `max_distance` bits of it (itself if none): the
    representative it is a duplicate of. Greedy in order, so the earliest capture of a look-alike group is kept."""
    representatives: list[int] = []
    kept: list[int] = []  # indices of representatives so far
    for index, value in enumerate(hashes):
        match = next((k for k in kept if hamming(hashes[k], value) <= max_distance), None)
        if match is None:
            kept.append(index)
            representatives.append(index)
        else:
            representatives.append(match)
    return representatives


def text_key(text: str) -> str:
    """sha256 of the normalized text (NFKC, case-folded, punctuation removed, whitespace collapsed)."""
    normalized = unicodedata.normalize("NFKC", text).casefold()
    normalized = "".join(" " if unicodedata.category(c).startswith("P") else c for c in normalized)
    normalized = re.sub(r"\s+", " ", normalized).strip()
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()


def exact_groups(keys: Sequence[str]) -> list[int]:
    """For each key, the index of its first occurrence (text near-duplicates: equal normalized keys)."""
    first: dict[str, int] = {}
    return [first.setdefault(key, index) for index, key in enumerate(keys)]
