"""The artifact card (`card.json`): the typed contract between training and the service.

The service validates the same JSON with its own pydantic model (`service/card.py`); a test proves both agree on a
real exported artifact. Shared by value, never by import.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

OUTPUT_NAMES = ("logits", "probs", "kl_uniform", "anomaly_score", "confidence")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageInputSpec(_Strict):
    """What the graph's single input expects: float32 NCHW images scaled to [0, 1] at the model's size."""

    kind: Literal["image"] = "image"
    name: str = "input"
    dtype: Literal["float32"] = "float32"
    layout: Literal["NCHW"] = "NCHW"
    channels: Literal[1, 3]
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    value_range: tuple[float, float] = (0.0, 1.0)
    # Normalization applied inside the graph, recorded for readers; clients never apply it.
    mean: list[float]
    std: list[float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


class TextInputSpec(_Strict):
    """What the graph's two inputs expect: token ids and attention mask made by the artifact's `tokenizer.json`.

    Both inputs are int64 [batch, length] with dynamic batch and length; a batch is padded to its longest text with
    `pad_token_id` and mask 0. Texts longer than `max_length` tokens (special tokens included) are truncated to it,
    which is how the model was trained and evaluated.
    """

    kind: Literal["text"] = "text"
    names: tuple[str, str] = ("input_ids", "attention_mask")
    dtype: Literal["int64"] = "int64"
    tokenizer: Literal["tokenizer.json"] = "tokenizer.json"
    """The `tokenizers` library file in the version directory (listed in `sha256`)."""
    max_length: int = Field(gt=2, le=4096)
    truncation: Literal["truncate"] = "truncate"
    pad_token_id: int = Field(ge=0)


class AnomalyScoreSpec(_Strict):
    """How `anomaly_score` is derived from `kl_uniform`; higher means more anomalous."""

    output: Literal["anomaly_score"] = "anomaly_score"
    formula: Literal["1 / (1 + kl_uniform)"] = "1 / (1 + kl_uniform)"
    higher_is_anomalous: Literal[True] = True
    range: tuple[float, float] = (0.0, 1.0)


class ThresholdSpec(_Strict):
    """The reject threshold, in `anomaly_score` units: `reject = anomaly_score >= value`."""

    value: float
    method: Literal["conformal_quantile", "pac_binomial"] = "conformal_quantile"
    acceptance_target: float = Field(gt=0.0, lt=1.0)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    """pac_binomial: the promise holds with probability >= 1 - delta over the calibration draw."""
    order_statistic: int | None = Field(default=None, gt=0)
    """The threshold is the next float32 above this (1-based) order statistic of the calibration scores."""
    promise: str | None = None
    """What the rule guarantees, in words (assuming exchangeable in-distribution inputs)."""
    calibration_split: str
    calibration_samples: int = Field(gt=0)
    calibration_acceptance: float = Field(ge=0.0, le=1.0)


class Card(_Strict):
    """Everything the service and a reader need to use and trust one artifact version."""

    schema_version: Literal[1] = 1
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)
    version: int = Field(ge=1)
    task: Literal["image", "text"]
    labels: list[str] = Field(min_length=2)
    num_classes: int = Field(ge=2)
    input: ImageInputSpec | TextInputSpec = Field(discriminator="kind")
    outputs: list[str] = Field(default_factory=lambda: list(OUTPUT_NAMES))
    temperature: float = Field(gt=0.0)
    anomaly_score: AnomalyScoreSpec = Field(default_factory=AnomalyScoreSpec)
    threshold: ThresholdSpec
    evaluation: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    frameworks: dict[str, str] = Field(default_factory=dict)
    # File name (relative to the version directory) -> lowercase hex sha256.
    sha256: dict[str, str]
    created_at: dt.datetime

    @model_validator(mode="after")
    def _consistent(self) -> Card:
        if self.num_classes != len(self.labels):
            raise ValueError(f"num_classes={self.num_classes} but {len(self.labels)} labels")
        if "model.onnx" not in self.sha256:
            raise ValueError("sha256 must list model.onnx")
        if tuple(self.outputs) != OUTPUT_NAMES:
            raise ValueError(f"outputs must be {list(OUTPUT_NAMES)}")
        if self.input.kind != self.task:
            raise ValueError(f"task '{self.task}' with a '{self.input.kind}' input spec")
        if isinstance(self.input, TextInputSpec) and self.input.tokenizer not in self.sha256:
            raise ValueError(f"sha256 must list {self.input.tokenizer}")
        return self
