"""The native API's request parsing (JSON or multipart/form-data) and response shaping."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from service.card import Card
from service.codecs import CodecError, check_text, decode_array, decode_base64, decode_image
from service.errors import (
    BadRequestError,
    InvalidInputError,
    UnsupportedMediaTypeError,
    format_validation_errors,
    instance_error,
)
from service.inference import Decoder, GateResult
from service.protocol.body import media_type, parse_json
from service.schemas.native import (
    ArrayInstance,
    ImageInstance,
    Instance,
    MultipartOptions,
    Prediction,
    PredictRequest,
    PredictResponse,
    TopClass,
)
from service.settings import Settings


@dataclass(frozen=True)
class NativeRequest:
    """A parsed predict request: how to decode its instances, and its options."""

    decode: Decoder
    top_k: int
    threshold: float | None


def _check_count(count: int, settings: Settings) -> None:
    if count > settings.max_instances:
        raise InvalidInputError(f"too many instances: {count} (limit {settings.max_instances})")


async def parse_predict_request(request: Request, settings: Settings) -> NativeRequest:
    """JSON (`PredictRequest`) or multipart/form-data (image files + optional top_k/threshold fields)."""
    kind = media_type(request)
    if kind == "application/json":
        parsed = parse_json(PredictRequest, await request.body())
        _check_count(len(parsed.instances), settings)
        decode = partial(decode_instances, parsed.instances, settings=settings)
        return NativeRequest(decode=decode, top_k=parsed.top_k, threshold=parsed.threshold)
    if kind == "multipart/form-data":
        return await _parse_multipart(request, settings)
    raise UnsupportedMediaTypeError(
        f"unsupported content type '{kind or '(none)'}': send application/json or multipart/form-data"
    )


async def _parse_multipart(request: Request, settings: Settings) -> NativeRequest:
    files: list[bytes] = []
    fields: dict[str, str] = {}
    try:
        async with request.form(max_files=settings.max_instances + 1, max_fields=8) as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    files.append(await value.read())
                else:
                    fields[key] = value
    except StarletteHTTPException as e:  # starlette's report of a malformed or over-limit multipart body
        raise BadRequestError(f"malformed multipart/form-data body: {e.detail}") from e
    if not files:
        raise InvalidInputError("multipart/form-data body has no image files")
    _check_count(len(files), settings)
    try:
        options = MultipartOptions.model_validate(fields)
    except ValidationError as e:
        raise InvalidInputError(format_validation_errors(e.errors(), ())) from e
    return NativeRequest(
        decode=partial(decode_files, files, settings=settings), top_k=options.top_k, threshold=options.threshold
    )


def decode_instances(instances: list[Instance], card: Card, *, settings: Settings) -> np.ndarray:
    arrays = []
    for index, instance in enumerate(instances):
        try:
            if isinstance(instance, ImageInstance):
                data = decode_base64(instance.image_b64)
                arrays.append(decode_image(data, card.input, settings.max_image_pixels))
            elif isinstance(instance, ArrayInstance):
                arrays.append(decode_array(instance.array, card.input))
            else:
                check_text(instance.text, settings.max_text_chars, card.name)
        except CodecError as e:
            raise instance_error(index, str(e)) from e
    return np.stack(arrays)


def decode_files(files: list[bytes], card: Card, *, settings: Settings) -> np.ndarray:
    arrays = []
    for index, data in enumerate(files):
        try:
            arrays.append(decode_image(data, card.input, settings.max_image_pixels))
        except CodecError as e:
            raise instance_error(index, str(e)) from e
    return np.stack(arrays)


def predict_response(result: GateResult, top_k: int) -> PredictResponse:
    k = min(top_k, len(result.labels))
    order = np.argsort(-result.probs, axis=1, kind="stable")[:, :k]
    predictions = [
        Prediction(
            label=result.labels[label_index],
            label_index=label_index,
            confidence=confidence,
            anomaly_score=anomaly_score,
            kl_uniform=kl,
            reject=reject,
            top_k=[TopClass(label=result.labels[j], probability=float(probs[j])) for j in top],
        )
        for label_index, confidence, anomaly_score, kl, reject, probs, top in zip(
            result.label_index.tolist(),
            result.confidence.tolist(),
            result.anomaly_score.tolist(),
            result.kl_uniform.tolist(),
            result.reject.tolist(),
            result.probs,
            order.tolist(),
            strict=True,
        )
    ]
    return PredictResponse(
        model=result.model, version=result.version, threshold=result.threshold, predictions=predictions
    )
