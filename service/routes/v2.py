"""Open Inference Protocol (KServe V2) REST endpoints: server and model metadata, model readiness, inference, and
Triton's model configuration and statistics extensions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from service import __version__
from service.capture import request_source
from service.deps import RegistryDep, SettingsDep, check_inference_token, components_of, require_inference_token
from service.errors import THRESHOLD_OVERRIDE_DISABLED, ForbiddenError, ModelNotReadyError
from service.protocol.body import parse_off_loop
from service.protocol.v2 import (
    BINARY_HEADER,
    check_parameters,
    classification_counts,
    decode_inline,
    make_decoder,
    parse_infer_request,
    requested_outputs,
    threshold_parameter,
)
from service.protocol.v2_metadata import SERVER_EXTENSIONS, model_config, model_metadata, model_statistics
from service.protocol.v2_outputs import binary_flags, infer_response
from service.schemas.native import ErrorBody
from service.schemas.v2 import InferenceResponse, ModelMetadata, ModelReadiness, ServerMetadata

public = APIRouter(tags=["v2"])
router = APIRouter(tags=["v2"], dependencies=[Depends(require_inference_token)])
inference = APIRouter(tags=["v2"])  # the infer routes: they check the token themselves (no dependencies)

INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}},
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 403, 404, 413, 415, 422, 503)
}


@public.get("/v2", response_model=ServerMetadata)
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="oegate", version=__version__, extensions=SERVER_EXTENSIONS)


@router.get("/v2/models/stats", responses=ERRORS)
async def get_all_statistics(registry: RegistryDep) -> dict[str, Any]:
    """Triton's statistics of every served version, since it was loaded (declared before
    `/v2/models/{name}`, which would otherwise take `stats` for a model name)."""
    return model_statistics([registry.models[name] for name in sorted(registry.models)])


@router.get("/v2/models/{name}", response_model=ModelMetadata, response_model_exclude_none=True, responses=ERRORS)
async def get_model_metadata(name: str, registry: RegistryDep) -> ModelMetadata:
    return model_metadata(registry.get(name))


@router.get(
    "/v2/models/{name}/versions/{version}",
    response_model=ModelMetadata,
    response_model_exclude_none=True,
    responses=ERRORS,
)
async def get_model_version_metadata(name: str, version: str, registry: RegistryDep) -> ModelMetadata:
    return model_metadata(registry.get(name, version))


@router.get("/v2/models/{name}/config", responses=ERRORS)
async def get_model_config(name: str, registry: RegistryDep, settings: SettingsDep) -> dict[str, Any]:
    """Triton's model configuration of the served version, derived from its card and the settings."""
    return model_config(registry.get(name), settings)


@router.get("/v2/models/{name}/versions/{version}/config", responses=ERRORS)
async def get_model_version_config(
    name: str, version: str, registry: RegistryDep, settings: SettingsDep
) -> dict[str, Any]:
    return model_config(registry.get(name, version), settings)


@router.get("/v2/models/{name}/stats", responses=ERRORS)
async def get_model_statistics(name: str, registry: RegistryDep) -> dict[str, Any]:
    """Triton's statistics of the served version: requests, queue and compute times, batch sizes (in memory)."""
    return model_statistics([registry.get(name)])


@router.get("/v2/models/{name}/versions/{version}/stats", responses=ERRORS)
async def get_model_version_statistics(name: str, version: str, registry: RegistryDep) -> dict[str, Any]:
    return model_statistics([registry.get(name, version)])


@router.get("/v2/models/{name}/ready", response_model=ModelReadiness, responses=ERRORS)
async def model_ready(name: str, registry: RegistryDep) -> JSONResponse:
    """200 `{"name", "ready": true}` when loaded; 503 with ready false for a known model without a loaded
    version; 404 for an unknown model."""
    return _readiness(registry, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready", response_model=ModelReadiness, responses=ERRORS)
async def model_version_ready(name: str, version: str, registry: RegistryDep) -> JSONResponse:
    """Same, for one version (404 if that version is not the one served)."""
    return _readiness(registry, name, version)


def _readiness(registry: RegistryDep, name: str, version: str | None) -> JSONResponse:
    try:
        model = registry.get(name, version)
    except ModelNotReadyError:
        return JSONResponse(ModelReadiness(name=name, ready=False).model_dump(), status_code=503)
    return JSONResponse(ModelReadiness(name=model.name, ready=True).model_dump())


BINARY_REPLY: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON; or, when any output is asked for in binary, the JSON header (its length in the "
        "Inference-Header-Content-Length response header) followed by the binary outputs",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
INFER_ROUTE: dict[str, Any] = {
    "response_model": InferenceResponse,
    "response_model_exclude_none": True,
    "openapi_extra": INFER_DOC,
    "responses": BINARY_REPLY | ERRORS,
}


@inference.post("/v2/models/{name}/infer", **INFER_ROUTE)
async def infer(name: str, request: Request) -> Response:
    """Run the model on V2 input tensors (served version)."""
    return await _infer(name, None, request)


@inference.post("/v2/models/{name}/versions/{version}/infer", **INFER_ROUTE)
async def infer_version(name: str, version: str, request: Request) -> Response:
    """Same, only if `version` is the one being served (404 otherwise)."""
    return await _infer(name, version, request)


async def _infer(name: str, version: str | None, request: Request) -> Response:
    # No FastAPI dependencies on the hot path (service/deps.py, check_inference_token): the token check and the
    # components come straight from the request.
    components = components_of(request)
    predictor, settings, limits = components.predictor, components.settings, components.limits
    check_inference_token(request, settings)
    body, binary_header = await request.body(), request.headers.get(BINARY_HEADER)
    parsed, binaries = await parse_off_loop(
        len(body), settings.large_json_bytes, limits.decode, parse_infer_request, body, binary_header
    )
    check_parameters(parsed)
    outputs = requested_outputs(parsed)
    classifications = classification_counts(parsed)
    binary = binary_flags(parsed, outputs)
    if (parsed.parameters or {}).get("threshold") is not None and not settings.allow_threshold_override:
        raise ForbiddenError(THRESHOLD_OVERRIDE_DISABLED)  # 403 before the value is even looked at
    threshold = threshold_parameter(parsed)
    inline = decode_inline(parsed, binaries, len(body), settings)
    source = request_source(request.headers.get(settings.capture_source_header))
    decoder = make_decoder(parsed, binaries, settings)
    result = await predictor.predict(name, version, decoder, threshold, source, inline=inline)
    return infer_response(result, parsed.id, outputs, classifications, binary)
