"""Splices: OE sentences recombined from pieces of training texts of different classes (the text side of the image
pool's fragments, `training/image/pool/fragments.py`).

The OE corpora are prose from elsewhere (encyclopaedia, news, parliament, WordNet's examples); none is in the voice of
the in-distribution texts, and out-of-scope messages (`val-heldout-classes`) are. A splice is the opening words of one
training text joined to the closing words of a training text of *another* class: the in-distribution voice and
vocabulary, belonging to no one class. Only the training split is read. `val-shuffled` (the words of three validation
texts pooled and shuffled) is the nearest validation set to this construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CUT = (0.3, 0.7)  # each piece keeps about this share of its text's words (at least one word)


def _kept(words: list[str], rng: np.random.Generator) -> int:
    """How many of `words` a piece keeps: a CUT share, at least one word, at most all of them."""
    return min(max(1, round(rng.uniform(*CUT) * len(words))), len(words))


def splices(texts: Sequence[str], labels: np.ndarray | None, n: int, seed: int) -> tuple[str, ...]:
    """n splices of `texts` (the training split): the head of one text + the tail of a text of another class (of
    another text when `labels` is None or has one class). Deterministic in `seed`."""
    if len(texts) < 2:
        raise ValueError(f"splices need at least 2 training texts, got {len(texts)}")
    rng = np.random.default_rng([seed, 0x5B1C])
    words = [text.split() for text in texts]
    mixed_classes = labels is not None and len(np.unique(labels)) > 1
    out: list[str] = []
    for _ in range(n):
        first = int(rng.integers(0, len(texts)))
        second = first
        while second == first or (mixed_classes and labels is not None and labels[second] == labels[first]):
            second = int(rng.integers(0, len(texts)))
        head = words[first][: _kept(words[first], rng)]
        tail = words[second][len(words[second]) - _kept(words[second], rng) :]
        out.append(" ".join(head + tail))
    return tuple(out)
