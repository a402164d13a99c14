"""Admin API (only when `OEGATE_ADMIN_TOKEN` is set; 404 otherwise): rescan the model directory now, and pin a
model to a version or unpin it (a rollback is a pin to an earlier version)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from service.deps import RegistryDep, require_admin_token
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
