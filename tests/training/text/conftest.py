"""Tiny text gates and published text artifacts: the real export path on a random-weight tiny BERT, in seconds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from training.calibrate import Threshold, conformal_threshold
from training.text.encoder import SentenceEncoder, pretrained_dir
from training.text.export import GraphRunner, TextGate, publish_text_artifact
from training.text.nets import TINY, TextClassifier
from training.text.tokenize import TextTokenizer

TEXT_LABELS = ["cooking", "space", "sports"]
MAX_LENGTH = 16
VAL_TEXTS = [
    "bake the dough in a hot oven",
    "the rocket left orbit",
    "a late goal won the match for the home team",
    "sugar",
    "astronauts watched the galaxy through a telescope all night long while the moon rose over the hills",
    "the referee stopped the game",
]


def make_text_gate(seed: int = 0, temperature: float = 1.5) -> TextGate:
    torch.manual_seed(seed)
    net = TextClassifier(SentenceEncoder(TINY), len(TEXT_LABELS), trainable_layers=2, dropout=0.1)
    with torch.no_grad():
        net.head.weight.mul_(20.0)  # logits of a trained net's size (about 10), not a random head's (about 0.5)
    return TextGate(net, temperature).eval()


def conformal_summary(run: GraphRunner) -> tuple[Threshold, dict[str, Any]]:
    scores = run(VAL_TEXTS)["anomaly_score"]
    return conformal_threshold(scores, 0.5), {"split": "val", "val_samples": len(VAL_TEXTS)}


def publish_tiny_text(
    models_dir: Path,
    tokenizer: TextTokenizer,
    *,
    name: str = "tiny-text",
    version: int | None = None,
    quantize: bool = False,
    summarize: Callable[[GraphRunner], tuple[Threshold, dict[str, Any]]] = conformal_summary,
    check_texts: Sequence[str] = tuple(VAL_TEXTS),
) -> Path:
    return publish_text_artifact(
        make_text_gate(),
        models_dir=models_dir,
        name=name,
        version=version,
        labels=TEXT_LABELS,
        tokenizer=tokenizer,
        quantize=quantize,
        check_texts=check_texts,
        summarize=summarize,
        calibration_split="toy val",
        training={"note": "random weights, for tests", "seed": 0},
    )


@pytest.fixture(scope="session")
def text_tokenizer() -> TextTokenizer:
    return TextTokenizer(pretrained_dir() / "tokenizer.json", MAX_LENGTH)


@pytest.fixture(scope="session")
def tiny_text_artifact(tmp_path_factory: pytest.TempPathFactory, text_tokenizer: TextTokenizer) -> Path:
    """One published fp32 tiny text artifact per session; copy it before modifying."""
    return publish_tiny_text(tmp_path_factory.mktemp("text-models"), text_tokenizer)


def random_ids(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """[CLS] random-word ids [SEP] rows of random lengths >= 3, right-padded: (input_ids, attention_mask)."""
    batch, length = shape
    input_ids = np.zeros(shape, dtype=np.int64)
    mask = np.zeros(shape, dtype=np.int64)
    for row, n in enumerate(rng.integers(3, length + 1, size=batch)):
        n = length if row == 0 else int(n)  # the longest row fills the batch
        input_ids[row, :n] = [101, *rng.integers(1000, 30000, size=n - 2), 102]
        mask[row, :n] = 1
    return input_ids, mask
