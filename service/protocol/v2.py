"""The Open Inference Protocol (KServe V2) face: tensor decoding, output encoding, metadata.

Image models take one tensor named as the card's input (`input`), either FP32 with shape [N, C, H, W] (data flat
in row-major order, or nested), or BYTES with shape [N] (or [N, 1]) holding encoded PNG/JPEG images: base64
strings in JSON (JSON strings cannot carry raw bytes), raw bytes with Triton's binary tensor extension
(`Inference-Header-Content-Length` header, `parameters.binary_data_size` per input), which tritonclient uses by
default. Text models take one BYTES tensor named `text`, shape [N] (or [N, 1]), of UTF-8 texts: JSON strings, or
raw UTF-8 bytes with the binary extension; texts longer than the card's `max_length` tokens are truncated
(service/codecs/text.py). A request body or text that is not valid UTF-8 is a 400. Outputs are JSON, or binary
when the request asks (service/protocol/v2_outputs.py).
"""

from __future__ import annotations

import json
import math
import struct
from functools import partial
from typing import Any

import numpy as np
from pydantic import ValidationError

from service.batching import ModelInputs
from service.capture import RawInput, RawInputs
from service.card import Card, ImageInputSpec, TextInputSpec
from service.codecs import CodecError, TextEncoder, check_values, decode_base64, decode_image, numeric_array
from service.codecs.image import small_pngs
from service.codecs.text import IndexedCodecError
from service.errors import BadRequestError, InvalidInputError, ServiceError, format_validation_errors
from service.inference import Decoder
from service.limits import pixel_budget
from service.protocol import fast_parse
from service.protocol.v2_metadata import OUTPUT_DATATYPES, TEXT_INPUT
from service.schemas.v2 import (
    INPUT_PARAMETERS,
    OUTPUT_PARAMETERS,
    REQUEST_PARAMETERS,
    InferenceRequest,
)
from service.settings import Settings

BINARY_HEADER = "inference-header-content-length"
UNSUPPORTED_PARAMETERS = {
    "sequence_id": "sequence batching (the gate is stateless)",
    "sequence_start": "sequence batching (the gate is stateless)",
    "sequence_end": "sequence batching (the gate is stateless)",
    "priority": "request priorities (one queue per model)",
    "timeout": "request timeouts",
    "headers": "forwarded headers",
    "shared_memory_region": "the shared memory extensions",
    "shared_memory_byte_size": "the shared memory extensions",
    "shared_memory_offset": "the shared memory extensions",
}
"""Parameters Triton clients send for features this server does not have: each is a 400 naming the parameter
and the feature, never silently ignored (tritonclient sends `sequence_*`, `priority` and `timeout` when set)."""


def parse_infer_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, list[bytes | None]]:
    """The JSON request, and each input's binary payload (None for inputs whose data are in the JSON)."""
    if header_length is None:
        return _parse_json_part(body), []
    try:
        json_length = int(header_length)
    except ValueError as e:
        raise InvalidInputError(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from e
    if not 0 < json_length <= len(body):
        raise InvalidInputError(f"Inference-Header-Content-Length {json_length} does not fit a {len(body)}-byte body")
    request = _parse_json_part(body[:json_length])
    binaries: list[bytes | None] = []
    offset = json_length
    for tensor in request.inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            binaries.append(None)
            continue
        if not isinstance(size, int) or size < 0 or offset + size > len(body):
            raise InvalidInputError(f"input '{tensor.name}': binary_data_size {size!r} does not fit the body")
        binaries.append(body[offset : offset + size])
        offset += size
    if offset != len(body):
        raise InvalidInputError(f"{len(body) - offset} bytes of binary data belong to no input")
    return request, binaries


def _parse_json_part(body: bytes) -> InferenceRequest:
    """The JSON request. A body that is not JSON, not UTF-8, or holds a string that is not (a lone surrogate escape
    such as \\ud800, which the JSON parser refuses) is a 400, as Triton answers; valid JSON that is not a valid
    request (a missing field, a wrong type) is a 422 naming the fields, as on the native API. A plainly valid
    request skips pydantic (service/protocol/fast_parse.py)."""
    plain = fast_parse.parse_infer_request(body)
    if plain is not None:
        return plain
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequestError(f"request body is not valid UTF-8 ({e.reason} at byte {e.start})") from e
    try:
        return InferenceRequest.model_validate_json(body)
    except ValidationError as e:
        if _has_unencodable_string(text):
            raise BadRequestError(
                "request body holds a string that is not valid UTF-8 (a lone surrogate escape)"
            ) from None
        message = format_validation_errors(e.errors(), ())
        if any(error["type"] == "json_invalid" for error in e.errors()):
            raise BadRequestError(message) from None  # not JSON at all: 400, as Triton answers
        raise InvalidInputError(message) from e


def _has_unencodable_string(text: str) -> bool:
    """Whether Python's JSON parser (which, unlike pydantic's, keeps lone surrogates) finds one (error path only)."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
    return False


def requested_outputs(request: InferenceRequest) -> list[str]:
    if not request.outputs:
        return list(OUTPUT_DATATYPES)
    names = [output.name for output in request.outputs]
    unknown = [name for name in names if name not in OUTPUT_DATATYPES]
    if unknown:
        raise InvalidInputError(f"unknown output(s) {unknown}; outputs are {list(OUTPUT_DATATYPES)}")
    return names


def threshold_parameter(request: InferenceRequest) -> float | None:
    value = (request.parameters or {}).get("threshold")
    if value is None:
        return None
    valid = not isinstance(value, bool) and isinstance(value, int | float) and 0 <= value <= 1  # no float(huge int)
    if not valid or not math.isfinite(value):
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:40]}..."
        raise InvalidInputError(f"parameters.threshold must be a number in [0, 1], got {shown}")
    return float(value)


def check_parameters(request: InferenceRequest) -> None:
    """A 400 naming any request, input or output parameter this server does not implement (never ignored)."""
    _check_parameters("parameters", request.parameters, REQUEST_PARAMETERS)
    for tensor in request.inputs:
        _check_parameters(f"input '{tensor.name}' parameters", tensor.parameters, INPUT_PARAMETERS)
    for output in request.outputs or []:
        _check_parameters(f"output '{output.name}' parameters", output.parameters, OUTPUT_PARAMETERS)


def _check_parameters(where: str, parameters: dict[str, Any] | None, known: dict[str, str]) -> None:
    for key in parameters or {}:
        if key in known:
            continue
        feature = UNSUPPORTED_PARAMETERS.get(key)
        if feature is not None:
            raise BadRequestError(f"{where}: '{key}' is not supported: this server does not implement {feature}")
        shown = key if len(key) <= 40 else f"{key[:40]}..."
        raise BadRequestError(f"{where}: unknown parameter '{shown}' (this server takes {', '.join(known)})")


def classification_counts(request: InferenceRequest) -> dict[str, int]:
    """Output name -> k for outputs asking for Triton's `classification` (top-k of `probs`); 0 means none, as in
    Triton; anything but a non-negative integer, or classification of another output, is a 400."""
    counts: dict[str, int] = {}
    for output in request.outputs or []:
        value = (output.parameters or {}).get("classification")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:40]}..."
            raise BadRequestError(f"output '{output.name}': classification must be a non-negative integer, got {shown}")
        if output.name != "probs":
            raise BadRequestError(
                f"output '{output.name}': classification applies to the class probabilities, output 'probs', only"
            )
        if value > 0:
            counts[output.name] = value
    return counts


def make_decoder(request: InferenceRequest, binaries: list[bytes | None], settings: Settings) -> Decoder:
    return partial(_decode_inputs, request, binaries, settings)


def _decode_inputs(
    request: InferenceRequest,
    binaries: list[bytes | None],
    settings: Settings,
    card: Card,
    text_encoder: TextEncoder | None,
    raw: RawInputs | None = None,
) -> ModelInputs:
    """The model's inputs; each instance's raw input appended to `raw` when given (service/inference.py, `Decoder`)."""
    if isinstance(card.input, TextInputSpec):
        if text_encoder is None:
            raise ServiceError(f"model '{card.name}' is a text model without a loaded tokenizer")
        return _decode_texts(request, binaries, settings, card, text_encoder, raw)
    spec = card.input
    name = spec.name
    expected = f"one input named '{name}' (FP32 [N, {', '.join(map(str, spec.shape))}] or BYTES [N])"
    if len(request.inputs) != 1 or request.inputs[0].name != name:
        given = [tensor.name for tensor in request.inputs]
        raise InvalidInputError(f"model '{card.name}' takes {expected}, got inputs {given}")
    tensor = request.inputs[0]
    binary = binaries[0] if binaries else None
    if tensor.datatype == "FP32":
        return _decode_fp32(tensor.shape, tensor.data, binary, spec, settings, raw)
    if tensor.datatype == "BYTES":
        return _decode_bytes(tensor.shape, tensor.data, binary, spec, settings, raw)
    raise InvalidInputError(f"input '{name}': datatype {tensor.datatype} is not supported; use FP32 or BYTES")


def decode_inline(request: InferenceRequest, binaries: list[bytes | None], body_size: int, settings: Settings) -> bool:
    """Whether to decode on the event loop rather than in a decode thread (service/inference.py): one FP32 tensor in
    a body of at most `large_json_bytes` (parsed on the loop already; only checking and stacking are left), or one
    binary BYTES tensor of small PNGs (service/codecs/image.py, `INLINE_DECODE_PIXELS`)."""
    if body_size > settings.large_json_bytes or len(request.inputs) != 1:
        return False
    tensor, binary = request.inputs[0], binaries[0] if binaries else None
    if tensor.datatype == "FP32":
        return True
    if tensor.datatype != "BYTES" or binary is None:
        return False
    try:
        elements = _split_length_prefixed(tensor.name, binary)
    except InvalidInputError:
        return False  # the decoder reports it
    return bool(elements) and small_pngs(elements)


def _check_batch(name: str, count: int, settings: Settings) -> None:
    if count < 1:
        raise InvalidInputError(f"input '{name}': the batch is empty")
    if count > settings.max_instances:
        raise InvalidInputError(f"too many instances: {count} (limit {settings.max_instances})")


def _decode_fp32(
    shape: list[int],
    data: list[Any] | None,
    binary: bytes | None,
    spec: ImageInputSpec,
    settings: Settings,
    raw: RawInputs | None,
) -> np.ndarray:
    name = spec.name
    if len(shape) != 4 or tuple(shape[1:]) != spec.shape:
        raise InvalidInputError(f"input '{name}': shape {shape} must be [N, {', '.join(map(str, spec.shape))}]")
    _check_batch(name, shape[0], settings)
    count = math.prod(shape)
    if binary is not None:
        if len(binary) != 4 * count:
            raise InvalidInputError(f"input '{name}': shape {shape} needs {4 * count} bytes, got {len(binary)}")
        values = np.frombuffer(binary, dtype="<f4").astype(np.float64)
    else:
        if data is None:
            raise InvalidInputError(f"input '{name}': no data")
        try:
            values = numeric_array(data, "data must be a flat or rectangular nested list of numbers")
        except CodecError as e:
            raise InvalidInputError(f"input '{name}': {e}") from e
        if values.size != count:
            raise InvalidInputError(f"input '{name}': shape {shape} needs {count} values, data has {values.size}")
    batch = values.reshape(shape)
    checked = []
    for index in range(shape[0]):
        try:
            checked.append(check_values(batch[index], spec))
        except CodecError as e:
            raise InvalidInputError(f"input '{name}' instance {index}: {e}") from e
    if raw is not None:
        raw.extend(RawInput("array", array) for array in checked)
    return np.stack(checked)


def _decode_bytes(
    shape: list[int],
    data: list[Any] | None,
    binary: bytes | None,
    spec: ImageInputSpec,
    settings: Settings,
    raw: RawInputs | None,
) -> np.ndarray:
    name = spec.name
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise InvalidInputError(f"input '{name}': BYTES shape {shape} must be [N] or [N, 1]")
    _check_batch(name, shape[0], settings)
    if binary is not None:
        images = _split_length_prefixed(name, binary)
    else:
        if data is None:
            raise InvalidInputError(f"input '{name}': no data")
        flat = [item[0] if isinstance(item, list) and len(item) == 1 else item for item in data]
        if not all(isinstance(item, str) for item in flat):
            raise InvalidInputError(f"input '{name}': BYTES data in JSON must be base64 strings")
        images = flat
    if len(images) != shape[0]:
        raise InvalidInputError(f"input '{name}': shape {shape} needs {shape[0]} elements, data has {len(images)}")
    arrays = []
    budget = pixel_budget(spec, settings)
    for index, item in enumerate(images):
        try:
            encoded = decode_base64(item) if isinstance(item, str) else item
            arrays.append(decode_image(encoded, spec, budget))
        except CodecError as e:
            raise InvalidInputError(f"input '{name}' instance {index}: {e}") from e
        if raw is not None:
            raw.append(RawInput("image", encoded))
    return np.stack(arrays)


def _decode_texts(
    request: InferenceRequest,
    binaries: list[bytes | None],
    settings: Settings,
    card: Card,
    encoder: TextEncoder,
    raw: RawInputs | None,
) -> ModelInputs:
    if len(request.inputs) != 1 or request.inputs[0].name != TEXT_INPUT:
        given = [tensor.name for tensor in request.inputs]
        raise InvalidInputError(
            f"model '{card.name}' takes one input named '{TEXT_INPUT}' (BYTES [N] of UTF-8 texts), got inputs {given}"
        )
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidInputError(
            f"input '{TEXT_INPUT}': datatype {tensor.datatype} is not supported by text model '{card.name}'; "
            "use BYTES (UTF-8 texts)"
        )
    shape = tensor.shape
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise InvalidInputError(f"input '{TEXT_INPUT}': BYTES shape {shape} must be [N] or [N, 1]")
    _check_batch(TEXT_INPUT, shape[0], settings)
    binary = binaries[0] if binaries else None
    texts: list[str] = []
    if binary is not None:
        for index, element in enumerate(_split_length_prefixed(TEXT_INPUT, binary)):
            try:
                texts.append(element.decode("utf-8"))
            except UnicodeDecodeError as e:
                message = f"input '{TEXT_INPUT}' instance {index}: not valid UTF-8 ({e.reason} at byte {e.start})"
                raise BadRequestError(message) from e
    else:
        if tensor.data is None:
            raise InvalidInputError(f"input '{TEXT_INPUT}': no data")
        flat = [item[0] if isinstance(item, list) and len(item) == 1 else item for item in tensor.data]
        if not all(isinstance(item, str) for item in flat):
            raise InvalidInputError(f"input '{TEXT_INPUT}': BYTES data in JSON must be strings (the texts)")
        texts = flat
    if len(texts) != shape[0]:
        raise InvalidInputError(f"input '{TEXT_INPUT}': shape {shape} needs {shape[0]} elements, data has {len(texts)}")
    try:
        encoded = encoder.encode(texts, settings.max_text_chars)
    except IndexedCodecError as e:
        raise InvalidInputError(f"input '{TEXT_INPUT}' instance {e.index}: {e}") from e
    if raw is not None:
        raw.extend(RawInput("text", text) for text in texts)
    return encoded


def _split_length_prefixed(name: str, binary: bytes) -> list[bytes]:
    """Triton's binary BYTES layout: each element is a 4-byte little-endian length, then that many bytes."""
    elements, offset = [], 0
    while offset < len(binary):
        if offset + 4 > len(binary):
            raise InvalidInputError(f"input '{name}': truncated binary BYTES element")
        (size,) = struct.unpack_from("<I", binary, offset)
        offset += 4
        if offset + size > len(binary):
            raise InvalidInputError(f"input '{name}': truncated binary BYTES element")
        elements.append(binary[offset : offset + size])
        offset += size
    return elements
