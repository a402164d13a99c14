"""The Open Inference Protocol (KServe V2) reply: outputs in JSON, or in Triton's binary tensor data extension.

An output is binary when its `parameters.binary_data` is true, or, without that parameter, when the request's
`parameters.binary_data_output` is (tritonclient sends the first for each `InferRequestedOutput`, default true,
and the second when it asks for no particular outputs). A reply with any binary output is the JSON header, then
each binary output's raw bytes in the header's output order; the `Inference-Header-Content-Length` response header
gives the JSON header's length, and each binary output's `parameters.binary_data_size` its byte count. Numbers are
little-endian (FP32 `<f4`, INT64 `<i8`, BOOL one byte 0/1); BYTES (the `classification` output) are Triton's
length-prefixed elements: a 4-byte little-endian length, then that many UTF-8 bytes. A reply without binary
outputs is plain JSON, as before.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

from service.errors import BadRequestError
from service.inference import GateResult
from service.protocol.v2_metadata import OUTPUT_DATATYPES

LITTLE_ENDIAN = {"FP32": "<f4", "INT64": "<i8", "BOOL": "|b1"}
"""The wire dtype of each numeric output datatype in binary replies."""


def binary_flags(request: Any, outputs: list[str]) -> list[bool]:
    """Per output in `outputs` (the reply's order), whether it goes in binary: the output's own `binary_data`, else
    the request's `binary_data_output`, else JSON. Either parameter must be a boolean (a 400 otherwise)."""
    default = _flag("parameters", "binary_data_output", (request.parameters or {}).get("binary_data_output"), False)
    asked = {output.name: output.parameters or {} for output in request.outputs or []}
    return [
        _flag(f"output '{name}'", "binary_data", asked.get(name, {}).get("binary_data"), default) for name in outputs
    ]


def _flag(where: str, key: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:40]}..."
        raise BadRequestError(f"{where}: {key} must be a boolean, got {shown}")
    return value


def infer_response(
    result: GateResult,
    request_id: str | None,
    outputs: list[str],
    classifications: dict[str, int] | None = None,
    binary: list[bool] | None = None,
) -> Response:
    """The reply to an inference request: JSON, or the JSON header and the binary outputs when any is binary."""
    n = int(result.label_index.shape[0])
    values: dict[str, np.ndarray] = {
        "label_index": result.label_index,
        "confidence": result.confidence,
        "anomaly_score": result.anomaly_score,
        "kl_uniform": result.kl_uniform,
        "reject": result.reject,
        "probs": result.probs,
    }
    classifications = classifications or {}
    binary = binary or [False] * len(outputs)
    tensors: list[dict[str, Any]] = []
    payloads: list[bytes] = []
    for name, as_binary in zip(outputs, binary, strict=True):
        if name in classifications:
            top = top_k_classes(result.probs, result.labels, classifications[name])
            k = len(top[0]) if top else 0
            items = [item for row in top for item in row]
            tensor: dict[str, Any] = {"name": name, "shape": [n, k], "datatype": "BYTES"}
            payload = length_prefixed(items) if as_binary else None
            data: Any = items
        else:
            datatype = OUTPUT_DATATYPES[name]
            array = values[name]
            tensor = {
                "name": name,
                "shape": [n, result.probs.shape[1]] if name == "probs" else [n],
                "datatype": datatype,
            }
            payload = np.ascontiguousarray(array, dtype=LITTLE_ENDIAN[datatype]).tobytes() if as_binary else None
            data = None if as_binary else array.ravel().tolist()
        if payload is not None:
            tensor["parameters"] = {"binary_data_size": len(payload)}
            payloads.append(payload)
        else:
            tensor["data"] = data
        tensors.append(tensor)
    body: dict[str, Any] = {"model_name": result.model, "model_version": result.version}
    if request_id is not None:
        body["id"] = request_id
    body["parameters"] = {"threshold": result.threshold}
    body["outputs"] = tensors
    header = orjson.dumps(body)
    if not payloads:
        return Response(header, media_type="application/json")
    return Response(
        b"".join([header, *payloads]),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


def length_prefixed(items: list[str]) -> bytes:
    """Triton's binary BYTES layout: per element a 4-byte little-endian length, then its UTF-8 bytes."""
    parts = []
    for item in items:
        encoded = item.encode("utf-8")
        parts.append(struct.pack("<I", len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def top_k_classes(probs: np.ndarray, labels: list[str], k: int) -> list[list[str]]:
    """Triton's classification output: per instance, the `k` most probable classes (at most all of them), most
    probable first (ties: lower index first), each `"score:index:label"` with the score as C's `%f` prints it."""
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        [f"{row[i]:f}:{i}:{labels[i]}" for i in indices.tolist()] for row, indices in zip(probs, order, strict=True)
    ]
