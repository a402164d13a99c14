"""Tokenization for training and evaluation, with the same `tokenizers` library and rules the service uses.

Rules (the card's `TextInputSpec`): truncate to `max_length` tokens (special tokens included), pad a batch to its
longest text with `pad_token_id` and attention mask 0. The tokenizer file's own padding and truncation settings are
ignored: these rules are set explicitly, on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


class TextTokenizer:
    """A `tokenizer.json` with the artifact's truncation and padding rules."""

    def __init__(self, path: Path, max_length: int) -> None:
        self.path = path
        self.max_length = max_length
        self.tokenizer = Tokenizer.from_file(str(path))
        padding = self.tokenizer.padding
        self.pad_token_id = int(padding["pad_id"]) if padding else int(self.tokenizer.token_to_id("[PAD]") or 0)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated, not padded."""
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]

    def pad(self, ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), int64 [batch, longest]."""
        longest = max((len(row) for row in ids), default=0)
        input_ids = np.full((len(ids), longest), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(ids), longest), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return input_ids, mask

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.pad(self.encode(texts))
