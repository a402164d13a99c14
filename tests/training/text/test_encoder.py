"""Our BERT against transformers' `BertModel` on the same all-MiniLM-L6-v2 weights, pooling, and weight checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from training.text.encoder import SentenceEncoder, load_pretrained, pretrained_dir
from training.text.nets import TINY
from training.text.tokenize import TextTokenizer

SENTENCES = [
    "The weather is lovely today.",
    "hi",
    "Outlier exposure teaches a classifier to be unsure about text it was never meant to read.",
]


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return load_pretrained().eval()


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer(pretrained_dir() / "tokenizer.json", 128)


def test_token_states_match_transformers_bert_on_real_tokens(
    encoder: SentenceEncoder, tokenizer: TextTokenizer
) -> None:
    from transformers import BertModel

    reference = BertModel.from_pretrained(str(pretrained_dir()), add_pooling_layer=False).eval()
    input_ids, mask = (torch.from_numpy(a) for a in tokenizer(SENTENCES))
    assert mask.sum(1).tolist() == [8, 3, 21] and mask.shape == (3, 21)  # a padded batch: rows 0 and 1 are padded
    with torch.no_grad():
        ours = encoder.token_states(input_ids, mask)
        theirs = reference(input_ids=input_ids, attention_mask=mask).last_hidden_state
    assert ours.shape == theirs.shape == (3, 21, 384)
    real = mask.bool()
    assert torch.allclose(ours[real], theirs[real], atol=1e-5, rtol=0)


def test_mean_pooling_ignores_padding(encoder: SentenceEncoder, tokenizer: TextTokenizer) -> None:
    batch_ids, batch_mask = (torch.from_numpy(a) for a in tokenizer(SENTENCES))
    with torch.no_grad():
        in_batch = encoder(batch_ids, batch_mask)
        for i, sentence in enumerate(SENTENCES):
            alone_ids, alone_mask = (torch.from_numpy(a) for a in tokenizer([sentence]))
            alone = encoder(alone_ids, alone_mask)
            assert alone.shape == (1, 384)
            assert torch.allclose(alone[0], in_batch[i], atol=1e-5, rtol=0), sentence


def test_mean_pooling_is_the_masked_mean_of_token_states(encoder: SentenceEncoder, tokenizer: TextTokenizer) -> None:
    input_ids, mask = (torch.from_numpy(a) for a in tokenizer(SENTENCES))
    with torch.no_grad():
        states = encoder.token_states(input_ids, mask)
        pooled = encoder(input_ids, mask)
    for i, length in enumerate(mask.sum(1).tolist()):
        assert torch.allclose(pooled[i], states[i, :length].mean(0), atol=1e-6, rtol=0)


def _fake_model_dir(directory: Path, weights: dict[str, torch.Tensor]) -> Path:
    directory.mkdir()
    config = {
        "vocab_size": TINY.vocab_size, "hidden_size": TINY.hidden_size, "num_hidden_layers": TINY.num_hidden_layers,
        "num_attention_heads": TINY.num_attention_heads, "intermediate_size": TINY.intermediate_size,
        "max_position_embeddings": TINY.max_position_embeddings, "type_vocab_size": TINY.type_vocab_size,
        "layer_norm_eps": TINY.layer_norm_eps, "hidden_dropout_prob": 0.1, "pad_token_id": 0,
    }  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(directory / "model.safetensors"))
    return directory


def test_load_pretrained_reads_a_fitting_model_dir_and_skips_the_pooler(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = SentenceEncoder(TINY).state_dict()
    extra = {"pooler.dense.weight": torch.zeros(32, 32), "embeddings.position_ids": torch.arange(512)[None]}
    loaded = load_pretrained(_fake_model_dir(tmp_path / "model", {**weights, **extra}))
    assert loaded.config == TINY
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, weights[name]), name


def test_load_pretrained_refuses_weights_with_a_missing_key(tmp_path: Path) -> None:
    weights = SentenceEncoder(TINY).state_dict()
    del weights["encoder.layer.1.output.dense.weight"]
    with pytest.raises(ValueError, match=r"weights do not fit the encoder \(missing \['encoder\.layer\.1\.output\."):
        load_pretrained(_fake_model_dir(tmp_path / "model", weights))


def test_load_pretrained_refuses_unexpected_weights(tmp_path: Path) -> None:
    weights = {**SentenceEncoder(TINY).state_dict(), "encoder.layer.2.output.dense.weight": torch.zeros(32, 64)}
    with pytest.raises(ValueError, match=r"unexpected \['encoder\.layer\.2\.output\.dense\.weight'\]"):
        load_pretrained(_fake_model_dir(tmp_path / "model", weights))
