"""One error type carrying an HTTP status; every client-visible failure is a subclass, rendered by one handler.

Every error response has the same body, `{"error": "<message>"}` (the Open Inference Protocol's error object),
on the native API and the V2 API alike. `reason` is the bounded label of `oegate_request_errors_total`, with
`model` (the URL's model name when it is a loaded model, else `none`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

if TYPE_CHECKING:
    from service.metrics import Metrics

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base class: an HTTP status, a message for the client, optional response headers."""

    status_code: ClassVar[int] = 500
    reason: ClassVar[str] = "internal"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequestError(ServiceError):
    """The body cannot be understood as a request (unsupported content type, malformed multipart)."""

    status_code = 400
    reason = "bad_request"


class UnauthorizedError(ServiceError):
    """A bearer token is required and was missing or wrong."""

    status_code = 401
    reason = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class ForbiddenError(ServiceError):
    """The request asks for something the settings do not allow (e.g. a threshold override)."""

    status_code = 403
    reason = "forbidden"


class NotFoundError(ServiceError):
    """Unknown model, unknown or unloaded version, or a disabled API."""

    status_code = 404
    reason = "not_found"


class PayloadTooLargeError(ServiceError):
    """The request body is larger than `max_body_bytes`."""

    status_code = 413
    reason = "payload_too_large"


class UnsupportedMediaTypeError(ServiceError):
    """A body that is neither JSON nor multipart/form-data."""

    status_code = 415
    reason = "unsupported_media_type"


class InvalidInputError(ServiceError):
    """Well-formed request, unusable content: bad image, wrong shape, out-of-range values, too many instances."""

    status_code = 422
    reason = "invalid_input"


class ModelNotReadyError(ServiceError):
    """A configured model has no loaded version (yet)."""

    status_code = 503
    reason = "model_not_ready"


THRESHOLD_OVERRIDE_DISABLED = "per-request threshold override is disabled on this server"


class OverloadedError(ServiceError):
    """The model's queue is full; the client should retry after `Retry-After` seconds."""

    status_code = 503
    reason = "overloaded"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class InferenceFailedError(ServiceError):
    """onnxruntime failed on inputs that passed validation: a server-side problem."""

    status_code = 500
    reason = "inference_failed"


def instance_error(index: int, message: str) -> InvalidInputError:
    """A 422 naming the instance, e.g. `instances[3]: image could not be decoded: ...`."""
    return InvalidInputError(f"instances[{index}]: {message}")


def format_validation_errors(errors: Sequence[Any], skip_prefix: tuple[str, ...] = ("body",)) -> str:
    """pydantic/FastAPI validation errors as one line naming each field, e.g. `instances[0].array: Field required`."""
    parts = []
    for err in errors:
        loc = list(err.get("loc", ()))
        while loc and loc[0] in skip_prefix:
            loc.pop(0)
        path = ""
        for position, item in enumerate(loc):
            if position and item == loc[position - 1] and isinstance(item, str):
                continue  # a tagged union repeats its tag (instances[0].array.array): say it once
            path += f"[{item}]" if isinstance(item, int) else (f".{item}" if path else str(item))
        parts.append(f"{path or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Render every error as `{"error": message}` with its status, and count it by reason."""

    def render(
        request: Request, status: int, message: str, reason: str, headers: Mapping[str, str] | None = None
    ) -> JSONResponse:
        metrics.record_error(reason, request.path_params.get("name"))
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        if exc.status_code >= 500 and not isinstance(exc, OverloadedError | ModelNotReadyError):
            logger.error("request failed: %s", exc.message, extra={"reason": exc.reason})
        return render(request, exc.status_code, exc.message, exc.reason, exc.headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return render(request, 422, format_validation_errors(exc.errors()), InvalidInputError.reason)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
        return render(request, exc.status_code, str(exc.detail), reason, exc.headers)

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        return render(request, 500, "internal server error", "internal")

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
