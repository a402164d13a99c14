"""Admin API (only when `OEGATE_ADMIN_TOKEN` is set): rescan the model directory now."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends

from service.deps import RegistryDep, require_admin_token

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin_token)])


@router.post("/v1/admin/reload")
async def reload_models(registry: RegistryDep) -> dict[str, Any]:
    """Rescan the model directory; returns the versions that went live and those that failed, with reasons."""
    report = await registry.reload()
    served = {name: model.version for name, model in sorted(registry.models.items())}
    return {**asdict(report), "models": served}
