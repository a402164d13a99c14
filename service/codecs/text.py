"""Tokenization for text models, with the artifact's own `tokenizer.json` (the `tokenizers` library, no torch).

Text policy (what the service does to a text before the graph sees it):
1. A text must not be empty or whitespace only, must be at most `max_text_chars` characters and must be
   encodable as UTF-8 (no lone surrogates); anything else is refused before tokenizing, so the work per request
   is bounded.
2. The version's `tokenizer.json` encodes it, special tokens included (e.g. `[CLS] ... [SEP]`). Truncation is set
   from the card, not from the file: right-hand truncation to the card's `max_length` tokens, special tokens
   included. **Longer texts are truncated, not refused**: that is how the model was trained and evaluated, and
   it means only the first `max_length` tokens of a long text are judged.
3. Texts are not padded here: the token ids stay ragged (`TokenBatch`) until the micro-batcher has gathered a
   batch, which the runtime pads to its longest text with the card's `pad_token_id` and attention mask 0. The
   graph ignores masked positions, so a text's outputs do not depend on which texts share its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from service.card import ArtifactError, TextInputSpec
from service.codecs.errors import CodecError


@dataclass(frozen=True)
class TokenBatch:
    """Token ids of a batch of texts, unpadded: one int64 [length] array per text, in order."""

    ids: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: slice) -> TokenBatch:
        return TokenBatch(self.ids[index])

    @staticmethod
    def join(batches: Sequence[TokenBatch]) -> TokenBatch:
        return TokenBatch(tuple(ids for batch in batches for ids in batch.ids))

    def padded(self, pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), both int64 [N, longest]: ids padded with `pad_token_id`, mask 1 on tokens."""
        longest = max(len(ids) for ids in self.ids)
        input_ids = np.full((len(self.ids), longest), pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(self.ids), longest), dtype=np.int64)
        for row, ids in enumerate(self.ids):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask


class TextEncoder:
    """One text model version's tokenizer, configured from its card (see the module docstring)."""

    def __init__(self, tokenizer: Tokenizer, spec: TextInputSpec) -> None:
        tokenizer.no_padding()  # the runtime pads each micro-batch; the file's own padding is ignored
        tokenizer.enable_truncation(spec.max_length, stride=0, strategy="longest_first", direction="right")
        self._tokenizer = tokenizer

    @classmethod
    def load(cls, directory: Path, spec: TextInputSpec) -> TextEncoder:
        """The version's tokenizer file; ArtifactError if it is missing, unreadable or contradicts the card."""
        path = directory / spec.tokenizer
        if not path.is_file():
            raise ArtifactError(f"{directory}: text model without its {spec.tokenizer}")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises plain Exception for files it cannot parse
            raise ArtifactError(f"{path}: the tokenizers library cannot load it: {e}") from e
        vocab_size = tokenizer.get_vocab_size()
        if spec.pad_token_id >= vocab_size:
            raise ArtifactError(f"{path}: pad_token_id {spec.pad_token_id} is outside the vocabulary ({vocab_size})")
        return cls(tokenizer, spec)

    def encode(self, texts: Sequence[str], max_chars: int) -> TokenBatch:
        """Check every text (CodecError naming its index in `texts`), then tokenize them in one batch call."""
        for index, text in enumerate(texts):
            try:
                check_text(text, max_chars)
            except CodecError as e:
                raise IndexedCodecError(index, str(e)) from e
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        return TokenBatch(tuple(np.asarray(encoding.ids, dtype=np.int64) for encoding in encodings))


INLINE_TEXT_CHARS = 512
"""A native request whose instances are all texts of at most this many characters in all is tokenized on the event
loop: tokenizing costs about 0.33 us per character here (one 64-character text 29 us, 512 characters 0.17 ms;
`timeit` on one core of the 2-core bench machine), less than the decode thread hand-off, which py-spy put at about
a fifth of the event loop's busy time serving one short text per request (BENCHMARKS.md, section 3)."""


class IndexedCodecError(CodecError):
    """A CodecError about one text of a batch: `index` says which."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def check_text(text: str, max_chars: int) -> None:
    """Refuse a text that is empty or whitespace only, longer than `max_chars` characters, or not UTF-8."""
    if len(text) > max_chars:  # first, so that the other checks' work is bounded too
        raise CodecError(f"text is too long ({len(text)} characters, limit {max_chars})")
    if not text.strip():
        raise CodecError("text is empty or whitespace only")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise CodecError(f"text is not valid UTF-8 ({e.reason} at character {e.start})") from e
