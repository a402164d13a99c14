"""What the Open Inference Protocol (KServe V2) face says about the server and its models: server metadata (with
the extensions it implements), model metadata, Triton's model configuration and statistics extensions.

Everything is derived from the served version's card, the settings and the version's in-memory statistics; nothing
is configured twice. The configuration follows Triton's `model_config` JSON (`GET /v2/models/{name}/config`): with
`max_batch_size` > 0, `dims` leave out the batch dimension; per-instance scalars are `dims [1]` reshaped to `[]`;
the gate's own figures (threshold, labels, temperature, acceptance target, task) are `parameters`, each a
`{"string_value": ...}` as Triton writes model parameters.
"""

from __future__ import annotations

import json
from typing import Any

from service.card import Card, TextInputSpec
from service.registry import ModelVersion
from service.schemas.v2 import ModelMetadata, TensorMetadata
from service.settings import Settings

PLATFORM = "onnxruntime_onnx"
OUTPUT_DATATYPES = {
    "label_index": "INT64",
    "confidence": "FP32",
    "anomaly_score": "FP32",
    "kl_uniform": "FP32",
    "reject": "BOOL",
    "probs": "FP32",
}
TEXT_INPUT = "text"
"""The V2 input of a text model (the graph's own inputs are the token ids and mask the service makes)."""
SERVER_EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "statistics"]
"""Triton's names for the protocol extensions this server implements (`GET /v2`): binary tensor data on inputs
and outputs, top-k `classification` on the `probs` output, `GET .../config` and `GET .../stats`."""
TRITON_DATATYPES = {"FP32": "TYPE_FP32", "INT64": "TYPE_INT64", "BOOL": "TYPE_BOOL", "BYTES": "TYPE_STRING"}


def input_metadata(card: Card) -> TensorMetadata:
    """The one V2 input: BYTES texts for a text model; for an image model FP32 [N, C, H, W], whose `parameters`
    say that the same input also takes BYTES [N] of encoded images (metadata has one datatype per input)."""
    if isinstance(card.input, TextInputSpec):
        return TensorMetadata(
            name=TEXT_INPUT,
            datatype="BYTES",
            shape=[-1],
            parameters={
                "content_type": "str",
                "description": "UTF-8 texts, one per instance; longer than max_length tokens is truncated",
                "max_length": card.input.max_length,
                "truncation": card.input.truncation,
            },
        )
    c, h, w = card.input.shape
    return TensorMetadata(
        name=card.input.name,
        datatype="FP32",
        shape=[-1, c, h, w],
        parameters={
            "datatypes": ["FP32", "BYTES"],
            "bytes_shape": [-1],
            "description": f"FP32 [N, {c}, {h}, {w}] in [0, 1], or BYTES [N] (or [N, 1]) of PNG/JPEG images "
            "(base64 strings in JSON, raw bytes with the binary tensor extension), resized to the model's size",
        },
    )


def model_metadata(model: ModelVersion) -> ModelMetadata:
    return ModelMetadata(
        name=model.name,
        versions=[model.version],
        platform=PLATFORM,
        inputs=[input_metadata(model.card)],
        outputs=[
            TensorMetadata(
                name=name, datatype=datatype, shape=[-1, model.card.num_classes] if name == "probs" else [-1]
            )
            for name, datatype in OUTPUT_DATATYPES.items()
        ],
    )


def model_config(model: ModelVersion, settings: Settings) -> dict[str, Any]:
    """Triton's model configuration of the served version, as `GET /v2/models/{name}/config` returns it."""
    card = model.card
    scalar = {"dims": [1], "reshape": {"shape": []}}
    if isinstance(card.input, TextInputSpec):
        model_input: dict[str, Any] = {"name": TEXT_INPUT, "data_type": "TYPE_STRING", "format": "FORMAT_NONE"}
        model_input |= scalar
    else:
        model_input = {
            "name": card.input.name,
            "data_type": "TYPE_FP32",
            "format": "FORMAT_NCHW",
            "dims": list(card.input.shape),
        }
    outputs = [
        {"name": name, "data_type": TRITON_DATATYPES[datatype], "label_filename": ""}
        | ({"dims": [card.num_classes]} if name == "probs" else scalar)
        for name, datatype in OUTPUT_DATATYPES.items()
    ]
    gate = {
        "task": card.task,
        "threshold": card.threshold.value,
        "acceptance_target": card.threshold.acceptance_target,
        "temperature": card.temperature,
        "labels": json.dumps(card.labels),
        "reject_rule": "anomaly_score >= threshold",
    }
    on_gpu = model.provider != "CPUExecutionProvider"
    return {
        "name": model.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": settings.max_batch_size,
        "input": [model_input],
        "output": outputs,
        "dynamic_batching": {"max_queue_delay_microseconds": round(settings.max_delay_ms * 1000)},
        "instance_group": [{"name": model.name, "kind": "KIND_GPU" if on_gpu else "KIND_CPU", "count": 1}],
        "parameters": {
            key: {"string_value": value if isinstance(value, str) else json.dumps(value)} for key, value in gate.items()
        },
        "default_model_filename": "model.onnx",
    }


def model_statistics(models: list[ModelVersion]) -> dict[str, Any]:
    """`{"model_stats": [...]}` for the given served versions, as `GET /v2/models[/{name}]/stats` returns it."""
    return {"model_stats": [model.statistics.as_json(model.name, model.version) for model in models]}
