"""The native API's request parsing (JSON, multipart/form-data, or a body that is one image) and response shaping.

Image models take `image_b64` and `array` instances (and multipart image files); text models take `text`
instances. One request holds one kind: texts mixed with images are refused before the model is asked, and a kind
the model does not take is a 422 naming the instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import orjson
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from service.batching import ModelInputs
from service.capture import RawInput, RawInputs
from service.card import Card, TextInputSpec
from service.codecs import CodecError, TextEncoder, decode_array, decode_base64, decode_image
from service.codecs.image import small_pngs
from service.codecs.text import INLINE_TEXT_CHARS, IndexedCodecError
from service.errors import (
    BadRequestError,
    InvalidInputError,
    ServiceError,
    UnsupportedMediaTypeError,
    format_validation_errors,
    instance_error,
)
from service.inference import Decoder, GateResult
from service.limits import WorkLimits, pixel_budget
from service.protocol import fast_parse
from service.protocol.body import media_type, parse_json, parse_off_loop
from service.schemas.native import (
    ArrayInstance,
    ImageInstance,
    Instance,
    MultipartOptions,
    PredictRequest,
    TextInstance,
)
from service.settings import Settings

RAW_IMAGE_TYPES = ("image/png", "image/jpeg", "application/octet-stream")
"""Content types of a body that is one encoded image (PNG or JPEG, whichever the declared type): no JSON, no
base64, no multipart to parse; the prediction uses the default options (top_k 3, the card's threshold)."""


@dataclass(frozen=True)
class NativeRequest:
    """A parsed predict request: how to decode its instances, and its options."""

    decode: Decoder
    top_k: int
    threshold: float | None
    inline: bool = False
    """Decode on the event loop (service/inference.py): a small JSON body of arrays only, parsed there already, or
    a small PNG as the whole body (service/codecs/image.py, `INLINE_DECODE_PIXELS`)."""


def _parse_json_body(body: bytes) -> PredictRequest:
    """A plainly valid body without a pydantic pass (service/protocol/fast_parse.py), else pydantic's verdict."""
    plain = fast_parse.parse_predict_request(body)
    return plain if plain is not None else parse_json(PredictRequest, body)


def _check_count(count: int, settings: Settings) -> None:
    if count > settings.max_instances:
        raise InvalidInputError(f"too many instances: {count} (limit {settings.max_instances})")


async def parse_predict_request(request: Request, settings: Settings, limits: WorkLimits) -> NativeRequest:
    """JSON (`PredictRequest`) or multipart/form-data (image files + optional top_k/threshold fields); a large
    JSON body is parsed in a decode thread."""
    kind = media_type(request)
    if kind == "application/json":
        body = await request.body()
        small = len(body) <= settings.large_json_bytes
        parsed = await parse_off_loop(len(body), settings.large_json_bytes, limits.decode, _parse_json_body, body)
        _check_count(len(parsed.instances), settings)
        decode = partial(decode_instances, parsed.instances, settings=settings)
        return NativeRequest(
            decode=decode, top_k=parsed.top_k, threshold=parsed.threshold, inline=small and _cheap(parsed.instances)
        )
    if kind == "multipart/form-data":
        return await _parse_multipart(request, settings)
    if kind in RAW_IMAGE_TYPES:
        body = await request.body()
        if not body:
            raise InvalidInputError(f"the {kind} body is empty: send one PNG or JPEG image")
        defaults = MultipartOptions()
        return NativeRequest(
            decode=partial(decode_raw_image, body, kind, settings=settings),
            top_k=defaults.top_k,
            threshold=defaults.threshold,
            inline=small_pngs([body]),
        )
    raise UnsupportedMediaTypeError(
        f"unsupported content type '{kind or '(none)'}': send application/json, multipart/form-data, or one image "
        f"as {', '.join(RAW_IMAGE_TYPES)}"
    )


def _cheap(instances: Sequence[Instance]) -> bool:
    """Whether decoding `instances` costs less than a decode thread hand-off: arrays only (numbers already parsed,
    only checked and stacked), or short texts only (`INLINE_TEXT_CHARS` in all)."""
    if all(isinstance(instance, ArrayInstance) for instance in instances):
        return True
    texts = [instance.text for instance in instances if isinstance(instance, TextInstance)]
    return len(texts) == len(instances) and sum(map(len, texts)) <= INLINE_TEXT_CHARS


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


def decode_instances(
    instances: list[Instance],
    card: Card,
    text_encoder: TextEncoder | None,
    raw: RawInputs | None = None,
    *,
    settings: Settings,
) -> ModelInputs:
    """Images and arrays -> float32 [N, C, H, W] for an image model; texts -> token ids for a text model; each
    instance's raw input appended to `raw` when given (service/inference.py, `Decoder`)."""
    _check_one_kind(instances)
    if isinstance(card.input, TextInputSpec):
        return _tokenize_instances(instances, card, text_encoder, settings, raw)
    arrays = []
    budget = pixel_budget(card.input, settings)
    for index, instance in enumerate(instances):
        try:
            if isinstance(instance, ImageInstance):
                data = decode_base64(instance.image_b64)
                arrays.append(decode_image(data, card.input, budget))
                if raw is not None:
                    raw.append(RawInput("image", data))
            elif isinstance(instance, ArrayInstance):
                arrays.append(decode_array(instance.array, card.input))
                if raw is not None:
                    raw.append(RawInput("array", arrays[-1]))
            else:
                raise CodecError(f"model '{card.name}' takes images; text instances need a text model")
        except CodecError as e:
            raise instance_error(index, str(e)) from e
    return np.stack(arrays)


def _check_one_kind(instances: list[Instance]) -> None:
    texts = [index for index, instance in enumerate(instances) if isinstance(instance, TextInstance)]
    if texts and len(texts) != len(instances):
        image = next(index for index, instance in enumerate(instances) if not isinstance(instance, TextInstance))
        raise InvalidInputError(
            f"instances mix text (instances[{texts[0]}]) and images (instances[{image}]); "
            "a request holds one kind of instance"
        )


def _tokenize_instances(
    instances: list[Instance], card: Card, text_encoder: TextEncoder | None, settings: Settings, raw: RawInputs | None
) -> ModelInputs:
    texts = []
    for index, instance in enumerate(instances):
        if not isinstance(instance, TextInstance):
            kind = "image_b64" if isinstance(instance, ImageInstance) else "array"
            raise instance_error(index, f"model '{card.name}' takes text; {kind} instances need an image model")
        texts.append(instance.text)
    if text_encoder is None:
        raise ServiceError(f"model '{card.name}' is a text model without a loaded tokenizer")
    try:
        encoded = text_encoder.encode(texts, settings.max_text_chars)
    except IndexedCodecError as e:
        raise instance_error(e.index, str(e)) from e
    if raw is not None:
        raw.extend(RawInput("text", text) for text in texts)
    return encoded


def decode_files(
    files: list[bytes],
    card: Card,
    text_encoder: TextEncoder | None,
    raw: RawInputs | None = None,
    *,
    settings: Settings,
) -> np.ndarray:
    """Multipart image files -> float32 [N, C, H, W]; a text model gets a 422 saying what to send instead."""
    if isinstance(card.input, TextInputSpec):
        raise InvalidInputError(
            f"model '{card.name}' takes text; multipart/form-data uploads are images: send JSON "
            '{"instances": [{"text": "..."}]}'
        )
    arrays = []
    budget = pixel_budget(card.input, settings)
    for index, data in enumerate(files):
        try:
            arrays.append(decode_image(data, card.input, budget))
        except CodecError as e:
            raise instance_error(index, str(e)) from e
    if raw is not None:
        raw.extend(RawInput("image", data) for data in files)
    return np.stack(arrays)


def decode_raw_image(
    body: bytes,
    kind: str,
    card: Card,
    text_encoder: TextEncoder | None,
    raw: RawInputs | None = None,
    *,
    settings: Settings,
) -> np.ndarray:
    """A body that is one PNG/JPEG image -> float32 [1, C, H, W]; a text model gets a 422 saying what to send."""
    if isinstance(card.input, TextInputSpec):
        raise InvalidInputError(
            f"model '{card.name}' takes text, not an image ({kind} body): send JSON "
            '{"instances": [{"text": "..."}]}'
        )
    try:
        array = decode_image(body, card.input, pixel_budget(card.input, settings))
    except CodecError as e:
        raise InvalidInputError(f"{kind} body: {e}") from e
    if raw is not None:
        raw.append(RawInput("image", body))
    return array[np.newaxis]


def predict_response(result: GateResult, top_k: int) -> Response:
    """The `PredictResponse` body (schemas/native.py: the same fields, in the same order), encoded with orjson: a
    pydantic model per prediction and class, validated again by FastAPI's response model, cost more than the run."""
    k = min(top_k, len(result.labels))
    order = np.argsort(-result.probs, axis=1, kind="stable")[:, :k]
    labels = result.labels
    predictions = [
        {
            "label": labels[label_index],
            "label_index": label_index,
            "confidence": confidence,
            "anomaly_score": anomaly_score,
            "kl_uniform": kl,
            "reject": reject,
            "top_k": [{"label": labels[j], "probability": probs[j]} for j in top],
        }
        for label_index, confidence, anomaly_score, kl, reject, probs, top in zip(
            result.label_index.tolist(),
            result.confidence.tolist(),
            result.anomaly_score.tolist(),
            result.kl_uniform.tolist(),
            result.reject.tolist(),
            result.probs.tolist(),
            order.tolist(),
            strict=True,
        )
    ]
    body = {"model": result.model, "version": result.version, "threshold": result.threshold, "predictions": predictions}
    return Response(orjson.dumps(body), media_type="application/json")
