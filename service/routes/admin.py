"""Admin API (only when `OEGATE_ADMIN_TOKEN` is set; 404 otherwise): rescan the model directory now, pin a model to
a version or unpin it (a rollback is a pin to an earlier version), and list or delete captures by time range
(service/capture.py; 404 while capture is off)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from service.capture import Capture
from service.deps import CaptureDep, RegistryDep, require_admin_token
from service.errors import InvalidInputError, NotFoundError
from service.registry import ReloadReport
from service.schemas.native import ErrorBody

ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (401, 404, 422)}
router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin_token)], responses=ERRORS)


class Pin(BaseModel):
    """The version a model must serve from now on."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2**63 - 1)


def _state(registry: RegistryDep, report: ReloadReport) -> dict[str, Any]:
    served = {name: model.version for name, model in sorted(registry.models.items())}
    return {**asdict(report), "models": served, "pins": dict(sorted(registry.pins.items()))}


@router.post("/v1/admin/reload")
async def reload_models(registry: RegistryDep) -> dict[str, Any]:
    """Rescan the model directory; returns the versions that went live and those that failed, with reasons, the
    served version of each model and the pins."""
    return _state(registry, await registry.reload())


@router.put("/v1/admin/models/{name}/pin")
async def pin_model(name: str, pin: Pin, registry: RegistryDep) -> dict[str, Any]:
    """Serve exactly `version` of `name` (hot swap: requests in flight finish on their version). 404, with the
    reason, and nothing changed when that version is missing or does not load."""
    return _state(registry, await registry.pin(name, pin.version))


@router.delete("/v1/admin/models/{name}/pin")
async def unpin_model(name: str, registry: RegistryDep) -> dict[str, Any]:
    """Serve the newest valid version of `name` again (no-op when it is not pinned)."""
    return _state(registry, await registry.unpin(name))


TimeBound = Annotated[
    dt.datetime | None,
    Query(description="ISO 8601 time (UTC when it names no offset) or Unix seconds; the range is [since, until)."),
]
ModelFilter = Annotated[str | None, Query(description="Only this model's captures.")]


def _time_range(capture: Capture, since: dt.datetime | None, until: dt.datetime | None) -> tuple[float | None, ...]:
    """Unix seconds of the bounds (a naive time is UTC); 404 while capture is off, 422 for an empty range."""
    if not capture.enabled:
        raise NotFoundError("capture is off (OEGATE_CAPTURE_DIR is unset)")
    bounds = tuple(
        None if bound is None else (bound if bound.tzinfo else bound.replace(tzinfo=dt.UTC)).timestamp()
        for bound in (since, until)
    )
    if bounds[0] is not None and bounds[1] is not None and bounds[0] >= bounds[1]:
        raise InvalidInputError(f"since ({since}) must be before until ({until})")
    return bounds


@router.get("/v1/admin/captures")
async def list_captures(
    capture: CaptureDep,
    model: ModelFilter = None,
    since: TimeBound = None,
    until: TimeBound = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> dict[str, Any]:
    """Captured instances in [since, until) (of `model` if given), newest first, at most `limit`: each index row
    (id, time, model, version, kind, anomaly_score, threshold, label, reject, input_kind, file, sha256, bytes)."""
    start, end = _time_range(capture, since, until)
    rows = await capture.list(model, start, end, limit)
    return {"captures": rows, "count": len(rows)}


@router.delete("/v1/admin/captures")
async def delete_captures(
    capture: CaptureDep, model: ModelFilter = None, since: TimeBound = None, until: TimeBound = None
) -> dict[str, int]:
    """Delete the captures in [since, until) (of `model` if given), files and index rows; with no bounds, every
    capture. Returns how many were deleted."""
    start, end = _time_range(capture, since, until)
    return {"deleted": await capture.delete(model, start, end)}
