"""Request bodies parsed without a pydantic pass on the hot path: orjson, then checks by hand.

Each parser accepts only the plain, strict form of a valid body (every field of its exact JSON type, no coercion
needed) and builds the same pydantic objects the routes use, with `model_construct` (no second validation). For
anything else (invalid JSON, a wrong or coercible type, an unknown field, a value out of range) it returns None and
the caller validates with pydantic as before, so every error message, and every lax conversion pydantic makes (a
shape written "3"), stays exactly what it was: these parsers decide only "plainly valid, or let pydantic say".

One difference is left, in an error's wording only: an integer literal of 20 to 308 digits among tensor or array
values reaches the codec as a float (orjson's reading) rather than an int, so its 422 says the values are out of
range instead of "integers too large"; longer literals are refused by orjson and take pydantic's path.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from service.schemas.native import ArrayInstance, ImageInstance, Instance, PredictRequest, TextInstance
from service.schemas.v2 import InferenceRequest, RequestInput, RequestOutput

_NATIVE_FIELDS = frozenset(("instances", "top_k", "threshold"))
_BIG = 2.0**63
_TOP_K = PredictRequest.model_fields["top_k"].default


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:  # not JSON, not UTF-8, a lone surrogate: pydantic's path says which
        return None


def _is_int(value: Any) -> bool:
    return type(value) is int  # not bool, not a float with no fraction: those go to pydantic


def _optional_dict(value: Any) -> bool:
    """None, or a JSON object without floats of 2**63 or more: orjson reads an integer literal too large for 64 bits
    as a float, pydantic as an int, and a parameter's error message shows the value as it was written."""
    if value is None:
        return True
    return type(value) is dict and not any(type(item) is float and abs(item) >= _BIG for item in value.values())


def parse_infer_request(body: bytes) -> InferenceRequest | None:
    """A V2 `InferenceRequest` when `body` is a plainly valid one, else None (see the module docstring)."""
    raw = _loads(body)
    if type(raw) is not dict:
        return None
    request_id, parameters = raw.get("id"), raw.get("parameters")
    inputs, outputs = raw.get("inputs"), raw.get("outputs")
    if not (request_id is None or type(request_id) is str) or not _optional_dict(parameters):
        return None
    if type(inputs) is not list or not inputs or not (outputs is None or type(outputs) is list):
        return None
    tensors = []
    for tensor in inputs:
        if type(tensor) is not dict:
            return None
        name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
        data, tensor_parameters = tensor.get("data"), tensor.get("parameters")
        if type(name) is not str or type(datatype) is not str or type(shape) is not list:
            return None
        if not all(_is_int(size) for size in shape) or not _optional_dict(tensor_parameters):
            return None
        if not (data is None or type(data) is list):
            return None
        tensors.append(
            RequestInput.model_construct(
                name=name, shape=shape, datatype=datatype, parameters=tensor_parameters, data=data
            )
        )
    requested = None
    if outputs is not None:
        requested = []
        for output in outputs:
            if type(output) is not dict or type(output.get("name")) is not str:
                return None
            if not _optional_dict(output.get("parameters")):
                return None
            requested.append(RequestOutput.model_construct(name=output["name"], parameters=output.get("parameters")))
    return InferenceRequest.model_construct(id=request_id, parameters=parameters, inputs=tensors, outputs=requested)


def parse_predict_request(body: bytes) -> PredictRequest | None:
    """A native `PredictRequest` when `body` is a plainly valid one, else None (see the module docstring)."""
    raw = _loads(body)
    if type(raw) is not dict or not raw.keys() <= _NATIVE_FIELDS:
        return None
    instances, top_k, threshold = raw.get("instances"), raw.get("top_k", _TOP_K), raw.get("threshold")
    if type(instances) is not list or not instances or not _is_int(top_k) or not 1 <= top_k <= 1000:
        return None
    if threshold is not None:
        if type(threshold) not in (int, float) or not math.isfinite(threshold) or not 0 <= threshold <= 1:
            return None
        threshold = float(threshold)
    parsed: list[Instance] = []
    for instance in instances:
        if type(instance) is not dict or len(instance) != 1:
            return None
        ((kind, value),) = instance.items()
        if kind == "array" and type(value) is list:
            parsed.append(ArrayInstance.model_construct(array=value))
        elif kind == "image_b64" and type(value) is str:
            parsed.append(ImageInstance.model_construct(image_b64=value))
        elif kind == "text" and type(value) is str:
            parsed.append(TextInstance.model_construct(text=value))
        else:
            return None
    return PredictRequest.model_construct(instances=parsed, top_k=top_k, threshold=threshold)
