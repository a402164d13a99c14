"""Bodies of the Open Inference Protocol (KServe V2) REST API, exactly as the specification shapes them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    """A tensor in model metadata; `parameters` (omitted when empty) says what a text model's BYTES input holds."""

    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


# The parameters this server implements, by where they appear (any other name is a 400, never ignored); the
# schema lists them and forbids others, so a client generated from it cannot send one the server refuses.
REQUEST_PARAMETERS = {
    "threshold": "the reject threshold for this request (403 unless the server allows overrides)",
    "binary_data_output": "true: every output not saying otherwise comes in Triton's binary format",
}
INPUT_PARAMETERS = {"binary_data_size": "the binary tensor data extension"}
OUTPUT_PARAMETERS = {
    "classification": "top-k labels of probs as BYTES 'score:index:label'",
    "binary_data": "true: this output comes in Triton's binary format (false: JSON)",
}
BOOLEAN_PARAMETERS = {"binary_data_output", "binary_data"}
"""Parameters that must be JSON booleans (anything else is a 400); the schema says so."""


def known_parameters(known: dict[str, str]) -> dict[str, Any]:
    """The JSON schema of a `parameters` object that may hold only `known` names."""
    properties: dict[str, Any] = {
        name: {"description": text} | ({"type": "boolean"} if name in BOOLEAN_PARAMETERS else {})
        for name, text in known.items()
    }
    return {"properties": properties, "additionalProperties": False}


class RequestInput(BaseModel):
    """One input tensor. Image models: FP32 [N, C, H, W] (flat or nested data) or BYTES [N] (base64 PNG/JPEG
    strings in JSON, raw bytes with the binary tensor extension). Text models: BYTES [N] named `text`, UTF-8 texts
    (JSON strings, or raw UTF-8 with the binary extension), truncated to the model's `max_length` tokens."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(default=None, json_schema_extra=known_parameters(INPUT_PARAMETERS))
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(default=None, json_schema_extra=known_parameters(OUTPUT_PARAMETERS))


class InferenceRequest(BaseModel):
    """`parameters.threshold` overrides the reject threshold, if the server allows it."""

    id: str | None = None
    parameters: dict[str, Any] | None = Field(default=None, json_schema_extra=known_parameters(REQUEST_PARAMETERS))
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class Liveness(BaseModel):
    live: bool


class Readiness(BaseModel):
    ready: bool


class ModelReadiness(BaseModel):
    name: str
    ready: bool
