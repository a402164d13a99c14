"""Bodies of the native JSON API (`/v1/...`). Field names are a contract: clients and monitors depend on them."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

INSTANCE_KINDS = ("image_b64", "array", "text")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageInstance(_Body):
    """An encoded image."""

    image_b64: str = Field(description="Base64 (standard alphabet, padded) of a PNG or JPEG file.")


class ArrayInstance(_Body):
    """An image already decoded and scaled."""

    array: list[Any] = Field(
        description="Nested list in the model's input shape [C, H, W] (see `/v1/models`), values in [0, 1]."
    )


class TextInstance(_Body):
    """A text, for text models."""

    text: str = Field(
        description="The text to classify (not empty, at most `max_text_chars` characters). Tokenized with the "
        "model's tokenizer; tokens beyond the model's `max_length` (see `/v1/models`) are truncated, not refused."
    )


def _instance_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        present = [kind for kind in INSTANCE_KINDS if kind in value]
        return present[0] if len(present) == 1 else None
    classes: tuple[type[BaseModel], ...] = (ImageInstance, ArrayInstance, TextInstance)
    for kind, cls in zip(INSTANCE_KINDS, classes, strict=True):
        if isinstance(value, cls):
            return kind
    return None


Instance = Annotated[
    Annotated[ImageInstance, Tag("image_b64")]
    | Annotated[ArrayInstance, Tag("array")]
    | Annotated[TextInstance, Tag("text")],
    Discriminator(
        _instance_kind,
        custom_error_type="instance_kind",
        custom_error_message="each instance needs exactly one of image_b64, array or text",
    ),
]


class PredictRequest(_Body):
    """`POST /v1/models/{name}/predict` as JSON. The same fields can be sent as multipart/form-data: one or more
    image files (any field name), plus optional `top_k` and `threshold` form fields."""

    instances: list[Instance] = Field(min_length=1, description="The inputs; at most `max_instances` of them.")
    top_k: int = Field(
        default=3, ge=1, le=1000, description="Classes listed per prediction (capped at the class count)."
    )
    threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Per-request reject threshold in anomaly-score units; only if the server allows overrides.",
    )


class MultipartOptions(_Body):
    """The non-file fields of a multipart/form-data predict request."""

    top_k: int = Field(default=3, ge=1, le=1000)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)


class TopClass(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    """The gate's verdict on one instance."""

    label: str = Field(description="Class name of the most probable class.")
    label_index: int
    confidence: float = Field(description="0-1 rescaled, temperature-scaled max probability.")
    anomaly_score: float = Field(description="1 / (1 + kl_uniform), in (0, 1]; higher is more anomalous.")
    kl_uniform: float = Field(description="KL[U || p] of the T = 1 posterior; near 0 for a flat posterior.")
    reject: bool = Field(description="anomaly_score >= threshold.")
    top_k: list[TopClass] = Field(description="Most probable classes, highest first.")


class PredictResponse(BaseModel):
    model: str
    version: str
    threshold: float
    predictions: list[Prediction]


class ModelSummary(BaseModel):
    """A served model version, as listed by `GET /v1/models`."""

    name: str
    version: str
    task: str
    labels: list[str]
    threshold: float
    acceptance_target: float | None
    temperature: float
    provider: str = Field(description="onnxruntime execution provider actually in use.")
    input: dict[str, Any]
    evaluation: dict[str, Any]
    created_at: str


class ModelList(BaseModel):
    models: list[ModelSummary]


class ErrorBody(BaseModel):
    """Every error response, on every API."""

    error: str
