"""Reading request bodies that the routes parse themselves (to accept several encodings on one route)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from service.errors import InvalidInputError, format_validation_errors

BodyModel = TypeVar("BodyModel", bound=BaseModel)


def media_type(request: Request) -> str:
    """The Content-Type without parameters, lower-cased; '' when absent."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def parse_json(model: type[BodyModel], body: bytes) -> BodyModel:
    """Validate a JSON body; every problem becomes one 422 naming the fields."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise InvalidInputError(format_validation_errors(e.errors(), ())) from e
