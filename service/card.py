"""The service's own model of `card.json`, and the integrity check of an artifact directory.

Training writes the card with its own pydantic model (training/card.py); the two are shared by value, never by
import. Unknown fields are ignored so that a newer training side can add information without breaking serving;
everything the service relies on is required and validated.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from service.errors import format_validation_errors

SUPPORTED_SCHEMA_VERSION = 1
OUTPUT_NAMES = ("logits", "probs", "kl_uniform", "anomaly_score", "confidence")
"""The graph's outputs, in order (the contract with training/export.py)."""


class ArtifactError(ValueError):
    """An artifact version that must not be served; the message says why (logged, and counted as a failure)."""


class _CardPart(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ImageInputSpec(_CardPart):
    """An image model's graph input: one float32 NCHW tensor, images in [0, 1] at the model's size."""

    kind: Literal["image"] = "image"
    name: str = Field(min_length=1)
    dtype: Literal["float32"]
    layout: Literal["NCHW"]
    channels: Literal[1, 3]
    height: int = Field(gt=0, le=4096)
    width: int = Field(gt=0, le=4096)
    value_range: tuple[float, float] = (0.0, 1.0)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


class TextInputSpec(_CardPart):
    """A text model's graph inputs: token ids and attention mask, int64 [batch, length], made by the version's
    `tokenizer.json`. Texts longer than `max_length` tokens (special tokens included) are truncated to it; a batch
    is padded to its longest text with `pad_token_id` and mask 0."""

    kind: Literal["text"]
    names: tuple[Literal["input_ids"], Literal["attention_mask"]]
    dtype: Literal["int64"]
    tokenizer: Literal["tokenizer.json"]
    max_length: int = Field(gt=2, le=4096)
    truncation: Literal["truncate"]
    pad_token_id: int = Field(ge=0)


def _input_kind(value: Any) -> str:
    """Cards written before text models existed may lack `kind`: they are image cards."""
    if isinstance(value, dict):
        return str(value.get("kind", "image"))
    return str(getattr(value, "kind", "image"))


InputSpec = Annotated[
    Annotated[ImageInputSpec, Tag("image")] | Annotated[TextInputSpec, Tag("text")],
    Discriminator(_input_kind),
]
"""The card's `input`, by `kind`: image or text."""


class ThresholdSpec(_CardPart):
    """The reject threshold in anomaly-score units: `reject = anomaly_score >= value`."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    value: float
    method: str | None = None
    acceptance_target: float | None = Field(default=None, gt=0.0, lt=1.0)
    calibration_split: str | None = None
    calibration_samples: int | None = None
    calibration_acceptance: float | None = None


class Card(_CardPart):
    """What the service needs from `card.json` to serve, verify and describe one artifact version."""

    schema_version: int = Field(ge=1)
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)
    version: int = Field(ge=1)
    task: Literal["image", "text"]
    labels: list[str] = Field(min_length=2)
    num_classes: int = Field(ge=2)
    input: InputSpec
    outputs: list[str]
    temperature: float = Field(gt=0.0)
    threshold: ThresholdSpec
    evaluation: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    frameworks: dict[str, str] = Field(default_factory=dict)
    sha256: dict[str, str]
    """File name (relative to the version directory) -> lowercase hex sha256."""
    created_at: dt.datetime

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, value: int) -> int:
        if value > SUPPORTED_SCHEMA_VERSION:
            raise ValueError(f"card schema {value} is newer than this service understands ({SUPPORTED_SCHEMA_VERSION})")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex_digests(cls, value: dict[str, str]) -> dict[str, str]:
        for name, digest in value.items():
            if Path(name).name != name or name in {".", ".."}:
                raise ValueError(f"{name!r}: must be a plain file name inside the version directory")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"{name}: not a lowercase hex sha256")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Card:
        if self.num_classes != len(self.labels):
            raise ValueError(f"num_classes={self.num_classes} but {len(self.labels)} labels")
        if tuple(self.outputs) != OUTPUT_NAMES:
            raise ValueError(f"outputs must be {list(OUTPUT_NAMES)}, got {self.outputs}")
        if "model.onnx" not in self.sha256:
            raise ValueError("sha256 must list model.onnx")
        if not math.isfinite(self.temperature):
            raise ValueError("temperature must be finite")
        if self.input.kind != self.task:
            raise ValueError(f"task '{self.task}' with a '{self.input.kind}' input spec")
        if isinstance(self.input, TextInputSpec) and self.input.tokenizer not in self.sha256:
            raise ValueError(f"sha256 must list {self.input.tokenizer}")
        return self

    def summary(self) -> dict[str, Any]:
        """What `/v1/models` shows about this version besides name, version and provider."""
        return {
            "task": self.task,
            "labels": self.labels,
            "threshold": self.threshold.value,
            "acceptance_target": self.threshold.acceptance_target,
            "temperature": self.temperature,
            "input": self._input_summary(),
            "evaluation": self.evaluation,
            "created_at": self.created_at.isoformat(),
        }

    def _input_summary(self) -> dict[str, Any]:
        spec = self.input
        if isinstance(spec, TextInputSpec):
            return {
                "kind": "text",
                "max_length": spec.max_length,
                "truncation": spec.truncation,
                "tokenizer": spec.tokenizer,
            }
        return {"name": spec.name, "shape": list(spec.shape), "value_range": spec.value_range}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_verified_card(directory: Path, name: str, version: int) -> Card:
    """Parse and validate `directory/card.json`, check it names this model and version, and verify every checksum.

    Raises ArtifactError with the reason for anything that must not be served.
    """
    card_path = directory / "card.json"
    if not card_path.is_file():
        raise ArtifactError(f"{directory}: no card.json (not an artifact, or not fully published)")
    try:
        card = Card.model_validate(json.loads(card_path.read_bytes()))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{card_path}: not valid JSON ({e})") from e
    except ValidationError as e:
        raise ArtifactError(f"{card_path}: invalid card: {format_validation_errors(e.errors(), ())}") from e
    if card.name != name or card.version != version:
        raise ArtifactError(f"{card_path}: card is for {card.name}/{card.version}, found in {name}/{version}")
    for file_name, expected in card.sha256.items():
        file = directory / file_name
        if not file.is_file():
            raise ArtifactError(f"{directory}: card lists {file_name} but the file is missing")
        actual = sha256_file(file)
        if actual != expected:
            raise ArtifactError(f"{file}: sha256 mismatch (card {expected[:12]}..., file {actual[:12]}...)")
    return card
