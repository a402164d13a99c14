"""Reading request bodies that the routes parse themselves (to accept several encodings on one route)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import anyio.to_thread
from anyio import CapacityLimiter
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from service.errors import InvalidInputError, format_validation_errors

BodyModel = TypeVar("BodyModel", bound=BaseModel)
Parsed = TypeVar("Parsed")
Args = TypeVarTuple("Args")


async def parse_off_loop(
    size: int,
    large: int,
    limiter: CapacityLimiter,
    parse: Callable[[*Args], Parsed],
    *args: *Args,
) -> Parsed:
    """`parse(*args)` for a body of `size` bytes: on the event loop when it is at most `large` bytes (a thread
    hand-off costs more than parsing a small body), else in a worker thread of `limiter` (the decode limiter), so
    a multi-megabyte JSON body does not stall health probes and other requests while it is parsed."""
    if size <= large:
        return parse(*args)
    return await anyio.to_thread.run_sync(parse, *args, limiter=limiter)


def media_type(request: Request) -> str:
    """The Content-Type without parameters, lower-cased; '' when absent."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def parse_json(model: type[BodyModel], body: bytes) -> BodyModel:
    """Validate a JSON body; every problem becomes one 422 naming the fields."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise InvalidInputError(format_validation_errors(e.errors(), ())) from e
