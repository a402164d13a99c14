"""TextTokenizer: the MiniLM vocabulary's exact ids, truncation with special tokens kept, padding to the longest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from training.text.encoder import pretrained_dir
from training.text.tokenize import TextTokenizer

CLS, SEP, PAD = 101, 102, 0


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer(pretrained_dir() / "tokenizer.json", 8)


def test_known_sentences_give_exact_ids(tokenizer: TextTokenizer) -> None:
    assert tokenizer.encode(["hello world", "Hello World!", "a"]) == [
        [CLS, 7592, 2088, SEP],
        [CLS, 7592, 2088, 999, SEP],  # lower-cased, "!" its own token
        [CLS, 1037, SEP],
    ]
    assert tokenizer.encode([""]) == [[CLS, SEP]]


def test_truncation_keeps_cls_and_sep_with_exactly_max_length_ids(tokenizer: TextTokenizer) -> None:
    [ids] = tokenizer.encode(["the quick brown fox jumps over the lazy dog again"])
    assert ids == [CLS, 1996, 4248, 2829, 4419, 14523, 2058, SEP]
    assert len(ids) == tokenizer.max_length == 8


def test_pad_pads_to_the_longest_with_pad_id_and_mask_zero(tokenizer: TextTokenizer) -> None:
    input_ids, mask = tokenizer.pad([[CLS, 7592, 2088, SEP], [CLS, SEP], [CLS, 1037, 2088, 7592, SEP]])
    assert input_ids.dtype == mask.dtype == np.int64
    assert input_ids.tolist() == [
        [CLS, 7592, 2088, SEP, PAD],
        [CLS, SEP, PAD, PAD, PAD],
        [CLS, 1037, 2088, 7592, SEP],
    ]
    assert mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    empty_ids, empty_mask = tokenizer.pad([])
    assert empty_ids.shape == empty_mask.shape == (0, 0)
    # The padding id is the tokenizer's own, whatever it is (MiniLM's happens to be 0).
    other = TextTokenizer(pretrained_dir() / "tokenizer.json", 8)
    other.pad_token_id = 7
    assert other.pad([[CLS, SEP], [CLS, 1037, SEP]])[0].tolist() == [[CLS, SEP, 7], [CLS, 1037, SEP]]


def test_call_tokenizes_and_pads(tokenizer: TextTokenizer) -> None:
    input_ids, mask = tokenizer(["hello world", "a"])
    assert input_ids.tolist() == [[CLS, 7592, 2088, SEP], [CLS, 1037, SEP, PAD]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_the_files_own_padding_and_truncation_are_overridden(tokenizer: TextTokenizer) -> None:
    raw = Tokenizer.from_file(str(pretrained_dir() / "tokenizer.json"))
    assert raw.padding is not None and raw.padding["length"] == 128  # the file pads every text to 128...
    assert raw.truncation is not None and raw.truncation["max_length"] == 128
    assert len(raw.encode("hello world").ids) == 128
    assert tokenizer.pad_token_id == PAD
    assert tokenizer.tokenizer.padding is None  # ...ours does not, and truncates at its own max_length
    assert tokenizer.tokenizer.truncation is not None and tokenizer.tokenizer.truncation["max_length"] == 8
    assert tokenizer.encode(["hello world"]) == [[CLS, 7592, 2088, SEP]]


def test_a_tokenizer_file_without_padding_pads_with_its_pad_token(tmp_path: Path) -> None:
    spec = json.loads((pretrained_dir() / "tokenizer.json").read_text())
    spec["padding"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    bare = TextTokenizer(tmp_path / "tokenizer.json", 8)
    assert bare.pad_token_id == bare.tokenizer.token_to_id("[PAD]") == PAD
    assert bare.pad([[CLS, SEP], [CLS, 1037, SEP]])[0].tolist() == [[CLS, SEP, PAD], [CLS, 1037, SEP]]


def _edited_file(tmp_path: Path, edit) -> Path:
    spec = json.loads((pretrained_dir() / "tokenizer.json").read_text())
    edit(spec)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec))
    return path


def test_the_files_padding_id_wins_over_its_pad_token(tmp_path: Path) -> None:
    def pad_with_unk(spec: dict) -> None:
        spec["padding"].update(pad_id=100, pad_token="[UNK]")

    tok = TextTokenizer(_edited_file(tmp_path, pad_with_unk), 8)
    assert tok.pad_token_id == 100 != tok.tokenizer.token_to_id("[PAD]")
    assert tok.pad([[CLS, SEP], [CLS, 1037, SEP]])[0].tolist() == [[CLS, SEP, 100], [CLS, 1037, SEP]]


def test_without_padding_the_pad_tokens_own_id_is_used_not_zero(tmp_path: Path) -> None:
    def pad_token_at_one(spec: dict) -> None:
        spec["padding"] = None
        vocab = spec["model"]["vocab"]
        vocab["[PAD]"], vocab["[unused0]"] = 1, 0
        for token in spec["added_tokens"]:
            token["id"] = {"[PAD]": 1, "[unused0]": 0}.get(token["content"], token["id"])

    tok = TextTokenizer(_edited_file(tmp_path, pad_token_at_one), 8)
    assert tok.tokenizer.token_to_id("[PAD]") == 1
    assert tok.pad_token_id == 1
    assert tok.pad([[CLS, SEP], [CLS, 1037, SEP]])[0].tolist() == [[CLS, SEP, 1], [CLS, 1037, SEP]]


def test_without_padding_or_a_pad_token_ids_pad_with_zero(tmp_path: Path) -> None:
    def no_pad_token(spec: dict) -> None:
        spec["padding"] = None
        vocab = spec["model"]["vocab"]
        vocab["[NOPAD]"] = vocab.pop("[PAD]")
        spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] != "[PAD]"]

    tok = TextTokenizer(_edited_file(tmp_path, no_pad_token), 8)
    assert tok.tokenizer.token_to_id("[PAD]") is None
    assert tok.pad_token_id == 0


def test_the_path_and_length_the_export_reads_are_the_given_ones() -> None:
    tok = TextTokenizer(pretrained_dir() / "tokenizer.json", 9)  # its own: a shared fixture hides __init__ from mutmut
    assert tok.path == pretrained_dir() / "tokenizer.json"
    assert tok.max_length == 9
