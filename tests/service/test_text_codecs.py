"""Tokenization (service/codecs/text.py): the service's token ids are the `tokenizers` library's own, truncated at
the card's max_length whatever the file says, padded per batch to its longest text with mask 0."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from service.card import ArtifactError, TextInputSpec, read_verified_card
from service.codecs import CodecError, TextEncoder, TokenBatch, check_text
from service.codecs.text import IndexedCodecError
from tests.text_artifacts import MAX_LENGTH, PAD_TOKEN_ID, minilm_tokenizer

TEXTS = [
    "The match ended in a draw.",
    "Quarterly revenue grew faster than the analysts expected, lifting the shares of every bank in the index.",
    "naïve café — 東京 🙂",
    "a",
]


@pytest.fixture(scope="module")
def spec(text_artifact: Path) -> TextInputSpec:
    card = read_verified_card(text_artifact, "words", 1)
    assert isinstance(card.input, TextInputSpec)
    return card.input


@pytest.fixture(scope="module")
def encoder(text_artifact: Path, spec: TextInputSpec) -> TextEncoder:
    return TextEncoder.load(text_artifact, spec)


def reference_ids(texts: list[str], max_length: int = MAX_LENGTH) -> list[list[int]]:
    """The tokenizers library on the same file, configured by hand: truncation at max_length, no padding."""
    tokenizer = Tokenizer.from_file(str(minilm_tokenizer()))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return [encoding.ids for encoding in tokenizer.encode_batch(texts)]


def test_token_ids_are_the_tokenizers_own_truncated_at_the_cards_max_length(encoder: TextEncoder) -> None:
    batch = encoder.encode(TEXTS, max_chars=1000)
    assert [ids.tolist() for ids in batch.ids] == reference_ids(TEXTS)
    assert all(ids.dtype == np.int64 for ids in batch.ids)
    assert [len(ids) for ids in batch.ids] == [9, 16, 8, 3]  # the long one cut to 16 (the file says 128)
    assert batch.ids[1][0] == 101 and batch.ids[1][-1] == 102  # [CLS] ... [SEP] kept when truncating
    assert batch.ids[3].tolist() == [101, 1037, 102]
    untruncated = reference_ids([TEXTS[1]], max_length=512)[0]
    assert len(untruncated) > MAX_LENGTH
    assert batch.ids[1][:-1].tolist() == untruncated[: MAX_LENGTH - 1]


def test_a_batch_is_padded_to_its_longest_text_with_mask_zero() -> None:
    batch = TokenBatch((np.array([101, 7, 102]), np.array([101, 5, 6, 8, 102]), np.array([101, 102])))
    input_ids, attention_mask = batch.padded(pad_token_id=9)
    assert input_ids.dtype == attention_mask.dtype == np.int64
    np.testing.assert_array_equal(input_ids, [[101, 7, 102, 9, 9], [101, 5, 6, 8, 102], [101, 102, 9, 9, 9]])
    np.testing.assert_array_equal(attention_mask, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])


def test_token_batches_slice_and_join_in_order() -> None:
    batch = TokenBatch(tuple(np.arange(n) for n in (1, 2, 3, 4)))
    assert len(batch) == 4
    assert [len(ids) for ids in batch[1:3].ids] == [2, 3]
    joined = TokenBatch.join([batch[:1], batch[1:3], batch[3:]])
    assert [ids.tolist() for ids in joined.ids] == [ids.tolist() for ids in batch.ids]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "text is empty or whitespace only"),
        (" \t\n\u3000 ", "text is empty or whitespace only"),
        ("x" * 11, "text is too long (11 characters, limit 10)"),
        (" " * 11, "text is too long (11 characters, limit 10)"),  # the length first: bounded work
        ("ok \ud800", "text is not valid UTF-8 (surrogates not allowed at character 3)"),
    ],
)
def test_bad_texts_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(CodecError) as caught:
        check_text(text, 10)
    assert str(caught.value) == message


def test_a_text_of_exactly_the_limit_passes() -> None:
    check_text("x" * 10, 10)


def test_an_encoding_error_names_the_texts_index(encoder: TextEncoder) -> None:
    with pytest.raises(IndexedCodecError) as caught:
        encoder.encode(["fine", "also fine", "  "], max_chars=100)
    assert (caught.value.index, str(caught.value)) == (2, "text is empty or whitespace only")


def test_the_files_own_truncation_and_padding_are_replaced_by_the_cards(
    text_artifact: Path, spec: TextInputSpec
) -> None:
    settings = json.loads(minilm_tokenizer().read_text())
    assert settings["truncation"]["max_length"] == 128 and settings["padding"] is not None  # what we override
    assert spec.pad_token_id == PAD_TOKEN_ID
    encoder = TextEncoder.load(text_artifact, spec.model_copy(update={"max_length": 5}))
    batch = encoder.encode(["one", "one two three four five six"], max_chars=100)
    assert [ids.tolist() for ids in batch.ids] == reference_ids(["one", "one two three four five six"], 5)
    assert [len(ids) for ids in batch.ids] == [3, 5]  # not padded to 128, not padded to each other


def test_a_missing_or_unparsable_tokenizer_is_an_artifact_error(tmp_path: Path, spec: TextInputSpec) -> None:
    with pytest.raises(ArtifactError) as missing:
        TextEncoder.load(tmp_path, spec)
    assert str(missing.value) == f"{tmp_path}: text model without its tokenizer.json"
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "NoSuchModel"}}')
    with pytest.raises(ArtifactError) as corrupt:
        TextEncoder.load(tmp_path, spec)
    assert str(corrupt.value).startswith(f"{tmp_path / 'tokenizer.json'}: the tokenizers library cannot load it: ")


def test_a_pad_token_outside_the_vocabulary_is_an_artifact_error(text_artifact: Path, spec: TextInputSpec) -> None:
    with pytest.raises(ArtifactError) as caught:
        TextEncoder.load(text_artifact, spec.model_copy(update={"pad_token_id": 30522}))
    assert str(caught.value) == (
        f"{text_artifact / 'tokenizer.json'}: pad_token_id 30522 is outside the vocabulary (30522)"
    )
