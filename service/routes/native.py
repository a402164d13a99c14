"""The native JSON API: `POST /v1/models/{name}[/versions/{version}]/predict` (JSON, multipart/form-data, or one
image as the body: `image/png`, `image/jpeg` or `application/octet-stream`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from service.capture import request_source
from service.deps import check_inference_token, components_of
from service.protocol.native import RAW_IMAGE_TYPES, parse_predict_request, predict_response
from service.schemas.native import ErrorBody, PredictResponse

router = APIRouter(tags=["native"])  # predict checks the token itself: no dependencies on the hot path

# The body is parsed by the route (it may be JSON or multipart), so its schema is declared here for OpenAPI;
# `service.openapi` adds the PredictRequest component.
PREDICT_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 3},
                        "threshold": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                    "required": ["image"],
                    "additionalProperties": False,
                }
            },
            # One PNG or JPEG image as the whole body (image models; default top_k and the card's threshold).
            **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in RAW_IMAGE_TYPES},
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 403, 404, 413, 415, 422, 503)
}


@router.post("/v1/models/{name}/predict", response_model=PredictResponse, openapi_extra=PREDICT_DOC, responses=ERRORS)
async def predict(name: str, request: Request) -> Response:
    """Classify instances with the served (newest valid, or pinned) version and flag anomalies."""
    return await _predict(name, None, request)


@router.post(
    "/v1/models/{name}/versions/{version}/predict",
    response_model=PredictResponse,
    openapi_extra=PREDICT_DOC,
    responses=ERRORS,
)
async def predict_version(name: str, version: str, request: Request) -> Response:
    """Same, but only if `version` is the one being served (404 otherwise)."""
    return await _predict(name, version, request)


async def _predict(name: str, version: str | None, request: Request) -> Response:
    # No FastAPI dependencies on the hot path (service/deps.py, check_inference_token): the token check and the
    # components come straight from the request.
    components = components_of(request)
    predictor, settings, limits = components.predictor, components.settings, components.limits
    check_inference_token(request, settings)
    parsed = await parse_predict_request(request, settings, limits)
    source = request_source(request.headers.get(settings.capture_source_header))
    result = await predictor.predict(name, version, parsed.decode, parsed.threshold, source, inline=parsed.inline)
    return predict_response(result, parsed.top_k)
